//! Running a planned part made only of projections and filters over one table scan as
//! physical expressions, batch by batch, without a physical plan: no operators, no
//! streams, no runtime, so a small batch (one micro-batch partition's changed groups,
//! a chunk's matching lines) costs what its expressions cost.
//!
//! [`Steps::of`] recognizes such a part (anything else — a join, an `unnest`, a
//! subquery, a volatile function — is `None`, left to DataFusion's plan); what it
//! computes is DataFusion's own expressions, in the plan's order.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::TreeNode;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::PhysicalExpr;

/// One step, over the previous step's output (the scan's, first).
enum Step {
    /// Keeps the rows where the condition is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Computes the columns named.
    Project(Vec<Arc<dyn PhysicalExpr>>, Vec<String>),
}

/// A chain of projections and filters over the scan of one table (see the module
/// docs).
pub struct Steps {
    /// The scan's columns, by index in the table's schema (`None`: all of them).
    scan: Option<Vec<usize>>,
    /// Bottom-up.
    steps: Vec<Step>,
}

/// True when `e` (or an expression inside it) could give different results on the same
/// input, or reads something else than its input row (a subquery).
fn not_plain(e: &Expr) -> bool {
    e.is_volatile()
        || e.exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..)
                    | Expr::AggregateFunction(_)
                    | Expr::WindowFunction(_)
            ))
        })
        .unwrap_or(true)
}

impl Steps {
    /// The steps of `plan` (optimized) over the scan of `table`, if it is such a chain.
    pub fn of(plan: &LogicalPlan, table: &str, state: &SessionState) -> Option<Steps> {
        let mut nodes = Vec::new();
        let mut node = plan;
        let scan = loop {
            node = match node {
                LogicalPlan::Filter(f) if !not_plain(&f.predicate) => {
                    let p = state.create_physical_expr(f.predicate.clone(), f.input.schema());
                    nodes.push(Step::Filter(p.ok()?));
                    f.input.as_ref()
                }
                LogicalPlan::Projection(p) if !p.expr.iter().any(not_plain) => {
                    let exprs = p
                        .expr
                        .iter()
                        .map(|e| state.create_physical_expr(e.clone(), p.input.schema()))
                        .collect::<Result<Vec<_>>>()
                        .ok()?;
                    let names = p.schema.fields().iter().map(|f| f.name().clone());
                    nodes.push(Step::Project(exprs, names.collect()));
                    p.input.as_ref()
                }
                LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
                LogicalPlan::TableScan(s) => break s,
                _ => return None,
            };
        };
        if scan.table_name.table() != table || !scan.filters.is_empty() || scan.fetch.is_some() {
            return None;
        }
        nodes.reverse();
        Some(Steps {
            scan: scan.projection.clone(),
            steps: nodes,
        })
    }

    /// The steps run on `batch` (of the table's schema).
    pub fn run(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut b = match &self.scan {
            Some(columns) => batch.project(columns)?,
            None => batch.clone(),
        };
        for step in &self.steps {
            b = match step {
                Step::Filter(p) => {
                    let keep = p.evaluate(&b)?.into_array(b.num_rows())?;
                    let Some(keep) = keep.as_boolean_opt() else {
                        return Err(DataFusionError::Execution(format!(
                            "the filter {p} is not a condition"
                        )));
                    };
                    filter_record_batch(&b, keep)?
                }
                Step::Project(exprs, names) => {
                    let n = b.num_rows();
                    let columns = exprs
                        .iter()
                        .map(|e| e.evaluate(&b)?.into_array(n))
                        .collect::<Result<Vec<ArrayRef>>>()?;
                    // The types are what the expressions give (as in DataFusion's
                    // projection), any column may hold NULLs.
                    let fields: Vec<Field> = names
                        .iter()
                        .zip(&columns)
                        .map(|(name, c)| Field::new(name, c.data_type().clone(), true))
                        .collect();
                    // A projection of constants only still has the input's rows.
                    let options = RecordBatchOptions::new().with_row_count(Some(n));
                    RecordBatch::try_new_with_options(
                        Arc::new(Schema::new(fields)),
                        columns,
                        &options,
                    )?
                }
            };
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::testing::{session, stateless, values_batch};

    #[test]
    fn steps_give_datafusions_rows() {
        let state = session();
        let batch = values_batch(&[Some("a 1"), Some("bb 22"), Some(""), Some("ccc 333 x")]);
        for sql in [
            "SELECT * FROM lines",
            "SELECT value FROM lines WHERE value LIKE '%b%' OR value = ''",
            "SELECT upper(value) AS u, length(value) + 1 AS n FROM lines WHERE length(value) > 0",
            "SELECT 1 AS one FROM lines",
            "SELECT w FROM (SELECT split_part(value, ' ', 2) AS w FROM lines) AS t \
             WHERE w <> '' AND TRY_CAST(w AS BIGINT) > 1",
        ] {
            let plan = stateless(&state, sql);
            let steps =
                Steps::of(&plan, "lines", &state).unwrap_or_else(|| panic!("steps: {sql}\n{plan}"));
            let prepared = crate::exec::Prepared::new(plan);
            let want = crate::exec::rows(
                crate::exec::run(&state, &prepared, "lines", vec![batch.clone()]).expect("runs"),
            )
            .expect("rows");
            let got = crate::exec::rows(vec![steps.run(&batch).expect("runs")]).expect("rows");
            let values = |rows: Vec<crate::Row>| -> Vec<Vec<String>> {
                rows.iter()
                    .map(|r| r.values().iter().map(ToString::to_string).collect())
                    .collect()
            };
            assert_eq!(values(got), values(want), "{sql}");
        }
    }

    #[test]
    fn other_parts_are_left_to_datafusion() {
        let state = session();
        for sql in [
            "SELECT unnest(string_to_array(value, ' ')) AS w FROM lines",
            "SELECT value FROM lines WHERE random() < 0.5",
            "SELECT l.value FROM lines AS l JOIN (VALUES ('a')) AS v(x) ON l.value = v.x",
        ] {
            let plan = stateless(&state, sql);
            assert!(Steps::of(&plan, "lines", &state).is_none(), "{sql}\n{plan}");
        }
    }
}
