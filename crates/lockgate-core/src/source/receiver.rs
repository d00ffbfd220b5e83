//! Receivers: sources that push records from their own thread (sockets, message
//! systems without replay). Implement [`Receiver`] to write one.
//!
//! A supervisor thread runs the receiver; when it returns an error (or returns while the
//! context still runs) the supervisor logs it and restarts it after a back-off that
//! doubles from 100 ms up to 5 s and resets once records flow again. Records a receiver
//! [`store`](ReceiverContext::store)s are buffered; each batch takes everything stored
//! before it was planned.
//!
//! With a checkpoint directory, the records a batch takes are logged in its plan before
//! it runs, so a batch interrupted by a crash is re-run with the same records. What a
//! receiver has stored but no batch has taken yet when the process dies is lost: a
//! receiver is not a replayable source.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::codec::{from_bytes, to_bytes, Codec};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{BoxError, Error, Result};
use crate::graph::{lock, panic_message, InputInfo, InputSource};
use crate::metrics::SourceCounters;
use crate::source::{register, SourceCompute};

/// A push source run on its own thread.
pub trait Receiver<T>: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> String {
        "receiver".into()
    }

    /// Receives records and [`store`](ReceiverContext::store)s them until
    /// [`is_stopped`](ReceiverContext::is_stopped) turns true. Return `Err` when the
    /// connection is lost: the supervisor restarts the receiver after a back-off.
    fn receive(&mut self, ctx: &ReceiverContext<T>) -> std::result::Result<(), BoxError>;
}

struct Shared<T> {
    buffer: Mutex<Vec<T>>,
    stopped: AtomicBool,
    stop_lock: Mutex<()>,
    stop_signal: Condvar,
    received: AtomicU64,
    received_changed: Condvar,
    received_lock: Mutex<()>,
    counters: Arc<SourceCounters>,
}

/// What a running receiver uses to hand over records.
pub struct ReceiverContext<T> {
    shared: Arc<Shared<T>>,
}

impl<T> ReceiverContext<T> {
    /// Stores one record; it goes into the next planned batch.
    pub fn store(&self, item: T) {
        lock(&self.shared.buffer).push(item);
        self.received(1);
    }

    /// Stores many records at once.
    pub fn store_many(&self, items: Vec<T>) {
        let n = items.len() as u64;
        lock(&self.shared.buffer).extend(items);
        self.received(n);
    }

    fn received(&self, n: u64) {
        self.shared.received.fetch_add(n, Ordering::AcqRel);
        SourceCounters::add(&self.shared.counters.records, n);
        let _g = lock(&self.shared.received_lock);
        self.shared.received_changed.notify_all();
    }

    /// True once the context stops the receiver.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// The source's counters (for bad input the receiver handles itself).
    pub fn counters(&self) -> &SourceCounters {
        &self.shared.counters
    }

    /// Waits up to `d` unless the receiver is stopped first. Returns true if stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let g = lock(&self.shared.stop_lock);
        let _ = self
            .shared
            .stop_signal
            .wait_timeout_while(g, d, |_| !self.is_stopped())
            .unwrap_or_else(|p| p.into_inner());
        self.is_stopped()
    }
}

struct ReceiverInput<T> {
    name: String,
    shared: Arc<Shared<T>>,
    receiver: Mutex<Option<Box<dyn Receiver<T>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    planned: Mutex<BTreeMap<Time, Vec<T>>>,
    partitions: usize,
    log_records: AtomicBool,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn supervise<T: Send + 'static>(
    name: String,
    mut receiver: Box<dyn Receiver<T>>,
    ctx: ReceiverContext<T>,
) {
    let mut backoff = MIN_BACKOFF;
    while !ctx.is_stopped() {
        let before = ctx.shared.received.load(Ordering::Acquire);
        let outcome = catch_unwind(AssertUnwindSafe(|| receiver.receive(&ctx)));
        if ctx.is_stopped() {
            break;
        }
        let reason = match outcome {
            Ok(Ok(())) => "receiver returned".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(payload) => format!("receiver panicked: {}", panic_message(payload)),
        };
        if ctx.shared.received.load(Ordering::Acquire) > before {
            backoff = MIN_BACKOFF;
        }
        tracing::warn!(source = %name, %reason, retry_in_ms = backoff.as_millis() as u64, "restarting receiver");
        if ctx.sleep(backoff) {
            break;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl<T: Data + Codec> InputSource for ReceiverInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, bounded: bool, _recovered: bool) -> Result<()> {
        if bounded {
            return Err(Error::Config(format!(
                "source `{}` is a receiver (unbounded); a bounded run (--once / \
                 Trigger::AvailableNow) needs files or a queue",
                self.name
            )));
        }
        let Some(receiver) = lock(&self.receiver).take() else {
            return Err(Error::Lifecycle(format!(
                "receiver `{}` was already started",
                self.name
            )));
        };
        let ctx = ReceiverContext {
            shared: self.shared.clone(),
        };
        let name = self.name.clone();
        let handle = std::thread::Builder::new()
            .name(format!("lockgate-{}", self.name))
            .spawn(move || supervise(name, receiver, ctx))
            .map_err(|e| Error::Source {
                source_name: self.name.clone(),
                message: format!("cannot start receiver thread: {e}"),
            })?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        {
            let _g = lock(&self.shared.stop_lock);
            self.shared.stop_signal.notify_all();
        }
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let items = std::mem::take(&mut *lock(&self.shared.buffer));
        let records = items.len() as u64;
        // The plan logs the records themselves: what a batch took is replayable.
        let descriptor = if self.log_records.load(Ordering::Acquire) {
            to_bytes(&items)
        } else {
            Vec::new()
        };
        lock(&self.planned).insert(t, items);
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description: format!("{records} received record(s)"),
        };
        Ok((info, descriptor))
    }

    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
        let items: Vec<T> = from_bytes(descriptor).map_err(|e| Error::Source {
            source_name: self.name.clone(),
            message: format!("logged records do not decode: {e}"),
        })?;
        lock(&self.planned).insert(t, items);
        Ok(())
    }

    fn enable_checkpoint(&self) {
        self.log_records.store(true, Ordering::Release);
    }

    fn has_pending(&self) -> bool {
        !lock(&self.shared.buffer).is_empty()
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        *p = p.split_off(&done.plus_ms(1));
    }
}

impl<T: Data + Codec> SourceCompute<T> for ReceiverInput<T> {
    fn compute(&self, t: Time) -> Result<Batch<T>> {
        let items = lock(&self.planned).remove(&t).unwrap_or_default();
        Ok(Batch::from_vec(items, self.partitions))
    }
}

/// The stream of a receiver: a `DStream<T>` (by `Deref`) plus receiver statistics.
pub struct ReceiverInputDStream<T> {
    stream: DStream<T>,
    shared: Arc<Shared<T>>,
}

impl<T> ReceiverInputDStream<T> {
    /// Records stored by the receiver since start.
    pub fn received_count(&self) -> u64 {
        self.shared.received.load(Ordering::Acquire)
    }

    /// Blocks until the receiver has stored at least `n` records in all, or `timeout`
    /// passed (a guard against hangs). Returns true if `n` were received.
    pub fn wait_for_received(&self, n: u64, timeout: Duration) -> bool {
        let g = lock(&self.shared.received_lock);
        let _ = self
            .shared
            .received_changed
            .wait_timeout_while(g, timeout, |_| self.received_count() < n)
            .unwrap_or_else(|p| p.into_inner());
        self.received_count() >= n
    }

    /// The stream itself.
    pub fn stream(&self) -> DStream<T> {
        self.stream.clone()
    }
}

impl<T> Deref for ReceiverInputDStream<T> {
    type Target = DStream<T>;
    fn deref(&self) -> &DStream<T> {
        &self.stream
    }
}

impl StreamingContext {
    /// A stream fed by a user-written [`Receiver`].
    pub fn receiver_stream<T: Data + Codec>(
        &self,
        receiver: impl Receiver<T>,
    ) -> ReceiverInputDStream<T> {
        let name = format!(
            "{}-{}",
            receiver.name(),
            self.metrics_ref().source_names().len()
        );
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_signal: Condvar::new(),
            received: AtomicU64::new(0),
            received_changed: Condvar::new(),
            received_lock: Mutex::new(()),
            counters: self.metrics_ref().source(&name),
        });
        let src = Arc::new(ReceiverInput {
            name,
            shared: shared.clone(),
            receiver: Mutex::new(Some(Box::new(receiver))),
            thread: Mutex::new(None),
            planned: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
            log_records: AtomicBool::new(false),
        });
        let stream = register(self, "receiver_stream", src);
        ReceiverInputDStream { stream, shared }
    }
}
