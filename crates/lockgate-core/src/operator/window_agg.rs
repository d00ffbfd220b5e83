//! The event-time window aggregation: per key and window, an accumulator built from
//! the records (`init`, `add`) and merged from partial aggregates (`merge`); windows
//! are emitted as the output mode says and evicted once the watermark passes them.
//!
//! Work per batch: (1) each input partition aggregates its records into per state
//! partition partials, one hash lookup per run of records of one key in the same
//! windows; (2) per state partition, the partials are merged into the state, and
//! windows are emitted and evicted.

use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::event_window::{OutputMode, TimeWindow, WindowSpec, Windowed};
use super::watermark::{Ingested, Watermark};
use crate::batch::{map_maybe_par, Batch, Data};
use crate::checkpoint::state::KeyedState;
use crate::clock::Time;
use crate::codec::{Codec, CodecError};
use crate::error::Result;
use crate::hash::{FxHashMap, FxHashSet};
use crate::types::{lock, partition_of, BatchContext};

/// One window of one key in an aggregation's state.
#[derive(Clone, Debug)]
pub(crate) struct Win<A> {
    start: i64,
    end: i64,
    acc: A,
    /// Emitted at the end of a bounded run and not changed since (append mode).
    flushed: bool,
    /// Changed in the current batch (not persisted).
    changed: bool,
}

impl<A: Codec> Codec for Win<A> {
    const NAME: &'static str = "Win";
    fn schema(out: &mut String) {
        crate::codec::generic_schema(out, Self::NAME, Self::VERSION, &[A::schema]);
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.start.encode(out);
        self.end.encode(out);
        self.acc.encode(out);
        self.flushed.encode(out);
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(Win {
            start: Codec::decode_stored(input)?,
            end: Codec::decode_stored(input)?,
            acc: Codec::decode_stored(input)?,
            flushed: Codec::decode_stored(input)?,
            changed: false,
        })
    }
}

/// Folds `v` into an optional running reduction.
pub(crate) fn fold<V>(acc: &mut Option<V>, v: V, reduce: &dyn Fn(V, V) -> V) {
    *acc = Some(match acc.take() {
        Some(prev) => reduce(prev, v),
        None => v,
    });
}

pub(crate) type AddFn<A, T> = Box<dyn Fn(&mut A, &T) + Send + Sync>;
pub(crate) type MergeFn<A> = Box<dyn Fn(&mut A, &A) + Send + Sync>;

/// The physical window aggregation.
pub(crate) struct WindowAgg<T, K, A> {
    pub spec: WindowSpec,
    pub mode: OutputMode,
    pub key_of: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub init: Box<dyn Fn() -> A + Send + Sync>,
    pub add: AddFn<A, T>,
    pub merge: MergeFn<A>,
    pub state: Arc<Mutex<KeyedState<K, Vec<Win<A>>>>>,
}

/// Partial aggregates of one input partition for one state partition.
type Partials<K, A> = FxHashMap<(K, i64), (i64, A)>;

/// Consecutive records of one key that fall in the same windows (records in time order
/// do so for a while): aggregated once here and added to the partials of each of those
/// windows when the run ends, so the hash map is looked up once per run and window
/// instead of once per record and window.
struct Run<K, A> {
    /// The state partition of the key.
    bucket: usize,
    key: K,
    /// `(start, end)` of each window, in the order `assign` gives them.
    wins: Vec<(i64, i64)>,
    /// The run's records, aggregated.
    acc: A,
}

impl<K: Eq, A> Run<K, A> {
    /// True when a record of `key` at `ts` falls in exactly this run's windows.
    fn holds(&self, spec: &WindowSpec, key: &K, ts: i64) -> bool {
        if self.key != *key {
            return false;
        }
        let (mut i, mut same) = (0, true);
        spec.assign(ts, |start, _| {
            same &= self.wins.get(i).is_some_and(|w| w.0 == start);
            i += 1;
        });
        same && i == self.wins.len()
    }
}

impl<T: Data, K: Data + Hash + Eq + Codec, A: Data + Codec> WindowAgg<T, K, A> {
    pub fn compute(
        &self,
        input: Batch<T>,
        wm: &Watermark<T>,
        cx: &BatchContext,
    ) -> Result<Batch<Windowed<K, A>>> {
        let mut st = lock(&self.state);
        let n = st.partitions();
        // 1. Per input partition: fold the records that are not late into partial
        //    aggregates per (key, window), bucketed by state partition.
        let Ingested {
            parts,
            before,
            after,
            counters,
            small,
        } = wm.ingest_ref(
            input,
            n,
            FxHashMap::default,
            |buckets: &mut [Partials<K, A>], run: &mut Option<Run<K, A>>, ts, x| {
                let k = (self.key_of)(x);
                if !run.as_ref().is_some_and(|r| r.holds(&self.spec, &k, ts)) {
                    if let Some(done) = run.take() {
                        self.flush_run(buckets, done);
                    }
                    let mut wins = Vec::with_capacity(4);
                    self.spec.assign(ts, |start, end| wins.push((start, end)));
                    *run = Some(Run {
                        bucket: partition_of(&k, n),
                        key: k,
                        wins,
                        acc: (self.init)(),
                    });
                }
                if let Some(r) = run {
                    (self.add)(&mut r.acc, x);
                }
            },
            |buckets, run| {
                if let Some(done) = run {
                    self.flush_run(buckets, done);
                }
            },
        );
        let flush = cx.end_of_input && self.mode == OutputMode::Append;
        let closing = wm.delay_ms.is_some() && after > before;
        let st = &mut *st;
        // 2. Per state partition: merge the partials, then emit and evict.
        let work: Vec<_> = st.parts().into_iter().zip(parts).collect();
        let out: Vec<(Vec<Windowed<K, A>>, u64)> =
            map_maybe_par(work, small, |(mut state, inputs)| {
                let mut changed: FxHashSet<K> = FxHashSet::default();
                for part in inputs {
                    for ((k, start), (end, acc)) in part {
                        let wins = state.entry_or_default(k.clone());
                        self.merge_into(wins, start, end, acc);
                        changed.insert(k);
                    }
                }
                let mut emitted = Vec::new();
                let mut closed = 0u64;
                let mut visit = |k: &K, wins: &mut Vec<Win<A>>| {
                    let mut touched = false;
                    wins.retain_mut(|w| {
                        let was_changed = std::mem::take(&mut w.changed);
                        if was_changed {
                            // Changed since an end-of-run flush: to be emitted again.
                            w.flushed = false;
                            touched = true;
                        }
                        let ends = closing && w.end <= after;
                        let emit = match self.mode {
                            OutputMode::Update => was_changed,
                            OutputMode::Append => (ends || flush) && !w.flushed,
                        };
                        if emit {
                            emitted.push(Windowed {
                                key: k.clone(),
                                window: TimeWindow {
                                    start: Time(w.start),
                                    end: Time(w.end),
                                },
                                value: w.acc.clone(),
                            });
                            if flush && !ends {
                                w.flushed = true;
                                touched = true;
                            }
                        }
                        if ends {
                            closed += 1;
                            touched = true;
                        }
                        !ends
                    });
                    touched
                };
                if closing || flush {
                    state.retain(|k, wins, changed| {
                        *changed = visit(k, wins);
                        !wins.is_empty()
                    });
                } else {
                    for k in changed {
                        if let Some(wins) = state.get_mut(&k) {
                            visit(&k, wins);
                        }
                    }
                }
                (emitted, closed)
            });
        let closed: u64 = out.iter().map(|(_, c)| c).sum();
        counters.closed.fetch_add(closed, Ordering::Relaxed);
        Ok(Batch::from_partitions(
            out.into_iter().map(|(e, _)| e).collect(),
        ))
    }

    /// Adds a run's aggregates to the partials of its state partition.
    fn flush_run(&self, buckets: &mut [Partials<K, A>], run: Run<K, A>) {
        let Some(bucket) = buckets.get_mut(run.bucket) else {
            return;
        };
        for (start, end) in run.wins {
            match bucket.entry((run.key.clone(), start)) {
                hashbrown::hash_map::Entry::Occupied(mut slot) => {
                    (self.merge)(&mut slot.get_mut().1, &run.acc);
                }
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    slot.insert((end, run.acc.clone()));
                }
            }
        }
    }

    /// Adds the partial aggregate of window `[start, end)` to a key's windows (sorted by
    /// start), merging overlapping sessions.
    fn merge_into(&self, wins: &mut Vec<Win<A>>, start: i64, end: i64, acc: A) {
        let pos = wins.partition_point(|w| w.start < start);
        if !self.spec.is_session() {
            match wins.get_mut(pos) {
                Some(w) if w.start == start => {
                    (self.merge)(&mut w.acc, &acc);
                    w.changed = true;
                }
                _ => wins.insert(
                    pos,
                    Win {
                        start,
                        end,
                        acc,
                        flushed: false,
                        changed: true,
                    },
                ),
            }
            return;
        }
        // Sessions: every window overlapping [start, end) merges into one.
        let mut first = pos;
        while first > 0 && wins[first - 1].end > start {
            first -= 1;
        }
        let mut last = pos;
        while last < wins.len() && wins[last].start < end {
            last += 1;
        }
        let mut merged = Win {
            start,
            end,
            acc,
            flushed: false,
            changed: true,
        };
        for w in wins.drain(first..last) {
            merged.start = merged.start.min(w.start);
            merged.end = merged.end.max(w.end);
            (self.merge)(&mut merged.acc, &w.acc);
        }
        wins.insert(first, merged);
    }
}
