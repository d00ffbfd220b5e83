//! `reduce_by_key_and_window_inv`: the window's value per key, kept as state and updated
//! incrementally as Spark does: `window(t) = window(t - S) - reduce(batches leaving) +
//! reduce(batches entering)`, so its cost follows the slide, not the window length.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::window::{buffered, collect_parent};
use crate::batch::{Batch, Data};
use crate::checkpoint::state::{
    BufferState, BufferStateful, KeyedState, KeyedStateful, NameFn, PairStateful,
};
use crate::codec::Codec;
use crate::error::Result;
use crate::graph::NodeCell;
use crate::hash::FxHashMap;
use crate::traits::{Operator, Stateful};
use crate::types::{lock, partition_of, BatchContext};

/// Keeps the pairs for which it is true.
pub(crate) type FilterFn<K, V> = Arc<dyn Fn(&(K, V)) -> bool + Send + Sync>;

pub(crate) type ReduceFn<V> = Arc<dyn Fn(V, V) -> V + Send + Sync>;

/// `reduce_by_key_and_window_inv`: the window's value per key is kept as state and
/// updated from the reduced batches leaving and entering it.
pub(crate) struct InverseWindowOp<K, V> {
    pub parent: Arc<NodeCell<(K, V)>>,
    pub len: i64,
    pub slide: i64,
    pub buffer: Arc<Mutex<BufferState<(K, V)>>>,
    pub window: Arc<Mutex<KeyedState<K, V>>>,
    pub f: ReduceFn<V>,
    pub inv: ReduceFn<V>,
    pub filter: Option<FilterFn<K, V>>,
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
        Box::new(b.iter().filter(move |(k, _)| partition_of(k, n) == j))
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

    /// The window's values with its buffer: one operator, one piece of state.
    fn state(&self, name: NameFn) -> Option<Arc<dyn Stateful>> {
        Some(Arc::new(PairStateful {
            first: KeyedStateful::new(name.clone(), self.window.clone()),
            second: BufferStateful {
                name,
                state: self.buffer.clone(),
            },
        }))
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
