//! Event-time windows in the query text: Spark's `GROUP BY window(ts, '30 seconds',
//! '10 seconds')` with `window.start` / `window.end` in the select list is rewritten,
//! before DataFusion plans the query, into marker functions DataFusion understands
//! (`__lockgate_window(ts)` as the group key, `__lockgate_window_end(...)` for the
//! end); the window itself is returned as a [`WindowSpec`] for the window operator.
//!
//! Accepted forms: `window(ts, size)` (tumbling), `window(ts, size, slide)` (sliding),
//! `session_window(ts, gap)`; Flink's group windows `tumble(ts, size)`,
//! `hop(ts, slide, size)` and `session(ts, gap)`. Durations are text (`'30 seconds'`,
//! `'1 minute'`, `'500 ms'`) or intervals (`INTERVAL '30' SECOND`,
//! `INTERVAL '30 seconds'`).

// Durations in window(...) read as every flag does: `30 seconds`, `1 minute`, `500 ms`,
// `2h`, `1.5 s`.
use lockgate_core::parse_duration;
use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, Query, Select, SelectItem, SetExpr, TableFactor, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use lockgate_core::WindowSpec;

use crate::error::{Error, Result};
use crate::udf;

/// The event-time window a query groups by.
#[derive(Clone, Debug)]
pub struct WindowCall {
    /// Its kind and lengths.
    pub spec: WindowSpec,
    /// The event-time expression, as written.
    pub time: String,
    /// The event-time column's name (SQL's rule: unquoted names in lower case), when
    /// the event time is a column (`ts`, `e.ts`), not an expression.
    pub column: Option<String>,
}

/// A column name as SQL compares it: unquoted in lower case, quoted as written.
fn normalized(id: &Ident) -> String {
    match id.quote_style {
        None => id.value.to_lowercase(),
        Some(_) => id.value.clone(),
    }
}

impl WindowCall {
    /// True when a watermark on `column` (`ts`, `e.ts`, `"Ts"`) is on this window's
    /// event time. A window over an expression takes any: it cannot be named.
    pub fn watermarked_by(&self, column: &str) -> bool {
        let Some(own) = &self.column else {
            return true;
        };
        let last = column.rsplit('.').next().unwrap_or(column);
        let given = match last.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
            Some(quoted) => quoted.to_string(),
            None => last.to_lowercase(),
        };
        &given == own
    }
}

/// Rewrites the windows of `query` in place; returns the one it found, if any.
pub fn rewrite_windows(query: &mut Query) -> Result<Option<WindowCall>> {
    let mut found = Vec::new();
    rewrite_query(query, &mut found)?;
    if found.len() > 1 {
        return Err(Error::Unsupported(
            "a query with more than one event-time window (GROUP BY window(...) in several \
             places): use one windowed aggregation per query"
                .into(),
        ));
    }
    Ok(found.pop())
}

fn rewrite_query(q: &mut Query, found: &mut Vec<WindowCall>) -> Result<()> {
    if let Some(with) = &mut q.with {
        for cte in &mut with.cte_tables {
            rewrite_query(&mut cte.query, found)?;
        }
    }
    rewrite_set(&mut q.body, found)
}

fn rewrite_set(s: &mut SetExpr, found: &mut Vec<WindowCall>) -> Result<()> {
    match s {
        SetExpr::Select(select) => rewrite_select(select, found),
        SetExpr::Query(q) => rewrite_query(q, found),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set(left, found)?;
            rewrite_set(right, found)
        }
        _ => Ok(()),
    }
}

fn rewrite_factor(f: &mut TableFactor, found: &mut Vec<WindowCall>) -> Result<()> {
    if let TableFactor::Derived { subquery, .. } = f {
        rewrite_query(subquery, found)?;
    }
    Ok(())
}

fn parse_expr(sql: &str) -> Result<Expr> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::Unsupported(format!("rewriting `{sql}`: {e}")))
}

fn rewrite_select(s: &mut Select, found: &mut Vec<WindowCall>) -> Result<()> {
    for twj in &mut s.from {
        rewrite_factor(&mut twj.relation, found)?;
        for j in &mut twj.joins {
            rewrite_factor(&mut j.relation, found)?;
        }
    }
    let GroupByExpr::Expressions(exprs, _) = &mut s.group_by else {
        return Ok(());
    };
    let mut call = None;
    for e in exprs.iter_mut() {
        if let Some(w) = window_call(e)? {
            if call.is_some() {
                return Err(Error::Unsupported(
                    "GROUP BY with two event-time windows: group by one".into(),
                ));
            }
            *e = parse_expr(&format!("{}({})", udf::WINDOW, w.time))?;
            call = Some(w);
        }
    }
    let Some(call) = call else {
        return Ok(());
    };
    let start = format!("{}({})", udf::WINDOW, call.time);
    let end = format!("{}({start})", udf::WINDOW_END);
    let (start_expr, end_expr) = (parse_expr(&start)?, parse_expr(&end)?);
    // `window.start` alone in the select list keeps Spark's column name, `start`.
    for item in &mut s.projection {
        if let SelectItem::UnnamedExpr(e) = item {
            if let Some(part) = window_part(e) {
                let (expr, alias) = match part {
                    Part::Start => (start_expr.clone(), "start"),
                    Part::End => (end_expr.clone(), "end"),
                };
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::new(alias),
                };
            }
        }
    }
    let mut bad = None;
    let mut replace = |e: &mut Expr| {
        match window_part(e) {
            Some(Part::Start) => *e = start_expr.clone(),
            Some(Part::End) => *e = end_expr.clone(),
            None => {
                if matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case("window")) {
                    bad = Some(());
                }
            }
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut s.projection, &mut replace);
    if let Some(having) = &mut s.having {
        let _ = visit_expressions_mut(having, &mut replace);
    }
    if bad.is_some() {
        return Err(Error::Unsupported(
            "selecting `window` as a whole (a struct): select window.start and window.end".into(),
        ));
    }
    found.push(call);
    Ok(())
}

enum Part {
    Start,
    End,
}

fn window_part(e: &Expr) -> Option<Part> {
    let Expr::CompoundIdentifier(parts) = e else {
        return None;
    };
    match parts.as_slice() {
        [w, f] if w.value.eq_ignore_ascii_case("window") => {
            if f.value.eq_ignore_ascii_case("start") {
                Some(Part::Start)
            } else if f.value.eq_ignore_ascii_case("end") {
                Some(Part::End)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The window of a group-by expression, if it is a window function call.
fn window_call(e: &Expr) -> Result<Option<WindowCall>> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = f.name.to_string().to_ascii_lowercase();
    let kind = match name.as_str() {
        "window" | "tumble" | "hop" | "session_window" | "session" => name,
        _ => return Ok(None),
    };
    let FunctionArguments::List(list) = &f.args else {
        return Err(Error::Unsupported(format!(
            "{kind} without arguments: write {kind}(ts, '30 seconds')"
        )));
    };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(Error::Unsupported(format!(
                "{kind}(...): argument `{other}`"
            ))),
        })
        .collect::<Result<_>>()?;
    let dur = |i: usize| -> Result<Duration> {
        let e = args
            .get(i)
            .ok_or_else(|| Error::Unsupported(format!("{kind}(...) needs {} arguments", i + 1)))?;
        duration_of(e).map_err(|why| Error::Unsupported(format!("{kind}(...): `{e}`: {why}")))
    };
    let time = args
        .first()
        .ok_or_else(|| Error::Unsupported(format!("{kind}(...) needs the event-time column")))?;
    let column = match time {
        Expr::Identifier(id) => Some(normalized(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(normalized),
        _ => None,
    };
    let time = time.to_string();
    let spec = match (kind.as_str(), args.len()) {
        ("window" | "tumble", 2) => WindowSpec::tumbling(dur(1)?),
        ("window", 3) => {
            let (size, slide) = (dur(1)?, dur(2)?);
            if size == slide {
                WindowSpec::tumbling(size)
            } else {
                WindowSpec::sliding(size, slide)
            }
        }
        ("window", 4) => {
            return Err(Error::Unsupported(
                "window(ts, size, slide, startTime): a start offset; windows are aligned \
                 to the epoch"
                    .into(),
            ))
        }
        ("hop", 3) => WindowSpec::sliding(dur(2)?, dur(1)?),
        ("session_window" | "session", 2) => WindowSpec::session(dur(1)?),
        _ => {
            return Err(Error::Unsupported(format!(
                "{kind} with {} arguments: write window(ts, size[, slide]), \
                 session_window(ts, gap), tumble(ts, size) or hop(ts, slide, size)",
                args.len()
            )))
        }
    };
    if let WindowSpec::Sliding { size_ms, slide_ms } = spec {
        if slide_ms > size_ms {
            return Err(Error::Unsupported(format!(
                "window(...): a slide ({slide_ms} ms) longer than the window ({size_ms} ms) \
                 leaves records out of every window"
            )));
        }
    }
    Ok(Some(WindowCall { spec, time, column }))
}

/// A duration written as text or as an interval literal.
fn duration_of(e: &Expr) -> std::result::Result<Duration, String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => parse_duration(s),
            other => Err(format!(
                "expected a duration like '30 seconds', not {other}"
            )),
        },
        Expr::Interval(i) => {
            let text = match i.value.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
                    other => return Err(format!("an interval of {other}")),
                },
                other => return Err(format!("an interval of {other}")),
            };
            match &i.leading_field {
                Some(field) => parse_duration(&format!("{text} {field}")),
                None => parse_duration(&text),
            }
        }
        other => Err(format!(
            "expected a duration like '30 seconds', not {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;

    fn rewritten(sql: &str) -> (String, Option<WindowCall>) {
        let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).expect("parses");
        let Statement::Query(q) = &mut stmts[0] else {
            panic!("a query")
        };
        let w = rewrite_windows(q).expect("rewrites");
        (q.to_string(), w)
    }

    #[test]
    fn spark_windows_become_markers_with_their_spec() {
        let (sql, w) = rewritten(
            "SELECT window.start, window.end, count(*) AS n FROM t \
             GROUP BY window(ts, '30 seconds', '10 seconds')",
        );
        assert_eq!(
            sql,
            "SELECT __lockgate_window(ts) AS start, \
             __lockgate_window_end(__lockgate_window(ts)) AS end, count(*) AS n FROM t \
             GROUP BY __lockgate_window(ts)"
        );
        let w = w.expect("a window");
        assert_eq!(
            w.spec,
            WindowSpec::sliding(Duration::from_secs(30), Duration::from_secs(10))
        );
        let (_, w) =
            rewritten("SELECT count(*) FROM t GROUP BY k, tumble(ts, INTERVAL '1' MINUTE)");
        assert_eq!(
            w.expect("a window").spec,
            WindowSpec::tumbling(Duration::from_secs(60))
        );
        let (_, w) = rewritten(
            "SELECT k FROM (SELECT k FROM t GROUP BY k, session_window(ts, '5 minutes')) x",
        );
        assert_eq!(
            w.expect("a window").spec,
            WindowSpec::session(Duration::from_secs(300))
        );
        let (_, w) = rewritten("SELECT k, count(*) FROM t GROUP BY k");
        assert!(w.is_none());
    }

    #[test]
    fn a_watermark_is_on_the_windows_column_by_sqls_naming_rule() {
        let window = |sql: &str| rewritten(sql).1.expect("a window");
        let plain = window("SELECT count(*) FROM t GROUP BY window(ts, '10 seconds')");
        for ok in ["ts", "TS", "e.ts", "\"ts\""] {
            assert!(plain.watermarked_by(ok), "{ok}");
        }
        for refused in ["tx", "\"TS\"", "ts2"] {
            assert!(!plain.watermarked_by(refused), "{refused}");
        }
        let qualified = window("SELECT count(*) FROM t AS e GROUP BY window(e.Ts, '10 seconds')");
        assert!(qualified.watermarked_by("ts") && qualified.watermarked_by("e.TS"));
        let quoted = window("SELECT count(*) FROM t GROUP BY window(\"Ts\", '10 seconds')");
        assert!(quoted.watermarked_by("\"Ts\"") && !quoted.watermarked_by("ts"));
        // An expression cannot be named: any watermark is on it.
        let expression =
            window("SELECT count(*) FROM t GROUP BY window(to_timestamp(s), '10 seconds')");
        assert_eq!(expression.column, None);
        assert!(expression.watermarked_by("anything"));
    }

    #[test]
    fn bad_windows_are_named() {
        for (sql, says) in [
            (
                "SELECT window, count(*) FROM t GROUP BY window(ts, '1 minute')",
                "as a whole",
            ),
            (
                "SELECT count(*) FROM t GROUP BY window(ts, '1 fortnight')",
                "unknown unit",
            ),
            (
                "SELECT count(*) FROM t GROUP BY window(ts, '10 s', '1 minute')",
                "longer",
            ),
            (
                "SELECT count(*) FROM t GROUP BY window(ts, '1 minute', '1 minute', '5 s')",
                "start offset",
            ),
        ] {
            let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).expect("parses");
            let Statement::Query(q) = &mut stmts[0] else {
                panic!("a query")
            };
            let e = rewrite_windows(q).expect_err(sql).to_string();
            assert!(e.contains(says), "{sql}: {e}");
        }
        assert_eq!(parse_duration("500 ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }
}
