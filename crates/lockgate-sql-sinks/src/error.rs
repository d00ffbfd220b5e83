//! The error type of `lockgate-sql-sinks`.

/// What can go wrong in a SQL sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid.
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A scale-out task's batch was refused: the database holds another batch as the
    /// task's last, so another instance runs (or ran ahead with) the task.
    #[error(
        "sink `{sink}`: task {task} may not commit batch {batch}: the database's last batch \
         of the task is {last}, not {expected}; another instance took over the task (this \
         one is a zombie and stops)",
        expected = batch.saturating_sub(1)
    )]
    Fenced {
        /// The sink.
        sink: String,
        /// The task.
        task: String,
        /// The batch refused.
        batch: u64,
        /// The task's last batch in the database.
        last: u64,
    },
    /// PostgreSQL failed (including connecting).
    #[error("PostgreSQL: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
}

/// A PostgreSQL error with the server's own words (the client's `Display` of a server
/// error is just "db error").
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

impl Error {
    /// True for failures worth retrying after reconnecting (a lost connection, a busy
    /// database), false for errors that would fail again (bad SQL, constraint).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Config(_) | Error::Fenced { .. } => false,
            Error::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Error::Postgres(e) => e.is_closed() || e.code().is_none(),
        }
    }
}

/// The result type of `lockgate-sql-sinks`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
