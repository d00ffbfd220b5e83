//! `lockgate bench log-errors`: the log-errors job over generated files (`--once`, one
//! file per batch) and, in the same run, a raw-scan baseline over the same files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rayon::prelude::*;

use crate::generate::generate_logs;
use crate::jobs::{self, Input, JobConfig};

/// Options of `bench log-errors`.
#[derive(Args)]
pub struct BenchOpts {
    /// Total lines to generate.
    #[arg(long, default_value_t = 5_000_000)]
    lines: u64,
    /// Number of files (= batches).
    #[arg(long, default_value_t = 100)]
    files: u64,
    /// Where the generated data is kept (reused when it matches --lines/--files).
    #[arg(long, default_value = "target/bench-data")]
    data: PathBuf,
    /// Worker threads (default: number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Runs of each engine variant (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

/// The run with the median time.
fn median(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by_key(|r| r.elapsed);
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// Peak resident memory since the last reset, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak-RSS counter so each phase is measured alone (Linux >= 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

struct Figures {
    lines: u64,
    errors: u64,
    bytes: u64,
    elapsed: Duration,
    /// From the first batch's start to the last batch's end (no start-up, recovery or
    /// final flush).
    steady: Duration,
    peak_rss: Option<u64>,
}

impl Figures {
    fn print(&self, name: &str) {
        let s = self.elapsed.as_secs_f64();
        println!(
            "{name:<10} {:>10} lines {:>9} errors {:>8.3} s {:>12.0} lines/s {:>8.1} MB/s  peak RSS {}",
            self.lines,
            self.errors,
            s,
            self.lines as f64 / s,
            mb(self.bytes) / s,
            self.peak_rss
                .map_or_else(|| "n/a".to_string(), |b| format!("{:.1} MB", mb(b)))
        );
    }
}

fn data_dir(opts: &BenchOpts) -> Result<PathBuf> {
    let dir = opts
        .data
        .join(format!("logs-{}-{}", opts.lines, opts.files));
    let marker = dir.join("_COMPLETE");
    if !marker.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        eprintln!(
            "generating {} lines in {} files under {} ...",
            opts.lines,
            opts.files,
            dir.display()
        );
        generate_logs(&dir, opts.lines, opts.files, 42)?;
        std::fs::write(&marker, b"").context("writing the data marker")?;
    }
    Ok(dir)
}

fn log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    Ok(files)
}

/// The baseline: read every file and count lines and lines containing `ERROR` with
/// memchr, in parallel over files on `workers` threads, no engine.
fn raw_scan(files: &[PathBuf], workers: usize) -> Result<Figures> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .context("starting the baseline's threads")?;
    reset_peak_rss();
    let start = Instant::now();
    let finder = memchr::memmem::Finder::new("ERROR");
    let counts: Vec<(u64, u64, u64)> = pool.install(|| {
        files
            .par_iter()
            .map(|f| {
                let buf = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
                // Each line holds ERROR at most once (only in its level tag).
                let errors = finder.find_iter(&buf).count() as u64;
                Ok((lines, errors, buf.len() as u64))
            })
            .collect::<Result<_>>()
    })?;
    let elapsed = start.elapsed();
    Ok(Figures {
        steady: elapsed,
        lines: counts.iter().map(|c| c.0).sum(),
        errors: counts.iter().map(|c| c.1).sum(),
        bytes: counts.iter().map(|c| c.2).sum(),
        elapsed,
        peak_rss: peak_rss(),
    })
}

fn engine(dir: &Path, opts: &BenchOpts, bytes: u64, checkpoint: Option<&Path>) -> Result<Figures> {
    if let Some(cp) = checkpoint {
        if cp.exists() {
            std::fs::remove_dir_all(cp).with_context(|| format!("clearing {}", cp.display()))?;
        }
    }
    reset_peak_rss();
    let cfg = JobConfig {
        input: Input::Dir(dir.to_path_buf()),
        batch_interval: Duration::from_secs(10),
        window: Duration::from_secs(30),
        slide: Duration::from_secs(10),
        output: None,
        once: true,
        max_files_per_batch: Some(1),
        parallelism: opts.parallelism,
        print: false,
        checkpoint: checkpoint.map(Path::to_path_buf),
        block_interval: Duration::from_millis(200),
        sink: None,
        from_sink_offsets: false,
        backpressure: false,
        delivery: Default::default(),
    };
    cfg.validate()?;
    let mut builder = cfg.configure(
        "bench-log-errors",
        lockgate_core::StreamingContext::builder(),
    );
    if let Some(cp) = checkpoint {
        builder = builder.checkpoint_dir(cp);
    }
    let ctx = builder.build()?;
    let lines = cfg.lines(&ctx);
    let job = jobs::log_errors(&cfg, &lines, None);
    let errors = Arc::new(AtomicI64::new(0));
    let e2 = errors.clone();
    // The error count per batch (slide == interval, window >= slide): sum the batch
    // counts to check the engine against the baseline.
    job.errors.count().foreach_batch(move |b, _| {
        e2.fetch_add(b.iter().sum::<i64>(), Ordering::Relaxed);
    });
    job.window_counts.foreach_batch(|_, _| ());
    let start = Instant::now();
    ctx.start()?;
    ctx.await_termination()?;
    let elapsed = start.elapsed();
    let m = ctx.metrics().snapshot();
    let first = m.completed.first().and_then(|b| b.processing_start);
    let last = m.completed.last().and_then(|b| b.processing_end);
    let steady = match (first, last) {
        (Some(a), Some(b)) => Duration::from_millis(u64::try_from(b.since(a)).unwrap_or(0)),
        _ => elapsed,
    };
    Ok(Figures {
        lines: m.total_records,
        errors: u64::try_from(errors.load(Ordering::Relaxed)).unwrap_or(0),
        bytes,
        elapsed,
        steady,
        peak_rss: peak_rss(),
    })
}

/// Runs the benchmark and prints its figures.
pub fn log_errors(opts: &BenchOpts) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -- bench log-errors`");
    }
    let dir = data_dir(opts)?;
    let files = log_files(&dir)?;
    let cores = opts
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Warm the page cache so neither side pays for the disk.
    let warm = raw_scan(&files, cores)?;
    let baseline = raw_scan(&files, cores)?;
    // Short runs are noisy: alternate the two variants and keep each one's median.
    let cp_dir = opts.data.join(format!("checkpoint-{}", std::process::id()));
    let (mut plain, mut with_cp) = (Vec::new(), Vec::new());
    for _ in 0..opts.repeat.max(1) {
        plain.push(engine(&dir, opts, warm.bytes, None)?);
        with_cp.push(engine(&dir, opts, warm.bytes, Some(&cp_dir))?);
    }
    let _ = std::fs::remove_dir_all(&cp_dir);
    let run = median(plain);
    let checkpointed = median(with_cp);
    for r in [&run, &checkpointed] {
        if r.lines != baseline.lines || r.errors != baseline.errors {
            bail!(
                "engine and baseline disagree: engine {} lines / {} errors, baseline {} / {}",
                r.lines,
                r.errors,
                baseline.lines,
                baseline.errors
            );
        }
    }
    println!(
        "log-errors: {} lines ({:.1} MB) in {} files, one file per batch, {cores} workers, \
         median of {} runs",
        baseline.lines,
        mb(baseline.bytes),
        files.len(),
        opts.repeat.max(1)
    );
    baseline.print("raw-scan");
    run.print("lockgate");
    checkpointed.print("lockgate+cp");
    println!(
        "lockgate / raw-scan throughput: {:.1}%",
        100.0 * baseline.elapsed.as_secs_f64() / run.elapsed.as_secs_f64()
    );
    let cost = |a: Duration, b: Duration| 100.0 * (1.0 - a.as_secs_f64() / b.as_secs_f64());
    println!(
        "checkpoint every batch (plan, state, commit; durable) costs {:.1}% throughput \
         ({:.1}% of wall time including start-up, recovery and the final flush)",
        cost(run.steady, checkpointed.steady),
        cost(run.elapsed, checkpointed.elapsed)
    );
    Ok(())
}

/// Options of `bench recovery`.
#[derive(Args)]
pub struct RecoveryOpts {
    /// Distinct words held in the word-count state.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Worker threads and state partitions (default: number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
}

/// Word count holding `--keys` keys: checkpoint it, then time the recovery of a new
/// context from that checkpoint (reading and decoding the state snapshot files and
/// rebuilding the hash maps), against the time the first run took to build the state.
pub fn recovery(opts: &RecoveryOpts) -> Result<()> {
    use lockgate_core::testing::ManualRun;
    use lockgate_core::{ManualClock, StreamingContext};
    use std::sync::Arc;

    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -- bench recovery`");
    }
    let dir = std::env::temp_dir().join(format!("lockgate-bench-recovery-{}", std::process::id()));
    let words: Vec<String> = (0..opts.keys).map(|i| format!("word{i:08}")).collect();
    let build = |clock: Arc<ManualClock>| {
        StreamingContext::get_or_create(&dir, |b| {
            let mut b = b.app_name("bench-recovery").clock(clock);
            if let Some(p) = opts.parallelism {
                b = b.parallelism(p);
            }
            let ctx = b.build()?;
            ctx.seq_stream(vec![words.clone()])
                .map(|w| (w, 1i64))
                .update_state_by_key(|v: &[i64], s: Option<i64>| {
                    Some(s.unwrap_or(0) + v.len() as i64)
                })
                .name("word_counts_state")
                .foreach_batch(|_, _| ());
            Ok(ctx)
        })
    };
    let clock = Arc::new(ManualClock::new(0));
    let first_start = Instant::now();
    let run = ManualRun {
        ctx: build(clock.clone())?,
        clock,
    };
    run.ctx.start()?;
    run.next_batch()?;
    run.ctx.stop(false)?;
    let first = first_start.elapsed();
    let bytes: u64 = walk_size(&dir.join("state"));

    let started = Instant::now();
    let ctx = build(Arc::new(ManualClock::new(1000)))?;
    let recovery = started.elapsed();
    let held: usize = ctx.state_sizes().iter().flat_map(|(_, p)| p.iter()).sum();
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        held as u64 >= opts.keys,
        "recovered {held} keys, expected {}",
        opts.keys
    );
    println!(
        "recovery: {} keys ({:.1} MB of state files): first run (build state + checkpoint) {:.3} s, \
         recovery (read + decode + rebuild) {:.3} s",
        opts.keys,
        mb(bytes),
        first.as_secs_f64(),
        recovery.as_secs_f64()
    );
    Ok(())
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
