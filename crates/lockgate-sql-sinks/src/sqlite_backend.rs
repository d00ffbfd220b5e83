//! The SQLite backend (embedded, bundled SQLite).

use std::path::{Path, PathBuf};

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use crate::backend::{
    check_row, check_task_order, create_offsets, create_table, insert_offsets, insert_sql, Backend,
    CommitRequest,
};
use crate::error::Result;
use crate::{SinkCommit, SqlValue, Table, OFFSETS_TABLE};

/// A SQLite database file.
pub struct SqliteBackend {
    path: PathBuf,
    conn: Connection,
}

impl SqliteBackend {
    /// Opens (creating) the database at `path`, in WAL journal mode with full sync.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Self::connect(path)?;
        Ok(SqliteBackend {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn connect(path: &Path) -> Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(conn)
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match self {
            SqlValue::Int(i) => Value::Integer(*i),
            SqlValue::Float(f) => Value::Real(*f),
            SqlValue::Text(s) => Value::Text(s.clone()),
            SqlValue::Null => Value::Null,
        }))
    }
}

impl Backend for SqliteBackend {
    fn setup(&mut self, table: &Table) -> Result<()> {
        self.conn.execute(&create_table(table, false), [])?;
        self.conn
            .execute(&create_offsets(OFFSETS_TABLE, false), [])?;
        // An offsets table of an earlier version has no `task`: rebuilt with it in the
        // rows and the key (every existing row is the job's one instance, task '').
        let has_task = self
            .conn
            .prepare(&format!("PRAGMA table_info({OFFSETS_TABLE})"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .iter()
            .any(|c| c == "task");
        if !has_task {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old = format!("{OFFSETS_TABLE}_before_tasks");
            tx.execute_batch(&format!(
                "ALTER TABLE {OFFSETS_TABLE} RENAME TO {old}; {}; \
                 INSERT INTO {OFFSETS_TABLE} (app, sink, task, batch_id, batch_time_ms, \
                 descriptors, description) SELECT app, sink, '', batch_id, batch_time_ms, \
                 descriptors, description FROM {old}; DROP TABLE {old};",
                create_offsets(OFFSETS_TABLE, false)
            ))?;
            tx.commit()?;
            tracing::info!(table = OFFSETS_TABLE, "added the column `task` to the offsets table (its rows are the job's one instance's)");
        }
        Ok(())
    }

    fn commit(&mut self, req: &CommitRequest<'_>) -> Result<bool> {
        // Immediate: the checks below and the writes are one writer's.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sql = format!(
            "SELECT 1 FROM {OFFSETS_TABLE} WHERE app = ?1 AND sink = ?2 AND task = ?3 AND \
             batch_id = ?4"
        );
        let done: Option<i64> = tx
            .query_row(
                &sql,
                params![req.app, req.sink, req.task, req.batch_id as i64],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() && req.skip_committed {
            return Ok(false);
        }
        if done.is_none() && !req.task.is_empty() {
            let last: Option<i64> = tx.query_row(
                &format!(
                    "SELECT max(batch_id) FROM {OFFSETS_TABLE} WHERE app = ?1 AND sink = ?2 \
                     AND task = ?3"
                ),
                params![req.app, req.sink, req.task],
                |r| r.get(0),
            )?;
            check_task_order(req, last.map(|l| l as u64))?;
        }
        {
            let mut stmt =
                tx.prepare_cached(&insert_sql(req.table, req.mode, |i| format!("?{i}")))?;
            for row in req.rows {
                check_row(req.table, row)?;
                stmt.execute(rusqlite::params_from_iter(row.iter()))?;
            }
        }
        tx.execute(
            &insert_offsets(|i| format!("?{i}")),
            params![
                req.app,
                req.sink,
                req.task,
                req.batch_id as i64,
                req.batch_time_ms,
                req.descriptors,
                req.description
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn committed(&mut self, app: &str, sink: &str, task: &str) -> Result<Vec<SinkCommit>> {
        let sql = format!(
            "SELECT batch_id, batch_time_ms, descriptors FROM {OFFSETS_TABLE} WHERE app = ?1 AND \
             sink = ?2 AND task = ?3 ORDER BY batch_id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![app, sink, task], |r| {
            Ok(SinkCommit {
                batch_id: r.get::<_, i64>(0)? as u64,
                batch_time_ms: r.get(1)?,
                descriptors: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn reconnect(&mut self) -> Result<()> {
        self.conn = Self::connect(&self.path)?;
        Ok(())
    }
}
