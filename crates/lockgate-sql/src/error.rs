//! The crate's errors, by phase: planning a query (at start, before any batch runs) or
//! running it on a batch.

/// What went wrong in streaming SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query cannot run as a stream: a construct Lockgate does not support, or a
    /// setting that does not fit it. Reported at start.
    #[error("SQL: {0}")]
    Unsupported(String),
    /// The query is not SQL (a syntax error), found at start.
    #[error("SQL: the query does not parse: {0}")]
    Parse(#[source] datafusion::sql::sqlparser::parser::ParserError),
    /// DataFusion rejected the query (syntax, names, types) at start.
    #[error("SQL: {0}")]
    Plan(#[source] datafusion::error::DataFusionError),
    /// Evaluating the query on a batch failed.
    #[error("SQL: evaluating the query on a batch: {0}")]
    Execute(#[source] datafusion::error::DataFusionError),
    /// Reading a result row: a column that does not exist or holds another type.
    #[error("SQL result: {0}")]
    Read(String),
    /// A bad setting (a schema, a duration, a table file).
    #[error("SQL: {0}")]
    Config(String),
    /// The streaming engine refused the graph.
    #[error(transparent)]
    Engine(#[from] lockgate_core::Error),
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error as the engine's, for failures inside a batch's computation.
    pub(crate) fn into_engine(self) -> lockgate_core::Error {
        match self {
            Error::Engine(e) => e,
            other => lockgate_core::Error::external("SQL", other),
        }
    }
}

/// A SQL error as the engine's, so `?` converts it in a function returning
/// `lockgate_core::Result`.
impl From<Error> for lockgate_core::Error {
    fn from(e: Error) -> Self {
        e.into_engine()
    }
}

/// A DataFusion failure while a batch is computed, as the engine's error.
pub(crate) fn execute_failed(e: datafusion::error::DataFusionError) -> lockgate_core::Error {
    Error::Execute(e).into_engine()
}
