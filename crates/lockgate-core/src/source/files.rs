//! `text_file_stream`: the lines of new files in a directory.
//!
//! Each batch takes the files that appeared in the directory since the previous batch,
//! oldest first (by modification time, then name), at most `max_files_per_batch` of
//! them; the rest wait for the next batches. Names starting with `.` or `_` are ignored,
//! so writers should use the write-then-rename convention: write `dir/.name.tmp` (or
//! outside the directory on the same filesystem), then rename it to `dir/name`.
//! Symlinks to regular files are read (their target's bytes, under the link's name);
//! entries that are not regular files (directories, dangling or looping symlinks, FIFOs,
//! sockets, devices) are skipped, each named once in the log and counted.
//!
//! Files written in place are neither read partly nor dropped silently:
//! - a file is taken only once it has been still for [`FileStreamOptions::min_age`]
//!   (default 1 s): its size and modification time unchanged across listings that far
//!   apart (on the monotonic clock), or its modification time that far in the past. A
//!   writer that keeps writing holds its file back until it is done.
//! - a file is planned with its size and modification time, and read up to its planned
//!   size (a re-run reads the same bytes). One that changes after it was planned (grows,
//!   is truncated or rewritten) is reported once, by name, with what the job read and
//!   what it did not, and counted (`changed_files`); the listings of every batch, the
//!   end of a run and the next start check for it (the planned sizes are checkpointed).
//!
//! In a bounded run (`Trigger::AvailableNow`) the source takes exactly the files present
//! at start (once each is still, waiting for those still being written for at most
//! `min_age` plus 30 s) and is done when they have all been planned.
//!
//! With a checkpoint, a batch's descriptor is its exact list of files, and the set of
//! files already taken by committed batches is the source's checkpointed state (a
//! snapshot every few batches; the plans logged since add the rest at recovery), so after
//! a restart the same files go to the same batches and no file is taken twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{KeyedState, KeyedStateful};
use crate::clock::Time;
use crate::codec::{from_bytes, Codec, CodecError};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{Error, Result};
use crate::metrics::SourceCounters;
use crate::source::read::{
    check_lines, read_ahead, FileContents, FileRead, FileStamp, ReadError, Scan, PIECE,
};
use crate::source::{
    chunk_bounds, register, source_name, split_lines, TextChunk, DEFAULT_MAX_LINE_BYTES,
};
use crate::traits::{InputSource, SourceCompute};
use crate::types::{lock, InputInfo};

/// Options of [`text_file_stream_with`](StreamingContext::text_file_stream_with).
#[derive(Clone, Debug)]
pub struct FileStreamOptions {
    /// The most files one batch takes (default: no limit).
    pub max_files_per_batch: Option<usize>,
    /// Ignore the files already in the directory when the context starts (Spark's
    /// default: `true`). Bounded runs always take the files present at start.
    pub new_files_only: bool,
    /// Lines longer than this many bytes are cut (and counted).
    pub max_line_bytes: usize,
    /// How many pieces a batch's files are cut into per worker: more balance the load
    /// better, fewer suit jobs with a cost per piece (a per-chunk combine). Default 2.
    pub chunks_per_worker: usize,
    /// A file is taken once it has been still this long (its size and modification
    /// time unchanged, or modified at least this long ago); until then it is left for
    /// a later batch. Default 1 s: a file written in place is not taken half-written
    /// while its writer keeps writing. Zero takes files as soon as they appear (for
    /// writers that rename files in whole).
    pub min_age: Duration,
    /// How long a file that fails to read for a passing reason (too many open files,
    /// interrupted, try again) is retried, with back-off, before the batch fails
    /// (default 60 s). A batch that fails is re-run from its plan at the next start.
    pub retry_timeout: Duration,
}

impl Default for FileStreamOptions {
    fn default() -> Self {
        FileStreamOptions {
            max_files_per_batch: None,
            new_files_only: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            chunks_per_worker: 2,
            min_age: DEFAULT_MIN_AGE,
            retry_timeout: Duration::from_secs(60),
        }
    }
}

/// How long a file must be still before it is taken, by default.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(1);

/// How much longer than `min_age` a bounded run waits for the files present at start
/// that are still being written before it takes them as they are.
const BOUNDED_SETTLE_GRACE: Duration = Duration::from_secs(30);

/// True for names the file source never reads (hidden and temporary files).
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// A file as a batch plans it: its path, with its size and modification time at
/// planning (absent in plans logged before Lockgate recorded them).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlannedFile {
    path: PathBuf,
    stamp: Option<FileStamp>,
}

/// First word of a file list that records sizes and times: no list of paths starts
/// with it (it would be its length), so a list logged before them still decodes.
const STAMPED: u64 = u64::MAX;

/// What a batch reads, for plans, logs and `checkpoint inspect`: how many files and
/// bytes (the lines are counted when read), then each file with its size.
fn describe_files(files: &[PlannedFile]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let size = |f: &PlannedFile| f.stamp.map(|s| s.size);
    let total: Option<u64> = files.iter().map(size).sum();
    let listed = files
        .iter()
        .map(|f| match size(f) {
            Some(b) => format!("{} ({b} bytes)", f.path.display()),
            None => f.path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let n = files.len();
    let plural = if n == 1 { "" } else { "s" };
    match total {
        Some(t) => format!("{n} file{plural}, {t} bytes: {listed}"),
        None => format!("{n} file{plural}: {listed}"),
    }
}

fn encode_files(files: &[PlannedFile]) -> Vec<u8> {
    let mut out = Vec::new();
    STAMPED.encode(&mut out);
    (files.len() as u64).encode(&mut out);
    for f in files {
        f.path.encode(&mut out);
        let s = f.stamp.unwrap_or(FileStamp {
            size: 0,
            mtime_ns: 0,
        });
        s.size.encode(&mut out);
        s.mtime_ns.encode(&mut out);
    }
    out
}

fn decode_files(bytes: &[u8]) -> std::result::Result<Vec<PlannedFile>, CodecError> {
    if bytes.len() < 8 || bytes[..8] != STAMPED.to_le_bytes() {
        let paths: Vec<PathBuf> = from_bytes(bytes)?;
        return Ok(paths
            .into_iter()
            .map(|path| PlannedFile { path, stamp: None })
            .collect());
    }
    let entries: Vec<(PathBuf, u64, i64)> = from_bytes(&bytes[8..])?;
    Ok(entries
        .into_iter()
        .map(|(path, size, mtime_ns)| PlannedFile {
            path,
            stamp: Some(FileStamp { size, mtime_ns }),
        })
        .collect())
}

/// True for an error a later read may not have: out of file descriptors or memory,
/// interrupted, would block. Anything else (no permission, gone, not a regular file)
/// stays.
fn is_passing(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::Interrupted | K::WouldBlock | K::OutOfMemory | K::TimedOut
    ) {
        return true;
    }
    // EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR, EIO, ENOBUFS.
    matches!(e.raw_os_error(), Some(24 | 23 | 12 | 11 | 4 | 5 | 105))
}

struct FileInput {
    name: String,
    dir: PathBuf,
    opts: FileStreamOptions,
    bounded: AtomicBool,
    /// Started and not stopped yet.
    started: AtomicBool,
    seen: Mutex<HashSet<PathBuf>>,
    /// Files taken by completed batches (or ignored at a fresh start): the checkpointed
    /// state.
    taken: Arc<Mutex<KeyedState<PathBuf, ()>>>,
    /// The size and modification time (ns) of every planned file as planned
    /// (checkpointed: a restart still notices a file that changed after its plan).
    stamps: Arc<Mutex<KeyedState<PathBuf, (u64, i64)>>>,
    /// Listed files not yet still for `min_age`: their stamp, and since when (monotonic)
    /// it has been the same.
    young: Mutex<HashMap<PathBuf, (FileStamp, Instant)>>,
    /// Files reported as changed after their plan, and entries reported as not regular
    /// files: each is named once.
    reported: Mutex<HashSet<PathBuf>>,
    backlog: Mutex<VecDeque<PlannedFile>>,
    planned: Mutex<BTreeMap<Time, Vec<PlannedFile>>>,
    read_counts: Mutex<BTreeMap<Time, u64>>,
    partitions: usize,
    counters: Arc<SourceCounters>,
    /// Buffers of earlier batches, reused once no chunk holds them any more (a fresh
    /// large allocation costs a page fault per 4 KiB).
    buffers: Mutex<Vec<Arc<Vec<u8>>>>,
    /// The next planned batch's files, read ahead while the current batch computes.
    read_ahead: Mutex<ReadAhead>,
}

/// The contents of a batch's files: each file's bytes, line count, whether its lines
/// need the exact check of the line policy, and its path.
type Contents = Vec<(Arc<Vec<u8>>, u64, Scan, Arc<Path>)>;

/// Read-ahead of the next planned batch's files on one long-lived thread (see
/// [`read`](crate::source::read)). Only batches already planned are read ahead (a
/// bounded run plans ahead; a live stream that falls behind has planned batches
/// waiting); files are read whole, once, exactly as at their batch: a source's files do
/// not change once they appear.
#[derive(Default)]
struct ReadAhead {
    /// Requests to the reader thread (started at the first read-ahead).
    requests: Option<std::sync::mpsc::Sender<ReadAheadJob>>,
    /// The batch being read ahead, its stop flag, where its reads come back, and its
    /// files beyond the first [`OPEN_AT_ONCE`] (opened when their batch reads them).
    pending: Option<(
        Time,
        Arc<AtomicBool>,
        std::sync::mpsc::Receiver<Vec<Opened>>,
        Vec<PlannedFile>,
    )>,
}

/// A file of a batch, opened (and perhaps partly read) or failed.
type Opened = std::result::Result<FileRead, ReadError>;

/// How many files of a batch are opened before they are read (and read ahead); the
/// others are opened as the workers come to them, so that a batch of thousands of files
/// (a backlog after downtime) holds a few descriptors at a time, not one per file.
const OPEN_AT_ONCE: usize = 16;

/// Files to read ahead, the flag that stops it, where to send them.
type ReadAheadJob = (
    Vec<Opened>,
    Arc<AtomicBool>,
    std::sync::mpsc::Sender<Vec<Opened>>,
);

/// A directory's listing: its regular files (symlinks to them included), oldest first
/// (modification time, then name), with their size and modification time; and the
/// entries that are not regular files, with what they are.
#[derive(Default)]
struct Listing {
    files: Vec<(PathBuf, FileStamp)>,
    skipped: Vec<(PathBuf, String)>,
}

/// Lists the non-ignored entries of `dir` (see [`Listing`]). Symlinks are followed.
fn list_files(dir: &Path) -> std::io::Result<Listing> {
    let mut files: Vec<(SystemTime, PathBuf, FileStamp)> = Vec::new();
    let mut skipped = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if is_ignored_name(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let link = entry.file_type().is_ok_and(|t| t.is_symlink());
        // Through a symlink to what it points at.
        let meta = match if link {
            fs::metadata(&path)
        } else {
            entry.metadata()
        } {
            Ok(m) => m,
            // Gone since it was listed (renamed away, deleted): nothing to read.
            Err(e) if !link && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let what = match (link, e.kind()) {
                    (true, std::io::ErrorKind::NotFound) => {
                        "a dangling symlink (its target does not exist)".to_string()
                    }
                    (true, _) if e.raw_os_error() == Some(40) => {
                        "a symlink that loops (ELOOP)".to_string()
                    }
                    _ => format!("cannot be examined: {e}"),
                };
                skipped.push((path, what));
                continue;
            }
        };
        if !meta.is_file() {
            skipped.push((path, kind_of(&meta, link)));
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((mtime, path, FileStamp::of(&meta)));
    }
    files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    skipped.sort();
    Ok(Listing {
        files: files.into_iter().map(|(_, p, s)| (p, s)).collect(),
        skipped,
    })
}

/// What a directory entry that is not a regular file is, for the log.
fn kind_of(meta: &fs::Metadata, link: bool) -> String {
    let t = meta.file_type();
    #[cfg(unix)]
    let special = {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            Some("a FIFO")
        } else if t.is_socket() {
            Some("a socket")
        } else if t.is_block_device() || t.is_char_device() {
            Some("a device")
        } else {
            None
        }
    };
    #[cfg(not(unix))]
    let special: Option<&str> = None;
    let what = if t.is_dir() {
        "a directory"
    } else {
        special.unwrap_or("not a regular file")
    };
    if link {
        format!("a symlink to {what}")
    } else {
        what.to_string()
    }
}

/// How a file's stamp when listed differs from its stamp when planned, for the log.
fn change_after_plan(planned: FileStamp, now: FileStamp) -> String {
    use std::cmp::Ordering as O;
    match now.size.cmp(&planned.size) {
        O::Greater => format!(
            "it grew from {} bytes when planned to {} after: the job read its first {} bytes; \
             the {} bytes written after its plan are not read",
            planned.size,
            now.size,
            planned.size,
            now.size - planned.size
        ),
        O::Less => format!(
            "it shrank from {} bytes when planned to {} after (truncated or rewritten): \
             the job read the {} bytes it had when planned",
            planned.size, now.size, planned.size
        ),
        O::Equal => "it was modified after it was planned (same size): the job read it as it \
                     was when planned; the new contents are not read"
            .to_string(),
    }
}

impl FileInput {
    fn list(&self) -> Result<Listing> {
        list_files(&self.dir).map_err(|e| Error::io("list directory", &self.dir, e))
    }

    /// Lists the directory: new files still for `min_age` join the backlog, planned
    /// files that changed since and entries that are not regular files are reported.
    fn discover(&self) -> Result<()> {
        let listing = self.list()?;
        self.report(&listing);
        self.admit(listing.files);
        Ok(())
    }

    /// Adds the files of `files` not seen before and still for `min_age` to the
    /// backlog; the others wait in `young`.
    fn admit(&self, files: Vec<(PathBuf, FileStamp)>) {
        let mut seen = lock(&self.seen);
        let mut backlog = lock(&self.backlog);
        let mut young = lock(&self.young);
        let min_age = self.opts.min_age;
        let now = Instant::now();
        let old_before = SystemTime::now()
            .checked_sub(min_age)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        for (path, stamp) in files {
            if seen.contains(&path) {
                continue;
            }
            // Still: modified long enough ago, or unchanged for long enough (the
            // monotonic clock decides when the wall clock or a file's time is off).
            let still = min_age.is_zero()
                || stamp.mtime_ns <= old_before
                || young
                    .get(&path)
                    .is_some_and(|(s, since)| *s == stamp && now - *since >= min_age);
            if !still {
                match young.get_mut(&path) {
                    Some(entry) if entry.0 == stamp => {}
                    Some(entry) => *entry = (stamp, now),
                    None => {
                        tracing::debug!(source = %self.name, file = %path.display(), "file modified less than the minimum age ago; left for a later batch");
                        young.insert(path, (stamp, now));
                    }
                }
                continue;
            }
            young.remove(&path);
            seen.insert(path.clone());
            backlog.push_back(PlannedFile {
                path,
                stamp: Some(stamp),
            });
        }
    }

    /// Names (once each) the planned files of `listing` that changed after their plan
    /// and its entries that are not regular files, and counts them.
    fn report(&self, listing: &Listing) {
        let mut reported = lock(&self.reported);
        for (path, what) in &listing.skipped {
            if reported.insert(path.clone()) {
                SourceCounters::add(&self.counters.skipped_entries, 1);
                tracing::warn!(
                    source = %self.name,
                    entry = %path.display(),
                    "directory entry is {what} and is not read (counted in skipped_entries); \
                     put only regular files, or symlinks to them, in the input directory"
                );
            }
        }
        let stamps = lock(&self.stamps);
        for (path, now) in &listing.files {
            let Some(&(size, mtime_ns)) = stamps.get(0, path) else {
                continue;
            };
            let planned = FileStamp { size, mtime_ns };
            if planned != *now && reported.insert(path.clone()) {
                self.changed(path, &change_after_plan(planned, *now));
            }
        }
    }

    /// Counts and names a file that changed after it was planned.
    fn changed(&self, path: &Path, why: &str) {
        SourceCounters::add(&self.counters.changed_files, 1);
        tracing::warn!(
            source = %self.name,
            file = %path.display(),
            "file changed after it was planned: {why} (counted in changed_files); write \
             files elsewhere and rename them in whole, or raise the minimum file age \
             (--file-min-age) above the writer's longest pause"
        );
    }

    /// A bounded run's wait for the files present at start that are still being
    /// written: until each is still for `min_age`, at most `min_age` plus
    /// [`BOUNDED_SETTLE_GRACE`]; then the rest are taken as they are, named in the log
    /// (a change after that is reported at the end of the run).
    fn settle_young(&self) -> Result<()> {
        let started = Instant::now();
        let step =
            (self.opts.min_age / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut told = false;
        // The files are planned oldest first, as listed, however they became still.
        let in_order = || {
            lock(&self.backlog).make_contiguous().sort_by(|a, b| {
                (a.stamp.map(|s| s.mtime_ns), &a.path).cmp(&(b.stamp.map(|s| s.mtime_ns), &b.path))
            });
        };
        loop {
            let waiting: Vec<PathBuf> = lock(&self.young).keys().cloned().collect();
            if waiting.is_empty() {
                in_order();
                return Ok(());
            }
            if started.elapsed() >= self.opts.min_age + BOUNDED_SETTLE_GRACE {
                let mut young = lock(&self.young);
                let mut files: Vec<(PathBuf, FileStamp)> =
                    young.drain().map(|(p, (s, _))| (p, s)).collect();
                files.sort_by(|a, b| a.0.cmp(&b.0));
                for (path, _) in &files {
                    tracing::warn!(source = %self.name, file = %path.display(), "file still being written after {:?}; taking it as it is now (a later change is reported)", started.elapsed());
                }
                drop(young);
                let mut seen = lock(&self.seen);
                let mut backlog = lock(&self.backlog);
                for (path, stamp) in files {
                    seen.insert(path.clone());
                    backlog.push_back(PlannedFile {
                        path,
                        stamp: Some(stamp),
                    });
                }
                drop((seen, backlog));
                in_order();
                return Ok(());
            }
            if !told {
                told = true;
                tracing::info!(source = %self.name, files = waiting.len(), first = %waiting[0].display(), "waiting for files modified less than the minimum age ago (perhaps still being written) to be still");
            }
            std::thread::sleep(step);
            // Only the files present at start: a bounded run takes no later ones.
            let files = waiting
                .into_iter()
                .filter_map(|p| {
                    let m = fs::metadata(&p).ok().filter(fs::Metadata::is_file);
                    if m.is_none() {
                        lock(&self.young).remove(&p);
                        tracing::warn!(source = %self.name, file = %p.display(), "file present at start is gone (or no longer a regular file) before it was still; not read");
                    }
                    Some((p, FileStamp::of(&m?)))
                })
                .collect();
            self.admit(files);
        }
    }

    /// Records the planned files' stamps (checkpointed with the taken files).
    fn remember_stamps(&self, files: &[PlannedFile]) {
        let mut stamps = lock(&self.stamps);
        let mut part = stamps.part(0);
        for f in files {
            if let Some(s) = f.stamp {
                part.insert(f.path.clone(), (s.size, s.mtime_ns));
            }
        }
    }

    /// Opens the first [`OPEN_AT_ONCE`] of a batch's files; the others are returned to
    /// be opened when they are read.
    fn open_batch(&self, files: &[PlannedFile]) -> (Vec<Opened>, Vec<PlannedFile>) {
        let now = files.len().min(OPEN_AT_ONCE);
        let opened = files[..now].iter().map(|f| self.open(f)).collect();
        (opened, files[now..].to_vec())
    }

    /// Opens a planned file into a buffer no chunk holds any more (else a new one).
    fn open(&self, file: &PlannedFile) -> Opened {
        let buf = {
            let mut pool = lock(&self.buffers);
            let free = pool.iter().position(|b| Arc::strong_count(b) == 1);
            free.map(|i| pool.swap_remove(i))
        }
        .and_then(|mut b| Arc::get_mut(&mut b).map(std::mem::take))
        .unwrap_or_default();
        FileRead::open(&file.path, file.stamp, buf)
    }

    /// Finishes reading the files of a batch (in parallel): each file's bytes, kept in
    /// the buffer pool for reuse, its line count and whether its lines need the exact
    /// line check. A file that fails for a passing reason (out of file descriptors,
    /// interrupted) is read again with back-off until `retry_timeout`, then the batch
    /// fails (and is re-run from its plan at the next start); one that cannot be read
    /// at all (no permission, gone, not a regular file) is skipped, counted and logged
    /// by name. A file that changed since it was planned or while it was read is
    /// reported by name and counted.
    /// Files in `later` are opened here, each just before it is read.
    fn finish_reads(
        &self,
        t: Time,
        reads: Vec<Opened>,
        later: Vec<PlannedFile>,
    ) -> Result<Contents> {
        // Ok: opened (perhaps read ahead); Err: still to open.
        let reads: Vec<Result<Opened, PlannedFile>> = reads
            .into_iter()
            .map(Ok)
            .chain(later.into_iter().map(Err))
            .collect();
        reads
            .into_par_iter()
            .map(|r| {
                let r = r.unwrap_or_else(|file| self.open(&file));
                let read = match r.and_then(FileRead::finish) {
                    Ok(c) => Ok(c),
                    Err((path, e)) if is_passing(&e) => self.read_again(t, &path, e),
                    Err(failed) => Err(failed),
                };
                match read {
                    Ok(c) => {
                        if let Some(why) = &c.changed {
                            if lock(&self.reported).insert(c.path.clone()) {
                                self.changed(&c.path, why);
                            }
                        }
                        let bytes = Arc::new(c.bytes);
                        let mut pool = lock(&self.buffers);
                        if pool.len() < 4 {
                            pool.push(bytes.clone());
                        }
                        Ok(Some((bytes, c.lines, c.scan, Arc::from(c.path))))
                    }
                    Err((path, e)) if is_passing(&e) => Err(Error::Source {
                        source_name: self.name.clone(),
                        message: format!(
                            "file `{}` could not be read for {:?}: {e}; the batch fails \
                             and is re-run from its plan at the next start (nothing is lost)",
                            path.display(),
                            self.opts.retry_timeout
                        ),
                    }),
                    Err((path, e)) => {
                        SourceCounters::add(&self.counters.unreadable_files, 1);
                        tracing::warn!(
                            source = %self.name,
                            file = %path.display(),
                            error = %e,
                            "file cannot be read and is skipped (counted in \
                             unreadable_files); check that it is a regular file you may read"
                        );
                        Ok(None)
                    }
                }
            })
            .filter_map(|r| r.transpose())
            .collect()
    }

    /// Reads `path` of batch `t` again after a passing error, with back-off from 50 ms
    /// up to `retry_timeout` in all; the last error if it never succeeds.
    fn read_again(
        &self,
        t: Time,
        path: &Path,
        mut error: std::io::Error,
    ) -> std::result::Result<FileContents, ReadError> {
        let planned = lock(&self.planned)
            .get(&t)
            .and_then(|fs| fs.iter().find(|f| f.path == path).cloned())
            .unwrap_or(PlannedFile {
                path: path.to_path_buf(),
                stamp: None,
            });
        let deadline = std::time::Instant::now() + self.opts.retry_timeout;
        let mut wait = Duration::from_millis(50);
        loop {
            tracing::warn!(
                source = %self.name,
                file = %path.display(),
                error = %error,
                retry_in_ms = wait.as_millis() as u64,
                "file could not be read for a passing reason; retrying"
            );
            if std::time::Instant::now() + wait > deadline {
                return Err((path.to_path_buf(), error));
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(5));
            match self.open(&planned).and_then(FileRead::finish) {
                Ok(c) => return Ok(c),
                Err((_, e)) if is_passing(&e) => error = e,
                Err(failed) => return Err(failed),
            }
        }
    }
}

impl InputSource for FileInput {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, bounded: bool, recovered: bool) -> Result<()> {
        self.bounded.store(bounded, Ordering::Release);
        self.started.store(true, Ordering::Release);
        if recovered {
            let taken = lock(&self.taken);
            lock(&self.seen).extend(taken.keys().cloned());
        }
        if !self.dir.is_dir() {
            return Err(Error::Source {
                source_name: self.name.clone(),
                message: format!(
                    "input directory `{}` does not exist or is not a directory; create it \
                     or point the stream at an existing directory",
                    self.dir.display()
                ),
            });
        }
        if self.opts.new_files_only && !bounded && !recovered {
            let listing = self.list()?;
            let mut taken = lock(&self.taken);
            let mut part = taken.part(0);
            for (f, _) in &listing.files {
                part.insert(f.clone(), ());
            }
            if !listing.files.is_empty() {
                tracing::info!(
                    source = %self.name,
                    dir = %self.dir.display(),
                    ignored = listing.files.len(),
                    "new files only: the files already in the directory at this first start \
                     are not read (files added from now on are)"
                );
            }
            lock(&self.seen).extend(listing.files.into_iter().map(|(f, _)| f));
        } else {
            self.discover()?;
            if bounded {
                self.settle_young()?;
            }
        }
        Ok(())
    }

    fn stop(&self) {
        // The end of a run: what changed after its plan is reported now, not never
        // (once; nothing to check for a source that never started).
        if !self.started.swap(false, Ordering::AcqRel) {
            return;
        }
        match self.list() {
            Ok(listing) => self.report(&listing),
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot list the input directory at stop; changes to planned files not checked")
            }
        }
    }

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        if !self.bounded.load(Ordering::Acquire) {
            if let Err(e) = self.discover() {
                tracing::warn!(source = %self.name, error = %e, "listing failed; retrying at the next batch");
            }
        }
        let files: Vec<PlannedFile> = {
            let mut backlog = lock(&self.backlog);
            let n = self
                .opts
                .max_files_per_batch
                .unwrap_or(usize::MAX)
                .min(backlog.len());
            backlog.drain(..n).collect()
        };
        let description = describe_files(&files);
        let descriptor = encode_files(&files);
        self.remember_stamps(&files);
        lock(&self.planned).insert(t, files);
        let info = InputInfo {
            source: self.name.clone(),
            // Lines are counted when read; the plan knows files only.
            records: 0,
            description,
        };
        Ok((info, descriptor))
    }

    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
        let files = decode_files(descriptor).map_err(|e| Error::Source {
            source_name: self.name.clone(),
            message: format!("logged file list does not decode: {e}"),
        })?;
        lock(&self.seen).extend(files.iter().map(|f| f.path.clone()));
        lock(&self.backlog).retain(|b| !files.iter().any(|f| f.path == b.path));
        self.remember_stamps(&files);
        lock(&self.planned).insert(t, files);
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !lock(&self.backlog).is_empty()
    }

    fn took_input(&self, info: &InputInfo) -> bool {
        // Lines are counted when read: a plan with files takes input.
        !info.description.is_empty()
    }

    fn pending_batches(&self) -> Option<u64> {
        let files = lock(&self.backlog).len();
        let per = self.opts.max_files_per_batch.unwrap_or(usize::MAX).max(1);
        Some(files.div_ceil(per).min(files) as u64)
    }

    fn seed_consumed(&self, descriptors: &[&[u8]]) -> Result<()> {
        let mut taken = lock(&self.taken);
        let st = &mut *taken;
        let mut seen = lock(&self.seen);
        for d in descriptors {
            let files = decode_files(d).map_err(|e| Error::Source {
                source_name: self.name.clone(),
                message: format!("a sink's recorded file list does not decode: {e}"),
            })?;
            self.remember_stamps(&files);
            for PlannedFile { path, .. } in files {
                seen.insert(path.clone());
                st.part(0).insert(path, ());
            }
        }
        Ok(())
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        let later = p.split_off(&done.plus_ms(1));
        let finished = std::mem::replace(&mut *p, later);
        let mut taken = lock(&self.taken);
        let mut part = taken.part(0);
        for PlannedFile { path, .. } in finished.into_values().flatten() {
            part.insert(path, ());
        }
        let mut c = lock(&self.read_counts);
        *c = c.split_off(&done.plus_ms(1));
    }

    fn records_read(&self, t: Time) -> Option<u64> {
        lock(&self.read_counts).get(&t).copied()
    }
}

impl FileInput {
    /// Reads the files planned for batch `t` and cuts them into line-aligned chunks,
    /// `chunks_per_worker` per worker so that every core stays busy. With `policy`, the
    /// text sources' line policy is applied to the bytes (chunks hand out bytes, not
    /// decoded lines): lines with invalid UTF-8 are counted, long lines cut and
    /// counted. (Lines decoded one by one apply it as they are decoded.)
    fn read_chunks(&self, t: Time, policy: bool) -> Result<(Vec<TextChunk>, u64)> {
        let (reads, later) = self.take_read_ahead(t).unwrap_or_else(|| {
            let files = lock(&self.planned).get(&t).cloned().unwrap_or_default();
            self.open_batch(&files)
        });
        let finished = self.finish_reads(t, reads, later);
        self.read_ahead_after(t);
        let mut contents = finished?;
        if policy {
            // Files whose every full piece has a line end hold no line longer than two
            // pieces; a limit below that can be passed by any line. Files of ASCII hold
            // no invalid UTF-8; others are validated whole first (fast where valid).
            let max = self.opts.max_line_bytes;
            let always = max < 2 * PIECE;
            contents.par_iter_mut().for_each(|(bytes, _, scan, _)| {
                let invalid = || scan.non_ascii && std::str::from_utf8(bytes).is_err();
                if !(scan.long_line || always || invalid()) {
                    return;
                }
                let (check, cut) = check_lines(bytes, max);
                SourceCounters::add(&self.counters.invalid_utf8_lines, check.invalid_utf8);
                SourceCounters::add(&self.counters.truncated_lines, check.truncated);
                if let Some(cut) = cut {
                    *bytes = Arc::new(cut);
                }
            });
        }
        let total: usize = contents.iter().map(|(c, _, _, _)| c.len()).sum();
        let lines = contents.iter().map(|(_, n, _, _)| n).sum();
        let pieces = self.partitions * self.opts.chunks_per_worker.max(1);
        let target = (total / pieces.max(1)).max(64 * 1024);
        let chunks = contents
            .iter()
            .flat_map(|(c, _, _, path)| {
                let k = c.len().div_ceil(target).max(1);
                chunk_bounds(c, k)
                    .into_iter()
                    .map(move |r| TextChunk::new(c.clone(), r).with_origin(path.clone()))
            })
            .collect();
        Ok((chunks, lines))
    }

    /// The files of batch `t` if they are being read ahead: the read-ahead stops at
    /// the end of its current piece and hands them over.
    fn take_read_ahead(&self, t: Time) -> Option<(Vec<Opened>, Vec<PlannedFile>)> {
        let (at, stop, rx, later) = lock(&self.read_ahead).pending.take()?;
        stop.store(true, Ordering::Release);
        // Read ahead for another batch (a batch failed and is re-run): not used.
        let reads = rx.recv().ok().filter(|_| at == t)?;
        Some((reads, later))
    }

    /// Starts reading the files of the first batch planned after `t`, if any.
    fn read_ahead_after(&self, t: Time) {
        let next = lock(&self.planned)
            .range(t.plus_ms(1)..)
            .next()
            .map(|(at, files)| (*at, files.clone()));
        let Some((at, files)) = next else { return };
        let mut ra = lock(&self.read_ahead);
        if ra.requests.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<ReadAheadJob>();
            let spawned = std::thread::Builder::new()
                .name("lockgate-read-ahead".into())
                .spawn(move || {
                    // Ends when the source is dropped (its sender with it).
                    for (reads, stop, reply) in rx {
                        let _ = reply.send(read_ahead(reads, &stop));
                    }
                });
            if spawned.is_err() {
                // No thread: every batch reads its own files, as without read-ahead.
                return;
            }
            ra.requests = Some(tx);
        }
        let (reads, later) = self.open_batch(&files);
        let stop = Arc::new(AtomicBool::new(false));
        let (reply, rx) = std::sync::mpsc::channel();
        if let Some(requests) = &ra.requests {
            if requests.send((reads, stop.clone(), reply)).is_ok() {
                ra.pending = Some((at, stop, rx, later));
            }
        }
    }

    fn read_done<T: Data>(&self, t: Time, batch: Batch<T>, lines: u64) -> Result<Batch<T>> {
        SourceCounters::add(&self.counters.records, lines);
        lock(&self.read_counts).insert(t, lines);
        Ok(batch)
    }
}

impl SourceCompute<String> for FileInput {
    fn compute(&self, t: Time) -> Result<Batch<String>> {
        let max = self.opts.max_line_bytes;
        let parts: Vec<Vec<String>> = self
            .read_chunks(t, false)?
            .0
            .into_par_iter()
            .map(|chunk| split_lines(chunk.as_bytes(), max, &self.counters))
            .collect();
        let batch = Batch::from_partitions(parts);
        let lines = batch.len() as u64;
        self.read_done(t, batch, lines)
    }
}

impl SourceCompute<TextChunk> for FileInput {
    fn compute(&self, t: Time) -> Result<Batch<TextChunk>> {
        let (chunks, lines) = self.read_chunks(t, true)?;
        let parts = chunks.into_iter().map(|c| vec![c]).collect();
        self.read_done(t, Batch::from_partitions(parts), lines)
    }
}

impl StreamingContext {
    /// The lines of the files that appear in `dir` (new files only, like Spark).
    pub fn text_file_stream(&self, dir: impl AsRef<Path>) -> DStream<String> {
        self.text_file_stream_with(dir, FileStreamOptions::default())
    }

    /// [`text_file_stream`](Self::text_file_stream) with options.
    pub fn text_file_stream_with(
        &self,
        dir: impl AsRef<Path>,
        opts: FileStreamOptions,
    ) -> DStream<String> {
        register(
            self,
            "text_file_stream",
            self.file_input(dir.as_ref(), opts),
        )
    }

    /// The same files as [`text_file_stream_with`](Self::text_file_stream_with), as
    /// line-aligned [`TextChunk`]s instead of one `String` per line: each file is read
    /// into one buffer and cut into `chunks_per_worker` chunks per worker (default 2),
    /// and iterating a chunk's
    /// lines neither copies nor allocates. The fast path for jobs that look at every
    /// line but keep few (log filtering). Lines are bytes here: decode the ones you keep
    /// (with `String::from_utf8_lossy`, which replaces invalid UTF-8 by U+FFFD). Lines
    /// longer than `max_line_bytes` are cut to it and counted (`truncated_lines_total`),
    /// as on every text path, and lines with invalid UTF-8 are counted
    /// (`invalid_utf8_lines_total`); both checks cost nothing on files of ASCII text
    /// with short lines (one pass counts the line ends and looks for bytes outside
    /// ASCII as the file is read). Records are counted as lines.
    pub fn text_file_chunk_stream(
        &self,
        dir: impl AsRef<Path>,
        opts: FileStreamOptions,
    ) -> DStream<TextChunk> {
        register(
            self,
            "text_file_chunk_stream",
            self.file_input(dir.as_ref(), opts),
        )
    }

    fn file_input(&self, dir: &Path, opts: FileStreamOptions) -> Arc<FileInput> {
        let name = source_name(self, "files");
        let taken = Arc::new(Mutex::new(KeyedState::new(1, true)));
        let state_name = format!("{name}.files");
        // Snapshots only: recovery adds the files of the plans logged since.
        self.graph().add_state(Arc::new(
            KeyedStateful::new(Arc::new(move || state_name.clone()), taken.clone())
                .snapshots_only(),
        ));
        let stamps = Arc::new(Mutex::new(KeyedState::new(1, true)));
        let stamps_name = format!("{name}.file-stamps");
        // Checkpoints written before stamps were kept have none: they start empty.
        self.graph().add_state(Arc::new(
            KeyedStateful::new(Arc::new(move || stamps_name.clone()), stamps.clone())
                .snapshots_only()
                .introduced(),
        ));
        Arc::new(FileInput {
            read_ahead: Mutex::new(ReadAhead::default()),
            taken,
            stamps,
            young: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashSet::new()),
            counters: self.metrics_ref().source(&name),
            name,
            dir: dir.to_path_buf(),
            opts,
            bounded: AtomicBool::new(false),
            started: AtomicBool::new(false),
            seen: Mutex::new(HashSet::new()),
            backlog: Mutex::new(VecDeque::new()),
            planned: Mutex::new(BTreeMap::new()),
            read_counts: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
            buffers: Mutex::new(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::TextChunk;

    fn source(dir: &Path, opts: FileStreamOptions) -> (StreamingContext, Arc<FileInput>) {
        let ctx = StreamingContext::builder().parallelism(2).build().unwrap();
        let src = ctx.file_input(dir, opts);
        src.start(false, false).unwrap();
        (ctx, src)
    }

    fn old_files() -> FileStreamOptions {
        FileStreamOptions {
            new_files_only: false,
            min_age: Duration::ZERO,
            ..Default::default()
        }
    }

    /// The paths of the files planned for batch `t`, joined by ", " (the plan's
    /// description without its counts and sizes).
    fn planned(src: &FileInput, t: i64) -> String {
        let described = src.plan(Time(t)).unwrap().0.description;
        let Some((_, files)) = described.split_once(" bytes: ") else {
            return described;
        };
        files
            .split(", ")
            .map(|f| f.rsplit_once(" (").map_or(f, |(path, _)| path))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn a_plan_describes_its_files_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.log"), "one\n").unwrap();
        fs::write(dir.path().join("b.log"), "two\nlines\n").unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        assert_eq!(
            src.plan(Time(1000)).unwrap().0.description,
            format!(
                "2 files, 14 bytes: {} (4 bytes), {} (10 bytes)",
                a.display(),
                b.display()
            )
        );
    }

    /// Regression: a file that grew after its batch read it was never read again and
    /// nothing said so (350 of 2,000 words counted, `changed_files` 0). It is reported
    /// once, by name, at the next listing, and so are a truncated and a rewritten file.
    #[test]
    fn files_changed_after_their_plan_are_reported_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let (grow, cut, rewrite) = (
            dir.path().join("grow.log"),
            dir.path().join("cut.log"),
            dir.path().join("rewrite.log"),
        );
        fs::write(&grow, "one\ntwo\n").unwrap();
        fs::write(&cut, "one\ntwo\n").unwrap();
        fs::write(&rewrite, "one\ntwo\n").unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        src.plan(Time(1000)).unwrap();
        let batch = SourceCompute::<String>::compute(&*src, Time(1000)).unwrap();
        assert_eq!(batch.len(), 6);
        assert_eq!(SourceCounters::get(&src.counters.changed_files), 0);
        fs::write(&grow, "one\ntwo\nthree\n").unwrap();
        fs::write(&cut, "one\n").unwrap();
        fs::write(&rewrite, "uno\ndos\n").unwrap();
        let past = SystemTime::now() - Duration::from_secs(5);
        fs::File::options()
            .write(true)
            .open(&rewrite)
            .unwrap()
            .set_modified(past)
            .unwrap();
        assert_eq!(planned(&src, 2000), "", "nothing new to plan");
        assert_eq!(SourceCounters::get(&src.counters.changed_files), 3);
        fs::write(&grow, "one\ntwo\nthree\nfour\n").unwrap();
        src.plan(Time(3000)).unwrap();
        src.stop();
        assert_eq!(
            SourceCounters::get(&src.counters.changed_files),
            3,
            "each file is named once"
        );
        let FileStamp { size, .. } = FileStamp::of(&fs::metadata(&grow).unwrap());
        assert_eq!(
            change_after_plan(
                FileStamp {
                    size: 8,
                    mtime_ns: 1
                },
                FileStamp { size, mtime_ns: 2 }
            ),
            "it grew from 8 bytes when planned to 19 after: the job read its first 8 bytes; \
             the 11 bytes written after its plan are not read"
        );
    }

    /// A bounded run checks at its end: a file that grew while the run read it is
    /// reported before the run's summary.
    #[test]
    fn the_end_of_a_run_reports_what_changed_during_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        fs::write(&path, "one\n").unwrap();
        let ctx = StreamingContext::builder().parallelism(2).build().unwrap();
        let src = ctx.file_input(dir.path(), old_files());
        src.start(true, false).unwrap();
        src.plan(Time(1000)).unwrap();
        SourceCompute::<String>::compute(&*src, Time(1000)).unwrap();
        fs::write(&path, "one\ntwo\n").unwrap();
        assert_eq!(SourceCounters::get(&src.counters.changed_files), 0);
        src.stop();
        assert_eq!(SourceCounters::get(&src.counters.changed_files), 1);
    }

    /// A file is taken once it has been still for the minimum age: one that keeps
    /// changing waits, on the monotonic clock, even when its modification time is in
    /// the future (a wall clock stepped back).
    #[test]
    fn a_file_is_taken_once_it_has_been_still_for_the_minimum_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let opts = FileStreamOptions {
            min_age: Duration::from_secs(1),
            ..old_files()
        };
        let (_ctx, src) = source(dir.path(), opts);
        let future = SystemTime::now() + Duration::from_secs(3600);
        let mut text = String::new();
        for i in 0..4 {
            text.push_str(&format!("line {i}\n"));
            fs::write(&path, &text).unwrap();
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(future + Duration::from_secs(i))
                .unwrap();
            // Changed since the last listing: however long ago that was, it waits.
            assert_eq!(planned(&src, 1000 + i as i64), "", "changing: waits");
        }
        assert_eq!(
            planned(&src, 2000),
            "",
            "still for less than the minimum age"
        );
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(planned(&src, 3000), path.display().to_string());
        let batch = SourceCompute::<String>::compute(&*src, Time(3000)).unwrap();
        assert_eq!(batch.len(), 4, "read whole");
        assert_eq!(SourceCounters::get(&src.counters.changed_files), 0);
    }

    /// A bounded run waits for the files present at start to be still, and takes no
    /// file that appears meanwhile.
    #[test]
    fn a_bounded_run_waits_for_files_still_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        fs::write(&path, "one\n").unwrap();
        let opts = FileStreamOptions {
            min_age: Duration::from_secs(1),
            ..old_files()
        };
        let ctx = StreamingContext::builder().parallelism(2).build().unwrap();
        let src = ctx.file_input(dir.path(), opts);
        let writer = {
            let path = path.clone();
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..6 {
                    std::thread::sleep(Duration::from_millis(50));
                    let mut f = fs::File::options().append(true).open(&path).unwrap();
                    std::io::Write::write_all(&mut f, format!("more {i}\n").as_bytes()).unwrap();
                }
                fs::write(dir.join("later.log"), "late\n").unwrap();
            })
        };
        src.start(true, false).unwrap();
        writer.join().unwrap();
        assert_eq!(planned(&src, 1000), path.display().to_string());
        let batch = SourceCompute::<String>::compute(&*src, Time(1000)).unwrap();
        assert_eq!(batch.len(), 7, "the writer's lines are all read");
        assert!(
            !src.has_pending(),
            "a file that appeared after start is not taken"
        );
    }

    /// Regression: symlinks to regular files were skipped without a word. They are read;
    /// dangling and looping links, directories, FIFOs and sockets are skipped, each named
    /// once and counted.
    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_and_other_entries_named_and_counted() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("real.log");
        fs::write(&target, "a\nb\nc\n").unwrap();
        symlink(&target, dir.path().join("link.log")).unwrap();
        symlink(
            elsewhere.path().join("gone"),
            dir.path().join("dangling.log"),
        )
        .unwrap();
        symlink(dir.path().join("loop2"), dir.path().join("loop1")).unwrap();
        symlink(dir.path().join("loop1"), dir.path().join("loop2")).unwrap();
        fs::create_dir(dir.path().join("subdir")).unwrap();
        symlink(elsewhere.path(), dir.path().join("dirlink")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        assert_eq!(
            planned(&src, 1000),
            dir.path().join("link.log").display().to_string()
        );
        let batch = SourceCompute::<String>::compute(&*src, Time(1000)).unwrap();
        assert_eq!(batch.len(), 3, "read through the link");
        assert_eq!(SourceCounters::get(&src.counters.skipped_entries), 7);
        // A link renamed in later is read too; the skipped entries are not counted again.
        let target2 = elsewhere.path().join("real2.log");
        fs::write(&target2, "d\n").unwrap();
        symlink(&target2, dir.path().join("link2.log")).unwrap();
        assert_eq!(
            planned(&src, 2000),
            dir.path().join("link2.log").display().to_string()
        );
        assert_eq!(SourceCounters::get(&src.counters.skipped_entries), 7);
        let batch = SourceCompute::<String>::compute(&*src, Time(2000)).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(SourceCounters::get(&src.counters.unreadable_files), 0);
    }

    #[test]
    fn passing_errors_are_told_from_lasting_ones() {
        use std::io::{Error, ErrorKind};
        assert!(is_passing(&Error::from_raw_os_error(24))); // EMFILE
        assert!(is_passing(&Error::from_raw_os_error(23))); // ENFILE
        assert!(is_passing(&Error::from(ErrorKind::Interrupted)));
        assert!(is_passing(&Error::from(ErrorKind::WouldBlock)));
        assert!(!is_passing(&Error::from(ErrorKind::PermissionDenied)));
        assert!(!is_passing(&Error::from(ErrorKind::NotFound)));
        assert!(!is_passing(&Error::from_raw_os_error(13))); // EACCES
    }

    #[test]
    fn file_lists_logged_before_sizes_were_recorded_still_decode() {
        let old = crate::codec::to_bytes(&vec![PathBuf::from("a.log"), PathBuf::from("b")]);
        let files = decode_files(&old).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, PathBuf::from("a.log"));
        assert_eq!(files[0].stamp, None);
        let new = vec![PlannedFile {
            path: PathBuf::from("c.log"),
            stamp: Some(FileStamp {
                size: 12,
                mtime_ns: 34,
            }),
        }];
        assert_eq!(decode_files(&encode_files(&new)).unwrap(), new);
        assert!(decode_files(&encode_files(&new)[..12]).is_err());
    }

    /// Regression: a file written in place was read partially, and nothing said so.
    #[test]
    fn a_file_that_grows_after_its_plan_is_read_as_planned_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        fs::write(&path, "one\ntwo\n").unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        src.plan(Time(1000)).unwrap();
        fs::write(&path, "one\ntwo\nthree\nfour\n").unwrap();
        let batch = SourceCompute::<String>::compute(&*src, Time(1000)).unwrap();
        let mut lines: Vec<String> = batch.into_partitions().into_iter().flatten().collect();
        lines.sort();
        assert_eq!(lines, vec!["one", "two"], "read as planned");
        assert_eq!(SourceCounters::get(&src.counters.changed_files), 1);
    }

    #[test]
    fn files_younger_than_the_minimum_age_wait_for_a_later_batch() {
        let dir = tempfile::tempdir().unwrap();
        let young = dir.path().join("young.log");
        let old = dir.path().join("old.log");
        fs::write(&young, "y\n").unwrap();
        fs::write(&old, "o\n").unwrap();
        let past = SystemTime::now() - Duration::from_secs(600);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let opts = FileStreamOptions {
            min_age: Duration::from_secs(60),
            ..old_files()
        };
        let (_ctx, src) = source(dir.path(), opts);
        assert_eq!(planned(&src, 1000), old.display().to_string());
        assert_eq!(planned(&src, 2000), "", "still too young");
        fs::File::options()
            .write(true)
            .open(&young)
            .unwrap()
            .set_modified(past)
            .unwrap();
        assert_eq!(planned(&src, 3000), young.display().to_string());
    }

    /// Regression: the chunked path (the CLI jobs') read a 50 MB line whole; a file with
    /// such a line gets the exact check, which counts its invalid UTF-8 too.
    #[test]
    fn the_chunk_path_counts_invalid_utf8_and_cuts_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = b"fine\nbad \xff line\nalso \xfe\xfd bad\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 << 20));
        text.extend_from_slice(b"\ncaf\xc3\xa9 ok\nlast");
        fs::write(dir.path().join("f.log"), &text).unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        src.plan(Time(1000)).unwrap();
        let batch = SourceCompute::<TextChunk>::compute(&*src, Time(1000)).unwrap();
        let chunks: Vec<TextChunk> = batch.into_partitions().into_iter().flatten().collect();
        let lines: Vec<Vec<u8>> = chunks
            .iter()
            .flat_map(|c| c.lines().map(<[u8]>::to_vec).collect::<Vec<_>>())
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[3].len(),
            DEFAULT_MAX_LINE_BYTES,
            "the long line is cut"
        );
        assert_eq!(lines[4], "café ok".as_bytes());
        assert_eq!(SourceCounters::get(&src.counters.invalid_utf8_lines), 2);
        assert_eq!(SourceCounters::get(&src.counters.truncated_lines), 1);
        assert_eq!(SourceCounters::get(&src.counters.records), 6);
    }

    /// Regression (the outside tester's case): 200 short lines of invalid UTF-8 and a
    /// binary left the chunk path's counter at 0. Valid UTF-8 beside them counts nothing.
    #[test]
    fn the_chunk_path_counts_invalid_utf8_in_short_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = Vec::new();
        for i in 0..400 {
            if i % 2 == 0 {
                bad.extend_from_slice(format!("line {i} ").as_bytes());
                bad.extend_from_slice(b"\xff\xfe\n");
            } else {
                bad.extend_from_slice(format!("line {i} caf\u{e9}\n").as_bytes());
            }
        }
        fs::write(dir.path().join("a-bad.log"), &bad).unwrap();
        fs::write(
            dir.path().join("b-valid.log"),
            "caf\u{e9} \u{1f600}\n".repeat(1000),
        )
        .unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        src.plan(Time(1000)).unwrap();
        let batch = SourceCompute::<TextChunk>::compute(&*src, Time(1000)).unwrap();
        let lines = batch
            .into_partitions()
            .into_iter()
            .flatten()
            .map(|c| c.lines().count())
            .sum::<usize>();
        assert_eq!(lines, 1400);
        assert_eq!(SourceCounters::get(&src.counters.invalid_utf8_lines), 200);
        assert_eq!(SourceCounters::get(&src.counters.truncated_lines), 0);
    }

    #[test]
    fn the_line_path_counts_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = b"bad \xff line\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 << 20));
        fs::write(dir.path().join("f.log"), &text).unwrap();
        let (_ctx, src) = source(dir.path(), old_files());
        src.plan(Time(1000)).unwrap();
        let lines: Vec<String> = SourceCompute::<String>::compute(&*src, Time(1000))
            .unwrap()
            .into_partitions()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(SourceCounters::get(&src.counters.invalid_utf8_lines), 1);
        assert_eq!(SourceCounters::get(&src.counters.truncated_lines), 1);
    }
}
