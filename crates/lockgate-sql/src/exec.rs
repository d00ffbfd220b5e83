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

/// The rows of `batches`, as scalars.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<ScalarValue>>> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, r))
                    .collect::<datafusion::common::Result<Vec<_>>>()
                    .map_err(Error::Execute)?,
            );
        }
    }
    Ok(out)
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
