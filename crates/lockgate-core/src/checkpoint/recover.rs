//! Recovery, as the protocol's named steps: take the directory, check the metadata
//! (application, operators against the upgrade policy, changed settings), choose the
//! newest commit whose state loads, restore the state, tell the sources what the
//! committed batches took, collect the logged plans to re-run, and resume the batch
//! timing. A new directory is initialised instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::log::{Commit, Metadata, Plan};
use super::store::dir_name;
use super::{Checkpointer, Recovery, StateUpgrade, UpgradeStatus};
use crate::clock::Time;
use crate::error::{Error, Result};
use crate::traits::InputSource;
use crate::types::lock;

/// The logged plans read at the start of recovery, by batch id.
type Plans = BTreeMap<u64, Result<Plan>>;

/// The plan of `id` from those read at the start (read now if it was not).
fn take_plan(plans: &mut Plans, id: u64, log: &super::log::CheckpointLog) -> Result<Plan> {
    plans.remove(&id).unwrap_or_else(|| log.read_plan(id))
}

/// The loaded state of a commit: per state, per old partition, its payloads in order.
type Loaded = Vec<Vec<Vec<crate::codec::Stored>>>;

/// Where the batch clock resumes.
struct Timing {
    zero: Time,
    base_id: u64,
    next_id: u64,
    next_time: Time,
}

/// The newest of `commits` whose file reads and whose state `load`s, with that state;
/// and the newer ones passed over, with why. A state that no longer matches the code
/// stops the search: an older commit would not match either.
pub(super) fn newest_loading<L>(
    log: &super::log::CheckpointLog,
    commits: &[u64],
    mut load: impl FnMut(u64) -> Result<L>,
) -> Result<(Option<(Commit, L)>, Vec<(u64, Error)>)> {
    let mut passed_over = Vec::new();
    for &id in commits.iter().rev() {
        let commit = match log.read_commit(id) {
            Ok(c) => c,
            Err(e) => {
                passed_over.push((id, e));
                continue;
            }
        };
        match load(commit.batch_id) {
            Ok(loaded) => return Ok((Some((commit, loaded)), passed_over)),
            Err(e @ Error::StateMismatch { .. }) => return Err(e),
            Err(e) => passed_over.push((id, e)),
        }
    }
    Ok((None, passed_over))
}

/// Recovery's refusal when no commit loads, unless starting before every plan is right
/// (no commit at all, or the plans from batch 0 on are all there): falling back to no
/// commit would lose the input of the plans retention deleted. With the way out.
pub(super) fn no_commit_loads(
    log: &super::log::CheckpointLog,
    commits: &[u64],
    plan_ids: &[u64],
    passed_over: &[(u64, Error)],
) -> Option<Error> {
    if commits.is_empty() || plan_ids.first() == Some(&0) {
        return None;
    }
    let newest = passed_over
        .first()
        .map_or_else(String::new, |(_, e)| format!(" (the newest: {e})"));
    let gone = plan_ids.first().map_or_else(
        || "every plan is gone".to_string(),
        |f| format!("the plans before batch {f} are gone"),
    );
    Some(Error::Checkpoint {
        path: log.path("commits"),
        reason: format!(
            "none of the {} commit file(s) loads{newest}, and {gone} (retention), so \
             recovery cannot tell what input the state held. Restore the commit and state \
             files from a backup; or move the whole checkpoint `{}` away and start anew: \
             every operator's state starts empty and the sources start as on a first run \
             (files present are read again, Kafka from its starting offsets), so outputs \
             see that input again",
            commits.len(),
            log.path("").display().to_string().trim_end_matches('/')
        ),
    })
}

/// The checkpoint's metadata; a damaged file is refused with the way out.
pub(super) fn read_metadata(log: &super::log::CheckpointLog) -> Result<Option<Metadata>> {
    log.read_metadata().map_err(|e| match e {
        Error::Checkpoint { path, reason } => Error::Checkpoint {
            path,
            reason: format!(
                "{reason}; recovery needs it (the application, the batch timing and the \
                 operators' state schemas). Restore it from a backup; or move the whole \
                 checkpoint `{}` away and start anew: every operator's state starts empty \
                 and the sources start as on a first run, so outputs see that input again",
                log.path("").display().to_string().trim_end_matches('/')
            ),
        },
        other => other,
    })
}

/// A plan that cannot be read for a batch that must be re-run, with the way out.
pub(super) fn unreplayable(e: Error) -> Error {
    match e {
        Error::Checkpoint { path, reason } => Error::Checkpoint {
            path,
            reason: format!(
                "{reason}; this batch was planned but never committed, so it cannot be \
                 re-run — move the file away to plan its input again"
            ),
        },
        other => other,
    }
}

impl Checkpointer {
    /// Recovers from the directory (or initialises it), restoring operator state.
    pub fn recover(
        &self,
        app_name: &str,
        interval_ms: i64,
        config: Vec<(String, String)>,
        fresh: (Time, u64),
        inputs: &[Arc<dyn InputSource>],
    ) -> Result<Recovery> {
        let storage = &self.config.location;
        *lock(&self.ownership) = Some(storage.take_ownership(self.config.takeover)?);
        let Some(meta) = read_metadata(&self.log)? else {
            return self.initialise(app_name, interval_ms, config, fresh);
        };
        let start_empty = self.check_metadata(&meta, app_name, &config)?;
        let plan_ids = self.log.plan_ids()?;
        // Every logged plan is read at once (one round of requests on an object store).
        let mut plans = self.log.read_plans(&plan_ids);
        let chosen = self.choose_commit(&start_empty, &plan_ids)?;
        let committed = chosen.as_ref().map(|(c, _)| c.batch_id);
        self.restore_state(committed, chosen.map(|(_, loaded)| loaded), &start_empty)?;
        if let Some(c) = committed {
            self.seed_sources(c, &plan_ids, &mut plans, inputs)?;
        }
        let replays = self.collect_replays(committed, &plan_ids, &mut plans, inputs)?;
        let timing = self.resume_timing(&meta, interval_ms, committed, &replays)?;
        self.log.write_metadata(&Metadata {
            app_name: app_name.to_string(),
            zero_ms: timing.zero.0,
            base_id: timing.base_id,
            interval_ms,
            operators: self.operators_in_code(),
            config,
        })?;
        tracing::info!(
            committed = ?committed,
            replays = replays.len(),
            next_batch = timing.next_id,
            "recovered from checkpoint {}",
            storage.location()
        );
        Ok(Recovery {
            zero: timing.zero,
            base_id: timing.base_id,
            replays,
            next_time: timing.next_time,
            restored: committed.is_some(),
        })
    }

    /// A directory without metadata: a new checkpoint (refused if plans exist).
    fn initialise(
        &self,
        app_name: &str,
        interval_ms: i64,
        config: Vec<(String, String)>,
        (fresh_zero, fresh_base): (Time, u64),
    ) -> Result<Recovery> {
        if !self.log.plan_ids()?.is_empty() {
            return Err(Error::Checkpoint {
                path: self.log.path("metadata"),
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
        Ok(Recovery {
            zero: fresh_zero,
            base_id: fresh_base,
            replays: Vec::new(),
            next_time: fresh_zero.plus_ms(interval_ms),
            restored: false,
        })
    }

    /// Checks the application name, applies the upgrade policy to the operators (drops
    /// old state where allowed) and warns of changed settings; returns the operators
    /// whose state starts empty.
    fn check_metadata(
        &self,
        meta: &Metadata,
        app_name: &str,
        config: &[(String, String)],
    ) -> Result<BTreeSet<String>> {
        if meta.app_name != app_name {
            return Err(Error::Checkpoint {
                path: self.log.path("metadata"),
                reason: format!(
                    "belongs to application `{}`, not `{app_name}`; use another checkpoint \
                     directory per application",
                    meta.app_name
                ),
            });
        }
        let report = self.upgrade_report(meta);
        let mut start_empty: BTreeSet<String> = BTreeSet::new();
        for (name, status) in &report.operators {
            match status {
                UpgradeStatus::Kept => {}
                UpgradeStatus::Migrated { old, new } => {
                    tracing::info!(operator = %name, from = %old, to = %new, "operator state migrates to the code's versions of its types");
                }
                UpgradeStatus::Introduced => {
                    start_empty.insert(name.clone());
                }
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
                            UpgradeStatus::New => format!("the code has this stateful operator but the checkpoint has no state for it; \
                                 set {} to start it empty (or give it the name it had with .name(..))", StateUpgrade::StartEmpty.how()),
                            UpgradeStatus::Removed => format!("the checkpoint has state for this operator but the code no longer has it; \
                                 set {} to drop that state (or restore the operator and its .name(..))", StateUpgrade::DropOld.how()),
                            UpgradeStatus::TypeChanged { old, new } => format!(
                                "its types changed from `{old}` to `{new}`; set {} to start it empty",
                                StateUpgrade::StartEmpty.how()
                            ),
                            UpgradeStatus::Kept | UpgradeStatus::Migrated { .. } | UpgradeStatus::Introduced => String::new(),
                        },
                    })
                }
            }
        }
        for (k, v) in config {
            if let Some((_, old)) = meta.config.iter().find(|(ok, _)| ok == k) {
                if old != v {
                    tracing::warn!(setting = %k, old = %old, new = %v, "configuration changed since the last run; using the new value");
                }
            }
        }
        Ok(start_empty)
    }

    /// The newest commit whose state loads, with that state (`None`: start before every
    /// plan, which is right only while the plans from batch 0 on are all there). State
    /// files of later versions are deleted: they were never trusted (written in place,
    /// perhaps torn by the crash), and the re-run batches write them anew.
    fn choose_commit(
        &self,
        start_empty: &BTreeSet<String>,
        plan_ids: &[u64],
    ) -> Result<Option<(Commit, Loaded)>> {
        // The directories are listed once.
        let commits = self.log.commit_ids()?;
        let on_disk: BTreeMap<String, usize> = self.store.operators()?.into_iter().collect();
        let (chosen, passed_over) = newest_loading(&self.log, &commits, |id| {
            self.load_states(id, start_empty, &on_disk)
        })?;
        for (id, e) in &passed_over {
            tracing::warn!(error = %e, batch = id, "commit passed over (its file or its state does not load); falling back to an older one");
        }
        if chosen.is_none() {
            if let Some(refusal) = no_commit_loads(&self.log, &commits, plan_ids, &passed_over) {
                return Err(refusal);
            }
        }
        let committed = chosen.as_ref().map(|(c, _)| c.batch_id);
        for state in &self.states {
            self.store
                .delete_after(&state.name(), state.partitions(), committed)?;
        }
        Ok(chosen)
    }

    /// Restores every state from the chosen commit's files (those starting empty stay so).
    fn restore_state(
        &self,
        committed: Option<u64>,
        loaded: Option<Loaded>,
        start_empty: &BTreeSet<String>,
    ) -> Result<()> {
        let (Some(_), Some(loaded)) = (committed, loaded) else {
            return Ok(());
        };
        for (state, old) in self.states.iter().zip(loaded) {
            if start_empty.contains(&state.name()) {
                continue;
            }
            state.restore(old).map_err(|source| Error::StateDecode {
                operator: state.name(),
                path: self.log.path(&format!("state/{}", dir_name(&state.name()))),
                source,
            })?;
        }
        Ok(())
    }

    /// Sources whose state is snapshot-only learn what the committed plans took since
    /// every state's last snapshot (what a plan before it took is in that snapshot).
    fn seed_sources(
        &self,
        committed: u64,
        plan_ids: &[u64],
        plans: &mut Plans,
        inputs: &[Arc<dyn InputSource>],
    ) -> Result<()> {
        let needed_after = self.last_snapshot_of_all(committed)?;
        for &id in plan_ids.iter().filter(|&&id| id <= committed) {
            let plan = match take_plan(plans, id, &self.log) {
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
        Ok(())
    }

    /// The plans after the commit, to re-run in order from their logs. Plans are logged
    /// in groups made durable together before any of them runs, so a gap can only be in
    /// a group that never ran: the plans after a gap are dropped (their input is planned
    /// again). Every source a replay reads from must still be in the code.
    fn collect_replays(
        &self,
        committed: Option<u64>,
        plan_ids: &[u64],
        plans: &mut Plans,
        inputs: &[Arc<dyn InputSource>],
    ) -> Result<Vec<Plan>> {
        let mut replays = Vec::new();
        let mut expected = committed.map(|c| c + 1);
        for &id in plan_ids {
            if committed.is_some_and(|c| id <= c) {
                continue;
            }
            if expected.is_some_and(|e| id != e) {
                let path = self.log.plan_path(id);
                tracing::warn!(plan = %path.display(), "dropping a plan after a gap in the plan log (its batch never ran)");
                self.log.delete_plan(id)?;
                continue;
            }
            expected = Some(id + 1);
            replays.push(take_plan(plans, id, &self.log).map_err(unreplayable)?);
        }
        if let (Some(c), Some(first)) = (committed, replays.first()) {
            if first.batch_id != c + 1 {
                return Err(Error::Checkpoint {
                    path: self.log.plan_path(c + 1),
                    reason: format!(
                        "missing: batch {} is committed, but the plan of batch {} is gone; \
                         move the plans after batch {c} away: their input is planned again",
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
        Ok(replays)
    }

    /// The batch clock after recovery: the old one, unless the interval changed (then
    /// batch times continue from the last batch; refused while batches are pending).
    fn resume_timing(
        &self,
        meta: &Metadata,
        interval_ms: i64,
        committed: Option<u64>,
        replays: &[Plan],
    ) -> Result<Timing> {
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
        Ok(Timing {
            zero,
            base_id,
            next_id,
            next_time,
        })
    }
}
