//! `map_with_state`: calls the spec's function for every record with its key's
//! [`State`], emits what it returns, times out idle keys, and emits state snapshots when
//! asked. Checkpointed as deltas of the keys that changed, logged as they change.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::shuffle::partition_by_key;
use crate::batch::{Batch, Data};
use crate::checkpoint::state::{KeyedState, KeyedStateful, Recording};
use crate::clock::Time;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::graph::NodeCell;
use crate::traits::{Operator, Stateful};
use crate::types::{lock, BatchContext, NameFn};

/// The state of one key as seen by a `map_with_state`
/// function: read it, update it, remove it, and know whether the key is timing out.
///
/// As in Spark, misuse fails the batch with an error naming the operator and the key:
/// `update` or `remove` after `remove`, and `update` or `remove` of a key that is timing
/// out (its state is removed after the call anyway).
///
/// For unit tests of a mapping function, make one with [`State::new`] or
/// [`State::timing_out`] and look at it afterwards:
///
/// ```
/// use lockgate_core::State;
///
/// fn count(word: &str, one: Option<i64>, state: &mut State<i64>) -> Option<(String, i64)> {
///     let n = state.get().copied().unwrap_or(0) + one?;
///     state.update(n);
///     Some((word.to_string(), n))
/// }
///
/// let mut state = State::new(Some(41));
/// assert_eq!(count("a", Some(1), &mut state), Some(("a".to_string(), 42)));
/// assert!(state.is_updated() && !state.is_removed());
/// assert_eq!(state.get(), Some(&42));
/// assert_eq!(state.misuse(), None);
///
/// let mut ending = State::timing_out(Some(42));
/// assert_eq!(count("a", None, &mut ending), None);
/// assert!(ending.is_timing_out());
/// ```
#[derive(Debug)]
pub struct State<S> {
    pub(crate) value: Option<S>,
    pub(crate) updated: bool,
    pub(crate) removed: bool,
    timing_out: bool,
    pub(crate) misuse: Option<&'static str>,
}

impl<S> State<S> {
    /// The state of a key with `value` (`None`: the key has no state yet), as the
    /// function sees it for a key with a record.
    pub fn new(value: Option<S>) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out: false,
            misuse: None,
        }
    }

    /// The state of a key that is timing out, as the function sees it for its last call.
    pub fn timing_out(value: Option<S>) -> Self {
        State {
            timing_out: true,
            ..State::new(value)
        }
    }

    /// True when the key has state (and it was not removed).
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state. Not allowed after [`remove`](Self::remove) or while the key
    /// is timing out: the call is ignored and the batch fails with an error naming the
    /// operator and the key.
    pub fn update(&mut self, value: S) {
        if self.removed {
            self.misuse_once("State::update() was called after State::remove()");
        } else if self.timing_out {
            self.misuse_once("State::update() was called for a key that is timing out");
        } else {
            self.value = Some(value);
            self.updated = true;
        }
    }

    /// Removes the key's state. Not allowed twice or while the key is timing out (its
    /// state is removed after that call anyway): the batch fails with an error naming
    /// the operator and the key.
    pub fn remove(&mut self) {
        if self.removed {
            self.misuse_once("State::remove() was called twice");
        } else if self.timing_out {
            self.misuse_once(
                "State::remove() was called for a key that is timing out (its state is \
                 removed after this call anyway)",
            );
        } else {
            self.value = None;
            self.removed = true;
            self.updated = false;
        }
    }

    /// True when the function is called because the key has been idle longer than the
    /// timeout; the state is removed after this call.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }

    /// True when the state was updated by this call (and not removed since).
    pub fn is_updated(&self) -> bool {
        self.updated
    }

    /// True when the state was removed by this call.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The first misuse of this state (see the type's docs), if any: what the batch
    /// fails with.
    pub fn misuse(&self) -> Option<&'static str> {
        self.misuse
    }

    fn misuse_once(&mut self, what: &'static str) {
        self.misuse.get_or_insert(what);
    }
}

/// A `map_with_state` function: `(batch time, key, value, state) -> output`.
pub(crate) type MapFn<K, V, S, U> =
    Arc<dyn Fn(Time, &K, Option<V>, &mut State<S>) -> Option<U> + Send + Sync>;

/// The error message of a misused [`State`]: what was done, and to which key.
fn misuse<K: std::fmt::Debug>(what: &str, key: &K) -> String {
    format!("{what} (key {key:?}); see the rules in the docs of `State`")
}

/// What the internal map-with-state node emits.
#[derive(Clone, Debug)]
pub(crate) enum MwsItem<K, S, U> {
    Mapped(U),
    Snapshot(K, S),
}

/// The operator: per key, the state and the batch time of its last update (the idle
/// timeout counts from it).
pub(crate) struct MapWithStateOp<K, V, S, U> {
    parent: Arc<NodeCell<(K, V)>>,
    func: MapFn<K, V, S, U>,
    timeout: Option<i64>,
    state: Arc<Mutex<KeyedState<K, (S, i64)>>>,
    /// Someone reads the state snapshots: emit them.
    want_snapshots: Arc<AtomicBool>,
    /// The initial state has been stamped with the first batch's time.
    stamped: AtomicBool,
}

impl<K, V, S, U> MapWithStateOp<K, V, S, U>
where
    K: Data + Hash + Eq + Codec,
    S: Data + Codec,
{
    pub fn new(
        parent: Arc<NodeCell<(K, V)>>,
        partitions: usize,
        func: MapFn<K, V, S, U>,
        timeout: Option<i64>,
        initial: Vec<(K, S)>,
        want_snapshots: Arc<AtomicBool>,
    ) -> Self {
        let initial: Vec<(K, (S, i64))> = initial
            .into_iter()
            .map(|(k, s)| (k, (s, i64::MIN)))
            .collect();
        MapWithStateOp {
            parent,
            func,
            timeout,
            state: Arc::new(Mutex::new(KeyedState::from_entries(
                initial,
                partitions.max(1),
                true,
            ))),
            want_snapshots,
            stamped: AtomicBool::new(false),
        }
    }
}

impl<K, V, S, U> Operator<MwsItem<K, S, U>> for MapWithStateOp<K, V, S, U>
where
    K: Data + Hash + Eq + Codec + std::fmt::Debug,
    V: Data,
    S: Data + Codec,
    U: Data,
{
    fn state(&self, name: NameFn) -> Option<Arc<dyn Stateful>> {
        Some(Arc::new(KeyedStateful::new(name, self.state.clone())))
    }

    fn compute(&self, cx: &BatchContext) -> Result<Batch<MwsItem<K, S, U>>> {
        let t = cx.time;
        let (func, timeout) = (&self.func, self.timeout);
        let snapshots = self.want_snapshots.load(Ordering::Acquire);
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let recording = st.recording();
        if !self.stamped.swap(true, Ordering::AcqRel) {
            // Initial state counts as updated at the first batch (as in Spark).
            for mut part in st.parts() {
                part.retain(|_, (_, stamp), changed| {
                    if *stamp == i64::MIN {
                        *stamp = t.0;
                        *changed = true;
                    }
                    true
                });
            }
        }
        let input = partition_by_key(self.parent.get_or_compute(cx)?, st.partitions());
        let results: Vec<Result<Vec<MwsItem<K, S, U>>, String>> = st
            .parts()
            .into_par_iter()
            .zip(input.into_par_iter())
            .map(|(mut state, records)| {
                let mut out = Vec::with_capacity(records.len());
                // Calls the function on one key's previous state; returns the state
                // to keep and how to record the change (the key is updated in place,
                // found once).
                let mut step = |k: &K, v: V, prev: Option<(S, i64)>| {
                    let prev_time = prev.as_ref().map(|(_, pt)| *pt);
                    let mut st = State::new(prev.map(|(s, _)| s));
                    out.extend(func(t, k, Some(v), &mut st).map(MwsItem::Mapped));
                    if let Some(m) = st.misuse {
                        return Err(misuse(m, k));
                    }
                    let mut changed = st.updated || st.removed;
                    let next = st.value.map(|s| {
                        let stamp = if st.updated || timeout.is_some() {
                            t.0
                        } else {
                            prev_time.unwrap_or(t.0)
                        };
                        changed |= stamp != prev_time.unwrap_or(stamp);
                        (s, stamp)
                    });
                    // A key already changed in this batch (stamped now) is marked
                    // instead, so that a delta holds at most two entries per key
                    // however many records it gets: its first change, logged, and
                    // its value at the end of the batch.
                    let again = prev_time == Some(t.0);
                    let how = match recording {
                        Recording::Log if again => Recording::Mark,
                        how => how,
                    };
                    Ok((next, changed.then_some(how)))
                };
                for (k, v) in records {
                    state.upsert_recorded(k, |k, prev| step(k, v, prev))?;
                }
                if let Some(idle) = timeout {
                    let threshold = t.0 - idle;
                    let expired: Vec<K> = state
                        .iter()
                        .filter(|(_, (_, stamp))| *stamp < threshold)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in expired {
                        if let Some((s, _)) = state.remove_recorded(&k) {
                            let mut st = State::timing_out(Some(s));
                            out.extend(func(t, &k, None, &mut st).map(MwsItem::Mapped));
                            if let Some(m) = st.misuse {
                                return Err(misuse(m, &k));
                            }
                        }
                    }
                }
                if snapshots {
                    out.extend(
                        state
                            .iter()
                            .map(|(k, (s, _))| MwsItem::Snapshot(k.clone(), s.clone())),
                    );
                }
                Ok(out)
            })
            .collect();
        let mut parts = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(p) => parts.push(p),
                Err(message) => {
                    return Err(Error::Operator {
                        operator: String::new(), // filled in with the node name
                        time: t,
                        message,
                    });
                }
            }
        }
        Ok(Batch::from_partitions(parts))
    }
}
