//! [`StreamingContext`]: the entry point. It owns the stream graph, the clock, the worker
//! pool and the scheduler, and controls the lifecycle: build the graph, `start`, then
//! `stop` (gracefully or not) or `await_termination`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::checkpoint::{CheckpointConfig, Checkpointer, Recovery, StateUpgrade, UpgradeReport};
use crate::clock::{duration_ms, Clock, SystemClock, Time};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::metrics::StreamingMetrics;
use crate::protocol::{Order, Protocol, Start};
use crate::scheduler::Scheduler;
use crate::storage::{CheckpointLocation, Storage, Takeover};
use crate::types::{lock, DeliveryMode, SinkOffsets};

/// When batches are generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Trigger {
    /// One batch every batch interval of the clock, until stopped (the default).
    #[default]
    ProcessingTime,
    /// A bounded run: take what the sources hold at start, run batch after batch
    /// without waiting for the clock (batch times still advance one interval per batch),
    /// then stop by itself. Needs bounded sources (files, queues).
    AvailableNow,
}

/// The lifecycle state of a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextState {
    /// Created; streams and outputs can be added.
    Initialized,
    /// Started and running batches.
    Active,
    /// Stopped (or terminated by itself); cannot be restarted.
    Stopped,
}

/// Builds a [`StreamingContext`].
pub struct StreamingContextBuilder {
    app_name: String,
    batch_interval: Duration,
    parallelism: Option<usize>,
    checkpoint: Option<CheckpointConfig>,
    clock: Option<Arc<dyn Clock>>,
    trigger: Trigger,
    start_time: Option<Time>,
    block_interval: Duration,
    receiver_wal: bool,
    from_sink: Option<SinkOffsets>,
    settings: Vec<(String, String)>,
    backpressure: bool,
    pool: Option<WorkerPool>,
}

/// Worker threads several contexts share (the tasks of a scale-out instance): each
/// batch's work runs on them, so the process uses this many cores however many
/// contexts it runs. See [`StreamingContextBuilder::worker_pool`].
#[derive(Clone)]
pub struct WorkerPool(Arc<rayon::ThreadPool>);

impl WorkerPool {
    /// A pool of `threads` worker threads.
    pub fn new(threads: usize) -> Result<WorkerPool> {
        if threads == 0 {
            return Err(Error::Config(
                "a worker pool needs at least 1 thread".into(),
            ));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lockgate-worker-{i}"))
            .build()
            .map(|p| WorkerPool(Arc::new(p)))
            .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))
    }

    /// Its number of threads.
    pub fn threads(&self) -> usize {
        self.0.current_num_threads()
    }
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerPool({} threads)", self.threads())
    }
}

impl StreamingContextBuilder {
    /// Runs the batches on `pool`, shared with other contexts, instead of worker
    /// threads of the context's own; the default partition count is the pool's
    /// threads unless [`parallelism`](Self::parallelism) says otherwise.
    pub fn worker_pool(mut self, pool: WorkerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Records a setting of the job (a sink's address, an output directory, ...) in the
    /// checkpoint metadata: a restart with a different value logs the change. Values of
    /// keys that name a secret are stored redacted (see [`redact`]).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_string(), redact(key, value)));
        self
    }

    /// Resumes from what a transactional sink recorded instead of from nothing, when the
    /// checkpoint directory has no committed batch (it is new, or was lost): sources skip
    /// the input of the batches the sink committed, and batch ids continue after the
    /// sink's last one (so the sink does not skip new batches as already committed).
    /// Operator state is not in the sink: stateful operators start empty.
    pub fn from_sink_offsets(mut self, offsets: Option<SinkOffsets>) -> Self {
        self.from_sink = offsets;
        self
    }

    /// How often receivers turn what they received into a durable WAL block (default
    /// 200 ms; only with a checkpoint directory).
    pub fn block_interval(mut self, d: Duration) -> Self {
        self.block_interval = d;
        self
    }

    /// Backpressure (Spark's `spark.streaming.backpressure.enabled`): after each batch a
    /// PID controller estimates the rate the job keeps up with, and receivers store no
    /// faster than that (default off).
    pub fn backpressure(mut self, on: bool) -> Self {
        self.backpressure = on;
        self
    }

    /// Whether receivers write a write-ahead log when checkpointing (default true).
    pub fn receiver_wal(mut self, on: bool) -> Self {
        self.receiver_wal = on;
        self
    }

    /// The application's name (logs, metrics, the UI).
    pub fn app_name(mut self, name: &str) -> Self {
        self.app_name = name.to_string();
        self
    }

    /// The batch interval (default 1 s). Must be at least 1 ms.
    pub fn batch_interval(mut self, d: Duration) -> Self {
        self.batch_interval = d;
        self
    }

    /// Number of worker threads and default partition count (default: the number of
    /// cores).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = Some(n);
        self
    }

    /// Checkpoints into `dir` (default settings, see [`CheckpointConfig::new`]): every
    /// batch plan is logged before it runs, state is persisted after it, and a restart
    /// on the same directory recovers (see [`StreamingContext::get_or_create`]).
    pub fn checkpoint_dir(self, dir: impl AsRef<Path>) -> Self {
        self.checkpoint_location(dir.as_ref())
    }

    /// Checkpoints into a location: a local directory, or an object store opened by
    /// `lockgate_object_store::open` (`s3://`, `gs://`, `az://`).
    pub fn checkpoint_location(mut self, location: impl Into<CheckpointLocation>) -> Self {
        let mut cfg = CheckpointConfig::at(location);
        if let Some(old) = self.checkpoint.take() {
            cfg = CheckpointConfig {
                location: cfg.location,
                ..old
            };
        }
        self.checkpoint = Some(cfg);
        self
    }

    /// Starts as a standby when another process owns the checkpoint: waits (shown in
    /// the log, the UI and the metrics) until the owner is gone — its lock released, or
    /// on an object store its lease expired — then recovers and takes over. Without
    /// it a second process is refused, naming the owner.
    pub fn standby(mut self, on: bool) -> Self {
        self.checkpoint_mut().takeover = if on {
            Takeover::Standby
        } else {
            Takeover::Refuse
        };
        self
    }

    /// Full checkpoint settings.
    pub fn checkpoint(mut self, cfg: CheckpointConfig) -> Self {
        self.checkpoint = Some(cfg);
        self
    }

    /// The checkpoint settings to change (without a directory yet: `build` then asks
    /// for one).
    fn checkpoint_mut(&mut self) -> &mut CheckpointConfig {
        self.checkpoint
            .get_or_insert_with(|| CheckpointConfig::new(Path::new("")))
    }

    /// The delivery guarantee (default exactly-once; needs a checkpoint directory).
    pub fn delivery(mut self, mode: DeliveryMode) -> Self {
        self.checkpoint_mut().delivery = mode;
        self
    }

    /// What recovery does when operator state and code differ (default: fail).
    pub fn state_upgrade(mut self, upgrade: StateUpgrade) -> Self {
        self.checkpoint_mut().upgrade = upgrade;
        self
    }

    /// The clock that drives batch generation (default: the system clock). Tests pass a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// When batches are generated (default [`Trigger::ProcessingTime`]).
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Fixes the time the batch times count from instead of the clock's time at start:
    /// the first batch time is the first multiple of the interval after it. Bounded runs
    /// use it for reproducible batch times (for example `Time(0)`).
    pub fn start_time(mut self, t: Time) -> Self {
        self.start_time = Some(t);
        self
    }

    /// Builds the context.
    pub fn build(self) -> Result<StreamingContext> {
        let interval_ms = duration_ms(self.batch_interval);
        if interval_ms < 1 {
            return Err(Error::Config(format!(
                "batch interval {:?} is too short; use at least 1 ms",
                self.batch_interval
            )));
        }
        let parallelism = match (self.parallelism, &self.pool) {
            (Some(0), _) => return Err(Error::Config("parallelism must be at least 1".into())),
            (Some(n), _) => n,
            (None, Some(pool)) => pool.threads(),
            (None, None) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if let Some(c) = &self.checkpoint {
            if c.retain_batches <= c.snapshot_every {
                return Err(Error::Config(format!(
                    "checkpoint retention ({} batches) must exceed the snapshot interval ({}): \
                     recovery needs the plans logged since the last snapshot",
                    c.retain_batches, c.snapshot_every
                )));
            }
            if c.location.location().is_empty() {
                return Err(Error::Config(
                    "delivery/state_upgrade/standby were set without a checkpoint directory; \
                     call checkpoint_dir(..) too"
                        .into(),
                ));
            }
        }
        let app_name = self.app_name;
        let metrics = Arc::new(StreamingMetrics::default());
        Ok(StreamingContext {
            inner: Arc::new(Inner {
                app_name: app_name.clone(),
                batch_interval: self.batch_interval,
                parallelism,
                checkpoint: self.checkpoint,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
                trigger: self.trigger,
                start_time: self.start_time,
                block_interval: self.block_interval,
                receiver_wal: self.receiver_wal,
                from_sink: self.from_sink,
                settings: self.settings,
                backpressure: self.backpressure,
                pool: self.pool,
                graph: Arc::new(Graph::new(
                    &app_name,
                    interval_ms,
                    parallelism,
                    metrics.clone(),
                )),
                metrics,
                stopping: AtomicBool::new(false),
                graceful: AtomicBool::new(false),
                bounded_total: Mutex::new(None),
                run: Mutex::new(Run {
                    state: ContextState::Initialized,
                    scheduler: None,
                    threads: Vec::new(),
                    recovery: None,
                }),
            }),
        })
    }
}

struct Run {
    state: ContextState,
    scheduler: Option<Arc<Scheduler>>,
    threads: Vec<JoinHandle<()>>,
    /// Recovery done ahead of `start` (by `get_or_create`).
    recovery: Option<(Recovery, Arc<Checkpointer>)>,
}

struct Inner {
    app_name: String,
    batch_interval: Duration,
    parallelism: usize,
    /// Shared worker threads, if given (else the context starts its own).
    pool: Option<WorkerPool>,
    checkpoint: Option<CheckpointConfig>,
    clock: Arc<dyn Clock>,
    trigger: Trigger,
    start_time: Option<Time>,
    block_interval: Duration,
    receiver_wal: bool,
    from_sink: Option<SinkOffsets>,
    settings: Vec<(String, String)>,
    backpressure: bool,
    graph: Arc<Graph>,
    metrics: Arc<StreamingMetrics>,
    stopping: AtomicBool,
    /// The stop requested first was graceful (and no immediate stop followed).
    graceful: AtomicBool,
    /// The batches of a bounded run, counted when it started.
    bounded_total: Mutex<Option<u64>>,
    run: Mutex<Run>,
}

/// The main entry point: create sources from it, transform them, register outputs, then
/// [`start`](Self::start) it. Cloning gives another handle on the same context (for
/// example to stop it from another thread).
#[derive(Clone)]
pub struct StreamingContext {
    inner: Arc<Inner>,
}

impl StreamingContext {
    /// A builder with defaults: app name `lockgate`, 1 s batches, one worker per core,
    /// the system clock.
    pub fn builder() -> StreamingContextBuilder {
        StreamingContextBuilder {
            app_name: "lockgate".into(),
            batch_interval: Duration::from_secs(1),
            parallelism: None,
            checkpoint: None,
            clock: None,
            trigger: Trigger::ProcessingTime,
            start_time: None,
            block_interval: Duration::from_millis(200),
            receiver_wal: true,
            from_sink: None,
            settings: Vec::new(),
            backpressure: false,
            pool: None,
        }
    }

    pub(crate) fn graph(&self) -> Arc<Graph> {
        self.inner.graph.clone()
    }

    pub(crate) fn metrics_ref(&self) -> &StreamingMetrics {
        &self.inner.metrics
    }

    /// Spark's `remember`: every stream keeps the batches it computed for `duration`
    /// after they ran (for [`DStream::slice`](crate::DStream::slice)), instead of only
    /// while they run. Remembered batches stay in memory, and the partitions they share
    /// are cloned by the operators that would otherwise take them by value. Call it
    /// before `start()`.
    pub fn remember(&self, duration: Duration) {
        let graph = self.graph();
        if graph.started.load(Ordering::Acquire) {
            graph.defer_error(Error::Lifecycle(
                "remember() was called after the context started; call it before start()".into(),
            ));
        }
        graph
            .timing
            .remember_ms
            .store(duration_ms(duration), Ordering::Release);
    }

    /// The application's name.
    pub fn app_name(&self) -> &str {
        &self.inner.app_name
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> Duration {
        self.inner.batch_interval
    }

    /// Worker threads and default partition count.
    pub fn parallelism(&self) -> usize {
        self.inner.parallelism
    }

    pub(crate) fn receiver_block_interval(&self) -> Duration {
        self.inner.block_interval
    }

    pub(crate) fn receiver_wal(&self) -> bool {
        self.inner.receiver_wal
    }

    /// The checkpoint directory, if the checkpoint is in a local one.
    pub fn checkpoint_dir(&self) -> Option<&Path> {
        self.inner
            .checkpoint
            .as_ref()
            .and_then(|c| c.location.local_dir())
    }

    /// The checkpoint's location (a directory path or a URL), if set.
    pub fn checkpoint_location(&self) -> Option<&str> {
        self.inner
            .checkpoint
            .as_ref()
            .map(|c| c.location.location())
    }

    /// The checkpoint's storage (its request counts: [`Storage::stats`]), if set.
    pub fn checkpoint_storage(&self) -> Option<Arc<dyn Storage>> {
        self.inner.checkpoint.as_ref().map(|c| c.location.clone())
    }

    /// Spark's `getOrCreate`: `build` receives a builder already set to checkpoint into
    /// `dir`, builds the context and its whole graph, and returns it; then, if `dir`
    /// holds a checkpoint, the state of the last committed batch is restored and the
    /// batches planned after it are re-run from their logged plans when the context
    /// starts. A new or empty `dir` starts fresh.
    ///
    /// `location` is a directory (a path, `&str` or [`CheckpointLocation::local`] for
    /// `file://` URLs) or an object store opened by `lockgate_object_store::open`.
    pub fn get_or_create(
        location: impl Into<CheckpointLocation>,
        build: impl FnOnce(StreamingContextBuilder) -> Result<StreamingContext>,
    ) -> Result<StreamingContext> {
        Self::get_or_create_with(location, build, |_| {})
    }

    /// [`get_or_create`](Self::get_or_create), calling `before_recovery` with the
    /// context built, before recovery takes the checkpoint: where a UI starts, so that
    /// a standby waiting for the owner (see [`StreamingContextBuilder::standby`]) shows
    /// itself (its storage's [`stats`](Storage::stats) say `standby`).
    pub fn get_or_create_with(
        location: impl Into<CheckpointLocation>,
        build: impl FnOnce(StreamingContextBuilder) -> Result<StreamingContext>,
        before_recovery: impl FnOnce(&StreamingContext),
    ) -> Result<StreamingContext> {
        let location = location.into();
        let shown = location.0.location().to_string();
        let ctx = build(StreamingContext::builder().checkpoint_location(location))?;
        if ctx.checkpoint_location() != Some(shown.as_str()) {
            return Err(Error::Config(format!(
                "get_or_create({shown}): the context built must checkpoint into that \
                 location; keep the builder's checkpoint_dir"
            )));
        }
        ctx.inner.graph.validate()?;
        before_recovery(&ctx);
        let recovery = ctx.recover()?;
        lock(&ctx.inner.run).recovery = Some(recovery);
        Ok(ctx)
    }

    /// Reports which operator state a checkpoint in `dir` keeps, adds or drops for the
    /// graph built so far (check before deploying an upgrade). Reads only.
    pub fn check_upgrade(&self, location: impl Into<CheckpointLocation>) -> Result<UpgradeReport> {
        let cfg = CheckpointConfig::at(location);
        let cp = Checkpointer::new(
            cfg.clone(),
            Order::of(cfg.delivery).writer(),
            self.inner.graph.states(),
            Vec::new(),
            self.inner.metrics.clone(),
        );
        match cp.log.read_metadata()? {
            Some(meta) => Ok(cp.upgrade_report(&meta)),
            None => Err(Error::Config(format!(
                "`{}` holds no checkpoint (no metadata file)",
                cfg.location.location()
            ))),
        }
    }

    /// The zero time of a run that recovers nothing: the clock's time (or the start
    /// time) rounded down to the batch interval.
    fn fresh_zero(&self) -> Time {
        let interval = self.inner.graph.timing.interval_ms;
        let base = self
            .inner
            .start_time
            .unwrap_or_else(|| self.inner.clock.now());
        Time(base.millis().div_euclid(interval) * interval)
    }

    /// Restores state from the checkpoint directory (or initialises it).
    fn recover(&self) -> Result<(Recovery, Arc<Checkpointer>)> {
        let cfg = self
            .inner
            .checkpoint
            .clone()
            .ok_or_else(|| Error::Config("no checkpoint directory set".into()))?;
        let mut settings = vec![
            (
                "batch_interval_ms".to_string(),
                self.inner.graph.timing.interval_ms.to_string(),
            ),
            (
                "parallelism".to_string(),
                self.inner.parallelism.to_string(),
            ),
            ("trigger".to_string(), format!("{:?}", self.inner.trigger)),
            ("delivery".to_string(), format!("{:?}", cfg.delivery)),
            ("retain_batches".to_string(), cfg.retain_batches.to_string()),
            ("snapshot_every".to_string(), cfg.snapshot_every.to_string()),
        ];
        settings.extend(self.inner.settings.iter().cloned());
        Protocol::recover(
            &self.inner.graph,
            &cfg,
            settings,
            Protocol::fresh_timing(self.inner.from_sink.as_ref(), self.fresh_zero()),
            self.inner.metrics.clone(),
        )
    }

    /// The name the next source created with `kind` will get (`<kind>-<n>`): for
    /// source wrappers in other crates that attach to its counters in
    /// [`metrics`](Self::metrics) once it exists.
    pub fn next_source_name(&self, kind: &str) -> String {
        format!("{kind}-{}", self.metrics_ref().source_names().len())
    }

    /// The clock driving the batches.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The metrics registry (batches, delays, source counters).
    pub fn metrics(&self) -> Arc<StreamingMetrics> {
        self.inner.metrics.clone()
    }

    /// Warnings about the graph as built so far (also logged at start), each naming an
    /// operator: e.g. an event-time aggregation without a watermark, whose state would
    /// grow forever.
    pub fn warnings(&self) -> Vec<String> {
        self.inner.graph.warnings()
    }

    /// Entries of every checkpointable state (operators, sources) per partition, by
    /// stable name.
    pub fn state_sizes(&self) -> Vec<(String, Vec<usize>)> {
        self.inner
            .graph
            .states()
            .iter()
            .map(|s| (s.name(), s.sizes()))
            .collect()
    }

    /// Batches still to plan for what the sources hold now, when every source can tell
    /// (files and sequences can, receivers cannot): with the queued batches, the backlog
    /// of a bounded run or of a catch-up.
    pub fn pending_batches(&self) -> Option<u64> {
        let inputs = self.inner.graph.inputs();
        let mut most = 0;
        for input in &inputs {
            most = most.max(input.pending_batches()?);
        }
        Some(most)
    }

    /// How many batches a bounded run ([`Trigger::AvailableNow`]) has in all: the
    /// re-runs of a recovery plus the batches for what its sources held at start,
    /// counted once when it started (`None` before, for streaming runs, or when a
    /// source cannot tell).
    pub fn bounded_total_batches(&self) -> Option<u64> {
        *lock(&self.inner.bounded_total)
    }

    /// How the context stopped, once it has: `Some(n)` after a graceful stop that
    /// drained `n` batches (planned or re-run batches and the last one of what the
    /// sources held), `None` before it stopped or after any other stop.
    pub fn graceful_stop_drained(&self) -> Option<u64> {
        let run = lock(&self.inner.run);
        let s = run.scheduler.as_ref()?;
        (run.state == ContextState::Stopped && self.inner.graceful.load(Ordering::Acquire))
            .then(|| s.drained.load(Ordering::Acquire))
    }

    /// The lifecycle state.
    pub fn state(&self) -> ContextState {
        lock(&self.inner.run).state
    }

    /// True once [`stop`](Self::stop) was called or the context terminated by itself.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// The time batch ids count from: batch `b` has time `zero + (b + 1) * interval`.
    /// Fixed by `start`.
    pub fn zero_time(&self) -> Time {
        self.inner.graph.timing.zero()
    }

    /// Checks the graph, starts sources and the scheduler. Fails with a clear error
    /// when the graph is invalid (no outputs, bad window durations), a source cannot
    /// start, or the context was started before.
    pub fn start(&self) -> Result<()> {
        let mut run = lock(&self.inner.run);
        if run.state != ContextState::Initialized {
            return Err(Error::Lifecycle(format!(
                "start() called on a context that is {:?}; a context starts once",
                run.state
            )));
        }
        let interval = self.inner.graph.timing.interval_ms;
        self.inner.graph.validate()?;
        for w in self.inner.graph.warnings() {
            tracing::warn!("{w}");
        }
        let recovery = match run.recovery.take() {
            Some(r) => Some(r),
            None if self.inner.checkpoint.is_some() => Some(self.recover()?),
            None => None,
        };
        let Start {
            zero,
            base_id,
            first,
            replays,
            recovered,
            checkpointer,
        } = Protocol::start_point(
            &self.inner.graph,
            recovery,
            self.inner.from_sink.as_ref(),
            self.fresh_zero(),
        )?;
        self.inner.graph.start(zero, base_id);
        // Batches logged before batch times skipped ahead (their zero time moved) still
        // run as they were planned.
        if let Some(p) = replays.first() {
            let timing = &self.inner.graph.timing;
            timing.lower_floor(Time(p.batch_time_ms).plus_ms(-timing.interval_ms));
        }
        let bounded = self.inner.trigger == Trigger::AvailableNow;
        let inputs = self.inner.graph.inputs();
        for (i, input) in inputs.iter().enumerate() {
            if let Err(e) = input.start(bounded, recovered) {
                for started in &inputs[..i] {
                    started.stop();
                }
                run.state = ContextState::Stopped;
                return Err(e);
            }
        }
        let pool = match &self.inner.pool {
            Some(shared) => shared.0.clone(),
            None => WorkerPool::new(self.inner.parallelism)?.0,
        };
        let delivery = self
            .inner
            .checkpoint
            .as_ref()
            .map_or(DeliveryMode::default(), |c| c.delivery);
        let last_replay = replays.last().map(|p| p.batch_id);
        let protocol = Protocol::new(
            self.inner.graph.clone(),
            checkpointer,
            delivery,
            bounded,
            last_replay,
        )
        .and_then(|p| p.restore_replays(&replays).map(|()| p));
        let protocol = match protocol {
            Ok(p) => p,
            Err(e) => {
                for input in &inputs {
                    input.stop();
                }
                run.state = ContextState::Stopped;
                return Err(e);
            }
        };
        let scheduler = Arc::new(Scheduler::new(
            self.inner.graph.clone(),
            self.inner.clock.clone(),
            self.inner.metrics.clone(),
            pool,
            bounded,
            protocol,
            self.inner.backpressure,
        ));
        if bounded {
            // Known before the first plan: the progress of a bounded run counts to it.
            let total = self.pending_batches().map(|p| p + replays.len() as u64);
            *lock(&self.inner.bounded_total) = total;
        }
        run.threads = scheduler.spawn(first, replays)?;
        run.scheduler = Some(scheduler);
        run.state = ContextState::Active;
        tracing::info!(
            app = %self.inner.app_name,
            batch_interval_ms = interval,
            parallelism = self.inner.parallelism,
            first_batch_ms = first.millis(),
            "streaming context started"
        );
        Ok(())
    }

    /// Stops the context and waits until it has stopped. With `graceful` (Spark's
    /// `stopGracefully`), receivers stop first, then every planned batch — those
    /// re-run from the checkpoint after a restart included — and one last batch of
    /// what the sources already hold (everything receivers wrote to their WAL) run and
    /// commit before this returns. Without it, queued batches are dropped after the
    /// running one finishes; they stay logged and re-run at the next start. A second
    /// call without `graceful` while a graceful stop drains turns it into an
    /// immediate one. Returns the error that stopped the context, if any (once: the
    /// first of `stop` and `await_termination` to finish the shutdown gets it).
    pub fn stop(&self, graceful: bool) -> Result<()> {
        self.request_stop(graceful);
        self.finish_stop()
    }

    /// Spark's `spark.streaming.stopGracefullyOnShutdown`: on SIGINT (Ctrl-C) or
    /// SIGTERM the context stops gracefully — every planned batch and what receivers
    /// stored run and commit, then [`await_termination`](Self::await_termination)
    /// returns; a second signal exits the process at once (code 130), leaving the
    /// queued batches logged for the next start to re-run. One handler per process.
    pub fn stop_gracefully_on_shutdown(&self) -> Result<()> {
        let ctx = self.clone();
        let signals = std::sync::atomic::AtomicU32::new(0);
        ctrlc::set_handler(move || {
            if signals.fetch_add(1, Ordering::AcqRel) == 0 {
                // Never `eprintln!`: a closed stderr would panic the handler.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    b"stopping gracefully: finishing every planned batch (press Ctrl-C again \
                     to stop at once)...\n",
                );
                ctx.request_stop(true);
            } else {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    b"stopping at once: the batches still queued are logged and re-run at the \
                     next start\n",
                );
                std::process::exit(130);
            }
        })
        .map_err(|e| Error::Lifecycle(format!("cannot install the Ctrl-C handler: {e}")))
    }

    /// Asks the context to stop without waiting for it (see [`stop`](Self::stop)):
    /// what a signal handler calls, while the main thread waits in
    /// [`await_termination`](Self::await_termination).
    pub fn request_stop(&self, graceful: bool) {
        let scheduler = {
            let mut run = lock(&self.inner.run);
            match run.scheduler.clone() {
                Some(s) => s,
                None => {
                    self.inner.stopping.store(true, Ordering::Release);
                    run.state = ContextState::Stopped;
                    return;
                }
            }
        };
        if graceful {
            // Receivers stop first: what they stored reaches the WAL before the
            // generator plans its last batch.
            for input in self.inner.graph.inputs() {
                input.stop();
            }
        } else {
            scheduler.abort.store(true, Ordering::Release);
        }
        if !scheduler.stop.swap(true, Ordering::AcqRel) {
            self.inner.graceful.store(graceful, Ordering::Release);
        }
        if !graceful {
            self.inner.graceful.store(false, Ordering::Release);
        }
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.clock.interrupt();
    }

    /// Joins the threads once the stop was requested (or the run ended by itself),
    /// completes the commits on their way to disk and logs the one line that says how
    /// the context stopped. Later calls return at once.
    fn finish_stop(&self) -> Result<()> {
        let mut run = lock(&self.inner.run);
        let Some(scheduler) = run.scheduler.clone() else {
            return Ok(());
        };
        if run.state == ContextState::Stopped {
            return scheduler.take_failure().map_or(Ok(()), Err);
        }
        // Nobody asked it to stop: a bounded run that completed (or a failure).
        let requested = scheduler.stop.load(Ordering::Acquire);
        scheduler.stop.store(true, Ordering::Release);
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.clock.interrupt();
        for input in self.inner.graph.inputs() {
            input.stop();
        }
        for t in run.threads.drain(..) {
            let _ = t.join();
        }
        run.state = ContextState::Stopped;
        // Commits still on their way to disk are completed before stop returns.
        let flushed = scheduler.protocol.flush();
        // Then the checkpoint is let go: a standby (or the next start) takes it at once.
        scheduler.protocol.release();
        let failure = scheduler.take_failure().or(flushed.err());
        let drained = scheduler.drained.load(Ordering::Acquire);
        let app = &self.inner.app_name;
        if let Some(e) = &failure {
            tracing::info!(%app, error = %e, "streaming context stopped after a failure");
        } else if !requested {
            tracing::info!(%app, "streaming context stopped: the bounded run is complete");
        } else if self.inner.graceful.load(Ordering::Acquire) {
            tracing::info!(
                %app,
                drained_batches = drained,
                "streaming context stopped gracefully: every planned batch ran and committed"
            );
        } else {
            tracing::info!(
                %app,
                "streaming context stopped at once; batches still queued stay logged and \
                 re-run at the next start"
            );
        }
        failure.map_or(Ok(()), Err)
    }

    /// Waits until the context stops: stopped by [`stop`](Self::stop), finished (a
    /// bounded run), or failed. A failure is returned here, with the batch time and the
    /// operator that failed.
    pub fn await_termination(&self) -> Result<()> {
        self.await_inner(None).map(|_| ())
    }

    /// Like [`await_termination`](Self::await_termination) but gives up after `d`.
    /// Returns `Ok(true)` if the context terminated.
    pub fn await_termination_or_timeout(&self, d: Duration) -> Result<bool> {
        self.await_inner(Some(d))
    }

    fn await_inner(&self, timeout: Option<Duration>) -> Result<bool> {
        let scheduler = match lock(&self.inner.run).scheduler.clone() {
            Some(s) => s,
            None => {
                return Err(Error::Lifecycle(
                    "await_termination() called before start()".into(),
                ))
            }
        };
        if !scheduler.wait_done(timeout) {
            return Ok(false);
        }
        // The runner has exited: finish the shutdown (receivers, generator).
        self.finish_stop()?;
        Ok(true)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let run = self.run.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &run.scheduler {
            s.abort.store(true, Ordering::Release);
            s.stop.store(true, Ordering::Release);
            self.clock.interrupt();
        }
        for input in self.graph.inputs() {
            input.stop();
        }
    }
}

/// `value`, or `***` when `key` names a secret (contains `password`, `secret`, `token`
/// or `sasl`, in any case). Everything Lockgate shows of configuration goes through it.
pub fn redact(key: &str, value: &str) -> String {
    let k = key.to_ascii_lowercase();
    if ["password", "secret", "token", "sasl"]
        .iter()
        .any(|s| k.contains(s))
    {
        "***".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_redacted() {
        assert_eq!(super::redact("sasl.password", "hunter2"), "***");
        assert_eq!(super::redact("API_TOKEN", "x"), "***");
        assert_eq!(super::redact("output", "/tmp/out"), "/tmp/out");
    }
}
