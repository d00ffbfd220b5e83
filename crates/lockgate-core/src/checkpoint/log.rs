//! The checkpoint directory's logs: `metadata`, `offsets/<batch id>` (batch plans,
//! written before a batch runs) and `commits/<batch id>` (written when a batch's outputs
//! and state are done), plus their retention. Commits may be grouped when the disk is
//! slower than the batches: `commits/<b>` then covers every batch up to `b`.

use std::fs;
use std::path::{Path, PathBuf};

pub use crate::types::SourcePlan;

use crate::checkpoint::file::{
    read_file, sync_filesystem, write_file, write_files, FileKind, Placement,
};
use crate::codec::{from_bytes, to_bytes, Codec, CodecError};
use crate::error::{Error, Result};

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

/// The logs of one checkpoint directory.
#[derive(Clone, Debug)]
pub struct CheckpointLog {
    root: PathBuf,
}

fn decode<T: Codec>(path: &Path, payload: &[u8]) -> Result<T> {
    from_bytes(payload).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Batch ids of the files in `dir` named by a number (temporary files are skipped).
pub fn numbered_files(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

impl CheckpointLog {
    /// The logs under `root`.
    pub fn new(root: &Path) -> Self {
        CheckpointLog {
            root: root.to_path_buf(),
        }
    }

    /// The checkpoint directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn metadata_path(&self) -> PathBuf {
        self.root.join("metadata")
    }

    /// The path of the plan of `id`.
    pub fn plan_path(&self, id: u64) -> PathBuf {
        self.root.join("offsets").join(id.to_string())
    }

    /// The path of the commit of `id`.
    pub fn commit_path(&self, id: u64) -> PathBuf {
        self.root.join("commits").join(id.to_string())
    }

    /// The metadata, or `None` for a new checkpoint directory.
    pub fn read_metadata(&self) -> Result<Option<Metadata>> {
        let path = self.metadata_path();
        if !path.exists() {
            return Ok(None);
        }
        let payload = read_file(&path, FileKind::Metadata)?;
        decode(&path, &payload).map(Some)
    }

    /// Writes the metadata.
    pub fn write_metadata(&self, m: &Metadata) -> Result<()> {
        write_file(&self.metadata_path(), FileKind::Metadata, &to_bytes(m))
    }

    /// Logs several plans and makes them durable together (one filesystem sync).
    pub fn write_plans(&self, plans: &[Plan]) -> Result<()> {
        let files = plans
            .iter()
            .map(|p| (self.plan_path(p.batch_id), FileKind::Plan, to_bytes(p)))
            .collect();
        write_files(files, Placement::Atomic)?;
        sync_filesystem(&self.root)
    }

    /// Writes a commit that becomes durable with the next filesystem sync (group commit).
    pub fn write_commit_deferred(&self, c: &Commit) -> Result<()> {
        write_files(
            vec![(self.commit_path(c.batch_id), FileKind::Commit, to_bytes(c))],
            Placement::Atomic,
        )
    }

    /// Reads the plan of `id`.
    pub fn read_plan(&self, id: u64) -> Result<Plan> {
        let path = self.plan_path(id);
        let payload = read_file(&path, FileKind::Plan)?;
        decode(&path, &payload)
    }

    /// Logs a commit durably.
    pub fn write_commit(&self, c: &Commit) -> Result<()> {
        write_file(
            &self.commit_path(c.batch_id),
            FileKind::Commit,
            &to_bytes(c),
        )
    }

    /// Reads the commit of `id`.
    pub fn read_commit(&self, id: u64) -> Result<Commit> {
        let path = self.commit_path(id);
        let payload = read_file(&path, FileKind::Commit)?;
        decode(&path, &payload)
    }

    /// Ids of logged plans, ascending.
    pub fn plan_ids(&self) -> Vec<u64> {
        numbered_files(&self.root.join("offsets"))
    }

    /// Ids of logged commits, ascending.
    pub fn commit_ids(&self) -> Vec<u64> {
        numbered_files(&self.root.join("commits"))
    }

    /// Deletes plans and commits of batches before `first_kept`.
    pub fn delete_before(&self, first_kept: u64) {
        for (dir, ids) in [("offsets", self.plan_ids()), ("commits", self.commit_ids())] {
            for id in ids.into_iter().filter(|&i| i < first_kept) {
                let path = self.root.join(dir).join(id.to_string());
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete old checkpoint file");
                }
            }
        }
    }
}

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
        let log = CheckpointLog::new(dir.path());
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
        assert_eq!(log.plan_ids(), vec![3, 4]);
        assert_eq!(log.commit_ids(), vec![3, 4]);
    }
}
