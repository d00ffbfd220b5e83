//! Event time: windows over the time written in the records, not the time they arrive.
//!
//! [`DStream::with_watermark`] names how to read a record's event time and how late
//! records may arrive. The watermark of an operator is the largest event time it has
//! seen minus that delay; it only moves forward. From there:
//!
//! - [`EventTimeStream::window`] groups records into event-time windows — tumbling,
//!   sliding (length and slide free, not tied to the batch interval, aligned to the
//!   epoch) or session (a gap of inactivity closes a session) — optionally per key
//!   ([`WindowedStream::key_by`]), and aggregates each window: `count`, `sum`, `min`,
//!   `max`, `reduce`, `aggregate`.
//! - [`EventTimeStream::flat_map_groups_with_state`] is Spark's
//!   `flatMapGroupsWithState` with event-time timeouts: arbitrary per-key state whose
//!   timers fire when the watermark passes them.
//!
//! Output modes ([`OutputMode`]): *update* emits, at every batch, each window the batch
//! changed with its value so far (the final value of a window is its row in the highest
//! batch); *append* emits each window once, when the watermark passes its end. At the end
//! of a bounded run (the last batch of [`Trigger::AvailableNow`](crate::Trigger)) every
//! open window is emitted in append mode too. Such a window stays in state until the
//! watermark passes it, so if a later run on the same checkpoint adds records to it, it
//! is emitted again, with its new total, when it closes.
//!
//! A record whose event time is behind the watermark (as it stood before its batch) is
//! late: it is dropped and counted (`late_records` of the operator's
//! [`EventTimeCounters`](crate::metrics::EventTimeCounters)). Records whose event time
//! cannot be read (the function returns `None`) are dropped and counted too. Windows the
//! watermark has passed are evicted, so state stays bounded. Without a watermark
//! ([`DStream::with_event_time`]) nothing is late and nothing is evicted: allowed, but
//! warned about at start, naming the operator.
//!
//! Window state is checkpointed like all state: under the operator's stable name, as
//! deltas of the keys that changed, with the watermark alongside.

use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{node_name, KeyedState, KeyedStateful, NameFn, PairStateful};
use crate::clock::{duration_ms, Time};
use crate::codec::Codec;
use crate::dstream::DStream;
use crate::error::Result;
pub use crate::operator::event_window::{OutputMode, TimeWindow, WindowSpec, Windowed};
pub use crate::operator::group_state::GroupState;
use crate::operator::group_state::GroupStateOp;
use crate::operator::watermark::{EventTimeOp, TimeFn, Watermark};
use crate::operator::window_agg::{fold, WindowAgg};
use crate::traits::Stateful;
use crate::types::BatchContext;

/// A stream whose records carry an event time, with a watermark (see the module docs).
pub struct EventTimeStream<T> {
    stream: DStream<T>,
    time_of: TimeFn<T>,
    delay_ms: Option<i64>,
}

impl<T> Clone for EventTimeStream<T> {
    fn clone(&self) -> Self {
        EventTimeStream {
            stream: self.stream.clone(),
            time_of: self.time_of.clone(),
            delay_ms: self.delay_ms,
        }
    }
}

impl<T: Data> DStream<T> {
    /// Reads each record's event time with `event_time` (`None`: the record has no
    /// readable time; it is dropped and counted) and tracks a watermark `max_delay`
    /// behind the largest event time seen: records further behind are late.
    pub fn with_watermark(
        &self,
        event_time: impl Fn(&T) -> Option<Time> + Send + Sync + 'static,
        max_delay: Duration,
    ) -> EventTimeStream<T> {
        EventTimeStream {
            stream: self.clone(),
            time_of: Arc::new(event_time),
            delay_ms: Some(duration_ms(max_delay)),
        }
    }

    /// Event time without a watermark: no record is late and no window ever closes, so
    /// state grows forever and append mode emits only at the end of a bounded run.
    /// Allowed, and warned about at start.
    pub fn with_event_time(
        &self,
        event_time: impl Fn(&T) -> Option<Time> + Send + Sync + 'static,
    ) -> EventTimeStream<T> {
        EventTimeStream {
            stream: self.clone(),
            time_of: Arc::new(event_time),
            delay_ms: None,
        }
    }
}

impl<T: Data> EventTimeStream<T> {
    /// Adds an event-time operator: `compute` turns each input batch into the output
    /// with the operator's [`Watermark`]; `state` (given the node's stable name) is
    /// checkpointed with the watermark riding along.
    fn event_time_node<U: Data, S: Stateful + 'static>(
        &self,
        kind: &'static str,
        state: impl FnOnce(NameFn) -> S,
        compute: impl Fn(Batch<T>, &Watermark<T>, &BatchContext) -> Result<Batch<U>>
            + Send
            + Sync
            + 'static,
    ) -> DStream<U> {
        let stream = &self.stream;
        let graph = stream.graph.clone();
        // The node's identity first: the watermark counts under the node's name.
        let meta = graph.new_meta(kind, stream.slide_ms(), true);
        let watermark = Watermark {
            time_of: self.time_of.clone(),
            delay_ms: self.delay_ms,
            graph: graph.clone(),
            meta: meta.clone(),
            state: Arc::new(Mutex::new(KeyedState::new(1, true))),
        };
        let state = Arc::new(PairStateful {
            first: state(node_name(&meta, "")),
            second: KeyedStateful::new(node_name(&meta, ".watermark"), watermark.state.clone()),
        });
        if self.delay_ms.is_none() {
            graph.warn_unbounded_state(
                &meta,
                "event time without a watermark (use with_watermark): no window ever \
                 closes and no timer ever fires",
            );
        }
        let op = EventTimeOp {
            parent: stream.parent(),
            watermark,
            compute,
            state,
        };
        stream.node.meta.add_consumer();
        DStream {
            node: graph.add_node_at(meta, Box::new(op)),
            graph,
            shuffle_partitions: None,
        }
    }
}

/// Event-time windows of a stream, optionally keyed; aggregate them to get results.
pub struct WindowedStream<T, K> {
    events: EventTimeStream<T>,
    spec: WindowSpec,
    key_of: Arc<dyn Fn(&T) -> K + Send + Sync>,
    mode: OutputMode,
    partitions: Option<usize>,
}

impl<T: Data> EventTimeStream<T> {
    /// Groups the records into event-time windows (all records together; see
    /// [`WindowedStream::key_by`] for per-key windows).
    pub fn window(&self, spec: WindowSpec) -> WindowedStream<T, ()> {
        WindowedStream {
            events: self.clone(),
            spec,
            key_of: Arc::new(|_| ()),
            mode: OutputMode::Update,
            partitions: None,
        }
    }

    /// The underlying stream.
    pub fn stream(&self) -> &DStream<T> {
        &self.stream
    }
}

impl<T: Data, K: Data + Hash + Eq + Codec> WindowedStream<T, K> {
    /// Windows per key: `f` gives each record's key.
    pub fn key_by<K2: Data + Hash + Eq + Codec>(
        self,
        f: impl Fn(&T) -> K2 + Send + Sync + 'static,
    ) -> WindowedStream<T, K2> {
        WindowedStream {
            events: self.events,
            spec: self.spec,
            key_of: Arc::new(f),
            mode: self.mode,
            partitions: self.partitions,
        }
    }

    /// When windows are emitted (default: [`OutputMode::Update`]).
    pub fn output_mode(mut self, mode: OutputMode) -> Self {
        self.mode = mode;
        self
    }

    /// The number of records per key and window.
    pub fn count(&self) -> DStream<Windowed<K, i64>> {
        self.aggregate_named(
            "event_window_count",
            || 0i64,
            |a, _| *a += 1,
            |a, b| *a += b,
        )
    }

    /// The sum of `f` over the records of each key and window.
    pub fn sum<V>(&self, f: impl Fn(&T) -> V + Send + Sync + 'static) -> DStream<Windowed<K, V>>
    where
        V: Data + Codec + Default + std::ops::AddAssign,
    {
        self.aggregate_named(
            "event_window_sum",
            V::default,
            move |a, x| *a += f(x),
            |a, b| *a += b.clone(),
        )
    }

    /// The smallest `f` of each key and window.
    pub fn min<V>(&self, f: impl Fn(&T) -> V + Send + Sync + 'static) -> DStream<Windowed<K, V>>
    where
        V: Data + Codec + Ord,
    {
        self.reduce_named("event_window_min", f, |a, b| if b < a { b } else { a })
    }

    /// The largest `f` of each key and window.
    pub fn max<V>(&self, f: impl Fn(&T) -> V + Send + Sync + 'static) -> DStream<Windowed<K, V>>
    where
        V: Data + Codec + Ord,
    {
        self.reduce_named("event_window_max", f, |a, b| if b > a { b } else { a })
    }

    /// `f` of each record, combined with `reduce` (associative and commutative) per key
    /// and window.
    pub fn reduce<V: Data + Codec>(
        &self,
        f: impl Fn(&T) -> V + Send + Sync + 'static,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> DStream<Windowed<K, V>> {
        self.reduce_named("event_window_reduce", f, reduce)
    }

    fn reduce_named<V: Data + Codec>(
        &self,
        kind: &'static str,
        f: impl Fn(&T) -> V + Send + Sync + 'static,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> DStream<Windowed<K, V>> {
        let reduce = Arc::new(reduce);
        let r2 = reduce.clone();
        self.aggregate_named(
            kind,
            || None,
            move |a, x| fold(a, f(x), reduce.as_ref()),
            move |a, b| {
                if let Some(v) = b {
                    fold(a, v.clone(), r2.as_ref())
                }
            },
        )
        .flat_map(|w: Windowed<K, Option<V>>| {
            w.value.map(|value| Windowed {
                key: w.key,
                window: w.window,
                value,
            })
        })
        .name_kind(kind)
    }

    /// The general aggregation: each key and window starts from `init()`, every record
    /// is folded in with `add`, and partial aggregates (of parallel tasks, of merging
    /// sessions) are combined with `merge`.
    pub fn aggregate<A: Data + Codec>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&mut A, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, &A) + Send + Sync + 'static,
    ) -> DStream<Windowed<K, A>> {
        self.aggregate_named("event_window_aggregate", init, add, merge)
    }

    fn aggregate_named<A: Data + Codec>(
        &self,
        kind: &'static str,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&mut A, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, &A) + Send + Sync + 'static,
    ) -> DStream<Windowed<K, A>> {
        let stream = &self.events.stream;
        if let Err(reason) = self.spec.check() {
            stream.graph_error(kind, reason);
        }
        let n = self
            .partitions
            .unwrap_or_else(|| stream.default_partitions())
            .max(1);
        let op = WindowAgg {
            spec: self.spec,
            mode: self.mode,
            key_of: self.key_of.clone(),
            init: Box::new(init),
            add: Box::new(add),
            merge: Box::new(merge),
            state: Arc::new(Mutex::new(KeyedState::new(n, true))),
        };
        let state = op.state.clone();
        self.events.event_time_node(
            kind,
            |name| KeyedStateful::new(name, state).counting(|wins: &Vec<_>| wins.len()),
            move |input, wm, cx| op.compute(input, wm, cx),
        )
    }
}

impl<K, V> EventTimeStream<(K, V)>
where
    K: Data + Hash + Eq + Codec,
    V: Data,
{
    /// Spark's `flatMapGroupsWithState` with event-time timeouts: every batch, `f` is
    /// called for each key with its new (not late) values in event-time order and its
    /// [`GroupState`]; later, once the watermark passes a timer the function set, once
    /// more with no values. Whatever `f` returns is emitted. State is checkpointed as
    /// deltas of the keys that changed.
    pub fn flat_map_groups_with_state<S, U, I>(
        &self,
        f: impl Fn(&K, Vec<V>, &mut GroupState<S>) -> I + Send + Sync + 'static,
    ) -> DStream<U>
    where
        S: Data + Codec,
        U: Data,
        I: IntoIterator<Item = U>,
    {
        let op = GroupStateOp::new(self.stream.default_partitions(), f);
        let state = op.state.clone();
        self.event_time_node(
            "flat_map_groups_with_state",
            |name| KeyedStateful::new(name, state),
            move |input, wm, cx| op.compute(input, wm, cx),
        )
    }
}
