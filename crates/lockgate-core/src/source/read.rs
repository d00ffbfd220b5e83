//! Reading the files of a batch: each file whole, into a reused buffer, its line ends
//! counted piece by piece as the bytes arrive (while they are in the cache).
//!
//! A file is read in pieces of [`PIECE`] bytes, in order, by whoever gets to it first:
//! the source's read-ahead thread starts on the next planned batch's files while the
//! current batch computes, and stops at the end of a piece when that batch begins;
//! the workers then read what is left, pieces in parallel. The copy out of the page
//! cache is a large part of the cost of a simple job, and this keeps both cores busy
//! where a batch of one file would otherwise have one wait at each stage.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

/// How much of a file one read (and line count) takes: small enough that the
/// read-ahead stops soon after it is asked to, large enough that a read is efficient.
pub(crate) const PIECE: usize = 256 * 1024;

/// A file's size and modification time (ns since the epoch), as planned or as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        FileStamp {
            size: meta.len(),
            mtime_ns,
        }
    }
}

/// A file being read into its buffer: bytes `[0, done)` are in, with `newlines` line
/// ends among them.
pub(crate) struct FileRead {
    path: PathBuf,
    file: fs::File,
    /// The file as planned (if the plan recorded it) and as opened.
    planned: Option<FileStamp>,
    opened: FileStamp,
    buf: Vec<u8>,
    done: usize,
    newlines: u64,
    /// What the pieces read so far found (see [`Scan`]).
    scan: Scan,
}

/// A file read whole: its bytes, its line count, what its scan found (whether its
/// lines need the exact check of [`check_lines`]), and how it changed since it was
/// planned or while it was read, if it did.
pub(crate) struct FileContents {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub lines: u64,
    pub scan: Scan,
    pub changed: Option<String>,
}

/// A file that could not be read, and why.
pub(crate) type ReadError = (PathBuf, io::Error);

impl FileRead {
    /// Opens `path` for reading into `buf` (its old contents are overwritten, its
    /// capacity reused; only bytes beyond its old length are zeroed first). A file that
    /// grew since `planned` is read up to its planned size, so a re-run reads the same
    /// bytes.
    pub fn open(
        path: &Path,
        planned: Option<FileStamp>,
        mut buf: Vec<u8>,
    ) -> Result<FileRead, ReadError> {
        let opened = || -> io::Result<(fs::File, FileStamp)> {
            let file = fs::File::open(path)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                ));
            }
            Ok((file, FileStamp::of(&meta)))
        };
        let (file, stamp) = opened().map_err(|e| (path.to_path_buf(), e))?;
        let size = match planned {
            Some(p) if p.size < stamp.size => p.size,
            _ => stamp.size,
        };
        let len = usize::try_from(size).map_err(|e| (path.to_path_buf(), io::Error::other(e)))?;
        buf.resize(len, 0);
        Ok(FileRead {
            path: path.to_path_buf(),
            file,
            planned,
            opened: stamp,
            buf,
            done: 0,
            newlines: 0,
            scan: Scan::default(),
        })
    }

    /// How the file differs from its plan, or changed while it was read.
    fn changes(&self) -> Option<String> {
        let now = self.file.metadata().map(|m| FileStamp::of(&m)).ok();
        let mut what = Vec::new();
        if let Some(p) = self.planned {
            if p.size != self.opened.size {
                what.push(format!(
                    "its size went from {} bytes when planned to {} when read (read: {})",
                    p.size,
                    self.opened.size,
                    self.buf.len()
                ));
            } else if p.mtime_ns != self.opened.mtime_ns {
                what.push("it was modified after it was planned".to_string());
            }
        }
        if now.is_some_and(|n| n != self.opened) {
            what.push("it was modified while it was read".to_string());
        }
        (!what.is_empty()).then(|| what.join("; "))
    }

    /// Reads the next piece; `false` once the whole file is in.
    fn read_piece(&mut self) -> io::Result<bool> {
        let end = (self.done + PIECE).min(self.buf.len());
        let part = &mut self.buf[self.done..end];
        read_at(&self.file, &self.path, part, self.done)?;
        let (n, found) = scan(part);
        self.newlines += n;
        self.scan = self.scan.or(found);
        self.done = end;
        Ok(self.done < self.buf.len())
    }

    /// Reads the rest of the file, pieces in parallel on the current pool; its bytes,
    /// the number of lines (a last line without `\n` counts) and whether they need the
    /// exact check.
    pub fn finish(mut self) -> Result<FileContents, ReadError> {
        let (file, path, done) = (&self.file, &self.path, self.done);
        let rest = self.buf[done..]
            .par_chunks_mut(PIECE)
            .enumerate()
            .map(|(i, part)| {
                read_at(file, path, part, done + i * PIECE)?;
                Ok(scan(part))
            })
            .try_reduce(|| (0, Scan::default()), |a, b| Ok((a.0 + b.0, a.1.or(b.1))));
        match rest {
            Ok((n, found)) => {
                let last_unterminated = self.buf.last().is_some_and(|&b| b != b'\n');
                Ok(FileContents {
                    lines: self.newlines + n + u64::from(last_unterminated),
                    scan: self.scan.or(found),
                    changed: self.changes(),
                    bytes: self.buf,
                    path: self.path,
                })
            }
            Err(e) => Err((self.path, e)),
        }
    }
}

/// Reads the files of `reads` in order, a piece at a time, until all are in or `stop`
/// is set (checked between pieces). A file that fails is returned as its error.
pub(crate) fn read_ahead(
    reads: Vec<Result<FileRead, ReadError>>,
    stop: &AtomicBool,
) -> Vec<Result<FileRead, ReadError>> {
    let mut out = Vec::with_capacity(reads.len());
    for read in reads {
        out.push(read.and_then(|mut r| {
            while !stop.load(Ordering::Acquire) {
                match r.read_piece() {
                    // Between pieces, let a thread waiting for this core run (the job
                    // runner handing the workers their next batch would otherwise
                    // wait for the whole file).
                    Ok(true) => std::thread::yield_now(),
                    Ok(false) => break,
                    Err(e) => return Err((r.path, e)),
                }
            }
            Ok(r)
        }));
    }
    out
}

/// What the scan of a file's pieces found beside its line ends: whether its lines need
/// the exact check of [`check_lines`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// A whole piece without a line end: part of a line of more than two pieces, which
    /// may be longer than the limit.
    pub long_line: bool,
    /// A byte outside ASCII: the file may hold invalid UTF-8.
    pub non_ascii: bool,
}

impl Scan {
    fn or(self, other: Scan) -> Scan {
        Scan {
            long_line: self.long_line | other.long_line,
            non_ascii: self.non_ascii | other.non_ascii,
        }
    }
}

/// A piece's line ends, and what it says about its file (see [`Scan`]). One pass over
/// the bytes while they are in the cache does both: the loop below compiles to vector
/// compares and ORs, and runs as fast as memchr's newline count alone (a separate
/// `is_ascii` pass cost a quarter of log-errors' throughput in an A/B run).
fn scan(b: &[u8]) -> (u64, Scan) {
    const LANES: usize = 32;
    // Each lane's count is a byte, so a block holds at most 255 vectors.
    const BLOCK: usize = LANES * 255;
    let mut n = 0u64;
    let mut high = [0u8; LANES];
    let mut blocks = b.chunks_exact(BLOCK);
    for block in &mut blocks {
        let mut count = [0u8; LANES];
        for v in block.chunks_exact(LANES) {
            for i in 0..LANES {
                count[i] += u8::from(v[i] == b'\n');
                high[i] |= v[i];
            }
        }
        n += count.iter().map(|&c| u64::from(c)).sum::<u64>();
    }
    let rest = blocks.remainder();
    n += rest.iter().filter(|&&c| c == b'\n').count() as u64;
    let high = rest.iter().chain(&high).fold(0, |a, &c| a | c);
    let found = Scan {
        long_line: n == 0 && b.len() == PIECE,
        non_ascii: high >= 0x80,
    };
    (n, found)
}

/// What [`check_lines`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LineCheck {
    /// Lines with invalid UTF-8 (replaced by U+FFFD when decoded).
    pub invalid_utf8: u64,
    /// Lines longer than the limit (cut to it).
    pub truncated: u64,
}

/// The text sources' line policy on a file read whole: counts the lines with invalid
/// UTF-8 and those longer than `max` bytes; returns the bytes with every long line cut
/// at `max` when there was one (else `None`: the bytes stand as they are).
pub(crate) fn check_lines(bytes: &[u8], max: usize) -> (LineCheck, Option<Vec<u8>>) {
    let mut check = LineCheck::default();
    let mut cut: Option<Vec<u8>> = None;
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let mut line = &bytes[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let long = line.len() > max;
        if long {
            check.truncated += 1;
            line = &line[..max];
            let out = cut.get_or_insert_with(|| bytes[..start].to_vec());
            out.extend_from_slice(line);
            if end < bytes.len() {
                out.push(b'\n');
            }
        } else if let Some(out) = &mut cut {
            out.extend_from_slice(&bytes[start..(end + 1).min(bytes.len())]);
        }
        if !line.is_ascii() && std::str::from_utf8(line).is_err() {
            check.invalid_utf8 += 1;
        }
        start = end + 1;
    }
    (check, cut)
}

/// Fills `part` from `offset` of the file (a file shorter than when it was opened is an
/// error: files must not change once they appear in the directory).
fn read_at(file: &fs::File, path: &Path, part: &mut [u8], offset: usize) -> io::Result<()> {
    #[cfg(unix)]
    {
        let _ = path;
        std::os::unix::fs::FileExt::read_exact_at(file, part, offset as u64)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek};
        let _ = file;
        let mut f = fs::File::open(path)?;
        f.seek(io::SeekFrom::Start(offset as u64))?;
        f.read_exact(part)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_read_in_any_split_between_read_ahead_and_workers_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        // Three pieces and a bit, lines crossing piece boundaries, no final newline.
        let mut text = Vec::new();
        let mut i = 0;
        while text.len() < 3 * PIECE + 1000 {
            text.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
            i += 1;
        }
        text.extend_from_slice(b"last line without end");
        std::fs::write(&path, &text).unwrap();
        for pieces_ahead in 0..=5 {
            // A reused buffer longer than the file: its tail must not survive.
            let r = FileRead::open(&path, None, vec![7u8; text.len() + 5000]).unwrap();
            let mut r = Some(r);
            for _ in 0..pieces_ahead {
                let mut read = r.take().unwrap();
                let _ = read.read_piece().unwrap();
                r = Some(read);
            }
            let FileContents {
                bytes,
                lines,
                scan,
                changed,
                ..
            } = r.unwrap().finish().unwrap();
            assert_eq!(changed, None);
            assert_eq!(scan, Scan::default(), "plain ASCII with short lines");
            assert_eq!(bytes, text, "{pieces_ahead} pieces ahead");
            assert_eq!(
                lines,
                std::str::from_utf8(&text).unwrap().lines().count() as u64
            );
            assert_eq!(lines, i as u64 + 1);
        }
    }

    #[test]
    fn read_ahead_stops_between_pieces_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, vec![b'a'; 2 * PIECE]).unwrap();
        let missing = FileRead::open(&dir.path().join("gone.log"), None, Vec::new());
        assert!(missing.is_err());
        let stop = AtomicBool::new(true);
        let reads = read_ahead(
            vec![FileRead::open(&path, None, Vec::new()), missing],
            &stop,
        );
        assert_eq!(reads.len(), 2);
        let mut reads = reads.into_iter();
        let first = reads.next().unwrap().unwrap();
        assert_eq!(first.done, 0, "stopped before the first piece");
        assert!(reads.next().unwrap().is_err());
        let stop = AtomicBool::new(false);
        let mut done = read_ahead(vec![Ok(first)], &stop);
        let whole = done.pop().unwrap().unwrap();
        assert_eq!(whole.done, 2 * PIECE);
        assert_eq!(whole.finish().unwrap().lines, 1);
    }

    #[test]
    fn an_empty_file_has_no_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.log");
        std::fs::write(&path, b"").unwrap();
        let c = FileRead::open(&path, None, vec![1, 2, 3])
            .unwrap()
            .finish()
            .unwrap();
        assert!(c.bytes.is_empty());
        assert_eq!(c.lines, 0);
    }

    #[test]
    fn the_scan_finds_long_lines_and_bytes_outside_ascii() {
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            FileRead::open(&path, None, Vec::new())
                .unwrap()
                .finish()
                .unwrap()
        };
        assert_eq!(read("plain", b"a\nb\n").scan, Scan::default());
        let utf8 = read("utf8", "caf\u{e9}\n".as_bytes()).scan;
        assert!(utf8.non_ascii && !utf8.long_line);
        let mut long = vec![b'x'; 3 * PIECE];
        long.push(b'\n');
        let long = read("long", &long).scan;
        assert!(long.long_line && !long.non_ascii);
        // A byte outside ASCII in any lane of a block, in the remainder, in any piece.
        let mut text = b"0123456789\n".repeat(3 * PIECE / 11);
        for at in [0, 31, 32 * 255 + 7, PIECE + 5, text.len() - 1] {
            let mut t = text.clone();
            t[at] = 0xff;
            let s = read("one-high-byte", &t).scan;
            assert!(s.non_ascii, "byte {at}");
        }
        text.truncate(PIECE + 100);
        let plain = read("plain-pieces", &text);
        assert_eq!(plain.scan, Scan::default());
        assert_eq!(plain.lines, (PIECE as u64 + 100).div_ceil(11));
    }

    #[test]
    fn a_file_that_grew_since_its_plan_is_read_as_planned_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, b"one\ntwo\n").unwrap();
        let planned = FileStamp::of(&std::fs::metadata(&path).unwrap());
        let same = FileRead::open(&path, Some(planned), Vec::new()).unwrap();
        assert_eq!(same.finish().unwrap().changed, None);
        std::fs::write(&path, b"one\ntwo\nthree\n").unwrap();
        let grown = FileRead::open(&path, Some(planned), Vec::new())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(grown.bytes, b"one\ntwo\n");
        let why = grown.changed.unwrap();
        assert!(why.contains("from 8 bytes when planned to 14"), "{why}");
    }

    #[test]
    fn check_lines_counts_invalid_utf8_and_cuts_long_lines() {
        let (c, cut) = check_lines(b"ok\ncaf\xc3\xa9\n", 10);
        assert_eq!(c, LineCheck::default());
        assert!(cut.is_none());
        let (c, cut) = check_lines(b"a\xffb\n0123456789abc\r\nok\nlast-line-long", 8);
        assert_eq!(
            c,
            LineCheck {
                invalid_utf8: 1,
                truncated: 2
            }
        );
        assert_eq!(cut.unwrap(), b"a\xffb\n01234567\nok\nlast-lin".to_vec());
        // A multi-byte character cut in half by the limit counts as invalid too.
        let (c, _) = check_lines("\u{e9}\u{e9}".as_bytes(), 3);
        assert_eq!(c.invalid_utf8, 1);
    }
}
