//! Shapes of planned parts that Lockgate recognizes to run them its own way: a
//! `LIKE '%text%'` filter a file source can search for, a partial aggregation (perhaps
//! under a projection of its columns). Below the planner and the fused operators
//! (`split`, `count`) that use them.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

/// The text of a `column LIKE '%text%'` conjunct of a filter right above the scan of
/// `table` (no other wildcards, no newline): rows without it cannot pass the filter, so
/// the source may leave them out.
pub fn contains_filter(plan: &LogicalPlan, table: &str, column: &str) -> Option<String> {
    use datafusion::logical_expr::utils::split_conjunction;
    let mut found = None;
    let _ = plan.apply(|p| {
        if let LogicalPlan::Filter(f) = p {
            if over_scan(&f.input, table) {
                if let Some(text) = split_conjunction(&f.predicate)
                    .into_iter()
                    .find_map(|c| contains_text(c, column))
                {
                    found = Some(text);
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `plan` without the conjunct `column LIKE '%text%'` that [`contains_filter`] finds:
/// for a source that already left out the rows without `text`.
pub fn without_contains_filter(
    plan: &LogicalPlan,
    table: &str,
    column: &str,
    text: &str,
) -> Option<LogicalPlan> {
    use datafusion::logical_expr::utils::{conjunction, split_conjunction};
    let mut removed = false;
    let out =
        plan.clone()
            .transform_up(|p| {
                let LogicalPlan::Filter(f) = &p else {
                    return Ok(Transformed::no(p));
                };
                if removed || !over_scan(&f.input, table) {
                    return Ok(Transformed::no(p));
                }
                let mut rest = Vec::new();
                for c in split_conjunction(&f.predicate) {
                    if !removed && contains_text(c, column).as_deref() == Some(text) {
                        removed = true;
                    } else {
                        rest.push(c.clone());
                    }
                }
                if !removed {
                    return Ok(Transformed::no(p));
                }
                Ok(Transformed::yes(match conjunction(rest) {
                    Some(predicate) => LogicalPlan::Filter(
                        datafusion::logical_expr::Filter::try_new(predicate, f.input.clone())?,
                    ),
                    None => f.input.as_ref().clone(),
                }))
            })
            .ok()?
            .data;
    removed.then_some(out)
}

/// `e` without its aliases.
pub(crate) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        e => e,
    }
}

/// The partial aggregation of a planned part `pre`, perhaps under a projection of its
/// columns (the optimizer makes identical aggregates one, projected twice), and which
/// of its columns each output column is — if the first `groups` output columns are its
/// group keys, in order, and the others its aggregates.
pub(crate) fn partial_aggregate(
    pre: &LogicalPlan,
    groups: usize,
) -> Option<(&Aggregate, Vec<usize>)> {
    let (agg, picked) = match pre {
        LogicalPlan::Aggregate(agg) => {
            let n = agg.group_expr.len() + agg.aggr_expr.len();
            (agg, (0..n).collect::<Vec<_>>())
        }
        LogicalPlan::Projection(p) => {
            let LogicalPlan::Aggregate(agg) = p.input.as_ref() else {
                return None;
            };
            let picked = p
                .expr
                .iter()
                .map(|e| match strip_alias(e) {
                    Expr::Column(c) => agg.schema.index_of_column(c).ok(),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            (agg, picked)
        }
        _ => return None,
    };
    let keys_first = picked.iter().enumerate().all(|(i, &at)| match i < groups {
        true => at == i,
        false => at >= groups,
    });
    (agg.group_expr.len() == groups && picked.len() >= groups && keys_first)
        .then_some((agg, picked))
}

/// True when `plan` is a scan of `table`.
fn over_scan(plan: &LogicalPlan, table: &str) -> bool {
    matches!(plan, LogicalPlan::TableScan(s) if s.table_name.table() == table)
}

/// The text of `c` when it is `column LIKE '%text%'` (see [`contains_filter`]).
fn contains_text(c: &Expr, column: &str) -> Option<String> {
    use datafusion::scalar::ScalarValue;
    let Expr::Like(l) = c else {
        return None;
    };
    let lit = match l.pattern.as_ref() {
        Expr::Literal(ScalarValue::Utf8(Some(p)) | ScalarValue::Utf8View(Some(p)), _) => p,
        _ => return None,
    };
    let on_column = matches!(l.expr.as_ref(), Expr::Column(c) if c.name == column);
    let text = lit.strip_prefix('%')?.strip_suffix('%')?;
    let plain = !l.negated && !l.case_insensitive && l.escape_char.is_none();
    (plain && on_column && !text.is_empty() && !text.contains(['%', '_', '\\', '\n', '\r']))
        .then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn optimized(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new();
        let table = MemTable::try_new(crate::input::lines_schema(), vec![vec![]]).expect("a table");
        ctx.register_table("lines", Arc::new(table))
            .expect("registers");
        let state = ctx.state();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let plan = rt.block_on(state.create_logical_plan(sql)).expect("plans");
        state.optimize(&plan).expect("optimizes")
    }

    #[test]
    fn a_contains_filter_on_the_scan_is_found_and_others_are_not() {
        for (sql, want) in [
            (
                "SELECT value FROM lines WHERE value LIKE '%ERROR%'",
                Some("ERROR"),
            ),
            (
                "SELECT count(*) FROM lines WHERE length(value) > 3 AND value LIKE '%a b%'",
                Some("a b"),
            ),
            ("SELECT value FROM lines WHERE value LIKE '%ERR_R%'", None),
            (
                "SELECT value FROM lines WHERE value NOT LIKE '%ERROR%'",
                None,
            ),
            ("SELECT value FROM lines WHERE value ILIKE '%ERROR%'", None),
            ("SELECT value FROM lines WHERE value LIKE 'ERROR%'", None),
            (
                "SELECT value FROM lines WHERE value LIKE '%ERROR%' OR value = 'x'",
                None,
            ),
            (
                "SELECT v FROM (SELECT upper(value) AS v FROM lines) WHERE v LIKE '%ERROR%'",
                None,
            ),
        ] {
            let plan = optimized(sql);
            assert_eq!(
                contains_filter(&plan, "lines", "value").as_deref(),
                want,
                "{sql}\n{plan}"
            );
        }
    }

    #[test]
    fn the_contains_filter_is_taken_out_and_the_rest_kept() {
        let without = |sql: &str, text: &str| {
            let plan = optimized(sql);
            without_contains_filter(&plan, "lines", "value", text).map(|p| p.to_string())
        };
        // The only conjunct: the filter goes.
        let rest = without(
            "SELECT value FROM lines WHERE value LIKE '%ERROR%'",
            "ERROR",
        )
        .expect("taken out");
        assert!(!rest.contains("Filter"), "{rest}");
        // Another conjunct stays.
        let rest = without(
            "SELECT value FROM lines WHERE length(value) > 3 AND value LIKE '%ERROR%'",
            "ERROR",
        )
        .expect("taken out");
        assert!(
            rest.contains("Filter") && rest.contains("character_length"),
            "{rest}"
        );
        assert!(!rest.contains("LIKE"), "{rest}");
        // Another text, or no such filter: nothing to take out.
        assert_eq!(
            without("SELECT value FROM lines WHERE value LIKE '%ERROR%'", "WARN"),
            None
        );
        assert_eq!(
            without(
                "SELECT value FROM lines WHERE value NOT LIKE '%ERROR%'",
                "ERROR"
            ),
            None
        );
    }
}
