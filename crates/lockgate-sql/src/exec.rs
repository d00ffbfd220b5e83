//! Running a planned part on one batch partition: DataFusion's physical plan over the
//! partition's record batches, on a single-threaded runtime per worker thread (the
//! engine already runs a batch's partitions on all cores).

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;

use crate::error::{Error, Result};
use crate::plan::bind;

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
        .build()
        .ok();
}

/// Runs `plan` with the scan of `table` reading `batches`.
pub fn run(
    state: &SessionState,
    plan: &LogicalPlan,
    table: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let bound = bind(plan, table, schema, batches).map_err(Error::Execute)?;
    let work = async {
        let physical = state.create_physical_plan(&bound).await?;
        datafusion::physical_plan::collect(physical, state.task_ctx()).await
    };
    RUNTIME.with(|rt| match rt {
        Some(rt) => rt.block_on(work).map_err(Error::Execute),
        None => Err(Error::Config(
            "cannot start the runtime that evaluates queries (out of threads or memory?)"
                .into(),
        )),
    })
}

/// The rows of `batches`.
pub fn rows(batches: Vec<RecordBatch>) -> Vec<Row> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in batches {
        let b = Arc::new(b);
        out.extend((0..b.num_rows()).map(|index| Row {
            batch: b.clone(),
            index,
        }));
    }
    out
}

/// A record batch of `schema` from rows of scalars.
pub fn batch_of(schema: &SchemaRef, rows: &[Vec<ScalarValue>]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if rows.is_empty() {
                return Ok(datafusion::arrow::array::new_empty_array(f.data_type()));
            }
            ScalarValue::iter_to_array(rows.iter().map(|r| {
                r.get(i)
                    .cloned()
                    .and_then(|v| v.cast_to(f.data_type()).ok())
                    .unwrap_or_else(|| ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null))
            }))
        })
        .collect::<datafusion::common::Result<_>>()
        .map_err(Error::Execute)?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::Execute(e.into()))
}

/// One output row of a query: a row of a record batch (shared by the batch's rows).
#[derive(Clone, Debug)]
pub struct Row {
    batch: Arc<RecordBatch>,
    index: usize,
}

impl Row {
    /// Its number of columns.
    pub fn len(&self) -> usize {
        self.batch.num_columns()
    }

    /// True when it has no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of column `i` (NULL past the last column).
    pub fn value(&self, i: usize) -> ScalarValue {
        self.batch
            .columns()
            .get(i)
            .and_then(|c| ScalarValue::try_from_array(c, self.index).ok())
            .unwrap_or(ScalarValue::Null)
    }

    /// All its values.
    pub fn values(&self) -> Vec<ScalarValue> {
        (0..self.len()).map(|i| self.value(i)).collect()
    }

    /// The record batch it is a row of, and its index there.
    pub fn batch(&self) -> (&RecordBatch, usize) {
        (&self.batch, self.index)
    }

    /// The row as a JSON object of its column names (see [`crate::value::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.batch
                .schema()
                .fields()
                .iter()
                .zip(self.batch.columns())
                .map(|(f, c)| (f.name().clone(), crate::value::to_json(c, self.index)))
                .collect(),
        )
    }
}
