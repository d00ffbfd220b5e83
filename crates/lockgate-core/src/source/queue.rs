//! Queue, sequence and constant sources: batches given by the program (tests and
//! demos). Only the sequence and constant sources are replayable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{KeyedState, KeyedStateful};
use crate::clock::Time;
use crate::codec::{from_bytes, to_bytes};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::Result;
use crate::graph::{lock, InputInfo, InputSource};
use crate::metrics::SourceCounters;
use crate::source::{register, source_name, SourceCompute};

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

impl StreamingContext {
    /// A stream fed from `queue`: with `one_at_a_time`, each batch takes the next queued
    /// batch; otherwise each batch takes everything queued. When the queue is empty, a
    /// batch is `default` (or empty).
    pub fn queue_stream<T: Data>(
        &self,
        queue: InputQueue<T>,
        one_at_a_time: bool,
        default: Option<Vec<T>>,
    ) -> DStream<T> {
        let name = source_name(self, "queue");
        let src = Arc::new(QueueInput {
            counters: self.metrics_ref().source(&name),
            name,
            queue,
            one_at_a_time,
            default,
            planned: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
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

/// A replayable sequence of batches given in code: batch `k` of the run reads element
/// `k` (then empty batches). Its descriptor is the index, so unlike a queue it works with
/// checkpoints: the test source of recovery tests, and of demos that must survive a
/// restart.
struct SeqInput<T> {
    name: String,
    batches: Vec<Vec<T>>,
    /// Index of the next batch to plan; the checkpointed state is the index after the
    /// last completed batch.
    next: Mutex<usize>,
    done: Arc<Mutex<KeyedState<u8, u64>>>,
    planned: Mutex<BTreeMap<Time, usize>>,
    partitions: usize,
    counters: Arc<SourceCounters>,
}

impl<T: Data> InputSource for SeqInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, _bounded: bool, recovered: bool) -> Result<()> {
        if recovered {
            let done = lock(&self.done);
            let next = done.maps[0].get(&0).copied().unwrap_or(0);
            let mut n = lock(&self.next);
            *n = (*n).max(usize::try_from(next).unwrap_or(usize::MAX));
        }
        Ok(())
    }

    fn stop(&self) {}

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let mut next = lock(&self.next);
        let idx = *next;
        *next += 1;
        lock(&self.planned).insert(t, idx);
        let records = self.batches.get(idx).map_or(0, Vec::len) as u64;
        SourceCounters::add(&self.counters.records, records);
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description: format!("batch #{idx}"),
        };
        Ok((info, to_bytes(&(idx as u64))))
    }

    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
        let idx: u64 = from_bytes(descriptor).map_err(|e| crate::error::Error::Source {
            source_name: self.name.clone(),
            message: format!("logged index does not decode: {e}"),
        })?;
        let idx = usize::try_from(idx).unwrap_or(usize::MAX);
        lock(&self.planned).insert(t, idx);
        let mut next = lock(&self.next);
        *next = (*next).max(idx.saturating_add(1));
        Ok(())
    }

    fn has_pending(&self) -> bool {
        *lock(&self.next) < self.batches.len()
    }

    fn pending_batches(&self) -> Option<u64> {
        Some(self.batches.len().saturating_sub(*lock(&self.next)) as u64)
    }

    fn seed_consumed(&self, descriptors: &[&[u8]]) -> Result<()> {
        for d in descriptors {
            let idx: u64 = from_bytes(d).map_err(|e| crate::error::Error::Source {
                source_name: self.name.clone(),
                message: format!("a sink's recorded index does not decode: {e}"),
            })?;
            let mut next = lock(&self.next);
            *next = (*next).max(usize::try_from(idx).unwrap_or(usize::MAX).saturating_add(1));
        }
        Ok(())
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        let later = p.split_off(&done.plus_ms(1));
        let finished = std::mem::replace(&mut *p, later);
        if let Some(max) = finished.values().max() {
            let mut st = lock(&self.done);
            let st = &mut *st;
            let next = (*max as u64 + 1).max(st.maps[0].get(&0).copied().unwrap_or(0));
            st.maps[0].insert(0, next);
            st.dirty[0].insert(0);
        }
    }
}

impl<T: Data> SourceCompute<T> for SeqInput<T> {
    fn compute(&self, t: Time) -> Result<Batch<T>> {
        let idx = lock(&self.planned).get(&t).copied();
        let items = idx
            .and_then(|i| self.batches.get(i))
            .cloned()
            .unwrap_or_default();
        Ok(Batch::from_vec(items, self.partitions))
    }
}

impl StreamingContext {
    /// A replayable stream of the given batches (see the type's docs): batch `k` of the
    /// run is `batches[k]`, then empty batches; bounded runs end after the last one.
    pub fn seq_stream<T: Data>(&self, batches: Vec<Vec<T>>) -> DStream<T> {
        let name = source_name(self, "seq");
        let done = Arc::new(Mutex::new(KeyedState::new(1, true)));
        let state_name = format!("{name}.position");
        self.graph().add_state(Arc::new(KeyedStateful {
            name: Arc::new(move || state_name.clone()),
            state: done.clone(),
        }));
        let src = Arc::new(SeqInput {
            counters: self.metrics_ref().source(&name),
            name,
            batches,
            next: Mutex::new(0),
            done,
            planned: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
        });
        register(self, "seq_stream", src)
    }
}
