//! Planning a streaming query: DataFusion plans the SQL once, at start; Lockgate cuts
//! the plan at its aggregation into three parts.
//!
//! - **pre** (stateless, per batch partition, in DataFusion): everything below the
//!   aggregation — scans, projections, filters, `unnest`, joins with static tables —
//!   plus a *partial* aggregation per group key (and exact event time, for windows):
//!   a row count, and each aggregate's partial values ([`Agg`]).
//! - **state** (Lockgate operators): partial aggregates merged into checkpointed
//!   state — `reduce_by_key` + `map_with_state` for plain `GROUP BY`, the event-time
//!   window operator (watermark, eviction, output modes) for windows.
//! - **post** (stateless, per batch partition, in DataFusion): everything above the
//!   aggregation — the select list, `HAVING` — over the groups that changed.
//!
//! A query without aggregation is all *pre*: it runs on each batch as it is. Anything
//! that would need state Lockgate does not keep (sorting, `LIMIT`, `DISTINCT`, window
//! functions, self-joins, outer joins that emit static rows) is refused here, naming
//! the construct, before any batch runs.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    cast, lit, Aggregate, Expr, JoinType, LogicalPlan, LogicalPlanBuilder,
};
use lockgate_core::WindowSpec;

use crate::error::{Error, Result};
use crate::rewrite::WindowCall;
use crate::udf;
use crate::value::{supported, Agg, Layout};

/// The table the post part reads: the aggregation's output, one row per changed group.
pub const AGG_TABLE: &str = "__lockgate_agg";
/// The column of a window's end in [`AGG_TABLE`].
pub const WINDOW_END_COL: &str = "__lockgate_window_end";

/// A query cut for streaming.
pub struct StreamPlan {
    /// What runs where.
    pub kind: Kind,
    /// The output's columns.
    pub output: SchemaRef,
    /// Output columns that identify a row in update mode (group keys, window bounds).
    pub key_columns: Vec<String>,
}

/// The parts of a query.
pub enum Kind {
    /// No aggregation: the optimized plan runs on each batch.
    Stateless(LogicalPlan),
    /// An aggregation.
    Aggregate(Box<AggPlan>),
}

/// The parts of an aggregating query.
pub struct AggPlan {
    /// Below the aggregation, plus the partial aggregation: outputs the group keys (the
    /// window's exact event time at `window.index`), the row count and the partials.
    pub pre: LogicalPlan,
    /// Above the aggregation, reading [`AGG_TABLE`].
    pub post: LogicalPlan,
    /// When `post` only picks columns of [`AGG_TABLE`] (renamed): their indexes, so the
    /// output is made without running a plan.
    pub post_columns: Option<Vec<usize>>,
    /// The schema of [`AGG_TABLE`].
    pub agg_schema: SchemaRef,
    /// The aggregates and how their partials merge.
    pub layout: Layout,
    /// The output types of the aggregates.
    pub agg_types: Vec<DataType>,
    /// The number of group keys (counting the window).
    pub groups: usize,
    /// The event-time window, if the query groups by one.
    pub window: Option<WindowPart>,
    /// When `pre` counts the words of a split text column: the fused operator that
    /// does the same in place ([`crate::split`]).
    pub split: Option<Arc<crate::split::SplitGroup>>,
    /// When `pre` counts rows by group over projections and filters: the fused
    /// operator that does the same without DataFusion's aggregation
    /// ([`crate::count`]).
    pub count: Option<Arc<crate::count::CountGroup>>,
}

/// An aggregation's event-time window.
pub struct WindowPart {
    /// The window.
    pub spec: WindowSpec,
    /// Which group key is the window.
    pub index: usize,
    /// The event time's type (a timestamp or date).
    pub time_type: DataType,
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

/// How many scans of `table` the plan (with its subqueries) makes.
fn scans_of(plan: &LogicalPlan, table: &str) -> Result<usize> {
    let mut n = 0;
    plan.apply_with_subqueries(|p| {
        if let LogicalPlan::TableScan(s) = p {
            if s.table_name.table() == table {
                n += 1;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(Error::Plan)?;
    Ok(n)
}

/// Checks that `plan` (a part with no aggregation) is stateless over one stream.
fn check_stateless(plan: &LogicalPlan, table: &str, where_: &str) -> Result<()> {
    let mut err = None;
    plan.apply(|p| {
        let refusal = match p {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Unnest(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::TableScan(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::EmptyRelation(_) => None,
            LogicalPlan::Join(j) => {
                let left = scans_of(&j.left, table).unwrap_or(0) > 0;
                let right = scans_of(&j.right, table).unwrap_or(0) > 0;
                let ok = match j.join_type {
                    JoinType::Inner | JoinType::LeftSemi | JoinType::LeftAnti => true,
                    JoinType::Left => left || !right,
                    JoinType::Right => right || !left,
                    _ => !left && !right,
                };
                (!ok).then(|| {
                    format!(
                        "a {} join that keeps unmatched rows of a static table: each batch \
                         would emit them again; put the stream on the kept side or use an \
                         inner join",
                        j.join_type
                    )
                })
            }
            LogicalPlan::Sort(_) => Some(format!(
                "ORDER BY {where_}: a stream has no end to sort it by (sort the output, or \
                 aggregate first)"
            )),
            LogicalPlan::Limit(_) => Some(format!("LIMIT {where_}: a stream has no end")),
            LogicalPlan::Distinct(_) => Some(
                "DISTINCT over a stream: write GROUP BY the columns instead (kept in state)".into(),
            ),
            LogicalPlan::Window(_) => {
                Some("window functions (OVER ...): use GROUP BY window(ts, ...)".into())
            }
            LogicalPlan::Aggregate(_) => Some(
                "an aggregation over an aggregation (nested GROUP BY): one aggregation per \
                 query"
                    .into(),
            ),
            LogicalPlan::Union(_) => Some("UNION in a streaming query".into()),
            other => Some(format!(
                "`{}` in a streaming query",
                other.display().to_string().trim()
            )),
        };
        if let Some(r) = refusal {
            err = Some(r);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(Error::Plan)?;
    match err {
        Some(e) => Err(unsupported(e)),
        None => Ok(()),
    }
}

/// The [`AGG_TABLE`] columns `post` selects, when it is a projection of plain columns of
/// the table's scan.
fn picked_columns(post: &LogicalPlan, agg_schema: &SchemaRef) -> Option<Vec<usize>> {
    let LogicalPlan::Projection(p) = post else {
        return None;
    };
    let mut input = p.input.as_ref();
    while let LogicalPlan::SubqueryAlias(a) = input {
        input = a.input.as_ref();
    }
    let LogicalPlan::TableScan(scan) = input else {
        return None;
    };
    if scan.table_name.table() != AGG_TABLE || !scan.filters.is_empty() || scan.fetch.is_some() {
        return None;
    }
    p.expr
        .iter()
        .map(|e| {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            match inner {
                Expr::Column(c) => agg_schema.index_of(&c.name).ok(),
                _ => None,
            }
        })
        .collect()
}

fn aggregate_of(e: &Expr) -> Result<(Agg, &AggregateFunction)> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = inner else {
        return Err(unsupported(format!("aggregate expression `{e}`")));
    };
    let name = f.func.name();
    let agg = Agg::of(name).ok_or_else(|| {
        unsupported(format!(
            "the aggregate {name}(...) in a streaming query (kept incrementally: count, \
             sum, min, max, avg)"
        ))
    })?;
    if f.params.distinct {
        return Err(unsupported(format!(
            "{name}(DISTINCT ...) in a streaming query (not kept incrementally): group by \
             the value instead, one row per distinct value"
        )));
    }
    if !f.params.order_by.is_empty() {
        return Err(unsupported(format!("{name}(... ORDER BY ...)")));
    }
    Ok((agg, f))
}

fn partial(
    func: Arc<datafusion::logical_expr::AggregateUDF>,
    arg: Expr,
    f: &AggregateFunction,
) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        func,
        vec![arg],
        false,
        f.params.filter.clone(),
        vec![],
        None,
    ))
}

/// Plans `query` (already window-rewritten) against `state`'s tables, `table` being
/// the stream.
pub async fn plan(
    state: &SessionState,
    statement: datafusion::sql::sqlparser::ast::Statement,
    table: &str,
    window: Option<&WindowCall>,
) -> Result<StreamPlan> {
    let logical = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await
        .map_err(Error::Plan)?;
    match scans_of(&logical, table)? {
        0 => {
            return Err(unsupported(format!(
                "the query does not read the stream table `{table}`"
            )))
        }
        1 => {}
        _ => {
            return Err(unsupported(format!(
                "the query reads the stream `{table}` more than once (a self-join, a \
                 union or a subquery over it): not supported"
            )))
        }
    }
    let output = crate::exec::plain_schema(logical.schema().as_arrow());
    let mut aggs: Vec<Aggregate> = Vec::new();
    logical
        .apply_with_subqueries(|p| {
            if let LogicalPlan::Aggregate(a) = p {
                aggs.push(a.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(Error::Plan)?;
    if aggs.is_empty() {
        if window.is_some() {
            return Err(unsupported("window(...) outside GROUP BY"));
        }
        check_stateless(&logical, table, "on a stream")?;
        let optimized = state.optimize(&logical).map_err(Error::Plan)?;
        return Ok(StreamPlan {
            kind: Kind::Stateless(optimized),
            output,
            key_columns: Vec::new(),
        });
    }
    if aggs.len() > 1 {
        return Err(unsupported(
            "more than one aggregation in a query (nested GROUP BY, or an aggregating \
             subquery): one per query",
        ));
    }
    let agg = aggs.remove(0);
    if scans_of(&agg.input, table)? != 1 {
        return Err(unsupported(format!(
            "an aggregation over static tables only, joined with the stream `{table}` \
             afterwards"
        )));
    }
    check_stateless(&agg.input, table, "before the aggregation")?;
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(unsupported(
            "GROUPING SETS, ROLLUP and CUBE in a streaming query",
        ));
    }
    let groups = agg.group_expr.len();
    let schema: &DFSchemaRef = &agg.schema;
    for (i, f) in schema.fields().iter().enumerate().take(groups) {
        if !supported(f.data_type()) {
            return Err(unsupported(format!(
                "grouping by `{}` of type {} (kept in state: booleans, integers, floats, \
                 text, dates and timestamps)",
                agg.group_expr[i],
                f.data_type()
            )));
        }
    }
    // The window's group key.
    let window_index = agg
        .group_expr
        .iter()
        .position(|e| matches!(e, Expr::ScalarFunction(f) if f.func.name() == udf::WINDOW));
    let window = match (window, window_index) {
        (Some(w), Some(index)) => Some(WindowPart {
            spec: w.spec,
            index,
            time_type: schema.field(index).data_type().clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(unsupported(
                "window(...) must be a key of the query's GROUP BY",
            ))
        }
    };
    // The partial aggregation.
    let mut layout = Layout { aggs: Vec::new() };
    let mut partials = vec![Expr::AggregateFunction(AggregateFunction::new_udf(
        count_udaf(),
        vec![lit(1i64)],
        false,
        None,
        vec![],
        None,
    ))
    .alias("__rows")];
    let mut agg_types = Vec::new();
    for (j, e) in agg.aggr_expr.iter().enumerate() {
        let (kind, f) = aggregate_of(e)?;
        let out_type = schema.field(groups + j).data_type().clone();
        if !supported(&out_type) {
            return Err(unsupported(format!(
                "the aggregate `{e}` of type {out_type} (kept in state: integers, floats, \
                 text, dates and timestamps; cast decimals to DOUBLE)"
            )));
        }
        let arg = f.params.args.first().cloned().unwrap_or_else(|| lit(1i64));
        let p = |e: Expr, k: usize| e.alias(format!("__p{j}_{k}"));
        match kind {
            Agg::Count => partials.push(p(
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    count_udaf(),
                    f.params.args.clone(),
                    false,
                    f.params.filter.clone(),
                    vec![],
                    None,
                )),
                0,
            )),
            Agg::Sum => partials.push(p(partial(sum_udaf(), arg, f), 0)),
            Agg::Min => partials.push(p(partial(min_udaf(), arg, f), 0)),
            Agg::Max => partials.push(p(partial(max_udaf(), arg, f), 0)),
            Agg::Avg => {
                partials.push(p(
                    partial(sum_udaf(), cast(arg.clone(), DataType::Float64), f),
                    0,
                ));
                partials.push(p(partial(count_udaf(), arg, f), 1));
            }
        }
        layout.aggs.push(kind);
        agg_types.push(out_type);
    }
    let pre = LogicalPlan::Aggregate(
        Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), partials)
            .map_err(Error::Plan)?,
    );
    for f in pre.schema().fields().iter().skip(groups) {
        if !supported(f.data_type()) {
            return Err(unsupported(format!(
                "a partial aggregate of type {} (cast the argument to BIGINT or DOUBLE)",
                f.data_type()
            )));
        }
    }
    let pre = state.optimize(&pre).map_err(Error::Plan)?;
    let split = crate::split::SplitGroup::of(&pre, table, state).map(Arc::new);
    let count =
        crate::count::CountGroup::of(&pre, table, groups, window.as_ref().map(|w| w.index), state)
            .map(Arc::new);

    // The table of changed groups, and the plan above the aggregation reading it.
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Field::new(
                format!("c{i}"),
                crate::exec::plain_type(f.data_type()),
                true,
            )
        })
        .collect();
    if let Some(w) = &window {
        fields.push(Field::new(WINDOW_END_COL, w.time_type.clone(), true));
    }
    let agg_schema = Arc::new(Schema::new(fields));
    let empty = Arc::new(crate::slot::SlotTable::new(AGG_TABLE, agg_schema.clone()));
    let mut exprs: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(
                Some(TableReference::bare(AGG_TABLE)),
                format!("c{i}"),
            ))
            .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    if window.is_some() {
        exprs.push(
            Expr::Column(Column::new(
                Some(TableReference::bare(AGG_TABLE)),
                WINDOW_END_COL,
            ))
            .alias(WINDOW_END_COL),
        );
    }
    let replacement = LogicalPlanBuilder::scan(AGG_TABLE, provider_as_source(empty), None)
        .and_then(|b| b.project(exprs))
        .and_then(|b| b.build())
        .map_err(Error::Plan)?;
    let post = logical
        .clone()
        .transform_up(|node| {
            if let LogicalPlan::Aggregate(a) = &node {
                if a.schema == agg.schema {
                    return Ok(Transformed::yes(replacement.clone()));
                }
            }
            let t = node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::ScalarFunction(f) if f.func.name() == udf::WINDOW_END => Ok(
                        Transformed::yes(Expr::Column(Column::from_name(WINDOW_END_COL))),
                    ),
                    other => Ok(Transformed::no(other)),
                })
            })?;
            if t.transformed {
                Ok(Transformed::yes(t.data.recompute_schema()?))
            } else {
                Ok(t)
            }
        })
        .map_err(Error::Plan)?
        .data;
    check_stateless(&post, AGG_TABLE, "after the aggregation").map_err(|e| match e {
        Error::Unsupported(m) => Error::Unsupported(m.replace(
            "a stream has no end",
            "an aggregation over a stream has no final result",
        )),
        other => other,
    })?;
    let post = state.optimize(&post).map_err(Error::Plan)?;
    let post_columns = picked_columns(&post, &agg_schema);
    // Output columns that are group keys as they are (the key of an upsert).
    let mut key_columns = Vec::new();
    if let LogicalPlan::Projection(p) = &logical {
        for (e, f) in p.expr.iter().zip(output.fields()) {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            let is_key = match inner {
                Expr::Column(c) => schema.iter().take(groups).any(|(q, g)| {
                    g.name() == &c.name && (c.relation.is_none() || c.relation.as_ref() == q)
                }),
                Expr::ScalarFunction(f) => f.func.name() == udf::WINDOW_END,
                _ => false,
            };
            if is_key {
                key_columns.push(f.name().clone());
            }
        }
    }
    Ok(StreamPlan {
        kind: Kind::Aggregate(Box::new(AggPlan {
            pre,
            post,
            post_columns,
            agg_schema,
            layout,
            agg_types,
            groups,
            window,
            split,
            count,
        })),
        output,
        key_columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plan_of, session};

    fn names(schema: &SchemaRef) -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn a_query_without_aggregation_is_all_pre() {
        let p = plan_of(
            &session(),
            "SELECT upper(value) AS v FROM lines WHERE value <> ''",
        );
        assert!(matches!(p.kind, Kind::Stateless(_)));
        assert_eq!(names(&p.output), ["v"]);
        assert!(p.key_columns.is_empty());
    }

    #[test]
    fn an_aggregation_is_cut_into_pre_state_and_post() {
        let st = session();
        let p = plan_of(&st, "SELECT value, count(*) AS n FROM lines GROUP BY value");
        assert_eq!(names(&p.output), ["value", "n"]);
        assert_eq!(p.key_columns, ["value"]);
        let Kind::Aggregate(a) = p.kind else {
            panic!("aggregates")
        };
        assert_eq!(a.groups, 1);
        assert!(a.window.is_none());
        // The select list only picks the aggregation's columns: no post plan runs.
        assert!(a.post_columns.is_some());
        assert_eq!(a.agg_types, [DataType::Int64]);
        // A computed select list runs after the aggregation.
        let p = plan_of(
            &st,
            "SELECT upper(value) AS v, count(*) * 2 AS twice FROM lines GROUP BY value",
        );
        assert!(p.key_columns.is_empty(), "{:?}", p.key_columns);
        let Kind::Aggregate(a) = p.kind else {
            panic!("aggregates")
        };
        assert!(a.post_columns.is_none());
    }

    #[test]
    fn a_window_is_a_group_key_with_its_bounds_as_keys() {
        let p = plan_of(
            &session(),
            "SELECT window.start, window.end, value, count(*) AS n FROM \
             (SELECT try_to_timestamp(value) AS ts, value FROM lines) AS t \
             GROUP BY window(ts, '10 seconds', '5 seconds'), value",
        );
        assert_eq!(names(&p.output), ["start", "end", "value", "n"]);
        assert_eq!(p.key_columns, ["start", "end", "value"]);
        let Kind::Aggregate(a) = p.kind else {
            panic!("aggregates")
        };
        let w = a.window.as_ref().expect("a window");
        assert_eq!(a.groups, 2);
        assert_eq!(
            w.spec,
            WindowSpec::sliding(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(5)
            )
        );
        assert!(matches!(w.time_type, DataType::Timestamp(..)));
    }
}
