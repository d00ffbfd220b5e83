//! The Kafka sink against a real Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`): one transaction per batch whose batch id is committed with it,
//! so a job that crashes after a batch committed and restarts on its checkpoint writes
//! every record once; a second instance fences the first; at least once writes a re-run
//! batch again. Every record is checked through its `lockgate-batch` / `lockgate-seq`
//! headers (the test broker's `read_committed` consumers do not filter aborted records,
//! so the test reads all records and tells them apart by these headers).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lockgate_core::testing::ManualRun;
use lockgate_core::{DeliveryMode, ManualClock, Sink, StreamingContext};
use lockgate_kafka::testing::{consume_all, create_topic, KafkaBroker};
use lockgate_kafka::{KafkaOutRecord, KafkaSink, KafkaSinkConfig};

/// The batches of the test job: batch `b` holds `10 * b .. 10 * b + 5`.
fn input() -> Vec<Vec<i64>> {
    (0..4).map(|b| (10 * b..10 * b + 5).collect()).collect()
}

fn sink_config(brokers: &str, topic: &str) -> KafkaSinkConfig {
    let mut c = KafkaSinkConfig::new(brokers, topic);
    // The test broker reports a partition's end as its last record batch's first offset
    // + 1: one record per batch keeps every record visible to the reader.
    c.properties = vec![
        ("batch.num.messages".into(), "1".into()),
        ("linger.ms".into(), "0".into()),
    ];
    c
}

fn sink(brokers: &str, topic: &str, transactional: bool) -> KafkaSink<i64> {
    let mut config = sink_config(brokers, topic);
    config.transactional = transactional;
    KafkaSink::new("out", "kafka-sink-test", config, |v: &i64, _| {
        KafkaOutRecord::keyed(v.to_string(), format!("value-{v}"))
    })
    .unwrap()
}

/// Runs `batches` batches of the test job on `dir`; with `fail_at`, an output after the
/// sink fails at that batch (a crash after the sink committed it).
fn run(
    dir: &Path,
    brokers: &str,
    topic: &str,
    mode: DeliveryMode,
    start_ms: i64,
    fail_at: Option<u64>,
    batches: usize,
) {
    let clock = Arc::new(ManualClock::new(start_ms));
    let ctx = StreamingContext::get_or_create(dir, |b| {
        let ctx = b
            .app_name("kafka-sink-test")
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock.clone())
            .delivery(mode)
            .build()?;
        let s = ctx.seq_stream(input());
        s.write_to(sink(brokers, topic, mode == DeliveryMode::ExactlyOnce));
        s.foreach_batch(move |_, r| {
            if Some(r.id) == fail_at {
                Err("simulated crash after the sink committed")
            } else {
                Ok(())
            }
        });
        Ok(ctx)
    })
    .unwrap();
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    let _ = run.run_batches(batches);
    let _ = run.ctx.stop(false);
}

/// Every record of `topic` as (batch id, seq, key, value), sorted.
fn read_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<(u64, u64, String, String)> {
    let mut out: Vec<_> = consume_all(brokers, topic, partitions, expected)
        .unwrap()
        .into_iter()
        .map(|r| {
            // Every record names its output stream (the sink's name).
            assert_eq!(r.header("lockgate-stream").as_deref(), Some("out"));
            (
                r.header("lockgate-batch").unwrap().parse().unwrap(),
                r.header("lockgate-seq").unwrap().parse().unwrap(),
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                String::from_utf8(r.value).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// What one uninterrupted run writes: every element once, with its batch and index.
fn expected() -> Vec<(u64, u64, String, String)> {
    let mut v: Vec<_> = input()
        .into_iter()
        .enumerate()
        .flat_map(|(b, xs)| {
            xs.into_iter()
                .enumerate()
                .map(move |(i, x)| (b as u64, i as u64, x.to_string(), format!("value-{x}")))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_crash_after_the_sink_committed_a_batch_writes_every_record_once() {
    let broker = KafkaBroker::start().unwrap();
    let topic = "sink-exactly-once";
    create_topic(&broker.brokers, topic, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Batches 0, 1, 2 commit in Kafka; the job fails at batch 2 before its checkpoint
    // commit, so the restart re-runs batch 2, which the sink already holds, then runs
    // batch 3 and the empty batches 4 and 5.
    run(
        dir.path(),
        &broker.brokers,
        topic,
        DeliveryMode::ExactlyOnce,
        0,
        Some(2),
        3,
    );
    let probe = sink(&broker.brokers, topic, true);
    assert_eq!(probe.last_committed_batch().unwrap(), Some(2));
    drop(probe);
    run(
        dir.path(),
        &broker.brokers,
        topic,
        DeliveryMode::ExactlyOnce,
        3000,
        None,
        3,
    );
    let got = read_all(&broker.brokers, topic, 2, expected().len());
    assert_eq!(
        got,
        expected(),
        "each record once, batch 2 not written again"
    );
    // Batches 4 and 5 held no records and opened no transaction: the group offset
    // still names batch 3, the last one that wrote.
    let probe = sink(&broker.brokers, topic, true);
    assert_eq!(probe.last_committed_batch().unwrap(), Some(3));
}

#[test]
fn at_least_once_writes_the_re_run_batch_again() {
    let broker = KafkaBroker::start().unwrap();
    let topic = "sink-at-least-once";
    create_topic(&broker.brokers, topic, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        &broker.brokers,
        topic,
        DeliveryMode::AtLeastOnce,
        0,
        Some(2),
        3,
    );
    run(
        dir.path(),
        &broker.brokers,
        topic,
        DeliveryMode::AtLeastOnce,
        3000,
        None,
        1,
    );
    let mut want = expected();
    want.extend(expected().into_iter().filter(|r| r.0 == 2));
    want.sort();
    let got = read_all(&broker.brokers, topic, 2, want.len());
    assert_eq!(got, want, "batch 2 twice, everything else once");
}

#[test]
fn a_second_instance_fences_the_first_which_stops_with_a_clear_error() {
    let broker = KafkaBroker::start().unwrap();
    let topic = "sink-fencing";
    create_topic(&broker.brokers, topic, 1).unwrap();
    let first = sink(&broker.brokers, topic, true);
    let _second = sink(&broker.brokers, topic, true);
    let info = lockgate_core::SinkBatch {
        app: "kafka-sink-test".into(),
        id: 0,
        time: lockgate_core::Time(1000),
        inputs: Arc::default(),
        delivery: DeliveryMode::ExactlyOnce,
        counters: Arc::default(),
    };
    let err = first
        .commit(&lockgate_core::Batch::from_vec(vec![1, 2, 3], 1), &info)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fenced") && err.contains("lockgate-kafka-sink-test-out"),
        "{err}"
    );
    let mut by_batch: BTreeMap<u64, usize> = BTreeMap::new();
    for (b, ..) in read_all(&broker.brokers, topic, 1, 0) {
        *by_batch.entry(b).or_default() += 1;
    }
    assert!(
        by_batch.is_empty(),
        "the fenced producer wrote {by_batch:?}"
    );
}
