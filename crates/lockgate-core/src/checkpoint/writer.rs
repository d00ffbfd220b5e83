//! The checkpoint writer thread: makes each batch's state changes and its commit durable
//! off the batch's critical path, in the protocol's order.
//!
//! Each round takes every job waiting, writes the state files they carry (on an object
//! store: holds them for the next commit, then writes one file per operator partition),
//! and, when a sync is due (the sync interval passed, or a flush asked for it), runs
//! sync rounds: a filesystem sync makes the state files and the previous commit durable
//! (the sources are told and old files deleted), then the commit of the synced state is
//! written. A flush waits until that commit is durable too. After a failure nothing
//! more is committed: a later commit must never stand on missing state.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::log::{CheckpointLog, Commit};
use super::store::{StateHeader, StateStore};
use super::{cleanup, CheckpointConfig, WriteOrder};
use crate::clock::Time;
use crate::error::{Error, Result};
use crate::metrics::StreamingMetrics;
use crate::storage::file;
use crate::traits::InputSource;
use crate::types::lock;

/// Work for the checkpoint writer thread.
pub(super) enum WriteJob {
    /// The state files of batch `id` (header, snapshot?, entries), then its commit.
    Commit {
        id: u64,
        time: Time,
        files: Vec<(StateHeader, bool, Vec<u8>)>,
    },
    /// Answered once every commit handed over before it is durable (or failed).
    Flush(Sender<()>),
}

/// The writer thread's handle (started with the first commit) and its first error.
#[derive(Default)]
pub(super) struct Writer {
    pub tx: Mutex<Option<SyncSender<WriteJob>>>,
    pub failure: Arc<Mutex<Option<Error>>>,
}

/// What the writer thread works with.
pub(super) struct WriterThread {
    pub log: CheckpointLog,
    pub store: StateStore,
    pub config: CheckpointConfig,
    pub order: WriteOrder,
    /// Sources, told when their batches are durably committed.
    pub inputs: Vec<Arc<dyn InputSource>>,
    pub metrics: Arc<StreamingMetrics>,
    /// Every state's name and partition count (for cleanup).
    pub names: Vec<(String, usize)>,
    pub failure: Arc<Mutex<Option<Error>>>,
}

/// Where the writer is between rounds.
struct Progress {
    failed: bool,
    /// The newest batch whose state files are written, not yet synced.
    written: Option<(u64, Time)>,
    /// The newest commit written, not yet made durable by a sync.
    unsynced: Option<(u64, Time)>,
    last_sync: Instant,
    /// State files held for the next commit (object stores).
    held: Vec<(StateHeader, bool, Vec<u8>)>,
}

/// The jobs of one round.
struct Round {
    files: Vec<(StateHeader, bool, Vec<u8>)>,
    /// The newest batch among them.
    last: Option<(u64, Time)>,
    flushes: Vec<Sender<()>>,
}

impl WriterThread {
    /// Starts the thread; it ends when the returned sender is dropped.
    pub fn spawn(self) -> Result<SyncSender<WriteJob>> {
        // Batches may queue for the disk while it syncs; beyond 64 the runner waits.
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteJob>(64);
        std::thread::Builder::new()
            .name("lockgate-checkpoint-writer".into())
            .spawn(move || self.run(&rx))
            .map_err(|e| Error::Lifecycle(format!("cannot start the checkpoint writer: {e}")))?;
        Ok(tx)
    }

    fn run(&self, rx: &Receiver<WriteJob>) {
        let mut p = Progress {
            failed: false,
            written: None,
            unsynced: None,
            last_sync: Instant::now(),
            held: Vec::new(),
        };
        while let Some(mut round) = self.next_round(rx) {
            if !p.failed {
                let started = Instant::now();
                let result = self.write(&mut p, &mut round);
                self.metrics.checkpoint_written(
                    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
                );
                if let Err(e) = result {
                    tracing::error!(error = %e, "checkpoint write failed");
                    p.failed = true;
                    lock(&self.failure).get_or_insert(e);
                }
            }
            for done in round.flushes {
                let _ = done.send(());
            }
        }
    }

    /// Waits up to the sync interval for a job, then takes every job already waiting;
    /// `None` once the sender is gone.
    fn next_round(&self, rx: &Receiver<WriteJob>) -> Option<Round> {
        let first = match rx.recv_timeout(self.config.sync_interval) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return None,
        };
        let mut round = Round {
            files: Vec::new(),
            last: None,
            flushes: Vec::new(),
        };
        for job in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match job {
                WriteJob::Flush(done) => round.flushes.push(done),
                WriteJob::Commit { id, time, files } => {
                    round.files.extend(files);
                    round.last = Some((id, time));
                }
            }
        }
        Some(round)
    }

    /// Writes the round's state files, then syncs and commits if a sync is due. On an
    /// object store the files wait for the commit that names them, and are written then
    /// as one file per operator partition: every request costs there, and state files
    /// are of use only once a commit names them.
    fn write(&self, p: &mut Progress, round: &mut Round) -> Result<()> {
        let hold = self.order.commit_after_sync && self.log.storage().groups_writes();
        p.held.append(&mut round.files);
        if round.last.is_some() {
            p.written = round.last;
        }
        let pending = p.written.is_some() || p.unsynced.is_some();
        let due = !round.flushes.is_empty() || p.last_sync.elapsed() >= self.config.sync_interval;
        if hold && !(pending && due) {
            return Ok(());
        }
        // State files are named by a commit only after a sync has made them durable,
        // unless the batch was committed before it ran.
        let placement = if self.order.atomic_state_files {
            file::Placement::Atomic
        } else {
            file::Placement::Direct
        };
        let held = std::mem::take(&mut p.held);
        self.store
            .write_all(self.store.files_of(&held, hold), placement)?;
        if pending && due {
            self.sync_and_commit(p, !round.flushes.is_empty())?;
        }
        Ok(())
    }

    /// Rounds of: sync (state files and the previous commit become durable), then write
    /// the commit of the synced state. A flush goes on until that commit is durable too.
    fn sync_and_commit(&self, p: &mut Progress, flush: bool) -> Result<()> {
        loop {
            self.log.storage().sync()?;
            p.last_sync = Instant::now();
            if let Some((id, time)) = p.unsynced.take() {
                for input in &self.inputs {
                    input.committed(time);
                }
                cleanup(
                    &self.log,
                    &self.store,
                    &self.names,
                    self.config.retain_batches,
                    id,
                );
            }
            if let Some((id, time)) = p.written.take() {
                if self.order.commit_after_sync {
                    self.log.write_commit_deferred(&Commit {
                        batch_id: id,
                        batch_time_ms: time.0,
                    })?;
                }
                p.unsynced = Some((id, time));
            }
            if !flush || p.unsynced.is_none() {
                return Ok(());
            }
        }
    }
}
