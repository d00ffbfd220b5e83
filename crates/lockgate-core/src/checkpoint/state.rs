//! The checkpointable state containers operators keep: [`KeyedState`] (per-key state
//! hash-partitioned by key, with change tracking for deltas) and [`BufferState`]
//! (the batches a window still needs, by batch time).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use hashbrown::hash_map::Entry;

use crate::hash::{FxHashMap, FxHashSet};

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::codec::{schema_of, Codec, CodecError, Stored};
use crate::graph::NodeMeta;
use crate::traits::Stateful;
use crate::types::{lock, partition_of};

/// Per-key state in `n` partitions, remembering which keys changed since the last
/// [`encode`](Self::encode) so that a delta holds only those: as a set of changed keys
/// (their values read at encode time), or — for operators that record changes with
/// [`Part::upsert_recorded`] while checkpointing is on — as the changes themselves,
/// encoded when they happen, while key and value are at hand.
///
/// Its maps are private: every change goes through a method of [`Part`] (one
/// partition's view) that records it, so a delta cannot miss a change. Only state that
/// never writes deltas (`track` false: full snapshots) may be changed wholesale
/// ([`untracked_maps_mut`](Self::untracked_maps_mut)).
pub(crate) struct KeyedState<K, S> {
    maps: Vec<FxHashMap<K, S>>,
    dirty: Vec<FxHashSet<K>>,
    /// Changes encoded as they happened, per partition (with checkpointing only).
    log: Vec<ChangeLog>,
    /// Track changes (false for operators that write full snapshots anyway).
    track: bool,
    /// The context checkpoints (set once at start): changes are worth recording.
    checkpointed: bool,
}

/// How an operator records a change of its [`KeyedState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recording {
    /// Not checkpointing: nothing is kept.
    Off,
    /// The change itself, encoded now (applied in order at recovery).
    Log,
    /// The key only; its value is read when the state is encoded.
    Mark,
}

/// Encoded `(K, Option<S>)` changes of one partition, in the order they happened (a
/// delta is applied in order at recovery, so a key changed twice ends at its last value).
#[derive(Default)]
pub(crate) struct ChangeLog {
    entries: u64,
    bytes: Vec<u8>,
}

/// One partition of a [`KeyedState`], to read and change: every change is recorded for
/// the next delta.
pub(crate) struct Part<'a, K, S> {
    map: &'a mut FxHashMap<K, S>,
    dirty: &'a mut FxHashSet<K>,
    log: &'a mut ChangeLog,
    track: bool,
    recording: Recording,
}

impl<K: Hash + Eq + Clone + Codec, S: Codec> Part<'_, K, S> {
    /// Marks `k` changed (its value is read when the state is encoded).
    pub fn mark(&mut self, k: &K) {
        if self.track {
            // Cloned only when not marked yet.
            self.dirty.get_or_insert_with(k, K::clone);
        }
    }

    pub fn get(&self, k: &K) -> Option<&S> {
        self.map.get(k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &S)> {
        self.map.iter()
    }

    /// Sets `k` to `s`.
    pub fn insert(&mut self, k: K, s: S) {
        self.mark(&k);
        self.map.insert(k, s);
    }

    /// The state of `k` to change in place (`k` counts as changed).
    pub fn get_mut(&mut self, k: &K) -> Option<&mut S> {
        if self.map.contains_key(k) {
            self.mark(k);
        }
        self.map.get_mut(k)
    }

    /// The state of `k` to change in place, inserted with `S::default()` if absent (`k`
    /// counts as changed).
    pub fn entry_or_default(&mut self, k: K) -> &mut S
    where
        S: Default,
    {
        self.mark(&k);
        self.map.entry(k).or_default()
    }

    /// Replaces the state of `k` by `f(k, old)` (`None`: removed), found once.
    pub fn upsert(&mut self, k: K, f: impl FnOnce(&K, Option<S>) -> Option<S>) {
        self.mark(&k);
        match self.map.entry(k) {
            Entry::Occupied(e) => {
                e.replace_entry_with(|k, s| f(k, Some(s)));
            }
            Entry::Vacant(e) => {
                if let Some(s) = f(e.key(), None) {
                    e.insert(s);
                }
            }
        }
    }

    /// Like [`upsert`](Self::upsert), for operators that log changes as they happen:
    /// `f` returns the new state and how to record it (`None`: unchanged; `Some(how)`
    /// with how as [`recording`](KeyedState::recording) gives, or [`Recording::Mark`]
    /// for a key changed again in the same batch), or an error (the batch fails; the
    /// key is left absent).
    pub fn upsert_recorded<E>(
        &mut self,
        k: K,
        f: impl FnOnce(&K, Option<S>) -> Result<(Option<S>, Option<Recording>), E>,
    ) -> Result<(), E> {
        let (log, dirty, track) = (&mut *self.log, &mut *self.dirty, self.track);
        match self.map.entry(k) {
            Entry::Occupied(e) => {
                let mut outcome = Ok(None);
                let after = e.replace_entry_with(|k, s| match f(k, Some(s)) {
                    Ok((next, how)) => {
                        outcome = Ok(how);
                        next
                    }
                    Err(m) => {
                        outcome = Err(m);
                        None
                    }
                });
                match (outcome?, after) {
                    (Some(how), Entry::Occupied(e)) => {
                        Self::record_in(log, dirty, track, how, e.key(), Some(e.get()))
                    }
                    (Some(how), Entry::Vacant(e)) => {
                        Self::record_in(log, dirty, track, how, e.key(), None)
                    }
                    (None, _) => {}
                }
            }
            Entry::Vacant(e) => {
                let (next, how) = f(e.key(), None)?;
                if let (Some(how), Some(s)) = (how, &next) {
                    Self::record_in(log, dirty, track, how, e.key(), Some(s));
                }
                if let Some(s) = next {
                    e.insert(s);
                }
            }
        }
        Ok(())
    }

    /// Removes `k`, recording the removal as [`KeyedState::recording`] says.
    pub fn remove_recorded(&mut self, k: &K) -> Option<S> {
        let old = self.map.remove(k);
        if old.is_some() {
            Self::record_in(self.log, self.dirty, self.track, self.recording, k, None);
        }
        old
    }

    /// Keeps the keys for which `f` returns true; `f` may change a state in place and
    /// says so with `changed`. Removed and changed keys are recorded.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut S, &mut bool) -> bool) {
        let (dirty, track) = (&mut *self.dirty, self.track);
        self.map.retain(|k, s| {
            let mut changed = false;
            let keep = f(k, s, &mut changed);
            if (changed || !keep) && track {
                dirty.get_or_insert_with(k, K::clone);
            }
            keep
        });
    }

    /// Records that `k` now holds `value` (`None`: removed), as `how` says: encoded
    /// into the partition's log, `k` marked changed, or nothing.
    fn record_in(
        log: &mut ChangeLog,
        dirty: &mut FxHashSet<K>,
        track: bool,
        how: Recording,
        k: &K,
        value: Option<&S>,
    ) {
        match how {
            Recording::Log => {
                log.entries += 1;
                k.encode(&mut log.bytes);
                match value {
                    Some(s) => {
                        log.bytes.push(1);
                        s.encode(&mut log.bytes);
                    }
                    None => log.bytes.push(0),
                }
            }
            Recording::Mark if track => {
                dirty.get_or_insert_with(k, K::clone);
            }
            Recording::Mark | Recording::Off => {}
        }
    }
}

impl<K: Hash + Eq + Clone + Codec + Send, S: Codec + Send> KeyedState<K, S> {
    pub fn new(n: usize, track: bool) -> Self {
        KeyedState {
            maps: (0..n).map(|_| FxHashMap::default()).collect(),
            dirty: (0..n).map(|_| FxHashSet::default()).collect(),
            log: (0..n).map(|_| ChangeLog::default()).collect(),
            track,
            checkpointed: false,
        }
    }

    /// State holding `entries`, each in its key's partition (not recorded as changes:
    /// the first checkpoint of a state is a full snapshot).
    pub fn from_entries(entries: Vec<(K, S)>, n: usize, track: bool) -> Self {
        Self::placed(entries, n, track, |k| partition_of(k, n))
    }

    /// State holding `entries`, each in the partition `place` gives.
    pub fn placed(
        entries: Vec<(K, S)>,
        n: usize,
        track: bool,
        place: impl Fn(&K) -> usize,
    ) -> Self {
        let mut st = Self::new(n, track);
        for (k, s) in entries {
            let j = place(&k);
            st.maps[j].insert(k, s);
        }
        st
    }

    pub fn partitions(&self) -> usize {
        self.maps.len()
    }

    pub fn tracking(&self) -> bool {
        self.track
    }

    /// How changes are to be recorded by [`Part::upsert_recorded`]: logged while
    /// checkpointing, not at all without a checkpoint (nothing would ever read them).
    pub fn recording(&self) -> Recording {
        if self.checkpointed && self.track {
            Recording::Log
        } else {
            Recording::Off
        }
    }

    /// The state of `k` in partition `j`.
    pub fn get(&self, j: usize, k: &K) -> Option<&S> {
        self.maps.get(j).and_then(|m| m.get(k))
    }

    /// Every key, partition by partition.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.maps.iter().flat_map(|m| m.keys())
    }

    /// The states of partition `j`, to read.
    pub fn entries(&self, j: usize) -> impl Iterator<Item = (&K, &S)> {
        self.maps[j].iter()
    }

    /// Partition `j`, to change.
    pub fn part(&mut self, j: usize) -> Part<'_, K, S> {
        let recording = self.recording();
        Part {
            map: &mut self.maps[j],
            dirty: &mut self.dirty[j],
            log: &mut self.log[j],
            track: self.track,
            recording,
        }
    }

    /// Every partition, to change (in order; `into_par_iter` them for parallel work).
    pub fn parts(&mut self) -> Vec<Part<'_, K, S>> {
        let (track, recording) = (self.track, self.recording());
        self.maps
            .iter_mut()
            .zip(self.dirty.iter_mut())
            .zip(self.log.iter_mut())
            .map(|((map, dirty), log)| Part {
                map,
                dirty,
                log,
                track,
                recording,
            })
            .collect()
    }

    /// The maps themselves, for state that writes only full snapshots (`track` false),
    /// where no change needs recording. Panics (caught as the operator's error) on
    /// tracked state.
    pub fn untracked_maps_mut(&mut self) -> &mut Vec<FxHashMap<K, S>> {
        assert!(
            !self.track,
            "untracked access to keyed state that writes deltas"
        );
        &mut self.maps
    }

    /// Encodes partition `j` as `Vec<(K, Option<S>)>`: every entry (`full`) or the
    /// changed keys (`None` for removed ones). Clears the change set.
    pub fn encode(&mut self, j: usize, full: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let map = &self.maps[j];
        let dirty = std::mem::take(&mut self.dirty[j]);
        let log = std::mem::take(&mut self.log[j]);
        if full {
            (map.len() as u64).encode(&mut out);
            for (k, s) in map {
                k.encode(&mut out);
                out.push(1);
                s.encode(&mut out);
            }
        } else {
            // Logged changes first: a key also marked changed is written after them
            // with its current value.
            (log.entries + dirty.len() as u64).encode(&mut out);
            out.extend_from_slice(&log.bytes);
            for k in &dirty {
                k.encode(&mut out);
                match map.get(k) {
                    Some(s) => {
                        out.push(1);
                        s.encode(&mut out);
                    }
                    None => out.push(0),
                }
            }
        }
        out
    }

    /// Rebuilds the state from payloads per old partition (each applied in order),
    /// redistributing keys when the partition count changed.
    pub fn restore(&mut self, old: Vec<Vec<Stored>>) -> Result<(), CodecError> {
        let n = self.partitions();
        let same = old.len() == n;
        let mut maps: Vec<FxHashMap<K, S>> = (0..n).map(|_| FxHashMap::default()).collect();
        for (p, payloads) in old.into_iter().enumerate() {
            let mut map: FxHashMap<K, S> = FxHashMap::default();
            for payload in payloads {
                let entries: Vec<(K, Option<S>)> = payload.decode()?;
                for (k, s) in entries {
                    match s {
                        Some(s) => map.insert(k, s),
                        None => map.remove(&k),
                    };
                }
            }
            if same {
                maps[p] = map;
            } else {
                for (k, s) in map {
                    let j = partition_of(&k, n);
                    maps[j].insert(k, s);
                }
            }
        }
        self.maps = maps;
        self.dirty = (0..n).map(|_| FxHashSet::default()).collect();
        self.log = (0..n).map(|_| ChangeLog::default()).collect();
        Ok(())
    }

    /// Number of entries per partition.
    pub fn sizes(&self) -> Vec<usize> {
        self.maps.iter().map(|m| m.len()).collect()
    }
}

/// Batches kept by time (a window's buffer), with the times added and removed since
/// the last [`encode`](Self::encode).
pub(crate) struct BufferState<T> {
    pub batches: BTreeMap<Time, Batch<T>>,
    pub added: Vec<Time>,
    pub removed: Vec<Time>,
}

impl<T: Data + Codec> BufferState<T> {
    pub fn new() -> Self {
        BufferState {
            batches: BTreeMap::new(),
            added: Vec::new(),
            removed: Vec::new(),
        }
    }

    pub fn insert(&mut self, t: Time, b: Batch<T>) {
        self.batches.insert(t, b);
        self.added.push(t);
    }

    /// Drops batches at or before `t`.
    pub fn drop_through(&mut self, t: Time) {
        let keep = self.batches.split_off(&t.plus_ms(1));
        for old in std::mem::replace(&mut self.batches, keep).into_keys() {
            self.removed.push(old);
        }
    }

    /// Encodes `Vec<(time, Option<partitions>)>`: all batches (`full`) or the changes.
    pub fn encode(&mut self, full: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let added = std::mem::take(&mut self.added);
        let removed = std::mem::take(&mut self.removed);
        let write = |out: &mut Vec<u8>, t: &Time, b: &Batch<T>| {
            t.0.encode(out);
            out.push(1);
            (b.num_partitions() as u64).encode(out);
            for p in b.partitions() {
                (p.len() as u64).encode(out);
                for x in p.iter() {
                    x.encode(out);
                }
            }
        };
        if full {
            (self.batches.len() as u64).encode(&mut out);
            for (t, b) in &self.batches {
                write(&mut out, t, b);
            }
        } else {
            let added: Vec<&Time> = added
                .iter()
                .filter(|t| self.batches.contains_key(t))
                .collect();
            ((added.len() + removed.len()) as u64).encode(&mut out);
            for t in removed {
                t.0.encode(&mut out);
                out.push(0);
            }
            for t in added {
                if let Some(b) = self.batches.get(t) {
                    write(&mut out, t, b);
                }
            }
        }
        out
    }

    pub fn restore(&mut self, payloads: Vec<Stored>) -> Result<(), CodecError> {
        let mut batches = BTreeMap::new();
        for payload in payloads {
            let entries: Vec<(i64, Option<Vec<Vec<T>>>)> = payload.decode()?;
            for (t, b) in entries {
                match b {
                    Some(parts) => batches.insert(Time(t), Batch::from_partitions(parts)),
                    None => batches.remove(&Time(t)),
                };
            }
        }
        self.batches = batches;
        self.added.clear();
        self.removed.clear();
        Ok(())
    }
}

pub(crate) use crate::types::NameFn;

/// The name of `meta`'s node followed by `suffix`.
pub(crate) fn node_name(meta: &Arc<NodeMeta>, suffix: &'static str) -> NameFn {
    let meta = meta.clone();
    Arc::new(move || format!("{}{suffix}", meta.name()))
}

/// The [`Stateful`] view of a [`KeyedState`], with how it is checkpointed: deltas and
/// snapshots (the default) or snapshots only; whether earlier releases' checkpoints
/// lack it; how its size is counted.
pub(crate) struct KeyedStateful<K, S> {
    name: NameFn,
    state: Arc<Mutex<KeyedState<K, S>>>,
    /// Written only in snapshot versions: its changes between snapshots are rebuilt from
    /// the logged plans at recovery (the file source's taken files are in every plan).
    snapshots_only: bool,
    /// State an earlier Lockgate did not have (see [`Stateful::introduced`]).
    introduced: bool,
    /// The entries one value counts as in [`Stateful::sizes`] (`None`: keys are counted).
    entries: Option<fn(&S) -> usize>,
}

impl<K, S> KeyedStateful<K, S> {
    /// `state` checkpointed under `name`, with deltas and snapshots.
    pub fn new(name: NameFn, state: Arc<Mutex<KeyedState<K, S>>>) -> Self {
        KeyedStateful {
            name,
            state,
            snapshots_only: false,
            introduced: false,
            entries: None,
        }
    }

    /// Written only in snapshot versions.
    pub fn snapshots_only(mut self) -> Self {
        self.snapshots_only = true;
        self
    }

    /// Added after checkpoints of an earlier release were written: recovering one of
    /// those starts it empty.
    pub fn introduced(mut self) -> Self {
        self.introduced = true;
        self
    }

    /// Counts `entries(value)` entries per key in [`Stateful::sizes`] (a window
    /// aggregation counts windows, not keys).
    pub fn counting(mut self, entries: fn(&S) -> usize) -> Self {
        self.entries = Some(entries);
        self
    }
}

impl<K, S> Stateful for KeyedStateful<K, S>
where
    K: Hash + Eq + Clone + Codec + Send + 'static,
    S: Codec + Send + 'static,
{
    fn name(&self) -> String {
        (self.name)()
    }
    fn schema(&self) -> String {
        format!("{} -> {}", schema_of::<K>(), schema_of::<S>())
    }
    fn partitions(&self) -> usize {
        lock(&self.state).partitions()
    }
    fn always_full(&self) -> bool {
        !lock(&self.state).tracking()
    }
    fn checkpointed(&self) {
        lock(&self.state).checkpointed = true;
    }
    fn persist(&self, p: usize, full: bool) -> Option<Vec<u8>> {
        if self.snapshots_only && !full {
            return None;
        }
        let mut st = lock(&self.state);
        if !full && st.dirty[p].is_empty() && st.log[p].entries == 0 {
            return None;
        }
        Some(st.encode(p, full))
    }
    fn restore(&self, old: Vec<Vec<Stored>>) -> Result<(), CodecError> {
        lock(&self.state).restore(old)
    }
    fn sizes(&self) -> Vec<usize> {
        let st = lock(&self.state);
        match self.entries {
            None => st.sizes(),
            Some(count) => (0..st.partitions())
                .map(|j| st.entries(j).map(|(_, v)| count(v)).sum())
                .collect(),
        }
    }
    fn introduced(&self) -> bool {
        self.introduced
    }
}

/// The [`Stateful`] view of a window's [`BufferState`].
pub(crate) struct BufferStateful<T> {
    pub name: NameFn,
    pub state: Arc<Mutex<BufferState<T>>>,
}

impl<T: Data + Codec> Stateful for BufferStateful<T> {
    fn name(&self) -> String {
        (self.name)()
    }
    fn schema(&self) -> String {
        format!("batches of {}", schema_of::<T>())
    }
    fn partitions(&self) -> usize {
        1
    }
    fn persist(&self, _p: usize, full: bool) -> Option<Vec<u8>> {
        let mut st = lock(&self.state);
        if !full && st.added.is_empty() && st.removed.is_empty() {
            return None;
        }
        Some(st.encode(full))
    }
    fn restore(&self, old: Vec<Vec<Stored>>) -> Result<(), CodecError> {
        lock(&self.state).restore(old.into_iter().flatten().collect())
    }
    fn sizes(&self) -> Vec<usize> {
        vec![lock(&self.state).batches.values().map(Batch::len).sum()]
    }
    fn always_full(&self) -> bool {
        false
    }
    fn checkpointed(&self) {}
    fn introduced(&self) -> bool {
        false
    }
}

/// Two pieces of state of one operator stored as one: `first` with its own partitions,
/// `second` (a single partition) riding along in partition 0. Each file holds
/// `(Option<first's payload>, Option<second's payload>)`.
pub(crate) struct PairStateful<A, B> {
    pub first: A,
    pub second: B,
}

impl<A: Stateful, B: Stateful> Stateful for PairStateful<A, B> {
    fn name(&self) -> String {
        self.first.name()
    }
    fn schema(&self) -> String {
        format!("{}; {}", self.first.schema(), self.second.schema())
    }
    fn partitions(&self) -> usize {
        self.first.partitions()
    }
    fn persist(&self, p: usize, full: bool) -> Option<Vec<u8>> {
        let a = self.first.persist(p, full);
        let b = if p == 0 {
            self.second.persist(0, full)
        } else {
            None
        };
        if a.is_none() && b.is_none() {
            return None;
        }
        Some(crate::codec::to_bytes(&(a, b)))
    }
    fn restore(&self, old: Vec<Vec<Stored>>) -> Result<(), CodecError> {
        let mut firsts = Vec::with_capacity(old.len());
        let mut seconds = Vec::new();
        for payloads in old {
            let mut part = Vec::new();
            for payload in payloads {
                let (a, b): (Option<Vec<u8>>, Option<Vec<u8>>) = payload.decode()?;
                part.extend(a.map(|a| payload.with_bytes(a)));
                seconds.extend(b.map(|b| payload.with_bytes(b)));
            }
            firsts.push(part);
        }
        self.first.restore(firsts)?;
        self.second.restore(vec![seconds])
    }
    fn sizes(&self) -> Vec<usize> {
        let mut s = self.first.sizes();
        if let (Some(x), Some(y)) = (s.first_mut(), self.second.sizes().first()) {
            *x += y;
        }
        s
    }
    /// Both are written in full when either must be.
    fn always_full(&self) -> bool {
        self.first.always_full() || self.second.always_full()
    }
    fn checkpointed(&self) {
        self.first.checkpointed();
        self.second.checkpointed();
    }
    /// New only when both parts are.
    fn introduced(&self) -> bool {
        self.first.introduced() && self.second.introduced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads written by today's code, per partition.
    fn stored(parts: Vec<Vec<Vec<u8>>>) -> Vec<Vec<Stored>> {
        parts
            .into_iter()
            .map(|p| p.into_iter().map(Stored::current).collect())
            .collect()
    }

    #[test]
    fn keyed_state_deltas_and_repartitioning_restore() {
        let mut st: KeyedState<String, i64> = KeyedState::new(2, true);
        let k = String::from("a");
        let j = partition_of(&k, 2);
        st.part(j).insert(k.clone(), 1);
        let snap0 = st.encode(0, true);
        let snap1 = st.encode(1, true);
        st.part(j).upsert(k.clone(), |_, _| None);
        let delta = st.encode(j, false);
        let mut old = vec![vec![snap0.clone()], vec![snap1.clone()]];
        old[j].push(delta);
        let mut back: KeyedState<String, i64> = KeyedState::new(2, true);
        back.restore(stored(old)).unwrap();
        assert_eq!(back.sizes(), vec![0, 0]);
        let mut three: KeyedState<String, i64> = KeyedState::new(3, true);
        three
            .restore(stored(vec![vec![snap0], vec![snap1]]))
            .unwrap();
        assert_eq!(three.sizes().iter().sum::<usize>(), 1);
        assert_eq!(three.get(partition_of(&k, 3), &k), Some(&1));
    }

    /// Every way a [`Part`] changes state is in the next delta: restoring the snapshot
    /// plus the delta gives the state as it is.
    #[test]
    fn every_change_through_a_part_reaches_the_delta() {
        type St = KeyedState<String, i64>;
        let key = |i: i64| format!("k{i}");
        let mut st: St = KeyedState::from_entries((0..8).map(|i| (key(i), i)).collect(), 1, true);
        // In a checkpointing context (without one, logged changes are not kept: no
        // delta is ever written).
        st.checkpointed = true;
        let snap = st.encode(0, true);
        let mut part = st.part(0);
        part.insert(key(100), 100);
        if let Some(v) = part.get_mut(&key(1)) {
            *v += 10;
        }
        *part.entry_or_default(key(2)) += 20;
        *part.entry_or_default(key(200)) += 200;
        part.upsert(key(3), |_, v| v.map(|v| v * 3));
        part.upsert(key(4), |_, _| None);
        part.retain(|k, v, changed| {
            if k == &key(5) {
                *v = 55;
                *changed = true;
            }
            k != &key(6)
        });
        assert!(part.remove_recorded(&key(7)).is_some());
        let now: BTreeMap<String, i64> = st.maps[0].clone().into_iter().collect();
        let delta = st.encode(0, false);
        let mut back: St = KeyedState::new(1, true);
        back.restore(stored(vec![vec![snap, delta]])).unwrap();
        let got: BTreeMap<String, i64> = back.maps[0].clone().into_iter().collect();
        assert_eq!(got, now);
        assert_eq!(got.get("k1"), Some(&11));
        assert!(!got.contains_key("k4") && !got.contains_key("k6"));
    }

    #[test]
    fn logged_changes_replay_in_order_before_marked_keys() {
        type St = KeyedState<String, i64>;
        let mut st: St = KeyedState::new(1, true);
        st.checkpointed = true;
        let (a, b, c) = (String::from("a"), String::from("b"), String::from("c"));
        let snap = st.encode(0, true);
        let how = st.recording();
        assert_eq!(how, Recording::Log);
        let mut part = st.part(0);
        // `a` changes twice in a batch (the second time marked), `b` is added then
        // removed.
        part.upsert_recorded(a.clone(), |_, _| Ok::<_, ()>((Some(1), Some(how))))
            .unwrap();
        part.upsert_recorded(b.clone(), |_, _| Ok::<_, ()>((Some(5), Some(how))))
            .unwrap();
        part.upsert_recorded(a.clone(), |_, v| {
            Ok::<_, ()>((v.map(|v| v + 1), Some(Recording::Mark)))
        })
        .unwrap();
        part.upsert_recorded(b.clone(), |_, _| Ok::<_, ()>((None, Some(how))))
            .unwrap();
        // An unchanged key is not recorded.
        part.upsert_recorded(a.clone(), |_, v| Ok::<_, ()>((v, None)))
            .unwrap();
        // A change marked instead: written after the log, with its value now.
        part.insert(c.clone(), 7);
        let delta = st.encode(0, false);
        assert!(st.log[0].entries == 0 && st.dirty[0].is_empty());
        let mut back: St = KeyedState::new(1, true);
        back.restore(stored(vec![vec![snap, delta]])).unwrap();
        let got: BTreeMap<_, _> = back.maps[0].clone().into_iter().collect();
        assert_eq!(got, BTreeMap::from([(a, 2), (c, 7)]));
        // Without checkpointing, logged changes are not kept.
        let mut off: St = KeyedState::new(1, true);
        let how = off.recording();
        assert_eq!(how, Recording::Off);
        off.part(0)
            .upsert_recorded(b, |_, _| Ok::<_, ()>((Some(1), Some(how))))
            .unwrap();
        assert_eq!((off.log[0].entries, off.dirty[0].len()), (0, 0));
    }

    #[test]
    fn a_payload_that_does_not_decode_is_a_codec_error() {
        let mut st: KeyedState<String, i64> = KeyedState::new(1, true);
        let err = st.restore(stored(vec![vec![vec![9, 9, 9]]])).unwrap_err();
        assert!(err.to_string().starts_with("cannot decode"), "{err}");
    }

    /// State schemas name the codec types, never Rust's type paths: they do not change
    /// when a type moves, and read the way earlier releases' paths normalise.
    #[test]
    fn state_schemas_are_codec_names_not_type_paths() {
        type Wins = Vec<crate::operator::window_agg::Win<i64>>;
        assert_eq!(schema_of::<Wins>(), "vec<Win<i64>>");
        assert_eq!(schema_of::<crate::TimeWindow>(), "TimeWindow");
        assert_eq!(schema_of::<(String, usize)>(), "(string, u64)");
        let keyed = KeyedStateful::new(
            Arc::new(|| "op".to_string()),
            Arc::new(Mutex::new(KeyedState::<
                compact_str::CompactString,
                (i64, i64),
            >::new(1, true))),
        );
        assert_eq!(keyed.schema(), "string -> (i64, i64)");
        assert_eq!(
            super::super::schema::normalise("compact_str::CompactString -> (i64, i64)"),
            keyed.schema()
        );
    }

    #[test]
    fn buffer_state_roundtrip() {
        let mut b: BufferState<i32> = BufferState::new();
        b.insert(Time(1000), Batch::from_vec(vec![1, 2, 3], 2));
        let full = b.encode(true);
        b.insert(Time(2000), Batch::from_vec(vec![4], 1));
        b.drop_through(Time(1000));
        let delta = b.encode(false);
        let mut back: BufferState<i32> = BufferState::new();
        back.restore(vec![Stored::current(full), Stored::current(delta)])
            .unwrap();
        assert_eq!(back.batches.len(), 1);
        assert_eq!(back.batches[&Time(2000)].collect(), vec![4]);
    }
}
