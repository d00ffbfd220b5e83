//! The database side of a [`SqlSink`](crate::SqlSink): one transaction per batch.

use crate::error::Result;
use crate::{SinkCommit, SqlType, SqlValue, Table, WriteMode, OFFSETS_TABLE};

/// A batch to commit.
pub struct CommitRequest<'a> {
    /// The results table.
    pub table: &'a Table,
    /// Insert or upsert.
    pub mode: WriteMode,
    /// The application.
    pub app: &'a str,
    /// The sink's name.
    pub sink: &'a str,
    /// The scale-out task writing (`""`: the job's one instance). A task's batch
    /// commits only if the task's last batch in the database is the one before it.
    pub task: &'a str,
    /// The batch id.
    pub batch_id: u64,
    /// The batch time.
    pub batch_time_ms: i64,
    /// Encoded input descriptors.
    pub descriptors: Vec<u8>,
    /// Readable input descriptors.
    pub description: String,
    /// The rows.
    pub rows: &'a [Vec<SqlValue>],
    /// Skip the batch if its offsets row exists (exactly-once).
    pub skip_committed: bool,
}

/// A database that commits batches transactionally.
pub trait Backend: Send + 'static {
    /// Creates the results and offsets tables if missing.
    fn setup(&mut self, table: &Table) -> Result<()>;
    /// In one transaction: unless `skip_committed` finds the batch's offsets row, writes
    /// the rows and the offsets row. Returns whether the batch was written.
    fn commit(&mut self, req: &CommitRequest<'_>) -> Result<bool>;
    /// The offsets rows of `(app, sink, task)`, oldest first.
    fn committed(&mut self, app: &str, sink: &str, task: &str) -> Result<Vec<SinkCommit>>;
    /// Re-opens the connection after a failure.
    fn reconnect(&mut self) -> Result<()>;
}

impl Backend for Box<dyn Backend> {
    fn setup(&mut self, table: &Table) -> Result<()> {
        (**self).setup(table)
    }
    fn commit(&mut self, req: &CommitRequest<'_>) -> Result<bool> {
        (**self).commit(req)
    }
    fn committed(&mut self, app: &str, sink: &str, task: &str) -> Result<Vec<SinkCommit>> {
        (**self).committed(app, sink, task)
    }
    fn reconnect(&mut self) -> Result<()> {
        (**self).reconnect()
    }
}

/// Opens the backend a sink URL names: `sqlite:PATH` or `postgres://...`.
pub fn open_url(url: &str) -> Result<Box<dyn Backend>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Box::new(crate::SqliteBackend::open(std::path::Path::new(
            path,
        ))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(crate::PostgresBackend::connect(url)?));
    }
    Err(crate::Error::Config(format!(
        "sink `{}`: expected sqlite:PATH or postgres://USER@HOST:PORT/DB",
        redact_url(url)
    )))
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `"name"` with quotes doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn type_name(t: SqlType, postgres: bool) -> &'static str {
    match (t, postgres) {
        (SqlType::BigInt, _) => "BIGINT",
        (SqlType::Double, true) => "DOUBLE PRECISION",
        (SqlType::Double, false) => "REAL",
        (SqlType::Text, _) => "TEXT",
    }
}

/// `CREATE TABLE IF NOT EXISTS` for the results table.
pub(crate) fn create_table(table: &Table, postgres: bool) -> String {
    let mut cols: Vec<String> = table
        .columns
        .iter()
        .map(|(c, t)| format!("{} {}", ident(c), type_name(*t, postgres)))
        .collect();
    if !table.key.is_empty() {
        let key: Vec<String> = table.key.iter().map(|k| ident(k)).collect();
        cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        ident(&table.name),
        cols.join(", ")
    )
}

/// `CREATE TABLE IF NOT EXISTS` for the offsets table (as `name`).
pub(crate) fn create_offsets(name: &str, postgres: bool) -> String {
    let blob = if postgres { "BYTEA" } else { "BLOB" };
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (app TEXT NOT NULL, sink TEXT NOT NULL, \
         task TEXT NOT NULL DEFAULT '', batch_id BIGINT NOT NULL, batch_time_ms BIGINT NOT \
         NULL, descriptors {blob} NOT NULL, description TEXT NOT NULL, \
         PRIMARY KEY (app, sink, task, batch_id))"
    )
}

/// The offsets row insert; `param(i)` renders placeholder `i` (1-based).
pub(crate) fn insert_offsets(param: impl Fn(usize) -> String) -> String {
    let params: Vec<String> = (1..=7).map(param).collect();
    format!(
        "INSERT INTO {OFFSETS_TABLE} (app, sink, task, batch_id, batch_time_ms, descriptors, \
         description) VALUES ({}) ON CONFLICT (app, sink, task, batch_id) DO NOTHING",
        params.join(", ")
    )
}

/// Checks a task's batch against the task's last batch in the database (`None`: none
/// yet): it must be the next one.
pub(crate) fn check_task_order(req: &CommitRequest<'_>, last: Option<u64>) -> Result<()> {
    match last {
        Some(last) if !req.task.is_empty() && last + 1 != req.batch_id => {
            Err(crate::Error::Fenced {
                sink: req.sink.to_string(),
                task: req.task.to_string(),
                batch: req.batch_id,
                last,
            })
        }
        _ => Ok(()),
    }
}

/// The row insert (or upsert) statement; `param(i)` renders placeholder `i` (1-based).
pub(crate) fn insert_sql(
    table: &Table,
    mode: WriteMode,
    param: impl Fn(usize) -> String,
) -> String {
    let cols: Vec<String> = table.columns.iter().map(|(c, _)| ident(c)).collect();
    let params: Vec<String> = (1..=cols.len()).map(&param).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        ident(&table.name),
        cols.join(", "),
        params.join(", ")
    );
    if mode == WriteMode::Upsert {
        let key: Vec<String> = table.key.iter().map(|k| ident(k)).collect();
        let updates: Vec<String> = table
            .columns
            .iter()
            .filter(|(c, _)| !table.key.contains(c))
            .map(|(c, _)| format!("{0} = excluded.{0}", ident(c)))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                updates.join(", ")
            ));
        }
    }
    sql
}

pub(crate) fn check_row(table: &Table, row: &[SqlValue]) -> Result<()> {
    if row.len() != table.columns.len() {
        return Err(crate::Error::Config(format!(
            "table `{}` has {} columns but a row has {} values",
            table.name,
            table.columns.len(),
            row.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact_url("postgres://u@h:1/db"), "postgres://u@h:1/db");
    }

    #[test]
    fn sql_texts() {
        let t = Table::new(
            "window_counts",
            &[
                ("stream", SqlType::Text),
                ("start", SqlType::BigInt),
                ("end", SqlType::BigInt),
                ("count", SqlType::BigInt),
            ],
            &["stream", "start"],
        );
        assert_eq!(
            create_table(&t, true),
            "CREATE TABLE IF NOT EXISTS \"window_counts\" (\"stream\" TEXT, \"start\" BIGINT, \"end\" BIGINT, \"count\" BIGINT, PRIMARY KEY (\"stream\", \"start\"))"
        );
        assert_eq!(
            insert_sql(&t, WriteMode::Upsert, |i| format!("${i}")),
            "INSERT INTO \"window_counts\" (\"stream\", \"start\", \"end\", \"count\") VALUES ($1, $2, $3, $4) ON CONFLICT (\"stream\", \"start\") DO UPDATE SET \"end\" = excluded.\"end\", \"count\" = excluded.\"count\""
        );
    }
}
