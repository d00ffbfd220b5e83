//! The state store: `state/<operator>/<partition>/<version>.{delta,snapshot,deltas}`.
//!
//! Each file is a framed checkpoint file whose payload starts with a [`StateHeader`]
//! (operator name, type description, codec, partition, version), followed by the
//! operator's encoded entries. The state of version `v` is the newest snapshot at or
//! before `v` plus the deltas after it up to `v`, applied in order. On an object store
//! the deltas of several batches written together go into one `.deltas` file named by
//! the newest (after the header: their count, then each one's version, length and
//! entries).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::log::read_framed;
use crate::codec::{Codec, CodecError, Stored};
use crate::error::{Error, Result};
use crate::storage::file::{frame, FileKind, Placement};
use crate::storage::{join, Storage};

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

/// One state file in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    /// Its key under the checkpoint location.
    pub key: String,
    /// Its path (or URL), for messages.
    pub path: PathBuf,
    /// Its version.
    pub version: u64,
    /// Snapshot (true) or delta.
    pub snapshot: bool,
    /// A group of consecutive deltas up to `version` (`<version>.deltas`), written
    /// together on an object store.
    pub grouped: bool,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The state store of a checkpoint.
#[derive(Clone, Debug)]
pub struct StateStore {
    storage: Arc<dyn Storage>,
}

impl StateStore {
    /// The store under `<checkpoint>/state`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        StateStore { storage }
    }

    fn part_dir(operator: &str, partition: usize) -> String {
        format!("state/{}/{partition}", dir_name(operator))
    }

    /// The key and framed bytes of one state file.
    pub fn file(&self, header: &StateHeader, snapshot: bool, entries: &[u8]) -> (String, Vec<u8>) {
        let part = usize::try_from(header.partition).unwrap_or(usize::MAX);
        let ext = if snapshot { "snapshot" } else { "delta" };
        let key = format!(
            "{}/{}.{ext}",
            Self::part_dir(&header.operator, part),
            header.version
        );
        let mut payload = Vec::with_capacity(entries.len() + 128);
        header.encode(&mut payload);
        payload.extend_from_slice(entries);
        let kind = if snapshot {
            FileKind::Snapshot
        } else {
            FileKind::Delta
        };
        (key, frame(kind, &payload))
    }

    /// The keys and framed bytes of state files handed over together, in batch order.
    /// With `group` (an object store, where every request costs) they are written for a
    /// commit of their newest batch, never of one before: per operator partition only
    /// the newest snapshot and the deltas after it are written, the deltas as one
    /// `<newest>.deltas` file.
    pub fn files_of(
        &self,
        files: &[(StateHeader, bool, Vec<u8>)],
        group: bool,
    ) -> Vec<(String, Vec<u8>)> {
        if !group {
            return files
                .iter()
                .map(|(header, snapshot, bytes)| self.file(header, *snapshot, bytes))
                .collect();
        }
        let partition = |h: &StateHeader| (h.operator.clone(), h.partition);
        let newest_snapshot: BTreeMap<_, usize> = files
            .iter()
            .enumerate()
            .filter(|(_, (_, snapshot, _))| *snapshot)
            .map(|(i, (header, _, _))| (partition(header), i))
            .collect();
        let mut out = Vec::new();
        let mut runs: BTreeMap<_, Vec<(&StateHeader, &[u8])>> = BTreeMap::new();
        for (i, (header, snapshot, bytes)) in files.iter().enumerate() {
            let part = partition(header);
            match newest_snapshot.get(&part) {
                Some(&newest) if i < newest => {} // the snapshot supersedes it
                _ if *snapshot => out.push(self.file(header, true, bytes)),
                _ => runs.entry(part).or_default().push((header, bytes)),
            }
        }
        out.extend(runs.values().map(|run| self.group(run)));
        out
    }

    /// One file for a run of deltas: a plain delta for one, else a `.deltas` file with
    /// the newest header and each delta's version and entries.
    fn group(&self, run: &[(&StateHeader, &[u8])]) -> (String, Vec<u8>) {
        let (newest, entries) = run[run.len() - 1];
        if run.len() == 1 {
            return self.file(newest, false, entries);
        }
        let part = usize::try_from(newest.partition).unwrap_or(usize::MAX);
        let key = format!(
            "{}/{}.deltas",
            Self::part_dir(&newest.operator, part),
            newest.version
        );
        let size: usize = run.iter().map(|(_, e)| e.len() + 16).sum();
        let mut payload = Vec::with_capacity(size + 136);
        newest.encode(&mut payload);
        (run.len() as u64).encode(&mut payload);
        for (header, entries) in run {
            header.version.encode(&mut payload);
            (entries.len() as u64).encode(&mut payload);
            payload.extend_from_slice(entries);
        }
        (key, frame(FileKind::Deltas, &payload))
    }

    /// Writes state files; on a local directory they are durable after the next
    /// [`Storage::sync`].
    pub fn write_all(&self, files: Vec<(String, Vec<u8>)>, placement: Placement) -> Result<()> {
        self.storage.put_all(files, placement)
    }

    /// The state files of one operator partition, by version.
    pub fn files(&self, operator: &str, partition: usize) -> Result<Vec<StateFile>> {
        let dir = Self::part_dir(operator, partition);
        let mut out: Vec<StateFile> = self
            .storage
            .list(&dir)?
            .into_iter()
            .filter(|e| !e.dir)
            .filter_map(|e| {
                let (v, ext) = e.name.split_once('.')?;
                let version: u64 = v.parse().ok()?;
                let (snapshot, grouped) = match ext {
                    "snapshot" => (true, false),
                    "delta" => (false, false),
                    "deltas" => (false, true),
                    _ => return None,
                };
                let key = join(&dir, &e.name);
                Some(StateFile {
                    path: self.storage.name_of(&key),
                    key,
                    version,
                    snapshot,
                    grouped,
                    bytes: e.bytes,
                })
            })
            .collect();
        out.sort_by_key(|f| (f.version, !f.snapshot));
        Ok(out)
    }

    /// Operators with state in the store and their partition counts.
    pub fn operators(&self) -> Result<Vec<(String, usize)>> {
        let mut out = Vec::new();
        for e in self.storage.list("state")?.into_iter().filter(|e| e.dir) {
            let parts = self
                .storage
                .list(&join("state", &e.name))?
                .into_iter()
                .filter(|x| x.dir && x.name.parse::<usize>().is_ok())
                .count();
            out.push((e.name, parts));
        }
        out.sort();
        Ok(out)
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
            .files(operator, partition)?
            .into_iter()
            .filter(|f| f.version <= version)
            .collect();
        let start = files.iter().rposition(|f| f.snapshot).unwrap_or(0);
        let mut out = Vec::new();
        for f in &files[start..] {
            let kind = match (f.snapshot, f.grouped) {
                (true, _) => FileKind::Snapshot,
                (false, false) => FileKind::Delta,
                (false, true) => FileKind::Deltas,
            };
            let payload = read_framed(&*self.storage, &f.key, kind)?;
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
                         set {} to drop the old state",
                        header.type_desc,
                        super::StateUpgrade::StartEmpty.how()
                    ),
                });
            }
            let versions = matched.versions();
            if !f.grouped {
                out.push(Stored {
                    bytes: input.to_vec(),
                    versions,
                });
                continue;
            }
            let bad = |e: CodecError| Error::Checkpoint {
                path: f.path.clone(),
                reason: e.to_string(),
            };
            let count = u64::decode(&mut input).map_err(bad)?;
            for _ in 0..count {
                let version = u64::decode(&mut input).map_err(bad)?;
                if version > f.version {
                    return Err(Error::Checkpoint {
                        path: f.path.clone(),
                        reason: format!("holds a delta of version {version}, after its own"),
                    });
                }
                let len = u64::decode(&mut input).map_err(bad)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&n| n <= input.len())
                    .ok_or_else(|| Error::Checkpoint {
                        path: f.path.clone(),
                        reason: format!("a delta of {len} bytes runs past the end of the file"),
                    })?;
                let (entries, rest) = input.split_at(len);
                input = rest;
                out.push(Stored {
                    bytes: entries.to_vec(),
                    versions: versions.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Deletes what is no longer needed to rebuild any version from `first_kept` on.
    pub fn delete_before(&self, operator: &str, partitions: usize, first_kept: u64) {
        for p in 0..partitions {
            let files = match self.files(operator, p) {
                Ok(files) => files,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list old state files to delete");
                    continue;
                }
            };
            let Some(base) = files
                .iter()
                .rposition(|f| f.snapshot && f.version <= first_kept)
            else {
                continue;
            };
            for f in &files[..base] {
                if let Err(e) = self.storage.delete(&f.key) {
                    tracing::warn!(error = %e, "cannot delete old state file");
                }
            }
        }
    }

    /// Deletes the files of versions after `version` (all of them for `None`): state of
    /// batches that were not committed.
    pub fn delete_after(
        &self,
        operator: &str,
        partitions: usize,
        version: Option<u64>,
    ) -> Result<()> {
        for p in 0..partitions {
            for f in self.files(operator, p)? {
                if version.is_none_or(|v| f.version > v) {
                    self.storage.delete(&f.key)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes all state of an operator (dropped by the user's choice).
    pub fn delete_operator(&self, dir: &str) -> Result<()> {
        self.storage.delete_dir(&join("state", dir))
    }
}
