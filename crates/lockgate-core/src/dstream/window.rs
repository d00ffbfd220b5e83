//! Processing-time windows over batches: `window`, `count_by_window`,
//! `reduce_by_window`, `reduce_by_key_and_window` (with and without an inverse
//! function) and `count_by_value_and_window`.
//!
//! A window of length `L` sliding by `S` at batch time `t` covers the batches at times
//! in `(t - L, t]` and is emitted at every `t` that is a multiple of `S` after the zero
//! time. `L` and `S` must be multiples of the parent stream's slide.
//!
//! With an inverse function, the window is maintained incrementally as Spark does:
//! `window(t) = window(t - S) - reduce(batches leaving) + reduce(batches entering)`, so
//! its cost follows the slide, not the window length.

use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::batch::{Batch, Data};
use crate::clock::{duration_ms, Time};
use crate::dstream::DStream;
use crate::graph::lock;

type FilterFn<K, V> = Arc<dyn Fn(&(K, V)) -> bool + Send + Sync>;

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

impl<T: Data> DStream<T> {
    /// Checks window length and slide against this stream's slide; records a graph error
    /// naming `kind` when they do not fit. Returns the two in milliseconds.
    fn window_params(&self, kind: &str, length: Duration, slide: Duration) -> (i64, i64) {
        let (len, sl, parent) = (duration_ms(length), duration_ms(slide), self.slide_ms());
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

    /// Every element of the batches in the last `length`, emitted every `slide`.
    pub fn window(&self, length: Duration, slide: Duration) -> DStream<T> {
        let (len, sl) = self.window_params("window", length, slide);
        let parent = self.parent();
        parent.meta.require_remember(len);
        self.child_with("window", sl, false, move |t| {
            let mut out = Batch::empty();
            for b in parent.slice(t.plus_ms(-len), t)? {
                out = out.union(&b);
            }
            Ok(out)
        })
    }

    /// The number of elements in each window (incremental).
    pub fn count_by_window(&self, length: Duration, slide: Duration) -> DStream<i64> {
        self.map(|_| 1i64)
            .reduce_by_window_inv(|a, b| a + b, |a, b| a - b, length, slide)
            .name_kind("count_by_window")
    }

    /// The elements of each window combined with `f` (recomputed per window).
    pub fn reduce_by_window(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        length: Duration,
        slide: Duration,
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
        slide: Duration,
    ) -> DStream<T> {
        self.map(|x| ((), x))
            .reduce_by_key_and_window_inv(
                f,
                inv,
                length,
                slide,
                InverseWindowOpts::default().partitions(1),
            )
            .map(|(_, v)| v)
            .name_kind("reduce_by_window")
    }

    /// Each distinct element with its count in the window (incremental; elements whose
    /// count fell to zero are dropped).
    pub fn count_by_value_and_window(
        &self,
        length: Duration,
        slide: Duration,
        partitions: Option<usize>,
    ) -> DStream<(T, i64)>
    where
        T: Hash + Eq,
    {
        let mut opts = InverseWindowOpts::default().filter(|(_, c): &(T, i64)| *c != 0);
        if let Some(n) = partitions {
            opts = opts.partitions(n);
        }
        self.map(|x| (x, 1i64))
            .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, length, slide, opts)
            .name_kind("count_by_value_and_window")
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Data + Hash + Eq,
    V: Data,
{
    /// The values of each key over the window combined with `f` (recomputed per window).
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: Duration,
    ) -> DStream<(K, V)> {
        self.reduce_by_key_and_window_with_partitions(f, length, slide, self.default_partitions())
    }

    /// [`reduce_by_key_and_window`](Self::reduce_by_key_and_window) into `n` partitions.
    pub fn reduce_by_key_and_window_with_partitions(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: Duration,
        n: usize,
    ) -> DStream<(K, V)> {
        let f = Arc::new(f);
        let f2 = f.clone();
        self.reduce_by_key_with_partitions(move |a, b| f(a, b), n)
            .window(length, slide)
            .reduce_by_key_with_partitions(move |a, b| f2(a, b), n)
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
        slide: Duration,
        opts: InverseWindowOpts<K, V>,
    ) -> DStream<(K, V)> {
        let n = opts
            .partitions
            .unwrap_or_else(|| self.default_partitions())
            .max(1);
        let f = Arc::new(f);
        let f_batch = f.clone();
        let reduced = self.reduce_by_key_with_partitions(move |a, b| f_batch(a, b), n);
        let (len, sl) = reduced.window_params("reduce_by_key_and_window", length, slide);
        let parent = reduced.parent();
        // Batches leaving the window were entered `len` ago and leave `sl` later.
        parent.meta.require_remember(len + sl);
        let previous: Mutex<Option<(Time, Batch<(K, V)>)>> = Mutex::new(None);
        let filter = opts.filter;
        reduced
            .child_with("reduce_by_key_and_window", sl, true, move |t| {
                let prev_time = t.plus_ms(-sl);
                let prev = match lock(&previous).take() {
                    Some((pt, b)) if pt == prev_time => b,
                    _ => Batch::empty(),
                };
                // (t - sl - len, t - len]: in the previous window, not in this one.
                let old = parent.slice(prev_time.plus_ms(-len), t.plus_ms(-len))?;
                // (t - sl, t]: new in this window.
                let new = parent.slice(prev_time, t)?;
                let prev_parts = prev.into_shared();
                let parts: Vec<Vec<(K, V)>> = (0..n)
                    .into_par_iter()
                    .map(|j| {
                        let mut window: FxHashMap<K, V> = FxHashMap::default();
                        if let Some(p) = prev_parts.get(j) {
                            window.extend(p.iter().cloned());
                        }
                        let mut leaving: FxHashMap<K, V> = FxHashMap::default();
                        for b in &old {
                            for (k, v) in b.partitions().get(j).iter().flat_map(|p| p.iter()) {
                                merge(&mut leaving, k, v, &*f);
                            }
                        }
                        for (k, v) in leaving {
                            if let Some(cur) = window.get_mut(&k) {
                                *cur = inv(cur.clone(), v);
                            }
                        }
                        for b in &new {
                            for (k, v) in b.partitions().get(j).iter().flat_map(|p| p.iter()) {
                                merge(&mut window, k, v, &*f);
                            }
                        }
                        let mut out: Vec<(K, V)> = window.into_iter().collect();
                        if let Some(keep) = &filter {
                            out.retain(|kv| keep(kv));
                        }
                        out
                    })
                    .collect();
                let result = Batch::from_partitions(parts);
                *lock(&previous) = Some((t, result.clone()));
                Ok(result)
            })
            .name_kind("reduce_by_key_and_window")
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
