//! The scheduler: a job generator that plans one batch per tick, and a job runner that
//! runs the planned batches one at a time, in order (Spark's default of one concurrent
//! job). When processing falls behind, planned batches queue and the scheduling delay
//! grows; every step is recorded in the [`StreamingMetrics`].
//!
//! In a bounded run ([`Trigger::AvailableNow`](crate::Trigger)) the generator does not
//! wait for the clock: batch times advance one interval per batch, and generation ends
//! once no source has anything left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::checkpoint::log::Plan;
use crate::clock::{Clock, Time};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::metrics::{BatchInfo, StreamingMetrics};
use crate::protocol::{Planned as Job, Protocol};
use crate::types::lock;

/// State shared by the generator, the runner and the context.
pub(crate) struct Scheduler {
    pub graph: Arc<Graph>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<StreamingMetrics>,
    pub pool: rayon::ThreadPool,
    pub bounded: bool,
    /// The batch protocol: the steps the threads run for every batch.
    pub protocol: Protocol,
    /// Backpressure's rate estimator, when enabled.
    pub rate: Option<Mutex<crate::rate::PidRateEstimator>>,
    /// Stop generating batches.
    pub stop: AtomicBool,
    /// Drop queued batches instead of running them.
    pub abort: AtomicBool,
    /// Batches completed after a stop was requested (a graceful stop's drain).
    pub drained: AtomicU64,
    failure: Mutex<Option<Error>>,
    done: Mutex<bool>,
    done_changed: Condvar,
}

impl Scheduler {
    pub fn new(
        graph: Arc<Graph>,
        clock: Arc<dyn Clock>,
        metrics: Arc<StreamingMetrics>,
        pool: rayon::ThreadPool,
        bounded: bool,
        protocol: Protocol,
        backpressure: bool,
    ) -> Self {
        let interval = graph.timing.interval_ms;
        Scheduler {
            rate: backpressure.then(|| Mutex::new(crate::rate::PidRateEstimator::new(interval))),
            graph,
            clock,
            metrics,
            pool,
            bounded,
            protocol,
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            drained: AtomicU64::new(0),
            failure: Mutex::new(None),
            done: Mutex::new(false),
            done_changed: Condvar::new(),
        }
    }

    /// Starts the generator and runner threads: logged `replays` run first, then new
    /// batches are planned from `first`.
    pub fn spawn(self: &Arc<Self>, first: Time, replays: Vec<Plan>) -> Result<Vec<JoinHandle<()>>> {
        // Bounded runs queue up to two groups of planned batches: the next group's plans
        // are made durable (a filesystem sync, at times slow on a busy disk) while a
        // whole group is still queued. Streaming runs queue freely.
        let capacity = if self.bounded {
            2 * self.protocol.plan_ahead()
        } else {
            1 << 20
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(capacity);
        let spawn_err = |e: std::io::Error| Error::Lifecycle(format!("cannot start thread: {e}"));
        let runner = {
            let s = self.clone();
            std::thread::Builder::new()
                .name("lockgate-job-runner".into())
                .spawn(move || s.guarded("job runner", || s.run_jobs(rx)))
                .map_err(spawn_err)?
        };
        let generator = {
            let s = self.clone();
            std::thread::Builder::new()
                .name("lockgate-job-generator".into())
                .spawn(move || s.guarded("job generator", || s.generate(first, replays, tx)))
                .map_err(spawn_err)?
        };
        Ok(vec![generator, runner])
    }

    /// Runs a scheduler thread's body; a panic in it (outside the operators and outputs,
    /// which catch their own: for example a log write to a closed stderr) stops the
    /// context with an error naming the thread, and the context is marked done in any
    /// case, so `await_termination` returns instead of waiting forever.
    fn guarded(&self, thread: &str, body: impl FnOnce()) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        if let Err(payload) = outcome {
            self.fail(Error::Lifecycle(format!(
                "the {thread} thread panicked: {}; the batches it had not finished stay \
                 logged and are re-run at the next start",
                crate::graph::panic_message(payload)
            )));
            self.mark_done();
        }
    }

    fn mark_done(&self) {
        *lock(&self.done) = true;
        self.metrics.set_terminated();
        self.done_changed.notify_all();
    }

    fn fail(&self, e: Error) {
        tracing::error!(error = %e, "stopping the streaming context");
        lock(&self.failure).get_or_insert(e);
        self.stop.store(true, Ordering::Release);
        self.abort.store(true, Ordering::Release);
        self.clock.interrupt();
    }

    /// Takes the error that stopped the context, if any.
    pub fn take_failure(&self) -> Option<Error> {
        lock(&self.failure).take()
    }

    /// Plans batch `t` (the protocol's first step) and queues it.
    fn plan(&self, t: Time) -> Result<Job> {
        Ok(self.plan_group(t, 1)?.remove(0))
    }

    /// Plans and logs up to `max` batches from `first` on (the protocol's first step)
    /// and records them as queued.
    fn plan_group(&self, first: Time, max: usize) -> Result<Vec<Job>> {
        Ok(self
            .protocol
            .plan(first, max)?
            .into_iter()
            .map(|p| self.queue(p))
            .collect())
    }

    /// Records a planned batch as queued in the metrics.
    fn queue(&self, job: Job) -> Job {
        self.metrics.batch_queued(BatchInfo {
            batch_id: job.cx.id,
            batch_time: job.cx.time,
            submission_time: self.clock.now(),
            processing_start: None,
            processing_end: None,
            inputs: job.inputs.clone(),
            output_ops: Vec::new(),
            operators: Vec::new(),
            state_entries: Vec::new(),
            rate_decision: None,
            failure: None,
        });
        job
    }

    fn generate(&self, first: Time, replays: Vec<Plan>, tx: SyncSender<Job>) {
        // Logged batches first. A graceful stop does not skip them: they were planned, so
        // they are drained like any planned batch; only an immediate stop (or a failure)
        // leaves them logged for the next start.
        for plan in replays {
            if self.abort.load(Ordering::Acquire) {
                return;
            }
            if tx.send(self.queue(self.protocol.replayed(plan))).is_err() {
                return;
            }
        }
        let interval = self.graph.timing.interval_ms;
        let mut t = first;
        let pending = || self.graph.inputs().iter().any(|i| i.has_pending());
        loop {
            if self.bounded && !pending() {
                // A bounded run ends when no source has anything left.
                return;
            }
            if !self.bounded {
                self.clock.wait_until(t, &self.stop);
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if !self.bounded && self.clock.now() < t {
                continue;
            }
            // A bounded run plans several batches at once: one sync for all their plans.
            let max = if self.bounded {
                self.protocol.plan_ahead()
            } else {
                1
            };
            match self.plan_group(t, max) {
                Ok(jobs) => {
                    t = t.plus_ms(interval * jobs.len() as i64);
                    for job in jobs {
                        if tx.send(job).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        // Graceful stop: receivers are stopped by now; what they stored but no batch has
        // taken yet goes into one last batch.
        if !self.abort.load(Ordering::Acquire) && pending() {
            match self.plan(t) {
                Ok(job) => {
                    let _ = tx.send(job);
                }
                Err(e) => self.fail(e),
            }
        }
    }

    fn run_jobs(&self, rx: Receiver<Job>) {
        for mut job in rx.iter() {
            if self.abort.load(Ordering::Acquire) {
                break;
            }
            let start = self.clock.now();
            let queued = self.metrics.batch_started(job.cx.time, start);
            let (outputs, result) = self
                .pool
                .install(|| self.protocol.run(&mut job, self.clock.as_ref()));
            let end = self.clock.now();
            let info = BatchInfo {
                batch_id: job.cx.id,
                batch_time: job.cx.time,
                submission_time: queued.map(|q| q.submission_time).unwrap_or(start),
                processing_start: Some(start),
                processing_end: Some(end),
                inputs: job.inputs,
                output_ops: outputs,
                operators: self.graph.op_times.take(),
                state_entries: self
                    .graph
                    .states()
                    .iter()
                    .map(|s| (s.name(), s.sizes().iter().sum::<usize>() as u64))
                    .collect(),
                rate_decision: None,
                failure: result.as_ref().err().map(|e| e.to_string()),
            };
            let mut info = info;
            if let (Some(est), true) = (&self.rate, result.is_ok()) {
                info.rate_decision = lock(est).compute(
                    info.batch_time.millis(),
                    info.num_records(),
                    info.processing_time_ms().unwrap_or(0),
                    info.scheduling_delay_ms().unwrap_or(0),
                );
                if let Some(d) = &info.rate_decision {
                    for input in self.graph.inputs() {
                        input.set_rate_limit(d.rate);
                    }
                }
            }
            tracing::info!(
                batch_id = info.batch_id,
                batch_time_ms = info.batch_time.millis(),
                records = info.num_records(),
                scheduling_delay_ms = info.scheduling_delay_ms().unwrap_or(0),
                processing_ms = info.processing_time_ms().unwrap_or(0),
                "batch completed"
            );
            self.metrics.batch_completed(info);
            if self.stop.load(Ordering::Acquire) {
                self.drained.fetch_add(1, Ordering::AcqRel);
            }
            if let Err(e) = result {
                self.fail(e);
                break;
            }
        }
        drop(rx);
        self.mark_done();
    }

    /// Waits until the runner has exited, at most `timeout` (forever with `None`).
    /// Returns true if it has.
    pub fn wait_done(&self, timeout: Option<std::time::Duration>) -> bool {
        let done = lock(&self.done);
        let done = match timeout {
            None => self.done_changed.wait_while(done, |d| !*d),
            Some(t) => self
                .done_changed
                .wait_timeout_while(done, t, |d| !*d)
                .map(|(g, _)| g)
                .map_err(|p| std::sync::PoisonError::new(p.into_inner().0)),
        }
        .unwrap_or_else(|p| p.into_inner());
        *done
    }
}
