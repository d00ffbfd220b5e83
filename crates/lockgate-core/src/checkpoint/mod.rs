//! The checkpoint's files and the work on them that the batch protocol (`protocol.rs`,
//! which decides the order of the steps) asks for: logging plans (`offsets/<b>`),
//! encoding state changes and handing them to the writer thread (`writer.rs`: state
//! files, syncs, `commits/<b>`, retention), and recovery's named steps (`recover.rs`:
//! check metadata, choose the commit, restore state, seed sources, collect replays,
//! resume timing). The file formats: `log.rs` (metadata, plans, commits), `store.rs`
//! (state files), `state.rs` (what operators keep); where the files live and framed
//! atomic files: the [`storage`](crate::storage) module.

pub mod assess;
pub mod log;
mod recover;
pub(crate) mod schema;
pub(crate) mod state;
pub mod store;
mod writer;

pub use crate::types::DeliveryMode;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::clock::Time;
use crate::error::{Error, Result};
use crate::storage::{CheckpointLocation, Ownership, Storage, Takeover};
use crate::traits::{InputSource, Stateful};
use crate::types::lock;
use log::{CheckpointLog, Commit, Metadata, Plan};
use schema::SchemaMatch;
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
    /// How to choose this policy, in the library and on the `lockgate` CLI, for the
    /// advice of an error.
    pub fn how(self) -> &'static str {
        match self {
            StateUpgrade::Fail => "StateUpgrade::Fail (CLI: --state-upgrade fail)",
            StateUpgrade::StartEmpty => {
                "StateUpgrade::StartEmpty (CLI: --state-upgrade start-empty)"
            }
            StateUpgrade::DropOld => "StateUpgrade::DropOld (CLI: --state-upgrade drop-old)",
            StateUpgrade::StartEmptyAndDropOld => {
                "StateUpgrade::StartEmptyAndDropOld (CLI: --state-upgrade start-empty-and-drop-old)"
            }
        }
    }

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
    /// Where the checkpoint is: a local directory or an object store.
    pub location: Arc<dyn Storage>,
    /// What a process does when another one owns the location (default: refuse).
    pub takeover: Takeover,
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
    /// Defaults for directory `dir`: keep 100 batches, snapshot every 10, fail on state
    /// changes, exactly-once.
    pub fn new(dir: &Path) -> Self {
        Self::at(CheckpointLocation::dir(dir))
    }

    /// Defaults for a location (a directory or an object store).
    pub fn at(location: impl Into<CheckpointLocation>) -> Self {
        CheckpointConfig {
            location: location.into().0,
            takeover: Takeover::Refuse,
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
    /// Same name and types, some at an older version of their encoding: its state is
    /// kept, decoded with their migrations (`Codec::decode_version`).
    Migrated {
        /// The schema in the checkpoint.
        old: String,
        /// The schema in the code.
        new: String,
    },
    /// In the code only: it starts empty (or recovery fails).
    New,
    /// State a later Lockgate keeps that a checkpoint of an earlier one lacks (a
    /// source's new bookkeeping): it starts empty, by design.
    Introduced,
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
        self.operators.iter().all(|(_, s)| {
            matches!(
                s,
                UpgradeStatus::Kept | UpgradeStatus::Migrated { .. } | UpgradeStatus::Introduced
            )
        })
    }
}

impl std::fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, status) in &self.operators {
            match status {
                UpgradeStatus::Kept => writeln!(f, "kept      {name}")?,
                UpgradeStatus::Introduced => writeln!(
                    f,
                    "added     {name} (kept by this version of Lockgate; starts empty)"
                )?,
                UpgradeStatus::Migrated { old, new } => {
                    writeln!(f, "migrated  {name}: {old} -> {new}")?
                }
                UpgradeStatus::New => writeln!(
                    f,
                    "new       {name} (starts empty with {})",
                    StateUpgrade::StartEmpty.how()
                )?,
                UpgradeStatus::Removed => writeln!(
                    f,
                    "removed   {name} (dropped with {})",
                    StateUpgrade::DropOld.how()
                )?,
                UpgradeStatus::TypeChanged { old, new } => writeln!(
                    f,
                    "changed   {name}: {old} -> {new} (starts empty with {})",
                    StateUpgrade::StartEmpty.how()
                )?,
            }
        }
        Ok(())
    }
}

/// How the checkpoint writer orders its work for the delivery mode (decided by the
/// protocol, `protocol::Order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteOrder {
    /// State files are written atomically (renamed into place): no commit written after
    /// a sync vouches for them, because the batch was committed before it ran.
    pub atomic_state_files: bool,
    /// The writer writes each batch's commit once its state is durable.
    pub commit_after_sync: bool,
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
    order: WriteOrder,
    pub log: CheckpointLog,
    pub store: StateStore,
    states: Vec<Arc<dyn Stateful>>,
    /// Sources, told when their batches are durably committed.
    inputs: Vec<Arc<dyn InputSource>>,
    metrics: Arc<crate::metrics::StreamingMetrics>,
    /// States that have written a snapshot in this process.
    snapshotted: Mutex<BTreeSet<String>>,
    writer: Writer,
    /// This process's hold on the location, taken by [`recover`](Self::recover).
    ownership: Mutex<Option<Box<dyn Ownership>>>,
}

impl Checkpointer {
    pub fn new(
        config: CheckpointConfig,
        order: WriteOrder,
        states: Vec<Arc<dyn Stateful>>,
        inputs: Vec<Arc<dyn InputSource>>,
        metrics: Arc<crate::metrics::StreamingMetrics>,
    ) -> Self {
        Checkpointer {
            order,
            inputs,
            metrics,
            log: CheckpointLog::new(config.location.clone()),
            store: StateStore::new(config.location.clone()),
            config,
            states,
            snapshotted: Mutex::new(BTreeSet::new()),
            writer: Writer::default(),
            ownership: Mutex::new(None),
        }
    }

    fn operators_in_code(&self) -> Vec<(String, String, u64)> {
        self.states
            .iter()
            .map(|s| (s.name(), s.schema(), s.partitions() as u64))
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
            let introduced = || {
                self.states
                    .iter()
                    .any(|s| s.introduced() && s.name() == *name)
            };
            let status = match old.get(name.as_str()) {
                None if introduced() => UpgradeStatus::Introduced,
                None => UpgradeStatus::New,
                Some(t) => match schema::compare(t, ty) {
                    SchemaMatch::Same => UpgradeStatus::Kept,
                    SchemaMatch::Migrates(_) => UpgradeStatus::Migrated {
                        old: t.to_string(),
                        new: ty.clone(),
                    },
                    SchemaMatch::Changed => UpgradeStatus::TypeChanged {
                        old: t.to_string(),
                        new: ty.clone(),
                    },
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

    /// The newest version at or before `committed` for which every partition of every
    /// state has a snapshot (`None` when some partition has none): the batches up to it
    /// are fully described by the snapshots.
    fn last_snapshot_of_all(&self, committed: u64) -> Result<Option<u64>> {
        let mut oldest: Option<u64> = self.states.is_empty().then_some(committed);
        for state in &self.states {
            for p in 0..state.partitions() {
                let Some(newest) = self
                    .store
                    .files(&state.name(), p)?
                    .iter()
                    .filter(|f| f.snapshot && f.version <= committed)
                    .map(|f| f.version)
                    .max()
                else {
                    return Ok(None);
                };
                oldest = Some(oldest.map_or(newest, |o| o.min(newest)));
            }
        }
        Ok(oldest)
    }

    /// Loads every operator's state payloads at `version`.
    fn load_states(
        &self,
        version: u64,
        skip: &BTreeSet<String>,
        on_disk: &BTreeMap<String, usize>,
    ) -> Result<Vec<Vec<Vec<crate::codec::Stored>>>> {
        let mut out = Vec::new();
        for s in &self.states {
            let name = s.name();
            if skip.contains(&name) {
                out.push(Vec::new());
                continue;
            }
            let parts_on_disk = on_disk.get(&dir_name(&name)).copied().unwrap_or(0);
            let ty = s.schema();
            // Partitions load in parallel (an object store's requests overlap).
            let parts = (0..parts_on_disk)
                .into_par_iter()
                .map(|p| self.store.load(&name, &ty, p, version))
                .collect::<Result<Vec<_>>>()?;
            out.push(parts);
        }
        Ok(out)
    }

    /// Records that batch times from the next batch on are `by_ms` later (the zero time
    /// moves; batch ids go on), before the next plan is logged: recovery then resumes
    /// on the new times.
    pub fn skip_ahead(&self, by_ms: i64) -> Result<()> {
        let mut meta = self.log.read_metadata()?.ok_or_else(|| Error::Checkpoint {
            path: self.log.path("metadata"),
            reason: "missing while the job runs; the directory was changed under the job".into(),
        })?;
        meta.zero_ms += by_ms;
        self.log.write_metadata(&meta)
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

    /// Lets go of the location (after [`flush`](Self::flush)): another process may own
    /// it from now on.
    pub fn release(&self) {
        drop(lock(&self.ownership).take());
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
            order: self.order,
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

    /// Writes the commit of `id` now (at most once: before the batch runs).
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
                    type_desc: s.schema(),
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
