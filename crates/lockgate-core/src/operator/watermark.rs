//! The watermark of an event-time operator: reads each record's event time, drops late
//! and untimed records (counting them), and advances the watermark to the largest time
//! seen minus the allowed delay. Every event-time operator ingests its input through
//! one; its watermark is checkpointed beside the operator's state.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::batch::{map_maybe_par, take_part, transpose_by_bucket, Batch, Data, SEQUENTIAL_BELOW};
use crate::checkpoint::state::KeyedState;
use crate::clock::Time;
use crate::error::Result;
use crate::graph::{Graph, NodeCell, NodeMeta};
use crate::metrics::EventTimeCounters;
use crate::traits::{Operator, Stateful};
use crate::types::{lock, BatchContext, NameFn};

/// Reads a record's event time (`None`: it has none).
pub(crate) type TimeFn<T> = Arc<dyn Fn(&T) -> Option<Time> + Send + Sync>;

/// The event-time part shared by every event-time operator: reads record times, drops
/// late and untimed records, keeps and advances the watermark, counts.
pub(crate) struct Watermark<T> {
    pub time_of: TimeFn<T>,
    pub delay_ms: Option<i64>,
    pub graph: Arc<Graph>,
    pub meta: Arc<NodeMeta>,
    /// `maps[0][0]`: the watermark (absent before the first record).
    pub state: Arc<Mutex<KeyedState<u8, i64>>>,
}

/// A batch's records after [`Watermark::ingest`].
pub(crate) struct Ingested<X> {
    /// Per state partition, what each input partition gave it (in input order).
    pub parts: Vec<Vec<X>>,
    /// The watermark before the batch (records behind it were dropped) and after it.
    pub before: i64,
    pub after: i64,
    pub counters: Arc<EventTimeCounters>,
    /// The batch was small: later stages run on this thread too.
    pub small: bool,
}

/// What one input partition's records were, as [`Watermark`] reads them.
struct Tally {
    /// The watermark before the batch.
    before: i64,
    late: u64,
    untimed: u64,
    max_ts: Option<i64>,
}

impl Tally {
    /// The time of a record to keep, counting it; `None` for a late or untimed one.
    fn admit(&mut self, t: Option<Time>) -> Option<i64> {
        match t {
            None => {
                self.untimed += 1;
                None
            }
            Some(Time(ts)) => {
                self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
                if ts < self.before {
                    self.late += 1;
                    None
                } else {
                    Some(ts)
                }
            }
        }
    }
}

impl<T: Data> Watermark<T> {
    /// Reads the event time of every record of `input`, in parallel per input
    /// partition: records behind the watermark (as it stood before the batch) or
    /// without a time are dropped and counted; `add` puts each kept record, with its
    /// time, into one of `n` per-state-partition accumulators made by `init`, with a
    /// scratch value `C` per input partition that `finish` empties into them at its end.
    /// Then the watermark advances to the largest time seen (late records included:
    /// they show where event time is) minus the delay, if that is later.
    ///
    /// The records are handed over owned (a partition shared with another operator is
    /// cloned); [`Watermark::ingest_ref`] lends them instead.
    pub fn ingest<X: Send, C: Default>(
        &self,
        input: Batch<T>,
        n: usize,
        init: impl Fn() -> X + Sync,
        add: impl Fn(&mut [X], &mut C, i64, T) + Sync,
        finish: impl Fn(&mut [X], C) + Sync,
    ) -> Ingested<X> {
        self.ingest_with(input, n, init, |part, buckets, tally| {
            let mut scratch = C::default();
            for x in take_part(part) {
                if let Some(ts) = tally.admit((self.time_of)(&x)) {
                    add(buckets, &mut scratch, ts, x);
                }
            }
            finish(buckets, scratch);
        })
    }

    /// [`Watermark::ingest`] for an operator that only reads its records (an
    /// aggregation): they are lent, so a partition shared with another operator is
    /// not cloned.
    pub fn ingest_ref<X: Send, C: Default>(
        &self,
        input: Batch<T>,
        n: usize,
        init: impl Fn() -> X + Sync,
        add: impl Fn(&mut [X], &mut C, i64, &T) + Sync,
        finish: impl Fn(&mut [X], C) + Sync,
    ) -> Ingested<X> {
        self.ingest_with(input, n, init, |part, buckets, tally| {
            let mut scratch = C::default();
            for x in part.iter() {
                if let Some(ts) = tally.admit((self.time_of)(x)) {
                    add(buckets, &mut scratch, ts, x);
                }
            }
            finish(buckets, scratch);
        })
    }

    /// Runs `each` on every input partition (with its `n` accumulators and its
    /// tally), then counts and advances the watermark.
    fn ingest_with<X: Send>(
        &self,
        input: Batch<T>,
        n: usize,
        init: impl Fn() -> X + Sync,
        each: impl Fn(Arc<Vec<T>>, &mut [X], &mut Tally) + Sync,
    ) -> Ingested<X> {
        let counters = self.graph.metrics.event_time(&self.meta.name());
        let before = lock(&self.state).get(0, &0).copied().unwrap_or(i64::MIN);
        let small = input.len() < SEQUENTIAL_BELOW;
        let per_input: Vec<(Vec<X>, Option<i64>)> =
            map_maybe_par(input.into_shared(), small, |part| {
                let mut buckets: Vec<X> = (0..n).map(|_| init()).collect();
                let mut tally = Tally {
                    before,
                    late: 0,
                    untimed: 0,
                    max_ts: None,
                };
                each(part, &mut buckets, &mut tally);
                counters
                    .late_records
                    .fetch_add(tally.late, Ordering::Relaxed);
                counters
                    .records_without_time
                    .fetch_add(tally.untimed, Ordering::Relaxed);
                (buckets, tally.max_ts)
            });
        let max_ts = per_input.iter().filter_map(|(_, m)| *m).max();
        let after = match (self.delay_ms, max_ts) {
            (Some(d), Some(m)) => before.max(m.saturating_sub(d)),
            _ => before,
        };
        if after != before {
            lock(&self.state).part(0).insert(0, after);
        }
        counters.watermark_ms.store(after, Ordering::Relaxed);
        let parts = transpose_by_bucket(per_input.into_iter().map(|(b, _)| b).collect(), n);
        Ingested {
            parts,
            before,
            after,
            counters,
            small,
        }
    }
}

/// An event-time operator: its parent's batch is handed, with the operator's
/// [`Watermark`], to `compute` (a window aggregation, `flat_map_groups_with_state`); its
/// state (the operator's, with the watermark alongside) is registered with the node.
pub(crate) struct EventTimeOp<T, F> {
    pub parent: Arc<NodeCell<T>>,
    pub watermark: Watermark<T>,
    pub compute: F,
    pub state: Arc<dyn Stateful>,
}

impl<T: Data, U, F> Operator<U> for EventTimeOp<T, F>
where
    F: Fn(Batch<T>, &Watermark<T>, &BatchContext) -> Result<Batch<U>> + Send + Sync,
{
    fn compute(&self, cx: &BatchContext) -> Result<Batch<U>> {
        (self.compute)(self.parent.get_or_compute(cx)?, &self.watermark, cx)
    }

    fn state(&self, _name: NameFn) -> Option<Arc<dyn Stateful>> {
        Some(self.state.clone())
    }
}
