//! Helpers of this crate's unit tests: a session like [`crate::SqlContext`]'s over a
//! `lines` table, and queries planned in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use datafusion::logical_expr::LogicalPlan;

use crate::plan::{AggPlan, Kind, StreamPlan};
use crate::value::{Key, Partials, Slot};

/// A session with Lockgate's functions and the `lines(value)` stream table.
pub fn session() -> SessionState {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    for f in crate::udf::all() {
        ctx.register_udf(f);
    }
    ctx.register_udf(crate::spark::try_to_timestamp());
    ctx.register_table(
        "lines",
        Arc::new(crate::slot::SlotTable::new(
            "lines",
            crate::input::lines_schema(),
        )),
    )
    .expect("registers");
    ctx.state()
}

/// `sql` (an aggregation over `lines`, perhaps by window) planned for streaming.
pub fn planned(state: &SessionState, sql: &str) -> Box<AggPlan> {
    match plan_of(state, sql).kind {
        Kind::Aggregate(a) => a,
        Kind::Stateless(_) => panic!("{sql} does not aggregate"),
    }
}

/// `sql` (a query over `lines` without aggregation) planned for streaming.
pub fn stateless(state: &SessionState, sql: &str) -> LogicalPlan {
    match plan_of(state, sql).kind {
        Kind::Stateless(p) => p,
        Kind::Aggregate(_) => panic!("{sql} aggregates"),
    }
}

/// `sql` (a query over `lines`) planned for streaming.
pub fn plan_of(state: &SessionState, sql: &str) -> StreamPlan {
    let mut statement = Parser::parse_sql(&GenericDialect {}, sql)
        .expect("parses")
        .remove(0);
    let Statement::Query(q) = &mut statement else {
        panic!("{sql} is not a query");
    };
    let window = crate::rewrite::rewrite_windows(q).expect("rewrites");
    crate::exec::block_on(crate::plan::plan(
        state,
        statement,
        "lines",
        window.as_ref(),
    ))
    .expect("plans")
}

/// Counts by key and event time, duplicates merged (the state merges them).
pub type Merged = BTreeMap<(Vec<u8>, Option<i64>), Vec<i64>>;

/// Partials that are all counts, merged by key and time.
pub fn merged(rows: Vec<(Key, Option<i64>, Partials)>) -> Merged {
    let mut out = Merged::new();
    for (k, t, p) in rows {
        let counts: Vec<i64> =
            p.0.iter()
                .map(|s| match s {
                    Slot::Int(n) => *n,
                    other => panic!("a count is {other:?}"),
                })
                .collect();
        let e = out
            .entry((k.0.to_vec(), t))
            .or_insert_with(|| vec![0; counts.len()]);
        for (a, b) in e.iter_mut().zip(counts) {
            *a += b;
        }
    }
    out
}

/// A batch of the `lines` table's column `value`, which may hold NULLs here (text
/// from a record batch source).
pub fn values_batch(values: &[Option<&str>]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "value",
        DataType::Utf8View,
        true,
    )]));
    let column = StringViewArray::from(values.to_vec());
    RecordBatch::try_new(schema, vec![Arc::new(column) as ArrayRef]).expect("a batch")
}
