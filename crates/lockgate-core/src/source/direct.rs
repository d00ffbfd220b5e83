//! `direct_stream`: a replayable stream over a partitioned log — Kafka's model, the
//! "direct" approach of Spark's Kafka integration. The log itself (how bounds are
//! queried and records fetched) is a [`PartitionedLog`], implemented for Kafka by the
//! `lockgate-kafka` crate and in memory by [`MemoryLog`] for tests.
//!
//! Each batch's descriptor is one offset range `[from, until)` per partition, decided
//! when the batch is planned (from the log's end offsets at that moment, capped by
//! [`DirectStreamOptions::max_records_per_partition`] and by backpressure) and logged
//! before the batch runs, so a replayed batch reads exactly the same records. The
//! checkpointed state is each partition's offset after the last completed batch; no
//! consumer-group offsets are involved.
//!
//! A partition is a [`TopicPartition`]: a log may hold several topics (a Kafka source
//! subscribed to a list or a pattern), and partitions and topics that appear while the
//! job runs are read from their earliest offset on.
//!
//! In a bounded run (`Trigger::AvailableNow`) the source reads up to the end offsets the
//! log had when the context started.
//!
//! When a partition's next offset is no longer in the log (retention deleted it before it
//! was read), [`OnExpiredOffsets`] decides: fail, naming the partition and the lost range
//! (the default), or skip to the earliest offset still held, counting the lost records
//! (`lost_records`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::KeyedState;
use crate::clock::Time;
use crate::codec::{from_bytes, Codec, CodecError};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{BoxError, Error, Result};
use crate::metrics::SourceCounters;
use crate::source::{introduced_source_state, register, source_name, source_state};
use crate::traits::{InputSource, SourceCompute};
use crate::types::{lock, InputInfo};

/// A partition of a log: its topic and number. A log of one unnamed topic (as
/// [`MemoryLog`]) has the empty topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic (empty in a log without topic names).
    pub topic: String,
    /// The partition's number in its topic.
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// "topic `logs` partition 3", or "partition 3" without a topic name.
impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.topic.is_empty() {
            write!(f, "partition {}", self.partition)
        } else {
            write!(f, "topic `{}` partition {}", self.topic, self.partition)
        }
    }
}

impl Codec for TopicPartition {
    const NAME: &'static str = "TopicPartition";
    fn encode(&self, out: &mut Vec<u8>) {
        self.topic.encode(out);
        self.partition.encode(out);
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(TopicPartition {
            topic: String::decode(input)?,
            partition: u32::decode(input)?,
        })
    }
}

/// One partition of a log and the offsets it holds now: `[earliest, latest)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionBounds {
    /// The partition.
    pub partition: TopicPartition,
    /// The first offset still held (older ones were deleted by retention).
    pub earliest: i64,
    /// The offset after the last record (Kafka's high watermark).
    pub latest: i64,
}

/// A log of records in numbered partitions, each record at an offset: what
/// [`direct_stream`](StreamingContext::direct_stream) reads.
pub trait PartitionedLog<T>: Send + Sync + 'static {
    /// What the log is, for messages: e.g. "Kafka topic `events` at 127.0.0.1:9092".
    fn describe(&self) -> String;
    /// Every partition and the offsets it holds now (of every topic the log reads: a
    /// partition or topic new since the last call is read from its earliest offset).
    fn bounds(&self) -> std::result::Result<Vec<PartitionBounds>, BoxError>;
    /// The records at offsets `[offsets.start, offsets.end)` of `partition`, in offset
    /// order. Offsets without a record (compacted away, transaction markers) are
    /// skipped. An error if the range cannot be read whole (e.g. it has expired).
    fn read(
        &self,
        partition: &TopicPartition,
        offsets: Range<i64>,
    ) -> std::result::Result<Vec<T>, BoxError>;
    /// Whether an error of [`bounds`](Self::bounds) or [`read`](Self::read) may pass
    /// (brokers that do not answer: retried until
    /// [`retry_timeout`](DirectStreamOptions::retry_timeout)) or lasts (a topic that
    /// does not exist: the job fails at once). Default: every error may pass.
    fn is_passing(&self, _error: &(dyn std::error::Error + 'static)) -> bool {
        true
    }
    /// The batches up to here are done: `positions` holds the next offset of each
    /// partition read. For lag monitors (a Kafka log commits them to a consumer group);
    /// correctness never depends on it, and the default does nothing.
    fn completed(&self, _positions: &[(TopicPartition, i64)]) {}
    /// The next offset of each partition as the log's consumer group committed it (for
    /// [`StartingOffsets::Group`]); the default has none.
    fn committed(&self) -> std::result::Result<BTreeMap<TopicPartition, i64>, BoxError> {
        Ok(BTreeMap::new())
    }
    /// The one topic the log reads, if it reads exactly one. Checkpoints of Lockgate 0.1
    /// name partitions by number only; they resume on a log of one topic, whose
    /// partitions they are. The default: the empty topic (a log without topic names).
    fn single_topic(&self) -> Option<String> {
        Some(String::new())
    }
}

/// Where a partition without a checkpointed position starts (the checkpoint's position,
/// when it has one, always wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StartingOffsets {
    /// At the first record still held (Spark's `startingOffsets=earliest`).
    #[default]
    Earliest,
    /// After the last record at start: only records written from then on. Partitions
    /// that appear later start at their earliest offset.
    Latest,
    /// Per partition: an offset, or `-2` for the earliest and `-1` for the latest (Spark's
    /// JSON `{"topic":{"0":23,"1":-2}}`); partitions not listed start at the earliest.
    Explicit(BTreeMap<TopicPartition, i64>),
    /// Where the log's consumer group committed (a Kafka log's `KafkaConfig::group`,
    /// [`PartitionedLog::committed`]); partitions without a committed offset start at
    /// the earliest.
    Group,
}

/// What happens when offsets to be read have expired from the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExpiredOffsets {
    /// Stop with an error naming the partition and the lost offsets (Spark's
    /// `failOnDataLoss=true`): nothing is skipped silently.
    #[default]
    Fail,
    /// Go on from the earliest offset still held; the lost records are counted
    /// (`lost_records`) and logged as a warning.
    Earliest,
}

/// Options of [`direct_stream`](StreamingContext::direct_stream).
#[derive(Clone, Debug)]
pub struct DirectStreamOptions {
    /// The most records one batch takes from one partition (Spark's
    /// `maxRatePerPartition` times the batch interval); default: no limit.
    pub max_records_per_partition: Option<u64>,
    /// Where partitions without a checkpointed position start.
    pub starting_offsets: StartingOffsets,
    /// What happens when offsets to be read have expired.
    pub on_expired_offsets: OnExpiredOffsets,
    /// How long a failing call to the log (its brokers do not answer) is retried, with
    /// back-off from 100 ms to 5 s, before the job fails with its error (default 2
    /// minutes). The source shows as retrying in the UI and `/metrics` meanwhile.
    pub retry_timeout: Duration,
    /// Plan each batch only up to the end offsets the previous plan (or the start) saw:
    /// every record read was written at least one batch interval earlier. For brokers that make a partition's end visible before its last
    /// records can be fetched, so that a reader right behind the writers skips one
    /// (tansu 0.6 does; Kafka does not), at the cost of one batch interval of latency.
    /// Default: off.
    pub read_behind: bool,
}

impl Default for DirectStreamOptions {
    fn default() -> Self {
        DirectStreamOptions {
            max_records_per_partition: None,
            starting_offsets: StartingOffsets::default(),
            on_expired_offsets: OnExpiredOffsets::default(),
            retry_timeout: Duration::from_secs(120),
            read_behind: false,
        }
    }
}

/// One try of a call to the log: a failure that may pass is retried.
enum Attempt {
    Passing(Error),
    Fatal(Error),
}

/// A batch's descriptor: `(partition, from, until)` for every partition.
type Ranges = Vec<(TopicPartition, i64, i64)>;

/// Descriptors with topic names begin with this (never a length Lockgate 0.1 wrote: its
/// descriptors, `(partition number, from, until)` without a topic, begin with theirs).
const NAMED_RANGES: u64 = u64::MAX;

/// A batch's descriptor as logged.
fn encode_ranges(ranges: &Ranges) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + ranges.len() * 32);
    NAMED_RANGES.encode(&mut out);
    ranges.encode(&mut out);
    out
}

/// The offset ranges `(partition, from, until)` the direct stream named `source` (its
/// metrics name, e.g. `kafka-0`) read in the batch of `cx`, from the batch's logged plan
/// (Spark's `HasOffsetRanges.offsetRanges`); `None` when the plan has no part of that
/// source. Ranges logged by Lockgate 0.1 name no topic: their topic is empty.
pub fn offset_ranges(
    cx: &crate::BatchContext,
    source: &str,
) -> Result<Option<Vec<(TopicPartition, i64, i64)>>> {
    let Some(plan) = cx.plan.iter().find(|p| p.source == source) else {
        return Ok(None);
    };
    let bad = |e: CodecError| Error::Source {
        source_name: source.to_string(),
        message: format!("the offset ranges of batch {} do not decode: {e}", cx.id),
    };
    let d = plan.descriptor.as_slice();
    if let Some(named) = d.strip_prefix(&NAMED_RANGES.to_le_bytes()) {
        return from_bytes::<Ranges>(named).map(Some).map_err(bad);
    }
    let unnamed: Vec<(u32, i64, i64)> = from_bytes(d).map_err(bad)?;
    Ok(Some(
        unnamed
            .into_iter()
            .map(|(p, from, until)| (TopicPartition::new("", p), from, until))
            .collect(),
    ))
}

struct DirectInput<T> {
    name: String,
    log: Arc<dyn PartitionedLog<T>>,
    opts: DirectStreamOptions,
    interval_ms: i64,
    /// The next offset to plan, per partition.
    next: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Bounded runs: the end offsets at start.
    end: Mutex<Option<BTreeMap<TopicPartition, i64>>>,
    /// The end offsets seen by the last plan.
    latest: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Backpressure's limit, records per second over all partitions.
    rate_limit: Mutex<Option<f64>>,
    /// `maps[0]`: per partition, the offset after the last completed batch (the
    /// checkpointed state).
    done: Arc<Mutex<KeyedState<TopicPartition, i64>>>,
    /// The positions as Lockgate 0.1 checkpointed them (partition numbers, no topic):
    /// moved into `done` when a checkpoint of it is resumed, empty otherwise.
    unnamed: Arc<Mutex<KeyedState<u32, i64>>>,
    planned: Mutex<BTreeMap<Time, Ranges>>,
    counters: Arc<SourceCounters>,
    /// Stopped: calls that fail are not retried.
    stopping: AtomicBool,
}

impl<T: Data> DirectInput<T> {
    fn err(&self, message: String) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message,
        }
    }

    /// Runs `attempt` until it succeeds, retrying the failures that may pass with
    /// back-off until `retry_timeout` (the source shows as retrying meanwhile); then,
    /// or on a failure that cannot pass, the error.
    fn retrying<R>(
        &self,
        mut attempt: impl FnMut() -> std::result::Result<R, Attempt>,
    ) -> Result<R> {
        let deadline = Instant::now() + self.opts.retry_timeout;
        let mut wait = Duration::from_millis(100);
        let mut retried = false;
        loop {
            let e = match attempt() {
                Ok(r) => {
                    if retried {
                        tracing::info!(source = %self.name, "{} answers again", self.log.describe());
                        self.counters.recovered();
                    }
                    return Ok(r);
                }
                Err(Attempt::Fatal(e)) => e,
                Err(Attempt::Passing(e)) => {
                    if Instant::now() + wait <= deadline && !self.stopping.load(Ordering::Acquire) {
                        tracing::warn!(source = %self.name, error = %e, retry_in_ms = wait.as_millis() as u64, "retrying");
                        self.counters.retrying(&e.to_string());
                        retried = true;
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    match e {
                        Error::Source {
                            source_name,
                            message,
                        } if retried => Error::Source {
                            source_name,
                            message: format!(
                                "{message} (still failing after retrying for {:?}; the job \
                                 stops, and a restart re-runs its unfinished batch)",
                                self.opts.retry_timeout
                            ),
                        },
                        other => other,
                    }
                }
            };
            self.counters.recovered();
            return Err(e);
        }
    }

    /// The partitions and their offsets, sorted, in one try.
    fn bounds_once(&self) -> std::result::Result<Vec<PartitionBounds>, Attempt> {
        let mut b = self.log.bounds().map_err(|e| {
            let error = self.err(format!(
                "cannot read the partitions and offsets of {}: {e}",
                self.log.describe()
            ));
            if self.log.is_passing(&*e) {
                Attempt::Passing(error)
            } else {
                Attempt::Fatal(error)
            }
        })?;
        b.sort_by(|x, y| x.partition.cmp(&y.partition));
        Ok(b)
    }

    /// The partitions and their offsets, sorted (retried).
    fn bounds(&self) -> Result<Vec<PartitionBounds>> {
        self.retrying(|| self.bounds_once())
    }

    fn decode(&self, descriptor: &[u8], what: &str) -> Result<Ranges> {
        let bad = |e: CodecError| self.err(format!("{what} offset ranges do not decode: {e}"));
        if let Some(named) = descriptor.strip_prefix(&NAMED_RANGES.to_le_bytes()) {
            return from_bytes(named).map_err(bad);
        }
        let unnamed: Vec<(u32, i64, i64)> = from_bytes(descriptor).map_err(bad)?;
        let topic = self.unnamed_topic(what)?;
        Ok(unnamed
            .into_iter()
            .map(|(p, from, until)| (TopicPartition::new(topic.clone(), p), from, until))
            .collect())
    }

    /// The topic of partitions that Lockgate 0.1 checkpointed by number only.
    fn unnamed_topic(&self, what: &str) -> Result<String> {
        self.log.single_topic().ok_or_else(|| {
            self.err(format!(
                "{what} positions were written by Lockgate 0.1, which names partitions by \
                 number only, and {} reads several topics: resume this checkpoint reading \
                 the one topic it was written for, or start with a new checkpoint directory",
                self.log.describe()
            ))
        })
    }

    /// Moves positions that Lockgate 0.1 checkpointed (partition numbers only) to
    /// `done`, as partitions of the log's one topic.
    fn adopt_unnamed(&self) -> Result<()> {
        let mut unnamed = lock(&self.unnamed);
        let old: Vec<(u32, i64)> = unnamed.entries(0).map(|(&p, &o)| (p, o)).collect();
        if old.is_empty() {
            return Ok(());
        }
        let topic = self.unnamed_topic("the checkpointed")?;
        let mut done = lock(&self.done);
        let mut part = done.part(0);
        for &(p, offset) in &old {
            part.insert(TopicPartition::new(topic.clone(), p), offset);
        }
        unnamed.part(0).retain(|_, _, _| false);
        Ok(())
    }

    /// The message for offsets `[from, earliest)` of `partition` that have expired.
    fn expired_message(&self, partition: &TopicPartition, from: i64, earliest: i64) -> String {
        format!(
            "offsets [{from}, {earliest}) of {partition} are no longer in {} \
             (deleted by retention before they were read): {} records lost. To go on \
             from offset {earliest}, skipping them, restart with --on-expired-offsets \
             earliest (OnExpiredOffsets::Earliest)",
            self.log.describe(),
            earliest - from
        )
    }

    /// Skips expired offsets `[from, earliest)` under `OnExpiredOffsets::Earliest`, or
    /// fails.
    fn expired(&self, partition: &TopicPartition, from: i64, earliest: i64) -> Result<()> {
        let message = self.expired_message(partition, from, earliest);
        match self.opts.on_expired_offsets {
            OnExpiredOffsets::Fail => Err(self.err(message)),
            OnExpiredOffsets::Earliest => {
                tracing::warn!(source = %self.name, "{message}; skipping them");
                SourceCounters::add(&self.counters.lost_records, (earliest - from) as u64);
                Ok(())
            }
        }
    }

    /// The most records one partition gives a batch now.
    fn per_partition_limit(&self, partitions: usize) -> Option<u64> {
        let by_rate = lock(&self.rate_limit).map(|rate| {
            let per_batch = rate * self.interval_ms as f64 / 1000.0;
            (per_batch / partitions.max(1) as f64).ceil() as u64
        });
        match (self.opts.max_records_per_partition, by_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|n| n.max(1))
    }

    /// A checkpointed partition the log no longer has.
    fn disappeared(&self, partition: &TopicPartition) -> Error {
        self.err(format!(
            "{partition} of {} has disappeared (was the topic deleted?); a \
             checkpoint cannot go on without it: start with a new checkpoint directory",
            self.log.describe()
        ))
    }

    /// A partition that ends before the checkpoint's position in it.
    fn ends_before(&self, b: &PartitionBounds, position: i64) -> Error {
        self.err(format!(
            "{} of {} ends at offset {}, before offset {position} where this \
             job's checkpoint goes on (was the topic deleted and created again?): start \
             with a new checkpoint directory",
            b.partition,
            self.log.describe(),
            b.latest,
        ))
    }

    /// Reads one planned range, applying the expiry policy when it cannot be read
    /// because its offsets expired, and retrying other failures.
    fn read_range(&self, partition: &TopicPartition, from: i64, until: i64) -> Result<Vec<T>> {
        self.retrying(|| {
            let error = match self.log.read(partition, from..until) {
                Ok(records) => return Ok(records),
                Err(e) => e,
            };
            // Expired since it was planned (or while the job was down)?
            let earliest = self
                .bounds_once()?
                .into_iter()
                .find(|b| b.partition == *partition)
                .map(|b| b.earliest);
            match earliest {
                Some(earliest) if earliest > from => {
                    self.expired(partition, from, earliest.min(until))
                        .map_err(Attempt::Fatal)?;
                    if earliest >= until {
                        return Ok(Vec::new());
                    }
                    self.log.read(partition, earliest..until).map_err(|e| {
                        Attempt::Passing(self.err(format!(
                            "reading offsets [{earliest}, {until}) of {partition} of {}: {e}",
                            self.log.describe()
                        )))
                    })
                }
                _ => {
                    let e = self.err(format!(
                        "reading offsets [{from}, {until}) of {partition} of {}: {error}",
                        self.log.describe()
                    ));
                    Err(if self.log.is_passing(&*error) {
                        Attempt::Passing(e)
                    } else {
                        Attempt::Fatal(e)
                    })
                }
            }
        })
    }
}

impl<T: Data> InputSource for DirectInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, bounded: bool, recovered: bool) -> Result<()> {
        let bounds = self.bounds()?;
        let mut next = lock(&self.next);
        if recovered {
            self.adopt_unnamed()?;
            for (p, &done) in lock(&self.done).entries(0) {
                let n = next.entry(p.clone()).or_insert(done);
                *n = (*n).max(done);
            }
        }
        let committed = match self.opts.starting_offsets {
            StartingOffsets::Group => self.log.committed().map_err(|e| Error::Source {
                source_name: self.name.clone(),
                message: format!(
                    "{}: cannot read the consumer group's committed offsets to start from \
                     ({e}); start from earliest or latest instead",
                    self.log.describe()
                ),
            })?,
            _ => BTreeMap::new(),
        };
        for b in &bounds {
            if next.contains_key(&b.partition) {
                continue;
            }
            let start = match &self.opts.starting_offsets {
                // A partition unknown to a restored checkpoint is new: all of it.
                StartingOffsets::Latest if !recovered => b.latest,
                StartingOffsets::Latest | StartingOffsets::Earliest => b.earliest,
                StartingOffsets::Explicit(offsets) => match offsets.get(&b.partition) {
                    None | Some(-2) => b.earliest,
                    Some(-1) => b.latest,
                    Some(&o) if o >= 0 && o <= b.latest => o,
                    Some(&o) => {
                        return Err(Error::Source {
                            source_name: self.name.clone(),
                            message: format!(
                                "{}: starting offset {o} of {} is outside [0, {}] \
                                 (its end now); give an offset up to the end, -2 for the \
                                 earliest or -1 for the latest",
                                self.log.describe(),
                                b.partition,
                                b.latest
                            ),
                        })
                    }
                },
                StartingOffsets::Group => committed
                    .get(&b.partition)
                    .copied()
                    .filter(|&o| o >= 0)
                    .unwrap_or(b.earliest)
                    .min(b.latest),
            };
            next.insert(b.partition.clone(), start);
        }
        if recovered {
            // A bounded run would otherwise find nothing to do and end "successfully".
            if let Some(gone) = next
                .keys()
                .find(|p| !bounds.iter().any(|b| b.partition == **p))
            {
                return Err(self.disappeared(gone));
            }
            if let Some(b) = bounds
                .iter()
                .find(|b| next.get(&b.partition).is_some_and(|&n| n > b.latest))
            {
                return Err(self.ends_before(b, next[&b.partition]));
            }
        }
        let latest: BTreeMap<TopicPartition, i64> = bounds
            .iter()
            .map(|b| (b.partition.clone(), b.latest))
            .collect();
        if bounded {
            *lock(&self.end) = Some(latest.clone());
        }
        *lock(&self.latest) = latest;
        Ok(())
    }

    fn stop(&self) {
        // A stop does not wait out a retrying call.
        self.stopping.store(true, Ordering::Release);
    }

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let bounds = self.bounds()?;
        let limit = self.per_partition_limit(bounds.len());
        let end = lock(&self.end).clone();
        let seen_before = self.opts.read_behind.then(|| lock(&self.latest).clone());
        let mut next = lock(&self.next);
        if let Some(gone) = next
            .keys()
            .find(|p| !bounds.iter().any(|b| b.partition == **p))
        {
            return Err(self.disappeared(gone));
        }
        let mut ranges = Ranges::with_capacity(bounds.len());
        let mut lost = Vec::new();
        let mut lag = 0;
        for b in &bounds {
            let n = next.entry(b.partition.clone()).or_insert(b.earliest);
            if *n < b.earliest {
                self.expired(&b.partition, *n, b.earliest)?;
                lost.push((&b.partition, *n, b.earliest));
                *n = b.earliest;
            } else if *n > b.latest {
                return Err(self.ends_before(b, *n));
            }
            let from = *n;
            let mut until = b.latest;
            if let Some(end) = &end {
                // A bounded run reads nothing of partitions created after its start.
                until = until.min(end.get(&b.partition).copied().unwrap_or(from));
            }
            if let Some(seen) = &seen_before {
                until = until.min(seen.get(&b.partition).copied().unwrap_or(from));
            }
            if let Some(limit) = limit {
                until = until.min(from.saturating_add(limit as i64));
            }
            let until = until.max(from);
            *n = until;
            lag += (b.latest - until) as u64;
            ranges.push((b.partition.clone(), from, until));
        }
        drop(next);
        *lock(&self.latest) = bounds
            .iter()
            .map(|b| (b.partition.clone(), b.latest))
            .collect();
        self.counters
            .lag_records
            .store(lag, std::sync::atomic::Ordering::Relaxed);
        let records: u64 = ranges.iter().map(|r| (r.2 - r.1) as u64).sum();
        SourceCounters::add(&self.counters.records, records);
        let mut description = describe_ranges(&ranges);
        if !lost.is_empty() {
            // Logged with the plan: `checkpoint inspect` and the batch's page show it.
            let lost: Vec<String> = lost
                .iter()
                .map(|(p, from, until)| format!("{p} [{from}, {until})"))
                .collect();
            description.push_str(&format!(
                "; lost before they were read (expired from {}): {}",
                self.log.describe(),
                lost.join(", ")
            ));
        }
        let descriptor = encode_ranges(&ranges);
        lock(&self.planned).insert(t, ranges);
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description,
        };
        Ok((info, descriptor))
    }

    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
        let ranges = self.decode(descriptor, "logged")?;
        self.seed(&ranges);
        lock(&self.planned).insert(t, ranges);
        Ok(())
    }

    fn set_rate_limit(&self, records_per_second: f64) {
        *lock(&self.rate_limit) = Some(records_per_second);
    }

    fn seed_consumed(&self, descriptors: &[&[u8]]) -> Result<()> {
        for d in descriptors {
            let ranges = self.decode(d, "a sink's recorded")?;
            self.seed(&ranges);
        }
        Ok(())
    }

    fn has_pending(&self) -> bool {
        self.backlog().iter().any(|&n| n > 0)
    }

    fn pending_batches(&self) -> Option<u64> {
        let backlog = self.backlog();
        let most = backlog.iter().copied().max().unwrap_or(0);
        Some(match self.per_partition_limit(backlog.len()) {
            Some(l) => most.div_ceil(l),
            None => u64::from(most > 0),
        })
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        let later = p.split_off(&done.plus_ms(1));
        let finished = std::mem::replace(&mut *p, later);
        if finished.is_empty() {
            return;
        }
        let mut st = lock(&self.done);
        let mut part = st.part(0);
        for (partition, _, until) in finished.values().flatten() {
            let cur = part.get(partition).copied().unwrap_or(i64::MIN);
            if *until > cur {
                part.insert(partition.clone(), *until);
            }
        }
        let positions: Vec<(TopicPartition, i64)> =
            st.entries(0).map(|(p, &o)| (p.clone(), o)).collect();
        drop(st);
        self.log.completed(&positions);
    }
}

impl<T: Data> DirectInput<T> {
    /// Records per partition not yet planned: up to the end offsets at start in a
    /// bounded run, else up to those the last plan saw.
    fn backlog(&self) -> Vec<u64> {
        let next = lock(&self.next);
        let end = lock(&self.end);
        let latest = lock(&self.latest);
        end.as_ref()
            .unwrap_or(&latest)
            .iter()
            .map(|(p, e)| (e - next.get(p).copied().unwrap_or(0)).max(0) as u64)
            .collect()
    }

    /// Marks `ranges` as planned: later plans start after them.
    fn seed(&self, ranges: &Ranges) {
        let mut next = lock(&self.next);
        for (p, _, until) in ranges {
            let until = *until;
            let n = next.entry(p.clone()).or_insert(until);
            *n = (*n).max(until);
        }
    }
}

/// "partition 0 [10, 20), partition 1 [5, 9)", naming at most a few partitions.
fn describe_ranges(ranges: &Ranges) -> String {
    const SHOWN: usize = 4;
    let mut parts: Vec<String> = ranges
        .iter()
        .filter(|r| r.2 > r.1)
        .map(|(p, from, until)| format!("{p} [{from}, {until})"))
        .collect();
    if parts.is_empty() {
        return "no new records".into();
    }
    if parts.len() > SHOWN {
        let more = parts.len() - SHOWN;
        parts.truncate(SHOWN);
        parts.push(format!("{more} more"));
    }
    parts.join(", ")
}

impl<T: Data> SourceCompute<T> for DirectInput<T> {
    fn compute(&self, t: Time) -> Result<Batch<T>> {
        let Some(ranges) = lock(&self.planned).get(&t).cloned() else {
            return Ok(Batch::empty());
        };
        // One partition of the batch per partition of the log with records, read in
        // parallel.
        let parts = ranges
            .into_par_iter()
            .filter(|r| r.2 > r.1)
            .map(|(p, from, until)| self.read_range(&p, from, until))
            .collect::<Result<Vec<_>>>()?;
        Ok(Batch::from_partitions(parts))
    }
}

impl StreamingContext {
    /// A replayable stream over a partitioned log (see [`direct`](crate::source::direct)):
    /// each batch reads an offset range per partition, planned and logged before it runs.
    /// `kind` names the source (`kind-<n>`) and its node; `lockgate-kafka` builds its
    /// Kafka stream on this.
    pub fn direct_stream<T: Data>(
        &self,
        kind: &'static str,
        log: Arc<dyn PartitionedLog<T>>,
        opts: DirectStreamOptions,
    ) -> DStream<T> {
        let name = source_name(self, kind);
        let unnamed = source_state(self, &name, "offsets");
        let done = introduced_source_state(self, &name, "partition-offsets");
        let src = Arc::new(DirectInput {
            unnamed,
            counters: self.metrics_ref().source(&name),
            name,
            log,
            opts,
            interval_ms: self.graph().timing.interval_ms,
            next: Mutex::new(BTreeMap::new()),
            end: Mutex::new(None),
            latest: Mutex::new(BTreeMap::new()),
            rate_limit: Mutex::new(None),
            done,
            planned: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
        });
        register(self, kind, src)
    }
}

/// A [`PartitionedLog`] in memory, for tests and examples: records are appended to
/// partitions, and old ones can be deleted as retention would.
pub struct MemoryLog<T> {
    partitions: Mutex<Vec<(i64, Vec<T>)>>,
    reads: std::sync::atomic::AtomicU64,
}

impl<T: Data> MemoryLog<T> {
    /// A log of `partitions` empty partitions.
    pub fn new(partitions: usize) -> Arc<Self> {
        Arc::new(MemoryLog {
            partitions: Mutex::new((0..partitions).map(|_| (0, Vec::new())).collect()),
            reads: Default::default(),
        })
    }

    /// Appends records to a partition (which must exist).
    pub fn append(&self, partition: u32, records: impl IntoIterator<Item = T>) {
        if let Some(p) = lock(&self.partitions).get_mut(partition as usize) {
            p.1.extend(records);
        }
    }

    /// Adds an empty partition.
    pub fn add_partition(&self) {
        lock(&self.partitions).push((0, Vec::new()));
    }

    /// Deletes a partition's records before `offset`, as retention would.
    pub fn delete_before(&self, partition: u32, offset: i64) {
        if let Some((start, records)) = lock(&self.partitions).get_mut(partition as usize) {
            let n = (offset - *start).clamp(0, records.len() as i64) as usize;
            records.drain(..n);
            *start += n as i64;
        }
    }

    /// How many `read` calls were made.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<T: Data> PartitionedLog<T> for MemoryLog<T> {
    fn describe(&self) -> String {
        "the memory log".into()
    }

    fn bounds(&self) -> std::result::Result<Vec<PartitionBounds>, BoxError> {
        Ok(lock(&self.partitions)
            .iter()
            .enumerate()
            .map(|(i, (start, records))| PartitionBounds {
                partition: TopicPartition::new("", i as u32),
                earliest: *start,
                latest: start + records.len() as i64,
            })
            .collect())
    }

    fn read(
        &self,
        partition: &TopicPartition,
        offsets: Range<i64>,
    ) -> std::result::Result<Vec<T>, BoxError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parts = lock(&self.partitions);
        let (start, records) = parts
            .get(partition.partition as usize)
            .ok_or_else(|| format!("no partition {partition}"))?;
        let end = start + records.len() as i64;
        if offsets.start < *start || offsets.end > end {
            return Err(format!(
                "offsets [{}, {}) are outside [{start}, {end})",
                offsets.start, offsets.end
            )
            .into());
        }
        let a = (offsets.start - start) as usize;
        let b = (offsets.end - start) as usize;
        Ok(records[a..b].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(log: Arc<MemoryLog<u32>>, max: Option<u64>) -> DirectInput<u32> {
        DirectInput {
            name: "memory-0".into(),
            log,
            opts: DirectStreamOptions {
                max_records_per_partition: max,
                ..Default::default()
            },
            interval_ms: 1000,
            next: Mutex::new(BTreeMap::new()),
            end: Mutex::new(None),
            latest: Mutex::new(BTreeMap::new()),
            rate_limit: Mutex::new(None),
            done: Arc::new(Mutex::new(KeyedState::new(1, true))),
            unnamed: Arc::new(Mutex::new(KeyedState::new(1, true))),
            planned: Mutex::new(BTreeMap::new()),
            counters: Arc::default(),
            stopping: AtomicBool::new(false),
        }
    }

    fn planned(src: &DirectInput<u32>, t: i64) -> Vec<(u32, i64, i64)> {
        let (_, descriptor) = src.plan(Time(t)).unwrap_or_else(|e| panic!("{e}"));
        src.decode(&descriptor, "the planned")
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(p, from, until)| (p.partition, from, until))
            .collect()
    }

    fn p(n: u32) -> TopicPartition {
        TopicPartition::new("", n)
    }

    #[test]
    fn backpressure_splits_its_rate_over_the_partitions_and_the_cap_still_applies() {
        let log = MemoryLog::new(4);
        for p in 0..4 {
            log.append(p, 0..1000);
        }
        let src = input(log, Some(100));
        src.start(false, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src.per_partition_limit(4), Some(100));
        // 200 records/s with a 1 s interval: 50 per partition.
        src.set_rate_limit(200.0);
        assert_eq!(src.per_partition_limit(4), Some(50));
        let ranges = planned(&src, 1000);
        assert_eq!(ranges, vec![(0, 0, 50), (1, 0, 50), (2, 0, 50), (3, 0, 50)]);
        // A rate above the cap: the cap.
        src.set_rate_limit(1e6);
        assert_eq!(planned(&src, 2000)[0], (0, 50, 150));
        // The lag after that plan: 850 records in each partition.
        assert_eq!(SourceCounters::get(&src.counters.lag_records), 4 * 850);
        assert_eq!(src.pending_batches(), Some(9));
    }

    /// Regression: `--once` on a topic deleted and created again found nothing to do
    /// and exited 0; a streaming run gave the error. Both give it now, at start.
    #[test]
    fn a_restart_on_a_log_that_ends_before_the_checkpoint_fails_at_start_bounded_or_not() {
        for bounded in [true, false] {
            let log = MemoryLog::new(1);
            log.append(0, 0..10);
            let src = input(log, None);
            lock(&src.done).part(0).insert(p(0), 1000);
            let err = src
                .start(bounded, true)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("partition 0")
                    && err.contains("ends at offset 10, before offset 1000"),
                "bounded {bounded}: {err}"
            );
        }
    }

    /// A log of several named topics (Lockgate 0.1's positions cannot say whose).
    struct TwoTopics(Arc<MemoryLog<u32>>);

    impl PartitionedLog<u32> for TwoTopics {
        fn describe(&self) -> String {
            "two topics".into()
        }
        fn bounds(&self) -> std::result::Result<Vec<PartitionBounds>, BoxError> {
            Ok(["a", "b"]
                .iter()
                .flat_map(|t| {
                    let b = self.0.bounds().unwrap_or_default();
                    b.into_iter().map(move |mut b| {
                        b.partition.topic = t.to_string();
                        b
                    })
                })
                .collect())
        }
        fn read(
            &self,
            partition: &TopicPartition,
            offsets: Range<i64>,
        ) -> std::result::Result<Vec<u32>, BoxError> {
            self.0.read(partition, offsets)
        }
        fn single_topic(&self) -> Option<String> {
            None
        }
    }

    /// Lockgate 0.1 logged `(partition, from, until)` and checkpointed positions by
    /// partition number: both resume on a log of one topic, as its partitions.
    #[test]
    fn positions_and_plans_without_topic_names_resume_on_a_log_of_one_topic() {
        let log = MemoryLog::new(2);
        log.append(0, 0..30);
        log.append(1, 0..30);
        let src = input(log.clone(), None);
        let unnamed = crate::codec::to_bytes(&vec![(0u32, 5i64, 9i64), (1, 0, 3)]);
        assert_eq!(
            src.decode(&unnamed, "logged")
                .unwrap_or_else(|e| panic!("{e}")),
            vec![(p(0), 5, 9), (p(1), 0, 3)]
        );
        lock(&src.unnamed).part(0).insert(0, 5);
        lock(&src.unnamed).part(0).insert(1, 7);
        src.start(false, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lock(&src.unnamed).entries(0).count(), 0);
        assert_eq!(planned(&src, 1000), vec![(0, 5, 30), (1, 7, 30)]);
        // A log of several topics cannot tell whose partitions they were.
        let mut several = input(log, None);
        several.log = Arc::new(TwoTopics(MemoryLog::new(1)));
        let err = several
            .decode(&unnamed, "logged")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("Lockgate 0.1") && err.contains("two topics"),
            "{err}"
        );
        lock(&several.unnamed).part(0).insert(0, 5);
        let err = several.start(false, true).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("new checkpoint directory")));
    }

    #[test]
    fn a_log_that_ends_before_the_position_is_an_error_naming_the_partition() {
        let log = MemoryLog::new(1);
        log.append(0, 0..10);
        let src = input(log, None);
        src.start(false, false).unwrap_or_else(|e| panic!("{e}"));
        src.replay(Time(1000), &encode_ranges(&vec![(p(0), 0, 20)]))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = src
            .plan(Time(2000))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("partition 0") && err.contains("new checkpoint directory"),
            "{err}"
        );
    }
}
