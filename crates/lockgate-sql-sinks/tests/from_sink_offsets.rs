//! "Offsets and results in the same database": a job whose checkpoint is lost resumes
//! from what its SQLite sink recorded, taking every input exactly once; without the
//! option, the new run's batch ids collide with committed ones and the sink skips them.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lockgate_core::testing::ManualRun;
use lockgate_core::{ManualClock, StreamingContext};
use lockgate_sql_sinks::{SqlSink, SqlType, SqlValue, SqliteBackend, Table, WriteMode};

fn batches() -> Vec<Vec<i64>> {
    (0..6).map(|b| vec![b * 10, b * 10 + 1]).collect()
}

fn sink(db: &Path) -> SqlSink<i64, SqliteBackend> {
    let t = Table::new("events", &[("value", SqlType::BigInt)], &[]);
    SqlSink::new(
        "events",
        SqliteBackend::open(db).unwrap(),
        t,
        WriteMode::Insert,
        |v: &i64| vec![SqlValue::Int(*v)],
    )
    .unwrap()
}

/// Runs `n` batches with a checkpoint in `cp`, optionally resuming from the sink.
fn run(cp: &Path, db: &Path, n: usize, resume: bool) {
    let clock = Arc::new(ManualClock::new(0));
    let offsets = if resume {
        sink(db).offsets("events-app").unwrap()
    } else {
        None
    };
    let ctx = StreamingContext::get_or_create(cp, |b| {
        let ctx = b
            .app_name("events-app")
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock.clone())
            .from_sink_offsets(offsets)
            .build()?;
        ctx.seq_stream(batches()).write_to(sink(db));
        Ok(ctx)
    })
    .unwrap();
    let run = ManualRun {
        ctx,
        clock: clock.clone(),
    };
    run.ctx.start().unwrap();
    // A resumed run's batch times continue after the sink's last batch.
    clock.set(run.ctx.zero_time());
    run.run_batches(n).unwrap();
    run.ctx.stop(false).unwrap();
}

fn values(db: &Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c
        .prepare("SELECT value FROM events ORDER BY value")
        .unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_lost_checkpoint_resumes_from_the_sinks_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("out.db");
    run(&dir.path().join("cp1"), &db, 3, false);
    assert_eq!(values(&db), vec![0, 1, 10, 11, 20, 21]);
    // The checkpoint is lost; the new one starts empty but the sink knows batches 0..=2.
    run(&dir.path().join("cp2"), &db, 3, true);
    assert_eq!(
        values(&db),
        vec![0, 1, 10, 11, 20, 21, 30, 31, 40, 41, 50, 51]
    );
    let c = rusqlite::Connection::open(&db).unwrap();
    let ids: Vec<i64> = c
        .prepare("SELECT batch_id FROM lockgate_offsets ORDER BY batch_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn without_the_sinks_offsets_a_lost_checkpoint_loses_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("out.db");
    run(&dir.path().join("cp1"), &db, 3, false);
    // Batch ids restart at 0: the exactly-once sink skips them as already committed.
    run(&dir.path().join("cp2"), &db, 3, false);
    assert_eq!(values(&db), vec![0, 1, 10, 11, 20, 21]);
}
