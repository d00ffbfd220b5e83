//! The engine's internal extension points, in one place: what a new physical operator
//! ([`Operator`]), source ([`InputSource`] + [`SourceCompute`]), piece of checkpointed
//! state ([`Stateful`]) or sink as the protocol sees it ([`CommittedBatches`])
//! implements. The public ones, for connector crates and users (`Sink`,
//! `PartitionedLog`, `Receiver`, `Codec`, `Partitioner`, `Clock`), are gathered in
//! the public module `lockgate_core::extend`.
//!
//! - **An operator** is a struct in its own file under `operator/` implementing
//!   [`Operator`]: the required `compute` (pull the parents' batches with
//!   `parent.get_or_compute(cx)`), and the hooks `prepare` (runs at every batch time,
//!   also when the operator emits nothing) and `state` (its checkpointed state). The
//!   user-facing method in `dstream/` only builds it (`child_op(kind, slide, stateful,
//!   op)`). Every method of [`Operator`] has a default body but `compute`; a wrapper
//!   of an operator does not exist, so none can forget a hook.
//! - **A source** implements [`InputSource`] (plan a batch and return its descriptor,
//!   replay a logged descriptor, say what is pending) and [`SourceCompute`] (the batch
//!   of a planned time), and is registered with `source::register`. A replayable log
//!   only needs a public `PartitionedLog` (as the Kafka crate does).
//! - **State** is a `checkpoint::state::KeyedState` or `BufferState` behind their
//!   [`Stateful`] views (`KeyedStateful`, with its options, `BufferStateful`,
//!   `PairStateful` for two stored as one). [`Stateful`] has no default bodies: every
//!   implementation decides every method, so a method added later is never skipped
//!   silently by one of them.
//!
//! The unit tests at the end implement an operator and a source with
//! these traits and run them: a compiled example of each.

use std::sync::Arc;

use crate::batch::Batch;
use crate::clock::Time;
use crate::codec::{CodecError, Stored};
use crate::error::Result;
use crate::types::{BatchContext, BatchId, InputInfo, NameFn};

/// The physical work of a node: turn the parents' batches into this node's batch.
pub(crate) trait Operator<T>: Send + Sync {
    /// Computes the batch of `cx` (at a time valid for the node).
    fn compute(&self, cx: &BatchContext) -> Result<Batch<T>>;

    /// Called at every batch time before any output runs (windows collect their
    /// parent's batch here, also at times they emit nothing).
    fn prepare(&self, _cx: &BatchContext) -> Result<()> {
        Ok(())
    }

    /// The operator's checkpointed state, if it has any: registered under `name` (the
    /// node's stable name, read when the context starts) when the node is added.
    fn state(&self, _name: NameFn) -> Option<Arc<dyn Stateful>> {
        None
    }
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
    /// Called when the context checkpoints into `storage`: the source prepares to log
    /// what replay needs (a receiver opens its write-ahead log there).
    fn enable_checkpoint(
        &self,
        _storage: &std::sync::Arc<dyn crate::storage::Storage>,
    ) -> Result<()> {
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
    /// Whether the plan `info` (this source's, just made) takes any input: batches
    /// without input may be skipped over (see the scheduler). By its record count.
    fn took_input(&self, info: &InputInfo) -> bool {
        info.records > 0
    }
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

/// The part of a source that produces the batch planned for a time.
pub(crate) trait SourceCompute<T>: InputSource {
    fn compute(&self, t: Time) -> Result<Batch<T>>;
}

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
///
/// Every method is required (no default bodies), so a type that implements it, or
/// combines two (`checkpoint::state::PairStateful`), decides each one: a method added
/// here later cannot be skipped silently by any of them. The implementations are
/// `KeyedStateful` (per-key state, with its options: snapshots only, introduced,
/// counted by entries), `BufferStateful` (a window's batches) and `PairStateful`.
pub(crate) trait Stateful: Send + Sync {
    /// The stable name state is stored under.
    fn name(&self) -> String;
    /// The state's schema, built from its types' codec schemas (`string -> i64`; see
    /// `checkpoint::schema`): recorded in the checkpoint and compared at recovery.
    fn schema(&self) -> String;
    /// Number of state partitions.
    fn partitions(&self) -> usize;
    /// Writes full snapshots only (state whose changes are not tracked).
    fn always_full(&self) -> bool;
    /// Called once when the context checkpoints: from now on every batch's changes are
    /// persisted (state may then log its changes as they happen).
    fn checkpointed(&self);
    /// Encoded entries of partition `p`: all (`full`) or changed since the last call.
    /// `None` when nothing is to be written.
    fn persist(&self, p: usize, full: bool) -> Option<Vec<u8>>;
    /// Replaces the state from payloads per old partition, each applied in order.
    fn restore(&self, old: Vec<Vec<Stored>>) -> std::result::Result<(), CodecError>;
    /// Number of entries per partition (for inspection and metrics).
    fn sizes(&self) -> Vec<usize>;
    /// State an earlier Lockgate did not have: a checkpoint without it starts it empty
    /// (for other state, a checkpoint without it is an upgrade the user must allow).
    fn introduced(&self) -> bool;
}

/// Compiled and run examples of the internal extension points: a source counting up
/// and an operator doubling its parent's numbers, run through the real scheduler.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::graph::NodeCell;
    use crate::testing::{collect_output, ManualRun};

    /// A source whose batch `t` holds the next three numbers; its descriptor is the
    /// first of them, so a replayed batch reads the same ones.
    #[derive(Default)]
    struct Counting {
        next: AtomicU64,
        planned: Mutex<std::collections::BTreeMap<Time, u64>>,
    }

    impl InputSource for Counting {
        fn name(&self) -> String {
            "counting-0".into()
        }
        fn start(&self, _bounded: bool, _recovered: bool) -> Result<()> {
            Ok(())
        }
        fn stop(&self) {}
        fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
            let first = self.next.fetch_add(3, Ordering::SeqCst);
            crate::sync::lock(&self.planned).insert(t, first);
            let info = InputInfo {
                source: self.name(),
                records: 3,
                description: format!("{first}..{}", first + 3),
            };
            Ok((info, first.to_le_bytes().to_vec()))
        }
        fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
            let first = crate::codec::from_bytes::<u64>(descriptor)
                .map_err(|e| crate::error::Error::Lifecycle(e.to_string()))?;
            crate::sync::lock(&self.planned).insert(t, first);
            Ok(())
        }
        fn has_pending(&self) -> bool {
            true
        }
        fn forget(&self, done: Time) {
            crate::sync::lock(&self.planned).retain(|t, _| *t > done);
        }
    }

    impl SourceCompute<u64> for Counting {
        fn compute(&self, t: Time) -> Result<Batch<u64>> {
            let first = crate::sync::lock(&self.planned)
                .get(&t)
                .copied()
                .unwrap_or_default();
            Ok(Batch::from_vec((first..first + 3).collect(), 1))
        }
    }

    /// An operator doubling its parent's numbers.
    struct Doubling {
        parent: Arc<NodeCell<u64>>,
    }

    impl Operator<u64> for Doubling {
        fn compute(&self, cx: &BatchContext) -> Result<Batch<u64>> {
            Ok(self.parent.get_or_compute(cx)?.map(|x| x * 2))
        }
    }

    #[test]
    fn a_source_and_an_operator_built_on_the_traits_run() {
        let run = ManualRun::new(1).expect("a context");
        let numbers = crate::source::register(&run.ctx, "counting", Arc::new(Counting::default()));
        let doubled = numbers.child_op(
            "doubling",
            numbers.slide_ms(),
            false,
            Doubling {
                parent: numbers.parent(),
            },
        );
        let out = collect_output(&doubled);
        run.ctx.start().expect("starts");
        run.run_batches(2).expect("runs");
        run.ctx.stop(false).expect("stops");
        let got = crate::sync::lock(&out).clone();
        assert_eq!(got, vec![vec![0, 2, 4], vec![6, 8, 10]]);
    }
}
