//! Output operations: `print`, `save_as_text_files` and `foreach_batch`. Registering one
//! is what makes a stream (and everything it depends on) run at each batch.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::dstream::DStream;
use crate::error::{BoxError, Error, Result};
use crate::graph::OutputOp;
use crate::show::Show;
use crate::types::{BatchContext, BatchRef};

/// What an output function may return: nothing, or a `Result` whose error fails the
/// batch (and stops the context, reported with the output's name and batch time).
pub trait OutputResult {
    /// Converts into a result.
    fn into_output_result(self) -> std::result::Result<(), BoxError>;
}

impl OutputResult for () {
    fn into_output_result(self) -> std::result::Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> OutputResult for std::result::Result<(), E> {
    fn into_output_result(self) -> std::result::Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// Formats a batch the way Spark's `DStream.print(num)` does.
pub fn format_print<T: Show>(elements: &[T], more: bool, time: Time) -> String {
    let mut s = String::new();
    let line = "-------------------------------------------";
    let _ = writeln!(s, "{line}\nTime: {time}\n{line}");
    for e in elements {
        let _ = e.show(&mut s);
        s.push('\n');
    }
    if more {
        s.push_str("...\n");
    }
    s.push('\n');
    s
}

/// The directory of batch `time` for `save_as_text_files(prefix, suffix)`.
pub fn text_files_dir(prefix: &str, suffix: &str, time: Time) -> PathBuf {
    if suffix.is_empty() {
        PathBuf::from(format!("{prefix}-{}", time.millis()))
    } else {
        PathBuf::from(format!("{prefix}-{}.{suffix}", time.millis()))
    }
}

/// Writes a batch directory atomically: the files are written (and fsynced) into a
/// temporary sibling directory that is then renamed into place. A directory already in
/// place (a replayed batch) is replaced. A `_SUCCESS` marker is written last.
pub fn write_batch_dir(
    dir: &Path,
    files: impl IndexedParallelIterator<Item = (String, Vec<u8>)>,
) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".into());
    // One writer per output directory: a fixed temporary name, so the leftover of a
    // writer that died mid-batch is replaced without listing the directory.
    let tmp = parent.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove directory", &tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
    files
        .map(|(file, bytes)| {
            let path = tmp.join(&file);
            let mut f = fs::File::create(&path).map_err(|e| Error::io("create file", &path, e))?;
            f.write_all(&bytes)
                .map_err(|e| Error::io("write file", &path, e))?;
            f.sync_all().map_err(|e| Error::io("sync file", &path, e))
        })
        .collect::<Result<Vec<()>>>()?;
    let marker = tmp.join("_SUCCESS");
    fs::File::create(&marker).map_err(|e| Error::io("create file", &marker, e))?;
    swap_into_place(&tmp, dir)?;
    if let Ok(d) = fs::File::open(parent) {
        // Make the rename durable; not all filesystems allow syncing a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Moves directory `tmp` to `dir`. A directory already at `dir` (a re-run batch's) is
/// exchanged with it in one step where the filesystem can (Linux `renameat2` with
/// `RENAME_EXCHANGE`), so a reader always sees one whole copy, then the old copy (now at
/// `tmp`) is deleted; elsewhere it is deleted first.
fn swap_into_place(tmp: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            match renameat_with(CWD, tmp, CWD, dir, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    return fs::remove_dir_all(tmp)
                        .map_err(|e| Error::io("remove the replaced directory", tmp, e));
                }
                // Filesystems without exchange: replace in two steps below.
                Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
                Err(e) => {
                    return Err(Error::io(
                        "exchange directory into place",
                        dir,
                        std::io::Error::from(e),
                    ))
                }
            }
        }
        fs::remove_dir_all(dir).map_err(|e| Error::io("replace directory", dir, e))?;
    }
    fs::rename(tmp, dir).map_err(|e| Error::io("rename directory into place", dir, e))
}

impl<T: Data> DStream<T> {
    fn output_name(&self, kind: &str) -> String {
        format!("{kind}-{}", self.graph.output_count())
    }

    pub(crate) fn add_output(
        &self,
        name: String,
        run: impl Fn(Batch<T>, BatchRef) -> Result<()> + Send + Sync + 'static,
    ) {
        self.add_output_of_sink(name, None, move |batch, cx| run(batch, cx.batch()));
    }

    /// [`add_output`](Self::add_output) for a sink, whose retries are recorded with
    /// each batch.
    pub(crate) fn add_output_of_sink(
        &self,
        name: String,
        sink: Option<Arc<crate::metrics::SinkCounters>>,
        run: impl Fn(Batch<T>, &BatchContext) -> Result<()> + Send + Sync + 'static,
    ) {
        let p = self.parent();
        self.graph.add_output(OutputOp {
            name,
            sink,
            meta: p.meta.clone(),
            run: Box::new(move |cx| {
                let batch = p.get_or_compute(cx)?;
                let n = batch.len() as u64;
                run(batch, cx).map(|()| n)
            }),
        });
    }

    /// Prints the first 10 elements of every batch (Spark's `print()`).
    pub fn print(&self)
    where
        T: Show,
    {
        self.print_n(10);
    }

    /// Prints the first `n` elements of every batch in Spark's format: a dashed line,
    /// `Time: <ms> ms`, a dashed line, the elements, `...` when there are more.
    pub fn print_n(&self, n: usize)
    where
        T: Show,
    {
        self.add_output(self.output_name("print"), move |batch, b| {
            let first = batch.take(n + 1);
            let more = first.len() > n;
            let text = format_print(&first[..first.len().min(n)], more, b.time);
            let mut out = std::io::stdout().lock();
            // stdout closed (e.g. a pipe) must not fail the job.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            Ok(())
        });
    }

    /// Writes every batch as text, one element per line, to
    /// `<prefix>-<batch time ms>[.<suffix>]/part-NNNNN` (one file per partition), atomically.
    pub fn save_as_text_files(&self, prefix: &str, suffix: &str)
    where
        T: Show,
    {
        let (prefix, suffix) = (prefix.to_string(), suffix.to_string());
        self.add_output(self.output_name("save_as_text_files"), move |batch, b| {
            let dir = text_files_dir(&prefix, &suffix, b.time);
            let parts = batch.into_shared();
            write_batch_dir(
                &dir,
                parts.into_par_iter().enumerate().map(|(i, part)| {
                    let mut s = String::new();
                    for e in part.iter() {
                        let _ = e.show(&mut s);
                        s.push('\n');
                    }
                    (format!("part-{i:05}"), s.into_bytes())
                }),
            )
        });
    }

    /// Runs `f` on every batch (Spark's `foreachRDD`), with the batch id and time.
    pub fn foreach_batch<R: OutputResult>(
        &self,
        f: impl Fn(&Batch<T>, BatchRef) -> R + Send + Sync + 'static,
    ) {
        let name = self.output_name("foreach_batch");
        let op_name = name.clone();
        self.add_output(name, move |batch, b| {
            f(&batch, b)
                .into_output_result()
                .map_err(|source| Error::Output {
                    operator: op_name.clone(),
                    time: b.time,
                    source,
                })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_format_matches_spark() {
        let s = format_print(&[String::from("a"), String::from("b")], true, Time(2000));
        assert_eq!(
            s,
            "-------------------------------------------\nTime: 2000 ms\n\
             -------------------------------------------\na\nb\n...\n\n"
        );
        let empty = format_print::<i32>(&[], false, Time(1000));
        assert_eq!(
            empty,
            "-------------------------------------------\nTime: 1000 ms\n\
             -------------------------------------------\n\n"
        );
    }

    /// Regression: replacing a re-run batch's directory deleted the old copy before the
    /// new one was renamed in, so a reader could find the batch missing.
    #[test]
    fn a_replaced_batch_directory_is_never_missing() {
        #![allow(clippy::unwrap_used)]
        use std::sync::atomic::{AtomicBool, Ordering};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("batch=7");
        let files = || (0..40).map(|i| (format!("part-{i}"), vec![b'x'; 64]));
        let parts: Vec<_> = files().collect();
        write_batch_dir(&dir, parts.into_par_iter()).unwrap();
        let done = AtomicBool::new(false);
        let missing = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut missing = 0u32;
                while !done.load(Ordering::Acquire) {
                    if !dir.join("_SUCCESS").exists() {
                        missing += 1;
                    }
                }
                missing
            });
            for _ in 0..100 {
                let parts: Vec<_> = files().collect();
                write_batch_dir(&dir, parts.into_par_iter()).unwrap();
            }
            done.store(true, Ordering::Release);
            reader.join().unwrap()
        });
        assert_eq!(missing, 0, "the batch was missing {missing} times");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 41);
        assert!(!tmp.path().join(".batch=7.tmp").exists());
    }

    #[test]
    fn text_files_dir_layout() {
        assert_eq!(
            text_files_dir("out/x", "", Time(5)),
            PathBuf::from("out/x-5")
        );
        assert_eq!(
            text_files_dir("out/x", "txt", Time(5)),
            PathBuf::from("out/x-5.txt")
        );
    }
}
