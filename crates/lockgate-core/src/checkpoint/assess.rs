//! What recovery would do with a checkpoint, found without the job's code: the commit
//! it would start from (and the newer ones it would pass over), the batches it would
//! re-run from their plans, or why it would refuse to start — with the same words and
//! advice as recovery itself. `lockgate checkpoint inspect` reports it.

use std::sync::Arc;

use super::log::CheckpointLog;
use super::recover::{newest_loading, no_commit_loads, read_metadata, unreplayable};
use super::store::StateStore;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// What recovery would do (see the [module](self)).
#[derive(Debug)]
pub struct Assessment {
    /// The commit recovery would start from (`None`: before every plan).
    pub start_after: Option<u64>,
    /// Newer commits it would pass over (their file or their state does not load), and
    /// why.
    pub passed_over: Vec<(u64, Error)>,
    /// The batches it would re-run from their logged plans.
    pub replays: Vec<u64>,
    /// Plans after a gap, dropped (their batches never ran; their input is planned
    /// again).
    pub dropped: Vec<u64>,
    /// Why it would refuse to start, if it would.
    pub refusal: Option<Error>,
}

/// Assesses the checkpoint in `storage` as recovery would with code whose operators
/// are those its metadata records (a job whose code changed may still be refused for
/// that: `checkpoint check-upgrade` tells). `None` for a location without a checkpoint.
pub fn assess(storage: Arc<dyn Storage>) -> Result<Option<Assessment>> {
    let log = CheckpointLog::new(storage.clone());
    let meta = match read_metadata(&log) {
        Ok(Some(meta)) => meta,
        Ok(None) => return Ok(None),
        Err(refusal) => {
            return Ok(Some(Assessment {
                start_after: None,
                passed_over: Vec::new(),
                replays: Vec::new(),
                dropped: Vec::new(),
                refusal: Some(refusal),
            }))
        }
    };
    let store = StateStore::new(storage);
    let commits = log.commit_ids()?;
    let plan_ids = log.plan_ids()?;
    let (chosen, passed_over) = newest_loading(&log, &commits, |id| {
        for (name, schema, parts) in &meta.operators {
            for p in 0..usize::try_from(*parts).unwrap_or(0) {
                store.load(name, schema, p, id)?;
            }
        }
        Ok(())
    })?;
    let start_after = chosen.map(|(c, ())| c.batch_id);
    let mut refusal = if start_after.is_none() {
        no_commit_loads(&log, &commits, &plan_ids, &passed_over)
    } else {
        None
    };
    let (mut replays, mut dropped) = (Vec::new(), Vec::new());
    let mut expected = start_after.map(|c| c + 1);
    for &id in plan_ids
        .iter()
        .filter(|&&id| start_after.is_none_or(|c| id > c))
    {
        if expected.is_some_and(|e| id != e) {
            dropped.push(id);
            continue;
        }
        expected = Some(id + 1);
        if refusal.is_none() {
            if let Err(e) = log.read_plan(id) {
                refusal = Some(unreplayable(e));
            }
        }
        replays.push(id);
    }
    Ok(Some(Assessment {
        start_after,
        passed_over,
        replays,
        dropped,
        refusal,
    }))
}
