//! A test harness in the manner of Spark's `TestSuiteBase`: give the input of each
//! batch, an operation building the streams, and get the output of each batch, computed
//! by the real scheduler on a [`ManualClock`] (no sleeps).
//!
//! ```
//! use lockgate_core::testing::run_streams;
//!
//! let out = run_streams(vec![vec![1, 2], vec![3]], 2, |s| s.map(|x| x * 10), 3).unwrap();
//! assert_eq!(out, vec![vec![10, 20], vec![30], vec![]]);
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::batch::Data;
use crate::clock::{duration_ms, Clock, ManualClock, Time};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{Error, Result};
use crate::source::queue::InputQueue;
use crate::types::lock;

/// The batch interval the harness uses.
pub const TEST_BATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the harness waits for one batch before reporting a hang.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A context on a manual clock at 0, plus what drives it batch by batch.
pub struct ManualRun {
    /// The context under test.
    pub ctx: StreamingContext,
    /// Its clock.
    pub clock: Arc<ManualClock>,
}

impl ManualRun {
    /// A context with the test batch interval and `parallelism` workers/partitions.
    pub fn new(parallelism: usize) -> Result<Self> {
        Self::with_interval(parallelism, TEST_BATCH_INTERVAL)
    }

    /// A context with a given batch interval.
    pub fn with_interval(parallelism: usize, interval: Duration) -> Result<Self> {
        let clock = Arc::new(ManualClock::new(0));
        let ctx = StreamingContext::builder()
            .app_name("test")
            .batch_interval(interval)
            .parallelism(parallelism)
            .clock(clock.clone())
            .build()?;
        Ok(ManualRun { ctx, clock })
    }

    /// Advances the clock one batch interval and waits until that batch completed.
    pub fn next_batch(&self) -> Result<Time> {
        let interval = self.ctx.batch_interval();
        self.clock.advance(interval);
        let t = self.clock.now();
        if !self.ctx.metrics().wait_for_batch(t, BATCH_TIMEOUT) {
            return Err(
                match self.ctx.await_termination_or_timeout(Duration::ZERO) {
                    Err(e) => e,
                    Ok(_) => Error::Lifecycle(format!(
                        "batch at {t} did not complete within {BATCH_TIMEOUT:?}"
                    )),
                },
            );
        }
        // A failed batch completes too: surface its error.
        if let Some(info) = self.ctx.metrics().completed_batches().last() {
            if info.failure.is_some() {
                self.ctx.await_termination()?;
            }
        }
        Ok(t)
    }

    /// Runs `n` batches.
    pub fn run_batches(&self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.next_batch()?;
        }
        Ok(())
    }
}

/// Collects the output of every batch of `stream`, indexed by batch id.
pub fn collect_output<U: Data>(stream: &DStream<U>) -> Arc<Mutex<Vec<Vec<U>>>> {
    let out: Arc<Mutex<Vec<Vec<U>>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    stream.foreach_batch(move |batch, b| {
        let mut o = lock(&sink);
        let idx = usize::try_from(b.id).unwrap_or(usize::MAX);
        if o.len() <= idx {
            o.resize_with(idx + 1, Vec::new);
        }
        o[idx] = batch.collect();
    });
    out
}

/// Runs `op` over a queue stream fed with `input` (one batch per element; empty batches
/// after it) for `num_batches` batches with `partitions` partitions, and returns the
/// output of each batch.
pub fn run_streams<T: Data, U: Data>(
    input: Vec<Vec<T>>,
    partitions: usize,
    op: impl FnOnce(DStream<T>) -> DStream<U>,
    num_batches: usize,
) -> Result<Vec<Vec<U>>> {
    let run = ManualRun::new(partitions)?;
    let s = run
        .ctx
        .queue_stream(InputQueue::from_batches(input), true, None);
    let out = collect_output(&op(s));
    finish(run, out, num_batches)
}

/// Like [`run_streams`] with two input streams.
pub fn run_streams2<T: Data, W: Data, U: Data>(
    input1: Vec<Vec<T>>,
    input2: Vec<Vec<W>>,
    partitions: usize,
    op: impl FnOnce(DStream<T>, DStream<W>) -> DStream<U>,
    num_batches: usize,
) -> Result<Vec<Vec<U>>> {
    let run = ManualRun::new(partitions)?;
    let a = run
        .ctx
        .queue_stream(InputQueue::from_batches(input1), true, None);
    let b = run
        .ctx
        .queue_stream(InputQueue::from_batches(input2), true, None);
    let out = collect_output(&op(a, b));
    finish(run, out, num_batches)
}

fn finish<U: Data>(
    run: ManualRun,
    out: Arc<Mutex<Vec<Vec<U>>>>,
    num_batches: usize,
) -> Result<Vec<Vec<U>>> {
    run.ctx.start()?;
    let result = run.run_batches(num_batches);
    run.ctx.stop(false)?;
    result?;
    let mut o = std::mem::take(&mut *lock(&out));
    // Streams with a slide longer than the interval have no output at some batches.
    let slots = num_batches.max(o.len());
    o.resize_with(slots, Vec::new);
    Ok(o)
}

/// Sorts each batch's output (for operations whose order within a batch depends on
/// partitioning).
pub fn sorted<U: Ord>(mut batches: Vec<Vec<U>>) -> Vec<Vec<U>> {
    for b in &mut batches {
        b.sort();
    }
    batches
}

/// Milliseconds of `d` (helper for tests computing batch times).
pub fn ms(d: Duration) -> i64 {
    duration_ms(d)
}

/// Collects the output of every batch of `stream` by batch id; a re-run batch replaces
/// its earlier output (an idempotent sink).
pub fn collect_batches<U: Data>(stream: &DStream<U>) -> Arc<Mutex<BTreeMap<u64, Vec<U>>>> {
    let out: Arc<Mutex<BTreeMap<u64, Vec<U>>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let sink = out.clone();
    stream.foreach_batch(move |batch, b| {
        lock(&sink).insert(b.id, batch.collect());
    });
    out
}

/// A context for a bounded run (`Trigger::AvailableNow`, batch times from 0), not
/// started: build its graph, then `start` and `await_termination`.
pub fn bounded_context(parallelism: usize) -> Result<StreamingContext> {
    StreamingContext::builder()
        .app_name("test")
        .batch_interval(TEST_BATCH_INTERVAL)
        .parallelism(parallelism)
        .trigger(crate::context::Trigger::AvailableNow)
        .start_time(Time(0))
        .build()
}

/// Runs a bounded job to its end: a context with `parallelism` workers, triggered
/// [`AvailableNow`](crate::Trigger::AvailableNow) from time 0 (so batch times do not
/// depend on the clock), whose graph `build` makes; returns the output of the stream
/// `build` returns, by batch id.
pub fn run_bounded<U: Data>(
    parallelism: usize,
    build: impl FnOnce(&StreamingContext) -> DStream<U>,
) -> Result<BTreeMap<u64, Vec<U>>> {
    let ctx = bounded_context(parallelism)?;
    let out = collect_batches(&build(&ctx));
    ctx.start()?;
    ctx.await_termination()?;
    let batches = std::mem::take(&mut *lock(&out));
    Ok(batches)
}

/// How [`run_with_restart`] interrupts the first run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// The process stops right after a batch committed.
    AfterCommit,
    /// The process dies after a batch's outputs but before its commit (the commit file
    /// is removed): recovery must re-run that batch from its logged plan.
    BeforeCommit,
}

/// Runs `op` over a replayable [`seq_stream`](StreamingContext::seq_stream) of `input`
/// for `num_batches` batches with a checkpoint in `dir`, interrupting the run after
/// `first_batches` batches and recovering a new context (built again by `op`) from the
/// checkpoint for the rest. Returns the merged output per batch id. Compare it with an
/// uninterrupted run.
pub fn run_with_restart<T: Data, U: Data>(
    input: Vec<Vec<T>>,
    partitions: usize,
    op: impl Fn(DStream<T>) -> DStream<U>,
    num_batches: usize,
    first_batches: usize,
    interruption: Interruption,
    dir: &Path,
) -> Result<BTreeMap<u64, Vec<U>>> {
    let interval = TEST_BATCH_INTERVAL;
    type Collected<U> = Arc<Mutex<BTreeMap<u64, Vec<U>>>>;
    let build = |clock: Arc<ManualClock>| -> Result<(StreamingContext, Collected<U>)> {
        let mut out = None;
        let ctx = StreamingContext::get_or_create(dir, |b| {
            let ctx = b
                .app_name("test")
                .batch_interval(interval)
                .parallelism(partitions)
                .clock(clock)
                .build()?;
            out = Some(collect_batches(&op(ctx.seq_stream(input.clone()))));
            Ok(ctx)
        })?;
        let out = out.ok_or_else(|| Error::Lifecycle("build did not run".into()))?;
        Ok((ctx, out))
    };
    let clock = Arc::new(ManualClock::new(0));
    let (ctx, first) = build(clock.clone())?;
    let run = ManualRun { ctx, clock };
    run.ctx.start()?;
    let r = run.run_batches(first_batches);
    run.ctx.stop(false)?;
    r?;
    let mut merged = std::mem::take(&mut *lock(&first));
    if interruption == Interruption::BeforeCommit && first_batches > 0 {
        let last = (first_batches - 1) as u64;
        let commit = dir.join("commits").join(last.to_string());
        std::fs::remove_file(&commit).map_err(|e| Error::io("remove commit", commit, e))?;
    }
    let t0 = (first_batches as u64 * ms(interval) as u64) as i64;
    let clock = Arc::new(ManualClock::new(t0));
    let (ctx, second) = build(clock.clone())?;
    let run = ManualRun { ctx, clock };
    run.ctx.start()?;
    if interruption == Interruption::BeforeCommit
        && !run.ctx.metrics().wait_for_batch(Time(t0), BATCH_TIMEOUT)
    {
        return Err(Error::Lifecycle("the re-run batch did not complete".into()));
    }
    let r = run.run_batches(num_batches.saturating_sub(first_batches));
    run.ctx.stop(false)?;
    r?;
    merged.extend(std::mem::take(&mut *lock(&second)));
    Ok(merged)
}

/// Runs `batches` batches of the job `build` makes on a context recovered from (or
/// created in) checkpoint directory `dir`, with `parallelism` workers, a commit per
/// batch (so a test can remove a given one) and a manual clock starting at `start_ms`;
/// stops it and returns the output of the stream `build` returns, by batch id. Call it
/// again on the same directory (and a later `start_ms`) to restart the job.
pub fn run_checkpointed<U: Data>(
    dir: &Path,
    parallelism: usize,
    start_ms: i64,
    batches: usize,
    build: impl FnOnce(&StreamingContext) -> Result<DStream<U>>,
) -> Result<BTreeMap<u64, Vec<U>>> {
    let clock = Arc::new(ManualClock::new(start_ms));
    let mut out = None;
    let ctx = StreamingContext::get_or_create(dir, |b| {
        let ctx = b
            .app_name("test")
            .batch_interval(TEST_BATCH_INTERVAL)
            .parallelism(parallelism)
            .clock(clock.clone())
            .checkpoint(crate::checkpoint::CheckpointConfig {
                sync_interval: Duration::ZERO,
                ..crate::checkpoint::CheckpointConfig::new(dir)
            })
            .build()?;
        out = Some(collect_batches(&build(&ctx)?));
        Ok(ctx)
    })?;
    let out = out.ok_or_else(|| Error::Lifecycle("build did not run".into()))?;
    let run = ManualRun { ctx, clock };
    run.ctx.start()?;
    let r = run.run_batches(batches);
    run.ctx.stop(false)?;
    r?;
    let batches = std::mem::take(&mut *lock(&out));
    Ok(batches)
}

/// Runs one of the repository's service scripts (`scripts/postgres.sh`,
/// `scripts/kafka.sh`: throwaway servers for tests) with `cmd`, the service's directory
/// in the environment variable `dir_var`. Returns the last line the script printed (a
/// started server's address), or what went wrong, with what it printed to stderr.
pub fn run_service_script(
    script: &Path,
    cmd: &str,
    dir_var: &str,
    dir: &Path,
) -> std::result::Result<String, String> {
    run_service_script_with(script, cmd, &[(dir_var, dir.as_os_str())])
}

/// Like [`run_service_script`], with the environment variables `env`.
pub fn run_service_script_with(
    script: &Path,
    cmd: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::result::Result<String, String> {
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(cmd)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {cmd} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string())
}
