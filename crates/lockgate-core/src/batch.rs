//! [`Batch`]: the data of one stream for one batch time, split into partitions
//! (the counterpart of one RDD of a Spark DStream).
//!
//! Partitions are reference-counted, so a batch can be shared by several consumers and
//! by windows without copying. A consumer that holds the only reference to a partition
//! takes its elements by value (no clone); otherwise it clones them.

use std::sync::Arc;

use rayon::prelude::*;

/// The bound every stream element satisfies.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// One batch of a stream: a list of partitions.
#[derive(Debug)]
pub struct Batch<T> {
    parts: Vec<Arc<Vec<T>>>,
}

impl<T> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Batch {
            parts: self.parts.clone(),
        }
    }
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch { parts: Vec::new() }
    }
}

impl<T: Data> Batch<T> {
    /// An empty batch with no partitions.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A batch made of the given partitions.
    pub fn from_partitions(parts: Vec<Vec<T>>) -> Self {
        Batch {
            parts: parts.into_iter().map(Arc::new).collect(),
        }
    }

    /// A batch made of already shared partitions.
    pub fn from_shared(parts: Vec<Arc<Vec<T>>>) -> Self {
        Batch { parts }
    }

    /// Splits `items` into `n` contiguous partitions of nearly equal size, cut exactly
    /// as Spark's `makeRDD(seq, n)` cuts (`[1, 2, 3]` over 2 is `[[1], [2, 3]]`).
    pub fn from_vec(items: Vec<T>, n: usize) -> Self {
        Self::from_partitions(split_even(items, n))
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Arc<Vec<T>>] {
        &self.parts
    }

    /// Number of partitions.
    pub fn num_partitions(&self) -> usize {
        self.parts.len()
    }

    /// Total number of elements.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// True when the batch holds no element.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }

    /// Iterates over all elements, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.parts.iter().flat_map(|p| p.iter())
    }

    /// All elements, in partition order.
    pub fn collect(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.parts {
            out.extend(p.iter().cloned());
        }
        out
    }

    /// The first `n` elements.
    pub fn take(&self, n: usize) -> Vec<T> {
        self.iter().take(n).cloned().collect()
    }

    /// Appends the partitions of `other` (no copy).
    pub fn union(mut self, other: &Batch<T>) -> Self {
        self.parts.extend(other.parts.iter().cloned());
        self
    }

    /// Consumes the batch into its shared partitions.
    pub(crate) fn into_shared(self) -> Vec<Arc<Vec<T>>> {
        self.parts
    }

    /// Consumes the batch into owned partitions, cloning only partitions that are
    /// shared with another holder.
    pub fn into_partitions(self) -> Vec<Vec<T>> {
        self.parts.into_iter().map(take_part).collect()
    }

    /// Applies `f` to every partition in parallel (owned elements in, new partition out).
    pub fn map_partitions<U: Data>(self, f: impl Fn(Vec<T>) -> Vec<U> + Sync + Send) -> Batch<U> {
        let parts: Vec<Vec<U>> = self
            .parts
            .into_par_iter()
            .map(|p| f(take_part(p)))
            .collect();
        Batch::from_partitions(parts)
    }

    /// Applies `f` to every partition in parallel, by reference.
    pub fn map_partitions_ref<U: Data>(
        &self,
        f: impl Fn(&[T]) -> Vec<U> + Sync + Send,
    ) -> Batch<U> {
        let parts: Vec<Vec<U>> = self.parts.par_iter().map(|p| f(p)).collect();
        Batch::from_partitions(parts)
    }

    /// A parallel map over elements.
    pub fn map<U: Data>(self, f: impl Fn(T) -> U + Sync + Send) -> Batch<U> {
        self.map_partitions(|p| p.into_iter().map(&f).collect())
    }

    /// A parallel filter over elements.
    pub fn filter(self, f: impl Fn(&T) -> bool + Sync + Send) -> Batch<T> {
        self.map_partitions(|mut p| {
            p.retain(|x| f(x));
            p
        })
    }
}

/// Takes the elements of a partition: by value when this is the only reference.
pub(crate) fn take_part<T: Clone>(p: Arc<Vec<T>>) -> Vec<T> {
    Arc::try_unwrap(p).unwrap_or_else(|shared| (*shared).clone())
}

/// Below this many records a stage's work is smaller than what running it in parallel
/// costs (waking the other workers and waiting for the last of them).
pub(crate) const SEQUENTIAL_BELOW: usize = 16 * 1024;

/// Maps `items` on the worker pool, or one after another on this thread when `small`.
pub(crate) fn map_maybe_par<I: Send, O: Send>(
    items: Vec<I>,
    small: bool,
    f: impl Fn(I) -> O + Sync + Send,
) -> Vec<O> {
    use rayon::prelude::*;
    if small {
        items.into_iter().map(f).collect()
    } else {
        items.into_par_iter().map(f).collect()
    }
}

/// Splits `items` into `n` (at least one) contiguous chunks of nearly equal size, cut
/// where Spark's `ParallelCollectionRDD` cuts: chunk `i` is `[i·len/n, (i+1)·len/n)`, so
/// the larger chunks come last (`[1, 2, 3]` over 2 is `[[1], [2, 3]]`).
pub(crate) fn split_even<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.max(1);
    let len = items.len();
    let bound = |i: usize| usize::try_from(i as u128 * len as u128 / n as u128).unwrap_or(len);
    let mut out = Vec::with_capacity(n);
    let mut it = items.into_iter();
    for i in 0..n {
        out.push(it.by_ref().take(bound(i + 1) - bound(i)).collect());
    }
    out
}

/// `[input][bucket] -> [bucket][input]`.
pub(crate) fn transpose_by_bucket<B>(buckets: Vec<Vec<B>>, n: usize) -> Vec<Vec<B>> {
    let mut out: Vec<Vec<B>> = (0..n).map(|_| Vec::new()).collect();
    for per_input in buckets {
        for (j, b) in per_input.into_iter().enumerate() {
            out[j].push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_splits_evenly_and_keeps_order() {
        let b = Batch::from_vec((0..10).collect::<Vec<i32>>(), 3);
        let sizes: Vec<usize> = b.partitions().iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![3, 3, 4]);
        assert_eq!(b.collect(), (0..10).collect::<Vec<_>>());
    }

    /// Spark's `ParallelCollectionRDD.slice`, written out independently: partition `i`
    /// of `n` holds positions `i*len/n until (i+1)*len/n`.
    #[test]
    fn from_vec_cuts_where_spark_makerdd_cuts() {
        let parts = |len: usize, n: usize| -> Vec<Vec<usize>> {
            Batch::from_vec((0..len).collect(), n).into_partitions()
        };
        assert_eq!(parts(3, 2), vec![vec![0], vec![1, 2]]);
        assert_eq!(parts(2, 4), vec![vec![], vec![0], vec![], vec![1]]);
        for len in 0..40 {
            for n in 1..9 {
                let spark: Vec<Vec<usize>> = (0..n)
                    .map(|i| (i * len / n..(i + 1) * len / n).collect())
                    .collect();
                assert_eq!(parts(len, n), spark, "{len} over {n}");
            }
        }
    }

    #[test]
    fn unique_partition_is_moved_shared_is_cloned() {
        let b = Batch::from_vec(vec![String::from("a")], 1);
        let shared = b.clone();
        let parts = b.into_partitions();
        assert_eq!(parts, vec![vec![String::from("a")]]);
        assert_eq!(shared.collect(), vec![String::from("a")]);
    }

    #[test]
    fn union_shares_partitions() {
        let a = Batch::from_vec(vec![1, 2], 1);
        let b = Batch::from_vec(vec![3], 1);
        let u = a.clone().union(&b);
        assert_eq!(u.num_partitions(), 2);
        assert!(Arc::ptr_eq(&u.partitions()[0], &a.partitions()[0]));
        assert_eq!(u.collect(), vec![1, 2, 3]);
    }
}
