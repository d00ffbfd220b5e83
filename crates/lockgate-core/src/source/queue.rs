//! Queue and constant sources: batches given by the program (tests and demos). The
//! constant source is replayable; for a replayable sequence see
//! [`seq_stream`](crate::StreamingContext::seq_stream).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::Result;
use crate::metrics::SourceCounters;
use crate::source::{register, source_name};
use crate::traits::{InputSource, SourceCompute};
use crate::types::{lock, InputInfo};

/// A queue of batches feeding a [`queue_stream`](StreamingContext::queue_stream);
/// cloneable, so the program can push more batches while the context runs.
pub struct InputQueue<T> {
    inner: Arc<Mutex<VecDeque<Vec<T>>>>,
}

impl<T> Clone for InputQueue<T> {
    fn clone(&self) -> Self {
        InputQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for InputQueue<T> {
    fn default() -> Self {
        InputQueue {
            inner: Arc::new(Mutex::new(VecDeque::new())),
        }
    }
}

impl<T> InputQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue holding `batches`, in order.
    pub fn from_batches(batches: impl IntoIterator<Item = Vec<T>>) -> Self {
        let q = Self::new();
        lock(&q.inner).extend(batches);
        q
    }

    /// Adds a batch at the end.
    pub fn push(&self, batch: Vec<T>) {
        lock(&self.inner).push_back(batch);
    }

    /// Number of batches waiting.
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// True when no batch is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct QueueInput<T> {
    name: String,
    queue: InputQueue<T>,
    one_at_a_time: bool,
    default: Option<Vec<T>>,
    planned: Mutex<BTreeMap<Time, Vec<T>>>,
    partitions: usize,
    counters: Arc<SourceCounters>,
}

impl<T: Data> InputSource for QueueInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, _bounded: bool, _recovered: bool) -> Result<()> {
        Ok(())
    }

    fn stop(&self) {}

    fn checkpoint_support(&self) -> std::result::Result<(), String> {
        Err(
            "queue_stream is not replayable (its batches live only in this process); \
             checkpoint a job that reads files or a socket, or run queue streams without a \
             checkpoint directory"
                .into(),
        )
    }

    fn replay(&self, _t: Time, _descriptor: &[u8]) -> Result<()> {
        Err(crate::error::Error::Source {
            source_name: self.name.clone(),
            message: "a queue stream cannot be replayed".into(),
        })
    }

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let (items, taken) = {
            let mut q = lock(&self.queue.inner);
            if self.one_at_a_time {
                let item = q.pop_front();
                let taken = usize::from(item.is_some());
                (item, taken)
            } else {
                let taken = q.len();
                let all: Vec<T> = q.drain(..).flatten().collect();
                (if taken > 0 { Some(all) } else { None }, taken)
            }
        };
        let items = items.or_else(|| self.default.clone()).unwrap_or_default();
        let records = items.len() as u64;
        SourceCounters::add(&self.counters.records, records);
        lock(&self.planned).insert(t, items);
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description: format!("{taken} queued batch(es)"),
        };
        Ok((info, Vec::new()))
    }

    fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        *p = p.split_off(&done.plus_ms(1));
    }
}

impl<T: Data> SourceCompute<T> for QueueInput<T> {
    fn compute(&self, t: Time) -> Result<Batch<T>> {
        let items = lock(&self.planned).remove(&t).unwrap_or_default();
        Ok(Batch::from_vec(items, self.partitions))
    }
}

struct ConstantInput<T> {
    name: String,
    data: Vec<T>,
    partitions: usize,
    counters: Arc<SourceCounters>,
}

impl<T: Data> InputSource for ConstantInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn start(&self, _bounded: bool, _recovered: bool) -> Result<()> {
        Ok(())
    }
    fn stop(&self) {}
    fn plan(&self, _t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let records = self.data.len() as u64;
        SourceCounters::add(&self.counters.records, records);
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description: "constant batch".into(),
        };
        Ok((info, Vec::new()))
    }
    fn replay(&self, _t: Time, _descriptor: &[u8]) -> Result<()> {
        Ok(())
    }
    fn has_pending(&self) -> bool {
        false
    }
    fn forget(&self, _done: Time) {}
}

impl<T: Data> SourceCompute<T> for ConstantInput<T> {
    fn compute(&self, _t: Time) -> Result<Batch<T>> {
        Ok(Batch::from_vec(self.data.clone(), self.partitions))
    }
}

/// Options of [`StreamingContext::queue_stream_with`], named where Spark's
/// `queueStream(queue, oneAtATime, defaultRDD)` takes them by position.
pub struct QueueStreamOptions<T> {
    one_at_a_time: bool,
    default: Option<Vec<T>>,
    partitions: Option<usize>,
}

impl<T> Default for QueueStreamOptions<T> {
    fn default() -> Self {
        QueueStreamOptions {
            one_at_a_time: true,
            default: None,
            partitions: None,
        }
    }
}

impl<T> QueueStreamOptions<T> {
    /// The defaults: each batch takes the next queued batch; an empty queue gives empty
    /// batches; the context's parallelism in partitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each batch takes everything queued since the last one (Spark's
    /// `oneAtATime = false`).
    pub fn all_at_once(mut self) -> Self {
        self.one_at_a_time = false;
        self
    }

    /// When the queue is empty, a batch is `data` (Spark's `defaultRDD`).
    pub fn default_batch(mut self, data: Vec<T>) -> Self {
        self.default = Some(data);
        self
    }

    /// Batches have `n` partitions (at least 1; the elements of a batch are cut into
    /// contiguous slices as Spark's `parallelize(seq, n)` cuts them) instead of the
    /// context's parallelism.
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
        self
    }
}

impl StreamingContext {
    /// A stream fed from `queue`: with `one_at_a_time`, each batch takes the next queued
    /// batch; otherwise each batch takes everything queued. When the queue is empty, a
    /// batch is `default` (or empty). Spark's positional form; see
    /// [`queue_stream_with`](Self::queue_stream_with) for named options.
    pub fn queue_stream<T: Data>(
        &self,
        queue: InputQueue<T>,
        one_at_a_time: bool,
        default: Option<Vec<T>>,
    ) -> DStream<T> {
        let opts = QueueStreamOptions {
            one_at_a_time,
            default,
            partitions: None,
        };
        self.queue_stream_with(queue, opts)
    }

    /// A stream fed from `queue`, with named options.
    ///
    /// ```
    /// use lockgate_core::{testing::bounded_context, testing::collect_batches, InputQueue};
    /// use lockgate_core::QueueStreamOptions;
    ///
    /// let ctx = bounded_context(2).unwrap();
    /// let q = InputQueue::from_batches(vec![vec![1, 2, 3]]);
    /// let parts = collect_batches(
    ///     &ctx.queue_stream_with(q, QueueStreamOptions::new().partitions(3)).glom(),
    /// );
    /// ctx.start().unwrap();
    /// ctx.await_termination().unwrap();
    /// assert_eq!(parts.lock().unwrap()[&0], vec![vec![1], vec![2], vec![3]]);
    /// ```
    pub fn queue_stream_with<T: Data>(
        &self,
        queue: InputQueue<T>,
        opts: QueueStreamOptions<T>,
    ) -> DStream<T> {
        let name = source_name(self, "queue");
        let src = Arc::new(QueueInput {
            counters: self.metrics_ref().source(&name),
            name,
            queue,
            one_at_a_time: opts.one_at_a_time,
            default: opts.default,
            planned: Mutex::new(BTreeMap::new()),
            partitions: opts.partitions.unwrap_or_else(|| self.parallelism()).max(1),
        });
        register(self, "queue_stream", src)
    }

    /// A stream whose every batch is `data`.
    pub fn constant_input_stream<T: Data>(&self, data: Vec<T>) -> DStream<T> {
        let name = source_name(self, "constant");
        let src = Arc::new(ConstantInput {
            counters: self.metrics_ref().source(&name),
            name,
            data,
            partitions: self.parallelism(),
        });
        register(self, "constant_input_stream", src)
    }
}
