//! State across batches: `update_state_by_key` and `map_with_state` (with a per-key
//! [`State`], idle timeouts and state snapshots).
//!
//! State is hash-partitioned by key (the same partitioner as keyed operations) and lives
//! in the operator; every batch updates it in parallel, one task per partition.

use std::hash::Hash;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::batch::Data;
use crate::clock::{duration_ms, Time};
use crate::codec::Codec;
use crate::dstream::keyed::{HashPartitioner, Partitioner};
use crate::dstream::DStream;
pub use crate::operator::map_with_state::State;
use crate::operator::map_with_state::{MapFn, MapWithStateOp, MwsItem};
pub use crate::operator::update_state::StateUpdates;
use crate::operator::update_state::{UpdateFn, UpdateStateOp};

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
}

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

    /// Spreads keys (input and state) with `partitioner` instead of the default hash.
    pub fn partitioner(mut self, partitioner: impl Partitioner<K>) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }
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
        let op = UpdateStateOp::new(
            self.parent(),
            partitioner,
            spec.func,
            spec.keys_stay,
            spec.initial,
        );
        self.child_op("update_state_by_key", self.slide_ms(), true, op)
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
        let want_snapshots = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let op = MapWithStateOp::new(
            self.parent(),
            n,
            spec.func,
            spec.timeout_ms,
            spec.initial,
            want_snapshots.clone(),
        );
        let internal = self.child_op("map_with_state", self.slide_ms(), true, op);
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
