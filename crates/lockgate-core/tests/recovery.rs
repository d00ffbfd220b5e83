//! Checkpoint and recovery: every stateful operator gives the same output when the job is
//! interrupted (after a commit, or before it) and recovered from its checkpoint; corrupt
//! files are reported by path or skipped for an older good version; upgrades that change
//! operator state are reported by name.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lockgate_core::storage::file::{read_file, FileKind};
use lockgate_core::testing::{collect_batches, run_with_restart, Interruption, ManualRun};
use lockgate_core::{
    CheckpointConfig, DStream, Error, InverseWindowOpts, ManualClock, State, StateSpec,
    StateUpgrade, StreamingContext, UpgradeStatus,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn words() -> Vec<Vec<String>> {
    (0..8)
        .map(|b| (0..20).map(|i| format!("w{}", (i * 3 + b) % 7)).collect())
        .collect()
}

fn sorted<U: Ord>(m: BTreeMap<u64, Vec<U>>) -> BTreeMap<u64, Vec<U>> {
    m.into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, v)
        })
        .collect()
}

/// Runs `op` uninterrupted and interrupted at every batch, both ways, and compares.
fn same_output_after_restart<U: lockgate_core::Data + Ord + std::fmt::Debug>(
    op: impl Fn(DStream<String>) -> DStream<U> + Copy,
) {
    let n = 10;
    let dir = tempfile::tempdir().unwrap();
    let reference = sorted(
        run_with_restart(
            words(),
            3,
            op,
            n,
            0,
            Interruption::AfterCommit,
            &dir.path().join("ref"),
        )
        .unwrap(),
    );
    assert!(reference.len() >= n / 2, "{}", reference.len());
    for cut in 1..n {
        for how in [Interruption::AfterCommit, Interruption::BeforeCommit] {
            let d = dir.path().join(format!("{cut}-{how:?}"));
            let got = sorted(run_with_restart(words(), 3, op, n, cut, how, &d).unwrap());
            assert_eq!(got, reference, "interrupted after {cut} batches ({how:?})");
        }
    }
}

#[test]
fn update_state_by_key_recovers() {
    same_output_after_restart(|s| {
        s.map(|w| (w, 1i64))
            .update_state_by_key(|v: &[i64], st: Option<i64>| {
                Some(st.unwrap_or(0) + v.iter().sum::<i64>())
            })
    });
}

#[test]
fn map_with_state_with_timeout_recovers() {
    same_output_after_restart(|s| {
        s.filter(|w| w != "w3" || w.is_empty())
            .map(|w| (w, 1i64))
            .map_with_state(
                StateSpec::function(|k: &String, v: Option<i64>, st: &mut State<i64>| {
                    if st.is_timing_out() {
                        return (k.clone(), -1);
                    }
                    let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
                    st.update(n);
                    (k.clone(), n)
                })
                .timeout(Duration::from_millis(2500)),
            )
            .stream()
    });
}

#[test]
fn windows_recover() {
    same_output_after_restart(|s| s.window(secs(3), secs(1)).count_by_value());
    same_output_after_restart(|s| s.count_by_window(secs(4), secs(2)));
    same_output_after_restart(|s| {
        s.map(|w| (w, 1i64)).reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            secs(3),
            secs(1),
            InverseWindowOpts::default().filter(|(_, v)| *v != 0),
        )
    });
    same_output_after_restart(|s| {
        s.map(|w| (w, 1i64))
            .reduce_by_key_and_window(|a, b| a + b, secs(2), secs(2))
    });
}

fn word_count_ctx(
    dir: &Path,
    clock: Arc<ManualClock>,
    name: &str,
    upgrade: StateUpgrade,
) -> lockgate_core::Result<StreamingContext> {
    StreamingContext::get_or_create(dir, |b| {
        let ctx = b
            .app_name("wc")
            .batch_interval(secs(1))
            .parallelism(2)
            .clock(clock)
            // A commit per batch (no group commit), so tests can corrupt a given one.
            .checkpoint(CheckpointConfig {
                sync_interval: Duration::ZERO,
                ..CheckpointConfig::new(dir)
            })
            .state_upgrade(upgrade)
            .build()?;
        ctx.seq_stream(words())
            .map(|w| (w, 1i64))
            .update_state_by_key(|v: &[i64], st: Option<i64>| {
                Some(st.unwrap_or(0) + v.len() as i64)
            })
            .name(name)
            .foreach_batch(|_, _| ());
        Ok(ctx)
    })
}

fn run_two_batches(dir: &Path) {
    let clock = Arc::new(ManualClock::new(0));
    let ctx = word_count_ctx(dir, clock.clone(), "counts", StateUpgrade::Fail).unwrap();
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    run.run_batches(2).unwrap();
    run.ctx.stop(false).unwrap();
}

#[test]
fn renamed_operator_is_reported_by_name_and_upgrade_options_apply() {
    let dir = tempfile::tempdir().unwrap();
    run_two_batches(dir.path());
    let clock = Arc::new(ManualClock::new(2000));
    let err = word_count_ctx(dir.path(), clock.clone(), "totals", StateUpgrade::Fail)
        .err()
        .unwrap();
    match &err {
        Error::StateMismatch { operator, reason } => {
            assert!(operator == "totals" || operator == "counts", "{operator}");
            assert!(reason.contains("StateUpgrade"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    // The report says what an upgrade would do.
    let probe = StreamingContext::builder().parallelism(2).build().unwrap();
    probe
        .seq_stream(words())
        .map(|w| (w, 1i64))
        .update_state_by_key(|v: &[i64], st: Option<i64>| Some(st.unwrap_or(0) + v.len() as i64))
        .name("totals")
        .foreach_batch(|_, _| ());
    let report = probe.check_upgrade(dir.path()).unwrap();
    assert!(report
        .operators
        .contains(&("totals".to_string(), UpgradeStatus::New)));
    assert!(report
        .operators
        .contains(&("counts".to_string(), UpgradeStatus::Removed)));
    assert!(!report.is_compatible());
    // Both options together: new state starts empty, old state is dropped.
    let ctx = word_count_ctx(
        dir.path(),
        clock,
        "totals",
        StateUpgrade::StartEmptyAndDropOld,
    )
    .unwrap();
    assert!(!dir.path().join("state/counts").exists());
    drop(ctx);
}

/// Restarts the job of `run_two_batches` on `dir` until batch 1 (time 2000) has run
/// again; returns the ids of the batches the restart ran.
fn batches_rerun_after_restart(dir: &Path) -> Vec<u64> {
    let clock = Arc::new(ManualClock::new(2000));
    let ctx = word_count_ctx(dir, clock, "counts", StateUpgrade::Fail).unwrap();
    ctx.start().unwrap();
    assert!(ctx
        .metrics()
        .wait_for_batch(lockgate_core::Time(2000), Duration::from_secs(30)));
    ctx.stop(false).unwrap();
    ctx.metrics()
        .completed_batches()
        .iter()
        .map(|b| b.batch_id)
        .collect()
}

#[test]
fn corrupt_commit_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    run_two_batches(dir.path());
    let commit = dir.path().join("commits/1");
    let mut bytes = std::fs::read(&commit).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&commit, bytes).unwrap();
    // Recovery uses commit 0 and re-runs batch 1 from its plan.
    let ids = batches_rerun_after_restart(dir.path());
    // Batch 1 was re-run (and batch 0 too, if commit 0 was grouped into commit 1).
    assert!(ids == vec![1] || ids == vec![0, 1], "{ids:?}");
}

/// The error of recovering the word count of [`run_two_batches`] from `dir`.
fn reopen_error(dir: &Path) -> String {
    word_count_ctx(
        dir,
        Arc::new(ManualClock::new(2000)),
        "counts",
        StateUpgrade::Fail,
    )
    .err()
    .unwrap()
    .to_string()
}

#[test]
fn corrupt_uncommitted_plan_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    run_two_batches(dir.path());
    std::fs::remove_file(dir.path().join("commits/1")).unwrap();
    let plan = dir.path().join("offsets/1");
    std::fs::write(&plan, b"LKGT garbage").unwrap();
    let err = reopen_error(dir.path());
    assert!(
        err.contains(&plan.display().to_string()) && err.contains("never committed"),
        "{err}"
    );
}

/// The state files (deltas and snapshots of every operator) of `version`.
fn state_files_of_version(dir: &Path, version: u64) -> Vec<std::path::PathBuf> {
    let prefix = format!("{version}.");
    walk(dir.join("state").as_path())
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect()
}

#[test]
fn corrupt_state_falls_back_to_an_older_commit() {
    let dir = tempfile::tempdir().unwrap();
    run_two_batches(dir.path());
    // Corrupt every state file of version 1: commit 1 cannot load, commit 0 can.
    let files = state_files_of_version(dir.path(), 1);
    assert!(!files.is_empty());
    for f in files {
        std::fs::write(&f, b"junk").unwrap();
    }
    let ids = batches_rerun_after_restart(dir.path());
    assert!(ids == vec![1] || ids == vec![0, 1], "{ids:?}");
}

#[test]
fn a_torn_state_file_of_an_uncommitted_batch_is_never_read_and_is_rewritten() {
    // State files are written in place (no rename): a crash mid-write leaves a torn file
    // of a batch that has no commit yet.
    let dir = tempfile::tempdir().unwrap();
    run_two_batches(dir.path());
    std::fs::remove_file(dir.path().join("commits/1")).unwrap();
    let mut originals = Vec::new();
    for f in state_files_of_version(dir.path(), 1) {
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
        originals.push((f, bytes));
    }
    assert!(!originals.is_empty());
    // Recovery deletes the files of versions after its commit, and re-runs batch 1
    // (and batch 0 too, if commit 0 was grouped into commit 1), writing them anew.
    let ids = batches_rerun_after_restart(dir.path());
    assert!(ids == vec![1] || ids == vec![0, 1], "{ids:?}");
    for (path, bytes) in &originals {
        if path.exists() {
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
        }
    }
    for path in walk(dir.path().join("state").as_path()) {
        let kind = if path.extension().is_some_and(|e| e == "snapshot") {
            FileKind::Snapshot
        } else {
            FileKind::Delta
        };
        read_file(&path, kind).unwrap();
    }
}

#[test]
fn corrupt_metadata_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    run_two_batches(dir.path());
    std::fs::write(dir.path().join("metadata"), b"").unwrap();
    let err = reopen_error(dir.path());
    assert!(
        err.contains("metadata") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn queue_streams_cannot_be_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let err = StreamingContext::get_or_create(dir.path(), |b| {
        let ctx = b.build()?;
        ctx.queue_stream(lockgate_core::InputQueue::<i32>::new(), true, None)
            .print();
        Ok(ctx)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("queue_stream is not replayable"), "{err}");
}

#[test]
fn retention_bounds_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut cfg = lockgate_core::CheckpointConfig::new(dir.path());
    cfg.retain_batches = 3;
    cfg.snapshot_every = 2;
    let ctx = StreamingContext::builder()
        .checkpoint(cfg)
        .parallelism(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let out = collect_batches(
        &ctx.seq_stream(words())
            .map(|w| (w, 1i64))
            .map_with_state(StateSpec::function(
                |_k: &String, v: Option<i64>, st: &mut State<i64>| {
                    let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
                    st.update(n);
                    n
                },
            ))
            .stream(),
    );
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    run.run_batches(12).unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(out.lock().unwrap().len(), 12);
    let count = |d: &str| std::fs::read_dir(dir.path().join(d)).unwrap().count();
    assert_eq!(count("offsets"), 3);
    // Commits may be grouped (one commit covers the batches before it).
    let commits = count("commits");
    assert!((1..=3).contains(&commits), "{commits}");
    assert!(dir.path().join("commits/11").exists());
    for f in walk(&dir.path().join("state")) {
        let v: u64 = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(v >= 8, "{} should have been deleted", f.display());
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_map_with_state_delta_holds_a_key_at_most_twice_however_many_records_it_gets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ctx = StreamingContext::builder()
        .app_name("mws")
        .batch_interval(secs(1))
        .parallelism(1)
        .clock(clock.clone())
        .checkpoint(CheckpointConfig {
            sync_interval: Duration::ZERO,
            // No snapshot after the first batch: every later state file is a delta.
            snapshot_every: 100,
            retain_batches: 200,
            ..CheckpointConfig::new(dir.path())
        })
        .build()
        .unwrap();
    // One key, 1,000 records per batch: 1,000 changes per batch.
    let batches = vec![vec![String::from("k"); 1000]; 4];
    let totals = ctx
        .seq_stream(batches)
        .map(|w| (w, 1i64))
        .map_with_state(StateSpec::function(
            |_: &String, v: Option<i64>, st: &mut State<i64>| {
                let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
                st.update(n);
                n
            },
        ))
        .name("totals")
        .stream();
    let out = collect_batches(&totals);
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    run.run_batches(4).unwrap();
    run.ctx.stop(true).unwrap();
    assert_eq!(out.lock().unwrap()[&3].last(), Some(&4000));
    let deltas: Vec<u64> = walk(&dir.path().join("state/totals"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "delta"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(deltas.len(), 3, "batches 1..=3 write deltas");
    // A delta of 1,000 entries would be over 20 KB; two entries and the header are not.
    for size in deltas {
        assert!(size < 400, "delta of {size} bytes");
    }
}

/// Regression: a corrupt plan of a batch that had committed blocked every restart
/// (`checkpoint file ck/offsets/254: checksum mismatch`, no advice). A plan covered by
/// the state snapshots is not needed and is skipped; one after the last snapshot is
/// needed, and the error says what to do.
#[test]
fn corrupt_plan_of_a_committed_batch_is_skipped_where_a_snapshot_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ctx = word_count_ctx(dir.path(), clock.clone(), "counts", StateUpgrade::Fail).unwrap();
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    run.run_batches(13).unwrap();
    run.ctx.stop(false).unwrap();
    // Snapshots at batch 10 (every 10 batches); commits through batch 12.
    std::fs::write(dir.path().join("offsets/3"), b"LKGT garbage").unwrap();
    let clock = Arc::new(ManualClock::new(13_000));
    let ctx = word_count_ctx(dir.path(), clock, "counts", StateUpgrade::Fail).unwrap();
    drop(ctx);

    let plan = dir.path().join("offsets/11");
    std::fs::write(&plan, b"LKGT garbage").unwrap();
    let err = word_count_ctx(
        dir.path(),
        Arc::new(ManualClock::new(13_000)),
        "counts",
        StateUpgrade::Fail,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains(&plan.display().to_string())
            && err.contains("batch 11 is committed")
            && err.contains("move it away"),
        "{err}"
    );
}
