//! The receivers' write-ahead log: blocks of records appended to segment files and
//! fsynced before they count as received.
//!
//! A segment is `<dir>/<first block id>.wal`, a sequence of frames
//! `magic "LGWB" | block id u64 | length u32 | payload | CRC-32`. A new segment starts
//! when the current one exceeds its size limit and at every process start, so a torn
//! tail (a crash in the middle of an append) is only ever at the end of a segment, where
//! reading stops: such a block was never acknowledged, so nothing that counted as
//! received is lost.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};

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

/// An open write-ahead log directory.
pub struct Wal {
    dir: PathBuf,
    current: Option<(u64, File, u64)>,
    segment_bytes: u64,
    next_block: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

/// Segments of `dir` by first block id.
fn segments(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".wal")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Parses the frames of one segment; stops at the first bad or torn frame.
fn scan_segment(path: &Path, segment: u64) -> Result<Vec<BlockRef>> {
    let bytes = fs::read(path).map_err(|e| Error::io("read WAL segment", path, e))?;
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
        tracing::warn!(segment = %path.display(), offset = off, "WAL segment ends in a torn or corrupt frame; blocks after it were never acknowledged");
    }
    Ok(refs)
}

impl Wal {
    /// Opens (creating) the log in `dir`; returns it and every readable block in it.
    pub fn open(dir: &Path) -> Result<(Wal, Vec<BlockRef>)> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create WAL directory", dir, e))?;
        let mut blocks = Vec::new();
        for seg in segments(dir) {
            blocks.extend(scan_segment(&segment_path(dir, seg), seg)?);
        }
        let next_block = blocks.iter().map(|b| b.block + 1).max().unwrap_or(0);
        let wal = Wal {
            dir: dir.to_path_buf(),
            current: None,
            segment_bytes: SEGMENT_BYTES,
            next_block,
        };
        Ok((wal, blocks))
    }

    /// Appends a block durably and returns where it is.
    pub fn append(&mut self, payload: &[u8]) -> Result<BlockRef> {
        let block = self.next_block;
        if self
            .current
            .as_ref()
            .is_none_or(|c| c.2 >= self.segment_bytes)
        {
            let path = segment_path(&self.dir, block);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("create WAL segment", &path, e))?;
            crate::checkpoint::file::sync_dir(&self.dir)
                .map_err(|e| Error::io("sync WAL directory", &self.dir, e))?;
            self.current = Some((block, f, 0));
        }
        let (segment, file, size) = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Lifecycle("WAL segment missing".into()))?;
        let len = u32::try_from(payload.len())
            .map_err(|_| Error::Config("WAL block larger than 4 GiB".into()))?;
        let mut frame = Vec::with_capacity(payload.len() + FRAME_OVERHEAD);
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&block.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload);
        let crc = crc32fast::hash(&frame[4..]);
        frame.extend_from_slice(&crc.to_le_bytes());
        let path = segment_path(&self.dir, *segment);
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
    pub fn read(dir: &Path, r: &BlockRef) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let path = segment_path(dir, r.segment);
        let bad = |reason: String| Error::Checkpoint {
            path: path.clone(),
            reason,
        };
        let mut f = File::open(&path).map_err(|e| Error::io("open WAL segment", &path, e))?;
        f.seek(SeekFrom::Start(r.offset))
            .map_err(|e| Error::io("seek WAL segment", &path, e))?;
        let mut frame = vec![0u8; r.len as usize + FRAME_OVERHEAD];
        f.read_exact(&mut frame)
            .map_err(|_| bad(format!("block {} is truncated", r.block)))?;
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

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the segments holding only blocks up to `block` (never the current one).
    pub fn delete_through(&self, block: u64) {
        let segs = segments(&self.dir);
        let current = self.current.as_ref().map(|c| c.0);
        for (i, seg) in segs.iter().enumerate() {
            let next_first = segs.get(i + 1).copied();
            let all_old = next_first.is_some_and(|n| n <= block + 1);
            if all_old && Some(*seg) != current {
                let path = segment_path(&self.dir, *seg);
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete WAL segment");
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
        let (mut wal, blocks) = Wal::open(dir.path()).unwrap();
        assert!(blocks.is_empty());
        let a = wal.append(b"first").unwrap();
        let b = wal.append(b"second").unwrap();
        assert_eq!(Wal::read(dir.path(), &b).unwrap(), b"second");
        drop(wal);
        // A torn frame at the end (a crash mid-append) is ignored on reopen.
        let seg = segment_path(dir.path(), a.segment);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"LGWB\x02\0\0\0").unwrap();
        let (mut wal, blocks) = Wal::open(dir.path()).unwrap();
        assert_eq!(blocks, vec![a, b]);
        let c = wal.append(b"third").unwrap();
        assert_eq!(c.block, 2);
        assert_ne!(c.segment, a.segment, "a new process starts a new segment");
        assert_eq!(Wal::read(dir.path(), &a).unwrap(), b"first");
        // Corruption is detected.
        let mut bytes = fs::read(&seg).unwrap();
        bytes[18] ^= 1;
        fs::write(&seg, bytes).unwrap();
        assert!(Wal::read(dir.path(), &a).is_err());
        // Old segments go once their blocks are done.
        wal.delete_through(1);
        assert!(!seg.exists());
        assert_eq!(Wal::read(dir.path(), &c).unwrap(), b"third");
    }
}
