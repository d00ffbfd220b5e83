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

/// A file being read into its buffer: bytes `[0, done)` are in, with `newlines` line
/// ends among them.
pub(crate) struct FileRead {
    path: PathBuf,
    file: fs::File,
    buf: Vec<u8>,
    done: usize,
    newlines: u64,
}

/// A file that could not be read, and why.
pub(crate) type ReadError = (PathBuf, io::Error);

impl FileRead {
    /// Opens `path` for reading into `buf` (its old contents are overwritten, its
    /// capacity reused; only bytes beyond its old length are zeroed first).
    pub fn open(path: &Path, mut buf: Vec<u8>) -> Result<FileRead, ReadError> {
        let opened = || -> io::Result<(fs::File, usize)> {
            let file = fs::File::open(path)?;
            let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
            Ok((file, len))
        };
        let (file, len) = opened().map_err(|e| (path.to_path_buf(), e))?;
        buf.resize(len, 0);
        Ok(FileRead {
            path: path.to_path_buf(),
            file,
            buf,
            done: 0,
            newlines: 0,
        })
    }

    /// Reads the next piece; `false` once the whole file is in.
    fn read_piece(&mut self) -> io::Result<bool> {
        let end = (self.done + PIECE).min(self.buf.len());
        let part = &mut self.buf[self.done..end];
        read_at(&self.file, &self.path, part, self.done)?;
        self.newlines += newlines(part);
        self.done = end;
        Ok(self.done < self.buf.len())
    }

    /// Reads the rest of the file, pieces in parallel on the current pool; the bytes
    /// and the number of lines (a last line without `\n` counts).
    pub fn finish(mut self) -> Result<(Vec<u8>, u64), ReadError> {
        let (file, path, done) = (&self.file, &self.path, self.done);
        let rest = self.buf[done..]
            .par_chunks_mut(PIECE)
            .enumerate()
            .map(|(i, part)| {
                read_at(file, path, part, done + i * PIECE)?;
                Ok(newlines(part))
            })
            .try_reduce(|| 0, |a, b| Ok(a + b));
        match rest {
            Ok(n) => {
                let last_unterminated = self.buf.last().is_some_and(|&b| b != b'\n');
                let lines = self.newlines + n + u64::from(last_unterminated);
                Ok((self.buf, lines))
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

fn newlines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
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
            let r = FileRead::open(&path, vec![7u8; text.len() + 5000]).unwrap();
            let mut r = Some(r);
            for _ in 0..pieces_ahead {
                let mut read = r.take().unwrap();
                let _ = read.read_piece().unwrap();
                r = Some(read);
            }
            let (bytes, lines) = r.unwrap().finish().unwrap();
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
        let missing = FileRead::open(&dir.path().join("gone.log"), Vec::new());
        assert!(missing.is_err());
        let stop = AtomicBool::new(true);
        let reads = read_ahead(vec![FileRead::open(&path, Vec::new()), missing], &stop);
        assert_eq!(reads.len(), 2);
        let mut reads = reads.into_iter();
        let first = reads.next().unwrap().unwrap();
        assert_eq!(first.done, 0, "stopped before the first piece");
        assert!(reads.next().unwrap().is_err());
        let stop = AtomicBool::new(false);
        let mut done = read_ahead(vec![Ok(first)], &stop);
        let whole = done.pop().unwrap().unwrap();
        assert_eq!(whole.done, 2 * PIECE);
        assert_eq!(whole.finish().unwrap().1, 1);
    }

    #[test]
    fn an_empty_file_has_no_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.log");
        std::fs::write(&path, b"").unwrap();
        let (bytes, lines) = FileRead::open(&path, vec![1, 2, 3])
            .unwrap()
            .finish()
            .unwrap();
        assert!(bytes.is_empty());
        assert_eq!(lines, 0);
    }
}
