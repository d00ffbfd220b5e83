//! SQL from Python on Lockgate's SQL layer (DataFusion, in Spark's dialect): batch
//! queries for `lockgate.sql` (`SparkSession.sql` over temporary views: Python rows
//! become Arrow columns, the result comes back as tuples), and queries over streams
//! for `StreamingContext.sql` ([`SqlQuery`]: each partition of a registered stream
//! becomes a record batch of its declared schema; the result is a stream of tuples and
//! one of Arrow IPC bytes, for `foreachBatch` with `pyarrow` tables).

use std::sync::Arc;

use lockgate_sql::datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use lockgate_sql::datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use lockgate_sql::datafusion::arrow::ipc::writer::StreamWriter;
use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
use lockgate_sql::datafusion::scalar::ScalarValue;
use lockgate_sql::SqlContext;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString, PyTuple};

use crate::stream::Stream;
use crate::value::Value;

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

/// A query over streams (`StreamingContext.sql`): the stream of its rows as tuples, the
/// stream of its batches as Arrow IPC bytes, and its columns.
#[pyclass(module = "lockgate._lockgate", frozen)]
pub struct SqlQuery {
    rows: Stream,
    arrow: Stream,
    columns: Vec<(String, String)>,
}

#[pymethods]
impl SqlQuery {
    /// The rows, one tuple each (timestamps as epoch microseconds, dates as days since
    /// the epoch: the Python side makes them `datetime`s and `date`s).
    fn rows(&self) -> Stream {
        self.rows.clone()
    }

    /// Per batch partition, its rows as one Arrow IPC stream (`bytes`; the schema alone
    /// for a partition without rows).
    fn arrow(&self) -> Stream {
        self.arrow.clone()
    }

    /// `(name, kind)` per column, kind `timestamp`, `date`, `value` or
    /// `struct:NAME=KIND;...`.
    #[getter]
    fn columns(&self) -> Vec<(String, String)> {
        self.columns.clone()
    }
}

/// One element of a stream table as its row's values: a tuple or list of them, a single
/// value for a one-column table, or (pickled) a `Row` or another sequence.
fn row_values(v: &Value, width: usize) -> std::result::Result<Vec<Value>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => Ok(items.to_vec()),
        Value::Pickled(_) => Python::attach(|py| {
            let obj = v.to_py(py)?;
            obj.try_iter()?
                .map(|x| Value::from_py(&x?))
                .collect::<PyResult<Vec<_>>>()
        })
        .map_err(|e| format!("a row that is not a sequence: {e}")),
        one if width == 1 => Ok(vec![one.clone()]),
        other => Err(format!(
            "a row of {width} columns must be a tuple, a list or a Row, got {}",
            other.kind()
        )),
    }
}

/// Calls `method` of a pickled value (a `datetime`'s `timestamp`, a `date`'s
/// `toordinal`): its number.
fn call_pickled(v: &Value, method: &str) -> std::result::Result<f64, String> {
    Python::attach(|py| {
        let obj = v.to_py(py).map_err(|e| e.to_string())?;
        let r = obj.call_method0(method).map_err(|e| e.to_string())?;
        r.extract::<f64>().map_err(|e| e.to_string())
    })
}

/// A stream table's column of `ty` from its rows' values.
fn typed_column(
    name: &str,
    ty: &DataType,
    values: impl Iterator<Item = Value>,
) -> std::result::Result<ArrayRef, String> {
    let wrong = |v: &Value| format!("column `{name}` ({ty}): got {}", v.kind());
    Ok(match ty {
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            for v in values {
                match &v {
                    Value::None => b.append_null(),
                    Value::Str(s) => b.append_value(s),
                    other => return Err(wrong(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for v in values {
                match &v {
                    Value::None => b.append_null(),
                    Value::Int(n) => b.append_value(*n),
                    other => return Err(wrong(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            for v in values {
                match &v {
                    Value::None => b.append_null(),
                    Value::Float(x) => b.append_value(*x),
                    #[allow(clippy::cast_precision_loss)]
                    Value::Int(n) => b.append_value(*n as f64),
                    other => return Err(wrong(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for v in values {
                match &v {
                    Value::None => b.append_null(),
                    Value::Bool(x) => b.append_value(*x),
                    other => return Err(wrong(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            // A `datetime` (naive ones in local time, as Python's `timestamp()`), or
            // seconds since the epoch.
            let mut b = TimestampMicrosecondBuilder::new();
            for v in values {
                #[allow(clippy::cast_possible_truncation)]
                let secs_to_us = |s: f64| (s * 1e6).round() as i64;
                match &v {
                    Value::None => b.append_null(),
                    Value::Int(s) => b.append_value(s.saturating_mul(1_000_000)),
                    Value::Float(s) => b.append_value(secs_to_us(*s)),
                    Value::Pickled(_) => {
                        let s = call_pickled(&v, "timestamp")
                            .map_err(|e| format!("{}: {e}", wrong(&v)))?;
                        b.append_value(secs_to_us(s));
                    }
                    other => return Err(wrong(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            // A `date`: days since 1970-01-01 (ordinal 719163).
            let mut b = Date32Builder::new();
            for v in values {
                match &v {
                    Value::None => b.append_null(),
                    Value::Pickled(_) => {
                        let ordinal = call_pickled(&v, "toordinal")
                            .map_err(|e| format!("{}: {e}", wrong(&v)))?;
                        #[allow(clippy::cast_possible_truncation)]
                        b.append_value(ordinal as i32 - 719_163);
                    }
                    other => return Err(wrong(other)),
                }
            }
            Arc::new(b.finish())
        }
        other => return Err(format!("column `{name}`: type {other}")),
    })
}

/// A partition of a stream table's elements as one record batch of `schema`; a row
/// that does not fit fails the batch naming the table, the column and the value.
fn table_batch(
    table: &str,
    schema: &SchemaRef,
    part: Vec<Value>,
) -> lockgate_core::Result<Vec<RecordBatch>> {
    if part.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |m: String| lockgate_core::Error::external(format!("SQL table `{table}`"), m);
    let width = schema.fields().len();
    let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(part.len()); width];
    for v in &part {
        let values = row_values(v, width).map_err(fail)?;
        if values.len() != width {
            return Err(fail(format!(
                "a row of {} values for {width} columns",
                values.len()
            )));
        }
        for (c, x) in columns.iter_mut().zip(values) {
            c.push(x);
        }
    }
    let arrays = schema
        .fields()
        .iter()
        .zip(columns)
        .map(|(f, values)| typed_column(f.name(), f.data_type(), values.into_iter()))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(fail)?;
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| fail(e.to_string()))?;
    Ok(vec![batch])
}

/// A result value as the engine holds it: timestamps as epoch microseconds, dates as
/// days, structs (a window's bounds) as tuples, other types as their text.
fn scalar_to_value(v: &ScalarValue) -> Value {
    use ScalarValue::*;
    if v.is_null() {
        return Value::None;
    }
    match v {
        Boolean(Some(b)) => Value::Bool(*b),
        Int8(Some(n)) => Value::Int(i64::from(*n)),
        Int16(Some(n)) => Value::Int(i64::from(*n)),
        Int32(Some(n)) => Value::Int(i64::from(*n)),
        Int64(Some(n)) => Value::Int(*n),
        UInt8(Some(n)) => Value::Int(i64::from(*n)),
        UInt16(Some(n)) => Value::Int(i64::from(*n)),
        UInt32(Some(n)) => Value::Int(i64::from(*n)),
        UInt64(Some(n)) => {
            i64::try_from(*n).map_or_else(|_| Value::Str(Arc::from(n.to_string())), Value::Int)
        }
        Float32(Some(x)) => Value::Float(f64::from(*x)),
        Float64(Some(x)) => Value::Float(*x),
        Utf8(Some(s)) | LargeUtf8(Some(s)) | Utf8View(Some(s)) => Value::Str(Arc::from(s.as_str())),
        TimestampSecond(Some(n), _) => Value::Int(n.saturating_mul(1_000_000)),
        TimestampMillisecond(Some(n), _) => Value::Int(n.saturating_mul(1_000)),
        TimestampMicrosecond(Some(n), _) => Value::Int(*n),
        TimestampNanosecond(Some(n), _) => Value::Int(n / 1_000),
        Date32(Some(d)) => Value::Int(i64::from(*d)),
        Struct(s) => {
            let row: Vec<Value> = s
                .columns()
                .iter()
                .map(|c| {
                    ScalarValue::try_from_array(c, 0).map_or(Value::None, |x| scalar_to_value(&x))
                })
                .collect();
            Value::Tuple(Arc::from(row))
        }
        other => Value::Str(Arc::from(other.to_string())),
    }
}

/// What the Python side makes of a column's values: `timestamp`, `date`, `value`, or
/// for a struct (a window's bounds) `struct:NAME=KIND;NAME=KIND` (one level).
fn kind_of_type(ty: &DataType) -> String {
    match ty {
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Date32 => "date".into(),
        DataType::Struct(fields) => format!(
            "struct:{}",
            fields
                .iter()
                .map(|f| {
                    let kind = match f.data_type() {
                        DataType::Struct(_) => "value".to_string(),
                        other => kind_of_type(other),
                    };
                    format!("{}={kind}", f.name())
                })
                .collect::<Vec<_>>()
                .join(";")
        ),
        _ => "value".into(),
    }
}

/// A partition's record batches as one Arrow IPC stream.
fn ipc_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> lockgate_core::Result<Vec<u8>> {
    let fail = |e: lockgate_sql::datafusion::arrow::error::ArrowError| {
        lockgate_core::Error::external("SQL result as Arrow IPC", e.to_string())
    };
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, schema).map_err(fail)?;
    for b in batches {
        w.write(b).map_err(fail)?;
    }
    w.finish().map_err(fail)?;
    drop(w);
    Ok(out)
}

/// The query `query` over the streams of `tables` (`(name, stream, schema)`, the schema
/// as `name TYPE, ...`), its state named after `name`; see [`SqlQuery`].
pub fn stream_query(
    query: &str,
    name: &str,
    tables: Vec<(String, PyRef<'_, Stream>, String)>,
    append: bool,
    watermark: Option<(String, String)>,
) -> PyResult<SqlQuery> {
    let bad = |e: lockgate_sql::Error| PyValueError::new_err(e.to_string());
    let read = lockgate_sql::tables_read(query).map_err(bad)?;
    let mut sql = SqlContext::new();
    let mut first: Option<Stream> = None;
    for (table, stream, ddl) in tables.iter().filter(|(n, ..)| read.contains(n)) {
        let schema = lockgate_sql::parse_schema(ddl)
            .map_err(|e| PyValueError::new_err(format!("table `{table}`: {e}")))?;
        let (t, s) = (table.clone(), schema.clone());
        let batches = stream
            .s
            .try_map_partitions(move |part| table_batch(&t, &s, part));
        sql.register_stream(table, schema, batches).map_err(bad)?;
        first.get_or_insert_with(|| (*stream).clone());
    }
    let Some(like) = first else {
        return Err(PyValueError::new_err(format!(
            "the query reads no stream registered with createOrReplaceTempView: {query}"
        )));
    };
    if let Some((column, delay)) = &watermark {
        let delay = lockgate_core::clock::parse_duration(delay)
            .map_err(|e| PyValueError::new_err(format!("watermark `{delay}`: {e}")))?;
        sql.with_watermark(column, delay);
    }
    if append {
        sql.output_mode(lockgate_core::OutputMode::Append);
    }
    let out = sql.sql_named(query, name).map_err(bad)?;
    let schema = out.schema().clone();
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), kind_of_type(f.data_type())))
        .collect();
    let rows = out.rows().map(|r| {
        Value::Tuple(Arc::from(
            r.values().iter().map(scalar_to_value).collect::<Vec<_>>(),
        ))
    });
    // Every partition gives one IPC stream, with the schema only when it has no rows, so
    // an empty batch is an empty table of the query's columns.
    let arrow = out
        .record_batches()
        .try_map_partitions(move |batches: Vec<RecordBatch>| {
            Ok(vec![Value::Bytes(Arc::from(ipc_bytes(&schema, &batches)?))])
        });
    Ok(SqlQuery {
        rows: like.wrap(rows),
        arrow: like.wrap(arrow),
        columns,
    })
}
