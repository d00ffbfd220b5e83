//! Repartition topics: how a scale-out job brings all records of a key to one task,
//! as Kafka Streams does.
//!
//! A first-stage task (one per input partition) writes `(key, value)` records (and, for
//! event time, its watermark after each batch to every partition) to the topic
//! `lockgate-<app>-<operator>-repartition` with [`write`]: one Kafka transaction
//! per task and batch (a [`KafkaSink`] with the task's own transactional id), each
//! record in the partition [`partition_for`] its key — Kafka's default partitioner
//! (murmur2), so any producer agrees — and with the headers `lockgate-task` (the writing
//! task), `lockgate-batch` and `lockgate-seq`. A batch's records are grouped by
//! partition and sorted by key before they are numbered, so a batch re-run from its
//! logged plan writes exactly the same records with the same numbers, in increasing
//! order within each partition.
//!
//! A second-stage task (one per repartition partition) reads its partition with
//! [`read`] (`read_uncommitted`: as soon as records are written) and drops every
//! record it has already applied: per writing task it keeps
//! the last `(batch, seq)` it applied (checkpointed state, changed in the same batch as
//! the records it admits), and admits only records after it. A replay of an aborted
//! attempt is identical to the attempt that commits, so the result is exact even on a
//! broker whose `read_committed` consumers see aborted records (the test broker's do).

use std::sync::Arc;

use lockgate_core::source::direct::DirectStreamOptions;
use lockgate_core::{Batch, DStream, State, StateSpec, StreamingContext};

use crate::error::Result;
use crate::sink::{KafkaOutRecord, KafkaSink, KafkaSinkConfig};
use crate::source::{kafka_records, KafkaConfig, KafkaRecord};

/// The repartition topic of `operator` in application `app`.
pub fn topic_name(app: &str, operator: &str) -> String {
    format!("lockgate-{app}-{operator}-repartition")
}

/// Kafka's `murmur2` hash (the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    // Java computes with ints; the length is cast as Java's `int` would be.
    #[allow(clippy::cast_possible_truncation)]
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// The partition of `key` among `partitions`: Kafka's default partitioner for keyed
/// records (`toPositive(murmur2(key)) % partitions`).
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    let positive = u32::from_ne_bytes(murmur2(key).to_ne_bytes()) & 0x7fff_ffff;
    positive % partitions.max(1)
}

/// What a first-stage task writes to a repartition topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shuffle {
    /// A `(key, value)` record, in the partition of its key.
    Record {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// The writer's event-time watermark after its batch, in epoch ms (`None`: the
    /// batch read no records, the writer is idle): one copy to every partition, so each
    /// second-stage task knows where every writer stands.
    Watermark(Option<i64>),
}

/// What a second-stage task reads, de-duplicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A `(key, value)` record.
    Record {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// A writer's watermark after its batch `batch` (`None`: idle in that batch).
    Watermark {
        /// The first-stage task.
        writer: String,
        /// Its batch.
        batch: u64,
        /// Epoch ms.
        ms: Option<i64>,
    },
}

/// The header that marks a watermark record (its value: epoch ms, or `idle`).
pub const WATERMARK_HEADER: &str = "lockgate-watermark";

/// A record read from a repartition topic: its key and value, and who wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shuffled {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// For a watermark record, the writer's watermark (`Some(None)`: idle).
    pub watermark: Option<Option<i64>>,
    /// The first-stage task that wrote it.
    pub writer: String,
    /// The writer's batch.
    pub batch: u64,
    /// Its number in the writer's batch.
    pub seq: u64,
}

impl Shuffled {
    /// The record's parts, or what is missing (a record some other producer wrote).
    pub fn of(record: KafkaRecord) -> std::result::Result<Shuffled, &'static str> {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        };
        let number = |name: &str| {
            header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let writer = header("lockgate-task")
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or("no lockgate-task header")?
            .to_string();
        let batch = number("lockgate-batch").ok_or("no lockgate-batch header")?;
        let seq = number("lockgate-seq").ok_or("no lockgate-seq header")?;
        let watermark = match header(WATERMARK_HEADER) {
            None => None,
            Some(b"idle") => Some(None),
            Some(ms) => Some(Some(
                std::str::from_utf8(ms)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or("a lockgate-watermark header that is not a number")?,
            )),
        };
        Ok(Shuffled {
            key: record.key.unwrap_or_default(),
            value: record.value.unwrap_or_default(),
            watermark,
            writer,
            batch,
            seq,
        })
    }
}

/// The de-duplication rule: a record `(batch, seq)` of a writer is applied only when it
/// comes after the last one applied from that writer.
pub fn admit(last_applied: Option<(u64, u64)>, batch: u64, seq: u64) -> bool {
    last_applied.is_none_or(|last| (batch, seq) > last)
}

/// Where a first-stage task writes.
#[derive(Clone, Debug)]
pub struct RepartitionTarget {
    /// The application.
    pub app: String,
    /// The keyed operator the topic feeds (part of the topic's name).
    pub operator: String,
    /// The topic's partition count.
    pub partitions: u32,
    /// The producer's settings (brokers; `task` is the writing task).
    pub sink: KafkaSinkConfig,
}

/// Writes every batch of `stream` to the repartition topic of `target` (see the module
/// docs): records to their key's partition, watermarks to every partition.
pub fn write(stream: &DStream<Shuffle>, target: &RepartitionTarget) -> Result<()> {
    let n = target.partitions.max(1);
    // Batch partition `p` is the topic's partition `p`, each sorted (records by key,
    // then the watermark): a re-run numbers the same records the same way.
    let grouped = stream.transform(move |batch: Batch<Shuffle>, _| {
        let mut parts: Vec<Vec<(u32, Shuffle)>> = vec![Vec::new(); n as usize];
        for e in batch.iter() {
            match e {
                Shuffle::Record { key, .. } => {
                    let p = partition_for(key, n);
                    parts[p as usize].push((p, e.clone()));
                }
                Shuffle::Watermark(_) => {
                    for (p, part) in (0..n).zip(parts.iter_mut()) {
                        part.push((p, e.clone()));
                    }
                }
            }
        }
        for p in &mut parts {
            p.sort_unstable();
        }
        Batch::from_partitions(parts)
    });
    let name = format!("{}-repartition", target.operator);
    let sink = KafkaSink::new(
        &name,
        &target.app,
        KafkaSinkConfig {
            topic: topic_name(&target.app, &target.operator),
            ..target.sink.clone()
        },
        |(p, e): &(u32, Shuffle), _| match e {
            Shuffle::Record { key, value } => KafkaOutRecord {
                key: Some(key.clone()),
                value: value.clone(),
                partition: i32::try_from(*p).ok(),
                ..Default::default()
            },
            Shuffle::Watermark(ms) => {
                let mark = ms.map_or_else(|| b"idle".to_vec(), |ms| ms.to_string().into_bytes());
                KafkaOutRecord {
                    value: mark.clone(),
                    headers: vec![(WATERMARK_HEADER.to_string(), mark)],
                    partition: i32::try_from(*p).ok(),
                    ..Default::default()
                }
            }
        },
    )?;
    grouped.write_to(sink);
    Ok(())
}

/// The records and watermarks of partition `partition` of the repartition topic of
/// `operator`, each applied once (see the module docs); records without Lockgate's
/// headers are skipped and counted in the source's skipped values.
pub fn read(
    ctx: &StreamingContext,
    config: &KafkaConfig,
    app: &str,
    operator: &str,
    partition: u32,
    options: DirectStreamOptions,
) -> Result<DStream<Incoming>> {
    let mut config = KafkaConfig {
        partitions: Some(vec![partition]),
        group: None,
        ..config.clone()
    };
    config.subscription = crate::Subscription::Topics(vec![topic_name(app, operator)]);
    // Records are read as they are written, committed or not: the de-duplication makes
    // that exact (an open transaction either commits or is re-run identically), and a
    // reader never waits for a writer's transaction (some brokers report a partition
    // with an open transaction as empty to `read_committed` readers).
    if !config
        .properties
        .iter()
        .any(|(k, _)| k == "isolation.level")
    {
        config
            .properties
            .push(("isolation.level".into(), "read_uncommitted".into()));
    }
    let source = ctx.next_source_name("kafka");
    let records = kafka_records(ctx, config, options)?;
    let counters = ctx.metrics().source(&source);
    let by_writer = records.flat_map(move |r| {
        let at = (r.partition, r.offset);
        match Shuffled::of(r) {
            Ok(s) => Some((s.writer.clone(), s)),
            Err(why) => {
                counters.skipped_value(
                    "not a repartition record",
                    format!("partition {} offset {}: {why}", at.0, at.1),
                );
                None
            }
        }
    });
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = dropped.clone();
    let admitted = by_writer
        .map_with_state(StateSpec::function(
            move |_writer: &String, record: Option<Shuffled>, last: &mut State<(u64, u64)>| {
                let record = record?;
                if admit(last.get().copied(), record.batch, record.seq) {
                    last.update((record.batch, record.seq));
                    Some(match record.watermark {
                        Some(ms) => Incoming::Watermark {
                            writer: record.writer,
                            batch: record.batch,
                            ms,
                        },
                        None => Incoming::Record {
                            key: record.key,
                            value: record.value,
                        },
                    })
                } else {
                    counting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            },
        ))
        .name("repartition_dedup")
        .stream()
        .flat_map(|r| r);
    let topic = topic_name(app, operator);
    Ok(admitted.transform(move |b, t| {
        let n = dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            tracing::info!(topic = %topic, partition, batch_time_ms = t.millis(), dropped = n, "repartition: dropped records already applied (written again by a re-run of an aborted attempt)");
        }
        b
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partitions_spread_and_stay_put() {
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            let p = partition_for(format!("word{i}").as_bytes(), 8);
            seen[p as usize] += 1;
            assert_eq!(p, partition_for(format!("word{i}").as_bytes(), 8));
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn a_replayed_attempt_is_dropped_and_its_tail_admitted() {
        // Attempt 1 of batch 4 wrote seqs 0..3 and aborted; attempt 2 writes 0..6.
        let log: Vec<(u64, u64)> = (0..3).chain(0..6).map(|s| (4, s)).chain([(5, 0)]).collect();
        let mut last = Some((3, 9));
        let admitted: Vec<(u64, u64)> = log
            .into_iter()
            .filter(|&(b, s)| {
                let ok = admit(last, b, s);
                if ok {
                    last = Some((b, s));
                }
                ok
            })
            .collect();
        assert_eq!(
            admitted,
            vec![(4, 0), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (5, 0)]
        );
        assert!(
            !admit(Some((5, 0)), 4, 9),
            "an older batch is never applied again"
        );
    }

    #[test]
    fn a_record_without_headers_is_refused() {
        let record = KafkaRecord {
            topic: "t".into(),
            partition: 0,
            offset: 3,
            key: Some(b"k".to_vec()),
            value: Some(b"1".to_vec()),
            timestamp_ms: None,
            headers: vec![("lockgate-task".into(), b"logs-0".to_vec())],
        };
        assert_eq!(
            Shuffled::of(record.clone()),
            Err("no lockgate-batch header")
        );
        let mut full = record;
        full.headers.push(("lockgate-batch".into(), b"7".to_vec()));
        full.headers.push(("lockgate-seq".into(), b"2".to_vec()));
        let s = Shuffled::of(full.clone()).expect("a repartition record");
        assert_eq!((s.writer.as_str(), s.batch, s.seq), ("logs-0", 7, 2));
        assert_eq!(s.watermark, None);
        full.headers
            .push((WATERMARK_HEADER.into(), b"idle".to_vec()));
        assert_eq!(Shuffled::of(full.clone()).unwrap().watermark, Some(None));
        full.headers.pop();
        full.headers
            .push((WATERMARK_HEADER.into(), b"1500".to_vec()));
        assert_eq!(Shuffled::of(full).unwrap().watermark, Some(Some(1500)));
    }
}
