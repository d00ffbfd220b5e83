//! Receivers: sources that push records from their own thread (sockets, message
//! systems without replay). Implement [`Receiver`] to write one.
//!
//! A supervisor thread runs the receiver; when it returns an error (or returns while the
//! context still runs) the supervisor logs it and restarts it after a back-off that
//! doubles from 100 ms up to 5 s and resets once records flow again. Records a receiver
//! [`store`](ReceiverContext::store)s are buffered; each batch takes everything stored
//! before it was planned.
//!
//! With a checkpoint directory, a receiver writes what it stored to a write-ahead log
//! (`<checkpoint>/wal/<source>/`) every block interval (200 ms by default), fsynced,
//! before the records count as stored; batches take whole stored blocks and log their
//! ids in their plans. After a crash, a re-run batch reads its blocks back from the log,
//! and blocks no batch had taken yet go into the next batch: exactly once for every
//! record that reached the log. Records received in the last block interval before the
//! crash never reached it and are lost — a socket cannot be replayed. (With
//! `receiver_wal(false)` the plans carry the records themselves instead, and everything
//! not yet planned is lost.)

use std::collections::{BTreeMap, VecDeque};
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::{Batch, Data};
use crate::checkpoint::state::KeyedState;
use crate::clock::Time;
use crate::codec::{from_bytes, to_bytes, Codec, CodecError};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{BoxError, Error, Result};
use crate::graph::panic_message;
use crate::metrics::SourceCounters;
use crate::source::{register, source_name, source_state};
use crate::storage::Storage;
use crate::traits::{InputSource, SourceCompute};
use crate::types::{lock, InputInfo};
use crate::wal::{BlockRef, Wal};

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
    /// Connected and receiving (mirrors the source status, read without its lock).
    active: AtomicBool,
    stopped: AtomicBool,
    stop_lock: Mutex<()>,
    stop_signal: Condvar,
    received: AtomicU64,
    /// The rate limit in records per second as f64 bits (0: none).
    rate_bits: AtomicU64,
    /// Token bucket: available records and when it was last refilled.
    bucket: Mutex<(f64, Instant)>,
    /// Records durably stored (in the WAL, or received when there is none).
    stored: AtomicU64,
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
        self.throttle(1);
        lock(&self.shared.buffer).push(item);
        self.received(1);
    }

    /// Stores many records at once.
    pub fn store_many(&self, items: Vec<T>) {
        let n = items.len() as u64;
        self.throttle(n);
        lock(&self.shared.buffer).extend(items);
        self.received(n);
    }

    /// With a rate limit (backpressure), waits until `n` more records fit in it.
    fn throttle(&self, n: u64) {
        let rate = f64::from_bits(self.shared.rate_bits.load(Ordering::Acquire));
        if rate <= 0.0 {
            return;
        }
        let wait = take_tokens(&mut lock(&self.shared.bucket), Instant::now(), rate, n);
        if let Some(wait) = wait {
            self.sleep(wait);
        }
    }

    fn received(&self, n: u64) {
        self.shared.received.fetch_add(n, Ordering::AcqRel);
        if !self.shared.active.load(Ordering::Acquire) {
            self.connected();
        }
        SourceCounters::add(&self.shared.counters.records, n);
        let _g = lock(&self.shared.received_lock);
        self.shared.received_changed.notify_all();
    }

    /// Says the receiver is connected and receiving (the UI and the API show it
    /// active). The supervisor marks it inactive, with its error, when `receive`
    /// returns; storing records marks it active too.
    pub fn connected(&self) {
        self.shared.active.store(true, Ordering::Release);
        self.shared.counters.update_status(|s| s.active = true);
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

/// The write-ahead side of a receiver (with a checkpoint directory).
struct WalSide<T> {
    wal: Wal,
    /// Durable blocks no batch has taken yet, in block order.
    stored: VecDeque<(BlockRef, Vec<T>)>,
    /// Blocks found in the log at start; those after `max_planned` are added to
    /// `stored` at the first plan (after the logged batches were re-planned).
    on_disk: Vec<BlockRef>,
    scanned: bool,
    /// The highest block any batch has taken.
    max_planned: Option<u64>,
    /// The highest block taken by each planned batch, for deleting old segments.
    by_time: BTreeMap<Time, u64>,
    failure: Option<Error>,
}

/// Token bucket of a rate limit: refills `rate` tokens per second (holding at most one
/// second's worth), takes `n`, and says how long to wait when that overdraws it.
fn take_tokens(bucket: &mut (f64, Instant), now: Instant, rate: f64, n: u64) -> Option<Duration> {
    bucket.0 = (bucket.0 + now.saturating_duration_since(bucket.1).as_secs_f64() * rate).min(rate);
    bucket.1 = now;
    bucket.0 -= n as f64;
    (bucket.0 < 0.0).then(|| Duration::from_secs_f64(-bucket.0 / rate))
}

struct ReceiverInput<T> {
    name: String,
    shared: Arc<Shared<T>>,
    receiver: Mutex<Option<Box<dyn Receiver<T>>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    planned: Mutex<BTreeMap<Time, Vec<T>>>,
    partitions: usize,
    block_interval: Duration,
    use_wal: bool,
    wal: Arc<Mutex<Option<WalSide<T>>>>,
    /// With a checkpoint but no WAL, plans carry the records themselves.
    log_records: AtomicBool,
    /// Checkpointed: the highest block taken by a completed batch.
    position: Arc<Mutex<KeyedState<u8, u64>>>,
    wal_on: Arc<AtomicBool>,
}

/// Moves what the receiver stored into a durable WAL block. Returns false on failure.
fn push_block<T: Data + Codec>(
    shared: &Shared<T>,
    side: &Mutex<Option<WalSide<T>>>,
    name: &str,
) -> bool {
    let mut guard = lock(side);
    let Some(w) = guard.as_mut() else { return true };
    if w.failure.is_some() {
        return false;
    }
    let items = std::mem::take(&mut *lock(&shared.buffer));
    if items.is_empty() {
        return true;
    }
    let n = items.len() as u64;
    match w.wal.append(&to_bytes(&items)) {
        Ok(r) => {
            w.stored.push_back((r, items));
            let total = shared.stored.fetch_add(n, Ordering::AcqRel) + n;
            tracing::debug!(source = %name, block = r.block, records = n, stored_total = total, "WAL block stored");
            let _g = lock(&shared.received_lock);
            shared.received_changed.notify_all();
            true
        }
        Err(e) => {
            tracing::error!(source = %name, error = %e, "cannot write the receiver's WAL; the job will stop");
            // Keep the records in memory: they were not acknowledged as stored.
            let mut buf = lock(&shared.buffer);
            let newer = std::mem::replace(&mut *buf, items);
            buf.extend(newer);
            w.failure = Some(e);
            false
        }
    }
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
        ctx.shared.active.store(false, Ordering::Release);
        ctx.shared.counters.update_status(|s| {
            s.active = false;
            s.last_error = Some((reason.clone(), crate::metrics::wall_ms()));
        });
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

    fn start(&self, bounded: bool, recovered: bool) -> Result<()> {
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
        if recovered {
            if let Some(w) = lock(&self.wal).as_mut() {
                w.max_planned = lock(&self.position).get(0, &0).copied();
            }
        }
        let ctx = ReceiverContext {
            shared: self.shared.clone(),
        };
        self.shared.counters.update_status(|s| s.is_receiver = true);
        let name = self.name.clone();
        let spawn_err = |e: std::io::Error| Error::Source {
            source_name: self.name.clone(),
            message: format!("cannot start receiver thread: {e}"),
        };
        let handle = std::thread::Builder::new()
            .name(format!("lockgate-{}", self.name))
            .spawn(move || supervise(name, receiver, ctx))
            .map_err(spawn_err)?;
        lock(&self.threads).push(handle);
        if lock(&self.wal).is_some() {
            // Every block interval, what was received becomes a durable WAL block.
            let (shared, side, name, every) = (
                self.shared.clone(),
                self.wal.clone(),
                self.name.clone(),
                self.block_interval,
            );
            let pusher = std::thread::Builder::new()
                .name(format!("lockgate-{}-wal", self.name))
                .spawn(move || {
                    let ctx = ReceiverContext { shared };
                    while !ctx.sleep(every) {
                        push_block(&ctx.shared, &side, &name);
                    }
                })
                .map_err(spawn_err)?;
            lock(&self.threads).push(pusher);
        }
        Ok(())
    }

    fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        {
            let _g = lock(&self.shared.stop_lock);
            self.shared.stop_signal.notify_all();
        }
        for h in lock(&self.threads).drain(..) {
            let _ = h.join();
        }
        // What the receiver stored before it stopped reaches the WAL too.
        push_block(&self.shared, &self.wal, &self.name);
    }

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let mut guard = lock(&self.wal);
        let (items, descriptor) = match guard.as_mut() {
            Some(w) => {
                if let Some(e) = w.failure.take() {
                    return Err(e);
                }
                if !w.scanned {
                    // Blocks an earlier run wrote but no batch took: they reached the WAL,
                    // so they are processed now.
                    w.scanned = true;
                    let after = w.max_planned;
                    let mut old = Vec::new();
                    for r in std::mem::take(&mut w.on_disk) {
                        if after.is_none_or(|m| r.block > m)
                            && !w.stored.iter().any(|(s, _)| s.block == r.block)
                        {
                            old.push((r, self.read_block(&w.wal, &r)?));
                        }
                    }
                    for b in old.into_iter().rev() {
                        w.stored.push_front(b);
                    }
                }
                let blocks: Vec<(BlockRef, Vec<T>)> = w.stored.drain(..).collect();
                let refs: Vec<BlockRef> = blocks.iter().map(|(r, _)| *r).collect();
                if let Some(max) = refs.iter().map(|r| r.block).max() {
                    w.max_planned = Some(w.max_planned.map_or(max, |m| m.max(max)));
                }
                if let Some(m) = w.max_planned {
                    w.by_time.insert(t, m);
                }
                let items: Vec<T> = blocks.into_iter().flat_map(|(_, b)| b).collect();
                (items, to_bytes(&refs))
            }
            None => {
                let items = std::mem::take(&mut *lock(&self.shared.buffer));
                // Without a WAL the plan logs the records themselves.
                let descriptor = if self.log_records.load(Ordering::Acquire) {
                    to_bytes(&items)
                } else {
                    Vec::new()
                };
                (items, descriptor)
            }
        };
        drop(guard);
        let records = items.len() as u64;
        lock(&self.planned).insert(t, items);
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description: format!("{records} received record(s)"),
        };
        Ok((info, descriptor))
    }

    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
        let decode_err = |e: CodecError| Error::Source {
            source_name: self.name.clone(),
            message: format!("logged descriptor does not decode: {e}"),
        };
        let mut guard = lock(&self.wal);
        let items: Vec<T> = match guard.as_mut() {
            Some(w) => {
                let refs: Vec<BlockRef> = from_bytes(descriptor).map_err(decode_err)?;
                let mut items = Vec::new();
                for r in &refs {
                    items.extend(self.read_block(&w.wal, r)?);
                    w.max_planned = Some(w.max_planned.map_or(r.block, |m| m.max(r.block)));
                }
                if let Some(m) = w.max_planned {
                    w.by_time.insert(t, m);
                }
                items
            }
            None => from_bytes(descriptor).map_err(decode_err)?,
        };
        drop(guard);
        lock(&self.planned).insert(t, items);
        Ok(())
    }

    fn enable_checkpoint(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        if !self.use_wal {
            self.log_records.store(true, Ordering::Release);
            return Ok(());
        }
        let (wal, on_disk) = Wal::open(storage, &format!("wal/{}", self.name))?;
        *lock(&self.wal) = Some(WalSide {
            wal,
            stored: VecDeque::new(),
            on_disk,
            scanned: false,
            max_planned: None,
            by_time: BTreeMap::new(),
            failure: None,
        });
        self.wal_on.store(true, Ordering::Release);
        Ok(())
    }

    fn set_rate_limit(&self, records_per_second: f64) {
        self.shared
            .rate_bits
            .store(records_per_second.to_bits(), Ordering::Release);
    }

    fn committed(&self, t: Time) {
        if let Some(w) = lock(&self.wal).as_mut() {
            let later = w.by_time.split_off(&t.plus_ms(1));
            let done = std::mem::replace(&mut w.by_time, later);
            if let Some(max) = done.values().max() {
                w.wal.delete_through(*max);
            }
        }
    }

    fn has_pending(&self) -> bool {
        !lock(&self.shared.buffer).is_empty()
            || lock(&self.wal)
                .as_ref()
                .is_some_and(|w| !w.stored.is_empty() || (!w.scanned && !w.on_disk.is_empty()))
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        *p = p.split_off(&done.plus_ms(1));
        let max = lock(&self.wal)
            .as_ref()
            .and_then(|w| w.by_time.range(..done.plus_ms(1)).map(|(_, m)| *m).max());
        if let Some(max) = max {
            let mut pos = lock(&self.position);
            if pos.get(0, &0) != Some(&max) {
                pos.part(0).insert(0, max);
            }
        }
    }
}

impl<T: Data + Codec> ReceiverInput<T> {
    fn read_block(&self, wal: &Wal, r: &BlockRef) -> Result<Vec<T>> {
        let payload = wal.read(r)?;
        from_bytes(&payload).map_err(|e| Error::Source {
            source_name: self.name.clone(),
            message: format!("WAL block {} does not decode: {e}", r.block),
        })
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
    wal_on: Arc<AtomicBool>,
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

    /// Records durably stored: written to the WAL (with a checkpoint), else received.
    pub fn stored_count(&self) -> u64 {
        if self.wal_enabled() {
            self.shared.stored.load(Ordering::Acquire)
        } else {
            self.received_count()
        }
    }

    fn wal_enabled(&self) -> bool {
        self.wal_on.load(Ordering::Acquire)
    }

    /// Blocks until at least `n` records are durably stored (see
    /// [`stored_count`](Self::stored_count)), or `timeout` passed. Returns true if so.
    pub fn wait_for_stored(&self, n: u64, timeout: Duration) -> bool {
        let g = lock(&self.shared.received_lock);
        let _ = self
            .shared
            .received_changed
            .wait_timeout_while(g, timeout, |_| self.stored_count() < n)
            .unwrap_or_else(|p| p.into_inner());
        self.stored_count() >= n
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
        let name = source_name(self, &receiver.name());
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::new()),
            active: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_signal: Condvar::new(),
            received: AtomicU64::new(0),
            rate_bits: AtomicU64::new(0),
            bucket: Mutex::new((0.0, Instant::now())),
            stored: AtomicU64::new(0),
            received_changed: Condvar::new(),
            received_lock: Mutex::new(()),
            counters: self.metrics_ref().source(&name),
        });
        let wal_on = Arc::new(AtomicBool::new(false));
        let position = source_state(self, &name, "wal-position");
        let src = Arc::new(ReceiverInput {
            name,
            shared: shared.clone(),
            receiver: Mutex::new(Some(Box::new(receiver))),
            threads: Mutex::new(Vec::new()),
            planned: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
            block_interval: self.receiver_block_interval(),
            use_wal: self.receiver_wal(),
            wal: Arc::new(Mutex::new(None)),
            log_records: AtomicBool::new(false),
            position,
            wal_on: wal_on.clone(),
        });
        let stream = register(self, "receiver_stream", src);
        ReceiverInputDStream {
            stream,
            shared,
            wal_on,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_makes_a_burst_wait_and_refills_over_time() {
        let t0 = Instant::now();
        let mut bucket = (0.0, t0);
        // 100 records/s, empty bucket: 50 records must wait half a second.
        assert_eq!(
            take_tokens(&mut bucket, t0, 100.0, 50),
            Some(Duration::from_millis(500))
        );
        // One second later the debt is paid and 50 tokens are back.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(take_tokens(&mut bucket, t1, 100.0, 50), None);
        // A long pause refills at most one second's worth.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(take_tokens(&mut bucket, t2, 100.0, 100), None);
        assert_eq!(
            take_tokens(&mut bucket, t2, 100.0, 10),
            Some(Duration::from_millis(100))
        );
    }
}
