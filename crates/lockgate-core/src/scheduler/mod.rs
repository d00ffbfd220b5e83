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
    pub pool: Arc<rayon::ThreadPool>,
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
        pool: Arc<rayon::ThreadPool>,
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
        // The clocks as the context starts (not when the thread gets to run): the first
        // batch is due relative to them.
        let started = (self.clock.now(), self.clock.mono());
        let generator = {
            let s = self.clone();
            std::thread::Builder::new()
                .name("lockgate-job-generator".into())
                .spawn(move || {
                    s.guarded("job generator", || s.generate(first, started, replays, tx))
                })
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

    /// Plans the batches: the logged `replays`, then one every interval from `first`,
    /// timed from the clocks' readings (wall, monotonic) at `started`.
    fn generate(
        &self,
        first: Time,
        started: (Time, Time),
        replays: Vec<Plan>,
        tx: SyncSender<Job>,
    ) {
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
        let clock = self.clock.as_ref();
        // When batch `t` is due, on the monotonic clock, given the clocks read now
        // (`wall` at `mono`, before the previous batch was handed on) and when the
        // previous batch was due: when the wall clock reaches `t` if that is at most an
        // interval away (at once if it passed it); if the wall clock is further behind
        // (stepped back, or a restart behind the checkpoint), one interval after the
        // previous batch — the job neither stalls nor reuses a batch time.
        let due_of = |t: Time, previous: Time, (wall, mono): (Time, Time)| {
            let ahead = t.since(wall);
            if ahead <= interval {
                mono.plus_ms(ahead.max(0))
            } else if mono < previous.plus_ms(interval) {
                previous.plus_ms(interval)
            } else {
                mono.plus_ms(interval)
            }
        };
        let mut due = due_of(t, started.1.plus_ms(-interval), started);
        let mut steps = StepWatch {
            wall: started.0,
            mono: started.1,
        };
        // The first of the batches planned since the last one that took input (`None`:
        // the last one did, or none was planned yet).
        let mut quiet_from: Option<Time> = None;
        loop {
            if self.bounded && !pending() {
                // A bounded run ends when no source has anything left.
                return;
            }
            if !self.bounded {
                clock.wait_until_mono(due, &self.stop);
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if !self.bounded {
                if clock.mono() < due {
                    continue;
                }
                steps.check(clock, t);
                // Behind the wall clock by a period or more with nothing to read (the
                // job was down or busy, or the wall clock jumped forward): batch times
                // skip ahead instead of running a storm of empty batches — once every
                // window has had its data leave (batches without input for its
                // look-back), so that skipped batches could not have changed a result.
                let timing = &self.graph.timing;
                let period = timing.period_ms();
                let horizon = timing.horizon_ms();
                let behind = clock.now().since(t);
                let drained = horizon == 0 || quiet_from.is_some_and(|q| t.since(q) >= horizon);
                if behind >= period && drained && !pending() {
                    let by = behind / period * period;
                    if let Err(e) = self.protocol.skip_ahead(by) {
                        self.fail(e);
                        return;
                    }
                    tracing::warn!(
                        from = %t,
                        to = %t.plus_ms(by),
                        "batch times skip {by} ms ahead to the wall clock: no batch was \
                         planned for that long (the job was down or busy, or the wall clock \
                         jumped forward) and no source has input waiting, so {} empty \
                         batch(es) are not run",
                        by / interval.max(1)
                    );
                    t = t.plus_ms(by);
                }
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
                    // Read before the batch runs (and a test's clock moves on).
                    due = due_of(t, due, (clock.now(), clock.mono()));
                    for job in jobs {
                        if self.took_input(&job) {
                            quiet_from = None;
                        } else {
                            quiet_from.get_or_insert(job.cx.time);
                        }
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

    /// Whether a planned batch takes any input.
    fn took_input(&self, job: &Job) -> bool {
        let inputs = self.graph.inputs();
        job.inputs.iter().any(|info| {
            inputs
                .iter()
                .find(|i| i.name() == info.source)
                .map_or(info.records > 0, |i| i.took_input(info))
        })
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

/// Watches the wall clock against the monotonic one between batches and logs a step of
/// more than [`StepWatch::TOLERANCE_MS`] with its size.
struct StepWatch {
    wall: Time,
    mono: Time,
}

impl StepWatch {
    /// How far the two clocks may drift apart between two batches unnoticed (NTP slews
    /// far less; a scheduling hiccup does not move the wall clock against the other).
    const TOLERANCE_MS: i64 = 1000;

    /// Logs a step of the wall clock since the last check (before batch `next`).
    fn check(&mut self, clock: &dyn Clock, next: Time) {
        let (wall, mono) = (clock.now(), clock.mono());
        let step = wall.since(self.wall) - mono.since(self.mono);
        if step.abs() > Self::TOLERANCE_MS {
            let (dir, then) = if step > 0 {
                (
                    "forward",
                    "batch times skip ahead to it if no input is waiting",
                )
            } else {
                (
                    "back",
                    "batch times go on from the last batch, one interval apart on the \
                     monotonic clock, ahead of the wall clock",
                )
            };
            tracing::warn!(step_ms = step, next_batch = %next, "the wall clock stepped {dir} by {} ms; {then}", step.abs());
        }
        self.wall = wall;
        self.mono = mono;
    }
}
