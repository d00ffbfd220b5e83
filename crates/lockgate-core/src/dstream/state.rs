//! State across batches: `update_state_by_key` and `map_with_state` (with a per-key
//! [`State`], idle timeouts and state snapshots).
//!
//! State is hash-partitioned by key (the same partitioner as keyed operations) and lives
//! in the operator; every batch updates it in parallel, one task per partition.

use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashbrown::hash_map::Entry;
use rayon::prelude::*;

use crate::hash::FxHashMap;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{node_name, KeyedState, KeyedStateful, Recording};
use crate::clock::duration_ms;
use crate::codec::Codec;
use crate::dstream::keyed::partition_by_key;
use crate::dstream::DStream;
use crate::error::Error;
use crate::graph::lock;

/// The state of one key as seen by a [`map_with_state`](DStream::map_with_state)
/// function: read it, update it, remove it, and know whether the key is timing out.
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    updated: bool,
    removed: bool,
    timing_out: bool,
    misuse: Option<&'static str>,
}

impl<S> State<S> {
    fn new(value: Option<S>, timing_out: bool) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out,
            misuse: None,
        }
    }

    /// True when the key has state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state. Not allowed while the key is timing out (the call is
    /// ignored and the batch fails with an error naming the operator).
    pub fn update(&mut self, value: S) {
        if self.timing_out {
            self.misuse = Some("State::update() was called for a key that is timing out");
            return;
        }
        self.value = Some(value);
        self.updated = true;
        self.removed = false;
    }

    /// Removes the key's state.
    pub fn remove(&mut self) {
        self.value = None;
        self.removed = true;
        self.updated = false;
    }

    /// True when the function is called because the key has been idle longer than the
    /// timeout; the state is removed after this call.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

type MapFn<K, V, S, U> = Arc<dyn Fn(&K, Option<V>, &mut State<S>) -> U + Send + Sync>;

/// The specification of a [`map_with_state`](DStream::map_with_state) operation.
pub struct StateSpec<K, V, S, U> {
    func: MapFn<K, V, S, U>,
    initial: Vec<(K, S)>,
    timeout_ms: Option<i64>,
    partitions: Option<usize>,
}

impl<K, V, S, U> StateSpec<K, V, S, U> {
    /// A spec with the mapping function: called once per record with the key, the value
    /// and the key's state; its results form the mapped stream.
    pub fn function(f: impl Fn(&K, Option<V>, &mut State<S>) -> U + Send + Sync + 'static) -> Self {
        StateSpec {
            func: Arc::new(f),
            initial: Vec::new(),
            timeout_ms: None,
            partitions: None,
        }
    }

    /// State the keys start with.
    pub fn initial_state(mut self, initial: Vec<(K, S)>) -> Self {
        self.initial = initial;
        self
    }

    /// Keys without a record for longer than `idle` time out: the function is called one
    /// last time with no value and `is_timing_out() == true`, then the state is removed.
    pub fn timeout(mut self, idle: Duration) -> Self {
        self.timeout_ms = Some(duration_ms(idle));
        self
    }

    /// Number of state partitions (default: the context's parallelism).
    pub fn num_partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
        self
    }
}

/// What the internal map-with-state node emits.
#[derive(Clone, Debug)]
pub(crate) enum MwsItem<K, S, U> {
    Mapped(U),
    Snapshot(K, S),
}

/// The result of [`map_with_state`](DStream::map_with_state): the mapped stream (it
/// dereferences to a `DStream<U>`) plus access to the state snapshots.
pub struct MapWithStateDStream<K, S, U> {
    mapped: DStream<U>,
    internal: DStream<MwsItem<K, S, U>>,
    want_snapshots: Arc<std::sync::atomic::AtomicBool>,
}

impl<K: Data, S: Data, U: Data> MapWithStateDStream<K, S, U> {
    /// The stream of the whole state after each batch: every `(key, state)`.
    pub fn state_snapshots(&self) -> DStream<(K, S)> {
        self.want_snapshots
            .store(true, std::sync::atomic::Ordering::Release);
        self.internal
            .flat_map(|item| match item {
                MwsItem::Snapshot(k, s) => Some((k, s)),
                MwsItem::Mapped(_) => None,
            })
            .name_kind("state_snapshots")
    }

    /// The mapped stream.
    pub fn stream(&self) -> DStream<U> {
        self.mapped.clone()
    }

    /// Gives the stateful operator a stable name (its state is checkpointed under it);
    /// the mapped stream is named `<name>.mapped`.
    pub fn name(self, name: &str) -> Self {
        let internal = self.internal.name(name);
        let mapped = self.mapped.name(&format!("{name}.mapped"));
        MapWithStateDStream {
            mapped,
            internal,
            want_snapshots: self.want_snapshots,
        }
    }
}

impl<K, S, U> Deref for MapWithStateDStream<K, S, U> {
    type Target = DStream<U>;
    fn deref(&self) -> &DStream<U> {
        &self.mapped
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Data + Hash + Eq + Codec,
    V: Data,
{
    /// Keeps a state per key: at every batch `f(new values, previous state)` gives the
    /// new state (`None` removes the key), for every key with state or new values. The
    /// result is the whole state after each batch. Checkpointed as a full snapshot per
    /// batch (the function may change any key, so there is no cheaper delta).
    pub fn update_state_by_key<S: Data + Codec>(
        &self,
        f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        self.update_state_by_key_with(f, Vec::new(), self.default_partitions())
    }

    /// [`update_state_by_key`](Self::update_state_by_key) with an initial state and a
    /// number of partitions.
    pub fn update_state_by_key_with<S: Data + Codec>(
        &self,
        f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
        initial: Vec<(K, S)>,
        partitions: usize,
    ) -> DStream<(K, S)> {
        let n = partitions.max(1);
        let state = Arc::new(Mutex::new(KeyedState::from_entries(initial, n, false)));
        let shared = state.clone();
        let p = self.parent();
        let out = self.child_with("update_state_by_key", self.slide_ms(), true, move |t| {
            let input = partition_by_key(p.get_or_compute(t)?, n);
            let mut st = lock(&shared);
            let n_now = st.partitions();
            let input = if n_now == n {
                input
            } else {
                partition_by_key(Batch::from_partitions(input), n_now)
            };
            let parts: Vec<Vec<(K, S)>> = st
                .maps
                .par_iter_mut()
                .zip(input.into_par_iter())
                .map(|(map, records)| {
                    let mut grouped: FxHashMap<K, Vec<V>> = FxHashMap::default();
                    for (k, v) in records {
                        grouped.entry(k).or_default().push(v);
                    }
                    let mut next: FxHashMap<K, S> = FxHashMap::default();
                    for (k, s) in map.drain() {
                        let values = grouped.remove(&k).unwrap_or_default();
                        if let Some(ns) = f(&values, Some(s)) {
                            next.insert(k, ns);
                        }
                    }
                    for (k, values) in grouped {
                        if let Some(ns) = f(&values, None) {
                            next.insert(k, ns);
                        }
                    }
                    let out = next.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
                    *map = next;
                    out
                })
                .collect();
            Ok(Batch::from_partitions(parts))
        });
        self.graph.add_state(Arc::new(KeyedStateful {
            name: node_name(&out.node.meta, ""),
            state,
        }));
        out
    }

    /// Spark's `mapWithState`: calls the spec's function for every record with its key's
    /// [`State`], emits what it returns, and times out idle keys if the spec says so.
    /// Checkpointed as deltas of the keys that changed.
    pub fn map_with_state<S: Data + Codec, U: Data>(
        &self,
        spec: StateSpec<K, V, S, U>,
    ) -> MapWithStateDStream<K, S, U> {
        let n = spec
            .partitions
            .unwrap_or_else(|| self.default_partitions())
            .max(1);
        let initial: Vec<(K, (S, i64))> = spec
            .initial
            .into_iter()
            .map(|(k, s)| (k, (s, i64::MIN)))
            .collect();
        let state = Arc::new(Mutex::new(KeyedState::from_entries(initial, n, true)));
        let shared = state.clone();
        let want_snapshots = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let want = want_snapshots.clone();
        let func = spec.func;
        let timeout = spec.timeout_ms;
        let stamped = std::sync::atomic::AtomicBool::new(false);
        let p = self.parent();
        let internal = self.child_with("map_with_state", self.slide_ms(), true, move |t| {
            let snapshots = want.load(std::sync::atomic::Ordering::Acquire);
            let mut guard = lock(&shared);
            let st = &mut *guard;
            let recording = st.recording();
            if !stamped.swap(true, std::sync::atomic::Ordering::AcqRel) {
                // Initial state counts as updated at the first batch (as in Spark).
                for map in &mut st.maps {
                    for (_, stamp) in map.values_mut().filter(|(_, s)| *s == i64::MIN) {
                        *stamp = t.0;
                    }
                }
            }
            let input = partition_by_key(p.get_or_compute(t)?, st.partitions());
            let results: Vec<Result<Vec<MwsItem<K, S, U>>, &'static str>> = st
                .maps
                .par_iter_mut()
                .zip(st.dirty.par_iter_mut())
                .zip(st.log.par_iter_mut())
                .zip(input.into_par_iter())
                .map(|(((map, dirty), log), records)| {
                    let mut out = Vec::with_capacity(records.len());
                    // Calls the function on one key's previous state; returns the state
                    // to keep (the key is updated in place, found once).
                    let mut step = |k: &K, v: V, prev: Option<(S, i64)>| {
                        let prev_time = prev.as_ref().map(|(_, pt)| *pt);
                        let mut st = State::new(prev.map(|(s, _)| s), false);
                        out.push(MwsItem::Mapped(func(k, Some(v), &mut st)));
                        if let Some(m) = st.misuse {
                            return Err(m);
                        }
                        let mut changed = st.updated || st.removed;
                        let next = st.value.map(|s| {
                            let stamp = if st.updated || timeout.is_some() {
                                t.0
                            } else {
                                prev_time.unwrap_or(t.0)
                            };
                            changed |= stamp != prev_time.unwrap_or(stamp);
                            (s, stamp)
                        });
                        if changed {
                            // A key already changed in this batch (stamped now) is marked
                            // instead, so that a delta holds at most two entries per key
                            // however many records it gets: its first change, logged, and
                            // its value at the end of the batch.
                            let again = prev_time == Some(t.0);
                            let how = match recording {
                                Recording::Log if again => Recording::Mark,
                                how => how,
                            };
                            KeyedState::<K, (S, i64)>::record(log, dirty, how, k, next.as_ref());
                        }
                        Ok(next)
                    };
                    for (k, v) in records {
                        match map.entry(k) {
                            Entry::Occupied(e) => {
                                let mut failed = None;
                                e.replace_entry_with(|k, prev| {
                                    step(k, v, Some(prev)).unwrap_or_else(|m| {
                                        failed = Some(m);
                                        None
                                    })
                                });
                                if let Some(m) = failed {
                                    return Err(m);
                                }
                            }
                            Entry::Vacant(e) => {
                                if let Some(next) = step(e.key(), v, None)? {
                                    e.insert(next);
                                }
                            }
                        }
                    }
                    if let Some(idle) = timeout {
                        let threshold = t.0 - idle;
                        let expired: Vec<K> = map
                            .iter()
                            .filter(|(_, (_, stamp))| *stamp < threshold)
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in expired {
                            if let Some((s, _)) = map.remove(&k) {
                                let mut st = State::new(Some(s), true);
                                out.push(MwsItem::Mapped(func(&k, None, &mut st)));
                                if let Some(m) = st.misuse {
                                    return Err(m);
                                }
                                KeyedState::<K, (S, i64)>::record(log, dirty, recording, &k, None);
                            }
                        }
                    }
                    if snapshots {
                        out.extend(
                            map.iter()
                                .map(|(k, (s, _))| MwsItem::Snapshot(k.clone(), s.clone())),
                        );
                    }
                    Ok(out)
                })
                .collect();
            let mut parts = Vec::with_capacity(results.len());
            for r in results {
                match r {
                    Ok(p) => parts.push(p),
                    Err(message) => {
                        return Err(Error::Operator {
                            operator: String::new(), // filled in with the node name
                            time: t,
                            message: message.into(),
                        });
                    }
                }
            }
            Ok(Batch::from_partitions(parts))
        });
        self.graph.add_state(Arc::new(KeyedStateful {
            name: node_name(&internal.node.meta, ""),
            state,
        }));
        let mapped = internal
            .flat_map(|item| match item {
                MwsItem::Mapped(u) => Some(u),
                MwsItem::Snapshot(..) => None,
            })
            .name_kind("map_with_state_mapped");
        MapWithStateDStream {
            mapped,
            internal,
            want_snapshots,
        }
    }
}
