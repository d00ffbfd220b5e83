//! Framed, atomically written checkpoint files.
//!
//! Every file is `magic "LKGT" | format version u16 | kind u8 | payload length u64 |
//! payload | CRC-32 of all before it`, written to a hidden temporary file in the same
//! directory, fsynced, renamed into place, and the directory fsynced. A reader checks
//! every field and reports a truncated or corrupt file by path; it never uses a file
//! that fails a check.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"LKGT";
/// The checkpoint format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
const HEADER: usize = 4 + 2 + 1 + 8;

/// What a checkpoint file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    /// `metadata`.
    Metadata = 1,
    /// `offsets/<batch>`: a batch plan.
    Plan = 2,
    /// `commits/<batch>`.
    Commit = 3,
    /// A state delta.
    Delta = 4,
    /// A state snapshot.
    Snapshot = 5,
    /// `offsets/<first>-<last>`: the plans of consecutive batches, logged together (on an
    /// object store, where every request costs).
    Plans = 6,
    /// Consecutive state deltas of one operator partition, written together (on an
    /// object store).
    Deltas = 7,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Metadata => "metadata",
            FileKind::Plan => "batch plan",
            FileKind::Commit => "commit",
            FileKind::Delta => "state delta",
            FileKind::Snapshot => "state snapshot",
            FileKind::Plans => "group of batch plans",
            FileKind::Deltas => "group of state deltas",
        }
    }
}

/// Frames `payload` as a checkpoint file of `kind`.
pub fn frame(kind: FileKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a framed file's bytes and returns its payload.
pub fn unframe<'a>(path: &Path, kind: FileKind, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER + 4 {
        return Err(bad(format!("truncated ({} bytes)", bytes.len())));
    }
    if &bytes[..4] != MAGIC {
        return Err(bad("not a Lockgate checkpoint file (bad magic)".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads version {FORMAT_VERSION}"
        )));
    }
    if bytes[6] != kind as u8 {
        return Err(bad(format!(
            "holds kind {}, expected a {}",
            bytes[6],
            kind.name()
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[7..15]);
    let len = u64::from_le_bytes(len);
    let expected = (HEADER as u64).saturating_add(len).saturating_add(4);
    if bytes.len() as u64 != expected {
        return Err(bad(format!(
            "truncated or padded: {} bytes, the header says {expected}",
            bytes.len()
        )));
    }
    let body_end = bytes.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[body_end..]);
    if crc32fast::hash(&bytes[..body_end]) != u32::from_le_bytes(crc) {
        return Err(bad("checksum mismatch (the file is corrupt)".into()));
    }
    Ok(&bytes[HEADER..body_end])
}

/// Writes `payload` to `path` atomically and durably.
pub fn write_file(path: &Path, kind: FileKind, payload: &[u8]) -> Result<()> {
    write_file_with(path, &frame(kind, payload), true, false)
}

/// True where one [`sync_filesystem`] makes many files durable at once (Linux `syncfs`);
/// elsewhere every file is fsynced on its own.
pub const BATCHED_SYNC: bool = cfg!(target_os = "linux");

/// How a local file is put in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Written under a temporary name and renamed: a reader sees the whole file or none.
    Atomic,
    /// Written under its own name (with batched syncs): for files that no reader trusts
    /// until a commit written after the next sync names them — state files of batches
    /// not yet committed. A crash mid-write leaves a torn file that recovery never
    /// reads (it loads versions up to the last durable commit) and a re-run rewrites.
    /// Saves a rename per file.
    Direct,
}

/// Writes many framed files; they are durable after the next [`sync_filesystem`] (or at
/// once where [`BATCHED_SYNC`] is false, always atomically then). With batched syncs the
/// writes are quick and made one after another on the calling thread; file by file
/// syncs wait for the disk, so they are made in parallel.
pub fn write_framed(files: Vec<(PathBuf, Vec<u8>)>, placement: Placement) -> Result<()> {
    use rayon::prelude::*;
    if BATCHED_SYNC {
        // Not on rayon: the callers (plan logging, the checkpoint writer) run beside the
        // workers, and a pool of their own would spin on the cores the workers need.
        let direct = placement == Placement::Direct;
        files
            .into_iter()
            .try_for_each(|(path, bytes)| write_file_with(&path, &bytes, false, direct))
    } else {
        files
            .into_par_iter()
            .try_for_each(|(path, bytes)| write_file_with(&path, &bytes, true, false))
    }
}

/// Makes every file written so far under `root` durable, renames included: one `syncfs`
/// of the filesystem on Linux (a no-op elsewhere, where writes were synced one by one).
pub fn sync_filesystem(root: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        let dir =
            fs::File::open(root).map_err(|e| Error::io("open checkpoint directory", root, e))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| Error::io("sync checkpoint filesystem", root, std::io::Error::from(e)))?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = root;
    Ok(())
}

fn write_file_with(path: &Path, bytes: &[u8], durable: bool, direct: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = if direct {
        path.to_path_buf()
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dir.join(format!(".{name}.tmp-{}", std::process::id()))
    };
    let write = || -> std::io::Result<()> {
        // The directory is made only when missing (a `mkdir` per file is a cost per batch).
        let mut f = match fs::File::create(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                fs::File::create(&tmp)?
            }
            created => created?,
        };
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        if !direct {
            fs::rename(&tmp, path)?;
        }
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write checkpoint file", path, e)
    })
}

/// Reads and checks a framed file; returns its payload.
pub fn read_file(path: &Path, kind: FileKind) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| Error::io("read checkpoint file", path, e))?;
    unframe(path, kind, &bytes).map(<[u8]>::to_vec)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match fs::File::open(dir) {
        Ok(d) => match d.sync_all() {
            // Some filesystems do not support syncing a directory; nothing more to do.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_every_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_file(&path, FileKind::Commit, b"payload").unwrap();
        assert_eq!(read_file(&path, FileKind::Commit).unwrap(), b"payload");
        assert!(read_file(&path, FileKind::Plan).is_err());
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(
                unframe(&path, FileKind::Commit, &bad).is_err(),
                "flip at {i}"
            );
        }
        for cut in 0..good.len() {
            assert!(
                unframe(&path, FileKind::Commit, &good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let err = unframe(&path, FileKind::Commit, &good[..5])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("truncated"),
            "{err}"
        );
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
