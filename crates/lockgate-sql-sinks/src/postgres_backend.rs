//! The PostgreSQL backend (synchronous `postgres` client).

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use crate::backend::{
    check_row, check_task_order, create_offsets, create_table, insert_offsets, insert_sql, Backend,
    CommitRequest,
};
use crate::error::{Error, Result};
use crate::{SinkCommit, SqlType, SqlValue, Table, OFFSETS_TABLE};

/// A PostgreSQL database.
pub struct PostgresBackend {
    url: String,
    client: Client,
}

/// The advisory lock key that serializes the sinks' table setup ("lockgate" in ASCII).
const SETUP_LOCK: i64 = 0x6c6f_636b_6761_7465;

impl PostgresBackend {
    /// Connects to `url` (`postgres://user@host:port/db`).
    pub fn connect(url: &str) -> Result<Self> {
        let client = Client::connect(url, NoTls).map_err(|e| {
            Error::Config(format!(
                "cannot connect to PostgreSQL at {}: {e}; is the server running? \
                 (scripts/postgres.sh start runs a local one)",
                crate::redact_url(url)
            ))
        })?;
        Ok(PostgresBackend {
            url: url.to_string(),
            client,
        })
    }
}

/// A value as a typed parameter for its column.
fn param(v: &SqlValue, t: SqlType) -> Result<Box<dyn ToSql + Sync>> {
    Ok(match (v, t) {
        (SqlValue::Int(i), SqlType::BigInt) => Box::new(*i),
        (SqlValue::Int(i), SqlType::Double) => Box::new(*i as f64),
        (SqlValue::Float(f), SqlType::Double) => Box::new(*f),
        (SqlValue::Text(s), SqlType::Text) => Box::new(s.clone()),
        (SqlValue::Null, SqlType::BigInt) => Box::new(None::<i64>),
        (SqlValue::Null, SqlType::Double) => Box::new(None::<f64>),
        (SqlValue::Null, SqlType::Text) => Box::new(None::<String>),
        (v, t) => {
            return Err(Error::Config(format!(
                "value {v:?} does not fit a {t:?} column"
            )))
        }
    })
}

impl Backend for PostgresBackend {
    fn setup(&mut self, table: &Table) -> Result<()> {
        // `CREATE TABLE IF NOT EXISTS` fails when another session creates the same
        // table at the same time (a duplicate in the catalog), as the session of a job
        // killed while it set up may still do when its replacement starts: one setup
        // at a time, under a transaction-scoped advisory lock.
        let mut tx = self.client.transaction()?;
        tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({SETUP_LOCK})"))?;
        tx.batch_execute(&create_table(table, true))?;
        tx.batch_execute(&create_offsets(OFFSETS_TABLE, true))?;
        // An offsets table of an earlier version has no `task`: add it to the rows and
        // the key (every existing row is the job's one instance, task '').
        let has_task = tx
            .query_opt(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = $1 AND column_name = 'task'",
                &[&OFFSETS_TABLE],
            )?
            .is_some();
        if !has_task {
            tx.batch_execute(&format!(
                "ALTER TABLE {OFFSETS_TABLE} ADD COLUMN task TEXT NOT NULL DEFAULT ''; \
                 ALTER TABLE {OFFSETS_TABLE} DROP CONSTRAINT IF EXISTS {OFFSETS_TABLE}_pkey; \
                 ALTER TABLE {OFFSETS_TABLE} ADD PRIMARY KEY (app, sink, task, batch_id)"
            ))?;
            tracing::info!(table = OFFSETS_TABLE, "added the column `task` to the offsets table (its rows are the job's one instance's)");
        }
        tx.commit()?;
        Ok(())
    }

    fn commit(&mut self, req: &CommitRequest<'_>) -> Result<bool> {
        let mut tx = self.client.transaction()?;
        if !req.task.is_empty() {
            // One commit of a task at a time: a zombie and its successor cannot both
            // read the same last batch and both go on.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&format!("lockgate/{}/{}/{}", req.app, req.sink, req.task)],
            )?;
        }
        let sql = format!(
            "SELECT 1 FROM {OFFSETS_TABLE} WHERE app = $1 AND sink = $2 AND task = $3 AND \
             batch_id = $4"
        );
        let done = tx.query_opt(
            &sql,
            &[&req.app, &req.sink, &req.task, &(req.batch_id as i64)],
        )?;
        if done.is_some() && req.skip_committed {
            return Ok(false);
        }
        if done.is_none() && !req.task.is_empty() {
            let last: Option<i64> = tx
                .query_one(
                    &format!(
                        "SELECT max(batch_id) FROM {OFFSETS_TABLE} WHERE app = $1 AND sink = $2 \
                         AND task = $3"
                    ),
                    &[&req.app, &req.sink, &req.task],
                )?
                .get(0);
            check_task_order(req, last.map(|l| l as u64))?;
        }
        let stmt = tx.prepare(&insert_sql(req.table, req.mode, |i| format!("${i}")))?;
        for row in req.rows {
            check_row(req.table, row)?;
            let params = row
                .iter()
                .zip(&req.table.columns)
                .map(|(v, (_, t))| param(v, *t))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref()).collect();
            tx.execute(&stmt, &refs)?;
        }
        tx.execute(
            &insert_offsets(|i| format!("${i}")),
            &[
                &req.app,
                &req.sink,
                &req.task,
                &(req.batch_id as i64),
                &req.batch_time_ms,
                &req.descriptors,
                &req.description,
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn committed(&mut self, app: &str, sink: &str, task: &str) -> Result<Vec<SinkCommit>> {
        let sql = format!(
            "SELECT batch_id, batch_time_ms, descriptors FROM {OFFSETS_TABLE} WHERE app = $1 AND \
             sink = $2 AND task = $3 ORDER BY batch_id"
        );
        Ok(self
            .client
            .query(&sql, &[&app, &sink, &task])?
            .iter()
            .map(|r| SinkCommit {
                batch_id: r.get::<_, i64>(0) as u64,
                batch_time_ms: r.get(1),
                descriptors: r.get(2),
            })
            .collect())
    }

    fn reconnect(&mut self) -> Result<()> {
        self.client = Client::connect(&self.url, NoTls)?;
        Ok(())
    }
}
