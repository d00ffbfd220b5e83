//! The user API: [`DStream<T>`], a stream of batches, and its narrow (per-partition)
//! transformations. Keyed operations live in `keyed`, windows in `window`, state in
//! `state`, outputs in `output`.

use std::hash::Hash;
use std::sync::Arc;

use rayon::prelude::*;

use crate::batch::{split_even, take_part, Batch, Data};
use crate::clock::Time;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeCell};
use crate::traits::Operator;
use crate::types::BatchContext;

pub mod event_time;
pub mod keyed;
pub mod output;
pub mod state;
pub mod window;

/// An operator given as a closure over the batch time.
pub(crate) struct FnOp<F>(pub F);

impl<T, F> Operator<T> for FnOp<F>
where
    F: Fn(&BatchContext) -> Result<Batch<T>> + Send + Sync,
{
    fn compute(&self, cx: &BatchContext) -> Result<Batch<T>> {
        (self.0)(cx)
    }
}

/// A discretized stream: a sequence of [`Batch`]es, one per batch interval (or per
/// slide, after a window). Built from a [`StreamingContext`](crate::StreamingContext)
/// source and transformed lazily; nothing runs until an output operation is registered
/// and the context is started.
pub struct DStream<T> {
    pub(crate) node: Arc<NodeCell<T>>,
    pub(crate) graph: Arc<Graph>,
    /// How many partitions keyed operations on this handle shuffle into
    /// ([`shuffle_partitions`](DStream::shuffle_partitions); default: the context's
    /// parallelism).
    pub(crate) shuffle_partitions: Option<usize>,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        DStream {
            node: self.node.clone(),
            graph: self.graph.clone(),
            shuffle_partitions: self.shuffle_partitions,
        }
    }
}

impl<T: Data> DStream<T> {
    /// Adds a node fed by this stream, with this stream's slide.
    pub(crate) fn child<U: Data>(
        &self,
        kind: &'static str,
        op: impl Fn(&BatchContext) -> Result<Batch<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.child_with(kind, self.slide_ms(), false, op)
    }

    /// Adds a node fed by this stream with an explicit slide and statefulness.
    pub(crate) fn child_with<U: Data>(
        &self,
        kind: &'static str,
        slide_ms: i64,
        stateful: bool,
        op: impl Fn(&BatchContext) -> Result<Batch<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.child_op(kind, slide_ms, stateful, FnOp(op))
    }

    /// Adds a node fed by this stream, computed by an operator struct.
    pub(crate) fn child_op<U: Data>(
        &self,
        kind: &'static str,
        slide_ms: i64,
        stateful: bool,
        op: impl Operator<U> + 'static,
    ) -> DStream<U> {
        self.node.meta.add_consumer();
        let node = self.graph.add_node(kind, slide_ms, stateful, Box::new(op));
        DStream {
            node,
            graph: self.graph.clone(),
            shuffle_partitions: None,
        }
    }

    /// A stream's slide in milliseconds: the interval between its batches.
    pub(crate) fn slide_ms(&self) -> i64 {
        self.node.meta.slide_ms
    }

    /// The interval between this stream's batches.
    pub fn slide_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.slide_ms()).unwrap_or(0))
    }

    /// The operator's stable name (given with [`DStream::name`], else `<kind>-<position>`).
    pub fn operator_name(&self) -> String {
        self.node.meta.name()
    }

    /// Gives this stream's operator a stable name: state and metrics are keyed by it.
    pub fn name(self, name: &str) -> Self {
        self.node.meta.set_name(name);
        self
    }

    pub(crate) fn parent(&self) -> Arc<NodeCell<T>> {
        self.node.clone()
    }

    /// The partition count of the keyed operations on this handle.
    pub(crate) fn default_partitions(&self) -> usize {
        self.shuffle_partitions
            .unwrap_or(self.graph.parallelism)
            .max(1)
    }

    /// The one way to choose how many partitions a keyed operation's output (and its
    /// state) has: every keyed operation called on the returned handle — `reduce_by_key`,
    /// `group_by_key`, `cogroup` and the joins, the `*_by_key_and_window` windows,
    /// `update_state_by_key`, `map_with_state`, event-time aggregations — shuffles into
    /// `n` partitions instead of the context's parallelism (Spark's `numPartitions`
    /// argument). The stream itself is unchanged; to spread its elements use
    /// [`repartition`](Self::repartition).
    ///
    /// ```
    /// use lockgate_core::testing::run_streams;
    ///
    /// let input = vec![vec![("a".to_string(), 1), ("b".to_string(), 2)]];
    /// let out = run_streams(input, 2, |s| {
    ///     s.shuffle_partitions(5).reduce_by_key(|a, b| a + b).glom().map(|p| p.len())
    /// }, 1).unwrap();
    /// assert_eq!(out[0].len(), 5);
    /// ```
    pub fn shuffle_partitions(&self, n: usize) -> DStream<T> {
        DStream {
            shuffle_partitions: Some(n.max(1)),
            ..self.clone()
        }
    }

    /// Records an invalid-graph error for this stream; `start()` reports it.
    pub(crate) fn graph_error(&self, operator: &str, reason: String) {
        self.graph.defer_error(Error::Graph {
            operator: operator.to_string(),
            reason,
        });
    }

    /// Applies `f` to every element.
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> DStream<U> {
        let p = self.parent();
        self.child("map", move |cx| Ok(p.get_or_compute(cx)?.map(&f)))
    }

    /// Applies `f` to every element and flattens the results.
    pub fn flat_map<U: Data, I>(&self, f: impl Fn(T) -> I + Send + Sync + 'static) -> DStream<U>
    where
        I: IntoIterator<Item = U>,
    {
        let p = self.parent();
        self.child("flat_map", move |cx| {
            Ok(p.get_or_compute(cx)?
                .map_partitions(|part| part.into_iter().flat_map(&f).collect()))
        })
    }

    /// Keeps the elements for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> DStream<T> {
        let p = self.parent();
        self.child("filter", move |cx| Ok(p.get_or_compute(cx)?.filter(&f)))
    }

    /// Applies `f` to each partition as a whole.
    pub fn map_partitions<U: Data>(
        &self,
        f: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        let p = self.parent();
        self.child("map_partitions", move |cx| {
            Ok(p.get_or_compute(cx)?.map_partitions(&f))
        })
    }

    /// Applies `f` to each partition as a whole, in parallel; an error fails the batch
    /// (and the job) with it, the first partition's error winning. For computations that
    /// can fail on their input, such as evaluating a query.
    pub fn try_map_partitions<U: Data>(
        &self,
        f: impl Fn(Vec<T>) -> Result<Vec<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        let p = self.parent();
        self.child("try_map_partitions", move |cx| {
            let parts = p.get_or_compute(cx)?.into_partitions();
            let out: Vec<Vec<U>> = parts.into_par_iter().map(&f).collect::<Result<Vec<_>>>()?;
            Ok(Batch::from_partitions(out))
        })
    }

    /// Turns each partition into one element holding the partition's elements.
    pub fn glom(&self) -> DStream<Vec<T>> {
        self.map_partitions(|part| vec![part])
    }

    /// Elements of both streams. Both must have the same slide.
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        self.same_slide("union", other.slide_ms());
        other.node.meta.add_consumer();
        let (a, b) = (self.parent(), other.parent());
        self.child("union", move |cx| {
            let left = a.get_or_compute(cx)?;
            let right = b.get_or_compute(cx)?;
            Ok(left.union(&right))
        })
    }

    /// Arbitrary batch-to-batch function, given the batch time.
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(Batch<T>, Time) -> Batch<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        let p = self.parent();
        self.child("transform", move |cx| Ok(f(p.get_or_compute(cx)?, cx.time)))
    }

    /// As [`transform`](Self::transform), given the whole [`BatchContext`] of the batch:
    /// its id and time, and the plan each source logged for it — a direct stream's
    /// offset ranges, say (`offset_ranges` in the direct stream's module, Spark's
    /// `HasOffsetRanges`).
    pub fn transform_in_context<U: Data>(
        &self,
        f: impl Fn(Batch<T>, &BatchContext) -> Result<Batch<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        let p = self.parent();
        self.child("transform", move |cx| f(p.get_or_compute(cx)?, cx))
    }

    /// Spark's `transformWith`: a function of this stream's and `other`'s batches of the
    /// same time (both streams must have the same slide), given the batch time.
    ///
    /// ```
    /// use lockgate_core::testing::run_streams2;
    /// use lockgate_core::Batch;
    ///
    /// // Keep the numbers of the first stream that the second one holds too.
    /// let out = run_streams2(vec![vec![1, 2, 3]], vec![vec![3, 1]], 2, |a, b| {
    ///     a.transform_with(&b, |a: Batch<i32>, b: Batch<i32>, _t| {
    ///         let keep: Vec<i32> = b.collect();
    ///         a.filter(|x| keep.contains(x))
    ///     })
    /// }, 1).unwrap();
    /// assert_eq!(out, vec![vec![1, 3]]);
    /// ```
    pub fn transform_with<W: Data, U: Data>(
        &self,
        other: &DStream<W>,
        f: impl Fn(Batch<T>, Batch<W>, Time) -> Batch<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.same_slide("transform_with", other.slide_ms());
        other.node.meta.add_consumer();
        let (a, b) = (self.parent(), other.parent());
        self.child("transform_with", move |cx| {
            Ok(f(a.get_or_compute(cx)?, b.get_or_compute(cx)?, cx.time))
        })
    }

    /// The batches of this stream with times in `[from, to]` that it still remembers
    /// (Spark's `slice`): a stream remembers the batches it computed for the duration
    /// given to [`StreamingContext::remember`](crate::StreamingContext::remember) (by default none once a batch is done).
    /// A time between two batch times of this stream (not a multiple of its slide after
    /// the zero time) is moved back to the batch time before it, with a warning, as
    /// Spark does. Call it from outside the job (a thread of yours, an output of
    /// another stream); it never computes a batch.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockgate_core::testing::ManualRun;
    /// use lockgate_core::{InputQueue, Time};
    ///
    /// let run = ManualRun::new(2).unwrap();
    /// run.ctx.remember(Duration::from_secs(2));
    /// let q = InputQueue::from_batches(vec![vec![1], vec![2], vec![3]]);
    /// let doubled = run.ctx.queue_stream(q, true, None).map(|x: i32| x * 2);
    /// doubled.foreach_batch(|_, _| ());
    /// run.ctx.start().unwrap();
    /// for _ in 0..3 {
    ///     run.next_batch().unwrap();
    /// }
    /// let kept: Vec<(i64, Vec<i32>)> = doubled
    ///     .slice(Time(0), Time(3000))
    ///     .unwrap()
    ///     .into_iter()
    ///     .map(|(t, b)| (t.millis(), b.collect()))
    ///     .collect();
    /// // Batch 1000 is older than the 2 s remembered at batch 3000.
    /// assert_eq!(kept, vec![(2000, vec![4]), (3000, vec![6])]);
    /// ```
    pub fn slice(&self, from: Time, to: Time) -> Result<Vec<(Time, Batch<T>)>> {
        // Spark: "has not been initialized" — before start there are no batch times.
        if !self
            .graph
            .started
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::Lifecycle(
                "slice: the context has not started, so the stream has no batches yet; \
                 call slice after start()"
                    .into(),
            ));
        }
        let zero = self.graph.timing.zero();
        let slide = self.slide_ms().max(1);
        let floor = |what: &str, t: Time| {
            let off = t.since(zero).rem_euclid(slide);
            if off != 0 {
                tracing::warn!(
                    "slice: {what} time {t} is not a batch time of this stream (zero time \
                     {zero}, slide {slide} ms); using {}",
                    Time(t.0 - off)
                );
            }
            Time(t.0 - off)
        };
        let (from, to) = (floor("from", from), floor("to", to));
        if to < from {
            return Err(Error::Config(format!(
                "slice: from time {from} is after to time {to}"
            )));
        }
        Ok(self.node.remembered(from, to))
    }

    /// Records a graph error when `other`'s slide differs from this stream's.
    fn same_slide(&self, kind: &str, other: i64) {
        if self.slide_ms() != other {
            self.graph_error(
                &self.operator_name(),
                format!(
                    "{kind} of streams with different slides ({} ms and {other} ms); \
                     window both to the same slide first",
                    self.slide_ms(),
                ),
            );
        }
    }

    /// Redistributes the elements evenly over `n` partitions (order kept).
    pub fn repartition(&self, n: usize) -> DStream<T> {
        let p = self.parent();
        self.child("repartition", move |cx| {
            let b = p.get_or_compute(cx)?;
            let mut all = Vec::with_capacity(b.len());
            for part in b.into_partitions() {
                all.extend(part);
            }
            Ok(Batch::from_partitions(split_even(all, n)))
        })
    }

    /// One element per batch: the number of elements (0 for an empty batch).
    pub fn count(&self) -> DStream<i64> {
        let p = self.parent();
        self.child("count", move |cx| {
            let n = p.get_or_compute(cx)?.len();
            Ok(Batch::from_vec(
                vec![i64::try_from(n).unwrap_or(i64::MAX)],
                1,
            ))
        })
    }

    /// One element per non-empty batch: all elements combined with `f`
    /// (which should be associative and commutative).
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> DStream<T> {
        let p = self.parent();
        self.child("reduce", move |cx| {
            let b = p.get_or_compute(cx)?;
            let partials: Vec<Option<T>> = b
                .into_shared()
                .into_par_iter()
                .map(|part| take_part(part).into_iter().reduce(&f))
                .collect();
            let total = partials.into_iter().flatten().reduce(&f);
            Ok(Batch::from_vec(total.into_iter().collect(), 1))
        })
    }

    /// Pairs of each distinct element and its count in the batch.
    pub fn count_by_value(&self) -> DStream<(T, i64)>
    where
        T: Hash + Eq,
    {
        self.map(|x| (x, 1i64))
            .reduce_by_key(|a, b| a + b)
            .name_kind("count_by_value")
    }

    /// Renames a derived node after the user-facing operation it implements.
    pub(crate) fn name_kind(self, kind: &str) -> Self {
        let id = self.node.meta.id;
        self.name(&format!("{kind}-{id}"))
    }
}

impl crate::context::StreamingContext {
    /// Spark's `StreamingContext.union`: the elements of all `streams` (at least one, all
    /// with the same slide), batch by batch, in the order given.
    ///
    /// ```
    /// use lockgate_core::testing::ManualRun;
    /// use lockgate_core::InputQueue;
    ///
    /// let run = ManualRun::new(1).unwrap();
    /// let streams: Vec<_> = (0..3)
    ///     .map(|i| run.ctx.queue_stream(InputQueue::from_batches(vec![vec![i]]), true, None))
    ///     .collect();
    /// let all = lockgate_core::testing::collect_output(&run.ctx.union(&streams));
    /// run.ctx.start().unwrap();
    /// run.next_batch().unwrap();
    /// assert_eq!(all.lock().unwrap()[0], vec![0, 1, 2]);
    /// ```
    pub fn union<T: Data>(&self, streams: &[DStream<T>]) -> DStream<T> {
        self.transform_streams("union", streams, |batches, _| {
            batches
                .into_iter()
                .fold(Batch::empty(), |all, b| all.union(&b))
        })
    }

    /// Spark's `StreamingContext.transform`: a function of the batches of all `streams`
    /// (at least one, all with the same slide) of the same time, in the order given, and
    /// the batch time. (Spark's form takes streams of any element types; here they share
    /// one: map them to an enum first to mix types.)
    ///
    /// ```
    /// use lockgate_core::testing::{collect_output, ManualRun};
    /// use lockgate_core::{Batch, InputQueue};
    ///
    /// let run = ManualRun::new(1).unwrap();
    /// let streams: Vec<_> = [vec![1, 2], vec![10]]
    ///     .into_iter()
    ///     .map(|b| run.ctx.queue_stream(InputQueue::from_batches(vec![b]), true, None))
    ///     .collect();
    /// // Per batch: the sum of each stream.
    /// let sums = collect_output(&run.ctx.transform(&streams, |batches, _time| {
    ///     Batch::from_vec(batches.iter().map(|b| b.iter().sum::<i32>()).collect(), 1)
    /// }));
    /// run.ctx.start().unwrap();
    /// run.next_batch().unwrap();
    /// assert_eq!(sums.lock().unwrap()[0], vec![3, 10]);
    /// ```
    pub fn transform<T: Data, U: Data>(
        &self,
        streams: &[DStream<T>],
        f: impl Fn(Vec<Batch<T>>, Time) -> Batch<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.transform_streams("transform", streams, f)
    }

    fn transform_streams<T: Data, U: Data>(
        &self,
        kind: &'static str,
        streams: &[DStream<T>],
        f: impl Fn(Vec<Batch<T>>, Time) -> Batch<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        let graph = self.graph();
        let Some(first) = streams.first() else {
            graph.defer_error(Error::Graph {
                operator: kind.to_string(),
                reason: format!("StreamingContext::{kind} needs at least one stream"),
            });
            let node = graph.add_node(
                kind,
                graph.timing.interval_ms,
                false,
                Box::new(FnOp(|_: &BatchContext| Ok(Batch::empty()))),
            );
            return DStream {
                node,
                graph,
                shuffle_partitions: None,
            };
        };
        for s in &streams[1..] {
            first.same_slide(kind, s.slide_ms());
            s.node.meta.add_consumer();
        }
        let parents: Vec<Arc<NodeCell<T>>> = streams.iter().map(DStream::parent).collect();
        first.child(kind, move |cx| {
            let batches = parents
                .iter()
                .map(|p| p.get_or_compute(cx))
                .collect::<Result<Vec<_>>>()?;
            Ok(f(batches, cx.time))
        })
    }
}
