//! The receiver write-ahead log with real sockets: records that reached the WAL survive
//! a stop before any batch took them, and a batch interrupted before its commit is
//! re-run from the WAL blocks its plan names; committed segments are deleted.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockgate_core::testing::{collect_batches, ManualRun};
use lockgate_core::{ManualClock, ReceiverInputDStream, StreamingContext, Time};

const WAIT: Duration = Duration::from_secs(30);

type Out = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

fn socket_job(
    dir: &Path,
    port: u16,
    start_ms: i64,
) -> (ManualRun, ReceiverInputDStream<String>, Out) {
    let clock = Arc::new(ManualClock::new(start_ms));
    let (ctx, lines, out) = socket_job_on(dir, port, clock.clone());
    (ManualRun { ctx, clock }, lines, out)
}

/// The socket job of [`socket_job`] on any clock.
fn socket_job_on(
    dir: &Path,
    port: u16,
    clock: Arc<dyn lockgate_core::Clock>,
) -> (StreamingContext, ReceiverInputDStream<String>, Out) {
    let mut parts = None;
    let ctx = StreamingContext::get_or_create(dir, |b| {
        let ctx = b
            .app_name("wal")
            .batch_interval(Duration::from_secs(1))
            .block_interval(Duration::from_millis(20))
            .parallelism(2)
            .clock(clock.clone())
            .build()?;
        let lines = ctx.socket_text_stream("127.0.0.1", port);
        let out = collect_batches(&lines.map(|l| l.to_uppercase()));
        parts = Some((lines, out));
        Ok(ctx)
    })
    .unwrap();
    let (lines, out) = parts.unwrap();
    (ctx, lines, out)
}

fn send(listener: &TcpListener, lines: &[&str]) -> TcpStream {
    let (mut conn, _) = listener.accept().unwrap();
    for l in lines {
        conn.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    conn
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn stored_but_unplanned_records_survive_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let (run, lines, out) = socket_job(dir.path(), port, 0);
    run.ctx.start().unwrap();
    let _c = send(&listener, &["a", "b"]);
    assert!(lines.wait_for_stored(2, WAIT));
    run.next_batch().unwrap();
    let _c2 = {
        // More records reach the WAL, then the process stops before a batch takes them.
        let mut c = _c;
        c.write_all(b"c\nd\n").unwrap();
        c
    };
    assert!(lines.wait_for_stored(4, WAIT));
    run.ctx.stop(false).unwrap();
    assert_eq!(sorted(&out.lock().unwrap()[&0]), vec!["A", "B"]);
    drop(_c2);

    let (run, _lines, out) = socket_job(dir.path(), port, 1000);
    run.ctx.start().unwrap();
    let _c3 = listener.accept().unwrap();
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(sorted(&out.lock().unwrap()[&1]), vec!["C", "D"]);
}

#[test]
fn an_uncommitted_batch_is_rerun_from_the_wal_and_old_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let (run, lines, out) = socket_job(dir.path(), port, 0);
    run.ctx.start().unwrap();
    let mut conn = send(&listener, &["x1", "x2"]);
    assert!(lines.wait_for_stored(2, WAIT));
    run.next_batch().unwrap();
    conn.write_all(b"y1\ny2\ny3\n").unwrap();
    assert!(lines.wait_for_stored(5, WAIT));
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(sorted(&out.lock().unwrap()[&1]), vec!["Y1", "Y2", "Y3"]);
    drop(conn);
    // The process died after batch 1's outputs, before its commit.
    std::fs::remove_file(dir.path().join("commits/1")).unwrap();

    let (run, _lines, out) = socket_job(dir.path(), port, 2000);
    run.ctx.start().unwrap();
    let _c = listener.accept().unwrap();
    assert!(run.ctx.metrics().wait_for_batch(Time(2000), WAIT));
    run.ctx.stop(false).unwrap();
    assert_eq!(sorted(&out.lock().unwrap()[&1]), vec!["Y1", "Y2", "Y3"]);

    // Segments of committed batches are deleted (each process starts a new segment).
    let wal = dir.path().join("wal/socket-0");
    let segments = std::fs::read_dir(&wal).unwrap().count();
    assert!(
        segments <= 2,
        "{segments} segments left in {}",
        wal.display()
    );
}

/// A manual clock whose first `now()` on the job generator's thread blocks until the
/// test opens the gate: the generator is held in the middle of re-planning the logged
/// batches of a restart, so a stop can be requested exactly while replays are queued.
struct GatedClock {
    inner: ManualClock,
    state: Mutex<(bool, bool)>, // (generator blocked, gate open)
    changed: std::sync::Condvar,
}

impl GatedClock {
    fn wait_blocked(&self) {
        let g = self.state.lock().unwrap();
        let (g, timeout) = self
            .changed
            .wait_timeout_while(g, WAIT, |(blocked, _)| !*blocked)
            .unwrap();
        assert!(!timeout.timed_out(), "the generator never asked the clock");
        drop(g);
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

impl lockgate_core::Clock for GatedClock {
    fn now(&self) -> Time {
        if std::thread::current().name() == Some("lockgate-job-generator") {
            let mut g = self.state.lock().unwrap();
            if !g.1 {
                g.0 = true;
                self.changed.notify_all();
                while !g.1 {
                    g = self.changed.wait(g).unwrap();
                }
            }
        }
        self.inner.now()
    }
    fn wait_until(&self, target: Time, cancel: &std::sync::atomic::AtomicBool) -> Time {
        self.inner.wait_until(target, cancel)
    }
    fn interrupt(&self) {
        self.inner.interrupt()
    }
}

/// Regression (the socket torture's "lines stored in the WAL were never counted"): a
/// graceful stop requested while a restarted job was still re-planning its logged
/// batches exited without running the rest of them, and without planning what the
/// receiver had stored in its WAL meanwhile.
#[test]
fn a_graceful_stop_while_logged_batches_are_replayed_drains_them_and_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // Three batches; the process "dies" before batches 1 and 2 commit.
    let (run, lines, out) = socket_job(dir.path(), port, 0);
    run.ctx.start().unwrap();
    let mut conn = send(&listener, &["a", "b"]);
    let mut sent = 2;
    for batch in [&["c", "d"][..], &["e"][..], &[][..]] {
        assert!(lines.wait_for_stored(sent, WAIT));
        run.next_batch().unwrap();
        for l in batch {
            conn.write_all(format!("{l}\n").as_bytes()).unwrap();
        }
        sent += batch.len() as u64;
    }
    run.ctx.stop(false).unwrap();
    drop(conn);
    let first = out.lock().unwrap().clone();
    assert_eq!(sorted(&first[&2]), vec!["E"]);
    // Commits are grouped (one sync per 100 ms): whichever of 1 and 2 exist go.
    for id in [1, 2] {
        let _ = std::fs::remove_file(dir.path().join(format!("commits/{id}")));
    }

    // The restart: the generator is held while it re-plans batch 1.
    let clock = Arc::new(GatedClock {
        inner: ManualClock::new(3000),
        state: Mutex::new((false, false)),
        changed: std::sync::Condvar::new(),
    });
    let (ctx, lines, out) = socket_job_on(dir.path(), port, clock.clone());
    ctx.start().unwrap();
    let mut conn = listener.accept().unwrap().0;
    conn.write_all(b"f\ng\n").unwrap();
    assert!(lines.wait_for_stored(2, WAIT), "f and g reached the WAL");
    clock.wait_blocked();
    let stopper = ctx.clone();
    let stopping = std::thread::spawn(move || stopper.stop(true));
    while !ctx.is_stopping() {
        std::thread::sleep(Duration::from_millis(1));
    }
    clock.open();
    stopping.join().unwrap().unwrap();

    let got = out.lock().unwrap().clone();
    assert_eq!(sorted(&got[&1]), vec!["C", "D"], "{got:?}");
    assert_eq!(sorted(&got[&2]), vec!["E"], "{got:?}");
    let later: Vec<String> = got
        .range(3..)
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    assert_eq!(sorted(&later), vec!["F", "G"], "what the WAL held: {got:?}");
    // Nothing is left for the next start: every logged plan committed.
    let log = lockgate_core::checkpoint::log::CheckpointLog::local(dir.path());
    assert_eq!(
        log.plan_ids().unwrap().last(),
        log.commit_ids().unwrap().last()
    );
    assert!(ctx.metrics().snapshot().total_completed >= 3);
}
