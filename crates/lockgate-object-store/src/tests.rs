//! The lease and the conditional writes, case by case, on `object_store`'s in-memory
//! store (which honours create-only and ETag-conditional writes as S3 does); the binary
//! against a real S3 server is tested in the workspace's `tests/object_store.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use lockgate_core::storage::file::Placement;
use lockgate_core::storage::{Storage, Takeover};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::{ObjectStorage, Options};

fn options(instance: &str, lease_ms: u64) -> Options {
    Options {
        settings: Vec::new(),
        lease_timeout: Duration::from_millis(lease_ms),
        retry_timeout: Duration::from_secs(5),
        instance: instance.to_string(),
    }
}

fn storage(store: &Arc<dyn ObjectStore>, instance: &str, lease_ms: u64) -> ObjectStorage {
    ObjectStorage::with_store(
        store.clone(),
        "memory://test/cp",
        "cp",
        &options(instance, lease_ms),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A storage on a fresh in-memory store whose lease this process holds.
fn owned() -> (
    Arc<ObjectStorage>,
    Box<dyn lockgate_core::storage::Ownership>,
) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = Arc::new(storage(&store, "a", 2_000));
    let hold = a.take_ownership(Takeover::Refuse).unwrap();
    (a, hold)
}

#[test]
fn plans_logged_together_are_one_object_read_deleted_and_retired_as_a_group() {
    use lockgate_core::checkpoint::log::{CheckpointLog, Plan, SourcePlan};
    let (a, _hold) = owned();
    let log = CheckpointLog::new(a.clone());
    let plan = |id: u64| Plan {
        batch_id: id,
        batch_time_ms: 1_000 * id as i64,
        sources: vec![SourcePlan {
            source: "files".into(),
            descriptor: vec![id as u8; 3],
            records: id,
            description: format!("file {id}"),
        }],
        end_of_input: id == 9,
    };
    log.write_plans(&[plan(1)]).unwrap();
    log.write_plans(&(2..=5).map(plan).collect::<Vec<_>>())
        .unwrap();
    log.write_plans(&(6..=9).map(plan).collect::<Vec<_>>())
        .unwrap();
    let names: Vec<String> = a
        .list("offsets")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["1", "2-5", "6-9"]);
    assert_eq!(log.plan_ids().unwrap(), (1..=9).collect::<Vec<u64>>());
    let read = log.read_plans(&[1, 3, 7, 9, 10]);
    for id in [1, 3, 7, 9] {
        assert_eq!(read[&id].as_ref().unwrap(), &plan(id));
    }
    assert!(text(read[&10].as_ref().unwrap_err()).contains("missing"));
    assert_eq!(log.read_plan(4).unwrap(), plan(4));
    // Retention keeps a group while any of its batches is kept.
    log.delete_before(5);
    assert_eq!(log.plan_ids().unwrap(), (2..=9).collect::<Vec<u64>>());
    // Dropping a plan after a gap drops its whole group (written whole, never run).
    log.delete_plan(7).unwrap();
    assert_eq!(log.plan_ids().unwrap(), (2..=5).collect::<Vec<u64>>());
    // A group whose contents disagree with its name is refused, naming it.
    a.put_all(
        vec![(
            "offsets/10-11".into(),
            a.get("offsets/2-5").unwrap().unwrap(),
        )],
        Placement::Atomic,
    )
    .unwrap();
    let err = text(log.read_plan(10).unwrap_err());
    assert!(
        err.contains("offsets/10-11") && err.contains("[2, 3, 4, 5]"),
        "{err}"
    );
}

#[test]
fn deltas_written_together_are_one_object_per_partition_and_load_in_order() {
    use lockgate_core::checkpoint::store::{StateHeader, StateStore, CODEC};
    let (a, _hold) = owned();
    let state = StateStore::new(a.clone());
    let header = |partition: u64, version: u64| StateHeader {
        operator: "counts".into(),
        type_desc: "u64".into(),
        codec: CODEC.into(),
        partition,
        partitions: 2,
        version,
    };
    // Batches 1-5 of partitions 0 and 1, a snapshot of partition 0 at 3: what it
    // supersedes is not written.
    let mut files = Vec::new();
    for v in 1..=5u64 {
        for p in 0..2 {
            let snapshot = p == 0 && v == 3;
            files.push((header(p, v), snapshot, format!("p{p}v{v}").into_bytes()));
        }
    }
    let written = state.files_of(&files, true);
    let keys: Vec<&str> = written.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "state/counts/0/3.snapshot",
            "state/counts/0/5.deltas",
            "state/counts/1/5.deltas"
        ]
    );
    state.write_all(written, Placement::Atomic).unwrap();
    let loaded = |p: usize, v: u64| -> Vec<String> {
        state
            .load("counts", "u64", p, v)
            .unwrap()
            .into_iter()
            .map(|s| String::from_utf8(s.bytes).unwrap())
            .collect()
    };
    assert_eq!(loaded(0, 5), ["p0v3", "p0v4", "p0v5"]);
    assert_eq!(loaded(1, 5), ["p1v1", "p1v2", "p1v3", "p1v4", "p1v5"]);
    // Without grouping (a local directory): one file per batch, as before.
    assert_eq!(state.files_of(&files, false).len(), 10);
}

#[test]
fn of_processes_racing_for_a_new_lease_exactly_one_wins() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let racers = 16;
    let barrier = Arc::new(Barrier::new(racers));
    let won = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..racers)
        .map(|i| {
            let (store, barrier, won) = (store.clone(), barrier.clone(), won.clone());
            std::thread::spawn(move || {
                let s = storage(&store, &format!("racer-{i}"), 5_000);
                barrier.wait();
                match s.take_ownership(Takeover::Refuse) {
                    Ok(hold) => {
                        won.fetch_add(1, Ordering::SeqCst);
                        // Hold it until every racer has seen it renewed (every second).
                        std::thread::sleep(Duration::from_millis(3000));
                        drop(hold);
                    }
                    Err(e) => assert!(
                        text(&e).contains("is running a job on this checkpoint"),
                        "{e}"
                    ),
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap_or_else(|_| panic!("a racer panicked"));
    }
    assert_eq!(won.load(Ordering::SeqCst), 1);
}

#[test]
fn a_released_lease_is_taken_at_once_with_the_next_generation() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = storage(&store, "a", 60_000);
    let hold = a.take_ownership(Takeover::Refuse).unwrap();
    drop(hold);
    let b = storage(&store, "b", 60_000);
    let started = std::time::Instant::now();
    let _hold = b.take_ownership(Takeover::Refuse).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let got = b.get(crate::lease::LEASE_KEY).unwrap().unwrap();
    let record = crate::lease::Record::parse(&got).unwrap();
    assert_eq!((record.owner.as_str(), record.generation), ("b", 2));
}

#[test]
fn a_paused_owner_is_fenced_after_a_standby_takes_over_and_writes_nothing_more() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = storage(&store, "owner-a", 600);
    let hold = a.take_lease(Takeover::Refuse).unwrap();
    a.put_all(
        vec![("offsets/0".into(), b"a0".to_vec())],
        Placement::Atomic,
    )
    .unwrap();
    // A freezes: its lease is no longer renewed.
    hold.freeze();
    let b = storage(&store, "standby-b", 600);
    let _b_hold = b.take_ownership(Takeover::Standby).unwrap();
    b.put_all(
        vec![("offsets/1".into(), b"b1".to_vec())],
        Placement::Atomic,
    )
    .unwrap();
    // A wakes and tries to write: its stale renewal is refused, it is fenced, naming B.
    let err = a
        .put_all(
            vec![("offsets/2".into(), b"a2".to_vec())],
            Placement::Atomic,
        )
        .unwrap_err();
    let msg = text(&err);
    assert!(
        msg.contains("standby-b") && msg.contains("generation 2"),
        "{msg}"
    );
    assert!(a.get("offsets/2").unwrap().is_none(), "nothing written");
    // And stays fenced.
    assert!(a.check_owner().is_err());
    assert!(a.delete("offsets/1").is_err());
    assert_eq!(b.get("offsets/1").unwrap().as_deref(), Some(&b"b1"[..]));
}

#[test]
fn a_write_in_flight_from_a_paused_owner_never_replaces_its_successors_file() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = storage(&store, "a", 600);
    let hold = a.take_lease(Takeover::Refuse).unwrap();
    hold.freeze();
    let b = storage(&store, "b", 600);
    let _b_hold = b.take_ownership(Takeover::Standby).unwrap();
    b.put_all(vec![("commits/7".into(), b"b".to_vec())], Placement::Atomic)
        .unwrap();
    // A's write was sent before its pause (generation 1), and lands now.
    let err = a
        .client()
        .block(a.put_file("commits/7".into(), b"a".to_vec(), 1))
        .unwrap_err();
    assert!(text(&err).contains("generation 2"), "{err}");
    assert_eq!(b.get("commits/7").unwrap().as_deref(), Some(&b"b"[..]));
}

#[test]
fn an_older_generations_leftover_is_replaced_and_the_same_bytes_are_kept() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = storage(&store, "a", 600);
    let hold = a.take_lease(Takeover::Refuse).unwrap();
    // A wrote plan 5 but died before running it.
    a.put_all(
        vec![("offsets/5".into(), b"old".to_vec())],
        Placement::Atomic,
    )
    .unwrap();
    hold.freeze();
    let b = storage(&store, "b", 600);
    let _b_hold = b.take_ownership(Takeover::Standby).unwrap();
    b.put_all(
        vec![("offsets/5".into(), b"new".to_vec())],
        Placement::Atomic,
    )
    .unwrap();
    assert_eq!(b.get("offsets/5").unwrap().as_deref(), Some(&b"new"[..]));
    // Writing the same bytes again (a retry) is no conflict.
    b.put_all(
        vec![("offsets/5".into(), b"new".to_vec())],
        Placement::Atomic,
    )
    .unwrap();
}

#[test]
fn a_second_process_is_refused_naming_the_owner() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = storage(&store, "host-a:17", 10_000);
    let _hold = a.take_ownership(Takeover::Refuse).unwrap();
    let b = storage(&store, "host-b:18", 10_000);
    let err = b.take_ownership(Takeover::Refuse).err().map(text);
    let err = err.unwrap_or_default();
    assert!(
        err.contains("host-a:17") && err.contains("--standby"),
        "{err}"
    );
    // Writes without the lease are refused.
    let err = b
        .put_all(vec![("x".into(), b"x".to_vec())], Placement::Atomic)
        .unwrap_err();
    assert!(
        text(&err).contains("has not taken the checkpoint's lease"),
        "{err}"
    );
}

/// A store whose first answer to each create is lost: the write is applied, then the
/// client sees a timeout (as when a connection drops after the server acted).
#[derive(Debug)]
struct LosesAnswers {
    inner: InMemory,
    lost: AtomicUsize,
}

impl std::fmt::Display for LosesAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LosesAnswers")
    }
}

#[async_trait]
impl ObjectStore for LosesAnswers {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create = matches!(opts.mode, object_store::PutMode::Create);
        let r = self.inner.put_opts(location, payload, opts).await?;
        if create && !location.as_ref().ends_with("lease") {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "LosesAnswers",
                source: "timed out waiting for the answer".into(),
            });
        }
        Ok(r)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[test]
fn a_write_whose_answer_was_lost_is_recognised_by_reading_it_back() {
    let lossy = Arc::new(LosesAnswers {
        inner: InMemory::new(),
        lost: AtomicUsize::new(0),
    });
    let store: Arc<dyn ObjectStore> = lossy.clone();
    let s = storage(&store, "a", 5_000);
    let _hold = s.take_ownership(Takeover::Refuse).unwrap();
    s.put_all(
        vec![
            ("offsets/0".into(), b"plan 0".to_vec()),
            ("commits/0".into(), b"commit 0".to_vec()),
        ],
        Placement::Atomic,
    )
    .unwrap();
    assert_eq!(lossy.lost.load(Ordering::SeqCst), 2);
    assert_eq!(s.get("offsets/0").unwrap().as_deref(), Some(&b"plan 0"[..]));
    assert_eq!(
        s.get("commits/0").unwrap().as_deref(),
        Some(&b"commit 0"[..])
    );
    let stats = s.stats();
    assert!(stats.retries >= 2, "{stats:?}");
}

#[test]
fn listing_shows_files_and_directories_and_deletes_go() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let s = storage(&store, "a", 5_000);
    let _hold = s.take_ownership(Takeover::Refuse).unwrap();
    s.put_all(
        vec![
            ("state/op/0/3.delta".into(), b"d".to_vec()),
            ("state/op/1/3.delta".into(), b"d".to_vec()),
            ("offsets/3".into(), b"p".to_vec()),
        ],
        Placement::Direct,
    )
    .unwrap();
    let names = |dir: &str| -> Vec<(String, bool)> {
        s.list(dir)
            .unwrap()
            .into_iter()
            .map(|l| (l.name, l.dir))
            .collect()
    };
    assert_eq!(
        names(""),
        vec![
            ("lease".to_string(), false),
            ("offsets".into(), true),
            ("state".into(), true)
        ]
    );
    assert_eq!(
        names("state/op"),
        vec![("0".into(), true), ("1".into(), true)]
    );
    assert_eq!(names("offsets"), vec![("3".into(), false)]);
    assert!(names("missing").is_empty());
    s.delete_dir("state/op").unwrap();
    assert!(names("state").is_empty());
    s.delete("offsets/3").unwrap();
    s.delete("offsets/3").unwrap();
    assert!(names("offsets").is_empty());
}

#[test]
fn locations_and_settings_are_checked() {
    let bad = |loc: &str, settings: &[(&str, &str)]| {
        let mut o = Options::default();
        for (k, v) in settings {
            o.set(k, v).unwrap();
        }
        crate::open(loc, &o).err().map(text).unwrap_or_default()
    };
    assert!(bad("s3://", &[]).contains("no bucket"));
    assert!(bad("ftp://x/y", &[]).contains("not a checkpoint store"));
    assert!(bad("s3://b/p", &[("endpoit", "x")]).contains("unknown checkpoint option `endpoit`"));
    assert!(bad("/tmp/x", &[("endpoint", "x")]).contains("applies to object stores"));
    let mut o = Options::default();
    assert!(o.parse_setting("novalue").is_err());
    o.parse_setting("endpoint=http://127.0.0.1:1").unwrap();
    o.parse_setting("allow_http=true").unwrap();
    o.parse_setting("access_key_id=me").unwrap();
    o.parse_setting("secret_access_key=TOPSECRET").unwrap();
    let s = crate::open("s3://bucket/some/prefix/", &o).unwrap();
    assert_eq!(s.0.location(), "s3://bucket/some/prefix");
    // Never shown, not even by Debug (which the checkpoint's config derives).
    let shown = format!("{:?}", s.0);
    assert!(!shown.contains("TOPSECRET"), "{shown}");
}
