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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::batch::Data;
use crate::clock::{duration_ms, Clock, ManualClock, Time};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{Error, Result};
use crate::graph::lock;
use crate::source::queue::InputQueue;

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
