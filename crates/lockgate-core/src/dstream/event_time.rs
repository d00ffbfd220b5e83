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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::hash::{FxHashMap, FxHashSet};
use rayon::prelude::*;

use crate::batch::{map_maybe_par, take_part, Batch, Data, SEQUENTIAL_BELOW};
use crate::checkpoint::state::{node_name, KeyedState, KeyedStateful, NameFn, PairStateful, Part};
use crate::clock::{duration_ms, Time};
use crate::codec::{Codec, CodecError};
use crate::dstream::keyed::transpose_by_bucket;
use crate::dstream::DStream;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeMeta};
use crate::metrics::EventTimeCounters;
use crate::types::{lock, partition_of, BatchContext, Stateful};

/// A window of event time: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    /// Inclusive start.
    pub start: Time,
    /// Exclusive end.
    pub end: Time,
}

impl Codec for TimeWindow {
    fn encode(&self, out: &mut Vec<u8>) {
        self.start.0.encode(out);
        self.end.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(TimeWindow {
            start: Time(i64::decode(input)?),
            end: Time(i64::decode(input)?),
        })
    }
}

/// One result of an event-time window aggregation: the key, the window and the value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K, V> {
    /// The key (`()` for an aggregation without `key_by`).
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The aggregate of the window's records so far (update mode) or in all (append).
    pub value: V,
}

/// When an event-time aggregation emits a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// Every batch emits the windows it changed, with their value so far.
    #[default]
    Update,
    /// A window is emitted once, when the watermark passes its end (or at the end of a
    /// bounded run).
    Append,
}

/// How records are grouped into event-time windows. Windows are aligned to the epoch:
/// a 30 s tumbling window starts at a multiple of 30 s since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size_ms`.
    Tumbling {
        /// Window length in ms.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (a record is in every window that
    /// covers it).
    Sliding {
        /// Window length in ms.
        size_ms: i64,
        /// Distance between window starts in ms.
        slide_ms: i64,
    },
    /// Sessions: a record opens `[t, t + gap)`; overlapping sessions of a key merge.
    Session {
        /// Inactivity that ends a session, in ms.
        gap_ms: i64,
    },
}

impl WindowSpec {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        WindowSpec::Tumbling {
            size_ms: duration_ms(size),
        }
    }

    /// Sliding windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowSpec::Sliding {
            size_ms: duration_ms(size),
            slide_ms: duration_ms(slide),
        }
    }

    /// Session windows closed by `gap` of inactivity.
    pub fn session(gap: Duration) -> Self {
        WindowSpec::Session {
            gap_ms: duration_ms(gap),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        let ok = match *self {
            WindowSpec::Tumbling { size_ms } => size_ms > 0,
            WindowSpec::Sliding { size_ms, slide_ms } => size_ms > 0 && slide_ms > 0,
            WindowSpec::Session { gap_ms } => gap_ms > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "event-time window {self:?}: lengths, slides and gaps must be at least 1 ms"
            ))
        }
    }

    fn is_session(&self) -> bool {
        matches!(self, WindowSpec::Session { .. })
    }

    /// Calls `f` with every window that holds event time `ts`.
    #[inline]
    fn assign(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            WindowSpec::Tumbling { size_ms } => {
                let start = ts - ts.rem_euclid(size_ms);
                f(start, start.saturating_add(size_ms));
            }
            WindowSpec::Sliding { size_ms, slide_ms } => {
                let mut start = ts - ts.rem_euclid(slide_ms);
                while start > ts.saturating_sub(size_ms) {
                    f(start, start.saturating_add(size_ms));
                    start -= slide_ms;
                }
            }
            WindowSpec::Session { gap_ms } => f(ts, ts.saturating_add(gap_ms)),
        }
    }

    /// All windows holding `ts` (for tests and for users checking their expectations).
    pub fn windows_of(&self, ts: Time) -> Vec<TimeWindow> {
        let mut out = Vec::new();
        self.assign(ts.0, |s, e| {
            out.push(TimeWindow {
                start: Time(s),
                end: Time(e),
            })
        });
        out.reverse();
        out
    }
}

type TimeFn<T> = Arc<dyn Fn(&T) -> Option<Time> + Send + Sync>;

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

/// The event-time part shared by every event-time operator: reads record times, drops
/// late and untimed records, keeps and advances the watermark, counts.
struct Watermark<T> {
    time_of: TimeFn<T>,
    delay_ms: Option<i64>,
    graph: Arc<Graph>,
    meta: Arc<NodeMeta>,
    /// `maps[0][0]`: the watermark (absent before the first record).
    state: Arc<Mutex<KeyedState<u8, i64>>>,
}

/// A batch's records after [`Watermark::ingest`].
struct Ingested<X> {
    /// Per state partition, what each input partition gave it (in input order).
    parts: Vec<Vec<X>>,
    /// The watermark before the batch (records behind it were dropped) and after it.
    before: i64,
    after: i64,
    counters: Arc<EventTimeCounters>,
    /// The batch was small: later stages run on this thread too.
    small: bool,
}

impl<T: Data> Watermark<T> {
    /// Reads the event time of every record of `input`, in parallel per input
    /// partition: records behind the watermark (as it stood before the batch) or
    /// without a time are dropped and counted; `add` puts each kept record, with its
    /// time, into one of `n` per-state-partition accumulators made by `init`, with a
    /// scratch value `C` per input partition that `finish` empties into them at its end.
    /// Then the watermark advances to the largest time seen (late records included:
    /// they show where event time is) minus the delay, if that is later.
    fn ingest<X: Send, C: Default>(
        &self,
        input: Batch<T>,
        n: usize,
        init: impl Fn() -> X + Sync,
        add: impl Fn(&mut [X], &mut C, i64, T) + Sync,
        finish: impl Fn(&mut [X], C) + Sync,
    ) -> Ingested<X> {
        let counters = self.graph.metrics.event_time(&self.meta.name());
        let before = lock(&self.state).get(0, &0).copied().unwrap_or(i64::MIN);
        let small = input.len() < SEQUENTIAL_BELOW;
        let per_input: Vec<(Vec<X>, Option<i64>)> =
            map_maybe_par(input.into_shared(), small, |part| {
                let mut buckets: Vec<X> = (0..n).map(|_| init()).collect();
                let mut scratch = C::default();
                let (mut late, mut untimed) = (0u64, 0u64);
                let mut max_ts: Option<i64> = None;
                for x in take_part(part) {
                    match (self.time_of)(&x) {
                        None => untimed += 1,
                        Some(Time(ts)) => {
                            max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
                            if ts < before {
                                late += 1;
                            } else {
                                add(&mut buckets, &mut scratch, ts, x);
                            }
                        }
                    }
                }
                finish(&mut buckets, scratch);
                counters.late_records.fetch_add(late, Ordering::Relaxed);
                counters
                    .records_without_time
                    .fetch_add(untimed, Ordering::Relaxed);
                (buckets, max_ts)
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
        // The node's closure needs the watermark, which needs the node's name: set once
        // the node exists, before the graph can run.
        let cell: Arc<OnceLock<Watermark<T>>> = Arc::new(OnceLock::new());
        let (p, c) = (stream.parent(), cell.clone());
        let out = stream.child_with(kind, stream.slide_ms(), true, move |cx| {
            let wm = c.get().ok_or_else(|| Error::Operator {
                operator: String::new(),
                time: cx.time,
                message: "event-time operator used before its watermark was set up".into(),
            })?;
            compute(p.get_or_compute(cx)?, wm, cx)
        });
        let meta = out.node.meta.clone();
        let wm = Watermark {
            time_of: self.time_of.clone(),
            delay_ms: self.delay_ms,
            graph: out.graph.clone(),
            meta: meta.clone(),
            state: Arc::new(Mutex::new(KeyedState::new(1, true))),
        };
        out.graph.add_state(Arc::new(PairStateful {
            first: state(node_name(&meta, "")),
            second: KeyedStateful {
                name: node_name(&meta, ".watermark"),
                state: wm.state.clone(),
            },
        }));
        if self.delay_ms.is_none() {
            out.graph.warn_unbounded_state(
                &meta,
                "event time without a watermark (use with_watermark): no window ever \
                 closes and no timer ever fires",
            );
        }
        let _ = cell.set(wm);
        out
    }
}

/// One window of one key in an aggregation's state.
#[derive(Clone, Debug)]
struct Win<A> {
    start: i64,
    end: i64,
    acc: A,
    /// Emitted at the end of a bounded run and not changed since (append mode).
    flushed: bool,
    /// Changed in the current batch (not persisted).
    changed: bool,
}

impl<A: Codec> Codec for Win<A> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.start.encode(out);
        self.end.encode(out);
        self.acc.encode(out);
        self.flushed.encode(out);
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(Win {
            start: Codec::decode(input)?,
            end: Codec::decode(input)?,
            acc: Codec::decode(input)?,
            flushed: Codec::decode(input)?,
            changed: false,
        })
    }
}

/// Folds `v` into an optional running reduction.
fn fold<V>(acc: &mut Option<V>, v: V, reduce: &dyn Fn(V, V) -> V) {
    *acc = Some(match acc.take() {
        Some(prev) => reduce(prev, v),
        None => v,
    });
}

/// The [`Stateful`] view of a window aggregation's state: a [`KeyedStateful`] whose
/// entries are counted as windows (what the state's size is), not keys.
struct WindowStateful<K, A>(KeyedStateful<K, Vec<Win<A>>>);

impl<K, A> Stateful for WindowStateful<K, A>
where
    K: Hash + Eq + Clone + Codec + Send + 'static,
    A: Codec + Send + 'static,
{
    fn name(&self) -> String {
        self.0.name()
    }
    fn type_desc(&self) -> String {
        self.0.type_desc()
    }
    fn partitions(&self) -> usize {
        self.0.partitions()
    }
    fn persist(&self, p: usize, full: bool) -> Option<Vec<u8>> {
        self.0.persist(p, full)
    }
    fn restore(&self, old: Vec<Vec<Vec<u8>>>) -> std::result::Result<(), CodecError> {
        self.0.restore(old)
    }
    fn sizes(&self) -> Vec<usize> {
        let st = lock(&self.0.state);
        (0..st.partitions())
            .map(|j| st.entries(j).map(|(_, wins)| wins.len()).sum())
            .collect()
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

    /// Number of state partitions (default: the context's parallelism).
    #[deprecated(
        note = "call `.shuffle_partitions(n)` on the stream before `with_watermark`: one way to set partition counts"
    )]
    pub fn num_partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
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
            |name| WindowStateful(KeyedStateful { name, state }),
            move |input, wm, cx| op.compute(input, wm, cx),
        )
    }
}

type AddFn<A, T> = Box<dyn Fn(&mut A, &T) + Send + Sync>;
type MergeFn<A> = Box<dyn Fn(&mut A, &A) + Send + Sync>;

/// The physical window aggregation.
struct WindowAgg<T, K, A> {
    spec: WindowSpec,
    mode: OutputMode,
    key_of: Arc<dyn Fn(&T) -> K + Send + Sync>,
    init: Box<dyn Fn() -> A + Send + Sync>,
    add: AddFn<A, T>,
    merge: MergeFn<A>,
    state: Arc<Mutex<KeyedState<K, Vec<Win<A>>>>>,
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
    fn compute(
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
        } = wm.ingest(
            input,
            n,
            FxHashMap::default,
            |buckets: &mut [Partials<K, A>], run: &mut Option<Run<K, A>>, ts, x| {
                let k = (self.key_of)(&x);
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
                    (self.add)(&mut r.acc, &x);
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

/// The state of one key in
/// [`flat_map_groups_with_state`](EventTimeStream::flat_map_groups_with_state): read,
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
        let n = self.stream.default_partitions().max(1);
        type Entry<S> = (S, Option<i64>);
        let state: Arc<Mutex<KeyedState<K, Entry<S>>>> =
            Arc::new(Mutex::new(KeyedState::new(n, true)));
        let shared = state.clone();
        let compute = move |input: Batch<(K, V)>, wm: &Watermark<(K, V)>, cx: &BatchContext| {
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
            let mut guard = lock(&shared);
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
                        |k: K,
                         values: Vec<V>,
                         timed_out: bool,
                         state: &mut Part<'_, K, Entry<S>>| {
                            state.upsert(k, |k, old| {
                                let mut gs = GroupState {
                                    value: old.map(|(s, _)| s),
                                    timeout: None,
                                    timed_out,
                                    watermark: after,
                                };
                                emitted.extend(f(k, values, &mut gs));
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
        };
        self.event_time_node(
            "flat_map_groups_with_state",
            |name| KeyedStateful { name, state },
            compute,
        )
    }
}

impl crate::show::Show for TimeWindow {
    /// `[start,end)` in epoch milliseconds.
    fn show(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        write!(out, "[{},{})", self.start.0, self.end.0)
    }
}

impl<K: crate::show::Show, V: crate::show::Show> crate::show::Show for Windowed<K, V> {
    /// `(key,[start,end),value)`, like a tuple.
    fn show(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        out.write_char('(')?;
        self.key.show(out)?;
        out.write_char(',')?;
        self.window.show(out)?;
        out.write_char(',')?;
        self.value.show(out)?;
        out.write_char(')')
    }
}
