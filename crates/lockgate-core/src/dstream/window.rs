//! Processing-time windows over batches: `window`, `count_by_window`,
//! `reduce_by_window`, `reduce_by_key_and_window` (with and without an inverse
//! function), `group_by_key_and_window` and `count_by_value_and_window`. Each takes a
//! [`Slide`]: a `Duration`, or [`Slide::Batch`] for Spark's forms without a slide.
//!
//! A window of length `L` sliding by `S` at batch time `t` covers the batches at times
//! in `(t - L, t]` and is emitted at every `t` that is a multiple of `S` after the zero
//! time. `L` and `S` must be multiples of the parent stream's slide.
//!
//! With an inverse function, the window is maintained incrementally as Spark does:
//! `window(t) = window(t - S) - reduce(batches leaving) + reduce(batches entering)`, so
//! its cost follows the slide, not the window length.
//!
//! A window keeps the parent batches it still needs in a buffer (shared partitions, no
//! copy) that is checkpointed with its state, so a recovered job computes the same
//! windows; element types of windowed streams therefore implement [`Codec`].

use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hash::FxHashMap;
use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{
    node_name, BufferState, BufferStateful, KeyedState, KeyedStateful, PairStateful,
};
use crate::clock::{duration_ms, Time};
use crate::codec::Codec;
use crate::dstream::DStream;
use crate::error::Result;
use crate::graph::{NodeCell, Operator};
use crate::types::{lock, BatchContext};

type FilterFn<K, V> = Arc<dyn Fn(&(K, V)) -> bool + Send + Sync>;

/// How far a processing-time window slides. A `Duration` converts into
/// [`Slide::Every`]; [`Slide::Batch`] is Spark's one-argument form of the window
/// operations (`window(length)`, `reduceByKeyAndWindow(f, length)`, …), whose slide
/// defaults to the stream's own: `s.window(length, Slide::Batch)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slide {
    /// Slide by this duration (a multiple of the stream's slide).
    Every(Duration),
    /// Slide by the stream's own slide: the batch interval, unless the stream is
    /// windowed already.
    Batch,
}

impl From<Duration> for Slide {
    fn from(d: Duration) -> Self {
        Slide::Every(d)
    }
}

/// Options of [`DStream::reduce_by_key_and_window_inv`].
pub struct InverseWindowOpts<K, V> {
    partitions: Option<usize>,
    filter: Option<FilterFn<K, V>>,
}

impl<K, V> Default for InverseWindowOpts<K, V> {
    fn default() -> Self {
        InverseWindowOpts {
            partitions: None,
            filter: None,
        }
    }
}

impl<K, V> InverseWindowOpts<K, V> {
    /// Number of partitions of the windowed result (default: the context's parallelism).
    #[deprecated(
        note = "use `.shuffle_partitions(n).reduce_by_key_and_window_inv(..)`: one way to set partition counts"
    )]
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n);
        self
    }

    /// Keeps only the pairs for which `f` is true; typically drops keys whose value
    /// went back to zero so they do not stay in the window state forever.
    pub fn filter(mut self, f: impl Fn(&(K, V)) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(f));
        self
    }
}

/// `window`: the union of the buffered parent batches in `(t - len, t]`.
struct WindowOp<T> {
    parent: Arc<NodeCell<T>>,
    len: i64,
    buffer: Arc<Mutex<BufferState<T>>>,
}

/// Adds the parent's batch of `cx` (if it has one) to `buffer`, keeping `keep` ms.
fn collect_parent<T: Data + Codec>(
    parent: &NodeCell<T>,
    buffer: &Mutex<BufferState<T>>,
    cx: &BatchContext,
    keep: i64,
) -> Result<()> {
    let t = cx.time;
    if parent.meta.is_valid(t) {
        let b = parent.get_or_compute(cx)?;
        let mut buf = lock(buffer);
        buf.insert(t, b);
        buf.drop_through(t.plus_ms(-keep));
    }
    Ok(())
}

/// The buffered batches with times in `(from, to]`, oldest first.
fn buffered<T: Data>(buffer: &Mutex<BufferState<T>>, from: Time, to: Time) -> Vec<Batch<T>> {
    lock(buffer)
        .batches
        .range(from.plus_ms(1)..to.plus_ms(1))
        .map(|(_, b)| b.clone())
        .collect()
}

impl<T: Data + Codec> Operator<T> for WindowOp<T> {
    fn prepare(&self, cx: &BatchContext) -> Result<()> {
        collect_parent(&self.parent, &self.buffer, cx, self.len)
    }

    fn compute(&self, cx: &BatchContext) -> Result<Batch<T>> {
        let t = cx.time;
        let mut out = Batch::empty();
        for b in buffered(&self.buffer, t.plus_ms(-self.len), t) {
            out = out.union(&b);
        }
        Ok(out)
    }
}

impl<T: Data> DStream<T> {
    /// Checks window length and slide against this stream's slide; records a graph error
    /// naming `kind` when they do not fit. Returns the two in milliseconds.
    fn window_params(&self, kind: &str, length: Duration, slide: Slide) -> (i64, i64) {
        let parent = self.slide_ms();
        let sl = match slide {
            Slide::Every(d) => duration_ms(d),
            Slide::Batch => parent,
        };
        let len = duration_ms(length);
        let fits = |d: i64| d > 0 && d % parent == 0;
        if !fits(len) || !fits(sl) {
            self.graph_error(
                kind,
                format!(
                    "window length {len} ms and slide {sl} ms must be positive multiples of \
                     the parent stream's slide ({parent} ms, the batch interval unless \
                     windowed already)"
                ),
            );
        }
        (len.max(1), sl.max(1))
    }

    /// The number of elements in each window (incremental).
    pub fn count_by_window(&self, length: Duration, slide: impl Into<Slide>) -> DStream<i64> {
        self.map(|_| 1i64)
            .reduce_by_window_inv(|a, b| a + b, |a, b| a - b, length, slide)
            .name_kind("count_by_window")
    }
}

impl<T: Data + Codec> DStream<T> {
    /// Every element of the batches in the last `length`, emitted every `slide`.
    pub fn window(&self, length: Duration, slide: impl Into<Slide>) -> DStream<T> {
        let (len, sl) = self.window_params("window", length, slide.into());
        let buffer = Arc::new(Mutex::new(BufferState::new()));
        let op = WindowOp {
            parent: self.parent(),
            len,
            buffer: buffer.clone(),
        };
        let out = self.child_op("window", sl, true, op);
        self.graph.add_state(Arc::new(BufferStateful {
            name: node_name(&out.node.meta, ""),
            state: buffer,
        }));
        out
    }

    /// The elements of each window combined with `f` (recomputed per window).
    pub fn reduce_by_window(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        length: Duration,
        slide: impl Into<Slide>,
    ) -> DStream<T> {
        let f = Arc::new(f);
        let f2 = f.clone();
        self.reduce(move |a, b| f(a, b))
            .window(length, slide)
            .reduce(move |a, b| f2(a, b))
            .name_kind("reduce_by_window")
    }

    /// The elements of each window combined with `f`, maintained incrementally with the
    /// inverse `inv` (`inv(f(a, b), b) == a`).
    pub fn reduce_by_window_inv(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        inv: impl Fn(T, T) -> T + Send + Sync + 'static,
        length: Duration,
        slide: impl Into<Slide>,
    ) -> DStream<T> {
        self.map(|x| ((), x))
            .shuffle_partitions(1)
            .reduce_by_key_and_window_inv(f, inv, length, slide, InverseWindowOpts::default())
            .map(|(_, v)| v)
            .name_kind("reduce_by_window")
    }

    /// Each distinct element with its count in the window (incremental; elements whose
    /// count fell to zero are dropped).
    pub fn count_by_value_and_window(
        &self,
        length: Duration,
        slide: impl Into<Slide>,
        partitions: Option<usize>,
    ) -> DStream<(T, i64)>
    where
        T: Hash + Eq,
    {
        let opts = InverseWindowOpts::default().filter(|(_, c): &(T, i64)| *c != 0);
        let pairs = self.map(|x| (x, 1i64));
        let pairs = match partitions {
            Some(n) => pairs.shuffle_partitions(n),
            None => pairs,
        };
        pairs
            .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, length, slide, opts)
            .name_kind("count_by_value_and_window")
    }
}

type ReduceFn<V> = Arc<dyn Fn(V, V) -> V + Send + Sync>;

/// `reduce_by_key_and_window_inv`: the window's value per key is kept as state and
/// updated from the reduced batches leaving and entering it.
struct InverseWindowOp<K, V> {
    parent: Arc<NodeCell<(K, V)>>,
    len: i64,
    slide: i64,
    buffer: Arc<Mutex<BufferState<(K, V)>>>,
    window: Arc<Mutex<KeyedState<K, V>>>,
    f: ReduceFn<V>,
    inv: ReduceFn<V>,
    filter: Option<FilterFn<K, V>>,
}

/// The pairs of partition `j` of `b` among `n` partitions (re-partitioning batches
/// restored from a checkpoint written with another partition count).
fn partition_pairs<'a, K: Data + Hash, V: Data>(
    b: &'a Batch<(K, V)>,
    j: usize,
    n: usize,
) -> Box<dyn Iterator<Item = &'a (K, V)> + 'a> {
    if b.num_partitions() == n {
        Box::new(b.partitions()[j].iter())
    } else {
        Box::new(
            b.iter()
                .filter(move |(k, _)| crate::dstream::keyed::partition_of(k, n) == j),
        )
    }
}

impl<K, V> Operator<(K, V)> for InverseWindowOp<K, V>
where
    K: Data + Hash + Eq + Codec,
    V: Data + Codec,
{
    fn prepare(&self, cx: &BatchContext) -> Result<()> {
        collect_parent(&self.parent, &self.buffer, cx, self.len + self.slide)
    }

    fn compute(&self, cx: &BatchContext) -> Result<Batch<(K, V)>> {
        let t = cx.time;
        let prev = t.plus_ms(-self.slide);
        // (t - slide - len, t - len]: in the previous window, not in this one.
        let old = buffered(&self.buffer, prev.plus_ms(-self.len), t.plus_ms(-self.len));
        // (t - slide, t]: new in this window.
        let new = buffered(&self.buffer, prev, t);
        let mut guard = lock(&self.window);
        let window = &mut *guard;
        let n = window.partitions();
        let (f, inv, filter) = (&self.f, &self.inv, &self.filter);
        let parts: Vec<Vec<(K, V)>> = window
            .parts()
            .into_par_iter()
            .enumerate()
            .map(|(j, mut state)| {
                let mut leaving: FxHashMap<K, V> = FxHashMap::default();
                for b in &old {
                    for (k, v) in partition_pairs(b, j, n) {
                        merge(&mut leaving, k, v, &**f);
                    }
                }
                for (k, v) in leaving {
                    if let Some(cur) = state.get_mut(&k) {
                        *cur = inv(cur.clone(), v);
                    }
                }
                for b in &new {
                    for (k, v) in partition_pairs(b, j, n) {
                        match state.get_mut(k) {
                            Some(cur) => *cur = f(cur.clone(), v.clone()),
                            None => state.insert(k.clone(), v.clone()),
                        }
                    }
                }
                if let Some(keep) = filter {
                    state.retain(|k, v, _| keep(&(k.clone(), v.clone())));
                }
                state.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .collect();
        Ok(Batch::from_partitions(parts))
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Data + Hash + Eq + Codec,
    V: Data + Codec,
{
    /// Spark's `groupByKeyAndWindow`: every key of the window with all its values in
    /// the window (oldest batch first, in arrival order within a batch), emitted every
    /// `slide`, in the context's parallelism of partitions.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockgate_core::testing::run_streams;
    /// use lockgate_core::Slide;
    ///
    /// let kv = |k: &str, v: i32| (k.to_string(), v);
    /// let input = vec![vec![kv("a", 1)], vec![kv("a", 2), kv("b", 3)], vec![kv("b", 4)]];
    /// let out = run_streams(input, 2, |s| {
    ///     s.group_by_key_and_window(Duration::from_secs(2), Slide::Batch)
    /// }, 3).unwrap();
    /// let mut last = out[2].clone();
    /// last.sort();
    /// assert_eq!(last, vec![("a".to_string(), vec![2]), ("b".to_string(), vec![3, 4])]);
    /// ```
    pub fn group_by_key_and_window(
        &self,
        length: Duration,
        slide: impl Into<Slide>,
    ) -> DStream<(K, Vec<V>)> {
        let n = self.default_partitions();
        self.window(length, slide)
            .shuffle_partitions(n)
            .group_by_key()
            .name_kind("group_by_key_and_window")
    }

    /// [`group_by_key_and_window`](Self::group_by_key_and_window) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).group_by_key_and_window(..)`: one way to set partition counts"
    )]
    pub fn group_by_key_and_window_with_partitions(
        &self,
        length: Duration,
        slide: impl Into<Slide>,
        n: usize,
    ) -> DStream<(K, Vec<V>)> {
        self.shuffle_partitions(n)
            .group_by_key_and_window(length, slide)
    }

    /// The values of each key over the window combined with `f` (recomputed per window).
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: impl Into<Slide>,
    ) -> DStream<(K, V)> {
        let n = self.default_partitions();
        let f = Arc::new(f);
        let f2 = f.clone();
        self.reduce_by_key(move |a, b| f(a, b))
            .window(length, slide)
            .shuffle_partitions(n)
            .reduce_by_key(move |a, b| f2(a, b))
            .name_kind("reduce_by_key_and_window")
    }

    /// [`reduce_by_key_and_window`](Self::reduce_by_key_and_window) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).reduce_by_key_and_window(..)`: one way to set partition counts"
    )]
    pub fn reduce_by_key_and_window_with_partitions(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: impl Into<Slide>,
        n: usize,
    ) -> DStream<(K, V)> {
        self.shuffle_partitions(n)
            .reduce_by_key_and_window(f, length, slide)
    }

    /// The values of each key over the window, maintained incrementally: the previous
    /// window's value, minus (`inv`) the batches that left, plus (`f`) the batches that
    /// entered. Keys stay (possibly with a "zero" value) unless `opts.filter` drops them.
    pub fn reduce_by_key_and_window_inv(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        inv: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: impl Into<Slide>,
        opts: InverseWindowOpts<K, V>,
    ) -> DStream<(K, V)> {
        let n = opts
            .partitions
            .unwrap_or_else(|| self.default_partitions())
            .max(1);
        let f: ReduceFn<V> = Arc::new(f);
        let f_batch = f.clone();
        let reduced = self
            .shuffle_partitions(n)
            .reduce_by_key(move |a, b| f_batch(a, b));
        let (len, sl) = reduced.window_params("reduce_by_key_and_window", length, slide.into());
        let buffer = Arc::new(Mutex::new(BufferState::new()));
        let window = Arc::new(Mutex::new(KeyedState::new(n, true)));
        let op = InverseWindowOp {
            parent: reduced.parent(),
            len,
            slide: sl,
            buffer: buffer.clone(),
            window: window.clone(),
            f,
            inv: Arc::new(inv),
            filter: opts.filter,
        };
        let out = reduced
            .child_op("reduce_by_key_and_window", sl, true, op)
            .name_kind("reduce_by_key_and_window");
        // One operator, one piece of state: the window's values with its buffer.
        self.graph.add_state(Arc::new(PairStateful {
            first: KeyedStateful {
                name: node_name(&out.node.meta, ""),
                state: window,
            },
            second: BufferStateful {
                name: node_name(&out.node.meta, ""),
                state: buffer,
            },
        }));
        out
    }
}

fn merge<K: Clone + Hash + Eq, V: Clone>(
    map: &mut FxHashMap<K, V>,
    k: &K,
    v: &V,
    f: &(dyn Fn(V, V) -> V + Send + Sync),
) {
    match map.get_mut(k) {
        Some(cur) => *cur = f(cur.clone(), v.clone()),
        None => {
            map.insert(k.clone(), v.clone());
        }
    }
}
