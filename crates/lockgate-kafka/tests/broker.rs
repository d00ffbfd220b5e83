//! The Kafka direct source against a real Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`), records produced by librdkafka: bounded runs up to the end
//! offsets at start, exact replay of an unfinished batch after a restart, several topics
//! and a pattern (topics created while the job runs included), and clear errors for a
//! missing topic and unreachable brokers.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lockgate_core::source::direct::{DirectStreamOptions, StartingOffsets, TopicPartition};
use lockgate_core::testing::{run_bounded, run_checkpointed};
use lockgate_core::StreamingContext;
use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
use lockgate_kafka::{kafka_lines, kafka_records, KafkaConfig};

/// Values `p<partition>-<i>` for `i` in `range`, round-robin over `partitions`.
fn values(partitions: i32, range: std::ops::Range<i32>) -> Vec<(i32, String)> {
    range
        .map(|i| {
            let p = i % partitions;
            (p, format!("p{p}-{i}"))
        })
        .collect()
}

fn limited(n: u64) -> DirectStreamOptions {
    DirectStreamOptions {
        max_records_per_partition: Some(n),
        ..Default::default()
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_bounded_run_reads_each_record_once_in_offset_order_up_to_the_end_at_start() {
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "events", 3).unwrap();
    produce(&broker.brokers, "events", values(3, 0..900)).unwrap();
    let out = run_bounded(2, |ctx| {
        let stream = kafka_records(
            ctx,
            KafkaConfig::new(&broker.brokers, "events"),
            limited(100),
        )
        .unwrap();
        // Records produced while the run goes on are not part of it.
        let brokers = broker.brokers.clone();
        stream.foreach_batch(move |_, b| {
            if b.id == 0 {
                produce(&brokers, "events", values(3, 900..960)).unwrap();
            }
        });
        stream
    })
    .unwrap();
    assert_eq!(out.len(), 3, "300 records per partition, 100 per batch");
    let mut by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut all = Vec::new();
    for batch in out.values() {
        for r in batch {
            assert_eq!(r.topic, "events");
            assert!(r.headers.is_empty(), "{:?}", r.headers);
            by_partition.entry(r.partition).or_default().push(r.offset);
            all.push(String::from_utf8(r.value.clone().unwrap()).unwrap());
        }
    }
    for (p, offsets) in &by_partition {
        assert_eq!(*offsets, (0..300).collect::<Vec<i64>>(), "partition {p}");
    }
    assert_eq!(
        sorted(all),
        sorted(values(3, 0..900).into_iter().map(|v| v.1).collect())
    );
}

/// The topic `lines`, 20 records per partition per batch, with a checkpoint in `dir`.
fn run_lines_job(
    dir: &Path,
    brokers: &str,
    start_ms: i64,
    batches: usize,
) -> BTreeMap<u64, Vec<String>> {
    run_checkpointed(dir, 2, start_ms, batches, |ctx| {
        Ok(kafka_lines(
            ctx,
            KafkaConfig::new(brokers, "lines"),
            limited(20),
        )?)
    })
    .unwrap()
}

#[test]
fn a_restart_re_reads_the_unfinished_batch_exactly_and_goes_on_after_it() {
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "lines", 2).unwrap();
    produce(&broker.brokers, "lines", values(2, 0..50)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = run_lines_job(dir.path(), &broker.brokers, 0, 2);
    assert_eq!(first[&0].len(), 40);
    // Batch 1 ran, but its commit is lost; meanwhile more records arrive.
    std::fs::remove_file(dir.path().join("commits/1")).unwrap();
    produce(&broker.brokers, "lines", values(2, 50..90)).unwrap();
    let second = run_lines_job(dir.path(), &broker.brokers, 2000, 4);
    assert_eq!(sorted(second[&1].clone()), sorted(first[&1].clone()));
    let mut merged = first;
    merged.extend(second);
    assert_eq!(
        sorted(merged.values().flatten().cloned().collect()),
        sorted(values(2, 0..90).into_iter().map(|v| v.1).collect()),
        "every record exactly once: {merged:?}"
    );
}

fn start_error(brokers: &str, topic: &str) -> String {
    let ctx = StreamingContext::builder().build().unwrap();
    let mut config = KafkaConfig::new(brokers, topic);
    config.timeout = Duration::from_secs(1);
    let opts = DirectStreamOptions {
        retry_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    kafka_lines(&ctx, config, opts)
        .unwrap()
        .foreach_batch(|_, _| ());
    ctx.start().unwrap_err().to_string()
}

#[test]
fn a_missing_topic_and_unreachable_brokers_are_clear_errors_at_start() {
    let broker = KafkaBroker::start().unwrap();
    let e = start_error(&broker.brokers, "no-such-topic");
    assert!(
        e.contains("no-such-topic") && e.contains("does not exist"),
        "{e}"
    );
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let e = start_error(&brokers, "events");
    assert!(
        e.contains(&brokers)
            && e.contains("is a broker listening there")
            && e.contains("still failing after retrying"),
        "{e}"
    );
}

/// `(topic, value)` of every record, sorted.
fn by_topic(batches: &BTreeMap<u64, Vec<lockgate_kafka::KafkaRecord>>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = batches
        .values()
        .flatten()
        .map(|r| {
            let value = String::from_utf8(r.value.clone().unwrap_or_default()).unwrap();
            (r.topic.clone(), value)
        })
        .collect();
    v.sort();
    v
}

fn tagged(topic: &str, values: Vec<(i32, String)>) -> Vec<(String, String)> {
    values
        .into_iter()
        .map(|(_, v)| (topic.to_string(), v))
        .collect()
}

#[test]
fn one_stream_reads_several_topics_each_from_its_own_starting_offsets() {
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "clicks", 2).unwrap();
    create_topic(&broker.brokers, "views", 1).unwrap();
    produce(&broker.brokers, "clicks", values(2, 0..40)).unwrap();
    produce(&broker.brokers, "views", values(1, 0..15)).unwrap();
    let opts = DirectStreamOptions {
        // clicks partition 1 from its latest, views from offset 5; the rest earliest.
        starting_offsets: StartingOffsets::Explicit(BTreeMap::from([
            (TopicPartition::new("clicks", 1), -1),
            (TopicPartition::new("views", 0), 5),
        ])),
        ..limited(10)
    };
    let out = run_bounded(2, |ctx| {
        kafka_records(
            ctx,
            KafkaConfig::topics(&broker.brokers, ["clicks", "views"]),
            opts,
        )
        .unwrap()
    })
    .unwrap();
    let mut want = tagged("clicks", values(2, 0..40));
    want.retain(|(_, v)| v.starts_with("p0-"));
    want.extend(tagged("views", values(1, 5..15)));
    want.sort();
    assert_eq!(by_topic(&out), want);
    assert_eq!(
        out.len(),
        2,
        "20 records of clicks/0 and 10 of views, 10 per batch"
    );
}

#[test]
fn a_pattern_reads_the_matching_topics_and_those_created_while_it_runs_exactly_once() {
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "orders-eu", 2).unwrap();
    create_topic(&broker.brokers, "audit", 1).unwrap();
    produce(&broker.brokers, "orders-eu", values(2, 0..30)).unwrap();
    produce(&broker.brokers, "audit", values(1, 0..5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |start_ms: i64, batches: usize, create_at: Option<u64>| {
        let brokers = broker.brokers.clone();
        run_checkpointed(dir.path(), 2, start_ms, batches, |ctx| {
            let stream = kafka_records(
                ctx,
                KafkaConfig::pattern(&brokers, "orders-.*"),
                limited(100),
            )?;
            let brokers = brokers.clone();
            stream.foreach_batch(move |_, b| {
                if Some(b.id) == create_at {
                    // A matching topic appears while the job runs.
                    create_topic(&brokers, "orders-us", 3).unwrap();
                    produce(&brokers, "orders-us", values(3, 0..12)).unwrap();
                }
            });
            Ok(stream)
        })
        .unwrap()
    };
    let first = run(0, 3, Some(0));
    assert_eq!(
        first[&0].len(),
        30,
        "orders-eu only: {:?}",
        by_topic(&first)
    );
    let created: usize = by_topic(&first)
        .iter()
        .filter(|(t, _)| t == "orders-us")
        .count();
    assert_eq!(created, 12, "the new topic is read in the same run");
    // Batch 2's commit is lost; more records arrive in both topics meanwhile.
    std::fs::remove_file(dir.path().join("commits/2")).unwrap();
    produce(&broker.brokers, "orders-eu", values(2, 30..40)).unwrap();
    produce(&broker.brokers, "orders-us", values(3, 12..15)).unwrap();
    let second = run(3000, 3, None);
    let batch = |out: &BTreeMap<u64, Vec<lockgate_kafka::KafkaRecord>>, id| {
        by_topic(
            &out.iter()
                .filter(|(&b, _)| b == id)
                .map(|(&b, r)| (b, r.clone()))
                .collect(),
        )
    };
    assert_eq!(
        batch(&second, 2),
        batch(&first, 2),
        "batch 2 re-run exactly"
    );
    let mut merged = first;
    merged.extend(second);
    let mut want = tagged("orders-eu", values(2, 0..40));
    want.extend(tagged("orders-us", values(3, 0..15)));
    want.sort();
    assert_eq!(
        by_topic(&merged),
        want,
        "every record of the matching topics exactly once"
    );
}
