//! Operations on streams of key-value pairs: per-batch aggregation by key, grouping,
//! joins and cogroup. Keys are hash-partitioned with a fixed hash, so a key always lands
//! in the same partition for a given partition count, in every run.

use std::hash::Hash;

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::dstream::DStream;
use crate::operator::shuffle::{cogroup_batches, combine};
pub use crate::operator::shuffle::{HashPartitioner, Partitioner};
pub use crate::types::partition_of;

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
}
