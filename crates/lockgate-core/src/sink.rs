//! Sinks: outputs that commit a batch idempotently by batch id, so a batch re-run after a
//! crash does not change what they hold.
//!
//! A sink receives the batch with its id, time and the input descriptors it was planned
//! with. File sinks write a deterministic per-batch path atomically (a re-run overwrites
//! with the same content); transactional sinks write the results and a row
//! `(app, sink, batch id, descriptors)` in one transaction and skip a batch already
//! committed (exactly-once), or write it again (at-least-once).

use std::sync::Arc;

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::dstream::DStream;
use crate::error::{BoxError, Error};
use crate::metrics::SinkCounters;
pub use crate::types::SinkOffsets;
use crate::types::{BatchId, DeliveryMode, SourcePlan};

/// What a sink knows about the batch it commits.
#[derive(Clone, Debug)]
pub struct SinkBatch {
    /// The application's name.
    pub app: String,
    /// The batch id.
    pub id: BatchId,
    /// The batch time.
    pub time: Time,
    /// What each source read for this batch (its logged plan).
    pub inputs: Arc<Vec<SourcePlan>>,
    /// The context's delivery guarantee: an exactly-once sink skips batches it already
    /// committed, an at-least-once sink may write them again.
    pub delivery: DeliveryMode,
    /// Where the sink reports the commits it retries (logs, `/metrics`, the UI).
    pub counters: Arc<SinkCounters>,
}

/// An output that commits whole batches, idempotently per batch id.
pub trait Sink<T>: Send + Sync + 'static {
    /// A stable name (recorded with committed batches).
    fn name(&self) -> String;

    /// Commits `batch`. Committing a batch id that was already committed must leave the
    /// sink as if it had been committed once (for [`DeliveryMode::ExactlyOnce`]).
    fn commit(&self, batch: &Batch<T>, info: &SinkBatch) -> Result<(), BoxError>;
}

impl<T: Data> DStream<T> {
    /// Writes every batch to `sink` (an output operation).
    pub fn write_to(&self, sink: impl Sink<T>) {
        let graph = self.graph.clone();
        let name = format!("sink({})", sink.name());
        let op_name = name.clone();
        let counters = graph.metrics.sink(&sink.name());
        self.add_output_of_sink(name, Some(counters.clone()), move |batch, b| {
            let info = SinkBatch {
                app: graph.app_name(),
                id: b.id,
                time: b.time,
                inputs: graph.current_plan(),
                delivery: graph.delivery(),
                counters: counters.clone(),
            };
            sink.commit(&batch, &info).map_err(|source| Error::Output {
                operator: op_name.clone(),
                time: b.time,
                source,
            })
        });
    }
}
