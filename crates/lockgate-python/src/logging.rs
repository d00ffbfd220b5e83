//! The engine's log lines on stderr, at the level `SparkContext.setLogLevel` chose
//! (default `WARN`; `RUST_LOG` overrides both).

use std::sync::{Mutex, OnceLock};

use lockgate_core::sync::lock;
use pyo3::prelude::*;

/// The level chosen before the first context starts.
static LEVEL: Mutex<Option<String>> = Mutex::new(None);
static INIT: OnceLock<()> = OnceLock::new();

/// Installs the log subscriber once (at the first context).
pub fn init() {
    INIT.get_or_init(|| {
        let level = lock(&LEVEL).clone().unwrap_or_else(|| "warn".into());
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    });
}

/// Spark's log levels (`ALL`, `DEBUG`, `ERROR`, `FATAL`, `INFO`, `OFF`, `TRACE`, `WARN`)
/// as a filter; for the contexts started after it.
#[pyfunction]
pub fn set_log_level(level: &str) -> PyResult<()> {
    let filter = match level.to_ascii_uppercase().as_str() {
        "ALL" | "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        "OFF" => "off",
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown log level `{other}`: ALL, DEBUG, ERROR, FATAL, INFO, OFF, TRACE or WARN"
            )))
        }
    };
    *lock(&LEVEL) = Some(filter.to_string());
    Ok(())
}
