//! Operations on streams of key-value pairs: per-batch aggregation by key, grouping,
//! joins and cogroup. Keys are hash-partitioned with a fixed hash, so a key always lands
//! in the same partition for a given partition count, in every run.

use std::hash::Hash;

use hashbrown::hash_map::Entry;
use rayon::prelude::*;

use crate::hash::FxHashMap;

use crate::batch::transpose_by_bucket;
use crate::batch::{take_part, Batch, Data};
use crate::dstream::DStream;
pub use crate::types::partition_of;

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

impl<K, V> DStream<(K, V)>
where
    K: Data + Hash + Eq,
    V: Data,
{
    /// Applies `f` to every value, keeping keys.
    pub fn map_values<U: Data>(
        &self,
        f: impl Fn(V) -> U + Send + Sync + 'static,
    ) -> DStream<(K, U)> {
        self.map(move |(k, v)| (k, f(v))).name_kind("map_values")
    }

    /// Applies `f` to every value and pairs each result with the key.
    pub fn flat_map_values<U: Data, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> DStream<(K, U)>
    where
        I: IntoIterator<Item = U>,
    {
        self.flat_map(move |(k, v)| {
            let k2 = k;
            f(v).into_iter()
                .map(|u| (k2.clone(), u))
                .collect::<Vec<_>>()
        })
        .name_kind("flat_map_values")
    }

    /// Combines the values of each key in a batch with `f` (default partitions).
    pub fn reduce_by_key(&self, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> DStream<(K, V)> {
        let n = self.default_partitions();
        let p = self.parent();
        self.child("reduce_by_key", move |cx| {
            Ok(combine(p.get_or_compute(cx)?, n, &|v| v, &f, &f))
        })
    }

    /// [`reduce_by_key`](Self::reduce_by_key) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).reduce_by_key(..)`: one way to set partition counts"
    )]
    pub fn reduce_by_key_with_partitions(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        n: usize,
    ) -> DStream<(K, V)> {
        self.shuffle_partitions(n).reduce_by_key(f)
    }

    /// All values of each key in a batch.
    pub fn group_by_key(&self) -> DStream<(K, Vec<V>)> {
        let n = self.default_partitions();
        let p = self.parent();
        self.child("group_by_key", move |cx| {
            Ok(combine(
                p.get_or_compute(cx)?,
                n,
                &|v| vec![v],
                &|mut c, v| {
                    c.push(v);
                    c
                },
                &|mut a, b| {
                    a.extend(b);
                    a
                },
            ))
        })
    }

    /// [`group_by_key`](Self::group_by_key) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).group_by_key(..)`: one way to set partition counts"
    )]
    pub fn group_by_key_with_partitions(&self, n: usize) -> DStream<(K, Vec<V>)> {
        self.shuffle_partitions(n).group_by_key()
    }

    /// Spark's `combineByKey`: per key, `create` makes a combiner from the first value,
    /// `merge_value` adds a value, `merge_combiners` merges two partial combiners.
    pub fn combine_by_key<C: Data>(
        &self,
        create: impl Fn(V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(C, V) -> C + Send + Sync + 'static,
        merge_combiners: impl Fn(C, C) -> C + Send + Sync + 'static,
        n: usize,
    ) -> DStream<(K, C)> {
        let p = self.parent();
        self.child("combine_by_key", move |cx| {
            Ok(combine(
                p.get_or_compute(cx)?,
                n,
                &create,
                &merge_value,
                &merge_combiners,
            ))
        })
    }

    /// Per batch, each key with the values of both streams (default partitions).
    pub fn cogroup<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (Vec<V>, Vec<W>))> {
        let n = self.default_partitions();
        self.cogrouped("cogroup", other, n, |k, vs, ws, out| {
            out.push((k, (vs, ws)));
        })
    }

    /// [`cogroup`](Self::cogroup) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).cogroup(..)`: one way to set partition counts"
    )]
    pub fn cogroup_with_partitions<W: Data>(
        &self,
        other: &DStream<(K, W)>,
        n: usize,
    ) -> DStream<(K, (Vec<V>, Vec<W>))> {
        self.shuffle_partitions(n).cogroup(other)
    }

    fn cogrouped<W: Data, R: Data>(
        &self,
        kind: &'static str,
        other: &DStream<(K, W)>,
        n: usize,
        emit: impl Fn(K, Vec<V>, Vec<W>, &mut Vec<R>) + Send + Sync + 'static,
    ) -> DStream<R> {
        if self.slide_ms() != other.slide_ms() {
            self.graph_error(
                kind,
                format!(
                    "{kind} of streams with different slides ({} ms and {} ms)",
                    self.slide_ms(),
                    other.slide_ms()
                ),
            );
        }
        other.node.meta.add_consumer();
        let (a, b) = (self.parent(), other.parent());
        self.child(kind, move |cx| {
            let groups = cogroup_batches(a.get_or_compute(cx)?, b.get_or_compute(cx)?, n);
            let parts: Vec<Vec<R>> = groups
                .into_par_iter()
                .map(|part| {
                    let mut out = Vec::new();
                    for (k, (vs, ws)) in part {
                        emit(k, vs, ws, &mut out);
                    }
                    out
                })
                .collect();
            Ok(Batch::from_partitions(parts))
        })
    }

    /// Inner join per batch: every pair of values with the same key.
    pub fn join<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (V, W))> {
        let n = self.default_partitions();
        self.cogrouped("join", other, n, |k, vs, ws, out| {
            for v in &vs {
                for w in &ws {
                    out.push((k.clone(), (v.clone(), w.clone())));
                }
            }
        })
    }

    /// [`join`](Self::join) into `n` partitions.
    #[deprecated(note = "use `.shuffle_partitions(n).join(..)`: one way to set partition counts")]
    pub fn join_with_partitions<W: Data>(
        &self,
        other: &DStream<(K, W)>,
        n: usize,
    ) -> DStream<(K, (V, W))> {
        self.shuffle_partitions(n).join(other)
    }

    /// Left outer join per batch: every value of this stream, with `None` when the other
    /// stream has no value for the key.
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (V, Option<W>))> {
        let n = self.default_partitions();
        self.cogrouped("left_outer_join", other, n, |k, vs, ws, out| {
            for v in &vs {
                if ws.is_empty() {
                    out.push((k.clone(), (v.clone(), None)));
                }
                for w in &ws {
                    out.push((k.clone(), (v.clone(), Some(w.clone()))));
                }
            }
        })
    }

    /// [`left_outer_join`](Self::left_outer_join) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).left_outer_join(..)`: one way to set partition counts"
    )]
    pub fn left_outer_join_with_partitions<W: Data>(
        &self,
        other: &DStream<(K, W)>,
        n: usize,
    ) -> DStream<(K, (V, Option<W>))> {
        self.shuffle_partitions(n).left_outer_join(other)
    }

    /// Right outer join per batch.
    pub fn right_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, W))> {
        let n = self.default_partitions();
        self.cogrouped("right_outer_join", other, n, |k, vs, ws, out| {
            for w in &ws {
                if vs.is_empty() {
                    out.push((k.clone(), (None, w.clone())));
                }
                for v in &vs {
                    out.push((k.clone(), (Some(v.clone()), w.clone())));
                }
            }
        })
    }

    /// [`right_outer_join`](Self::right_outer_join) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).right_outer_join(..)`: one way to set partition counts"
    )]
    pub fn right_outer_join_with_partitions<W: Data>(
        &self,
        other: &DStream<(K, W)>,
        n: usize,
    ) -> DStream<(K, (Option<V>, W))> {
        self.shuffle_partitions(n).right_outer_join(other)
    }

    /// Full outer join per batch.
    pub fn full_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, Option<W>))> {
        let n = self.default_partitions();
        self.cogrouped("full_outer_join", other, n, |k, vs, ws, out| {
            if vs.is_empty() {
                for w in ws {
                    out.push((k.clone(), (None, Some(w))));
                }
            } else if ws.is_empty() {
                for v in vs {
                    out.push((k.clone(), (Some(v), None)));
                }
            } else {
                for v in &vs {
                    for w in &ws {
                        out.push((k.clone(), (Some(v.clone()), Some(w.clone()))));
                    }
                }
            }
        })
    }

    /// [`full_outer_join`](Self::full_outer_join) into `n` partitions.
    #[deprecated(
        note = "use `.shuffle_partitions(n).full_outer_join(..)`: one way to set partition counts"
    )]
    pub fn full_outer_join_with_partitions<W: Data>(
        &self,
        other: &DStream<(K, W)>,
        n: usize,
    ) -> DStream<(K, (Option<V>, Option<W>))> {
        self.shuffle_partitions(n).full_outer_join(other)
    }
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
