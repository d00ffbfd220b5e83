//! `update_state_by_key`: per key, the function of the spec turns new values and the
//! previous state into the new state, for every key with state or new values. The state
//! is rebuilt wholesale every batch (the function may change any key), so it is
//! checkpointed as full snapshots.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::shuffle::{partition_with, Partitioner};
use crate::batch::{Batch, Data};
use crate::checkpoint::state::{KeyedState, KeyedStateful};
use crate::clock::Time;
use crate::codec::Codec;
use crate::error::Result;
use crate::graph::NodeCell;
use crate::hash::FxHashMap;
use crate::traits::{Operator, Stateful};
use crate::types::{lock, BatchContext, NameFn};

/// The updates of one partition handed to an `UpdateStateSpec`'s function: every key
/// with state or new values, with its new values (in arrival order) and its state.
pub type StateUpdates<K, V, S> = std::vec::IntoIter<(K, Vec<V>, Option<S>)>;

pub(crate) type UpdateFn<K, V, S> =
    Arc<dyn Fn(Time, StateUpdates<K, V, S>) -> Vec<(K, S)> + Send + Sync>;

/// The operator: its parent, how keys are placed, the function, and the state.
pub(crate) struct UpdateStateOp<K, V, S> {
    parent: Arc<NodeCell<(K, V)>>,
    partitioner: Arc<dyn Partitioner<K>>,
    func: UpdateFn<K, V, S>,
    /// The function returns only keys it was given (the per-key forms): they are in
    /// their partitions already.
    keys_stay: bool,
    state: Arc<Mutex<KeyedState<K, S>>>,
    /// State restored from a checkpoint written with another partition count is spread
    /// by the default hash: put where this partitioner wants it, once.
    placed: AtomicBool,
}

impl<K, V, S> UpdateStateOp<K, V, S>
where
    K: Data + Hash + Eq + Codec,
    V: Data,
    S: Data + Codec,
{
    pub fn new(
        parent: Arc<NodeCell<(K, V)>>,
        partitioner: Arc<dyn Partitioner<K>>,
        func: UpdateFn<K, V, S>,
        keys_stay: bool,
        initial: Vec<(K, S)>,
    ) -> Self {
        let n = partitioner.num_partitions().max(1);
        let by = partitioner.clone();
        let initial = KeyedState::placed(initial, n, false, |k| by.partition(k) % n);
        UpdateStateOp {
            parent,
            partitioner,
            func,
            keys_stay,
            state: Arc::new(Mutex::new(initial)),
            placed: AtomicBool::new(false),
        }
    }

    fn partitions(&self) -> usize {
        self.partitioner.num_partitions().max(1)
    }

    fn place(&self, k: &K) -> usize {
        self.partitioner.partition(k) % self.partitions()
    }
}

impl<K, V, S> Operator<(K, S)> for UpdateStateOp<K, V, S>
where
    K: Data + Hash + Eq + Codec,
    V: Data,
    S: Data + Codec,
{
    fn state(&self, name: NameFn) -> Option<Arc<dyn Stateful>> {
        Some(Arc::new(KeyedStateful::new(name, self.state.clone())))
    }

    fn compute(&self, cx: &BatchContext) -> Result<Batch<(K, S)>> {
        let t = cx.time;
        let n = self.partitions();
        let input = partition_with(self.parent.get_or_compute(cx)?, &*self.partitioner);
        let mut st = lock(&self.state);
        // Full snapshots only: the maps are rebuilt wholesale every batch.
        let maps = st.untracked_maps_mut();
        if !self.placed.swap(true, Ordering::AcqRel) {
            *maps = rebucket(std::mem::take(maps), n, &|k: &K| self.place(k));
        }
        let func = &self.func;
        let parts: Vec<Vec<(K, S)>> = maps
            .par_iter_mut()
            .zip(input.into_par_iter())
            .map(|(map, records)| {
                let mut grouped: FxHashMap<K, Vec<V>> = FxHashMap::default();
                for (k, v) in records {
                    grouped.entry(k).or_default().push(v);
                }
                let mut updates = Vec::with_capacity(map.len() + grouped.len());
                for (k, s) in map.drain() {
                    let values = grouped.remove(&k).unwrap_or_default();
                    updates.push((k, values, Some(s)));
                }
                updates.extend(grouped.into_iter().map(|(k, values)| (k, values, None)));
                func(t, updates.into_iter())
            })
            .collect();
        // The function may return any keys: each goes to its partition.
        let misplaced = !self.keys_stay
            && parts
                .iter()
                .enumerate()
                .any(|(j, part)| part.iter().any(|(k, _)| self.place(k) != j));
        let parts = if misplaced {
            let all: Vec<(K, S)> = parts.into_iter().flatten().collect();
            let mut fixed: Vec<Vec<(K, S)>> = (0..n).map(|_| Vec::new()).collect();
            for (k, s) in all {
                fixed[self.place(&k)].push((k, s));
            }
            fixed
        } else {
            parts
        };
        for (map, part) in maps.iter_mut().zip(&parts) {
            map.extend(part.iter().cloned());
        }
        Ok(Batch::from_partitions(parts))
    }
}

/// The entries of `maps` in `n` maps, each where `place` puts its key.
fn rebucket<K: Hash + Eq, S>(
    maps: Vec<FxHashMap<K, S>>,
    n: usize,
    place: &impl Fn(&K) -> usize,
) -> Vec<FxHashMap<K, S>> {
    let mut out: Vec<FxHashMap<K, S>> = (0..n).map(|_| FxHashMap::default()).collect();
    for map in maps {
        for (k, s) in map {
            out[place(&k)].insert(k, s);
        }
    }
    out
}
