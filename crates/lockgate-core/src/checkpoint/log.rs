//! The checkpoint's logs: `metadata`, `offsets/<batch id>` (batch plans,
//! written before a batch runs) and `commits/<batch id>` (written when a batch's outputs
//! and state are done), plus their retention. Commits may be grouped when the disk is
//! slower than the batches: `commits/<b>` then covers every batch up to `b`. On an
//! object store, plans logged together go into one object, `offsets/<first>-<last>`
//! (every request costs there); it is written whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::types::SourcePlan;

use crate::codec::{from_bytes, to_bytes, Codec, CodecError};
use crate::error::{Error, Result};
use crate::storage::file::{frame, unframe, FileKind, Placement};
use crate::storage::{LocalDir, Storage};

/// `metadata`: who owns the directory and how its batches are timed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The application's name.
    pub app_name: String,
    /// Batch ids from `base_id` on have time `zero_ms + (id - base_id + 1) * interval_ms`.
    pub zero_ms: i64,
    /// See `zero_ms`.
    pub base_id: u64,
    /// The batch interval.
    pub interval_ms: i64,
    /// Stateful operators: (stable name, type description, partitions).
    pub operators: Vec<(String, String, u64)>,
    /// Other settings, as `key=value`, for the record and change detection.
    pub config: Vec<(String, String)>,
}

impl Codec for Metadata {
    const NAME: &'static str = "Metadata";
    fn encode(&self, out: &mut Vec<u8>) {
        self.app_name.encode(out);
        self.zero_ms.encode(out);
        self.base_id.encode(out);
        self.interval_ms.encode(out);
        self.operators.encode(out);
        self.config.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(Metadata {
            app_name: Codec::decode_stored(input)?,
            zero_ms: Codec::decode_stored(input)?,
            base_id: Codec::decode_stored(input)?,
            interval_ms: Codec::decode_stored(input)?,
            operators: Codec::decode_stored(input)?,
            config: Codec::decode_stored(input)?,
        })
    }
}

/// `offsets/<batch id>`: what a batch reads, logged before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The batch id.
    pub batch_id: u64,
    /// The batch time in ms.
    pub batch_time_ms: i64,
    /// Each source's descriptor.
    pub sources: Vec<SourcePlan>,
    /// The last batch of a bounded run: event-time operators emit their open windows.
    /// (Written last and optional when reading, so older plans still decode.)
    pub end_of_input: bool,
}

impl Codec for Plan {
    const NAME: &'static str = "Plan";
    fn encode(&self, out: &mut Vec<u8>) {
        self.batch_id.encode(out);
        self.batch_time_ms.encode(out);
        self.sources.encode(out);
        self.end_of_input.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(Plan {
            batch_id: Codec::decode_stored(input)?,
            batch_time_ms: Codec::decode_stored(input)?,
            sources: Codec::decode_stored(input)?,
            end_of_input: if input.is_empty() {
                false
            } else {
                Codec::decode_stored(input)?
            },
        })
    }
}

/// `commits/<batch id>`: the batch's outputs and state are complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The batch id.
    pub batch_id: u64,
    /// The batch time in ms.
    pub batch_time_ms: i64,
}

impl Codec for Commit {
    const NAME: &'static str = "Commit";
    fn encode(&self, out: &mut Vec<u8>) {
        self.batch_id.encode(out);
        self.batch_time_ms.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(Commit {
            batch_id: Codec::decode_stored(input)?,
            batch_time_ms: Codec::decode_stored(input)?,
        })
    }
}

/// The logs of one checkpoint location.
#[derive(Clone, Debug)]
pub struct CheckpointLog {
    storage: Arc<dyn Storage>,
}

fn decode<T: Codec>(path: &Path, payload: &[u8]) -> Result<T> {
    from_bytes(payload).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Batch ids of the files under `dir` named by a number (temporary files are skipped).
pub fn numbered_files(storage: &dyn Storage, dir: &str) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = storage
        .list(dir)?
        .into_iter()
        .filter(|e| !e.dir)
        .filter_map(|e| e.name.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The most plans one group file may hold (a name claiming more is not a plan file).
const MAX_GROUP: u64 = 1 << 16;

/// A plan file: `offsets/<id>` (one plan) or `offsets/<first>-<last>` (a group).
#[derive(Clone, Debug)]
struct PlanFile {
    key: String,
    first: u64,
    last: u64,
}

impl PlanFile {
    fn of(name: &str) -> Option<PlanFile> {
        let (first, last) = match name.split_once('-') {
            None => {
                let id = name.parse().ok()?;
                (id, id)
            }
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        };
        (first <= last && last - first < MAX_GROUP).then(|| PlanFile {
            key: format!("offsets/{name}"),
            first,
            last,
        })
    }

    fn grouped(&self) -> bool {
        self.key.contains('-')
    }

    fn holds(&self, id: u64) -> bool {
        (self.first..=self.last).contains(&id)
    }

    /// The plans in the file's framed `bytes`.
    fn decode(&self, path: &Path, bytes: &[u8]) -> Result<Vec<Plan>> {
        if !self.grouped() {
            return Ok(vec![decode(path, unframe(path, FileKind::Plan, bytes)?)?]);
        }
        let plans: Vec<Plan> = decode(path, unframe(path, FileKind::Plans, bytes)?)?;
        let ids: Vec<u64> = plans.iter().map(|p| p.batch_id).collect();
        if !ids.iter().copied().eq(self.first..=self.last) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("holds the plans of batches {ids:?}, not those its name says"),
            });
        }
        Ok(plans)
    }
}

/// `e` for the first of `ids`; for the others, the same reason as a checkpoint error
/// naming `path` (errors are not `Clone`; recovery stops at the first anyway).
fn spread(ids: &[u64], e: Error, path: impl Fn(u64) -> PathBuf) -> Vec<(u64, Result<Plan>)> {
    let reason = e.to_string();
    let mut first = Some(e);
    ids.iter()
        .map(|&id| {
            let e = first.take().unwrap_or_else(|| Error::Checkpoint {
                path: path(id),
                reason: reason.clone(),
            });
            (id, Err(e))
        })
        .collect()
}

/// Reads and checks a framed file of `kind` at `key`.
pub fn read_framed(storage: &dyn Storage, key: &str, kind: FileKind) -> Result<Vec<u8>> {
    let path = storage.name_of(key);
    let bytes = storage.get(key)?.ok_or_else(|| Error::Checkpoint {
        path: path.clone(),
        reason: "missing".into(),
    })?;
    unframe(&path, kind, &bytes).map(<[u8]>::to_vec)
}

impl CheckpointLog {
    /// The logs in `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        CheckpointLog { storage }
    }

    /// The logs in a local directory.
    pub fn local(dir: &Path) -> Self {
        Self::new(Arc::new(LocalDir::new(dir)))
    }

    /// Where the checkpoint is.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The key of the plan of `id`.
    pub fn plan_key(id: u64) -> String {
        format!("offsets/{id}")
    }

    /// The key of the commit of `id`.
    pub fn commit_key(id: u64) -> String {
        format!("commits/{id}")
    }

    /// The path (or URL) of the plan of `id`, for messages.
    pub fn plan_path(&self, id: u64) -> PathBuf {
        self.storage.name_of(&Self::plan_key(id))
    }

    /// The path (or URL) of the commit of `id`, for messages.
    pub fn commit_path(&self, id: u64) -> PathBuf {
        self.storage.name_of(&Self::commit_key(id))
    }

    /// The path (or URL) of `key`, for messages.
    pub fn path(&self, key: &str) -> PathBuf {
        self.storage.name_of(key)
    }

    /// The metadata, or `None` for a new checkpoint.
    pub fn read_metadata(&self) -> Result<Option<Metadata>> {
        let Some(bytes) = self.storage.get(METADATA)? else {
            return Ok(None);
        };
        let path = self.storage.name_of(METADATA);
        let payload = unframe(&path, FileKind::Metadata, &bytes)?;
        decode(&path, payload).map(Some)
    }

    /// Writes the metadata durably.
    pub fn write_metadata(&self, m: &Metadata) -> Result<()> {
        self.put_durably(vec![(
            METADATA.to_string(),
            frame(FileKind::Metadata, &to_bytes(m)),
        )])
    }

    fn put_durably(&self, files: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.storage.put_all(files, Placement::Atomic)?;
        self.storage.sync()
    }

    /// Logs several plans and makes them durable together (one filesystem sync; one
    /// object for consecutive batches on an object store).
    pub fn write_plans(&self, plans: &[Plan]) -> Result<()> {
        let consecutive = plans.windows(2).all(|w| w[1].batch_id == w[0].batch_id + 1);
        if plans.len() > 1 && consecutive && self.storage.groups_writes() {
            let key = format!(
                "offsets/{}-{}",
                plans[0].batch_id,
                plans[plans.len() - 1].batch_id
            );
            return self.put_durably(vec![(
                key,
                frame(FileKind::Plans, &to_bytes(&plans.to_vec())),
            )]);
        }
        let files = plans
            .iter()
            .map(|p| {
                (
                    Self::plan_key(p.batch_id),
                    frame(FileKind::Plan, &to_bytes(p)),
                )
            })
            .collect();
        self.put_durably(files)
    }

    /// Writes a commit that becomes durable with the next sync (group commit).
    pub fn write_commit_deferred(&self, c: &Commit) -> Result<()> {
        self.storage.put_all(
            vec![(
                Self::commit_key(c.batch_id),
                frame(FileKind::Commit, &to_bytes(c)),
            )],
            Placement::Atomic,
        )
    }

    /// The plan files, by their first batch.
    fn plan_files(&self) -> Result<Vec<PlanFile>> {
        let mut files: Vec<PlanFile> = self
            .storage
            .list("offsets")?
            .into_iter()
            .filter(|e| !e.dir)
            .filter_map(|e| PlanFile::of(&e.name))
            .collect();
        files.sort_by_key(|f| f.first);
        Ok(files)
    }

    /// Reads the plan of `id`.
    pub fn read_plan(&self, id: u64) -> Result<Plan> {
        self.read_plans(&[id])
            .remove(&id)
            .unwrap_or_else(|| Err(self.missing(&Self::plan_key(id))))
    }

    fn missing(&self, key: &str) -> Error {
        Error::Checkpoint {
            path: self.storage.name_of(key),
            reason: "missing".into(),
        }
    }

    /// Reads the plans of `ids` at once (concurrently on an object store), each with
    /// its own result.
    pub fn read_plans(&self, ids: &[u64]) -> BTreeMap<u64, Result<Plan>> {
        let mut out = BTreeMap::new();
        let files = match self.plan_files() {
            Ok(files) => files,
            Err(e) => {
                out.extend(spread(ids, e, |id| self.plan_path(id)));
                return out;
            }
        };
        // The files holding `ids`, each read once.
        let wanted: Vec<&PlanFile> = files
            .iter()
            .filter(|f| ids.iter().any(|&id| f.holds(id)))
            .collect();
        let keys: Vec<String> = wanted.iter().map(|f| f.key.clone()).collect();
        let got = self.storage.get_many(&keys);
        for (file, bytes) in wanted.into_iter().zip(got) {
            let held: Vec<u64> = ids.iter().copied().filter(|&id| file.holds(id)).collect();
            let path = self.storage.name_of(&file.key);
            let plans = bytes.and_then(|b| {
                let b = b.ok_or_else(|| self.missing(&file.key))?;
                file.decode(&path, &b)
            });
            match plans {
                Ok(plans) => out.extend(
                    plans
                        .into_iter()
                        .filter(|p| held.contains(&p.batch_id))
                        .map(|p| (p.batch_id, Ok(p))),
                ),
                Err(e) => out.extend(spread(&held, e, |_| path.clone())),
            }
        }
        for &id in ids {
            out.entry(id)
                .or_insert_with(|| Err(self.missing(&Self::plan_key(id))));
        }
        out
    }

    /// Logs a commit durably.
    pub fn write_commit(&self, c: &Commit) -> Result<()> {
        self.put_durably(vec![(
            Self::commit_key(c.batch_id),
            frame(FileKind::Commit, &to_bytes(c)),
        )])
    }

    /// Reads the commit of `id`.
    pub fn read_commit(&self, id: u64) -> Result<Commit> {
        let key = Self::commit_key(id);
        let payload = read_framed(&*self.storage, &key, FileKind::Commit)?;
        decode(&self.storage.name_of(&key), &payload)
    }

    /// Ids of logged plans, ascending.
    pub fn plan_ids(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self
            .plan_files()?
            .iter()
            .flat_map(|f| f.first..=f.last)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Ids of logged commits, ascending.
    pub fn commit_ids(&self) -> Result<Vec<u64>> {
        numbered_files(&*self.storage, "commits")
    }

    /// Deletes a plan (one after a gap in the log, whose batch never ran) with the
    /// plans logged in one file with it (all after the gap too: a group is written
    /// whole).
    pub fn delete_plan(&self, id: u64) -> Result<()> {
        match self.plan_files()?.into_iter().find(|f| f.holds(id)) {
            Some(f) => self.storage.delete(&f.key),
            None => Ok(()),
        }
    }

    /// Deletes plans and commits of batches before `first_kept`.
    pub fn delete_before(&self, first_kept: u64) {
        let old = |listed: Result<Vec<String>>| match listed {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list old checkpoint files to delete");
                Vec::new()
            }
        };
        let plans = old(self.plan_files().map(|files| {
            files
                .into_iter()
                .filter(|f| f.last < first_kept)
                .map(|f| f.key)
                .collect()
        }));
        let commits = old(numbered_files(&*self.storage, "commits").map(|ids| {
            ids.into_iter()
                .filter(|&i| i < first_kept)
                .map(Self::commit_key)
                .collect()
        }));
        for key in plans.iter().chain(&commits) {
            if let Err(e) = self.storage.delete(key) {
                tracing::warn!(error = %e, "cannot delete old checkpoint file");
            }
        }
    }
}

/// The key of the metadata file.
const METADATA: &str = "metadata";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_written_before_end_of_input_still_decode() {
        let plan = Plan {
            batch_id: 3,
            batch_time_ms: 4000,
            sources: Vec::new(),
            end_of_input: false,
        };
        let mut old = to_bytes(&plan);
        old.pop(); // the format before the flag existed
        assert_eq!(from_bytes::<Plan>(&old).unwrap(), plan);
        let end = Plan {
            end_of_input: true,
            ..plan
        };
        assert_eq!(from_bytes::<Plan>(&to_bytes(&end)).unwrap(), end);
    }

    #[test]
    fn plans_commits_and_metadata_roundtrip_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = CheckpointLog::local(dir.path());
        assert_eq!(log.read_metadata().unwrap(), None);
        let m = Metadata {
            app_name: "a".into(),
            zero_ms: 0,
            base_id: 0,
            interval_ms: 1000,
            operators: vec![("op".into(), "u64".into(), 2)],
            config: vec![("parallelism".into(), "2".into())],
        };
        log.write_metadata(&m).unwrap();
        assert_eq!(log.read_metadata().unwrap(), Some(m));
        for id in 0..5 {
            let plan = Plan {
                batch_id: id,
                batch_time_ms: (id as i64 + 1) * 1000,
                sources: vec![SourcePlan {
                    source: "files-0".into(),
                    descriptor: vec![1, 2, 3],
                    records: 0,
                    description: "x".into(),
                }],
                end_of_input: id == 4,
            };
            log.write_plans(std::slice::from_ref(&plan)).unwrap();
            assert_eq!(log.read_plan(id).unwrap(), plan);
            log.write_commit(&Commit {
                batch_id: id,
                batch_time_ms: plan.batch_time_ms,
            })
            .unwrap();
        }
        log.delete_before(3);
        assert_eq!(log.plan_ids().unwrap(), vec![3, 4]);
        assert_eq!(log.commit_ids().unwrap(), vec![3, 4]);
    }
}
