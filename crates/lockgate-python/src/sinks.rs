//! The transactional sinks from Python: a stream's elements written to a PostgreSQL or
//! SQLite table (`DStream.saveToDatabase`) or a Kafka topic (`DStream.saveToKafka`), one
//! transaction per batch committed with the batch id, so a batch re-run after a crash
//! is not written twice. Elements are checked and converted before the sink (a wrong
//! one fails the batch naming it), so the sinks only write.

use lockgate_core::{DStream, StreamingContext};
use lockgate_kafka::{KafkaOutRecord, KafkaSink, KafkaSinkConfig};
use lockgate_sql::datafusion::arrow::datatypes::DataType;
use lockgate_sql_sinks::{open_url, SqlSink, SqlType, SqlValue, Table, WriteMode};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::value::Value;

/// The columns of `NAME TYPE, ...` for a database table (read as `--schema` is):
/// `STRING`, `BIGINT` or `DOUBLE`.
fn columns(table: &str, ddl: &str) -> PyResult<Vec<(String, SqlType)>> {
    let schema = lockgate_sql::parse_schema(ddl)
        .map_err(|e| PyValueError::new_err(format!("table `{table}`: {e}")))?;
    schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::Utf8 => SqlType::Text,
                DataType::Int64 => SqlType::BigInt,
                DataType::Float64 => SqlType::Double,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "table `{table}`: type {other} of `{}` (use STRING, BIGINT or DOUBLE)",
                        f.name()
                    )))
                }
            };
            Ok((f.name().clone(), ty))
        })
        .collect()
}

/// One element as a row of `cols`: a tuple or list of their values (a single value for
/// one column).
fn sql_row(v: &Value, cols: &[(String, SqlType)]) -> Result<Vec<SqlValue>, String> {
    let single;
    let items: &[Value] = match v {
        Value::Tuple(items) | Value::List(items) => items,
        one if cols.len() == 1 => {
            single = [one.clone()];
            &single
        }
        other => {
            return Err(format!(
                "a row of {} columns must be a tuple or a list, got {}",
                cols.len(),
                other.kind()
            ))
        }
    };
    if items.len() != cols.len() {
        return Err(format!(
            "a row of {} values for {} columns",
            items.len(),
            cols.len()
        ));
    }
    items
        .iter()
        .zip(cols)
        .map(|(x, (name, ty))| match (x, ty) {
            (Value::None, _) => Ok(SqlValue::Null),
            (Value::Str(s), SqlType::Text) => Ok(SqlValue::Text(s.to_string())),
            (Value::Int(n), SqlType::BigInt) => Ok(SqlValue::Int(*n)),
            (Value::Bool(b), SqlType::BigInt) => Ok(SqlValue::Int(i64::from(*b))),
            (Value::Float(f), SqlType::Double) => Ok(SqlValue::Float(*f)),
            #[allow(clippy::cast_precision_loss)]
            (Value::Int(n), SqlType::Double) => Ok(SqlValue::Float(*n as f64)),
            (other, ty) => Err(format!("column `{name}` ({ty:?}): got {}", other.kind())),
        })
        .collect()
}

/// Writes every batch of `stream` to `table` of the database at `url` (`sqlite:PATH`
/// or `postgres://...`): upserted by `key`, or inserted without one.
pub fn to_database(
    stream: &DStream<Value>,
    url: &str,
    table: &str,
    ddl: &str,
    key: Vec<String>,
    name: &str,
) -> PyResult<()> {
    let cols = columns(table, ddl)?;
    for k in &key {
        if !cols.iter().any(|(c, _)| c == k) {
            return Err(PyValueError::new_err(format!(
                "table `{table}`: key column `{k}` is not one of its columns"
            )));
        }
    }
    let bad = |e: lockgate_sql_sinks::Error| PyValueError::new_err(e.to_string());
    let backend = open_url(url).map_err(bad)?;
    let col_refs: Vec<(&str, SqlType)> = cols.iter().map(|(c, t)| (c.as_str(), *t)).collect();
    let key_refs: Vec<&str> = key.iter().map(String::as_str).collect();
    let mode = if key.is_empty() {
        WriteMode::Insert
    } else {
        WriteMode::Upsert
    };
    let sink = SqlSink::new(
        name,
        backend,
        Table::new(table, &col_refs, &key_refs),
        mode,
        |row: &Vec<SqlValue>| row.clone(),
    )
    .map_err(bad)?;
    let what = format!("database table `{table}`");
    let rows = stream.try_map_partitions(move |part| {
        part.iter()
            .map(|v| sql_row(v, &cols).map_err(|m| lockgate_core::Error::external(what.clone(), m)))
            .collect()
    });
    rows.write_to(sink);
    Ok(())
}

/// Bytes of a key or value: `bytes`, or `str` as UTF-8.
fn kafka_bytes(v: &Value, what: &str) -> Result<Option<Vec<u8>>, String> {
    match v {
        Value::None => Ok(None),
        Value::Bytes(b) => Ok(Some(b.to_vec())),
        Value::Str(s) => Ok(Some(s.as_bytes().to_vec())),
        other => Err(format!(
            "a record's {what} must be str or bytes, got {}",
            other.kind()
        )),
    }
}

/// Writes every batch of `stream` to `topic` at `brokers` in one Kafka transaction per
/// batch (transactional id `lockgate-<app>-<name>`): a `(key, value)` tuple is a keyed
/// record, anything else the value of a record without a key.
pub fn to_kafka(
    ctx: &StreamingContext,
    stream: &DStream<Value>,
    brokers: &str,
    topic: &str,
    properties: Vec<(String, String)>,
    name: &str,
) -> PyResult<()> {
    let mut config = KafkaSinkConfig::new(brokers, topic);
    config.properties = properties;
    let sink = KafkaSink::new(
        name,
        ctx.app_name(),
        config,
        |(key, value): &(Option<Vec<u8>>, Vec<u8>), _| KafkaOutRecord {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let what = format!("Kafka topic `{topic}`");
    let records = stream.try_map_partitions(move |part| {
        part.iter()
            .map(|v| {
                let (key, value) = match v {
                    Value::Tuple(kv) if kv.len() == 2 => {
                        (kafka_bytes(&kv[0], "key")?, kafka_bytes(&kv[1], "value")?)
                    }
                    other => (None, kafka_bytes(other, "value")?),
                };
                Ok((key, value.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(|m| lockgate_core::Error::external(what.clone(), m))
    });
    records.write_to(sink);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn rows_are_checked_against_the_columns() {
        let cols = columns("t", "word STRING, n BIGINT, x DOUBLE").unwrap_or_default();
        let row = Value::Tuple(Arc::from(vec![
            Value::Str(Arc::from("a")),
            Value::Int(2),
            Value::Int(3),
        ]));
        assert_eq!(
            sql_row(&row, &cols),
            Ok(vec![
                SqlValue::Text("a".into()),
                SqlValue::Int(2),
                SqlValue::Float(3.0)
            ])
        );
        let wrong = Value::Tuple(Arc::from(vec![Value::Int(1), Value::Int(2), Value::None]));
        assert_eq!(
            sql_row(&wrong, &cols),
            Err("column `word` (Text): got an int".into())
        );
        assert!(columns("t", "a BLOB").is_err());
        assert!(columns("t", "a BOOLEAN").is_err());
    }
}
