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
    (ManualRun { ctx, clock }, lines, out)
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
