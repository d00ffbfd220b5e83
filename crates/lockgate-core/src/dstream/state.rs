//! State across batches: `update_state_by_key` and `map_with_state` (with a per-key
//! [`State`], idle timeouts and state snapshots).
//!
//! State is hash-partitioned by key (the same partitioner as keyed operations) and lives
//! in the operator; every batch updates it in parallel, one task per partition.

use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayon::prelude::*;

use crate::hash::FxHashMap;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{node_name, KeyedState, KeyedStateful, Recording};
use crate::clock::{duration_ms, Time};
use crate::codec::Codec;
use crate::dstream::keyed::{partition_by_key, partition_with, HashPartitioner, Partitioner};
use crate::dstream::DStream;
use crate::error::Error;
use crate::types::lock;

/// The state of one key as seen by a [`map_with_state`](DStream::map_with_state)
/// function: read it, update it, remove it, and know whether the key is timing out.
///
/// As in Spark, misuse fails the batch with an error naming the operator and the key:
/// `update` or `remove` after `remove`, and `update` or `remove` of a key that is timing
/// out (its state is removed after the call anyway).
///
/// For unit tests of a mapping function, make one with [`State::new`] or
/// [`State::timing_out`] and look at it afterwards:
///
/// ```
/// use lockgate_core::State;
///
/// fn count(word: &str, one: Option<i64>, state: &mut State<i64>) -> Option<(String, i64)> {
///     let n = state.get().copied().unwrap_or(0) + one?;
///     state.update(n);
///     Some((word.to_string(), n))
/// }
///
/// let mut state = State::new(Some(41));
/// assert_eq!(count("a", Some(1), &mut state), Some(("a".to_string(), 42)));
/// assert!(state.is_updated() && !state.is_removed());
/// assert_eq!(state.get(), Some(&42));
/// assert_eq!(state.misuse(), None);
///
/// let mut ending = State::timing_out(Some(42));
/// assert_eq!(count("a", None, &mut ending), None);
/// assert!(ending.is_timing_out());
/// ```
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    updated: bool,
    removed: bool,
    timing_out: bool,
    misuse: Option<&'static str>,
}

impl<S> State<S> {
    /// The state of a key with `value` (`None`: the key has no state yet), as the
    /// function sees it for a key with a record.
    pub fn new(value: Option<S>) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out: false,
            misuse: None,
        }
    }

    /// The state of a key that is timing out, as the function sees it for its last call.
    pub fn timing_out(value: Option<S>) -> Self {
        State {
            timing_out: true,
            ..State::new(value)
        }
    }

    /// True when the key has state (and it was not removed).
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state. Not allowed after [`remove`](Self::remove) or while the key
    /// is timing out: the call is ignored and the batch fails with an error naming the
    /// operator and the key.
    pub fn update(&mut self, value: S) {
        if self.removed {
            self.misuse_once("State::update() was called after State::remove()");
        } else if self.timing_out {
            self.misuse_once("State::update() was called for a key that is timing out");
        } else {
            self.value = Some(value);
            self.updated = true;
        }
    }

    /// Removes the key's state. Not allowed twice or while the key is timing out (its
    /// state is removed after that call anyway): the batch fails with an error naming
    /// the operator and the key.
    pub fn remove(&mut self) {
        if self.removed {
            self.misuse_once("State::remove() was called twice");
        } else if self.timing_out {
            self.misuse_once(
                "State::remove() was called for a key that is timing out (its state is \
                 removed after this call anyway)",
            );
        } else {
            self.value = None;
            self.removed = true;
            self.updated = false;
        }
    }

    /// True when the function is called because the key has been idle longer than the
    /// timeout; the state is removed after this call.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }

    /// True when the state was updated by this call (and not removed since).
    pub fn is_updated(&self) -> bool {
        self.updated
    }

    /// True when the state was removed by this call.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The first misuse of this state (see the type's docs), if any: what the batch
    /// fails with.
    pub fn misuse(&self) -> Option<&'static str> {
        self.misuse
    }

    fn misuse_once(&mut self, what: &'static str) {
        self.misuse.get_or_insert(what);
    }
}

type MapFn<K, V, S, U> = Arc<dyn Fn(Time, &K, Option<V>, &mut State<S>) -> Option<U> + Send + Sync>;

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
        Self::function_with_time(move |_, k, v, state| Some(f(k, v, state)))
    }

    /// Spark's `StateSpec.function((Time, K, Option[V], State[S]) => Option[U])`: the
    /// function is also given the batch time, and may emit nothing (`None`).
    ///
    /// ```
    /// use lockgate_core::testing::run_streams;
    /// use lockgate_core::{State, StateSpec, Time};
    ///
    /// // Emit a key once, the first time it is seen, with the batch time.
    /// let input = vec![vec![('a', ()), ('a', ())], vec![('a', ()), ('b', ())]];
    /// let out = run_streams(input, 2, |s| {
    ///     s.map_with_state(StateSpec::function_with_time(
    ///         |t: Time, k: &char, _v: Option<()>, seen: &mut State<bool>| {
    ///             if seen.exists() {
    ///                 return None;
    ///             }
    ///             seen.update(true);
    ///             Some((*k, t.millis()))
    ///         },
    ///     ))
    ///     .stream()
    /// }, 2).unwrap();
    /// assert_eq!(out, vec![vec![('a', 1000)], vec![('b', 2000)]]);
    /// ```
    pub fn function_with_time(
        f: impl Fn(Time, &K, Option<V>, &mut State<S>) -> Option<U> + Send + Sync + 'static,
    ) -> Self {
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
    /// (Spark checks timeouts on checkpoint batches only; Lockgate at every batch, so a
    /// key times out in the first batch at least `idle` after its last record.)
    pub fn timeout(mut self, idle: Duration) -> Self {
        self.timeout_ms = Some(duration_ms(idle));
        self
    }

    /// Number of state partitions (default: the context's parallelism).
    #[deprecated(
        note = "use `.shuffle_partitions(n).map_with_state(..)`: one way to set partition counts"
    )]
    pub fn num_partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
        self
    }
}

/// The updates of one partition handed to an [`UpdateStateSpec`]'s function: every key
/// with state or new values, with its new values (in arrival order) and its state.
pub type StateUpdates<K, V, S> = std::vec::IntoIter<(K, Vec<V>, Option<S>)>;

type UpdateFn<K, V, S> = Arc<dyn Fn(Time, StateUpdates<K, V, S>) -> Vec<(K, S)> + Send + Sync>;

/// The specification of an
/// [`update_state_by_key_with_spec`](DStream::update_state_by_key_with_spec) operation:
/// the function in one of Spark's forms, the initial state and the partitioner.
pub struct UpdateStateSpec<K, V, S> {
    func: UpdateFn<K, V, S>,
    /// The function returns only keys it was given (the per-key forms): they are in
    /// their partitions already.
    keys_stay: bool,
    initial: Vec<(K, S)>,
    partitions: Option<usize>,
    partitioner: Option<Arc<dyn Partitioner<K>>>,
}

impl<K: Data, V: Data, S: Data> UpdateStateSpec<K, V, S> {
    /// Per key: `f(new values, previous state)` gives the new state (`None` removes the
    /// key). Spark's `(Seq[V], Option[S]) => Option[S]`.
    pub fn function(f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static) -> Self {
        Self::function_with_time(move |_, _, values, state| f(values, state))
    }

    /// Per key, given the batch time and the key: Spark's
    /// `(Time, K, Seq[V], Option[S]) => Option[S]`.
    pub fn function_with_time(
        f: impl Fn(Time, &K, &[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> Self {
        UpdateStateSpec {
            keys_stay: true,
            ..Self::partition_function(move |t, updates| {
                updates
                    .filter_map(|(k, values, state)| f(t, &k, &values, state).map(|s| (k, s)))
                    .collect::<Vec<_>>()
            })
        }
    }

    /// Over a whole partition: given the batch time and every key of the partition with
    /// its new values and state, returns the state to keep (keys not returned are
    /// removed). Spark's `(Time, Iterator[(K, Seq[V], Option[S])]) => Iterator[(K, S)]`.
    ///
    /// ```
    /// use lockgate_core::testing::run_streams;
    /// use lockgate_core::{HashPartitioner, UpdateStateSpec};
    ///
    /// // Keep the last value of each key, in 3 partitions.
    /// let input = vec![vec![(1u8, 10), (2, 20)], vec![(1, 11)]];
    /// let out = run_streams(input, 2, |s| {
    ///     s.update_state_by_key_with_spec(
    ///         UpdateStateSpec::partition_function(|_time, updates| {
    ///             updates.filter_map(|(k, values, last): (u8, Vec<i32>, Option<i32>)| {
    ///                 values.last().copied().or(last).map(|v| (k, v))
    ///             })
    ///         })
    ///         .partitioner(HashPartitioner(3)),
    ///     )
    /// }, 2).unwrap();
    /// let mut last = out[1].clone();
    /// last.sort();
    /// assert_eq!(last, vec![(1, 11), (2, 20)]);
    /// ```
    pub fn partition_function<I>(
        f: impl Fn(Time, StateUpdates<K, V, S>) -> I + Send + Sync + 'static,
    ) -> Self
    where
        I: IntoIterator<Item = (K, S)>,
    {
        UpdateStateSpec {
            func: Arc::new(move |t, updates| f(t, updates).into_iter().collect()),
            keys_stay: false,
            initial: Vec::new(),
            partitions: None,
            partitioner: None,
        }
    }

    /// State the keys start with.
    pub fn initial_state(mut self, initial: Vec<(K, S)>) -> Self {
        self.initial = initial;
        self
    }

    /// Number of state partitions with the default hash partitioner (default: the
    /// context's parallelism).
    #[deprecated(
        note = "use `.shuffle_partitions(n).update_state_by_key_with_spec(..)`: one way to set partition counts"
    )]
    pub fn num_partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
        self
    }

    /// Spreads keys (input and state) with `partitioner` instead of the default hash.
    pub fn partitioner(mut self, partitioner: impl Partitioner<K>) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }
}

/// The entries of `maps` in `n` maps, each where `place` puts its key.
fn rebucket<K: Hash + Eq, S>(
    maps: Vec<FxHashMap<K, S>>,
    n: usize,
    place: &impl Fn(&K) -> usize,
) -> Vec<FxHashMap<K, S>> {
    let mut out: Vec<FxHashMap<K, S>> = (0..n).map(|_| FxHashMap::default()).collect();
    for map in maps {
        for (k, s) in map {
            out[place(&k)].insert(k, s);
        }
    }
    out
}

/// The error message of a misused [`State`]: what was done, and to which key.
fn misuse<K: std::fmt::Debug>(what: &str, key: &K) -> String {
    format!("{what} (key {key:?}); see the rules in the docs of `State`")
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
    ///
    /// ```
    /// use lockgate_core::testing::run_streams;
    ///
    /// let kv = |k: &str, v: i32| (k.to_string(), v);
    /// let input = vec![vec![kv("a", 1), kv("b", 2)], vec![kv("a", 3)], vec![]];
    /// let out = run_streams(input, 2, |s| {
    ///     s.update_state_by_key(|new: &[i32], total: Option<i32>| {
    ///         Some(total.unwrap_or(0) + new.iter().sum::<i32>())
    ///     })
    /// }, 3).unwrap();
    /// let sorted = |mut v: Vec<(String, i32)>| { v.sort(); v };
    /// assert_eq!(sorted(out[1].clone()), vec![kv("a", 4), kv("b", 2)]);
    /// assert_eq!(sorted(out[2].clone()), vec![kv("a", 4), kv("b", 2)]);
    /// ```
    pub fn update_state_by_key<S: Data + Codec>(
        &self,
        f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        self.update_state_by_key_with_spec(UpdateStateSpec::function(f))
    }

    /// [`update_state_by_key`](Self::update_state_by_key) with an initial state and a
    /// number of partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).update_state_by_key_with_spec(UpdateStateSpec::function(f).initial_state(initial))`"
    )]
    pub fn update_state_by_key_with<S: Data + Codec>(
        &self,
        f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
        initial: Vec<(K, S)>,
        partitions: usize,
    ) -> DStream<(K, S)> {
        self.shuffle_partitions(partitions)
            .update_state_by_key_with_spec(UpdateStateSpec::function(f).initial_state(initial))
    }

    /// Spark's `updateStateByKey` in all its forms: the spec gives the function (per key,
    /// per key with the batch time and the key, or over a whole partition), the initial
    /// state and the partitioner.
    ///
    /// ```
    /// use lockgate_core::testing::run_streams;
    /// use lockgate_core::{Time, UpdateStateSpec};
    ///
    /// // Per key, with the batch time: remember when each key was last seen.
    /// let input = vec![vec![("a".to_string(), 1)], vec![("b".into(), 1)], vec![("a".into(), 1)]];
    /// let out = run_streams(input, 2, |s| {
    ///     s.update_state_by_key_with_spec(UpdateStateSpec::function_with_time(
    ///         |t: Time, _key: &String, new: &[i32], seen: Option<i64>| {
    ///             if new.is_empty() { seen } else { Some(t.millis()) }
    ///         },
    ///     ))
    /// }, 3).unwrap();
    /// let mut last = out[2].clone();
    /// last.sort();
    /// assert_eq!(last, vec![("a".to_string(), 3000), ("b".to_string(), 2000)]);
    /// ```
    pub fn update_state_by_key_with_spec<S: Data + Codec>(
        &self,
        spec: UpdateStateSpec<K, V, S>,
    ) -> DStream<(K, S)> {
        let partitioner: Arc<dyn Partitioner<K>> = match spec.partitioner {
            Some(p) => p,
            None => Arc::new(HashPartitioner(
                spec.partitions.unwrap_or_else(|| self.default_partitions()),
            )),
        };
        let n = partitioner.num_partitions().max(1);
        let by = partitioner.clone();
        let place = move |k: &K| by.partition(k) % n;
        let initial = KeyedState::placed(spec.initial, n, false, &place);
        let state = Arc::new(Mutex::new(initial));
        let shared = state.clone();
        let (func, keys_stay) = (spec.func, spec.keys_stay);
        // State restored from a checkpoint written with another partition count is
        // spread by the default hash: put it where this partitioner wants it, once.
        let placed = std::sync::atomic::AtomicBool::new(false);
        let p = self.parent();
        let out = self.child_with("update_state_by_key", self.slide_ms(), true, move |cx| {
            let t = cx.time;
            let input = partition_with(p.get_or_compute(cx)?, &*partitioner);
            let mut st = lock(&shared);
            // Full snapshots only: the maps are rebuilt wholesale every batch.
            let maps = st.untracked_maps_mut();
            if !placed.swap(true, std::sync::atomic::Ordering::AcqRel) {
                *maps = rebucket(std::mem::take(maps), n, &place);
            }
            let parts: Vec<Vec<(K, S)>> = maps
                .par_iter_mut()
                .zip(input.into_par_iter())
                .map(|(map, records)| {
                    let mut grouped: FxHashMap<K, Vec<V>> = FxHashMap::default();
                    for (k, v) in records {
                        grouped.entry(k).or_default().push(v);
                    }
                    let mut updates = Vec::with_capacity(map.len() + grouped.len());
                    for (k, s) in map.drain() {
                        let values = grouped.remove(&k).unwrap_or_default();
                        updates.push((k, values, Some(s)));
                    }
                    updates.extend(grouped.into_iter().map(|(k, values)| (k, values, None)));
                    func(t, updates.into_iter())
                })
                .collect();
            // The function may return any keys: each goes to its partition.
            let misplaced = !keys_stay
                && parts
                    .iter()
                    .enumerate()
                    .any(|(j, part)| part.iter().any(|(k, _)| place(k) != j));
            let parts = if misplaced {
                let all: Vec<(K, S)> = parts.into_iter().flatten().collect();
                let mut fixed: Vec<Vec<(K, S)>> = (0..n).map(|_| Vec::new()).collect();
                for (k, s) in all {
                    fixed[place(&k)].push((k, s));
                }
                fixed
            } else {
                parts
            };
            for (map, part) in maps.iter_mut().zip(&parts) {
                map.extend(part.iter().cloned());
            }
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
    ) -> MapWithStateDStream<K, S, U>
    where
        K: std::fmt::Debug,
    {
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
        let internal = self.child_with("map_with_state", self.slide_ms(), true, move |cx| {
            let t = cx.time;
            let snapshots = want.load(std::sync::atomic::Ordering::Acquire);
            let mut guard = lock(&shared);
            let st = &mut *guard;
            let recording = st.recording();
            if !stamped.swap(true, std::sync::atomic::Ordering::AcqRel) {
                // Initial state counts as updated at the first batch (as in Spark).
                for mut part in st.parts() {
                    part.retain(|_, (_, stamp), changed| {
                        if *stamp == i64::MIN {
                            *stamp = t.0;
                            *changed = true;
                        }
                        true
                    });
                }
            }
            let input = partition_by_key(p.get_or_compute(cx)?, st.partitions());
            let results: Vec<Result<Vec<MwsItem<K, S, U>>, String>> = st
                .parts()
                .into_par_iter()
                .zip(input.into_par_iter())
                .map(|(mut state, records)| {
                    let mut out = Vec::with_capacity(records.len());
                    // Calls the function on one key's previous state; returns the state
                    // to keep and how to record the change (the key is updated in place,
                    // found once).
                    let mut step = |k: &K, v: V, prev: Option<(S, i64)>| {
                        let prev_time = prev.as_ref().map(|(_, pt)| *pt);
                        let mut st = State::new(prev.map(|(s, _)| s));
                        out.extend(func(t, k, Some(v), &mut st).map(MwsItem::Mapped));
                        if let Some(m) = st.misuse {
                            return Err(misuse(m, k));
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
                        // A key already changed in this batch (stamped now) is marked
                        // instead, so that a delta holds at most two entries per key
                        // however many records it gets: its first change, logged, and
                        // its value at the end of the batch.
                        let again = prev_time == Some(t.0);
                        let how = match recording {
                            Recording::Log if again => Recording::Mark,
                            how => how,
                        };
                        Ok((next, changed.then_some(how)))
                    };
                    for (k, v) in records {
                        state.upsert_recorded(k, |k, prev| step(k, v, prev))?;
                    }
                    if let Some(idle) = timeout {
                        let threshold = t.0 - idle;
                        let expired: Vec<K> = state
                            .iter()
                            .filter(|(_, (_, stamp))| *stamp < threshold)
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in expired {
                            if let Some((s, _)) = state.remove_recorded(&k) {
                                let mut st = State::timing_out(Some(s));
                                out.extend(func(t, &k, None, &mut st).map(MwsItem::Mapped));
                                if let Some(m) = st.misuse {
                                    return Err(misuse(m, &k));
                                }
                            }
                        }
                    }
                    if snapshots {
                        out.extend(
                            state
                                .iter()
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
                            message,
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
