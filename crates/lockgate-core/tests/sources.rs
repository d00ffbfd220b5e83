//! Sources against real files and real TCP sockets: new-file detection, ignored names,
//! per-batch limits, bad input that must not kill the job, receivers that reconnect,
//! and graceful stop flushing received data.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use lockgate_core::testing::{collect_output, ManualRun};
use lockgate_core::{
    BoxError, FileStreamOptions, ManualClock, Receiver, ReceiverContext, SourceCounters,
    StreamingContext, Time, Trigger,
};

const WAIT: Duration = Duration::from_secs(30);

/// Options for files written the way the docs ask ([`put`]): taken as soon as they
/// appear (no minimum age to wait for a writer to finish).
fn renamed_in() -> FileStreamOptions {
    FileStreamOptions {
        min_age: Duration::ZERO,
        ..Default::default()
    }
}

/// Writes a file the way the docs ask: to a hidden name, then renamed into place.
fn put(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn sorted_batches(out: &Arc<Mutex<Vec<Vec<String>>>>) -> Vec<Vec<String>> {
    let mut o = out.lock().unwrap().clone();
    for b in &mut o {
        b.sort();
    }
    o
}

#[test]
fn text_file_stream_takes_new_files_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "old.txt", b"old\n");
    let run = ManualRun::new(2).unwrap();
    let out = collect_output(&run.ctx.text_file_stream_with(dir.path(), renamed_in()));
    run.ctx.start().unwrap();
    put(dir.path(), "a.txt", b"a1\na2\n");
    put(dir.path(), "_ignored", b"x\n");
    std::fs::write(dir.path().join(".hidden"), b"y\n").unwrap();
    run.next_batch().unwrap();
    run.next_batch().unwrap();
    put(dir.path(), "b.txt", b"b1");
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(
        sorted_batches(&out),
        vec![
            vec!["a1".to_string(), "a2".into()],
            vec![],
            vec!["b1".into()]
        ]
    );
    let info = run.ctx.metrics().completed_batches();
    assert_eq!(info[0].num_records(), 2);
    // The files it read, with their sizes.
    let read = &info[0].inputs[0].description;
    assert!(
        read.starts_with("1 file, 6 bytes: ") && read.ends_with("a.txt (6 bytes)"),
        "{read}"
    );
}

#[test]
fn bad_input_is_replaced_cut_and_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let run = ManualRun::new(1).unwrap();
    let opts = FileStreamOptions {
        max_line_bytes: 8,
        ..renamed_in()
    };
    let out = collect_output(&run.ctx.text_file_stream_with(dir.path(), opts));
    run.ctx.start().unwrap();
    put(
        dir.path(),
        "bad.txt",
        b"ok\r\nbad \xff\xfe\nthis line is too long\n",
    );
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(
        out.lock().unwrap()[0],
        vec![
            "ok".to_string(),
            "bad \u{fffd}\u{fffd}".into(),
            "this lin".into()
        ]
    );
    let c = run.ctx.metrics().source("files-0");
    assert_eq!(SourceCounters::get(&c.invalid_utf8_lines), 1);
    assert_eq!(SourceCounters::get(&c.truncated_lines), 1);
}

#[test]
fn an_unreadable_file_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let run = ManualRun::new(1).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let channels = Mutex::new((release_rx, entered_tx));
    let lines = run.ctx.text_file_stream_with(dir.path(), renamed_in());
    let out = collect_output(&lines);
    lines.foreach_batch(move |_, b| {
        if b.id == 0 {
            let c = channels.lock().unwrap();
            c.1.send(()).unwrap();
            let _ = c.0.recv();
        }
    });
    run.ctx.start().unwrap();
    run.clock.advance(Duration::from_secs(1));
    entered_rx.recv_timeout(WAIT).unwrap();
    // Batch 2 is planned with both files while batch 1 still runs; one vanishes before
    // it is read.
    put(dir.path(), "gone.txt", b"lost\n");
    put(dir.path(), "kept.txt", b"kept\n");
    run.clock.advance(Duration::from_secs(1));
    let metrics = run.ctx.metrics();
    assert!(metrics.wait_for(WAIT, |m| m.queued.len() == 1));
    std::fs::remove_file(dir.path().join("gone.txt")).unwrap();
    release_tx.send(()).unwrap();
    assert!(metrics.wait_for_batch(Time(2000), WAIT));
    run.ctx.stop(false).unwrap();
    assert_eq!(out.lock().unwrap()[1], vec!["kept".to_string()]);
    assert_eq!(
        SourceCounters::get(&metrics.source("files-0").unreadable_files),
        1
    );
    assert!(metrics.completed_batches()[1].failure.is_none());
}

#[test]
fn missing_input_directory_is_a_clear_start_error() {
    let run = ManualRun::new(1).unwrap();
    run.ctx
        .text_file_stream("/nonexistent/lockgate-input")
        .print();
    let err = run.ctx.start().unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/lockgate-input") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn bounded_file_run_takes_existing_files_with_a_limit_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        put(
            dir.path(),
            &format!("f{i}.log"),
            format!("line {i}\n").as_bytes(),
        );
    }
    let ctx = StreamingContext::builder()
        .batch_interval(Duration::from_secs(10))
        .trigger(Trigger::AvailableNow)
        .start_time(Time(0))
        .clock(Arc::new(ManualClock::new(0)))
        .build()
        .unwrap();
    let opts = FileStreamOptions {
        max_files_per_batch: Some(2),
        ..Default::default()
    };
    let counts = collect_output(&ctx.text_file_stream_with(dir.path(), opts).count());
    ctx.start().unwrap();
    ctx.await_termination().unwrap();
    assert_eq!(*counts.lock().unwrap(), vec![vec![2], vec![2], vec![1]]);
}

#[test]
fn socket_stream_receives_lines_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let run = ManualRun::new(2).unwrap();
    let lines = run.ctx.socket_text_stream("127.0.0.1", port);
    let out = collect_output(&lines);
    run.ctx.start().unwrap();

    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"hello world\nsecond line\npartial")
        .unwrap();
    conn.write_all(b" line\n").unwrap();
    assert!(lines.wait_for_received(3, WAIT));
    run.next_batch().unwrap();
    drop(conn); // the peer goes away; the receiver must reconnect

    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"after reconnect\n").unwrap();
    assert!(lines.wait_for_received(4, WAIT));
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(
        sorted_batches(&out),
        vec![
            vec![
                "hello world".to_string(),
                "partial line".into(),
                "second line".into()
            ],
            vec!["after reconnect".to_string()]
        ]
    );
}

#[test]
fn graceful_stop_puts_received_data_into_a_last_batch() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let run = ManualRun::new(1).unwrap();
    let lines = run.ctx.socket_text_stream("127.0.0.1", port);
    let out = collect_output(&lines);
    run.ctx.start().unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"one\ntwo\n").unwrap();
    assert!(lines.wait_for_received(2, WAIT));
    run.ctx.stop(true).unwrap();
    assert_eq!(
        *out.lock().unwrap(),
        vec![vec!["one".to_string(), "two".into()]]
    );
}

/// A receiver that stores a record, then fails: the supervisor restarts it.
struct Flaky {
    starts: Arc<AtomicUsize>,
}

impl Receiver<usize> for Flaky {
    fn receive(&mut self, ctx: &ReceiverContext<usize>) -> Result<(), BoxError> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        ctx.store(n);
        Err("connection lost".into())
    }
}

#[test]
fn a_failing_receiver_is_restarted() {
    let run = ManualRun::new(1).unwrap();
    let starts = Arc::new(AtomicUsize::new(0));
    let s = run.ctx.receiver_stream(Flaky {
        starts: starts.clone(),
    });
    let out = collect_output(&s);
    run.ctx.start().unwrap();
    assert!(s.wait_for_received(3, WAIT));
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    let got = &out.lock().unwrap()[0];
    assert!(got.len() >= 3);
    assert_eq!(got[..3], [0, 1, 2]);
}
