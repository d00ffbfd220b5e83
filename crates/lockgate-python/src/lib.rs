//! The native module of the `lockgate` Python package (`lockgate._lockgate`): PySpark's
//! streaming API runs on the Lockgate engine in the Python process. The package's
//! Python code (`python/lockgate`) gives PySpark's names and signatures; this crate
//! gives it a context, its sources and one method per operator, over streams of
//! [`Value`]s, the plain data of Python jobs as Rust values.
//!
//! The engine calls the job's Python functions from its worker threads, taking the GIL
//! only around the calls ([`call`]); a Python exception fails the batch with its
//! traceback, never a panic. [`sql`] runs `lockgate.sql`'s batch queries
//! (`SparkSession.sql` over temporary views) on Lockgate's SQL layer.

#![deny(missing_docs)]

pub mod call;
pub mod context;
pub mod kafka;
pub mod logging;
pub mod sinks;
pub mod sql;
pub mod stream;
pub mod value;

pub use call::{Failure, Failures, PyFunc};
pub use value::Value;

use pyo3::prelude::*;

pyo3::create_exception!(
    _lockgate,
    StreamingError,
    pyo3::exceptions::PyException,
    "A streaming context failed: a batch's Python function raised (its traceback is in \
     the message), or the engine could not go on (a checkpoint, a source, a sink)."
);

/// The crate's errors, by phase: a Python function failed, or the engine did.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Python function of the job raised an exception.
    #[error(transparent)]
    Python(#[from] Failure),
    /// The engine stopped the context (a batch failed, a checkpoint or a source is
    /// unusable, the configuration is wrong).
    #[error("{0}")]
    Engine(#[from] lockgate_core::Error),
}

/// The crate's `Result`.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        StreamingError::new_err(e.to_string())
    }
}

/// The module `lockgate._lockgate`.
#[pymodule]
fn _lockgate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<context::Context>()?;
    m.add_class::<context::Graph>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<kafka::OffsetRangesLog>()?;
    m.add_class::<sql::SqlQuery>()?;
    m.add_function(wrap_pyfunction!(logging::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(sql::run_sql, m)?)?;
    m.add("StreamingError", m.py().get_type::<StreamingError>())?;
    Ok(())
}
