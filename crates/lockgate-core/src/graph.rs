//! The operator graph: nodes with stable names, per-batch memoisation, input sources and
//! output operations, and the code that runs one batch through it.
//!
//! Every [`DStream`](crate::DStream) is a handle on one node. A node computes its
//! [`Batch`] for a batch time from its parents' batches. A node keeps (caches) a computed
//! batch for the rest of the batch only when it has to: when several consumers read it,
//! or when it carries state (stateful nodes, including windows that buffer their input,
//! are computed at every batch). Otherwise its single consumer takes the batch by value
//! and no element is copied.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::batch::{Batch, Data};
use crate::clock::{Clock, Time};
use crate::error::{Error, Result};
use crate::traits::{CommittedBatches, InputSource, Operator, Stateful};
use crate::types::{lock, BatchContext, BatchId, InputInfo, NameFn, OutputOpInfo};

/// Turns a caught panic payload into a message.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

thread_local! {
    /// Inclusive time (ns) of the nodes computed inside the node being computed on this
    /// thread, one entry per nesting level: what makes the times exclusive.
    static NESTED_NS: std::cell::RefCell<Vec<u128>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Exclusive compute time and output size of each operator during the current batch.
#[derive(Debug, Default)]
pub(crate) struct OpTimes {
    by_node: Mutex<BTreeMap<usize, (String, u128, u64)>>,
}

impl OpTimes {
    fn record(&self, id: usize, name: String, ns: u128, records: u64) {
        let mut m = lock(&self.by_node);
        let e = m.entry(id).or_insert((name, 0, 0));
        e.1 += ns;
        e.2 += records;
    }

    /// Takes what was recorded, in graph order.
    pub fn take(&self) -> Vec<crate::metrics::OperatorInfo> {
        std::mem::take(&mut *lock(&self.by_node))
            .into_values()
            .map(|(name, ns, records)| crate::metrics::OperatorInfo {
                name,
                time_us: u64::try_from(ns / 1000).unwrap_or(u64::MAX),
                records,
            })
            .collect()
    }
}

/// The batch clock of a graph: zero time and interval, fixed at start.
#[derive(Debug)]
pub(crate) struct Timing {
    pub interval_ms: i64,
    zero_ms: AtomicI64,
    base_id: std::sync::atomic::AtomicU64,
    /// How long every node keeps the batches it computed (`StreamingContext::remember`):
    /// 0, the default, keeps them only while the batch runs.
    pub remember_ms: AtomicI64,
    /// The least common multiple of the interval and every node's slide: batch times
    /// may skip ahead by multiples of it without moving any window's alignment.
    period_ms: AtomicI64,
    /// No batch of this run is at or before this time (the zero time at start, or
    /// before the first batch recovery re-runs); skipping ahead does not move it.
    floor_ms: AtomicI64,
    /// How far back any window looks (its length plus its slide): batches without
    /// input run for this long before batch times may skip ahead, so that every window
    /// has let its data go.
    horizon_ms: AtomicI64,
}

impl Timing {
    pub fn zero(&self) -> Time {
        Time(self.zero_ms.load(Ordering::Acquire))
    }

    /// Fixes the zero time; batch `base_id` is the first after it.
    pub fn set_zero(&self, t: Time, base_id: BatchId) {
        self.zero_ms.store(t.0, Ordering::Release);
        self.floor_ms.store(t.0, Ordering::Release);
        self.base_id.store(base_id, Ordering::Release);
    }

    /// Lowers the floor below which no batch runs to `t` (a re-run batch logged before
    /// batch times skipped ahead).
    pub fn lower_floor(&self, t: Time) {
        self.floor_ms.fetch_min(t.0, Ordering::AcqRel);
    }

    /// True when `t` is a batch time of this run for a node sliding by `slide_ms`:
    /// after the floor, and aligned with the zero time.
    pub fn is_batch_time(&self, t: Time, slide_ms: i64) -> bool {
        t.0 > self.floor_ms.load(Ordering::Acquire)
            && t.since(self.zero()).rem_euclid(slide_ms.max(1)) == 0
    }

    /// The period batch times skip ahead by (see [`skip`](Self::skip)).
    pub fn period_ms(&self) -> i64 {
        self.period_ms.load(Ordering::Acquire).max(self.interval_ms)
    }

    /// How long batches without input run before batch times may skip ahead: the
    /// longest window's look-back, or what `remember` keeps.
    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
            .load(Ordering::Acquire)
            .max(self.remember_ms.load(Ordering::Acquire))
    }

    /// Counts a window's look-back into the horizon.
    pub fn add_horizon(&self, ms: i64) {
        self.horizon_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Counts a node's slide into the period.
    fn add_slide(&self, slide_ms: i64) {
        fn gcd(a: i64, b: i64) -> i64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let _ = self
            .period_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                let (p, s) = (p.max(self.interval_ms).max(1), slide_ms.max(1));
                Some(p / gcd(p, s) * s)
            });
    }

    /// Moves every batch time from the next batch on `by_ms` later (a multiple of the
    /// period): the next batch keeps its id, and the intervals skipped have no batch.
    pub fn skip(&self, by_ms: i64) {
        self.zero_ms.fetch_add(by_ms, Ordering::AcqRel);
    }

    /// The batch id of batch time `t`.
    pub fn batch_id(&self, t: Time) -> BatchId {
        let n = t.since(self.zero()) / self.interval_ms.max(1) - 1;
        self.base_id.load(Ordering::Acquire) + u64::try_from(n).unwrap_or(0)
    }
}

/// What every node knows about itself, independent of its element type.
#[derive(Debug)]
pub(crate) struct NodeMeta {
    pub id: usize,
    name: RwLock<String>,
    /// The node's slide: it has a batch at zero + k * slide.
    pub slide_ms: i64,
    consumers: AtomicUsize,
    /// Stateful nodes are computed at every valid batch time, in order.
    pub stateful: bool,
    timing: Arc<Timing>,
    op_times: Arc<OpTimes>,
}

impl NodeMeta {
    pub fn name(&self) -> String {
        self.name
            .read()
            .map(|n| n.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_name(&self, name: &str) {
        match self.name.write() {
            Ok(mut n) => *n = name.to_string(),
            Err(p) => *p.into_inner() = name.to_string(),
        }
    }

    /// True when this node produces a batch at time `t`.
    pub fn is_valid(&self, t: Time) -> bool {
        self.timing.is_batch_time(t, self.slide_ms)
    }

    pub fn add_consumer(&self) {
        self.consumers.fetch_add(1, Ordering::AcqRel);
    }

    fn should_cache(&self) -> bool {
        self.stateful
            || self.consumers.load(Ordering::Acquire) > 1
            || self.timing.remember_ms.load(Ordering::Acquire) > 0
    }
}

/// A node of the graph: its operator plus memoised batches.
pub(crate) struct NodeCell<T> {
    pub meta: Arc<NodeMeta>,
    op: Box<dyn Operator<T>>,
    cache: Mutex<BTreeMap<Time, Batch<T>>>,
}

impl<T: Data> NodeCell<T> {
    /// The node's batch for `cx`: empty when the node has no batch at its time.
    pub fn get_or_compute(&self, cx: &BatchContext) -> Result<Batch<T>> {
        let t = cx.time;
        if !self.meta.is_valid(t) {
            return Ok(Batch::empty());
        }
        if let Some(b) = lock(&self.cache).get(&t) {
            return Ok(b.clone());
        }
        let started = std::time::Instant::now();
        NESTED_NS.with(|n| n.borrow_mut().push(0));
        let outcome = catch_unwind(AssertUnwindSafe(|| self.op.compute(cx)));
        let inclusive = started.elapsed().as_nanos();
        let nested = NESTED_NS.with(|n| {
            let mut n = n.borrow_mut();
            let nested = n.pop().unwrap_or(0);
            if let Some(parent) = n.last_mut() {
                *parent += inclusive;
            }
            nested
        });
        let batch = match outcome {
            Ok(Ok(batch)) => batch,
            Ok(Err(Error::Operator {
                operator,
                time,
                message,
            })) if operator.is_empty() => {
                return Err(Error::Operator {
                    operator: self.meta.name(),
                    time,
                    message,
                })
            }
            Ok(Err(e)) => return Err(e),
            Err(payload) => {
                return Err(Error::Operator {
                    operator: self.meta.name(),
                    time: t,
                    message: panic_message(payload),
                })
            }
        };
        self.meta.op_times.record(
            self.meta.id,
            self.meta.name(),
            inclusive.saturating_sub(nested),
            batch.len() as u64,
        );
        if self.meta.should_cache() {
            lock(&self.cache).insert(t, batch.clone());
        }
        Ok(batch)
    }
}

/// Type-erased access to a node for the scheduler.
pub(crate) trait AnyNode: Send + Sync {
    /// Prepares the node for `cx`, and computes it if it must be computed at every batch.
    fn touch(&self, cx: &BatchContext) -> Result<()>;
    /// Drops memoised batches no longer needed after batch `t` completed.
    fn forget(&self, done: Time);
}

impl<T: Data> AnyNode for NodeCell<T> {
    fn touch(&self, cx: &BatchContext) -> Result<()> {
        let t = cx.time;
        let prepared = catch_unwind(AssertUnwindSafe(|| self.op.prepare(cx))).unwrap_or_else(|p| {
            Err(Error::Operator {
                operator: String::new(),
                time: t,
                message: panic_message(p),
            })
        });
        if let Err(e) = prepared {
            return Err(match e {
                Error::Operator {
                    operator,
                    time,
                    message,
                } if operator.is_empty() => Error::Operator {
                    operator: self.meta.name(),
                    time,
                    message,
                },
                other => other,
            });
        }
        if self.meta.stateful && self.meta.is_valid(t) {
            self.get_or_compute(cx)?;
        }
        Ok(())
    }

    fn forget(&self, done: Time) {
        let remember = self.meta.timing.remember_ms.load(Ordering::Acquire);
        let mut cache = lock(&self.cache);
        let keep = cache.split_off(&done.plus_ms(1 - remember));
        *cache = keep;
    }
}

impl<T: Data> NodeCell<T> {
    /// The batches this node computed and still remembers, with times in `[from, to]`.
    pub fn remembered(&self, from: Time, to: Time) -> Vec<(Time, Batch<T>)> {
        lock(&self.cache)
            .range(from..=to)
            .map(|(t, b)| (*t, b.clone()))
            .collect()
    }
}

/// An output operation: the action that makes a batch happen.
pub(crate) struct OutputOp {
    pub name: String,
    pub meta: Arc<NodeMeta>,
    /// Runs the output for a batch; returns the number of elements it wrote.
    pub run: Box<dyn Fn(&BatchContext) -> Result<u64> + Send + Sync>,
    /// A sink's counters: its retries during the batch go into the batch's record.
    pub sink: Option<Arc<crate::metrics::SinkCounters>>,
}

/// The whole graph of one streaming context.
pub(crate) struct Graph {
    pub timing: Arc<Timing>,
    pub parallelism: usize,
    pub started: AtomicBool,
    next_id: AtomicUsize,
    nodes: Mutex<Vec<Arc<dyn AnyNode>>>,
    inputs: Mutex<Vec<Arc<dyn InputSource>>>,
    outputs: Mutex<Vec<Arc<OutputOp>>>,
    states: Mutex<Vec<Arc<dyn Stateful>>>,
    sinks: Mutex<Vec<Arc<dyn CommittedBatches>>>,
    errors: Mutex<Vec<Error>>,
    app_name: String,
    /// Operators whose state grows without bound (event time without a watermark).
    unbounded_state: Mutex<Vec<(Arc<NodeMeta>, &'static str)>>,
    pub metrics: Arc<crate::metrics::StreamingMetrics>,
    pub op_times: Arc<OpTimes>,
}

impl Graph {
    pub fn new(
        app_name: &str,
        interval_ms: i64,
        parallelism: usize,
        metrics: Arc<crate::metrics::StreamingMetrics>,
    ) -> Self {
        Graph {
            timing: Arc::new(Timing {
                interval_ms,
                zero_ms: AtomicI64::new(0),
                base_id: std::sync::atomic::AtomicU64::new(0),
                remember_ms: AtomicI64::new(0),
                period_ms: AtomicI64::new(interval_ms),
                floor_ms: AtomicI64::new(0),
                horizon_ms: AtomicI64::new(0),
            }),
            parallelism,
            started: AtomicBool::new(false),
            next_id: AtomicUsize::new(0),
            nodes: Mutex::new(Vec::new()),
            inputs: Mutex::new(Vec::new()),
            outputs: Mutex::new(Vec::new()),
            states: Mutex::new(Vec::new()),
            sinks: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            app_name: app_name.to_string(),
            unbounded_state: Mutex::new(Vec::new()),
            metrics,
            op_times: Arc::new(OpTimes::default()),
        }
    }

    /// Adds a node; `slide_ms` is its slide, `stateful` marks state-carrying nodes.
    pub fn add_node<T: Data>(
        &self,
        kind: &'static str,
        slide_ms: i64,
        stateful: bool,
        op: Box<dyn Operator<T>>,
    ) -> Arc<NodeCell<T>> {
        let meta = self.new_meta(kind, slide_ms, stateful);
        self.add_node_at(meta, op)
    }

    /// A node's identity before its operator exists (for operators that need their
    /// node's name or timing, such as an event-time operator's watermark counters);
    /// [`add_node_at`](Self::add_node_at) adds the node.
    pub fn new_meta(&self, kind: &'static str, slide_ms: i64, stateful: bool) -> Arc<NodeMeta> {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        if self.started.load(Ordering::Acquire) {
            self.defer_error(Error::Lifecycle(format!(
                "operator `{kind}-{id}` was added after the context started; \
                 build the whole graph before calling start()"
            )));
        }
        self.timing.add_slide(slide_ms);
        Arc::new(NodeMeta {
            id,
            name: RwLock::new(format!("{kind}-{id}")),
            slide_ms,
            consumers: AtomicUsize::new(0),
            stateful,
            timing: self.timing.clone(),
            op_times: self.op_times.clone(),
        })
    }

    /// Adds the node of `meta` computed by `op`, registering the operator's state.
    pub fn add_node_at<T: Data>(
        &self,
        meta: Arc<NodeMeta>,
        op: Box<dyn Operator<T>>,
    ) -> Arc<NodeCell<T>> {
        let name: NameFn = {
            let meta = meta.clone();
            Arc::new(move || meta.name())
        };
        if let Some(state) = op.state(name) {
            self.add_state(state);
        }
        let node = Arc::new(NodeCell {
            meta,
            op,
            cache: Mutex::new(BTreeMap::new()),
        });
        lock(&self.nodes).push(node.clone());
        node
    }

    pub fn add_input(&self, input: Arc<dyn InputSource>) {
        lock(&self.inputs).push(input);
    }

    pub fn app_name(&self) -> String {
        self.app_name.clone()
    }

    /// Records that `meta`'s state grows without bound, and why (warned about at start).
    pub fn warn_unbounded_state(&self, meta: &Arc<NodeMeta>, why: &'static str) {
        lock(&self.unbounded_state).push((meta.clone(), why));
    }

    /// Warnings about the graph, naming the operators (final names, so call at start).
    pub fn warnings(&self) -> Vec<String> {
        lock(&self.unbounded_state)
            .iter()
            .map(|(meta, why)| {
                format!(
                    "operator `{}`: {why}; its state will grow forever",
                    meta.name()
                )
            })
            .collect()
    }

    /// Registers checkpointable state (of an operator or a source).
    pub fn add_state(&self, state: Arc<dyn Stateful>) {
        lock(&self.states).push(state);
    }

    pub fn states(&self) -> Vec<Arc<dyn Stateful>> {
        lock(&self.states).clone()
    }

    /// Registers a sink, asked at start which batch it committed last.
    pub fn add_sink(&self, sink: Arc<dyn CommittedBatches>) {
        lock(&self.sinks).push(sink);
    }

    pub fn sinks(&self) -> Vec<Arc<dyn CommittedBatches>> {
        lock(&self.sinks).clone()
    }

    pub fn add_output(&self, op: OutputOp) {
        if self.started.load(Ordering::Acquire) {
            self.defer_error(Error::Lifecycle(format!(
                "output `{}` was added after the context started",
                op.name
            )));
        }
        op.meta.add_consumer();
        lock(&self.outputs).push(Arc::new(op));
    }

    /// Records an error found while building the graph; `start` reports it.
    pub fn defer_error(&self, e: Error) {
        lock(&self.errors).push(e);
    }

    pub fn output_count(&self) -> usize {
        lock(&self.outputs).len()
    }

    pub fn inputs(&self) -> Vec<Arc<dyn InputSource>> {
        lock(&self.inputs).clone()
    }

    /// Checks the graph: deferred construction errors, at least one output.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = lock(&self.errors).drain(..).next() {
            return Err(e);
        }
        if lock(&self.outputs).is_empty() {
            return Err(Error::Graph {
                operator: "(none)".into(),
                reason: "no output operations registered, so nothing to execute; \
                         add print(), save_as_text_files() or foreach_batch() to a stream"
                    .into(),
            });
        }
        Ok(())
    }

    /// Fixes the timing and freezes the graph; called once by `start`.
    pub fn start(&self, zero: Time, base_id: BatchId) {
        self.timing.set_zero(zero, base_id);
        self.started.store(true, Ordering::Release);
    }

    /// Runs every output operation valid at the batch's time, then forgets what is no
    /// longer needed. Returns per-output timings and the first failure.
    pub fn run_batch(
        &self,
        cx: &BatchContext,
        inputs: &mut [InputInfo],
        clock: &dyn Clock,
    ) -> (Vec<OutputOpInfo>, Result<()>) {
        let t = cx.time;
        let mut infos = Vec::new();
        let nodes = lock(&self.nodes).clone();
        let outputs = lock(&self.outputs).clone();
        let mut result = Ok(());
        for node in &nodes {
            if let Err(e) = node.touch(cx) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            for op in outputs.iter().filter(|op| op.meta.is_valid(t)) {
                let start = clock.now();
                let retried = || {
                    op.sink
                        .as_ref()
                        .map_or(0, |c| c.retries.load(Ordering::Relaxed))
                };
                let retries_before = retried();
                let r = catch_unwind(AssertUnwindSafe(|| (op.run)(cx))).unwrap_or_else(|payload| {
                    Err(Error::Operator {
                        operator: op.name.clone(),
                        time: t,
                        message: panic_message(payload),
                    })
                });
                infos.push(OutputOpInfo {
                    name: op.name.clone(),
                    start,
                    end: clock.now(),
                    records: *r.as_ref().unwrap_or(&0),
                    failure: r.as_ref().err().map(|e| e.to_string()),
                    retries: retried() - retries_before,
                });
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
            }
        }
        for node in &nodes {
            node.forget(t);
        }
        for input in lock(&self.inputs).iter() {
            if let Some(n) = input.records_read(t) {
                let name = input.name();
                for info in inputs.iter_mut().filter(|i| i.source == name) {
                    info.records = n;
                }
            }
            input.forget(t);
        }
        (infos, result)
    }
}
