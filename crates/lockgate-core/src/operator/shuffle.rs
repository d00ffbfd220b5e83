//! The shuffle behind every keyed operation: pairs moved to the partition of their key
//! (a [`Partitioner`]; by default [`HashPartitioner`], a fixed hash), with a map-side
//! combine for aggregations and a cogroup for joins.

use std::hash::Hash;

use hashbrown::hash_map::Entry;
use rayon::prelude::*;

use crate::batch::{take_part, transpose_by_bucket, Batch, Data};
use crate::hash::FxHashMap;
use crate::types::partition_of;

/// How keys are spread over partitions: Spark's `Partitioner`. Keyed state is kept
/// per partition; a partitioner must be deterministic (the same key, the same partition,
/// in every run), or a recovered job would look for a key's state where it is not.
pub trait Partitioner<K: ?Sized>: Send + Sync + 'static {
    /// The number of partitions (at least 1).
    fn num_partitions(&self) -> usize;
    /// The partition of `key`, in `0..num_partitions()` (a larger value is taken
    /// modulo the count).
    fn partition(&self, key: &K) -> usize;
}

/// The default partitioner: a fixed hash of the key modulo the partition count (the one
/// every keyed operation uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashPartitioner(pub usize);

impl<K: Hash + ?Sized> Partitioner<K> for HashPartitioner {
    fn num_partitions(&self) -> usize {
        self.0.max(1)
    }
    fn partition(&self, key: &K) -> usize {
        partition_of(key, self.0)
    }
}

/// Moves the pairs of `batch` into `n` partitions by key hash, keeping the relative
/// order of pairs from the same input partition (and input partitions in order).
pub(crate) fn partition_by_key<K: Data + Hash, V: Data>(
    batch: Batch<(K, V)>,
    n: usize,
) -> Vec<Vec<(K, V)>> {
    partition_with(batch, &HashPartitioner(n.max(1)))
}

/// [`partition_by_key`] with any partitioner.
pub(crate) fn partition_with<K: Data, V: Data, P: Partitioner<K> + ?Sized>(
    batch: Batch<(K, V)>,
    partitioner: &P,
) -> Vec<Vec<(K, V)>> {
    let n = partitioner.num_partitions().max(1);
    let buckets: Vec<Vec<Vec<(K, V)>>> = batch
        .into_shared()
        .into_par_iter()
        .map(|part| {
            let mut out: Vec<Vec<(K, V)>> = (0..n).map(|_| Vec::new()).collect();
            for (k, v) in take_part(part) {
                let j = partitioner.partition(&k) % n;
                out[j].push((k, v));
            }
            out
        })
        .collect();
    transpose_concat(buckets, n)
}

/// `[input][bucket] -> [bucket]`, concatenating inputs in order.
fn transpose_concat<X>(buckets: Vec<Vec<Vec<X>>>, n: usize) -> Vec<Vec<X>> {
    let mut out: Vec<Vec<X>> = (0..n).map(|_| Vec::new()).collect();
    for per_input in buckets {
        for (j, b) in per_input.into_iter().enumerate() {
            if out[j].is_empty() {
                out[j] = b;
            } else {
                out[j].extend(b);
            }
        }
    }
    out
}

/// The generic shuffle-and-combine behind every per-key aggregation: map-side
/// combine per input partition, then merge of the combiners per output partition.
pub(crate) fn combine<K, V, C>(
    batch: Batch<(K, V)>,
    n: usize,
    create: &(dyn Fn(V) -> C + Sync),
    merge_value: &(dyn Fn(C, V) -> C + Sync),
    merge_combiners: &(dyn Fn(C, C) -> C + Sync),
) -> Batch<(K, C)>
where
    K: Data + Hash + Eq,
    V: Data,
    C: Data,
{
    let n = n.max(1);
    let map_side: Vec<Vec<Vec<(K, C)>>> = batch
        .into_shared()
        .into_par_iter()
        .map(|part| {
            let mut maps: Vec<FxHashMap<K, C>> = (0..n).map(|_| FxHashMap::default()).collect();
            for (k, v) in take_part(part) {
                let j = partition_of(&k, n);
                fold_into(&mut maps[j], k, v, create, merge_value);
            }
            maps.into_iter().map(|m| m.into_iter().collect()).collect()
        })
        .collect();
    let per_output = transpose_by_bucket(map_side, n);
    let parts: Vec<Vec<(K, C)>> = per_output
        .into_par_iter()
        .map(|inputs| {
            if inputs.len() == 1 {
                return inputs.into_iter().flatten().collect();
            }
            // Every input holds distinct keys: the largest is a lower bound of the result.
            let at_least = inputs.iter().map(Vec::len).max().unwrap_or(0);
            let mut merged: FxHashMap<K, C> =
                FxHashMap::with_capacity_and_hasher(at_least, Default::default());
            for (k, c) in inputs.into_iter().flatten() {
                fold_into(&mut merged, k, c, &|c| c, merge_combiners);
            }
            merged.into_iter().collect()
        })
        .collect();
    Batch::from_partitions(parts)
}

/// Adds `v` under `k`: a new combiner from `create`, or `merge` into the one there
/// (updated in place: one lookup, no temporary).
#[inline(always)]
fn fold_into<K: Hash + Eq, V, C>(
    map: &mut FxHashMap<K, C>,
    k: K,
    v: V,
    create: &(dyn Fn(V) -> C + Sync),
    merge: &(dyn Fn(C, V) -> C + Sync),
) {
    match map.entry(k) {
        Entry::Occupied(e) => {
            e.replace_entry_with(|_, c| Some(merge(c, v)));
        }
        Entry::Vacant(e) => {
            e.insert(create(v));
        }
    }
}

/// Groups the values of two keyed batches by key into `n` partitions.
pub(crate) fn cogroup_batches<K, V, W>(
    left: Batch<(K, V)>,
    right: Batch<(K, W)>,
    n: usize,
) -> Vec<Vec<(K, (Vec<V>, Vec<W>))>>
where
    K: Data + Hash + Eq,
    V: Data,
    W: Data,
{
    let n = n.max(1);
    let (l, r) = rayon::join(|| partition_by_key(left, n), || partition_by_key(right, n));
    l.into_par_iter()
        .zip(r.into_par_iter())
        .map(|(lp, rp)| {
            let mut groups: FxHashMap<K, (Vec<V>, Vec<W>)> = FxHashMap::default();
            let mut order: Vec<K> = Vec::new();
            for (k, v) in lp {
                groups
                    .entry(k)
                    .or_insert_with_key(|k| {
                        order.push(k.clone());
                        (Vec::new(), Vec::new())
                    })
                    .0
                    .push(v);
            }
            for (k, w) in rp {
                groups
                    .entry(k)
                    .or_insert_with_key(|k| {
                        order.push(k.clone());
                        (Vec::new(), Vec::new())
                    })
                    .1
                    .push(w);
            }
            order
                .into_iter()
                .filter_map(|k| groups.remove(&k).map(|g| (k, g)))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_of_is_stable_and_in_range() {
        for n in 1..9 {
            for k in 0..100 {
                let p = partition_of(&k, n);
                assert!(p < n);
                assert_eq!(p, partition_of(&k, n));
            }
        }
    }

    #[test]
    fn combine_sums_across_partitions() {
        let b = Batch::from_vec(vec![("a", 1), ("b", 2), ("a", 3), ("a", 4)], 3);
        let out = combine(b, 2, &|v| v, &|a, b| a + b, &|a, b| a + b);
        let mut got = out.collect();
        got.sort();
        assert_eq!(got, vec![("a", 8), ("b", 2)]);
    }

    #[test]
    fn partition_by_key_keeps_per_key_order() {
        let b = Batch::from_vec(vec![("a", 1), ("a", 2), ("a", 3), ("a", 4)], 4);
        let parts = partition_by_key(b, 3);
        let a: Vec<i32> = parts.into_iter().flatten().map(|(_, v)| v).collect();
        assert_eq!(a, vec![1, 2, 3, 4]);
    }
}
