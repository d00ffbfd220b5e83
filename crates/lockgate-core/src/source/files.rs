//! `text_file_stream`: the lines of new files in a directory.
//!
//! Each batch takes the files that appeared in the directory since the previous batch,
//! oldest first (by modification time, then name), at most `max_files_per_batch` of
//! them; the rest wait for the next batches. Names starting with `.` or `_` are ignored,
//! so writers should use the write-then-rename convention: write `dir/.name.tmp` (or
//! outside the directory on the same filesystem), then rename it to `dir/name`. A file
//! is read once, whole; appending to it after it was picked up has no effect.
//!
//! In a bounded run (`Trigger::AvailableNow`) the source takes exactly the files present
//! at start and is done when they have all been planned.
//!
//! With a checkpoint, a batch's descriptor is its exact list of files, and the set of
//! files already taken by committed batches is the source's checkpointed state (a
//! snapshot every few batches; the plans logged since add the rest at recovery), so after
//! a restart the same files go to the same batches and no file is taken twice.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{KeyedState, KeyedStateful, SnapshotOnly};
use crate::clock::Time;
use crate::codec::{from_bytes, to_bytes};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{Error, Result};
use crate::graph::{lock, InputInfo, InputSource};
use crate::metrics::SourceCounters;
use crate::source::read::{read_ahead, FileRead, ReadError};
use crate::source::{
    chunk_bounds, register, source_name, split_lines, SourceCompute, TextChunk,
    DEFAULT_MAX_LINE_BYTES,
};

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
}

impl Default for FileStreamOptions {
    fn default() -> Self {
        FileStreamOptions {
            max_files_per_batch: None,
            new_files_only: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            chunks_per_worker: 2,
        }
    }
}

/// True for names the file source never reads (hidden and temporary files).
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

struct FileInput {
    name: String,
    dir: PathBuf,
    opts: FileStreamOptions,
    bounded: AtomicBool,
    seen: Mutex<HashSet<PathBuf>>,
    /// Files taken by completed batches (or ignored at a fresh start): the checkpointed
    /// state.
    taken: Arc<Mutex<KeyedState<PathBuf, ()>>>,
    backlog: Mutex<VecDeque<PathBuf>>,
    planned: Mutex<BTreeMap<Time, Vec<PathBuf>>>,
    read_counts: Mutex<BTreeMap<Time, u64>>,
    partitions: usize,
    counters: Arc<SourceCounters>,
    /// Buffers of earlier batches, reused once no chunk holds them any more (a fresh
    /// large allocation costs a page fault per 4 KiB).
    buffers: Mutex<Vec<Arc<Vec<u8>>>>,
    /// The next planned batch's files, read ahead while the current batch computes.
    read_ahead: Mutex<ReadAhead>,
}

/// The contents of a batch's files: each file's bytes and line count.
type Contents = Vec<(Arc<Vec<u8>>, u64)>;

/// Read-ahead of the next planned batch's files on one long-lived thread (see
/// [`read`](crate::source::read)). Only batches already planned are read ahead (a
/// bounded run plans ahead; a live stream that falls behind has planned batches
/// waiting); files are read whole, once, exactly as at their batch: a source's files do
/// not change once they appear.
#[derive(Default)]
struct ReadAhead {
    /// Requests to the reader thread (started at the first read-ahead).
    requests: Option<std::sync::mpsc::Sender<ReadAheadJob>>,
    /// The batch being read ahead, its stop flag, and where its reads come back.
    pending: Option<(
        Time,
        Arc<AtomicBool>,
        std::sync::mpsc::Receiver<Vec<Opened>>,
    )>,
}

/// A file of a batch, opened (and perhaps partly read) or failed.
type Opened = std::result::Result<FileRead, ReadError>;

/// Files to read ahead, the flag that stops it, where to send them.
type ReadAheadJob = (
    Vec<Opened>,
    Arc<AtomicBool>,
    std::sync::mpsc::Sender<Vec<Opened>>,
);

/// Regular, non-ignored files of `dir`, oldest first (modification time, then name).
fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if is_ignored_name(&name.to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((mtime, entry.path()));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

impl FileInput {
    fn discover(&self) -> Result<()> {
        let files = list_files(&self.dir).map_err(|e| Error::io("list directory", &self.dir, e))?;
        let mut seen = lock(&self.seen);
        let mut backlog = lock(&self.backlog);
        for f in files {
            if seen.insert(f.clone()) {
                backlog.push_back(f);
            }
        }
        Ok(())
    }

    /// Opens `path` into a buffer no chunk holds any more (else a new one).
    fn open(&self, path: &Path) -> Opened {
        let buf = {
            let mut pool = lock(&self.buffers);
            let free = pool.iter().position(|b| Arc::strong_count(b) == 1);
            free.map(|i| pool.swap_remove(i))
        }
        .and_then(|mut b| Arc::get_mut(&mut b).map(std::mem::take))
        .unwrap_or_default();
        FileRead::open(path, buf)
    }

    /// Finishes reading the files of a batch (in parallel): each file's bytes, kept in
    /// the buffer pool for reuse, and its line count. A file that cannot be read is
    /// skipped, counted and logged.
    fn finish_reads(&self, reads: Vec<Opened>) -> Contents {
        reads
            .into_par_iter()
            .filter_map(|r| match r.and_then(FileRead::finish) {
                Ok((bytes, lines)) => {
                    let bytes = Arc::new(bytes);
                    let mut pool = lock(&self.buffers);
                    if pool.len() < 4 {
                        pool.push(bytes.clone());
                    }
                    Some((bytes, lines))
                }
                Err((path, e)) => {
                    SourceCounters::add(&self.counters.unreadable_files, 1);
                    tracing::warn!(
                        source = %self.name,
                        file = %path.display(),
                        error = %e,
                        "file could not be read and is skipped; check its permissions"
                    );
                    None
                }
            })
            .collect()
    }
}

impl InputSource for FileInput {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, bounded: bool, recovered: bool) -> Result<()> {
        self.bounded.store(bounded, Ordering::Release);
        if recovered {
            let taken = lock(&self.taken);
            lock(&self.seen).extend(taken.maps.iter().flat_map(|m| m.keys().cloned()));
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
            let files =
                list_files(&self.dir).map_err(|e| Error::io("list directory", &self.dir, e))?;
            let mut taken = lock(&self.taken);
            let st = &mut *taken;
            for f in &files {
                st.maps[0].insert(f.clone(), ());
                st.dirty[0].insert(f.clone());
            }
            lock(&self.seen).extend(files);
        } else {
            self.discover()?;
        }
        Ok(())
    }

    fn stop(&self) {}

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        if !self.bounded.load(Ordering::Acquire) {
            if let Err(e) = self.discover() {
                tracing::warn!(source = %self.name, error = %e, "listing failed; retrying at the next batch");
            }
        }
        let files: Vec<PathBuf> = {
            let mut backlog = lock(&self.backlog);
            let n = self
                .opts
                .max_files_per_batch
                .unwrap_or(usize::MAX)
                .min(backlog.len());
            backlog.drain(..n).collect()
        };
        let description = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let descriptor = to_bytes(&files);
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
        let files: Vec<PathBuf> = from_bytes(descriptor).map_err(|e| Error::Source {
            source_name: self.name.clone(),
            message: format!("logged file list does not decode: {e}"),
        })?;
        lock(&self.seen).extend(files.iter().cloned());
        lock(&self.backlog).retain(|f| !files.contains(f));
        lock(&self.planned).insert(t, files);
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !lock(&self.backlog).is_empty()
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
            let files: Vec<PathBuf> = from_bytes(d).map_err(|e| Error::Source {
                source_name: self.name.clone(),
                message: format!("a sink's recorded file list does not decode: {e}"),
            })?;
            for f in files {
                seen.insert(f.clone());
                st.dirty[0].insert(f.clone());
                st.maps[0].insert(f, ());
            }
        }
        Ok(())
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        let later = p.split_off(&done.plus_ms(1));
        let finished = std::mem::replace(&mut *p, later);
        let mut taken = lock(&self.taken);
        let st = &mut *taken;
        for f in finished.into_values().flatten() {
            st.dirty[0].insert(f.clone());
            st.maps[0].insert(f, ());
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
    /// `chunks_per_worker` per worker so that every core stays busy.
    fn read_chunks(&self, t: Time) -> (Vec<TextChunk>, u64) {
        let reads = self.take_read_ahead(t).unwrap_or_else(|| {
            let files = lock(&self.planned).get(&t).cloned().unwrap_or_default();
            files.iter().map(|f| self.open(f)).collect()
        });
        let contents = self.finish_reads(reads);
        self.read_ahead_after(t);
        let total: usize = contents.iter().map(|(c, _)| c.len()).sum();
        let lines = contents.iter().map(|(_, n)| n).sum();
        let pieces = self.partitions * self.opts.chunks_per_worker.max(1);
        let target = (total / pieces.max(1)).max(64 * 1024);
        let chunks = contents
            .iter()
            .flat_map(|(c, _)| {
                let k = c.len().div_ceil(target).max(1);
                chunk_bounds(c, k)
                    .into_iter()
                    .map(move |r| TextChunk::new(c.clone(), r))
            })
            .collect();
        (chunks, lines)
    }

    /// The files of batch `t` if they are being read ahead: the read-ahead stops at
    /// the end of its current piece and hands them over.
    fn take_read_ahead(&self, t: Time) -> Option<Vec<Opened>> {
        let (at, stop, rx) = lock(&self.read_ahead).pending.take()?;
        stop.store(true, Ordering::Release);
        // Read ahead for another batch (a batch failed and is re-run): not used.
        rx.recv().ok().filter(|_| at == t)
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
        let reads = files.iter().map(|f| self.open(f)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (reply, rx) = std::sync::mpsc::channel();
        if let Some(requests) = &ra.requests {
            if requests.send((reads, stop.clone(), reply)).is_ok() {
                ra.pending = Some((at, stop, rx));
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
            .read_chunks(t)
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
        let (chunks, lines) = self.read_chunks(t);
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
    /// (`max_line_bytes` does not apply). Records are counted as lines.
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
        self.graph().add_state(Arc::new(SnapshotOnly(KeyedStateful {
            name: Arc::new(move || state_name.clone()),
            state: taken.clone(),
        })));
        Arc::new(FileInput {
            read_ahead: Mutex::new(ReadAhead::default()),
            taken,
            counters: self.metrics_ref().source(&name),
            name,
            dir: dir.to_path_buf(),
            opts,
            bounded: AtomicBool::new(false),
            seen: Mutex::new(HashSet::new()),
            backlog: Mutex::new(VecDeque::new()),
            planned: Mutex::new(BTreeMap::new()),
            read_counts: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
            buffers: Mutex::new(Vec::new()),
        })
    }
}
