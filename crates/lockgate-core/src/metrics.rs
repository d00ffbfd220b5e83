//! The metrics registry: what happened to every batch (times, input sizes, output
//! operations) and per-source counters, for tests, logs and (later) the web UI.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::clock::Time;
use crate::types::{lock, BatchId, InputInfo, OutputOpInfo};

/// How many completed batches the registry keeps.
pub const RETAINED_BATCHES: usize = 1000;

/// What one operator did in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorInfo {
    /// The operator's stable name.
    pub name: String,
    /// Time spent in the operator itself (not in its inputs), in microseconds.
    pub time_us: u64,
    /// Elements it produced.
    pub records: u64,
}

/// Everything recorded about one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchInfo {
    /// The batch id.
    pub batch_id: BatchId,
    /// The batch time.
    pub batch_time: Time,
    /// When the batch was planned and queued for running.
    pub submission_time: Time,
    /// When it started running.
    pub processing_start: Option<Time>,
    /// When it finished.
    pub processing_end: Option<Time>,
    /// What each source read.
    pub inputs: Vec<InputInfo>,
    /// Each output operation's timing and status.
    pub output_ops: Vec<OutputOpInfo>,
    /// Each operator computed in this batch: its own time and output size.
    pub operators: Vec<OperatorInfo>,
    /// Entries of each checkpointable state after the batch.
    pub state_entries: Vec<(String, u64)>,
    /// What the rate controller decided after this batch for the next ones (with
    /// backpressure on).
    pub rate_decision: Option<crate::rate::RateDecision>,
    /// Why the batch failed, if it did.
    pub failure: Option<String>,
}

impl BatchInfo {
    /// Total input records over all sources.
    pub fn num_records(&self) -> u64 {
        self.inputs.iter().map(|i| i.records).sum()
    }

    /// Time from submission to processing start (Spark's scheduling delay).
    pub fn scheduling_delay_ms(&self) -> Option<i64> {
        self.processing_start.map(|s| s.since(self.submission_time))
    }

    /// Time from processing start to end.
    pub fn processing_time_ms(&self) -> Option<i64> {
        Some(self.processing_end?.since(self.processing_start?))
    }

    /// Time from submission to processing end.
    pub fn total_delay_ms(&self) -> Option<i64> {
        self.processing_end.map(|e| e.since(self.submission_time))
    }
}

/// Counters of one source: records read and bad input handled without failing.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Records read.
    pub records: AtomicU64,
    /// Lines with invalid UTF-8 (the bad bytes were replaced by U+FFFD).
    pub invalid_utf8_lines: AtomicU64,
    /// Lines longer than the limit (cut at the limit).
    pub truncated_lines: AtomicU64,
    /// Files that could not be read (reported by name in the log).
    pub unreadable_files: AtomicU64,
    /// Files that changed after they were planned or while they were read (written in
    /// place instead of renamed in whole; reported by name in the log).
    pub changed_files: AtomicU64,
    /// Entries of a file source's directory that are not regular files and are not
    /// read: directories, dangling or looping symlinks, FIFOs, sockets, devices
    /// (each reported once by name in the log).
    pub skipped_entries: AtomicU64,
    /// Values that did not decode (as JSON or CSV with a schema) and were skipped.
    pub skipped_values: AtomicU64,
    /// The skipped values by reason (`not JSON`, `wrong type`, ...), and the last one's
    /// reason with its location.
    pub skips: Mutex<Skips>,
    /// Records lost because their offsets had expired from a log (Kafka retention)
    /// before they were read, skipped under `OnExpiredOffsets::Earliest`.
    pub lost_records: AtomicU64,
    /// A partitioned log's lag after the last plan: records in the log not yet planned
    /// into a batch (a gauge).
    pub lag_records: AtomicU64,
    /// How the source is doing: connected or not, retrying, its last error.
    pub status: Mutex<SourceStatus>,
}

/// Counters of one sink (a transactional output), by its name.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Commits retried after a passing failure (a lost connection, a database that
    /// restarts).
    pub retries: AtomicU64,
    /// Retrying since (ms since the epoch, wall clock), and the last error with its
    /// time.
    pub status: Mutex<SinkStatus>,
}

/// How a sink is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStatus {
    /// Retrying a batch's commit since this time (ms since the epoch).
    pub retrying_since_ms: Option<i64>,
    /// The last error, and when it happened (ms since the epoch).
    pub last_error: Option<(String, i64)>,
}

impl SinkCounters {
    /// Records a failed commit that is retried.
    pub fn retrying(&self, error: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.status);
        let now = wall_ms();
        s.last_error = Some((error.to_string(), now));
        s.retrying_since_ms.get_or_insert(now);
    }

    /// The commit went through (or failed for good): no longer retrying.
    pub fn settled(&self) {
        lock(&self.status).retrying_since_ms = None;
    }

    /// The status now.
    pub fn status(&self) -> SinkStatus {
        lock(&self.status).clone()
    }
}

/// The values a source's decoder skipped, by reason, and the last one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skips {
    /// Skipped values by reason.
    pub by_reason: std::collections::BTreeMap<String, u64>,
    /// The last skipped value's reason and location (`not JSON at file `a.json` line
    /// 3`).
    pub last: Option<String>,
}

/// How a source is doing, for the UI and the API (Spark's receiver info).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// A receiver (a push source on its own thread), as opposed to a source the job
    /// reads when a batch runs.
    pub is_receiver: bool,
    /// A receiver: connected and receiving.
    pub active: bool,
    /// The last error, and when it happened (ms since the epoch, wall clock).
    pub last_error: Option<(String, i64)>,
    /// Retrying a passing error (a broker that does not answer) since this time.
    pub retrying_since_ms: Option<i64>,
}

/// Now, in ms since the epoch (wall clock), for status times.
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl SourceCounters {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a value that did not decode and was skipped, for `reason` (a short
    /// phrase: the label of `lockgate_source_skipped_values_total`), with what it was
    /// and where (the last one is shown on the streaming page).
    pub fn skipped_value(&self, reason: &str, detail: String) {
        self.skipped_values.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.skips);
        *s.by_reason.entry(reason.to_string()).or_default() += 1;
        s.last = Some(detail);
    }

    /// The skipped values by reason, and the last one.
    pub fn skips(&self) -> Skips {
        lock(&self.skips).clone()
    }

    /// The source's status now.
    pub fn status(&self) -> SourceStatus {
        lock(&self.status).clone()
    }

    /// Changes the source's status.
    pub fn update_status(&self, f: impl FnOnce(&mut SourceStatus)) {
        f(&mut lock(&self.status));
    }

    /// Records an error the source is retrying (first time: since now).
    pub fn retrying(&self, error: &str) {
        self.update_status(|s| {
            let now = wall_ms();
            s.last_error = Some((error.to_string(), now));
            s.retrying_since_ms.get_or_insert(now);
        });
    }

    /// The source works again after retrying.
    pub fn recovered(&self) {
        self.update_status(|s| s.retrying_since_ms = None);
    }
}

/// Counters of one event-time operator.
#[derive(Debug)]
pub struct EventTimeCounters {
    /// Records dropped because their event time was behind the watermark.
    pub late_records: AtomicU64,
    /// Records dropped because no event time could be read from them.
    pub records_without_time: AtomicU64,
    /// The operator's watermark in epoch ms (`i64::MIN` before the first record).
    pub watermark_ms: AtomicI64,
    /// Windows (or keyed states) emitted and evicted because the watermark passed them.
    pub closed: AtomicU64,
}

impl Default for EventTimeCounters {
    fn default() -> Self {
        EventTimeCounters {
            late_records: AtomicU64::new(0),
            records_without_time: AtomicU64::new(0),
            watermark_ms: AtomicI64::new(i64::MIN),
            closed: AtomicU64::new(0),
        }
    }
}

/// Upper bounds (ms) of the delay histogram buckets; the last bucket is unbounded.
pub const DELAY_BUCKETS_MS: [i64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A cumulative histogram of a delay since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    /// Observations at or below each bound of [`DELAY_BUCKETS_MS`] (not cumulative).
    pub buckets: [u64; DELAY_BUCKETS_MS.len()],
    /// Observations above the last bound.
    pub overflow: u64,
    /// Sum of all observations, in ms.
    pub sum_ms: i64,
    /// Number of observations.
    pub count: u64,
}

impl DelayHistogram {
    fn observe(&mut self, ms: i64) {
        match DELAY_BUCKETS_MS.iter().position(|b| ms <= *b) {
            Some(i) => self.buckets[i] += 1,
            None => self.overflow += 1,
        }
        self.sum_ms += ms;
        self.count += 1;
    }
}

/// Histograms of the three delays of every completed batch since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelayHistograms {
    /// Submission to processing start.
    pub scheduling: DelayHistogram,
    /// Processing start to end.
    pub processing: DelayHistogram,
    /// Submission to processing end.
    pub total: DelayHistogram,
    /// Each write of the checkpoint writer (state files, sync, commit).
    pub checkpoint_write: DelayHistogram,
}

#[derive(Default)]
struct Registry {
    queued: BTreeMap<Time, BatchInfo>,
    running: Option<BatchInfo>,
    completed: VecDeque<BatchInfo>,
    total_completed: u64,
    total_records: u64,
    total_records_out: u64,
    last_completed: Option<Time>,
    terminated: bool,
    sources: BTreeMap<String, Arc<SourceCounters>>,
    sinks: BTreeMap<String, Arc<SinkCounters>>,
    event_time: BTreeMap<String, Arc<EventTimeCounters>>,
    histograms: DelayHistograms,
}

/// A point-in-time copy of the registry.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    /// Batches planned but not yet running, oldest first.
    pub queued: Vec<BatchInfo>,
    /// The batch running now.
    pub running: Option<BatchInfo>,
    /// The most recent completed batches, oldest first (at most [`RETAINED_BATCHES`]).
    pub completed: Vec<BatchInfo>,
    /// Batches completed since start.
    pub total_completed: u64,
    /// Records in all completed batches.
    pub total_records: u64,
    /// Elements written by output operations since start.
    pub total_records_out: u64,
    /// Delay histograms since start.
    pub histograms: DelayHistograms,
}

/// The registry of one streaming context.
#[derive(Default)]
pub struct StreamingMetrics {
    inner: Mutex<Registry>,
    changed: Condvar,
}

impl StreamingMetrics {
    pub(crate) fn batch_queued(&self, info: BatchInfo) {
        lock(&self.inner).queued.insert(info.batch_time, info);
        self.changed.notify_all();
    }

    pub(crate) fn batch_started(&self, time: Time, start: Time) -> Option<BatchInfo> {
        let mut r = lock(&self.inner);
        let mut info = r.queued.remove(&time)?;
        info.processing_start = Some(start);
        r.running = Some(info.clone());
        drop(r);
        self.changed.notify_all();
        Some(info)
    }

    pub(crate) fn batch_completed(&self, info: BatchInfo) {
        let mut r = lock(&self.inner);
        r.running = None;
        r.total_completed += 1;
        r.total_records += info.num_records();
        r.total_records_out += info.output_ops.iter().map(|o| o.records).sum::<u64>();
        r.last_completed = Some(info.batch_time);
        if let Some(ms) = info.scheduling_delay_ms() {
            r.histograms.scheduling.observe(ms);
        }
        if let Some(ms) = info.processing_time_ms() {
            r.histograms.processing.observe(ms);
        }
        if let Some(ms) = info.total_delay_ms() {
            r.histograms.total.observe(ms);
        }
        r.completed.push_back(info);
        while r.completed.len() > RETAINED_BATCHES {
            r.completed.pop_front();
        }
        drop(r);
        self.changed.notify_all();
    }

    pub(crate) fn checkpoint_written(&self, ms: i64) {
        lock(&self.inner).histograms.checkpoint_write.observe(ms);
    }

    pub(crate) fn set_terminated(&self) {
        lock(&self.inner).terminated = true;
        self.changed.notify_all();
    }

    /// The counters of source `name` (created on first use).
    pub fn source(&self, name: &str) -> Arc<SourceCounters> {
        lock(&self.inner)
            .sources
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The counters of event-time operator `name` (created on first use).
    pub fn event_time(&self, name: &str) -> Arc<EventTimeCounters> {
        lock(&self.inner)
            .event_time
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Every event-time operator's counters, by operator name.
    pub fn event_time_operators(&self) -> Vec<(String, Arc<EventTimeCounters>)> {
        lock(&self.inner)
            .event_time
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Names of all sources with counters.
    pub fn source_names(&self) -> Vec<String> {
        lock(&self.inner).sources.keys().cloned().collect()
    }

    /// The counters of sink `name` (created on first use).
    pub fn sink(&self, name: &str) -> Arc<SinkCounters> {
        lock(&self.inner)
            .sinks
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The names of the sinks, sorted.
    pub fn sink_names(&self) -> Vec<String> {
        lock(&self.inner).sinks.keys().cloned().collect()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> MetricsSnapshot {
        Self::snapshot_of(&lock(&self.inner))
    }

    fn snapshot_of(r: &Registry) -> MetricsSnapshot {
        MetricsSnapshot {
            queued: r.queued.values().cloned().collect(),
            running: r.running.clone(),
            completed: r.completed.iter().cloned().collect(),
            total_completed: r.total_completed,
            total_records: r.total_records,
            total_records_out: r.total_records_out,
            histograms: r.histograms.clone(),
        }
    }

    /// The completed batches still retained, oldest first.
    pub fn completed_batches(&self) -> Vec<BatchInfo> {
        lock(&self.inner).completed.iter().cloned().collect()
    }

    /// Blocks until `pred` holds for the registry, or `timeout` passed (a guard against
    /// hangs). Returns true if it held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&MetricsSnapshot) -> bool) -> bool {
        self.wait_registry(timeout, |r| pred(&Self::snapshot_of(r)))
    }

    /// Blocks until the batch at `time` (or a later one) has completed, or the context
    /// terminated, or `timeout` passed (a guard against hangs, not a way to pace work).
    /// Returns true if the batch completed.
    pub fn wait_for_batch(&self, time: Time, timeout: Duration) -> bool {
        let done = |r: &Registry| r.last_completed.is_some_and(|t| t >= time);
        self.wait_registry(timeout, |r| done(r) || r.terminated);
        done(&lock(&self.inner))
    }

    fn wait_registry(&self, timeout: Duration, pred: impl Fn(&Registry) -> bool) -> bool {
        let guard = lock(&self.inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |r| !pred(r))
            .unwrap_or_else(|p| p.into_inner());
        pred(&guard)
    }
}
