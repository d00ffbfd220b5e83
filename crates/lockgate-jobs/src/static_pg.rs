//! A PostgreSQL table as a static SQL table: read once, at start
//! (`--table NAME=postgres://USER@HOST:PORT/DB#TABLE`).

use std::sync::Arc;

use lockgate_sql::datafusion::arrow::array::ArrayRef;
use lockgate_sql::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
use lockgate_sql::datafusion::scalar::ScalarValue;
use postgres::types::Type;

/// The rows of the table named after `#` in `url`.
pub fn read_table(url: &str) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let (conn, table) = url
        .rsplit_once('#')
        .ok_or("name the table after the address: postgres://USER@HOST:PORT/DB#TABLE")?;
    if table.is_empty()
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!(
            "`{table}` is not a table name (letters, digits, `_`, and `.` after a schema)"
        ));
    }
    let redacted = lockgate_sql_sinks::redact_url(conn);
    let mut client = postgres::Client::connect(conn, postgres::NoTls)
        .map_err(|e| format!("cannot connect to {redacted}: {e}"))?;
    let quoted: Vec<String> = table.split('.').map(|p| format!("\"{p}\"")).collect();
    let rows = client
        .query(&format!("SELECT * FROM {}", quoted.join(".")), &[])
        .map_err(|e| format!("reading table {table} from {redacted}: {e}"))?;
    let stmt = client
        .prepare(&format!("SELECT * FROM {} LIMIT 0", quoted.join(".")))
        .map_err(|e| format!("reading table {table} from {redacted}: {e}"))?;
    let mut fields = Vec::new();
    for c in stmt.columns() {
        let dt = match *c.type_() {
            Type::INT2 | Type::INT4 | Type::INT8 => DataType::Int64,
            Type::FLOAT4 | Type::FLOAT8 => DataType::Float64,
            Type::BOOL => DataType::Boolean,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
            ref other => {
                return Err(format!(
                    "column `{}` has type {other}: static tables read integers, floats, \
                     booleans and text; cast the column in a view",
                    c.name()
                ))
            }
        };
        fields.push(Field::new(c.name(), dt, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let err = |e: postgres::Error| format!("reading table {table}: {e}");
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let values: Vec<ScalarValue> = rows
            .iter()
            .map(|r| {
                Ok(match (f.data_type(), r.columns()[i].type_()) {
                    (DataType::Int64, &Type::INT2) => {
                        ScalarValue::Int64(r.try_get::<_, Option<i16>>(i)?.map(i64::from))
                    }
                    (DataType::Int64, &Type::INT4) => {
                        ScalarValue::Int64(r.try_get::<_, Option<i32>>(i)?.map(i64::from))
                    }
                    (DataType::Int64, _) => ScalarValue::Int64(r.try_get(i)?),
                    (DataType::Float64, &Type::FLOAT4) => {
                        ScalarValue::Float64(r.try_get::<_, Option<f32>>(i)?.map(f64::from))
                    }
                    (DataType::Float64, _) => ScalarValue::Float64(r.try_get(i)?),
                    (DataType::Boolean, _) => ScalarValue::Boolean(r.try_get(i)?),
                    _ => ScalarValue::Utf8(r.try_get(i)?),
                })
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(err)?;
        let array = if values.is_empty() {
            lockgate_sql::datafusion::arrow::array::new_empty_array(f.data_type())
        } else {
            ScalarValue::iter_to_array(values).map_err(|e| e.to_string())?
        };
        columns.push(array);
    }
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
    Ok((schema, vec![batch]))
}
