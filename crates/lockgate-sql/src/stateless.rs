//! A query without aggregation: its plan runs on each batch partition as it is, as
//! expressions when it is only projections and filters ([`crate::steps`]), otherwise
//! as a DataFusion plan.

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use lockgate_core::DStream;

use crate::error::{execute_failed, Error};
use crate::exec::{self, Row};
use crate::steps::Steps;
use crate::streams::StreamTable;

/// The rows of `plan` over `source` (the table `table`), named `name` in the graph.
pub(crate) fn rows(
    session: &SessionState,
    source: &StreamTable,
    plan: &LogicalPlan,
    table: &str,
    name: &str,
) -> DStream<Row> {
    let input = source.batches(plan, table);
    let steps = Steps::of(plan, table, session).map(Arc::new);
    let session = Arc::new(session.clone());
    let prepared = Arc::new(exec::Prepared::new(plan.clone()));
    let table = table.to_string();
    input
        .try_map_partitions(move |batches| {
            if batches.is_empty() {
                return Ok(Vec::new());
            }
            let out = match &steps {
                // Projections and filters: evaluated as expressions.
                Some(steps) => batches
                    .iter()
                    .map(|b| steps.run(b))
                    .collect::<datafusion::error::Result<Vec<_>>>()
                    .map_err(execute_failed)?,
                None => {
                    exec::run(&session, &prepared, &table, batches).map_err(Error::into_engine)?
                }
            };
            exec::rows(out).map_err(Error::into_engine)
        })
        .name(name)
}
