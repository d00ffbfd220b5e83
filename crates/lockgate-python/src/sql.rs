//! Batch SQL for `lockgate.sql` (`SparkSession.sql` over temporary views): Python rows
//! become Arrow columns, Lockgate's SQL layer (DataFusion, in Spark's dialect) runs the
//! query, and the result comes back as Python tuples.

use std::sync::Arc;

use lockgate_sql::datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
use lockgate_sql::datafusion::scalar::ScalarValue;
use lockgate_sql::SqlContext;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString, PyTuple};

/// The Arrow type a column's Python values are given.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
}

/// The kind of one value (`None` for `None`), or an error naming its type.
fn kind_of(v: &Bound<'_, PyAny>, column: &str) -> PyResult<Option<Kind>> {
    Ok(if v.is_none() {
        None
    } else if v.is_instance_of::<PyBool>() {
        Some(Kind::Bool)
    } else if v.is_instance_of::<PyInt>() {
        Some(Kind::Int)
    } else if v.is_instance_of::<PyFloat>() {
        Some(Kind::Float)
    } else if v.is_instance_of::<PyString>() {
        Some(Kind::Str)
    } else {
        return Err(PyTypeError::new_err(format!(
            "column `{column}`: a value of type {} cannot be queried with SQL; give str, \
             int, float, bool or None",
            v.get_type().name()?
        )));
    })
}

/// One column of Python values as an Arrow array: ints and floats mixed are floats;
/// other mixes are errors; a column of `None` only is text.
fn column(name: &str, values: &[Bound<'_, PyAny>]) -> PyResult<ArrayRef> {
    let mut kind: Option<Kind> = None;
    for v in values {
        match (kind, kind_of(v, name)?) {
            (_, None) => {}
            (None, k) => kind = k,
            (Some(a), Some(b)) if a == b => {}
            (Some(Kind::Int), Some(Kind::Float)) | (Some(Kind::Float), Some(Kind::Int)) => {
                kind = Some(Kind::Float)
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "column `{name}` mixes values of different types ({})",
                    v.get_type().name()?
                )))
            }
        }
    }
    Ok(match kind.unwrap_or(Kind::Str) {
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for v in values {
                b.append_option(v.extract::<Option<bool>>()?);
            }
            Arc::new(b.finish())
        }
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(values.len());
            for v in values {
                let n = v.extract::<Option<i64>>().map_err(|_| {
                    PyValueError::new_err(format!(
                        "column `{name}`: {v} does not fit a 64-bit integer"
                    ))
                })?;
                b.append_option(n);
            }
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(values.len());
            for v in values {
                b.append_option(v.extract::<Option<f64>>()?);
            }
            Arc::new(b.finish())
        }
        Kind::Str => {
            let mut b = StringBuilder::new();
            for v in values {
                b.append_option(v.extract::<Option<String>>()?);
            }
            Arc::new(b.finish())
        }
    })
}

/// A table of `rows` (sequences of values) with `columns`, as one record batch.
fn table(name: &str, columns: &[String], rows: &Bound<'_, PyAny>) -> PyResult<RecordBatch> {
    let mut by_column: Vec<Vec<Bound<'_, PyAny>>> = vec![Vec::new(); columns.len()];
    for row in rows.try_iter()? {
        let row = row?;
        let row = row.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!("table `{name}`: a row that is not a tuple"))
        })?;
        if row.len() != columns.len() {
            return Err(PyValueError::new_err(format!(
                "table `{name}`: a row of {} values for {} columns",
                row.len(),
                columns.len()
            )));
        }
        for (i, v) in row.iter().enumerate() {
            by_column[i].push(v);
        }
    }
    let arrays = columns
        .iter()
        .zip(&by_column)
        .map(|(c, values)| Ok((c.as_str(), column(c, values)?)))
        .collect::<PyResult<Vec<_>>>()?;
    RecordBatch::try_from_iter(arrays)
        .map_err(|e| PyValueError::new_err(format!("table `{name}`: {e}")))
}

/// A result value as Python: numbers, text, booleans and nulls as themselves, anything
/// else (dates, times, decimals) as its text.
fn scalar_to_py<'py>(py: Python<'py>, v: &ScalarValue) -> PyResult<Bound<'py, PyAny>> {
    use ScalarValue::*;
    if v.is_null() {
        return Ok(py.None().into_bound(py));
    }
    Ok(match v {
        Boolean(Some(b)) => PyBool::new(py, *b).to_owned().into_any(),
        Int8(Some(n)) => n.into_pyobject(py)?.into_any(),
        Int16(Some(n)) => n.into_pyobject(py)?.into_any(),
        Int32(Some(n)) => n.into_pyobject(py)?.into_any(),
        Int64(Some(n)) => n.into_pyobject(py)?.into_any(),
        UInt8(Some(n)) => n.into_pyobject(py)?.into_any(),
        UInt16(Some(n)) => n.into_pyobject(py)?.into_any(),
        UInt32(Some(n)) => n.into_pyobject(py)?.into_any(),
        UInt64(Some(n)) => n.into_pyobject(py)?.into_any(),
        Float32(Some(x)) => x.into_pyobject(py)?.into_any(),
        Float64(Some(x)) => x.into_pyobject(py)?.into_any(),
        Utf8(Some(s)) | LargeUtf8(Some(s)) | Utf8View(Some(s)) => PyString::new(py, s).into_any(),
        other => PyString::new(py, &other.to_string()).into_any(),
    })
}

/// Runs `query` once over the `tables` it reads (`(name, columns, rows)`, names in
/// lower case, rows as tuples): the result's column names and its rows as tuples.
#[pyfunction]
pub fn run_sql<'py>(
    py: Python<'py>,
    query: &str,
    tables: Vec<(String, Vec<String>, Bound<'py, PyAny>)>,
) -> PyResult<(Vec<String>, Vec<Bound<'py, PyTuple>>)> {
    let mut sql = SqlContext::new();
    // Only the views the query reads are converted.
    let read =
        lockgate_sql::tables_read(query).map_err(|e| PyValueError::new_err(e.to_string()))?;
    for (name, columns, rows) in tables.iter().filter(|(n, ..)| read.contains(n)) {
        let batch = table(name, columns, rows)?;
        sql.register_batches(name, batch.schema(), vec![batch])
            .map_err(|e| PyValueError::new_err(format!("table `{name}`: {e}")))?;
    }
    let query = query.to_string();
    let (schema, batches) = py
        .detach(move || sql.query_static(&query))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let names = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for batch in &batches {
        for r in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(batch.num_columns());
            for c in batch.columns() {
                let v = ScalarValue::try_from_array(c, r)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                values.push(scalar_to_py(py, &v)?);
            }
            rows.push(PyTuple::new(py, values)?);
        }
    }
    Ok((names, rows))
}
