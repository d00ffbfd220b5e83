//! # lockgate-core
//!
//! The engine of Lockgate, a micro-batch stream processor on the model of Spark
//! Streaming: a stream is cut into batches at a fixed interval, each batch is computed
//! in parallel on all cores, and the results go to outputs.
//!
//! This crate owns: batches ([`Batch`]), the [`DStream`] API (transformations, keyed
//! operations, windows, state, outputs and the [`Sink`] trait), the scheduler (job
//! generator and runner), the [`Clock`] (system and manual), sources (queues, sequences,
//! files, sockets, the [`Receiver`] trait), the exactly-once protocol
//! ([`checkpoint`]: logged plans, state store, recovery; [`wal`]: the receivers'
//! write-ahead log; [`codec`]: what state is encoded with), backpressure ([`rate`]) and
//! the metrics registry.
//!
//! ```
//! use std::time::Duration;
//! use lockgate_core::{InputQueue, StreamingContext, Trigger, Time};
//!
//! let ctx = StreamingContext::builder()
//!     .batch_interval(Duration::from_secs(1))
//!     .trigger(Trigger::AvailableNow)
//!     .start_time(Time(0))
//!     .build()?;
//! let lines = ctx.queue_stream(
//!     InputQueue::from_batches(vec![vec!["a b".to_string(), "b".to_string()]]),
//!     true,
//!     None,
//! );
//! let counts = lines
//!     .flat_map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
//!     .map(|w| (w, 1))
//!     .reduce_by_key(|a, b| a + b);
//! counts.foreach_batch(|batch, b| {
//!     let mut got = batch.collect();
//!     got.sort();
//!     assert_eq!(got, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
//!     assert_eq!(b.id, 0);
//! });
//! ctx.start()?;
//! ctx.await_termination()?;
//! # Ok::<(), lockgate_core::Error>(())
//! ```

#![deny(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod clock;
pub mod codec;
pub mod context;
pub mod dstream;
pub mod error;
pub mod extend;
mod graph;
mod hash;
pub mod metrics;
mod operator;
mod protocol;
pub mod rate;
mod scheduler;
pub mod show;
pub mod sink;
pub mod source;
pub mod storage;
pub mod sync;
pub mod testing;
pub mod text;
mod traits;
mod types;
pub mod wal;

pub use batch::{Batch, Data};
pub use checkpoint::{CheckpointConfig, DeliveryMode, StateUpgrade, UpgradeReport, UpgradeStatus};
pub use clock::{
    civil_time, epoch_seconds, parse_duration, CivilTime, Clock, ManualClock, SystemClock, Time,
};
pub use codec::{Codec, CodecError};
/// A string that keeps up to 24 bytes inline (no allocation, a clone is a copy), hashed,
/// compared and checkpointed exactly like a `String`: the cheap key for keyed
/// operations and state over short words, names and identifiers.
pub use compact_str::CompactString;
pub use context::{
    redact, ContextState, StreamingContext, StreamingContextBuilder, Trigger, WorkerPool,
};
pub use dstream::event_time::{
    EventTimeStream, GroupState, OutputMode, TimeWindow, WindowSpec, Windowed, WindowedStream,
};
pub use dstream::keyed::{HashPartitioner, Partitioner};
pub use dstream::output::OutputResult;
pub use dstream::state::{MapWithStateDStream, State, StateSpec, StateUpdates, UpdateStateSpec};
pub use dstream::window::{InverseWindowOpts, Slide};
pub use dstream::DStream;
pub use error::{BoxError, Error, Result};
pub use metrics::{
    BatchInfo, DelayHistogram, DelayHistograms, EventTimeCounters, MetricsSnapshot, OperatorInfo,
    SinkCounters, SinkStatus, SourceCounters, SourceStatus, StreamingMetrics,
};
pub use rate::{PidRateEstimator, RateDecision};
pub use show::Show;
pub use sink::{JsonLinesSink, Sink, SinkBatch, SinkOffsets};
pub use source::files::FileStreamOptions;
pub use source::queue::{InputQueue, QueueStreamOptions};
pub use source::receiver::{Receiver, ReceiverContext, ReceiverInputDStream};
pub use source::socket::SocketTextReceiver;
pub use source::TextChunk;
pub use types::{BatchContext, BatchId, BatchRef, InputInfo, OutputOpInfo, SourcePlan};
