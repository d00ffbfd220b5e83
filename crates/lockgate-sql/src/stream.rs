//! [`SqlStream`]: a planned query's rows as a stream, and what describes them.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use lockgate_core::DStream;

use crate::error::Error;
use crate::exec::{self, Row};
use crate::plan::{Kind, StreamPlan};

/// A query over streams: its rows as a stream, and what describes them.
pub struct SqlStream {
    pub(crate) rows: DStream<Row>,
    pub(crate) columns: Arc<Vec<String>>,
    pub(crate) schema: SchemaRef,
    pub(crate) key_columns: Vec<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) plan: StreamPlan,
}

impl SqlStream {
    /// The rows, each the query's columns in order: in update mode, every batch the
    /// groups (and windows) it changed; in append mode, finished windows; without
    /// aggregation, every batch's rows.
    pub fn rows(&self) -> &DStream<Row> {
        &self.rows
    }

    /// The output columns' names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Output columns that identify a row in update mode (the group keys and window
    /// bounds the query selects as they are): the key of an upsert.
    pub fn key_columns(&self) -> &[String] {
        &self.key_columns
    }

    /// What the query warns about (state without bound).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// True when the query keeps state (aggregates).
    pub fn is_stateful(&self) -> bool {
        matches!(self.plan.kind, Kind::Aggregate(_))
    }

    /// A row as a JSON object of the query's column names.
    pub fn to_json(&self, row: &Row) -> serde_json::Value {
        row.to_json()
    }

    /// [`Row::to_json`] as a function to move into sinks.
    pub fn json_fn(&self) -> impl Fn(&Row) -> serde_json::Value + Send + Sync + Clone + 'static {
        |row: &Row| row.to_json()
    }

    /// The rows as Arrow record batches, one per partition.
    pub fn record_batches(&self) -> DStream<RecordBatch> {
        let schema = self.schema.clone();
        self.rows.try_map_partitions(move |rows: Vec<Row>| {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Vec<ScalarValue>> = rows.iter().map(Row::values).collect();
            Ok(vec![
                exec::batch_of(&schema, &values).map_err(Error::into_engine)?
            ])
        })
    }
}
