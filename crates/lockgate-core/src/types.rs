//! The small shared types every layer uses, at the bottom of the crate: batch ids and
//! references, input descriptors, plans and the source trait, output results, the
//! delivery mode, the checkpointable-state trait, the key-partition function, a sink's
//! recorded offsets, and the poison-tolerant lock helper. This module imports nothing
//! of the crate but the other bottom modules (`batch`, `clock`, `codec`, `error`).

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

use crate::clock::Time;
use crate::codec::{Codec, CodecError, Stored};
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

/// A source of input: plans what each batch reads.
pub(crate) trait InputSource: Send + Sync {
    fn name(&self) -> String;
    /// Starts receivers, takes the initial file listing, ... `recovered` is true when
    /// the source's state was restored from a checkpoint.
    fn start(&self, bounded: bool, recovered: bool) -> Result<()>;
    /// Stops receivers; data received so far stays available to `plan`.
    fn stop(&self);
    /// Decides what batch `t` reads; returns it and its encoded descriptor.
    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)>;
    /// Re-plans batch `t` exactly as logged (recovery).
    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()>;
    /// `Err(reason)` when the source cannot be replayed from a checkpoint.
    fn checkpoint_support(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Called when the context checkpoints into `dir`: the source prepares to log what
    /// replay needs.
    fn enable_checkpoint(&self, _dir: &std::path::Path) -> Result<()> {
        Ok(())
    }
    /// The rate controller's new limit, records per second (receivers apply it).
    fn set_rate_limit(&self, _records_per_second: f64) {}
    /// The batches up to `t` are durably committed: their input may be released.
    fn committed(&self, _t: Time) {}
    /// Marks the input of these logged descriptors as consumed (resuming from a sink's
    /// offsets).
    fn seed_consumed(&self, _descriptors: &[&[u8]]) -> Result<()> {
        Ok(())
    }
    /// True while the source has data that a next `plan` would take.
    fn has_pending(&self) -> bool;
    /// How many more batches a bounded source needs for what it holds (None when it
    /// cannot tell, e.g. a receiver).
    fn pending_batches(&self) -> Option<u64> {
        None
    }
    /// Drops planned data of batches up to `done`.
    fn forget(&self, done: Time);
    /// Records actually read for batch `t`, for sources that only know it after reading
    /// (files: the plan lists files, reading counts lines).
    fn records_read(&self, _t: Time) -> Option<u64> {
        None
    }
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

/// A sink as the protocol sees it at start: which batch it committed last.
pub(crate) trait CommittedBatches: Send + Sync {
    /// The sink's name.
    fn name(&self) -> String;
    /// The last batch id the sink committed for application `app`, if it records one.
    fn last_committed(
        &self,
        app: &str,
    ) -> std::result::Result<Option<BatchId>, crate::error::BoxError>;
}

/// Checkpointable state of an operator or source.
pub(crate) trait Stateful: Send + Sync {
    /// The stable name state is stored under.
    fn name(&self) -> String;
    /// The state's schema, built from its types' codec schemas (`string -> i64`; see
    /// `checkpoint::schema`): recorded in the checkpoint and compared at recovery.
    fn schema(&self) -> String;
    /// Number of state partitions.
    fn partitions(&self) -> usize;
    /// Writes full snapshots only (state whose changes are not tracked).
    fn always_full(&self) -> bool {
        false
    }
    /// Called once when the context checkpoints: from now on every batch's changes are
    /// persisted (state may then log its changes as they happen).
    fn checkpointed(&self) {}
    /// Encoded entries of partition `p`: all (`full`) or changed since the last call.
    /// `None` when nothing changed and `full` is false.
    fn persist(&self, p: usize, full: bool) -> Option<Vec<u8>>;
    /// Replaces the state from payloads per old partition, each applied in order.
    fn restore(&self, old: Vec<Vec<Stored>>) -> std::result::Result<(), CodecError>;
    /// Number of entries per partition (for inspection and metrics).
    fn sizes(&self) -> Vec<usize>;
    /// State an earlier Lockgate did not have: a checkpoint without it starts it empty
    /// (for other state, a checkpoint without it is an upgrade the user must allow).
    fn introduced(&self) -> bool {
        false
    }
}

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
