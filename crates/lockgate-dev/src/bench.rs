//! `lockgate-dev bench log-errors|word-count`: a built-in job over generated files (`--once`,
//! one file per batch) and, in the same run, a raw-scan baseline over the same files;
//! `bench recovery`: the recovery time of a large state.

use lockgate_core::sync::lock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rayon::prelude::*;

use lockgate_jobs::sample::generate_logs;
use lockgate_jobs::{self as jobs, Input, Job, JobConfig};
use lockgate_object_store::testing::ToolStore;
use rustc_hash::FxHashMap;

/// Options of `bench log-errors` and `bench word-count`.
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
    /// log-errors: count per event-time window (`run log-errors --event-time`).
    #[arg(long)]
    event_time: bool,
    /// Internal: run the engine once in this process and print its figures as JSON
    /// (each engine run of the benchmark is a fresh child process, so its peak RSS is
    /// its own and no run inherits another's allocator state).
    #[arg(long, hide = true)]
    child_run: bool,
    /// Also run the engine with its checkpoint on an object store under URL (a fresh
    /// prefix per run), beside the local directory: `s3://...` without
    /// --checkpoint-option endpoint=... uses a throwaway local S3 server (moto, started by
    /// scripts/s3.sh). Prints the requests per batch.
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// A store setting for --checkpoint-url (as `lockgate run --checkpoint-option`).
    #[arg(long, value_name = "KEY=VALUE")]
    checkpoint_option: Vec<String>,
    /// Internal: the checkpoint (a directory or URL) of a `--child-run`.
    #[arg(long, hide = true)]
    child_checkpoint: Option<String>,
    /// Internal: the `--child-run` runs the job written as SQL (`bench sql`).
    #[arg(long, hide = true)]
    child_sql: bool,
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
    /// What the run is checked by: ERROR lines (raw scan, log-errors) or words (word
    /// count's final counts added up).
    check: u64,
    bytes: u64,
    elapsed: Duration,
    /// From the first batch's start to the last batch's end (no start-up, recovery or
    /// final flush).
    steady: Duration,
    peak_rss: Option<u64>,
    /// Exclusive time per operator (µs, summed over the retained batches).
    operators: Vec<(String, u64)>,
    /// Requests to the checkpoint's store: PUT, GET, LIST, DELETE.
    requests: Option<[u64; 4]>,
    /// Batches run.
    batches: u64,
}

impl Figures {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lines": self.lines,
            "check": self.check,
            "bytes": self.bytes,
            "elapsed_us": self.elapsed.as_micros() as u64,
            "steady_us": self.steady.as_micros() as u64,
            "peak_rss": self.peak_rss,
            "operators": self.operators,
            "requests": self.requests,
            "batches": self.batches,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<Figures> {
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Some(Figures {
            lines: n("lines")?,
            check: n("check")?,
            bytes: n("bytes")?,
            elapsed: Duration::from_micros(n("elapsed_us")?),
            steady: Duration::from_micros(n("steady_us")?),
            peak_rss: n("peak_rss"),
            operators: serde_json::from_value(v.get("operators")?.clone()).ok()?,
            requests: v
                .get("requests")
                .and_then(|r| serde_json::from_value(r.clone()).ok()),
            batches: n("batches").unwrap_or(0),
        })
    }

    /// Prints the figures; `what` names the check figure (errors, words).
    fn print(&self, name: &str, what: &str) {
        let s = self.elapsed.as_secs_f64();
        println!(
            "{name:<11} {:>10} lines {:>9} {what:<6} {:>8.3} s {:>12.0} lines/s {:>8.1} MB/s  peak RSS {}",
            self.lines,
            self.check,
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
        .join(format!("logs-v2-{}-{}", opts.lines, opts.files));
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
/// The object store of `--checkpoint-url` (a throwaway S3 server unless an endpoint is
/// given), if one was asked for.
fn tool_store(url: Option<&str>, options: &[String]) -> Result<Option<ToolStore>> {
    url.map(|u| ToolStore::new(u, options))
        .transpose()
        .map_err(anyhow::Error::msg)
}

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
        check: counts.iter().map(|c| c.1).sum(),
        bytes: counts.iter().map(|c| c.2).sum(),
        elapsed,
        peak_rss: peak_rss(),
        operators: Vec::new(),
        requests: None,
        batches: 0,
    })
}

/// What the engine's output says, to check it against the baseline; one of the three
/// is filled, depending on the job.
#[derive(Default)]
struct Check {
    /// Processing-time log-errors: ERROR lines per batch, added up.
    errors: AtomicI64,
    /// Event-time log-errors: the last count of each tumbling window.
    by_window: Mutex<BTreeMap<i64, i64>>,
    /// Word count: the last count of each word.
    /// One map per output partition (a word always comes in the same partition), so
    /// that the check is kept in parallel, as a sink would write.
    words: [Mutex<FxHashMap<lockgate_core::CompactString, i64>>; 32],
}

impl Check {
    /// The total the job's output adds up to.
    fn total(&self) -> u64 {
        let sum = self.errors.load(Ordering::Relaxed)
            + lock(&self.by_window).values().sum::<i64>()
            + self
                .words
                .iter()
                .map(|m| lock(m).values().sum::<i64>())
                .sum::<i64>();
        u64::try_from(sum).unwrap_or(0)
    }
}

/// One engine run in a fresh process (this binary with `--child-run`).
fn engine_in_child(job: Job, opts: &BenchOpts, checkpoint: Option<&Path>) -> Result<Figures> {
    engine_in_child_as(job, opts, checkpoint.map(Place::Dir), false)
}

/// Where a benchmark run checkpoints.
enum Place<'a> {
    Dir(&'a Path),
    Store(&'a ToolStore, String),
}

/// [`engine_in_child`], the job as SQL when `sql`.
fn engine_in_child_as(
    job: Job,
    opts: &BenchOpts,
    checkpoint: Option<Place<'_>>,
    sql: bool,
) -> Result<Figures> {
    if let Some(Place::Dir(cp)) = checkpoint {
        if cp.exists() {
            std::fs::remove_dir_all(cp).with_context(|| format!("clearing {}", cp.display()))?;
        }
    }
    // Start from a clean filesystem: dirty pages left by earlier work (a build, an
    // earlier run's checkpoint) would otherwise be flushed by this run's syncs.
    lockgate_core::storage::file::sync_filesystem(&opts.data)?;
    let exe = std::env::current_exe().context("finding this program to run the engine")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", job.name(), "--child-run", "--lines"])
        .arg(opts.lines.to_string())
        .arg("--files")
        .arg(opts.files.to_string())
        .arg("--data")
        .arg(&opts.data);
    if let Some(p) = opts.parallelism {
        cmd.arg("--parallelism").arg(p.to_string());
    }
    if opts.event_time {
        cmd.arg("--event-time");
    }
    match &checkpoint {
        Some(Place::Dir(cp)) => {
            cmd.arg("--child-checkpoint").arg(cp);
        }
        Some(Place::Store(store, url)) => {
            cmd.arg("--child-checkpoint").arg(url);
            store.apply(&mut cmd);
        }
        None => {}
    }
    if sql {
        cmd.arg("--child-sql");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the engine's benchmark process")?;
    if !out.status.success() {
        bail!("the engine's benchmark process failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str(l)
                .ok()
                .as_ref()
                .and_then(Figures::from_json)
        })
        .with_context(|| format!("the engine's benchmark process printed no figures: {text}"))
}

/// One engine run in this process: the CLI's job as a bounded run, one file per batch.
fn engine(job: Job, dir: &Path, opts: &BenchOpts, checkpoint: Option<&str>) -> Result<Figures> {
    let bytes = log_files(dir)?
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
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
        checkpoint: None,
        standby: false,
        state_upgrade: Default::default(),
        before_recovery: None,
        block_interval: Duration::from_millis(200),
        sink: None,
        kafka_sink_properties: Vec::new(),
        from_sink_offsets: false,
        backpressure: false,
        delivery: Default::default(),
        event_time: opts.event_time,
        file_min_age: Duration::ZERO,
        source_retry_timeout: Duration::from_secs(120),
        sink_retry_timeout: Duration::from_secs(120),
        task: None,
        worker_pool: None,
    };
    cfg.validate(job)?;
    let mut builder = cfg.configure(
        &format!("bench-{}", job.name()),
        lockgate_core::StreamingContext::builder(),
    );
    if let Some(cp) = checkpoint {
        let mut options = lockgate_object_store::Options::default();
        for s in &opts.checkpoint_option {
            options.parse_setting(s)?;
        }
        builder = builder.checkpoint_location(lockgate_object_store::open(cp, &options)?);
    }
    let ctx = builder.build()?;
    let check = Arc::new(Check::default());
    let c = check.clone();
    if opts.child_sql {
        sql_job(job, &cfg, &ctx, check.clone())?;
    } else {
        match job {
            Job::LogErrors => {
                let streams = jobs::log_errors(&cfg, &ctx, None)?;
                match streams.errors {
                    // Processing time: the error count per batch.
                    Some(errors) => errors.count().foreach_batch(move |b, _| {
                        c.errors.fetch_add(b.iter().sum::<i64>(), Ordering::Relaxed);
                    }),
                    // Event time (update mode): the last count of each tumbling window.
                    None => streams.rows.foreach_batch(move |b, _| {
                        let mut m = lock(&c.by_window);
                        for (stream, start, _, count) in b.iter() {
                            if *stream == jobs::EVENT_WINDOWS[0].0 {
                                m.insert(*start, *count);
                            }
                        }
                    }),
                }
            }
            Job::WordCount => jobs::word_count(&cfg, &ctx, None)?.foreach_batch(move |b, _| {
                b.partitions().par_iter().enumerate().for_each(|(i, part)| {
                    let mut m = lock(&c.words[i % c.words.len()]);
                    for (w, n) in part.iter() {
                        m.insert(w.clone(), *n);
                    }
                });
            }),
        }
    }
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
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    for b in &m.completed {
        for o in &b.operators {
            *ops.entry(o.name.clone()).or_insert(0) += o.time_us;
        }
    }
    let requests = ctx.checkpoint_storage().and_then(|s| {
        s.local_dir().is_none().then(|| {
            let st = s.stats();
            [st.puts, st.gets, st.lists, st.deletes]
        })
    });
    Ok(Figures {
        lines: m.total_records,
        check: check.total(),
        bytes,
        elapsed,
        steady,
        peak_rss: peak_rss(),
        operators: ops.into_iter().collect(),
        requests,
        batches: m.total_completed,
    })
}

/// The job written as SQL (`lockgate_jobs::sql`), its final rows checked as the
/// built-in job's are: word count's counts, and log-errors' tumbling windows (both
/// windows' queries run, on one input stream, as the built-in job computes both).
fn sql_job(
    job: Job,
    cfg: &JobConfig,
    ctx: &lockgate_core::StreamingContext,
    check: Arc<Check>,
) -> Result<()> {
    use lockgate_jobs::sql::{log_errors_sql, SqlJob, LOG_ERRORS_WATERMARK, WORD_COUNT_SQL};
    use lockgate_sql::datafusion::scalar::ScalarValue;
    let (col, delay) = LOG_ERRORS_WATERMARK
        .split_once(' ')
        .context("the watermark's form")?;
    let delay = lockgate_core::parse_duration(delay).map_err(anyhow::Error::msg)?;
    let mut job_sql = SqlJob {
        query: WORD_COUNT_SQL.to_string(),
        name: "words".into(),
        decoder: None,
        watermark: None,
        mode: lockgate_core::OutputMode::Update,
        tables: Vec::new(),
        dialect: lockgate_sql::Dialect::Spark,
    };
    let int = |v: &ScalarValue| match v {
        ScalarValue::Int64(Some(n)) => *n,
        _ => 0,
    };
    match job {
        Job::WordCount => {
            let q = cfg
                .sql_context(ctx, &job_sql, &[])?
                .sql_named(WORD_COUNT_SQL, "words")?;
            q.rows().foreach_batch(move |b, _| {
                b.partitions().par_iter().enumerate().for_each(|(i, part)| {
                    let mut m = lock(&check.words[i % check.words.len()]);
                    for r in part.iter() {
                        if let ScalarValue::Utf8(Some(w)) = r.value(0) {
                            m.insert(w.as_str().into(), int(&r.value(1)));
                        }
                    }
                });
            });
        }
        Job::LogErrors => {
            job_sql.watermark = Some((col.to_string(), delay));
            let sql = cfg.sql_context(ctx, &job_sql, &[])?;
            let tumbling = sql.sql_named(&log_errors_sql("30 seconds", None), "tumbling")?;
            let sliding =
                sql.sql_named(&log_errors_sql("30 seconds", Some("10 seconds")), "sliding")?;
            tumbling.rows().foreach_batch(move |b, _| {
                let mut m = lock(&check.by_window);
                for r in b.iter() {
                    m.insert(int(&r.value(0)), int(&r.value(2)));
                }
            });
            sliding.rows().foreach_batch(|_, _| {});
        }
    }
    Ok(())
}

/// Words (split on single spaces, empty strings not counted) in all files: what the
/// word count's final counts must add up to.
fn count_words(files: &[PathBuf]) -> Result<u64> {
    files
        .par_iter()
        .map(|f| {
            let text = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            Ok(text
                .split(|&b| b == b'\n' || b == b' ')
                .filter(|w| !w.is_empty() && *w != b"\r")
                .count() as u64)
        })
        .sum()
}

/// Runs the benchmark of `job` and prints its figures.
pub fn run(job: Job, opts: &BenchOpts) -> Result<()> {
    let what = match (job, opts.event_time) {
        (Job::LogErrors, true) => "log-errors --event-time",
        (Job::LogErrors, false) => "log-errors",
        (Job::WordCount, _) => "word-count",
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -p lockgate-dev -- bench {what}`");
    }
    let dir = data_dir(opts)?;
    if opts.child_run {
        let figures = engine(job, &dir, opts, opts.child_checkpoint.as_deref())?;
        println!("{}", figures.to_json());
        return Ok(());
    }
    let files = log_files(&dir)?;
    let cores = opts
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Warm the page cache so neither side pays for the disk.
    raw_scan(&files, cores)?;
    // Short runs are noisy and this machine's speed drifts: the baseline and the two
    // engine variants take turns, and each keeps the median of its runs.
    let cp_dir = opts.data.join(format!("checkpoint-{}", std::process::id()));
    let store = tool_store(opts.checkpoint_url.as_deref(), &opts.checkpoint_option)?;
    let (mut raw, mut plain, mut with_cp) = (Vec::new(), Vec::new(), Vec::new());
    let mut on_store = Vec::new();
    for i in 0..opts.repeat.max(1) {
        raw.push(raw_scan(&files, cores)?);
        plain.push(engine_in_child(job, opts, None)?);
        with_cp.push(engine_in_child(job, opts, Some(&cp_dir))?);
        if let Some(store) = &store {
            let url = format!("{}/bench-{}-{i}", store.url, std::process::id());
            on_store.push(engine_in_child_as(
                job,
                opts,
                Some(Place::Store(store, url)),
                false,
            )?);
        }
    }
    let baseline = median(raw);
    // What the engine's check figure must equal.
    let expected = match job {
        Job::LogErrors => baseline.check,
        Job::WordCount => count_words(&files)?,
    };
    let _ = std::fs::remove_dir_all(&cp_dir);
    let run = median(plain);
    let checkpointed = median(with_cp);
    let stored = (!on_store.is_empty()).then(|| median(on_store));
    for r in [&run, &checkpointed].into_iter().chain(stored.as_ref()) {
        if r.lines != baseline.lines || r.check != expected {
            bail!(
                "engine and baseline disagree: engine {} lines / check {}, baseline {} lines / \
                 expected {}",
                r.lines,
                r.check,
                baseline.lines,
                expected
            );
        }
    }
    println!(
        "{what}: {} lines ({:.1} MB) in {} files, one file per batch, {cores} workers, \
         median of {} runs",
        baseline.lines,
        mb(baseline.bytes),
        files.len(),
        opts.repeat.max(1)
    );
    let check = match job {
        Job::LogErrors => "errors",
        Job::WordCount => "words",
    };
    baseline.print("raw-scan", "errors");
    run.print("lockgate", check);
    checkpointed.print("lockgate+cp", check);
    if let Some(st) = &stored {
        st.print("lockgate+s3", check);
    }
    let total: u64 = run.operators.iter().map(|o| o.1).sum::<u64>().max(1);
    let mut ops = run.operators.clone();
    ops.sort_by_key(|o| std::cmp::Reverse(o.1));
    println!(
        "operator time (exclusive, all workers): {}",
        ops.iter()
            .take(6)
            .map(|(n, us)| format!("{n} {:.0}%", 100.0 * *us as f64 / total as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ratio = |r: &Figures| 100.0 * baseline.elapsed.as_secs_f64() / r.elapsed.as_secs_f64();
    println!(
        "lockgate / raw-scan throughput: {:.1}% (with checkpoint {:.1}%)",
        ratio(&run),
        ratio(&checkpointed)
    );
    if let (Some(st), Some(store)) = (&stored, &store) {
        let per = |n: u64| n as f64 / st.batches.max(1) as f64;
        let [puts, gets, lists, deletes] = st.requests.unwrap_or_default();
        println!(
            "checkpoint on {} (object store): {:.1}% of the local directory's throughput \
             ({:.1}% in steady state); requests per batch: {:.1} PUT, {:.1} GET, {:.1} LIST, \
             {:.1} DELETE ({} batches)",
            store.url,
            100.0 * checkpointed.elapsed.as_secs_f64() / st.elapsed.as_secs_f64(),
            100.0 * checkpointed.steady.as_secs_f64() / st.steady.as_secs_f64(),
            per(puts),
            per(gets),
            per(lists),
            per(deletes),
            st.batches
        );
    }
    let cost = |a: Duration, b: Duration| 100.0 * (1.0 - a.as_secs_f64() / b.as_secs_f64());
    println!(
        "checkpoint every batch (plan, state, commit; durable) costs {:.1}% throughput \
         ({:.1}% of wall time including start-up, recovery and the final flush)",
        cost(run.steady, checkpointed.steady),
        cost(run.elapsed, checkpointed.elapsed)
    );
    Ok(())
}

/// `bench sql`: the built-in jobs and the same jobs written as SQL, interleaved, each
/// run a fresh child process; both checked against the files' counts.
pub fn sql(opts: &BenchOpts) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -p lockgate-dev -- bench sql`");
    }
    let dir = data_dir(opts)?;
    let files = log_files(&dir)?;
    let cores = opts
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let baseline = raw_scan(&files, cores)?;
    let words = count_words(&files)?;
    println!(
        "sql vs built-in: {} lines ({:.1} MB) in {} files, one file per batch, {cores} workers, \
         median of {} runs",
        baseline.lines,
        mb(baseline.bytes),
        files.len(),
        opts.repeat.max(1)
    );
    for (job, name, check, expected) in [
        (Job::WordCount, "word-count", "words", words),
        (
            Job::LogErrors,
            "log-errors --event-time",
            "errors",
            baseline.check,
        ),
    ] {
        let opts = BenchOpts {
            event_time: job == Job::LogErrors,
            data: opts.data.clone(),
            child_checkpoint: None,
            checkpoint_url: None,
            checkpoint_option: Vec::new(),
            ..*opts
        };
        let (mut builtin, mut sql) = (Vec::new(), Vec::new());
        for _ in 0..opts.repeat.max(1) {
            builtin.push(engine_in_child_as(job, &opts, None, false)?);
            sql.push(engine_in_child_as(job, &opts, None, true)?);
        }
        let (builtin, sql) = (median(builtin), median(sql));
        for r in [&builtin, &sql] {
            if r.lines != baseline.lines || r.check != expected {
                bail!(
                    "{name}: {} lines / {} {check}, expected {} / {expected}",
                    r.lines,
                    r.check,
                    baseline.lines
                );
            }
        }
        println!("{name}:");
        builtin.print("built-in", check);
        sql.print("sql", check);
        let total: u64 = sql.operators.iter().map(|o| o.1).sum::<u64>().max(1);
        let mut ops = sql.operators.clone();
        ops.sort_by_key(|o| std::cmp::Reverse(o.1));
        println!(
            "  sql operator time: {}",
            ops.iter()
                .take(5)
                .map(|(n, us)| format!("{n} {:.0}%", 100.0 * *us as f64 / total as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  sql / built-in throughput: {:.1}%",
            100.0 * builtin.elapsed.as_secs_f64() / sql.elapsed.as_secs_f64()
        );
    }
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
    /// Checkpoint on an object store under URL instead of a local directory (`s3://...`
    /// without --checkpoint-option endpoint=... uses a throwaway local S3 server).
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// A store setting for --checkpoint-url.
    #[arg(long, value_name = "KEY=VALUE")]
    checkpoint_option: Vec<String>,
}

/// Word count holding `--keys` keys: checkpoint it, then time the recovery of a new
/// context from that checkpoint (reading and decoding the state snapshot files and
/// rebuilding the hash maps), against the time the first run took to build the state.
pub fn recovery(opts: &RecoveryOpts) -> Result<()> {
    use lockgate_core::testing::ManualRun;
    use lockgate_core::{ManualClock, StreamingContext};
    use std::sync::Arc;

    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -p lockgate-dev -- bench recovery`");
    }
    let dir = std::env::temp_dir().join(format!("lockgate-bench-recovery-{}", std::process::id()));
    let store = tool_store(opts.checkpoint_url.as_deref(), &opts.checkpoint_option)?;
    let location = match &store {
        Some(store) => {
            let options = store.options()?;
            let url = format!("{}/bench-recovery-{}", store.url, std::process::id());
            lockgate_object_store::open(&url, &options)?
        }
        None => lockgate_core::storage::CheckpointLocation::dir(&dir),
    };
    let words: Vec<String> = (0..opts.keys).map(|i| format!("word{i:08}")).collect();
    let build = |clock: Arc<ManualClock>| {
        StreamingContext::get_or_create(location.clone(), |b| {
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
    let state = lockgate_core::checkpoint::store::StateStore::new(location.0.clone());
    let mut bytes = 0;
    for (op, parts) in state.operators()? {
        for p in 0..parts {
            bytes += state.files(&op, p)?.iter().map(|f| f.bytes).sum::<u64>();
        }
    }

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
        "recovery: {} keys ({:.1} MB of state files) in {}: first run (build state + \
         checkpoint) {:.3} s, recovery (read + decode + rebuild) {:.3} s",
        opts.keys,
        mb(bytes),
        location.0.location(),
        first.as_secs_f64(),
        recovery.as_secs_f64()
    );
    Ok(())
}

/// Options of `bench nexmark`.
#[derive(Args)]
pub struct NexmarkOpts {
    /// The query: q0 to q8, or q12.
    #[arg(long, default_value = "q0")]
    query: String,
    /// Events to generate and process.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 200_000)]
    events_per_batch: u64,
    /// Worker threads (default: number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Checkpoint every batch into a temporary directory.
    #[arg(long)]
    checkpoint: bool,
}

/// Flink's published Nexmark throughput per core (events/s), where there is one.
fn flink_per_core(query: &str) -> Option<f64> {
    match query {
        "q0" => Some(155_000.0),
        "q5" => Some(22_000.0),
        "q7" => Some(12_000.0),
        _ => None,
    }
}

/// `bench nexmark`: a query over generated Nexmark events (a bounded run), against the
/// generator alone over the same events on the same threads.
pub fn nexmark(opts: &NexmarkOpts) -> Result<()> {
    use lockgate_nexmark::{events, nexmark_stream, query_by_name, EVENTS_PER_SECOND, QUERIES};
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -p lockgate-dev -- bench nexmark`");
    }
    if !QUERIES.contains(&opts.query.as_str()) {
        bail!(
            "--query {}: unknown query; one of {}",
            opts.query,
            QUERIES.join(", ")
        );
    }
    let cores = opts
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per_batch = opts.events_per_batch.max(1);
    // Baseline: generate the same events on as many threads, no engine.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .context("starting the baseline's threads")?;
    let mut gen_times = Vec::new();
    for _ in 0..opts.repeat.max(1) {
        let start = Instant::now();
        let n: usize = pool.install(|| {
            (0..opts.events.div_ceil(per_batch))
                .flat_map(|b| {
                    let from = b * per_batch;
                    let until = (from + per_batch).min(opts.events);
                    let step = (until - from).div_ceil(cores as u64).max(1);
                    (from..until)
                        .step_by(usize::try_from(step).unwrap_or(usize::MAX))
                        .map(move |s| (s, (s + step).min(until)))
                })
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|(a, b)| events(a..b, EVENTS_PER_SECOND).len())
                .sum()
        });
        anyhow::ensure!(n as u64 == opts.events, "generator made {n} events");
        gen_times.push(start.elapsed());
    }
    gen_times.sort();
    let generate = gen_times[gen_times.len() / 2];
    let cp_dir = std::env::temp_dir().join(format!("lockgate-nexmark-{}", std::process::id()));
    let mut runs = Vec::new();
    let mut rows = 0i64;
    for _ in 0..opts.repeat.max(1) {
        let _ = std::fs::remove_dir_all(&cp_dir);
        reset_peak_rss();
        let mut b = lockgate_core::StreamingContext::builder()
            .app_name(&format!("nexmark-{}", opts.query))
            .parallelism(cores)
            .trigger(lockgate_core::Trigger::AvailableNow)
            .start_time(lockgate_core::Time(0));
        if opts.checkpoint {
            b = b.checkpoint_dir(&cp_dir);
        }
        let ctx = b.build()?;
        let source = nexmark_stream(&ctx, opts.events, per_batch, EVENTS_PER_SECOND);
        let counted = Arc::new(AtomicI64::new(0));
        let c = counted.clone();
        query_by_name(&opts.query, &source)
            .context("unknown query")?
            .foreach_batch(move |b, _| {
                c.fetch_add(b.iter().sum::<i64>(), Ordering::Relaxed);
            });
        let start = Instant::now();
        ctx.start()?;
        ctx.await_termination()?;
        runs.push((start.elapsed(), peak_rss()));
        rows = counted.load(Ordering::Relaxed);
        anyhow::ensure!(
            ctx.metrics().snapshot().total_records == opts.events,
            "the engine read {} events, expected {}",
            ctx.metrics().snapshot().total_records,
            opts.events
        );
    }
    let _ = std::fs::remove_dir_all(&cp_dir);
    runs.sort_by_key(|r| r.0);
    let (elapsed, rss) = runs[runs.len() / 2];
    let rate = opts.events as f64 / elapsed.as_secs_f64();
    let gen_rate = opts.events as f64 / generate.as_secs_f64();
    println!(
        "nexmark {}: {} events, {} per batch, {cores} workers{}, median of {} runs",
        opts.query,
        opts.events,
        per_batch,
        if opts.checkpoint {
            ", checkpoint every batch"
        } else {
            ""
        },
        opts.repeat.max(1)
    );
    println!(
        "generator  {:>8.3} s {:>12.0} events/s {:>10.0} events/s per core",
        generate.as_secs_f64(),
        gen_rate,
        gen_rate / cores as f64
    );
    println!(
        "lockgate   {:>8.3} s {:>12.0} events/s {:>10.0} events/s per core  {rows} rows out, peak RSS {}",
        elapsed.as_secs_f64(),
        rate,
        rate / cores as f64,
        rss.map_or_else(|| "n/a".to_string(), |b| format!("{:.1} MB", mb(b)))
    );
    println!(
        "lockgate / generator alone: {:.1}%",
        100.0 * rate / gen_rate
    );
    if let Some(flink) = flink_per_core(&opts.query) {
        println!(
            "per core vs Flink's published {flink:.0} events/s: {:.1}x",
            rate / cores as f64 / flink
        );
    }
    Ok(())
}
