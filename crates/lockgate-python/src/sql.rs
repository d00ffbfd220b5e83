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
use lockgate_sql::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use lockgate_sql::datafusion::arrow::ipc::writer::StreamWriter;
use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
use lockgate_sql::datafusion::scalar::ScalarValue;
use lockgate_sql::SqlContext;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::stream::Stream;
use crate::value::Value;

/// What a Python value can be in a column: its Arrow type (`None` for `None`, which
/// fits any), or an error naming its Python type.
fn type_of(v: &Value, column: &str) -> Result<Option<DataType>, String> {
    Ok(Some(match v {
        Value::None => return Ok(None),
        Value::Bool(_) => DataType::Boolean,
        Value::Int(_) => DataType::Int64,
        Value::Float(_) => DataType::Float64,
        Value::Str(_) => DataType::Utf8,
        Value::Pickled(_) => {
            let name = Python::attach(|py| -> PyResult<String> {
                let obj = v.to_py(py)?;
                let datetime = py.import("datetime")?;
                Ok(if obj.is_instance(&datetime.getattr("datetime")?)? {
                    "datetime".into()
                } else if obj.is_instance(&datetime.getattr("date")?)? {
                    "date".into()
                } else {
                    obj.get_type().name()?.to_string()
                })
            })
            .map_err(|e| e.to_string())?;
            match name.as_str() {
                "datetime" => DataType::Timestamp(TimeUnit::Microsecond, None),
                "date" => DataType::Date32,
                other => return Err(unqueryable(column, other)),
            }
        }
        other => return Err(unqueryable(column, other.kind())),
    }))
}

fn unqueryable(column: &str, what: &str) -> String {
    format!(
        "column `{column}`: a value of type {what} cannot be queried with SQL; give str, \
         int, float, bool, datetime, date or None"
    )
}

/// The type of a column of `values`: ints and floats mixed are floats; other mixes are
/// errors; a column of `None` only is text.
fn infer_type(column: &str, values: &[Value]) -> Result<DataType, String> {
    let mut found: Option<DataType> = None;
    for v in values {
        let Some(t) = type_of(v, column)? else {
            continue;
        };
        found = Some(match found {
            None => t,
            Some(f) if f == t => f,
            Some(DataType::Int64 | DataType::Float64)
                if matches!(t, DataType::Int64 | DataType::Float64) =>
            {
                DataType::Float64
            }
            Some(_) => {
                return Err(format!(
                    "column `{column}` mixes values of different types ({})",
                    v.kind()
                ))
            }
        });
    }
    Ok(found.unwrap_or(DataType::Utf8))
}

/// A table of `rows` (sequences of values) with `columns`, typed from its values, as
/// one record batch.
fn table(name: &str, columns: &[String], rows: &Bound<'_, PyAny>) -> PyResult<RecordBatch> {
    let mut by_column: Vec<Vec<Value>> = vec![Vec::new(); columns.len()];
    for row in rows.try_iter()? {
        let values = row_values(&Value::from_py(&row?)?, columns.len())
            .map_err(|m| PyTypeError::new_err(format!("table `{name}`: {m}")))?;
        if values.len() != columns.len() {
            return Err(PyValueError::new_err(format!(
                "table `{name}`: a row of {} values for {} columns",
                values.len(),
                columns.len()
            )));
        }
        for (c, v) in by_column.iter_mut().zip(values) {
            c.push(v);
        }
    }
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for (c, values) in columns.iter().zip(by_column) {
        let ty = infer_type(c, &values).map_err(PyTypeError::new_err)?;
        arrays.push(typed_column(c, &ty, values.into_iter()).map_err(PyTypeError::new_err)?);
        fields.push(Field::new(c, ty, true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| PyValueError::new_err(format!("table `{name}`: {e}")))
}

/// `(name, kind)` of each column of `schema` (see [`kind_of_type`]).
fn column_kinds(schema: &SchemaRef) -> Vec<(String, String)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), kind_of_type(f.data_type())))
        .collect()
}

/// Runs `query` once over the `tables` it reads (`(name, columns, rows)`, names in
/// lower case, rows as tuples): the result's columns as `(name, kind)` (see
/// [`SqlQuery::columns`]) and its rows as tuples.
#[pyfunction]
pub fn run_sql<'py>(
    py: Python<'py>,
    query: &str,
    tables: Vec<(String, Vec<String>, Bound<'py, PyAny>)>,
) -> PyResult<(Vec<(String, String)>, Vec<Bound<'py, PyTuple>>)> {
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
    let mut rows = Vec::new();
    for batch in &batches {
        for r in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(batch.num_columns());
            for c in batch.columns() {
                let v = ScalarValue::try_from_array(c, r)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                values.push(scalar_to_value(&v).to_py(py)?);
            }
            rows.push(PyTuple::new(py, values)?);
        }
    }
    Ok((column_kinds(&schema), rows))
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
    let columns = column_kinds(&schema);
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
