//! The JSON API and `/metrics` against a running context on the manual clock, and the
//! server's binding (loopback only, next free port).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use lockgate_core::testing::ManualRun;
use lockgate_core::InputQueue;
use lockgate_web::{UiConfig, UiServer};
use serde_json::Value;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn ephemeral() -> UiConfig {
    UiConfig {
        port: 0,
        ..Default::default()
    }
}

#[test]
fn statistics_and_batches_match_the_recorded_batches() {
    let run = ManualRun::new(2).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let ch = Mutex::new((release_rx, entered_tx));
    let q = InputQueue::from_batches(vec![vec![1, 2, 3], vec![4], vec![5, 6]]);
    run.ctx
        .queue_stream(q, true, None)
        .name("numbers")
        .foreach_batch(move |_, b| {
            if b.id == 2 {
                let c = ch.lock().unwrap();
                c.1.send(()).unwrap();
                let _ = c.0.recv();
            }
        });
    let ui = UiServer::start(&run.ctx, &ephemeral()).unwrap();
    run.ctx.start().unwrap();
    run.run_batches(2).unwrap();
    // Batch 3 is running (held), batch 4 is queued.
    run.clock.advance(Duration::from_secs(1));
    entered_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    run.clock.advance(Duration::from_secs(1));
    assert!(run
        .ctx
        .metrics()
        .wait_for(Duration::from_secs(30), |m| m.queued.len() == 1));

    let addr = ui.addr();
    let apps = json(addr, "/api/v1/applications");
    let app_id = apps[0]["id"].as_str().unwrap().to_string();
    assert_eq!(apps[0]["name"], "test");
    assert_eq!(apps[0]["attempts"][0]["completed"], false);

    let stats = json(
        addr,
        &format!("/api/v1/applications/{app_id}/streaming/statistics"),
    );
    assert_eq!(stats["batchDuration"], 1000);
    assert_eq!(stats["numTotalCompletedBatches"], 2);
    assert_eq!(stats["numRetainedCompletedBatches"], 2);
    assert_eq!(stats["numActiveBatches"], 2);
    assert_eq!(stats["numProcessedRecords"], 4);
    assert_eq!(stats["avgInputRate"], 2.0);
    assert_eq!(stats["avgSchedulingDelay"], 0.0);

    let batches = json(
        addr,
        &format!("/api/v1/applications/{app_id}/streaming/batches"),
    );
    let summary: Vec<(i64, String, i64)> = batches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["batchId"].as_i64().unwrap(),
                b["status"].as_str().unwrap().to_string(),
                b["inputSize"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (4000, "QUEUED".into(), 0),
            (3000, "PROCESSING".into(), 2),
            (2000, "COMPLETED".into(), 1),
            (1000, "COMPLETED".into(), 3),
        ]
    );
    let completed = json(
        addr,
        &format!("/api/v1/applications/{app_id}/streaming/batches?status=COMPLETED"),
    );
    assert_eq!(completed.as_array().unwrap().len(), 2);

    let one = json(
        addr,
        &format!("/api/v1/applications/{app_id}/streaming/batches/1000"),
    );
    assert_eq!(one["batchTime"], "1970-01-01T00:00:01.000GMT");
    assert_eq!(one["lockgateBatchId"], 0);
    assert_eq!(one["numTotalOutputOps"], 1);
    assert_eq!(one["processingTime"], 0);
    assert_eq!(one["inputs"][0]["records"], 3);
    assert_eq!(one["operators"][0]["name"], "numbers");
    assert_eq!(one["operators"][0]["records"], 3);
    assert_eq!(
        get(
            addr,
            &format!("/api/v1/applications/{app_id}/streaming/batches/999")
        )
        .0,
        404
    );
    assert_eq!(
        get(addr, "/api/v1/applications/nope/streaming/statistics").0,
        404
    );

    // Spark's paths answer with the pages; an unknown path says what there is.
    for path in ["/", "/streaming/", "/streaming"] {
        let (status, body) = get(addr, path);
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains("<title>Lockgate — Streaming</title>"),
            "{path}"
        );
    }
    for path in ["/streaming/batch/?id=1000", "/batch?id=1000"] {
        let (status, body) = get(addr, path);
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("<title>Lockgate — Batch</title>"), "{path}");
    }
    let (status, body) = get(addr, "/streaming/nope");
    assert_eq!(status, 404);
    assert!(
        body.contains("no page `/streaming/nope`") && body.contains("/streaming/batch/?id="),
        "{body}"
    );

    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("lockgate_batches_completed_total{app=\"test\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockgate_batches_queued{app=\"test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockgate_records_in_total{app=\"test\"} 4"),
        "{metrics}"
    );
    // Batches 1 and 2 completed: 3 + 1 elements written by the output.
    assert!(
        metrics.contains("lockgate_records_out_total{app=\"test\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockgate_scheduling_delay_seconds_bucket{app=\"test\",le=\"0.001\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockgate_processing_time_seconds_count{app=\"test\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockgate_source_records_total{app=\"test\",source=\"queue-0\"}"),
        "{metrics}"
    );

    release_tx.send(()).unwrap();
    run.ctx.stop(false).unwrap();
    drop(ui);
}

/// The listening sockets of this process on `port`, as hex local addresses from
/// /proc/net/tcp and tcp6 (state 0A = LISTEN).
fn listeners(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 && f[3] == "0A" {
                if let Some((ip, p)) = f[1].split_once(':') {
                    if u16::from_str_radix(p, 16).ok() == Some(port) {
                        out.push(ip.to_string());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn binds_loopback_only_and_takes_the_next_free_port() {
    let run = ManualRun::new(1).unwrap();
    run.ctx
        .constant_input_stream(vec![1])
        .foreach_batch(|_, _| ());
    // Take a port, then ask for it: the server moves to a later one.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ui = UiServer::start(
        &run.ctx,
        &UiConfig {
            port,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(ui.addr().port() > port && ui.addr().port() <= port + 16);
    assert!(ui.addr().ip().is_loopback());
    assert!(ui.url().starts_with("http://127.0.0.1:"));
    // Nothing listens on another address of this machine for that port.
    let ls = listeners(ui.addr().port());
    assert!(
        !ls.is_empty() && ls.iter().all(|a| a == "0100007F"),
        "listening on {ls:?}"
    );
    drop(ui);
}

#[test]
fn metrics_show_wal_size_and_checkpoint_writes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let clock = std::sync::Arc::new(lockgate_core::ManualClock::new(0));
    let mut lines = None;
    let ctx = lockgate_core::StreamingContext::get_or_create(dir.path(), |b| {
        let ctx = b
            .app_name("wal")
            .clock(clock.clone())
            .block_interval(Duration::from_millis(20))
            .build()?;
        let l = ctx.socket_text_stream("127.0.0.1", port);
        l.foreach_batch(|_, _| ());
        lines = Some(l);
        Ok(ctx)
    })
    .unwrap();
    let lines = lines.unwrap();
    let run = ManualRun { ctx, clock };
    let ui = UiServer::start(&run.ctx, &ephemeral()).unwrap();
    run.ctx.start().unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"one\ntwo\n").unwrap();
    assert!(lines.wait_for_stored(2, Duration::from_secs(30)));
    let (_, before) = get(ui.addr(), "/metrics");
    let wal_line = before
        .lines()
        .find(|l| l.starts_with("lockgate_wal_bytes{app=\"wal\",source=\"socket-0\"}"))
        .unwrap_or("");
    let bytes: f64 = wal_line
        .split_whitespace()
        .last()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert!(bytes > 0.0, "{before}");
    run.next_batch().unwrap();
    run.ctx.stop(false).unwrap();
    let (_, after) = get(ui.addr(), "/metrics");
    let count: u64 = after
        .lines()
        .find(|l| l.starts_with("lockgate_checkpoint_write_seconds_count{app=\"wal\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= 1, "{after}");
}

#[test]
fn the_rate_controllers_decision_is_in_the_batch_json_and_metrics() {
    use lockgate_core::Time;
    let clock = std::sync::Arc::new(lockgate_core::ManualClock::new(0));
    let ctx = lockgate_core::StreamingContext::builder()
        .app_name("bp")
        .clock(clock.clone())
        .backpressure(true)
        .build()
        .unwrap();
    let q = InputQueue::from_batches(vec![(0..1000).collect::<Vec<i32>>(), (0..1000).collect()]);
    let c2 = clock.clone();
    // Processing takes 500 ms of the manual clock for batch 0 and 1000 ms for batch 1.
    ctx.queue_stream(q, true, None).foreach_batch(move |_, b| {
        // Later (empty) batches take no time, so the clock stays put after batch 1.
        match b.id {
            0 => c2.advance(Duration::from_millis(500)),
            1 => c2.advance(Duration::from_millis(1000)),
            _ => {}
        }
    });
    let ui = UiServer::start(&ctx, &ephemeral()).unwrap();
    ctx.start().unwrap();
    for t in [1000, 2000] {
        clock.set(Time(t));
        assert!(ctx
            .metrics()
            .wait_for_batch(Time(t), Duration::from_secs(30)));
    }
    let app = json(ui.addr(), "/api/v1/applications")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = json(
        ui.addr(),
        &format!("/api/v1/applications/{app}/streaming/batches/1000"),
    );
    assert!(
        first["rateController"].is_null(),
        "the first batch only sets the baseline"
    );
    let second = json(
        ui.addr(),
        &format!("/api/v1/applications/{app}/streaming/batches/2000"),
    );
    let r = &second["rateController"];
    // Baseline 2000/s; this batch ran at 1000/s with no scheduling delay: 2000 - 1000.
    assert_eq!(r["processingRate"], 1000.0);
    assert_eq!(r["error"], 1000.0);
    assert_eq!(r["historicalError"], 0.0);
    assert_eq!(r["rate"], 1000.0);
    let (_, metrics) = get(ui.addr(), "/metrics");
    assert!(
        metrics.contains("lockgate_rate_limit_records_per_second{app=\"bp\"} 1000"),
        "{metrics}"
    );
    ctx.stop(false).unwrap();
}

#[test]
fn metrics_show_late_records_and_the_watermark_per_event_time_operator() {
    use lockgate_core::{Time, WindowSpec};
    let run = ManualRun::new(2).unwrap();
    let q = InputQueue::from_batches(vec![vec![50_000i64, 60_000], vec![1_000, 70_000]]);
    run.ctx
        .queue_stream(q, true, None)
        .with_watermark(|t: &i64| Some(Time(*t)), Duration::from_secs(5))
        .window(WindowSpec::tumbling(Duration::from_secs(10)))
        .count()
        .name("per_10s")
        .foreach_batch(|_, _| ());
    let ui = UiServer::start(&run.ctx, &ephemeral()).unwrap();
    run.ctx.start().unwrap();
    run.run_batches(2).unwrap();
    let (_, m) = get(ui.addr(), "/metrics");
    run.ctx.stop(false).unwrap();
    assert!(
        m.contains("lockgate_late_records_total{app=\"test\",operator=\"per_10s\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("lockgate_watermark_seconds{app=\"test\",operator=\"per_10s\"} 65"),
        "{m}"
    );
}

/// Regression: idle connections that sent nothing were never closed, and nothing capped
/// them, so they could take every file descriptor of the job. Connections beyond the
/// cap wait (in the listen queue), idle ones are closed after the header-read timeout,
/// and the API answers through it all.
#[test]
fn idle_connections_are_capped_and_closed_and_the_api_still_answers() {
    let run = ManualRun::new(1).unwrap();
    run.ctx
        .queue_stream(InputQueue::from_batches(vec![vec![1]]), true, None)
        .foreach_batch(|_, _| ());
    let cfg = UiConfig {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(500),
        ..ephemeral()
    };
    let ui = UiServer::start(&run.ctx, &cfg).unwrap();
    let addr = ui.addr();
    let idle: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Each idle connection is closed by the server (EOF) once it is served and its
    // header-read timeout passes; those beyond the cap wait their turn first.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 64];
        let n = c
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("an idle connection was not closed: {e}"));
        // Some servers answer a timeout with a 408; either way the connection ends.
        if n > 0 {
            assert!(String::from_utf8_lossy(&buf[..n]).contains("408"), "{n}");
        }
    }
    let (status, _) = get(addr, "/metrics");
    assert_eq!(status, 200);
}

/// Regression: a socket job whose server was not listening reported `numReceivers: 0`.
/// The receiver is listed, inactive with its last error, then active once connected.
#[test]
fn a_receiver_without_its_server_is_shown_inactive_with_its_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let run = ManualRun::new(1).unwrap();
    run.ctx
        .socket_text_stream("127.0.0.1", port)
        .foreach_batch(|_, _| ());
    let ui = UiServer::start(&run.ctx, &ephemeral()).unwrap();
    run.ctx.start().unwrap();
    let addr = ui.addr();
    let app = json(addr, "/api/v1/applications")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/api/v1/applications/{app}/streaming");
    let wait_for = |pred: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = json(addr, &format!("{base}/receivers"));
            if pred(&r) || std::time::Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let r = wait_for(&|r| r[0]["lastErrorMessage"].is_string());
    assert_eq!(r[0]["isReceiver"], true, "{r}");
    assert_eq!(r[0]["isActive"], false, "{r}");
    assert!(
        r[0]["lastErrorMessage"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{r}"
    );
    let stats = json(addr, &format!("{base}/statistics"));
    assert_eq!(stats["numReceivers"], 1);
    assert_eq!(stats["numInactiveReceivers"], 1);
    // The server comes up: the receiver reconnects and shows active.
    let server = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (_conn, _) = server.accept().unwrap();
    let r = wait_for(&|r| r[0]["isActive"] == true);
    assert_eq!(r[0]["isActive"], true, "{r}");
    assert_eq!(
        json(addr, &format!("{base}/statistics"))["numActiveReceivers"],
        1
    );
    run.ctx.stop(false).unwrap();
}

/// A sink's retries show in `/metrics`, in `/streaming/sinks` and on the batch.
#[test]
fn sink_retries_are_shown_in_metrics_the_api_and_the_batch() {
    struct Flaky;
    impl lockgate_core::Sink<i32> for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }
        fn commit(
            &self,
            _: &lockgate_core::Batch<i32>,
            info: &lockgate_core::SinkBatch,
        ) -> Result<(), lockgate_core::BoxError> {
            info.counters.retrying("connection lost");
            info.counters.retrying("connection lost");
            info.counters.settled();
            Ok(())
        }
    }
    let run = ManualRun::new(1).unwrap();
    run.ctx
        .queue_stream(InputQueue::from_batches(vec![vec![1]]), true, None)
        .write_to(Flaky);
    let ui = UiServer::start(&run.ctx, &ephemeral()).unwrap();
    run.ctx.start().unwrap();
    run.run_batches(1).unwrap();
    let addr = ui.addr();
    let app = json(addr, "/api/v1/applications")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sinks = json(addr, &format!("/api/v1/applications/{app}/streaming/sinks"));
    assert_eq!(sinks[0]["sinkName"], "flaky");
    assert_eq!(sinks[0]["retries"], 2);
    assert_eq!(sinks[0]["retrying"], false);
    assert_eq!(sinks[0]["lastErrorMessage"], "connection lost");
    let batches = json(
        addr,
        &format!("/api/v1/applications/{app}/streaming/batches"),
    );
    let id = batches[0]["batchId"].as_i64().unwrap();
    let batch = json(
        addr,
        &format!("/api/v1/applications/{app}/streaming/batches/{id}"),
    );
    assert_eq!(batch["outputOperations"][0]["retries"], 2, "{batch}");
    let (_, metrics) = get(addr, "/metrics");
    assert!(
        metrics.contains("lockgate_sink_retries_total{app=\"test\",sink=\"flaky\"} 2"),
        "{metrics}"
    );
    run.ctx.stop(false).unwrap();
}

#[test]
fn an_instance_shows_each_task_as_an_application_with_metrics_labelled_by_task() {
    let runs: Vec<ManualRun> = (0..2).map(|_| ManualRun::new(1).unwrap()).collect();
    for r in &runs {
        r.ctx.seq_stream(vec![vec![1, 2, 3]]).count().print();
        r.ctx.start().unwrap();
        r.run_batches(1).unwrap();
    }
    let contexts: Vec<(String, lockgate_core::StreamingContext)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("logs-{i}"), r.ctx.clone()))
        .collect();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ready.clone();
    let instance = lockgate_web::Instance {
        contexts: std::sync::Arc::new(move || contexts.clone()),
        ready: std::sync::Arc::new(move || {
            let r = flag.load(std::sync::atomic::Ordering::Acquire);
            (
                r,
                if r {
                    "running"
                } else {
                    "starting tasks logs-1"
                }
                .into(),
            )
        }),
    };
    let ui = UiServer::start_instance(instance, &ephemeral()).unwrap();
    let apps = json(ui.addr(), "/api/v1/applications");
    let tasks: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["lockgateTask"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["logs-0", "logs-1"]);
    let id = apps[1]["id"].as_str().unwrap();
    let stats = json(
        ui.addr(),
        &format!("/api/v1/applications/{id}/streaming/statistics"),
    );
    assert_eq!(stats["numTotalCompletedBatches"], 1);
    let (status, body) = get(
        ui.addr(),
        "/api/v1/applications/app-0-logs-9/streaming/batches",
    );
    assert_eq!(status, 404);
    assert!(
        body.contains(id),
        "the 404 names the applications there are: {body}"
    );
    // One HELP/TYPE header per metric, a sample per task.
    let (_, metrics) = get(ui.addr(), "/metrics");
    assert_eq!(
        metrics
            .matches("# TYPE lockgate_batches_completed_total counter")
            .count(),
        1,
        "{metrics}"
    );
    for task in ["logs-0", "logs-1"] {
        assert!(
            metrics.contains(&format!(
                "lockgate_batches_completed_total{{task=\"{task}\",app="
            )),
            "{metrics}"
        );
    }
    let mut headers = std::collections::HashSet::new();
    for l in metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(headers.insert(l.to_string()), "twice: {l}");
    }
    // Readiness follows the instance; liveness is the server's.
    assert_eq!(get(ui.addr(), "/ready").0, 503);
    ready.store(true, std::sync::atomic::Ordering::Release);
    let (status, body) = get(ui.addr(), "/ready");
    assert_eq!((status, body.contains("running")), (200, true), "{body}");
    assert_eq!(get(ui.addr(), "/health").0, 200);
    for r in &runs {
        r.ctx.stop(false).unwrap();
    }
}
