//! The SQL sinks against a real SQLite file and a real PostgreSQL 15 server: one
//! transaction per batch, committed batches skipped (exactly-once) or written again
//! (at-least-once), upserts, and a database that goes away mid-batch.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use lockgate_core::SourcePlan;
use lockgate_core::{Batch, DeliveryMode, Sink, SinkBatch, Time};
use lockgate_sql_sinks::testing::PgServer;
use lockgate_sql_sinks::{
    Backend, PostgresBackend, SqlSink, SqlType, SqlValue, SqliteBackend, Table, WriteMode,
};

fn table() -> Table {
    Table::new(
        "word_counts",
        &[("word", SqlType::Text), ("count", SqlType::BigInt)],
        &["word"],
    )
}

fn row(x: &(String, i64)) -> Vec<SqlValue> {
    vec![SqlValue::Text(x.0.clone()), SqlValue::Int(x.1)]
}

fn info(id: u64, delivery: DeliveryMode) -> SinkBatch {
    SinkBatch {
        app: "app".into(),
        id,
        time: Time((id as i64 + 1) * 1000),
        inputs: Arc::new(vec![SourcePlan {
            source: "files-0".into(),
            descriptor: vec![id as u8],
            records: 2,
            description: format!("file-{id}"),
        }]),
        delivery,
        counters: Default::default(),
    }
}

fn batch(words: &[(&str, i64)]) -> Batch<(String, i64)> {
    Batch::from_vec(words.iter().map(|(w, c)| (w.to_string(), *c)).collect(), 2)
}

/// Commits batch 0, batch 1, then batch 1 again (a re-run after a crash).
fn exercise<B: Backend>(make: impl Fn() -> B, count: impl Fn(&str) -> i64, rows: impl Fn() -> i64) {
    // Exactly-once upserts: the re-run changes nothing.
    let sink = SqlSink::new("counts", make(), table(), WriteMode::Upsert, row).unwrap();
    sink.commit(
        &batch(&[("a", 1), ("b", 1)]),
        &info(0, DeliveryMode::ExactlyOnce),
    )
    .unwrap();
    sink.commit(&batch(&[("a", 2)]), &info(1, DeliveryMode::ExactlyOnce))
        .unwrap();
    sink.commit(&batch(&[("a", 99)]), &info(1, DeliveryMode::ExactlyOnce))
        .unwrap();
    assert_eq!(count("a"), 2);
    assert_eq!(count("b"), 1);
    assert_eq!(rows(), 2);
    let last = sink.last_committed("app").unwrap().unwrap();
    assert_eq!((last.batch_id, last.batch_time_ms), (1, 2000));
    assert!(!last.descriptors.is_empty());
}

fn exercise_insert_at_least_once<B: Backend>(make: impl Fn() -> B, rows: impl Fn() -> i64) {
    let t = Table::new(
        "events",
        &[("word", SqlType::Text), ("count", SqlType::BigInt)],
        &[],
    );
    let sink = SqlSink::new("events", make(), t, WriteMode::Insert, row).unwrap();
    sink.commit(&batch(&[("a", 1)]), &info(0, DeliveryMode::AtLeastOnce))
        .unwrap();
    sink.commit(&batch(&[("a", 1)]), &info(0, DeliveryMode::AtLeastOnce))
        .unwrap();
    // At least once: the re-run batch was written twice.
    assert_eq!(rows(), 2);
    let once = SqlSink::new(
        "events2",
        make(),
        Table::new(
            "events2",
            &[("word", SqlType::Text), ("count", SqlType::BigInt)],
            &[],
        ),
        WriteMode::Insert,
        row,
    )
    .unwrap();
    once.commit(&batch(&[("a", 1)]), &info(0, DeliveryMode::ExactlyOnce))
        .unwrap();
    once.commit(&batch(&[("a", 1)]), &info(0, DeliveryMode::ExactlyOnce))
        .unwrap();
}

#[test]
fn sqlite_sink_commits_each_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.db");
    let q = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    exercise(
        || SqliteBackend::open(&path).unwrap(),
        |w| q(&format!("SELECT count FROM word_counts WHERE word = '{w}'")),
        || q("SELECT COUNT(*) FROM word_counts"),
    );
    exercise_insert_at_least_once(
        || SqliteBackend::open(&path).unwrap(),
        || q("SELECT COUNT(*) FROM events"),
    );
    assert_eq!(q("SELECT COUNT(*) FROM events2"), 1);
    assert_eq!(
        q("SELECT COUNT(*) FROM lockgate_offsets WHERE sink = 'counts'"),
        2
    );
}

#[test]
fn postgres_sink_commits_each_batch_once_and_survives_the_server_going_away() {
    let pg = PgServer::start().unwrap();
    let url = pg.url.clone();
    let q = |sql: &str| -> i64 {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one(sql, &[]).unwrap().get(0)
    };
    exercise(
        || PostgresBackend::connect(&url).unwrap(),
        |w| q(&format!("SELECT count FROM word_counts WHERE word = '{w}'")),
        || q("SELECT COUNT(*) FROM word_counts"),
    );
    exercise_insert_at_least_once(
        || PostgresBackend::connect(&url).unwrap(),
        || q("SELECT COUNT(*) FROM events"),
    );
    assert_eq!(q("SELECT COUNT(*) FROM events2"), 1);

    // The server crashes between batches and comes back while the sink retries.
    let sink = SqlSink::new(
        "counts",
        PostgresBackend::connect(&url).unwrap(),
        table(),
        WriteMode::Upsert,
        row,
    )
    .unwrap();
    pg.pause().unwrap();
    let resumer = {
        let dir_pg = &pg;
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(400));
                dir_pg.resume().unwrap();
            });
            sink.commit(&batch(&[("c", 5)]), &info(2, DeliveryMode::ExactlyOnce))
        })
    };
    resumer.unwrap();
    assert_eq!(q("SELECT count FROM word_counts WHERE word = 'c'"), 5);

    // Regression: an outage longer than ~3 s (5 retries) stopped the job. A 10 s
    // outage is ridden through, the retries counted, the result exact.
    pg.pause().unwrap();
    let outage = info(20, DeliveryMode::ExactlyOnce);
    let counters = outage.counters.clone();
    let committed = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(10));
            pg.resume().unwrap();
        });
        sink.commit(&batch(&[("e", 9)]), &outage)
    });
    committed.unwrap();
    assert_eq!(q("SELECT count FROM word_counts WHERE word = 'e'"), 9);
    assert!(counters.retries.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    assert_eq!(counters.status().retrying_since_ms, None, "settled");
    assert!(counters.status().last_error.is_some());

    // Down for longer than the retries: a clear error, nothing committed; the re-run
    // after the database is back commits the batch once.
    let sink = sink.retries(1);
    pg.pause().unwrap();
    let err = sink
        .commit(&batch(&[("d", 7)]), &info(3, DeliveryMode::ExactlyOnce))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sink `counts`, batch 3") && err.contains("re-runs it"),
        "{err}"
    );
    pg.resume().unwrap();
    sink.commit(&batch(&[("d", 7)]), &info(3, DeliveryMode::ExactlyOnce))
        .unwrap();
    sink.commit(&batch(&[("d", 8)]), &info(3, DeliveryMode::ExactlyOnce))
        .unwrap();
    assert_eq!(q("SELECT count FROM word_counts WHERE word = 'd'"), 7);
    assert_eq!(
        q("SELECT COUNT(*) FROM lockgate_offsets WHERE sink = 'counts'"),
        5
    );
}

/// Regression (a Kafka-free crash-suite failure: `opening checkpoint …: PostgreSQL: db
/// error`): a job killed while it created its tables left its session creating them
/// when its replacement started, and two `CREATE TABLE IF NOT EXISTS` at once collide in
/// the catalog. Setups are serialized; the error names the server's message.
#[test]
fn postgres_sinks_set_up_at_the_same_time_all_succeed() {
    let pg = PgServer::start().unwrap();
    let url = pg.url.clone();
    for round in 0..5 {
        let name = format!("race_{round}");
        let results: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (url, name) = (url.clone(), name.clone());
                    s.spawn(move || {
                        let table = Table::new(
                            &name,
                            &[("word", SqlType::Text), ("count", SqlType::BigInt)],
                            &["word"],
                        );
                        SqlSink::new(
                            "race",
                            PostgresBackend::connect(&url).unwrap(),
                            table,
                            WriteMode::Upsert,
                            row,
                        )
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let failed: Vec<&String> = results.iter().filter(|e| !e.is_empty()).collect();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
    }
}

/// Two scale-out tasks commit their own batch ids side by side; a task's batch commits
/// only after the task's previous one (a zombie behind or ahead of the database is
/// refused, naming the task); a re-run of a committed batch is skipped.
fn exercise_tasks<B: Backend>(make: impl Fn() -> B, count: impl Fn(&str) -> i64) {
    let sink = |task: &str| {
        SqlSink::new("tasked", make(), table(), WriteMode::Upsert, row)
            .unwrap()
            .for_task(task)
            .retries(0)
    };
    let (a, b) = (sink("logs-0"), sink("logs-1"));
    let eo = DeliveryMode::ExactlyOnce;
    a.commit(&batch(&[("x", 1)]), &info(0, eo)).unwrap();
    b.commit(&batch(&[("y", 1)]), &info(0, eo)).unwrap();
    a.commit(&batch(&[("x", 2)]), &info(1, eo)).unwrap();
    // The same batch again (a re-run by the task's next owner): skipped.
    a.commit(&batch(&[("x", 99)]), &info(1, eo)).unwrap();
    assert_eq!(count("x"), 2);
    // A writer of logs-0 that skips ahead (or a zombie behind a successor) is refused.
    let err = a
        .commit(&batch(&[("x", 50)]), &info(5, eo))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("task logs-0 may not commit batch 5")
            && err.contains("last batch of the task is 1")
            && err.contains("another instance took over"),
        "{err}"
    );
    assert_eq!(count("x"), 2);
    b.commit(&batch(&[("y", 2)]), &info(1, eo)).unwrap();
    assert_eq!(a.last_committed("app").unwrap().unwrap().batch_id, 1);
    assert_eq!(b.last_committed("app").unwrap().unwrap().batch_id, 1);
    // The job's one instance (no task) is a writer of its own.
    let single = SqlSink::new("tasked", make(), table(), WriteMode::Upsert, row).unwrap();
    assert_eq!(single.last_committed("app").unwrap(), None);
}

#[test]
fn sqlite_tasks_commit_in_order_and_a_zombie_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.db");
    let q = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    exercise_tasks(
        || SqliteBackend::open(&path).unwrap(),
        |w| q(&format!("SELECT count FROM word_counts WHERE word = '{w}'")),
    );
}

#[test]
fn postgres_tasks_commit_in_order_and_a_zombie_is_refused() {
    let pg = PgServer::start().unwrap();
    let url = pg.url.clone();
    let q = |sql: &str| -> i64 {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one(sql, &[]).unwrap().get(0)
    };
    exercise_tasks(
        || PostgresBackend::connect(&url).unwrap(),
        |w| q(&format!("SELECT count FROM word_counts WHERE word = '{w}'")),
    );
}

/// The offsets table of an earlier version (no `task`): setting a sink up adds the
/// column, keeps the rows (as the one instance's) and their key.
#[test]
fn an_offsets_table_without_tasks_is_migrated() {
    const OLD: &str = "CREATE TABLE lockgate_offsets (app TEXT NOT NULL, sink TEXT NOT NULL, \
         batch_id BIGINT NOT NULL, batch_time_ms BIGINT NOT NULL, descriptors BLOB NOT NULL, \
         description TEXT NOT NULL, PRIMARY KEY (app, sink, batch_id))";
    const ROW: &str = "INSERT INTO lockgate_offsets VALUES ('app', 'counts', 4, 5000, X'', 'old')";
    // SQLite.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&format!("{OLD}; {ROW};")).unwrap();
    }
    let sink = SqlSink::new(
        "counts",
        SqliteBackend::open(&path).unwrap(),
        table(),
        WriteMode::Upsert,
        row,
    )
    .unwrap();
    assert_eq!(sink.last_committed("app").unwrap().unwrap().batch_id, 4);
    sink.commit(&batch(&[("a", 1)]), &info(5, DeliveryMode::ExactlyOnce))
        .unwrap();
    assert_eq!(sink.last_committed("app").unwrap().unwrap().batch_id, 5);
    // PostgreSQL.
    let pg = PgServer::start().unwrap();
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "{}; {};",
        OLD.replace("BLOB", "BYTEA"),
        ROW.replace("X''", "''")
    ))
    .unwrap();
    let sink = SqlSink::new(
        "counts",
        PostgresBackend::connect(&pg.url).unwrap(),
        table(),
        WriteMode::Upsert,
        row,
    )
    .unwrap();
    assert_eq!(sink.last_committed("app").unwrap().unwrap().batch_id, 4);
    let tasked = SqlSink::new(
        "counts",
        PostgresBackend::connect(&pg.url).unwrap(),
        table(),
        WriteMode::Upsert,
        row,
    )
    .unwrap()
    .for_task("logs-0");
    // Batch 4 of a task is not the instance's batch 4: the key has the task.
    tasked
        .commit(&batch(&[("a", 1)]), &info(0, DeliveryMode::ExactlyOnce))
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM lockgate_offsets", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}
