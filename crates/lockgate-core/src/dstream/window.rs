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

use crate::batch::Data;
use crate::checkpoint::state::{BufferState, KeyedState};
use crate::clock::duration_ms;
use crate::codec::Codec;
use crate::dstream::DStream;
use crate::operator::inverse_window::{FilterFn, InverseWindowOp, ReduceFn};
use crate::operator::window::WindowOp;

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
    /// The number of partitions of the window's state (default: the context's
    /// parallelism).
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
        self
    }

    /// Keeps only the pairs for which `f` is true; typically drops keys whose value
    /// went back to zero so they do not stay in the window state forever.
    pub fn filter(mut self, f: impl Fn(&(K, V)) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(f));
        self
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
        // The scheduler lets a window drain before it skips batch times ahead.
        self.graph.timing.add_horizon(len.max(1) + sl.max(1));
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
            buffer,
        };
        self.child_op("window", sl, true, op)
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
            buffer,
            window,
            f,
            inv: Arc::new(inv),
            filter: opts.filter,
        };
        reduced
            .child_op("reduce_by_key_and_window", sl, true, op)
            .name_kind("reduce_by_key_and_window")
    }
}
