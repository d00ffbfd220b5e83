//! `flat_map_groups_with_state`: Spark's `flatMapGroupsWithState` with event-time
//! timeouts. Per batch, each key's records (in event-time order) are handed to the
//! function with the key's [`GroupState`]; then the timers the watermark passed fire, in
//! time order (all of them at the end of a bounded run).

use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::watermark::{Ingested, Watermark};
use crate::batch::{Batch, Data};
use crate::checkpoint::state::{KeyedState, Part};
use crate::clock::Time;
use crate::codec::Codec;
use crate::error::Result;
use crate::hash::FxHashMap;
use crate::types::{lock, partition_of, BatchContext};

/// The state of one key in
/// `flat_map_groups_with_state`: read,
/// update or remove it, set an event-time timer.
#[derive(Debug)]
pub struct GroupState<S> {
    value: Option<S>,
    timeout: Option<i64>,
    timed_out: bool,
    watermark: i64,
}

impl<S> GroupState<S> {
    /// True when the key has state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state.
    pub fn update(&mut self, value: S) {
        self.value = Some(value);
    }

    /// Removes the key's state (and its timer).
    pub fn remove(&mut self) {
        self.value = None;
        self.timeout = None;
    }

    /// Calls the function for this key, with no values and
    /// [`has_timed_out`](Self::has_timed_out) true, once the watermark reaches `t`
    /// (or at the end of a bounded run). Each call clears the timer; set it again to
    /// keep one.
    pub fn set_timeout_timestamp(&mut self, t: Time) {
        self.timeout = Some(t.0);
    }

    /// True when this call is the key's timer firing.
    pub fn has_timed_out(&self) -> bool {
        self.timed_out
    }

    /// The operator's watermark (`Time(i64::MIN)` before any record).
    pub fn watermark(&self) -> Time {
        Time(self.watermark)
    }
}

/// A key's state and its timer.
type Entry<S> = (S, Option<i64>);

/// The operator: the function and the per-key state.
pub(crate) struct GroupStateOp<K, S, F> {
    f: F,
    partitions: usize,
    pub state: Arc<Mutex<KeyedState<K, Entry<S>>>>,
}

impl<K, S, F> GroupStateOp<K, S, F>
where
    K: Data + Hash + Eq + Codec,
    S: Data + Codec,
{
    pub fn new(partitions: usize, f: F) -> Self {
        let partitions = partitions.max(1);
        GroupStateOp {
            f,
            partitions,
            state: Arc::new(Mutex::new(KeyedState::new(partitions, true))),
        }
    }

    /// One batch: the watermark's ingest, then per state partition the function's calls.
    pub fn compute<V, U, I>(
        &self,
        input: Batch<(K, V)>,
        wm: &Watermark<(K, V)>,
        cx: &BatchContext,
    ) -> Result<Batch<U>>
    where
        V: Data,
        U: Data,
        I: IntoIterator<Item = U>,
        F: Fn(&K, Vec<V>, &mut GroupState<S>) -> I + Send + Sync,
    {
        let n = self.partitions;
        let Ingested {
            parts,
            before,
            after,
            counters,
            ..
        } = wm.ingest(
            input,
            n,
            Vec::new,
            |buckets: &mut [Vec<(i64, (K, V))>], _: &mut (), ts, kv| {
                buckets[partition_of(&kv.0, n)].push((ts, kv));
            },
            |_, ()| {},
        );
        let end = cx.end_of_input;
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let out: Vec<(Vec<U>, u64)> = st
            .parts()
            .into_par_iter()
            .zip(parts.into_par_iter())
            .map(|(mut state, inputs)| {
                let mut records: Vec<(i64, (K, V))> = inputs.into_iter().flatten().collect();
                records.sort_by_key(|(ts, _)| *ts);
                let mut groups: FxHashMap<K, Vec<V>> = FxHashMap::default();
                let mut order: Vec<K> = Vec::new();
                for (_, (k, v)) in records {
                    let g = groups.entry(k.clone()).or_default();
                    if g.is_empty() {
                        order.push(k);
                    }
                    g.push(v);
                }
                let mut emitted = Vec::new();
                let mut call =
                    |k: K, values: Vec<V>, timed_out: bool, state: &mut Part<'_, K, Entry<S>>| {
                        state.upsert(k, |k, old| {
                            let mut gs = GroupState {
                                value: old.map(|(s, _)| s),
                                timeout: None,
                                timed_out,
                                watermark: after,
                            };
                            emitted.extend((self.f)(k, values, &mut gs));
                            gs.value.map(|s| (s, gs.timeout))
                        });
                    };
                for k in order {
                    let values = groups.remove(&k).unwrap_or_default();
                    call(k, values, false, &mut state);
                }
                let mut fired = 0u64;
                if after > before || end {
                    let mut due: Vec<(i64, K)> = state
                        .iter()
                        .filter_map(|(k, (_, to))| {
                            to.filter(|to| end || *to <= after)
                                .map(|to| (to, k.clone()))
                        })
                        .collect();
                    // Timers fire in time order (ties in no particular order).
                    due.sort_by_key(|(to, _)| *to);
                    for (_, k) in due {
                        call(k, Vec::new(), true, &mut state);
                        fired += 1;
                    }
                }
                (emitted, fired)
            })
            .collect();
        counters
            .closed
            .fetch_add(out.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
        Ok(Batch::from_partitions(
            out.into_iter().map(|(e, _)| e).collect(),
        ))
    }
}
