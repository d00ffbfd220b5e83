//! The state store: `state/<operator>/<partition>/<version>.{delta,snapshot}`.
//!
//! Each file is a framed checkpoint file whose payload starts with a [`StateHeader`]
//! (operator name, type description, codec, partition, version), followed by the
//! operator's encoded entries. The state of version `v` is the newest snapshot at or
//! before `v` plus the deltas after it up to `v`, applied in order.

use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::file::{read_file, write_files, FileKind, Placement};
use crate::codec::{Codec, CodecError, Stored};
use crate::error::{Error, Result};

/// The codec name recorded in state files.
pub const CODEC: &str = "lockgate-codec-1";

/// The self-description at the start of every state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHeader {
    /// The operator's stable name.
    pub operator: String,
    /// The state's schema (`checkpoint::schema`; Rust type paths in files of
    /// releases before schemas).
    pub type_desc: String,
    /// The codec.
    pub codec: String,
    /// The partition of this file.
    pub partition: u64,
    /// How many partitions the operator had.
    pub partitions: u64,
    /// The state version (batch id).
    pub version: u64,
}

impl Codec for StateHeader {
    const NAME: &'static str = "StateHeader";
    fn encode(&self, out: &mut Vec<u8>) {
        self.operator.encode(out);
        self.type_desc.encode(out);
        self.codec.encode(out);
        self.partition.encode(out);
        self.partitions.encode(out);
        self.version.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(StateHeader {
            operator: Codec::decode_stored(input)?,
            type_desc: Codec::decode_stored(input)?,
            codec: Codec::decode_stored(input)?,
            partition: Codec::decode_stored(input)?,
            partitions: Codec::decode_stored(input)?,
            version: Codec::decode_stored(input)?,
        })
    }
}

/// A file name component for an operator name.
pub fn dir_name(operator: &str) -> String {
    operator
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One state file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    /// Its path.
    pub path: PathBuf,
    /// Its version.
    pub version: u64,
    /// Snapshot (true) or delta.
    pub snapshot: bool,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The state store of a checkpoint directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    /// The store under `<checkpoint>/state`.
    pub fn new(checkpoint: &Path) -> Self {
        StateStore {
            root: checkpoint.join("state"),
        }
    }

    fn part_dir(&self, operator: &str, partition: usize) -> PathBuf {
        self.root
            .join(dir_name(operator))
            .join(partition.to_string())
    }

    /// The path, kind and payload of one state file.
    pub fn file(
        &self,
        header: &StateHeader,
        snapshot: bool,
        entries: &[u8],
    ) -> (PathBuf, FileKind, Vec<u8>) {
        let part = usize::try_from(header.partition).unwrap_or(usize::MAX);
        let ext = if snapshot { "snapshot" } else { "delta" };
        let path = self
            .part_dir(&header.operator, part)
            .join(format!("{}.{ext}", header.version));
        let mut payload = Vec::with_capacity(entries.len() + 128);
        header.encode(&mut payload);
        payload.extend_from_slice(entries);
        let kind = if snapshot {
            FileKind::Snapshot
        } else {
            FileKind::Delta
        };
        (path, kind, payload)
    }

    /// Writes state files; they are durable after the next
    /// [`sync_filesystem`](crate::checkpoint::file::sync_filesystem).
    pub fn write_all(
        &self,
        files: Vec<(PathBuf, FileKind, Vec<u8>)>,
        placement: Placement,
    ) -> Result<()> {
        write_files(files, placement)
    }

    /// The state files of one operator partition, by version.
    pub fn files(&self, operator: &str, partition: usize) -> Vec<StateFile> {
        let dir = self.part_dir(operator, partition);
        let mut out: Vec<StateFile> = fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        let (v, ext) = name.split_once('.')?;
                        let version: u64 = v.parse().ok()?;
                        let snapshot = match ext {
                            "snapshot" => true,
                            "delta" => false,
                            _ => return None,
                        };
                        let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
                        Some(StateFile {
                            path: e.path(),
                            version,
                            snapshot,
                            bytes,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|f| (f.version, !f.snapshot));
        out
    }

    /// Operators with state on disk and their partition counts.
    pub fn operators(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let parts = fs::read_dir(e.path())
                    .map(|p| {
                        p.filter_map(|x| x.ok())
                            .filter(|x| x.file_name().to_string_lossy().parse::<usize>().is_ok())
                            .count()
                    })
                    .unwrap_or(0);
                out.push((name, parts));
            }
        }
        out.sort();
        out
    }

    /// The entry payloads that rebuild version `version` of one partition, in the order
    /// to apply them (a snapshot first if there is one). Checks every file's header:
    /// its schema must be the code's `schema` or one the code migrates (each payload
    /// carries the versions to decode it with).
    pub fn load(
        &self,
        operator: &str,
        schema: &str,
        partition: usize,
        version: u64,
    ) -> Result<Vec<Stored>> {
        let files: Vec<StateFile> = self
            .files(operator, partition)
            .into_iter()
            .filter(|f| f.version <= version)
            .collect();
        let start = files.iter().rposition(|f| f.snapshot).unwrap_or(0);
        let mut out = Vec::new();
        for f in &files[start..] {
            let kind = if f.snapshot {
                FileKind::Snapshot
            } else {
                FileKind::Delta
            };
            let payload = read_file(&f.path, kind)?;
            let mut input = payload.as_slice();
            let header = StateHeader::decode(&mut input).map_err(|e| Error::Checkpoint {
                path: f.path.clone(),
                reason: e.to_string(),
            })?;
            if header.operator != operator || header.codec != CODEC {
                return Err(Error::Checkpoint {
                    path: f.path.clone(),
                    reason: format!(
                        "belongs to operator `{}` with codec `{}`, expected `{operator}` with `{CODEC}`",
                        header.operator, header.codec
                    ),
                });
            }
            let matched = super::schema::compare(&header.type_desc, schema);
            if !matched.compatible() {
                return Err(Error::StateMismatch {
                    operator: operator.to_string(),
                    reason: format!(
                        "the checkpoint holds `{}` but the code now has `{schema}`; \
                         set StateUpgrade::StartEmpty to drop the old state",
                        header.type_desc
                    ),
                });
            }
            out.push(Stored {
                bytes: input.to_vec(),
                versions: matched.versions(),
            });
        }
        Ok(out)
    }

    /// Deletes what is no longer needed to rebuild any version from `first_kept` on.
    pub fn delete_before(&self, operator: &str, partitions: usize, first_kept: u64) {
        for p in 0..partitions {
            let files = self.files(operator, p);
            let Some(base) = files
                .iter()
                .rposition(|f| f.snapshot && f.version <= first_kept)
            else {
                continue;
            };
            for f in &files[..base] {
                if let Err(e) = fs::remove_file(&f.path) {
                    tracing::warn!(file = %f.path.display(), error = %e, "cannot delete old state file");
                }
            }
        }
    }

    /// Deletes the files of versions after `version` (all of them for `None`): state of
    /// batches that were not committed.
    pub fn delete_after(&self, operator: &str, partitions: usize, version: Option<u64>) {
        for p in 0..partitions {
            for f in self.files(operator, p) {
                if version.is_none_or(|v| f.version > v) {
                    if let Err(e) = fs::remove_file(&f.path) {
                        tracing::warn!(file = %f.path.display(), error = %e, "cannot delete uncommitted state file");
                    }
                }
            }
        }
    }

    /// Deletes all state of an operator (dropped by the user's choice).
    pub fn delete_operator(&self, dir: &str) -> Result<()> {
        let path = self.root.join(dir);
        fs::remove_dir_all(&path).map_err(|e| Error::io("delete state directory", path, e))
    }
}
