//! # lockgate-sql-sinks
//!
//! Transactional sinks for Lockgate: SQLite (embedded, `rusqlite`) and PostgreSQL
//! (`postgres`). Each batch's rows and a row of the offsets table
//! `lockgate_offsets(app, sink, task, batch_id, batch_time_ms, descriptors, description)` are
//! written in ONE transaction; with exactly-once delivery a batch whose offsets row
//! already exists is skipped, so a batch re-run after a crash changes nothing. Rows are
//! inserted, or upserted by the table's key.
//!
//! The offsets table is also where the job can learn what was last committed
//! ([`SqlSink::last_committed`]): "offsets and results in the same database".
//!
//! Running word counts upserted into SQLite, each batch in one transaction with its id:
//!
//! ```
//! use lockgate_core::testing::ManualRun;
//! use lockgate_sql_sinks::{SqlSink, SqlType, SqlValue, SqliteBackend, Table, WriteMode};
//!
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("counts.db");
//! let run = ManualRun::new(2)?;
//! let words = run.ctx.seq_stream(vec![vec!["a", "b", "a"], vec!["b"]]);
//! let counts = words
//!     .map(|w| (w.to_string(), 1i64))
//!     .update_state_by_key(|new: &[i64], old: Option<i64>| Some(old.unwrap_or(0) + new.len() as i64));
//! let table = Table::new("counts", &[("word", SqlType::Text), ("n", SqlType::BigInt)], &["word"]);
//! let sink = SqlSink::new("counts", SqliteBackend::open(&db)?, table, WriteMode::Upsert, |(w, n): &(String, i64)| {
//!     vec![SqlValue::Text(w.clone()), SqlValue::Int(*n)]
//! })?;
//! counts.write_to(sink);
//! run.ctx.start()?;
//! run.run_batches(2)?;
//! run.ctx.stop(false)?;
//!
//! let conn = rusqlite::Connection::open(&db)?;
//! let b: i64 = conn.query_row("SELECT n FROM counts WHERE word = 'b'", [], |r| r.get(0))?;
//! let last: i64 = conn.query_row("SELECT max(batch_id) FROM lockgate_offsets", [], |r| r.get(0))?;
//! assert_eq!((b, last), (2, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod backend;
pub mod error;
mod postgres_backend;
mod sqlite_backend;
#[cfg(feature = "testing")]
pub mod testing;

use lockgate_core::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockgate_core::codec::{from_bytes, to_bytes};
use lockgate_core::SourcePlan;
use lockgate_core::{Batch, BatchId, BoxError, Data, Sink, SinkBatch, SinkOffsets};

pub use backend::{open_url, redact_url, Backend, CommitRequest};
pub use error::{Error, Result};
pub use postgres_backend::PostgresBackend;
pub use sqlite_backend::SqliteBackend;

/// The table of committed batches.
pub const OFFSETS_TABLE: &str = "lockgate_offsets";

/// A column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    /// 64-bit integer.
    BigInt,
    /// Double precision float.
    Double,
    /// Text.
    Text,
}

/// A value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// NULL.
    Null,
}

/// The results table of a sink.
#[derive(Clone, Debug)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// Columns and types, in row order.
    pub columns: Vec<(String, SqlType)>,
    /// The primary key columns (used by upserts).
    pub key: Vec<String>,
}

impl Table {
    /// A table named `name` with `columns` and primary key `key`.
    pub fn new(name: &str, columns: &[(&str, SqlType)], key: &[&str]) -> Self {
        Table {
            name: name.to_string(),
            columns: columns.iter().map(|(c, t)| (c.to_string(), *t)).collect(),
            key: key.iter().map(|k| k.to_string()).collect(),
        }
    }
}

/// How rows are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Plain inserts (a re-written batch would add its rows again).
    Insert,
    /// Insert, or update the row with the same key.
    Upsert,
}

/// How long a sink retries a batch through an outage by default.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(120);

type ToRow<T> = Arc<dyn Fn(&T) -> Vec<SqlValue> + Send + Sync>;

/// A transactional sink over a [`Backend`].
pub struct SqlSink<T, B> {
    name: String,
    table: Table,
    mode: WriteMode,
    to_row: ToRow<T>,
    backend: Mutex<B>,
    retries: u32,
    retry_timeout: Duration,
    task: String,
}

/// Turns offsets rows (oldest first) into [`SinkOffsets`].
pub fn offsets_of(rows: Vec<SinkCommit>) -> Result<Option<SinkOffsets>> {
    let Some(last) = rows.last().cloned() else {
        return Ok(None);
    };
    let plans = rows
        .iter()
        .map(|r| from_bytes::<Vec<SourcePlan>>(&r.descriptors))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "the offsets table holds descriptors that do not decode: {e}"
            ))
        })?;
    Ok(Some(SinkOffsets {
        last_batch_id: last.batch_id,
        last_batch_time_ms: last.batch_time_ms,
        plans,
    }))
}

/// The last batch a sink committed, from its offsets table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkCommit {
    /// The batch id.
    pub batch_id: u64,
    /// The batch time.
    pub batch_time_ms: i64,
    /// The encoded input descriptors (`Vec<SourcePlan>`).
    pub descriptors: Vec<u8>,
}

impl<T: Data, B: Backend> SqlSink<T, B> {
    /// A sink named `name` writing `table` in `mode`, with rows made by `to_row`. Creates
    /// the table and the offsets table if they do not exist.
    pub fn new(
        name: &str,
        mut backend: B,
        table: Table,
        mode: WriteMode,
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<Self> {
        if mode == WriteMode::Upsert && table.key.is_empty() {
            return Err(Error::Config(format!(
                "table `{}`: upserts need a key; give the table a primary key",
                table.name
            )));
        }
        backend.setup(&table)?;
        Ok(SqlSink {
            name: name.to_string(),
            table,
            mode,
            to_row: Arc::new(to_row),
            backend: Mutex::new(backend),
            retries: u32::MAX,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            task: String::new(),
        })
    }

    /// At most how often a failed transaction is retried (reconnecting first) before
    /// the batch fails (default: as often as the retry timeout allows).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// How long a batch whose transaction fails for a passing reason (a lost
    /// connection, a database restarting) is retried, reconnecting each time and
    /// backing off from 100 ms to 5 s, before the batch fails (default 2 minutes).
    /// Nothing of a failed attempt is committed, so a retry never writes twice.
    pub fn retry_timeout(mut self, d: Duration) -> Self {
        self.retry_timeout = d;
        self
    }

    /// Written by scale-out task `task`: its offsets rows carry the task, and a batch
    /// commits only if the task's last batch in the database is the one before it (a
    /// compare-and-set that fences a zombie: [`Error::Fenced`]).
    pub fn for_task(mut self, task: &str) -> Self {
        self.task = task.to_string();
        self
    }

    /// The last batch this sink committed for `app` (and its task).
    pub fn last_committed(&self, app: &str) -> Result<Option<SinkCommit>> {
        let mut b = lock(&self.backend);
        Ok(b.committed(app, &self.name, &self.task)?.pop())
    }

    /// Everything this sink recorded as committed for `app`, for
    /// [`from_sink_offsets`](lockgate_core::StreamingContextBuilder::from_sink_offsets).
    pub fn offsets(&self, app: &str) -> Result<Option<SinkOffsets>> {
        let mut b = lock(&self.backend);
        offsets_of(b.committed(app, &self.name, &self.task)?)
    }
}

impl<T: Data, B: Backend> Sink<T> for SqlSink<T, B> {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The last batch id of the offsets table for `app` (the protocol does not hand the
    /// sink the batches up to it again).
    fn last_committed(&self, app: &str) -> std::result::Result<Option<BatchId>, BoxError> {
        Ok(SqlSink::last_committed(self, app)?.map(|c| c.batch_id))
    }

    fn commit(&self, batch: &Batch<T>, info: &SinkBatch) -> std::result::Result<(), BoxError> {
        let rows: Vec<Vec<SqlValue>> = batch.iter().map(|r| (self.to_row)(r)).collect();
        let description = info
            .inputs
            .iter()
            .map(|s| format!("{}: {}", s.source, s.description))
            .collect::<Vec<_>>()
            .join("; ");
        let req = CommitRequest {
            table: &self.table,
            mode: self.mode,
            app: &info.app,
            sink: &self.name,
            task: &self.task,
            batch_id: info.id,
            batch_time_ms: info.time.millis(),
            descriptors: to_bytes(info.inputs.as_ref()),
            description,
            rows: &rows,
            skip_committed: info.skips_committed(),
        };
        let mut backend = lock(&self.backend);
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        let deadline = Instant::now() + self.retry_timeout;
        let outcome = loop {
            match backend.commit(&req) {
                Ok(written) => {
                    if !written {
                        tracing::info!(sink = %self.name, batch = info.id, "batch already committed by this sink; skipped");
                    }
                    if attempt > 0 {
                        tracing::info!(sink = %self.name, batch = info.id, attempts = attempt + 1, "sink transaction committed after retrying");
                    }
                    break Ok(());
                }
                Err(e)
                    if attempt < self.retries
                        && e.is_transient()
                        && Instant::now() + delay <= deadline =>
                {
                    attempt += 1;
                    info.counters.retrying(&e.to_string());
                    tracing::warn!(sink = %self.name, batch = info.id, error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "sink transaction failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if let Err(e) = backend.reconnect() {
                        tracing::warn!(sink = %self.name, error = %e, "reconnect failed");
                    }
                }
                Err(e) => {
                    let gave_up = if e.is_transient() {
                        format!(" after {attempt} retries in {:?}", self.retry_timeout)
                    } else {
                        String::new()
                    };
                    break Err(format!(
                        "sink `{}`, batch {}: {e}{gave_up} (nothing of this batch was \
                         committed; a restart re-runs it)",
                        self.name, info.id
                    )
                    .into());
                }
            }
        };
        info.counters.settled();
        outcome
    }
}
