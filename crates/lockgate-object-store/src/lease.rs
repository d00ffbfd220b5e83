//! One owner at a time per checkpoint location, without `flock`: a lease.
//!
//! The object `lease` under the prefix is a small JSON record: the owner's name, its
//! *generation*, its timeout, when it was last renewed (wall clock, for people and for
//! refusing a second process at once) and whether it was released. It is created with a
//! create-only write (`If-None-Match: *`) and changed only by writes conditional on the
//! ETag the writer last saw (`If-Match`), so of two processes racing for it exactly one
//! wins, and every change is seen by the next writer.
//!
//! - **The owner** renews it every fifth of the timeout from a thread of its own. Its
//!   writes count as its own for half the timeout after a renewal was *sent*
//!   (`Lease::check`, before and after every group of writes, and before a sink
//!   commits); past that it first renews again, and a failed conditional renewal means
//!   another process took over: it stops with an error naming it.
//! - **A process taking over** waits until it has seen the same ETag for a whole timeout
//!   on its own monotonic clock (or the lease was released), then writes generation + 1
//!   conditionally on that ETag. Since the owner's validity ends half a timeout after a
//!   renewal it sent, and the newcomer's wait starts after that renewal was applied, the
//!   two never both count themselves owner.
//! - A process paused in the middle of a write (SIGSTOP, a stall, a partition) is the
//!   case a clock cannot cover: its write may land after a successor took over. Files
//!   carry their writer's generation and are written create-only, so such a write can
//!   never replace a successor's file, and the paused process stops at its next check
//!   without acting on it; a successor replaces an older generation's leftover.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockgate_core::storage::{Ownership, Takeover};
use lockgate_core::sync::lock;
use lockgate_core::Error as CoreError;
use serde_json::{json, Value};

use crate::client::{Client, Conditional};

/// The key of the lease object.
pub const LEASE_KEY: &str = "lease";

/// A lease record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The owning process's name.
    pub owner: String,
    /// Its generation (1 for the first owner, one more at every takeover).
    pub generation: u64,
    /// Its timeout in ms.
    pub timeout_ms: u64,
    /// When it was last renewed (ms since the epoch, the owner's wall clock).
    pub renewed_at_ms: u64,
    /// True once the owner stopped cleanly: the next process takes over at once.
    pub released: bool,
}

impl Record {
    fn to_bytes(&self) -> Vec<u8> {
        let v = json!({
            "owner": self.owner,
            "generation": self.generation,
            "timeout_ms": self.timeout_ms,
            "renewed_at_ms": self.renewed_at_ms,
            "released": self.released,
        });
        let mut out = v.to_string().into_bytes();
        out.push(b'\n');
        out
    }

    /// Parses a stored record.
    pub fn parse(bytes: &[u8]) -> Option<Record> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        Some(Record {
            owner: v.get("owner")?.as_str()?.to_string(),
            generation: v.get("generation")?.as_u64()?,
            timeout_ms: v.get("timeout_ms")?.as_u64()?,
            renewed_at_ms: v.get("renewed_at_ms")?.as_u64()?,
            released: v.get("released")?.as_bool()?,
        })
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This process's side of the lease.
#[derive(Debug, Default)]
struct State {
    /// The generation held (0: none).
    generation: u64,
    /// The lease's ETag after this process's last write of it.
    etag: Option<String>,
    /// Until when this process's writes count as the owner's.
    valid_until: Option<Instant>,
    /// Why this process is no longer the owner.
    lost: Option<String>,
}

/// This process's lease on one location.
#[derive(Debug)]
pub(crate) struct Lease {
    instance: String,
    timeout: Duration,
    state: Mutex<State>,
    /// Renewals one at a time (the renewal thread and a writer that found its
    /// validity over may both try).
    renewing: Mutex<()>,
}

impl Lease {
    pub(crate) fn new(instance: &str, timeout: Duration) -> Self {
        Lease {
            instance: instance.to_string(),
            timeout,
            state: Mutex::new(State::default()),
            renewing: Mutex::new(()),
        }
    }

    fn record(&self, generation: u64, released: bool) -> Record {
        Record {
            owner: self.instance.clone(),
            generation,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            renewed_at_ms: wall_ms(),
            released,
        }
    }

    /// Records that this process lost the location and returns the error saying so.
    pub(crate) fn fenced(&self, shown: &str, reason: String) -> CoreError {
        let mut s = lock(&self.state);
        let reason = s.lost.get_or_insert(reason).clone();
        s.valid_until = None;
        CoreError::Fenced {
            location: shown.to_string(),
            reason,
        }
    }

    /// The generation this process holds, if its writes count as the owner's now;
    /// renews first when the last renewal is too old; an error once another process
    /// took over (or when this one never took the lease).
    pub(crate) fn check(&self, client: &Client) -> lockgate_core::Result<u64> {
        {
            let s = lock(&self.state);
            if let Some(reason) = &s.lost {
                return Err(CoreError::Fenced {
                    location: client.shown().to_string(),
                    reason: reason.clone(),
                });
            }
            if s.generation == 0 {
                return Err(CoreError::Fenced {
                    location: client.shown().to_string(),
                    reason: "this process has not taken the checkpoint's lease; only its \
                             owner writes"
                        .into(),
                });
            }
            if s.valid_until.is_some_and(|v| Instant::now() < v) {
                return Ok(s.generation);
            }
        }
        self.renew(client, client.retry_timeout())
    }

    /// Renews the lease (conditionally on the ETag last written); `limit` bounds the
    /// retries through an outage.
    fn renew(&self, client: &Client, limit: Duration) -> lockgate_core::Result<u64> {
        let _one = lock(&self.renewing);
        let (generation, etag) = {
            let s = lock(&self.state);
            if let Some(reason) = &s.lost {
                return Err(CoreError::Fenced {
                    location: client.shown().to_string(),
                    reason: reason.clone(),
                });
            }
            (s.generation, s.etag.clone())
        };
        let sent = Instant::now();
        let record = self.record(generation, false);
        match client.block(client.put_conditional(
            LEASE_KEY,
            record.to_bytes(),
            generation,
            etag,
            limit,
        ))? {
            Conditional::Written(etag) => {
                let mut s = lock(&self.state);
                s.etag = etag;
                s.valid_until = Some(sent + self.timeout / 2);
                Ok(generation)
            }
            Conditional::Conflict => {
                let now = client.block(client.get_versioned(LEASE_KEY, limit))?;
                // A renewal whose answer was lost (a timeout after the store applied
                // it) left the lease ours under an ETag this process never saw.
                if let Some(v) = &now {
                    let ours = Record::parse(&v.bytes).is_some_and(|r| {
                        r.owner == self.instance && r.generation == generation && !r.released
                    });
                    if ours {
                        lock(&self.state).etag = v.etag.clone();
                        drop(_one);
                        return self.renew(client, limit);
                    }
                }
                let who = now
                    .as_ref()
                    .and_then(|v| Record::parse(&v.bytes))
                    .map_or_else(
                        || "the lease was deleted or overwritten".to_string(),
                        |r| {
                            format!(
                                "instance `{}` took over as generation {} (this process held \
                                 generation {generation}: it was paused or cut off from the \
                                 store for longer than the lease timeout of {} ms)",
                                r.owner, r.generation, r.timeout_ms
                            )
                        },
                    );
                tracing::error!(checkpoint = %client.shown(), "{who}; stopping");
                Err(self.fenced(client.shown(), who))
            }
        }
    }

    /// Takes the lease: at once when there is none or it was released; after a whole
    /// timeout without renewal otherwise. `Refuse` refuses a lease renewed within its
    /// timeout (seen renewed while watching), naming its owner; `Standby` waits for it.
    pub(crate) fn acquire(
        client: &Arc<Client>,
        lease: &Arc<Lease>,
        takeover: Takeover,
    ) -> lockgate_core::Result<LeaseHold> {
        let poll = (lease.timeout / 5).min(Duration::from_secs(1));
        let mut seen: Option<(Option<String>, Instant)> = None;
        let mut announced = false;
        loop {
            let current = client.block(client.get_versioned(LEASE_KEY, client.retry_timeout()))?;
            let (generation, etag, previous) = match current {
                None => (1, None, None),
                Some(v) => {
                    let record = Record::parse(&v.bytes).ok_or_else(|| CoreError::Checkpoint {
                        path: client.name_of(LEASE_KEY),
                        reason: "not a lease record; if no process runs on this checkpoint, \
                                 delete it and start again"
                            .into(),
                    })?;
                    let (unchanged_for, renewed) = match &seen {
                        Some((etag, since)) if *etag == v.etag => (since.elapsed(), false),
                        previous => {
                            let renewed = previous.is_some();
                            seen = Some((v.etag.clone(), Instant::now()));
                            (Duration::ZERO, renewed)
                        }
                    };
                    let expired = unchanged_for >= Duration::from_millis(record.timeout_ms);
                    if !record.released && !expired {
                        let age_ms = wall_ms().saturating_sub(record.renewed_at_ms);
                        // A live owner renews within a fifth of its timeout: seen doing so,
                        // a second process is refused; a lease left by a process that died
                        // is waited out (one timeout), then taken.
                        if takeover == Takeover::Refuse && renewed {
                            return Err(CoreError::Checkpoint {
                                path: client.name_of(LEASE_KEY),
                                reason: format!(
                                    "instance `{}` (generation {}) is running a job on this \
                                     checkpoint: it renewed its lease {age_ms} ms ago; stop it \
                                     first (two jobs on one checkpoint would overwrite each \
                                     other's plans and state), give this job a checkpoint of \
                                     its own, or start it with --standby to take over when the \
                                     owner ends",
                                    record.owner, record.generation
                                ),
                            });
                        }
                        if !announced {
                            announced = true;
                            client
                                .counts
                                .standby
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            if takeover == Takeover::Standby {
                                tracing::info!(checkpoint = %client.shown(), owner = %record.owner, generation = record.generation, lease_timeout_ms = record.timeout_ms, "standby: another instance owns this checkpoint; waiting to take over when its lease expires");
                            } else {
                                tracing::info!(checkpoint = %client.shown(), owner = %record.owner, renewed_ms_ago = age_ms, lease_timeout_ms = record.timeout_ms, "the checkpoint's lease is held: taking it over if it is not renewed within its timeout (its owner died), refusing to start if it is");
                            }
                        }
                        std::thread::sleep(poll);
                        continue;
                    }
                    (record.generation + 1, v.etag, Some(record))
                }
            };
            let record = lease.record(generation, false);
            let sent = Instant::now();
            match client.block(client.put_conditional(
                LEASE_KEY,
                record.to_bytes(),
                generation,
                etag.clone(),
                client.retry_timeout(),
            ))? {
                Conditional::Written(new_etag) => {
                    client
                        .counts
                        .standby
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    {
                        let mut s = lock(&lease.state);
                        *s = State {
                            generation,
                            etag: new_etag,
                            valid_until: Some(sent + lease.timeout / 2),
                            lost: None,
                        };
                    }
                    match previous {
                        Some(p) => {
                            tracing::info!(checkpoint = %client.shown(), generation, previous_owner = %p.owner, released = p.released, "took over the checkpoint's lease")
                        }
                        None => {
                            tracing::info!(checkpoint = %client.shown(), generation, "took the checkpoint's lease")
                        }
                    }
                    return Ok(LeaseHold::start(client.clone(), lease.clone()));
                }
                Conditional::Conflict => {
                    // Another process got there first: look again.
                    seen = None;
                }
            }
        }
    }

    /// Marks the lease released (when this process still holds it), so the next
    /// process takes over at once.
    fn release(&self, client: &Client) {
        let _one = lock(&self.renewing);
        let (generation, etag) = {
            let mut s = lock(&self.state);
            if s.lost.is_some() || s.generation == 0 {
                return;
            }
            s.valid_until = None;
            (s.generation, s.etag.clone())
        };
        let record = self.record(generation, true);
        match client.block(client.put_conditional(
            LEASE_KEY,
            record.to_bytes(),
            generation,
            etag,
            Duration::from_secs(5),
        )) {
            Ok(Conditional::Written(_)) => {
                tracing::info!(checkpoint = %client.shown(), generation, "released the checkpoint's lease");
            }
            Ok(Conditional::Conflict) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release the checkpoint's lease; the next owner takes over once it expires");
            }
        }
        let mut s = lock(&self.state);
        s.generation = 0;
        s.etag = None;
    }
}

/// The owner's hold: renews the lease until dropped, then releases it.
pub struct LeaseHold {
    client: Arc<Client>,
    lease: Arc<Lease>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// False for a hold abandoned in a test (a paused owner): no release on drop.
    release: bool,
}

impl LeaseHold {
    fn start(client: Arc<Client>, lease: Arc<Lease>) -> LeaseHold {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (client, lease) = (client.clone(), lease.clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("lockgate-lease".into())
                .spawn(move || renew_until_stopped(&client, &lease, &stop))
                .ok()
        };
        if thread.is_none() {
            tracing::warn!("cannot start the lease renewal thread; writes renew it instead");
        }
        LeaseHold {
            client,
            lease,
            stop,
            thread,
            release: true,
        }
    }

    fn stop_renewing(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops renewing without releasing, as an owner that froze would (tests).
    #[cfg(test)]
    pub(crate) fn freeze(mut self) {
        self.stop_renewing();
        self.release = false;
    }
}

fn renew_until_stopped(client: &Client, lease: &Lease, stop: &(Mutex<bool>, Condvar)) {
    let every = lease.timeout / 5;
    let mut stopped = lock(&stop.0);
    loop {
        let (guard, _) = stop
            .1
            .wait_timeout(stopped, every)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stopped = guard;
        if *stopped {
            return;
        }
        drop(stopped);
        match lease.renew(client, lease.timeout / 2) {
            Ok(_) => {}
            Err(CoreError::Fenced { .. }) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the checkpoint's lease; trying again");
            }
        }
        stopped = lock(&stop.0);
    }
}

impl Ownership for LeaseHold {}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.release {
            self.lease.release(&self.client);
        }
    }
}
