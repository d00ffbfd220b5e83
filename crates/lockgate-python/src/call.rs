//! Calling the job's Python functions from the engine's threads: [`PyFunc`], the
//! [`Failure`] a raised exception becomes (with its Python traceback), and [`Failures`],
//! where operators whose Rust signature cannot fail (a reduce, a state update) leave the
//! first failure for the batch's outputs to report.
//!
//! The GIL is taken only around the calls, once per partition where the operator works
//! on a partition at a time.

use std::sync::{Arc, Mutex};

use lockgate_core::sync::lock;
use pyo3::prelude::*;

use crate::value::{py_list, Value};

/// A Python callable of the job.
#[derive(Clone)]
pub struct PyFunc {
    f: Arc<Py<PyAny>>,
    name: Arc<str>,
}

impl std::fmt::Debug for PyFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PyFunc({})", self.name)
    }
}

impl PyFunc {
    /// Wraps `f`; a `TypeError` when it is not callable.
    pub fn new(f: &Bound<'_, PyAny>) -> PyResult<PyFunc> {
        if !f.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "expected a function, got {}",
                f.get_type().name()?
            )));
        }
        let name = f
            .getattr("__qualname__")
            .and_then(|n| n.extract::<String>())
            .or_else(|_| f.repr().map(|r| r.to_string()))?;
        Ok(PyFunc {
            f: Arc::new(f.clone().unbind()),
            name: Arc::from(name),
        })
    }

    /// The function's name (its `__qualname__`: `<lambda>` for a lambda).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Turns a Python error met while handling this function's values (converting an
    /// argument or a result) into its failure.
    pub fn err<'a>(&'a self, py: Python<'a>) -> impl Fn(PyErr) -> Failure + Copy + 'a {
        move |e| Failure::from_py(py, self.name(), &e)
    }

    /// Calls the function with `args`; the GIL must be held.
    pub fn call<'py>(
        &self,
        py: Python<'py>,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> Result<Bound<'py, PyAny>, Failure> {
        self.f
            .bind(py)
            .call1(args)
            .map_err(|e| Failure::from_py(py, self.name(), &e))
    }
}

impl PyFunc {
    /// Folds `values` (at least one) with the function as `functools.reduce` does: one
    /// call per value after the first, made by Python's own loop; the GIL must be held.
    pub fn reduce(&self, py: Python<'_>, values: &[Value]) -> Result<Value, Failure> {
        let err = self.err(py);
        let first = values
            .first()
            .ok_or_else(|| Failure::value(self.name(), "reduce of no values".to_string()))?;
        if values.len() == 1 {
            return Ok(first.clone());
        }
        let reduce = py
            .import("functools")
            .and_then(|m| m.getattr("reduce"))
            .map_err(err)?;
        let list = py_list(py, values).map_err(err)?;
        let r = reduce
            .call1((self.f.bind(py), list))
            .map_err(|e| Failure::from_py(py, self.name(), &e))?;
        Value::from_py(&r).map_err(err)
    }
}

/// An exception raised by one of the job's Python functions (or a value the engine
/// could not take from it), with the Python traceback.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the Python function `{function}` failed:\n{traceback}")]
pub struct Failure {
    /// The function's name.
    pub function: String,
    /// The formatted exception: its traceback, type and message.
    pub traceback: String,
}

impl Failure {
    /// The failure of `function` raising `err`.
    pub fn from_py(py: Python<'_>, function: &str, err: &PyErr) -> Failure {
        let formatted = py
            .import("traceback")
            .and_then(|tb| {
                tb.call_method1(
                    "format_exception",
                    (err.get_type(py), err.value(py), err.traceback(py)),
                )
            })
            .and_then(|lines| lines.extract::<Vec<String>>())
            .map(|lines| lines.concat());
        Failure {
            function: function.to_string(),
            traceback: formatted.unwrap_or_else(|_| err.to_string()),
        }
    }

    /// A failure that is not a Python exception: a value the engine cannot use.
    pub fn value(function: &str, message: String) -> Failure {
        Failure {
            function: function.to_string(),
            traceback: message,
        }
    }

    /// As an engine error (it fails the batch).
    pub fn into_engine(self) -> lockgate_core::Error {
        lockgate_core::Error::external("Python", self)
    }
}

/// The first failure of a context's infallible operators, reported by the outputs of
/// the batch it happened in.
#[derive(Clone, Debug, Default)]
pub struct Failures(Arc<Mutex<Option<Failure>>>);

impl Failures {
    /// Keeps `f` unless a failure is kept already.
    pub fn record(&self, f: Failure) {
        tracing::error!(function = %f.function, "{}", f.traceback);
        lock(&self.0).get_or_insert(f);
    }

    /// The failure kept, as the engine error that fails the batch.
    pub fn check(&self) -> lockgate_core::Result<()> {
        match lock(&self.0).clone() {
            Some(f) => Err(f.into_engine()),
            None => Ok(()),
        }
    }

    /// Calls `body` with the GIL; a failure is kept and `fallback` returned instead
    /// (the batch fails at its outputs, so the fallback is never committed).
    pub fn guard<R>(
        &self,
        fallback: impl FnOnce() -> R,
        body: impl FnOnce(Python<'_>) -> Result<R, Failure>,
    ) -> R {
        match Python::attach(body) {
            Ok(r) => r,
            Err(f) => {
                self.record(f);
                fallback()
            }
        }
    }
}
