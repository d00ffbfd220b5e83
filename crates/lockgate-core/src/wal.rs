//! The receivers' write-ahead log: blocks of records appended to segment files and
//! fsynced before they count as received.
//!
//! A segment is `<dir>/<first block id>.wal`, a sequence of frames
//! `magic "LGWB" | block id u64 | length u32 | payload | CRC-32`. A new segment starts
//! when the current one exceeds its size limit and at every process start, so a torn
//! tail (a crash in the middle of an append) is only ever at the end of a segment, where
//! reading stops: such a block was never acknowledged, so nothing that counted as
//! received is lost. On an object store every block is a one-frame segment object of its
//! own, durable once its write returns (an object cannot be appended to).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};
use crate::storage::file::Placement;
use crate::storage::{join, Storage};

const MAGIC: &[u8; 4] = b"LGWB";
const FRAME_OVERHEAD: usize = 4 + 8 + 4 + 4;
/// Default segment size before rotation.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// Where one block lives in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRef {
    /// The block id (increasing, never reused).
    pub block: u64,
    /// The segment (its first block id).
    pub segment: u64,
    /// Offset of the frame in the segment.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
}

impl Codec for BlockRef {
    const NAME: &'static str = "BlockRef";
    fn encode(&self, out: &mut Vec<u8>) {
        self.block.encode(out);
        self.segment.encode(out);
        self.offset.encode(out);
        self.len.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(BlockRef {
            block: Codec::decode_stored(input)?,
            segment: Codec::decode_stored(input)?,
            offset: Codec::decode_stored(input)?,
            len: Codec::decode_stored(input)?,
        })
    }
}

/// Where a log's segments are.
enum At {
    /// A local directory: segments are appended and synced in place.
    Dir(PathBuf),
    /// An object store: every block is an object of its own (a one-frame segment),
    /// durable once its write returns.
    Store {
        storage: Arc<dyn Storage>,
        dir: String,
    },
}

/// An open write-ahead log.
pub struct Wal {
    at: At,
    current: Option<(u64, File, u64)>,
    segment_bytes: u64,
    next_block: u64,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment_name(first))
}

/// Segment ids among listed names.
fn segment_ids(names: impl Iterator<Item = String>) -> Vec<u64> {
    let mut v: Vec<u64> = names
        .filter_map(|name| name.strip_suffix(".wal")?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// Parses the frames of one segment; stops at the first bad or torn frame.
fn scan_segment(shown: &Path, bytes: &[u8], segment: u64) -> Vec<BlockRef> {
    let mut refs = Vec::new();
    let mut off = 0usize;
    while off + FRAME_OVERHEAD <= bytes.len() {
        if &bytes[off..off + 4] != MAGIC {
            break;
        }
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&bytes[off + 4..off + 12]);
        let block = u64::from_le_bytes(b8);
        let mut b4 = [0u8; 4];
        b4.copy_from_slice(&bytes[off + 12..off + 16]);
        let len = u32::from_le_bytes(b4);
        let end = off + 16 + len as usize;
        if end + 4 > bytes.len() {
            break;
        }
        b4.copy_from_slice(&bytes[end..end + 4]);
        if crc32fast::hash(&bytes[off + 4..end]) != u32::from_le_bytes(b4) {
            break;
        }
        refs.push(BlockRef {
            block,
            segment,
            offset: off as u64,
            len,
        });
        off = end + 4;
    }
    if off < bytes.len() {
        tracing::warn!(segment = %shown.display(), offset = off, "WAL segment ends in a torn or corrupt frame; blocks after it were never acknowledged");
    }
    refs
}

/// Checks the frame of `r` at the start of `frame` and returns its payload.
fn check_frame(shown: &Path, r: &BlockRef, frame: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Checkpoint {
        path: shown.to_path_buf(),
        reason,
    };
    let need = r.len as usize + FRAME_OVERHEAD;
    if frame.len() < need {
        return Err(bad(format!("block {} is truncated", r.block)));
    }
    let frame = &frame[..need];
    let body_end = frame.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&frame[body_end..]);
    if &frame[..4] != MAGIC
        || frame[4..12] != r.block.to_le_bytes()
        || crc32fast::hash(&frame[4..body_end]) != u32::from_le_bytes(crc)
    {
        return Err(bad(format!(
            "block {} is corrupt (bad magic, id or checksum)",
            r.block
        )));
    }
    Ok(frame[16..body_end].to_vec())
}

impl Wal {
    /// Opens (creating) the log under `dir` of a checkpoint's storage; returns it and
    /// every readable block in it.
    pub fn open(storage: &Arc<dyn Storage>, dir: &str) -> Result<(Wal, Vec<BlockRef>)> {
        let at = match storage.local_dir() {
            Some(root) => At::Dir(root.join(dir)),
            None => At::Store {
                storage: storage.clone(),
                dir: dir.to_string(),
            },
        };
        let mut blocks = Vec::new();
        match &at {
            At::Dir(path) => {
                fs::create_dir_all(path).map_err(|e| Error::io("create WAL directory", path, e))?;
                let names = fs::read_dir(path)
                    .map_err(|e| Error::io("list WAL directory", path, e))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned());
                for seg in segment_ids(names) {
                    let seg_path = segment_path(path, seg);
                    let bytes = fs::read(&seg_path)
                        .map_err(|e| Error::io("read WAL segment", &seg_path, e))?;
                    blocks.extend(scan_segment(&seg_path, &bytes, seg));
                }
            }
            At::Store { storage, dir } => {
                let names = storage.list(dir)?.into_iter().map(|e| e.name);
                for seg in segment_ids(names) {
                    let key = join(dir, &segment_name(seg));
                    if let Some(bytes) = storage.get(&key)? {
                        blocks.extend(scan_segment(&storage.name_of(&key), &bytes, seg));
                    }
                }
            }
        }
        let next_block = blocks.iter().map(|b| b.block + 1).max().unwrap_or(0);
        let wal = Wal {
            at,
            current: None,
            segment_bytes: SEGMENT_BYTES,
            next_block,
        };
        Ok((wal, blocks))
    }

    /// Appends a block durably and returns where it is.
    pub fn append(&mut self, payload: &[u8]) -> Result<BlockRef> {
        let block = self.next_block;
        let len = u32::try_from(payload.len())
            .map_err(|_| Error::Config("WAL block larger than 4 GiB".into()))?;
        let mut frame = Vec::with_capacity(payload.len() + FRAME_OVERHEAD);
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&block.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload);
        let crc = crc32fast::hash(&frame[4..]);
        frame.extend_from_slice(&crc.to_le_bytes());
        let dir = match &self.at {
            At::Store { storage, dir } => {
                storage.put_all(
                    vec![(join(dir, &segment_name(block)), frame)],
                    Placement::Atomic,
                )?;
                self.next_block += 1;
                return Ok(BlockRef {
                    block,
                    segment: block,
                    offset: 0,
                    len,
                });
            }
            At::Dir(dir) => dir,
        };
        if self
            .current
            .as_ref()
            .is_none_or(|c| c.2 >= self.segment_bytes)
        {
            let path = segment_path(dir, block);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("create WAL segment", &path, e))?;
            crate::storage::file::sync_dir(dir)
                .map_err(|e| Error::io("sync WAL directory", dir, e))?;
            self.current = Some((block, f, 0));
        }
        let (segment, file, size) = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Lifecycle("WAL segment missing".into()))?;
        let path = segment_path(dir, *segment);
        file.write_all(&frame)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("append to WAL segment", &path, e))?;
        let r = BlockRef {
            block,
            segment: *segment,
            offset: *size,
            len,
        };
        *size += frame.len() as u64;
        self.next_block += 1;
        Ok(r)
    }

    /// Reads a block's payload, checking its frame.
    pub fn read(&self, r: &BlockRef) -> Result<Vec<u8>> {
        match &self.at {
            At::Dir(dir) => {
                use std::io::{Read, Seek, SeekFrom};
                let path = segment_path(dir, r.segment);
                let mut f =
                    File::open(&path).map_err(|e| Error::io("open WAL segment", &path, e))?;
                f.seek(SeekFrom::Start(r.offset))
                    .map_err(|e| Error::io("seek WAL segment", &path, e))?;
                let mut frame = vec![0u8; r.len as usize + FRAME_OVERHEAD];
                let got = f
                    .read(&mut frame)
                    .and_then(|first| {
                        let mut total = first;
                        while total < frame.len() {
                            match f.read(&mut frame[total..])? {
                                0 => break,
                                n => total += n,
                            }
                        }
                        Ok(total)
                    })
                    .map_err(|e| Error::io("read WAL segment", &path, e))?;
                check_frame(&path, r, &frame[..got])
            }
            At::Store { storage, dir } => {
                let key = join(dir, &segment_name(r.segment));
                let shown = storage.name_of(&key);
                let bytes = storage.get(&key)?.ok_or_else(|| Error::Checkpoint {
                    path: shown.clone(),
                    reason: format!("block {} is missing", r.block),
                })?;
                let start = usize::try_from(r.offset).unwrap_or(usize::MAX);
                check_frame(&shown, r, bytes.get(start..).unwrap_or_default())
            }
        }
    }

    /// Deletes the segments holding only blocks up to `block` (never the current one).
    pub fn delete_through(&self, block: u64) {
        let listed: Result<Vec<String>> = match &self.at {
            At::Dir(dir) => fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .map_err(|e| Error::io("list WAL directory", dir, e)),
            At::Store { storage, dir } => storage
                .list(dir)
                .map(|l| l.into_iter().map(|e| e.name).collect()),
        };
        let segs = match listed {
            Ok(names) => segment_ids(names.into_iter()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list WAL segments to delete");
                return;
            }
        };
        let current = self.current.as_ref().map(|c| c.0);
        for (i, seg) in segs.iter().enumerate() {
            let next_first = segs.get(i + 1).copied();
            let all_old = next_first.is_some_and(|n| n <= block + 1);
            if all_old && Some(*seg) != current {
                let deleted = match &self.at {
                    At::Dir(dir) => {
                        let path = segment_path(dir, *seg);
                        fs::remove_file(&path).map_err(|e| Error::io("delete WAL segment", path, e))
                    }
                    At::Store { storage, dir } => storage.delete(&join(dir, &segment_name(*seg))),
                };
                if let Err(e) = deleted {
                    tracing::warn!(error = %e, "cannot delete WAL segment");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::LocalDir::new(dir.path()));
        let (mut wal, blocks) = Wal::open(&storage, "").unwrap();
        assert!(blocks.is_empty());
        let a = wal.append(b"first").unwrap();
        let b = wal.append(b"second").unwrap();
        assert_eq!(wal.read(&b).unwrap(), b"second");
        drop(wal);
        // A torn frame at the end (a crash mid-append) is ignored on reopen.
        let seg = segment_path(dir.path(), a.segment);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"LGWB\x02\0\0\0").unwrap();
        let (mut wal, blocks) = Wal::open(&storage, "").unwrap();
        assert_eq!(blocks, vec![a, b]);
        let c = wal.append(b"third").unwrap();
        assert_eq!(c.block, 2);
        assert_ne!(c.segment, a.segment, "a new process starts a new segment");
        assert_eq!(wal.read(&a).unwrap(), b"first");
        // Corruption is detected.
        let mut bytes = fs::read(&seg).unwrap();
        bytes[18] ^= 1;
        fs::write(&seg, bytes).unwrap();
        assert!(wal.read(&a).is_err());
        // Old segments go once their blocks are done.
        wal.delete_through(1);
        assert!(!seg.exists());
        assert_eq!(wal.read(&c).unwrap(), b"third");
    }
}
