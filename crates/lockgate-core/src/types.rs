//! The small shared types every layer uses, at the bottom of the crate: batch ids and
//! references, input descriptors, plans and the source trait, output results, the
//! delivery mode, the checkpointable-state trait, the key-partition function, a sink's
//! recorded offsets, and the poison-tolerant lock helper. This module imports nothing
//! of the crate but the other bottom modules (`batch`, `clock`, `codec`, `error`).

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

use crate::clock::Time;
use crate::codec::{Codec, CodecError};
use crate::error::Result;

/// The id of a batch: 0 for the first batch time, then one more per batch interval.
pub type BatchId = u64;

/// The identity of one batch, handed to output functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchRef {
    /// The batch id.
    pub id: BatchId,
    /// The batch time.
    pub time: Time,
}

/// What every operator and output is handed for the batch it computes: the batch's
/// identity, the plan it was logged with, whether it ends a bounded run, and the
/// context's delivery guarantee. Built once per batch by the protocol and passed by
/// reference down the graph (nothing about the running batch is kept on the graph).
#[derive(Clone, Debug)]
pub struct BatchContext {
    /// The batch id.
    pub id: BatchId,
    /// The batch time.
    pub time: Time,
    /// What each source read for this batch (its logged plan).
    pub plan: std::sync::Arc<Vec<SourcePlan>>,
    /// True for the last batch of a bounded run: event-time operators in append mode
    /// emit their open windows.
    pub end_of_input: bool,
    /// The context's delivery guarantee.
    pub delivery: DeliveryMode,
    /// The last batch each sink reported committed at start, for the sinks that skip
    /// batches they hold (the protocol decides which).
    pub(crate) sinks_committed: std::sync::Arc<std::collections::BTreeMap<String, BatchId>>,
}

impl BatchContext {
    /// A context for batch `id` at `time` with an empty plan (tests, tools).
    pub fn new(id: BatchId, time: Time) -> Self {
        BatchContext {
            id,
            time,
            plan: std::sync::Arc::default(),
            end_of_input: false,
            delivery: DeliveryMode::ExactlyOnce,
            sinks_committed: std::sync::Arc::default(),
        }
    }

    /// True when `sink` already holds this batch and must not be handed it again.
    pub(crate) fn sink_holds(&self, sink: &str) -> bool {
        self.sinks_committed
            .get(sink)
            .is_some_and(|&last| last >= self.id)
    }

    /// The batch's identity.
    pub fn batch(&self) -> BatchRef {
        BatchRef {
            id: self.id,
            time: self.time,
        }
    }
}

pub(crate) use crate::sync::lock;

/// What a source decided for one batch (its input descriptor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputInfo {
    /// The source's name.
    pub source: String,
    /// Number of records in the batch.
    pub records: u64,
    /// A human-readable description of exactly what the batch reads
    /// (file names, queue items, received records).
    pub description: String,
}

/// The result of running one output operation for a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputOpInfo {
    /// The output operation's name.
    pub name: String,
    /// When it started.
    pub start: Time,
    /// When it ended.
    pub end: Time,
    /// Elements of the batch it wrote.
    pub records: u64,
    /// The error message if it failed.
    pub failure: Option<String>,
    /// A sink's commits retried for this batch (after a lost connection, say).
    pub retries: u64,
}

/// How Lockgate may deliver records to outputs when it crashes and recovers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Every record affects the outputs exactly once (replay + idempotent or
    /// transactional sinks). The default.
    #[default]
    ExactlyOnce,
    /// Records are never lost but a replayed batch may be written again by sinks that
    /// do not de-duplicate (insert-mode database sinks).
    AtLeastOnce,
    /// A batch is marked done before it runs: after a crash it is not re-run, so its
    /// records may be lost, never repeated.
    AtMostOnce,
}

/// How a piece of state finds its stable name: its node's, which may be set after the
/// node is created (`DStream::name`), so it is read when the context starts.
pub(crate) type NameFn = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// One source's part of a batch plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePlan {
    /// The source's name.
    pub source: String,
    /// The encoded input descriptor (what the batch reads).
    pub descriptor: Vec<u8>,
    /// Records, if known when planning.
    pub records: u64,
    /// Human-readable form of the descriptor.
    pub description: String,
}

impl Codec for SourcePlan {
    const NAME: &'static str = "SourcePlan";
    fn encode(&self, out: &mut Vec<u8>) {
        self.source.encode(out);
        self.descriptor.encode(out);
        self.records.encode(out);
        self.description.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(SourcePlan {
            source: Codec::decode_stored(input)?,
            descriptor: Codec::decode_stored(input)?,
            records: Codec::decode_stored(input)?,
            description: Codec::decode_stored(input)?,
        })
    }
}

/// The partition of `key` among `n` partitions (deterministic across runs).
#[inline]
pub fn partition_of<K: Hash + ?Sized>(key: &K, n: usize) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    let x = h.finish();
    let mixed = x ^ (x >> 29) ^ (x >> 47);
    usize::try_from(mixed % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// What a transactional sink recorded as committed: where a job resumes when the sink's
/// database, not the checkpoint, is the source of truth ("offsets and results in the same
/// database"). See [`StreamingContextBuilder::from_sink_offsets`](crate::StreamingContextBuilder::from_sink_offsets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkOffsets {
    /// The last committed batch id.
    pub last_batch_id: u64,
    /// Its batch time.
    pub last_batch_time_ms: i64,
    /// The plans of the committed batches the sink still records, oldest first.
    pub plans: Vec<Vec<SourcePlan>>,
}
