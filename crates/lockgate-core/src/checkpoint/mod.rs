//! The checkpoint protocol (see DESIGN.md, "The batch protocol"):
//!
//! 1. plan batch `b` and log it to `offsets/<b>` before it runs;
//! 2. run it; outputs commit idempotently by batch id;
//! 3. persist the state changes of version `b` (`state/…`);
//! 4. write `commits/<b>`; 5. delete what retention no longer needs.
//!
//! Recovery rebuilds the graph from code, picks the newest commit whose state loads,
//! restores every stateful operator to it, and re-runs every logged plan after it from
//! its logged descriptors and batch time before planning anything new.

pub(crate) mod dir_lock;
pub mod file;
pub mod log;
pub(crate) mod state;
pub mod store;
mod writer;

pub use crate::types::DeliveryMode;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::clock::Time;
use crate::error::{Error, Result};
use crate::types::{lock, InputSource, Stateful};
use log::{CheckpointLog, Commit, Metadata, Plan};
use store::{dir_name, StateHeader, StateStore, CODEC};
use writer::{WriteJob, Writer, WriterThread};

/// What recovery does when the operators with state in the checkpoint and in the code
/// differ (an operator added, removed or with changed types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateUpgrade {
    /// Stop with an error naming the operators (the default).
    #[default]
    Fail,
    /// New operators and operators whose types changed start empty; old state of
    /// operators no longer in the code is an error.
    StartEmpty,
    /// State of operators no longer in the code is deleted; new or changed ones are an
    /// error.
    DropOld,
    /// Both of the above.
    StartEmptyAndDropOld,
}

impl StateUpgrade {
    fn start_empty(self) -> bool {
        matches!(
            self,
            StateUpgrade::StartEmpty | StateUpgrade::StartEmptyAndDropOld
        )
    }
    fn drop_old(self) -> bool {
        matches!(
            self,
            StateUpgrade::DropOld | StateUpgrade::StartEmptyAndDropOld
        )
    }
}

/// Checkpoint settings.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The directory.
    pub dir: PathBuf,
    /// Batches whose logs and state are kept (at least 2).
    pub retain_batches: u64,
    /// A full snapshot of every state partition every this many batches.
    pub snapshot_every: u64,
    /// What to do when operator state differs from the code.
    pub upgrade: StateUpgrade,
    /// The delivery guarantee.
    pub delivery: DeliveryMode,
    /// How often the checkpoint writer makes state and commits durable against a machine
    /// crash (one filesystem sync). Plans are always durable before their batch runs, so
    /// a machine crash only makes recovery re-run the batches since the last sync; a
    /// process crash loses nothing written. Default 100 ms.
    pub sync_interval: std::time::Duration,
}

impl CheckpointConfig {
    /// Defaults for `dir`: keep 100 batches, snapshot every 10, fail on state changes,
    /// exactly-once.
    pub fn new(dir: &Path) -> Self {
        CheckpointConfig {
            dir: dir.to_path_buf(),
            retain_batches: 100,
            snapshot_every: 10,
            upgrade: StateUpgrade::Fail,
            delivery: DeliveryMode::ExactlyOnce,
            sync_interval: std::time::Duration::from_millis(100),
        }
    }
}

/// How one stateful operator compares between checkpoint and code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeStatus {
    /// Same name and types: its state is kept.
    Kept,
    /// In the code only: it starts empty (or recovery fails).
    New,
    /// In the checkpoint only: its state is dropped (or recovery fails).
    Removed,
    /// Same name, other types: the old state cannot be used.
    TypeChanged {
        /// Types in the checkpoint.
        old: String,
        /// Types in the code.
        new: String,
    },
}

/// A report of what an upgrade does to the checkpointed state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    /// Each operator by stable name.
    pub operators: Vec<(String, UpgradeStatus)>,
}

impl UpgradeReport {
    /// True when every operator keeps its state.
    pub fn is_compatible(&self) -> bool {
        self.operators
            .iter()
            .all(|(_, s)| *s == UpgradeStatus::Kept)
    }
}

impl std::fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, status) in &self.operators {
            match status {
                UpgradeStatus::Kept => writeln!(f, "kept      {name}")?,
                UpgradeStatus::New => writeln!(
                    f,
                    "new       {name} (starts empty with StateUpgrade::StartEmpty)"
                )?,
                UpgradeStatus::Removed => {
                    writeln!(f, "removed   {name} (dropped with StateUpgrade::DropOld)")?
                }
                UpgradeStatus::TypeChanged { old, new } => writeln!(
                    f,
                    "changed   {name}: {old} -> {new} (starts empty with StateUpgrade::StartEmpty)"
                )?,
            }
        }
        Ok(())
    }
}

/// What recovery decided.
pub(crate) struct Recovery {
    /// Timing: zero time and the id of the batch right after it.
    pub zero: Time,
    pub base_id: u64,
    /// Logged plans to re-run, in order.
    pub replays: Vec<Plan>,
    /// The time of the first batch to plan after the replays.
    pub next_time: Time,
    /// True when state was restored from an earlier run.
    pub restored: bool,
}

/// Runs the protocol for one context.
pub(crate) struct Checkpointer {
    pub config: CheckpointConfig,
    pub log: CheckpointLog,
    pub store: StateStore,
    states: Vec<Arc<dyn Stateful>>,
    /// Sources, told when their batches are durably committed.
    inputs: Vec<Arc<dyn InputSource>>,
    metrics: Arc<crate::metrics::StreamingMetrics>,
    /// States that have written a snapshot in this process.
    snapshotted: Mutex<BTreeSet<String>>,
    writer: Writer,
    /// This process's hold on the directory, taken by [`recover`](Self::recover).
    dir_lock: Mutex<Option<dir_lock::DirLock>>,
}

impl Checkpointer {
    pub fn new(
        config: CheckpointConfig,
        states: Vec<Arc<dyn Stateful>>,
        inputs: Vec<Arc<dyn InputSource>>,
        metrics: Arc<crate::metrics::StreamingMetrics>,
    ) -> Self {
        Checkpointer {
            inputs,
            metrics,
            log: CheckpointLog::new(&config.dir),
            store: StateStore::new(&config.dir),
            config,
            states,
            snapshotted: Mutex::new(BTreeSet::new()),
            writer: Writer::default(),
            dir_lock: Mutex::new(None),
        }
    }

    fn operators_in_code(&self) -> Vec<(String, String, u64)> {
        self.states
            .iter()
            .map(|s| (s.name(), s.type_desc(), s.partitions() as u64))
            .collect()
    }

    /// Compares the operators with state in `meta` with those of the code.
    pub fn upgrade_report(&self, meta: &Metadata) -> UpgradeReport {
        let old: BTreeMap<&str, &str> = meta
            .operators
            .iter()
            .map(|(n, t, _)| (n.as_str(), t.as_str()))
            .collect();
        let code = self.operators_in_code();
        let mut ops = Vec::new();
        for (name, ty, _) in &code {
            let status = match old.get(name.as_str()) {
                None => UpgradeStatus::New,
                Some(t) if *t == ty => UpgradeStatus::Kept,
                Some(t) => UpgradeStatus::TypeChanged {
                    old: t.to_string(),
                    new: ty.clone(),
                },
            };
            ops.push((name.clone(), status));
        }
        for (name, _, _) in &meta.operators {
            if !code.iter().any(|(n, _, _)| n == name) {
                ops.push((name.clone(), UpgradeStatus::Removed));
            }
        }
        UpgradeReport { operators: ops }
    }

    /// Recovers from the directory (or initialises it), restoring operator state.
    pub fn recover(
        &self,
        app_name: &str,
        interval_ms: i64,
        config: Vec<(String, String)>,
        fresh: (Time, u64),
        inputs: &[Arc<dyn InputSource>],
    ) -> Result<Recovery> {
        let (fresh_zero, fresh_base) = fresh;
        *lock(&self.dir_lock) = Some(dir_lock::acquire(&self.config.dir)?);
        let Some(meta) = self.log.read_metadata()? else {
            let plans = self.log.plan_ids();
            if !plans.is_empty() {
                return Err(Error::Checkpoint {
                    path: self.config.dir.join("metadata"),
                    reason: "missing, but batch plans exist; the directory is damaged or \
                             belongs to something else — restore the file or use a new directory"
                        .into(),
                });
            }
            self.log.write_metadata(&Metadata {
                app_name: app_name.to_string(),
                zero_ms: fresh_zero.0,
                base_id: fresh_base,
                interval_ms,
                operators: self.operators_in_code(),
                config,
            })?;
            return Ok(Recovery {
                zero: fresh_zero,
                base_id: fresh_base,
                replays: Vec::new(),
                next_time: fresh_zero.plus_ms(interval_ms),
                restored: false,
            });
        };
        if meta.app_name != app_name {
            return Err(Error::Checkpoint {
                path: self.config.dir.join("metadata"),
                reason: format!(
                    "belongs to application `{}`, not `{app_name}`; use another checkpoint \
                     directory per application",
                    meta.app_name
                ),
            });
        }
        // Operators: compare and apply the upgrade policy.
        let report = self.upgrade_report(&meta);
        let mut start_empty: BTreeSet<String> = BTreeSet::new();
        for (name, status) in &report.operators {
            match status {
                UpgradeStatus::Kept => {}
                UpgradeStatus::New | UpgradeStatus::TypeChanged { .. } if self.config.upgrade.start_empty() => {
                    tracing::warn!(operator = %name, ?status, "operator state starts empty");
                    start_empty.insert(name.clone());
                }
                UpgradeStatus::Removed if self.config.upgrade.drop_old() => {
                    tracing::warn!(operator = %name, "dropping the state of an operator no longer in the code");
                    let _ = self.store.delete_operator(&dir_name(name));
                }
                other => {
                    return Err(Error::StateMismatch {
                        operator: name.clone(),
                        reason: match other {
                            UpgradeStatus::New => "the code has this stateful operator but the checkpoint has no state for it; \
                                 set StateUpgrade::StartEmpty to start it empty (or give it the name it had with .name(..))".into(),
                            UpgradeStatus::Removed => "the checkpoint has state for this operator but the code no longer has it; \
                                 set StateUpgrade::DropOld to drop that state (or restore the operator and its .name(..))".into(),
                            UpgradeStatus::TypeChanged { old, new } => format!(
                                "its types changed from `{old}` to `{new}`; set StateUpgrade::StartEmpty to start it empty"
                            ),
                            UpgradeStatus::Kept => String::new(),
                        },
                    })
                }
            }
        }
        for (k, v) in &config {
            if let Some((_, old)) = meta.config.iter().find(|(ok, _)| ok == k) {
                if old != v {
                    tracing::warn!(setting = %k, old = %old, new = %v, "configuration changed since the last run; using the new value");
                }
            }
        }

        // The newest commit whose state loads. The directories are listed once.
        let commits = self.log.commit_ids();
        let plan_ids = self.log.plan_ids();
        let on_disk: BTreeMap<String, usize> = self.store.operators().into_iter().collect();
        let mut chosen: Option<(Commit, Vec<Vec<Vec<Vec<u8>>>>)> = None;
        let mut last_err: Option<Error> = None;
        for id in commits.iter().rev() {
            let commit = match self.log.read_commit(*id) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a bad commit file; falling back to an older one");
                    last_err = Some(e);
                    continue;
                }
            };
            match self.load_states(commit.batch_id, &start_empty, &on_disk) {
                Ok(loaded) => {
                    chosen = Some((commit, loaded));
                    break;
                }
                Err(e @ Error::StateMismatch { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, batch = commit.batch_id, "state of this commit does not load; falling back to an older commit");
                    last_err = Some(e);
                }
            }
        }
        if chosen.is_none() && !commits.is_empty() {
            // Falling back to "no commit at all" is only right if every plan from
            // batch 0 on is still there; otherwise input would be lost.
            if plan_ids.first() != Some(&0) {
                return Err(last_err.unwrap_or_else(|| Error::Checkpoint {
                    path: self.config.dir.join("commits"),
                    reason: "no commit loads and older plans are gone".into(),
                }));
            }
        }
        let committed = chosen.as_ref().map(|(c, _)| c.batch_id);
        // State files of versions after that commit were never trusted (they are written
        // in place, and may be torn by the crash): the re-run batches write them anew.
        for state in &self.states {
            self.store
                .delete_after(&state.name(), state.partitions(), committed);
        }
        if let Some((_, loaded)) = chosen {
            for (state, old) in self.states.iter().zip(loaded) {
                if start_empty.contains(&state.name()) {
                    continue;
                }
                state.restore(old).map_err(|reason| Error::Checkpoint {
                    path: self.config.dir.join("state").join(dir_name(&state.name())),
                    reason,
                })?;
            }
        }
        // Sources whose state is snapshot-only learn what the committed plans took since.
        if let Some(c) = committed {
            // Only the plans after every state's last snapshot are needed: what a plan
            // before it took is in that snapshot.
            let needed_after = self.last_snapshot_of_all(c);
            for &id in plan_ids.iter().filter(|&&id| id <= c) {
                let plan = match self.log.read_plan(id) {
                    Ok(plan) => plan,
                    Err(Error::Checkpoint { path, reason }) => {
                        if needed_after.is_some_and(|s| id <= s) {
                            tracing::warn!(
                                plan = %path.display(),
                                %reason,
                                "ignoring an unreadable plan of a committed batch: recovery \
                                 does not need it (its effects are in the state snapshot of \
                                 batch {}); delete it to silence this warning",
                                needed_after.unwrap_or_default()
                            );
                            continue;
                        }
                        return Err(Error::Checkpoint {
                            path,
                            reason: format!(
                                "{reason}; batch {id} is committed, and recovery needs its plan \
                                 to know which input it took (no state snapshot covers it). \
                                 Restore the file from a backup; if you cannot, move it away \
                                 and restart: the input of batch {id} is then planned again, so \
                                 outputs may see it twice"
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                };
                for sp in &plan.sources {
                    if let Some(input) = inputs.iter().find(|i| i.name() == sp.source) {
                        input.seed_consumed(&[sp.descriptor.as_slice()])?;
                    }
                }
            }
        }
        // Plans after the commit are re-run, in order, from their logs. Plans are logged
        // in groups made durable together before any of them runs, so a gap can only be
        // in a group that never ran: the plans after a gap are dropped (their input is
        // planned again).
        let mut replays = Vec::new();
        let mut expected = committed.map(|c| c + 1);
        for &id in &plan_ids {
            if committed.is_some_and(|c| id <= c) {
                continue;
            }
            if expected.is_some_and(|e| id != e) {
                let path = self.log.plan_path(id);
                tracing::warn!(plan = %path.display(), "dropping a plan after a gap in the plan log (its batch never ran)");
                if let Err(e) = std::fs::remove_file(&path) {
                    return Err(Error::io("delete a plan after a gap", path, e));
                }
                continue;
            }
            expected = Some(id + 1);
            replays.push(self.log.read_plan(id).map_err(|e| match e {
                Error::Checkpoint { path, reason } => Error::Checkpoint {
                    path,
                    reason: format!(
                        "{reason}; this batch was planned but never committed, so it cannot be \
                         re-run — move the file away to plan its input again"
                    ),
                },
                other => other,
            })?);
        }
        if let (Some(c), Some(first)) = (committed, replays.first()) {
            if first.batch_id != c + 1 {
                return Err(Error::Checkpoint {
                    path: self.log.plan_path(c + 1),
                    reason: format!(
                        "missing: batch {} is committed, but the plan of batch {} is gone",
                        c,
                        c + 1
                    ),
                });
            }
        }
        let known: BTreeSet<String> = inputs.iter().map(|i| i.name()).collect();
        for p in &replays {
            for s in &p.sources {
                if !known.contains(&s.source) {
                    return Err(Error::Checkpoint {
                        path: self.log.plan_path(p.batch_id),
                        reason: format!(
                            "plans input from source `{}`, which the code no longer has; \
                             restore the source to finish this batch",
                            s.source
                        ),
                    });
                }
            }
        }
        // Timing: keep the old one unless the interval changed.
        let (last_id, last_time) = match (replays.last(), committed) {
            (Some(p), _) => (Some(p.batch_id), Some(Time(p.batch_time_ms))),
            (None, Some(c)) => (
                Some(c),
                self.log.read_commit(c).ok().map(|c| Time(c.batch_time_ms)),
            ),
            _ => (None, None),
        };
        let (mut zero, mut base_id) = (Time(meta.zero_ms), meta.base_id);
        if meta.interval_ms != interval_ms {
            if !replays.is_empty() {
                return Err(Error::Config(format!(
                    "the batch interval changed from {} ms to {interval_ms} ms while {} planned \
                     batch(es) are not committed; restart once with the old interval to finish \
                     them, then change it",
                    meta.interval_ms,
                    replays.len()
                )));
            }
            if let (Some(id), Some(t)) = (last_id, last_time) {
                tracing::warn!(
                    old_ms = meta.interval_ms,
                    new_ms = interval_ms,
                    "batch interval changed; batch times continue from the last batch"
                );
                zero = t;
                base_id = id + 1;
            }
        }
        let next_id = last_id.map_or(base_id, |i| i + 1);
        let next_time = Time(zero.0 + (next_id - base_id + 1) as i64 * interval_ms);
        self.log.write_metadata(&Metadata {
            app_name: app_name.to_string(),
            zero_ms: zero.0,
            base_id,
            interval_ms,
            operators: self.operators_in_code(),
            config,
        })?;
        tracing::info!(
            committed = ?committed,
            replays = replays.len(),
            next_batch = next_id,
            "recovered from checkpoint {}",
            self.config.dir.display()
        );
        Ok(Recovery {
            zero,
            base_id,
            replays,
            next_time,
            restored: committed.is_some(),
        })
    }

    /// The newest version at or before `committed` for which every partition of every
    /// state has a snapshot (`None` when some partition has none): the batches up to it
    /// are fully described by the snapshots.
    fn last_snapshot_of_all(&self, committed: u64) -> Option<u64> {
        let mut oldest: Option<u64> = self.states.is_empty().then_some(committed);
        for state in &self.states {
            for p in 0..state.partitions() {
                let newest = self
                    .store
                    .files(&state.name(), p)
                    .iter()
                    .filter(|f| f.snapshot && f.version <= committed)
                    .map(|f| f.version)
                    .max()?;
                oldest = Some(oldest.map_or(newest, |o| o.min(newest)));
            }
        }
        oldest
    }

    /// Loads every operator's state payloads at `version`.
    fn load_states(
        &self,
        version: u64,
        skip: &BTreeSet<String>,
        on_disk: &BTreeMap<String, usize>,
    ) -> Result<Vec<Vec<Vec<Vec<u8>>>>> {
        let mut out = Vec::new();
        for s in &self.states {
            let name = s.name();
            if skip.contains(&name) {
                out.push(Vec::new());
                continue;
            }
            let parts_on_disk = on_disk.get(&dir_name(&name)).copied().unwrap_or(0);
            let ty = s.type_desc();
            let parts = (0..parts_on_disk)
                .map(|p| self.store.load(&name, &ty, p, version))
                .collect::<Result<Vec<_>>>()?;
            out.push(parts);
        }
        Ok(out)
    }

    /// Logs a plan (before the batch runs).
    pub fn log_plans(&self, plans: &[Plan]) -> Result<()> {
        self.log.write_plans(plans)
    }

    /// Takes the state changes of version `id` (encoded now, while no other batch runs)
    /// and hands them to the checkpoint writer, which writes them, then the commit, then
    /// applies retention — off the batch's critical path. The next batch may run
    /// meanwhile: if the process dies before the commit is durable, recovery re-runs
    /// this batch (and the next) from their logged plans.
    pub fn commit(&self, id: u64, time: Time) -> Result<()> {
        if let Some(e) = lock(&self.writer.failure).take() {
            return Err(e);
        }
        let files = self.encode_states(id);
        let job = WriteJob::Commit { id, time, files };
        let mut tx = lock(&self.writer.tx);
        if tx.is_none() {
            *tx = Some(self.spawn_writer()?);
        }
        if let Some(sender) = tx.as_ref() {
            if sender.send(job).is_err() {
                return Err(lock(&self.writer.failure)
                    .take()
                    .unwrap_or_else(|| Error::Lifecycle("the checkpoint writer stopped".into())));
            }
        }
        Ok(())
    }

    /// Waits until every commit handed to the writer is durable (or failed).
    pub fn flush(&self) -> Result<()> {
        let tx = lock(&self.writer.tx).clone();
        if let Some(sender) = tx {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            if sender.send(WriteJob::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
        match lock(&self.writer.failure).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn spawn_writer(&self) -> Result<std::sync::mpsc::SyncSender<WriteJob>> {
        WriterThread {
            log: self.log.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
            inputs: self.inputs.clone(),
            metrics: self.metrics.clone(),
            names: self
                .states
                .iter()
                .map(|s| (s.name(), s.partitions()))
                .collect(),
            failure: self.writer.failure.clone(),
        }
        .spawn()
    }

    /// Writes the commit of `id` (at-most-once writes it before running the batch).
    pub fn write_commit(&self, id: u64, time: Time) -> Result<()> {
        self.log.write_commit(&Commit {
            batch_id: id,
            batch_time_ms: time.0,
        })
    }

    /// Encodes what version `version` writes: (header, snapshot?, entries) per file.
    fn encode_states(&self, version: u64) -> Vec<(StateHeader, bool, Vec<u8>)> {
        let every = self.config.snapshot_every.max(1);
        let mut jobs = Vec::new();
        {
            let mut snapped = lock(&self.snapshotted);
            for s in &self.states {
                let name = s.name();
                let full = s.always_full() || version % every == 0 || !snapped.contains(&name);
                if full {
                    snapped.insert(name);
                }
                for p in 0..s.partitions() {
                    jobs.push((s.clone(), p, full));
                }
            }
        }
        jobs.into_par_iter()
            .filter_map(|(s, p, full)| {
                let entries = s.persist(p, full)?;
                let header = StateHeader {
                    operator: s.name(),
                    type_desc: s.type_desc(),
                    codec: CODEC.into(),
                    partition: p as u64,
                    partitions: s.partitions() as u64,
                    version,
                };
                Some((header, full, entries))
            })
            .collect()
    }
}

/// Deletes logs and state no longer needed once batch `id` is committed.
fn cleanup(
    log: &CheckpointLog,
    store: &StateStore,
    states: &[(String, usize)],
    retain: u64,
    id: u64,
) {
    let retain = retain.max(2);
    if id < retain {
        return;
    }
    let first_kept = id + 1 - retain;
    log.delete_before(first_kept);
    for (name, parts) in states {
        store.delete_before(name, *parts, first_kept);
    }
}
