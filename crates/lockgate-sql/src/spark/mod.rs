//! Spark SQL's dialect, `lockgate sql`'s default: string literals read as Spark reads
//! them (`'\\d+'` is the regex `\d+`), Spark's functions where their meaning differs
//! from DataFusion's — the DataFusion project's `datafusion-spark` crate for what it
//! covers, Lockgate's own for the regex functions, `split` and the datetime functions
//! with Spark's patterns ([`regex`], [`datetime`]) and `element_at` — 0-based
//! `arr[i]`, and `explode`.
//! Constant patterns and regexes are checked when the query is planned, before any
//! batch runs ([`check_constants`]).

mod args;
mod collection;
pub(crate) mod datetime;
mod json;
pub(crate) mod regex;

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Statement, Subscript, UnaryOperator,
    Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::dialect::{Dialect as SqlDialect, GenericDialect};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

use crate::error::{Error, Result};

/// Whose SQL a query is read as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Spark SQL's: see the module docs. The default.
    #[default]
    Spark,
    /// DataFusion's own: PostgreSQL-like literals and functions, 1-based arrays.
    DataFusion,
}

impl std::str::FromStr for Dialect {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "spark" => Ok(Dialect::Spark),
            "datafusion" => Ok(Dialect::DataFusion),
            other => Err(Error::Config(format!(
                "--dialect {other}: give `spark` (Spark SQL's functions and literals, the \
                 default) or `datafusion` (DataFusion's own)"
            ))),
        }
    }
}

/// GenericDialect's tokens, with backslash escapes in string literals (as Spark's).
#[derive(Debug)]
struct SparkTokens;

impl SqlDialect for SparkTokens {
    fn dialect(&self) -> std::any::TypeId {
        std::any::TypeId::of::<GenericDialect>()
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }
    fn supports_string_literal_backslash_escape(&self) -> bool {
        true
    }
    fn supports_nested_comments(&self) -> bool {
        GenericDialect.supports_nested_comments()
    }
    fn supports_multiline_comment_hints(&self) -> bool {
        GenericDialect.supports_multiline_comment_hints()
    }
}

/// The statements of `query`, read in `dialect`.
pub(crate) fn parse(query: &str, dialect: Dialect) -> Result<Vec<Statement>> {
    let parsed = match dialect {
        Dialect::DataFusion => Parser::parse_sql(&GenericDialect {}, query),
        Dialect::Spark => Tokenizer::new(&SparkTokens, query)
            .tokenize_with_location()
            .map_err(Into::into)
            .and_then(|tokens| {
                Parser::new(&GenericDialect {})
                    .with_tokens_with_locations(tokens)
                    .parse_statements()
            }),
    };
    parsed.map_err(Error::Parse)
}

/// The session state of a context in `dialect`: DataFusion's functions, with Spark's
/// `substring` and `extract` syntax in the Spark dialect.
pub(crate) fn session_state(
    config: SessionConfig,
    dialect: Dialect,
) -> datafusion::execution::SessionState {
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features();
    if dialect == Dialect::Spark {
        builder
            .expr_planners()
            .get_or_insert_with(Vec::new)
            .insert(0, Arc::new(datafusion_spark::planner::SparkFunctionPlanner));
    }
    builder.build()
}

/// Spark's scalar functions: datafusion-spark's (but `shuffle`, which is random: a
/// replayed batch must compute what the first attempt did), then Lockgate's.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    datafusion_spark::all_default_scalar_functions()
        .into_iter()
        .filter(|f| f.name() != "shuffle")
        .map(|f| datetime::spark_call(f).as_ref().clone())
        .chain(regex::all())
        .chain(datetime::all())
        .chain(collection::all())
        .chain(json::all())
        .collect()
}

/// Spark's `try_to_timestamp(text[, pattern])`, which the DataFusion dialect has too.
pub(crate) fn try_to_timestamp() -> ScalarUDF {
    datetime::try_to_timestamp()
}

/// The last part of a function's name, in lower case.
fn function_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// Spark's meanings the AST carries: `explode(x)` is `unnest(x)`, `x RLIKE r` is
/// `rlike(x, r)`, and `x[i]` with an index that is not a text constant (a map key or
/// struct field) is 0-based.
pub(crate) fn rewrite(statement: &mut Statement) {
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(statement, |e| {
        match e {
            Expr::Function(f) if function_name(&f.name) == "explode" => {
                f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new("unnest"))]);
            }
            Expr::RLike {
                negated,
                expr,
                pattern,
                ..
            } => {
                let call = Expr::Function(Function {
                    name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new("rlike"))]),
                    uses_odbc_syntax: false,
                    parameters: FunctionArguments::None,
                    args: FunctionArguments::List(FunctionArgumentList {
                        duplicate_treatment: None,
                        args: [expr, pattern]
                            .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr((**e).clone())))
                            .into(),
                        clauses: Vec::new(),
                    }),
                    filter: None,
                    null_treatment: None,
                    over: None,
                    within_group: Vec::new(),
                });
                *e = if *negated {
                    Expr::UnaryOp {
                        op: UnaryOperator::Not,
                        expr: Box::new(call),
                    }
                } else {
                    call
                };
            }
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for access in access_chain {
                    if let AccessExpr::Subscript(Subscript::Index { index }) = access {
                        if !is_text(index) {
                            *index = Expr::BinaryOp {
                                left: Box::new(Expr::Nested(Box::new(index.clone()))),
                                op: BinaryOperator::Plus,
                                right: Box::new(Expr::value(Value::Number("1".into(), false))),
                            };
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

fn is_text(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(_) | Value::DoubleQuotedString(_),
            ..
        })
    )
}

/// A text constant's value.
fn text_constant(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(s) | Value::DoubleQuotedString(s),
            ..
        }) => Some(s),
        _ => None,
    }
}

/// An integer constant's value.
fn int_constant(e: &Expr) -> Option<i64> {
    match e {
        Expr::Value(ValueWithSpan {
            value: Value::Number(n, _),
            ..
        }) => n.parse().ok(),
        _ => None,
    }
}

/// Refuses, before any batch, a constant regex, replacement or datetime pattern that
/// cannot work, naming the function, the argument and why.
pub(crate) fn check_constants(statement: &Statement) -> Result<()> {
    let found = datafusion::sql::sqlparser::ast::visit_expressions(statement, |e| {
        let checked = match e {
            Expr::RLike { pattern, .. } => match text_constant(pattern) {
                Some(p) => regex::compile(p)
                    .map(|_| ())
                    .map_err(|why| format!("RLIKE: the regex `{p}`: {why}")),
                None => Ok(()),
            },
            Expr::Function(f) => check_call(&function_name(&f.name), &f.args),
            _ => Ok(()),
        };
        match checked {
            Ok(()) => ControlFlow::Continue(()),
            Err(message) => ControlFlow::Break(message),
        }
    });
    match found {
        ControlFlow::Break(message) => Err(Error::Unsupported(message)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The check of one call's constant arguments (see [`check_constants`]).
fn check_call(name: &str, args: &FunctionArguments) -> std::result::Result<(), String> {
    let FunctionArguments::List(list) = args else {
        return Ok(());
    };
    let args: Vec<Option<&Expr>> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let arg = |i: usize| args.get(i).copied().flatten();
    let ordinal = |i: usize| {
        ["first", "second", "third", "fourth"]
            .get(i)
            .copied()
            .unwrap_or("an")
    };
    match name {
        "rand" | "random" | "randn" | "uuid" | "shuffle" => Err(format!(
            "{name}(...) gives other values when a batch is re-run after a failure, so the \
             output would not be exactly once: derive values from the records (e.g. \
             xxhash64 or sha2 of a column)"
        )),
        "get_json_object" => match arg(1).and_then(text_constant) {
            Some(p) => json::parse_path(p)
                .map(|_| ())
                .map_err(|why| format!("{name}(...): the second argument: {why}")),
            None => Ok(()),
        },
        "regexp_extract" | "regexp_extract_all" | "regexp_replace" | "rlike" | "regexp"
        | "regexp_like" | "split" => {
            let Some(p) = arg(1).and_then(text_constant) else {
                return Ok(());
            };
            let re = regex::compile(p).map_err(|why| {
                format!(
                    "{name}(...): the {} argument, the regex `{p}`: {why}",
                    ordinal(1)
                )
            })?;
            let groups = re.captures_len() - 1;
            if name.starts_with("regexp_extract") {
                if let Some(g) = arg(2).and_then(int_constant) {
                    if g < 0 || g as usize > groups {
                        return Err(format!(
                            "{name}(...): the third argument, the group index {g}: the regex \
                             `{p}` has {groups} group(s)"
                        ));
                    }
                }
            }
            if name == "regexp_replace" {
                if let Some(r) = arg(2).and_then(text_constant) {
                    regex::java_replacement(r, groups).map_err(|why| {
                        format!("{name}(...): the third argument, the replacement `{r}`: {why}")
                    })?;
                }
            }
            Ok(())
        }
        "to_timestamp" | "try_to_timestamp" | "to_date" | "date_format" | "unix_timestamp"
        | "to_unix_timestamp" | "from_unixtime" => {
            if args.is_empty() && name.contains("unix_timestamp") {
                return Err(format!(
                    "{name}() without arguments reads the current time, which a replayed \
                     batch would not read again: use the records' event time"
                ));
            }
            if let Some(p) = arg(1).filter(|p| text_constant(p).is_none()) {
                return Err(format!(
                    "{name}(...): the second argument, the datetime pattern, must be a text \
                     constant, not `{p}`"
                ));
            }
            match arg(1).and_then(text_constant) {
                Some(p) => datetime::chrono_format(p).map(|_| ()).map_err(|why| {
                    format!(
                        "{name}(...): the {} argument, the datetime pattern: {why} (Spark's \
                         pattern letters: y M d H h m s S a E D X Z, text in '...')",
                        ordinal(1)
                    )
                }),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str) -> String {
        let statement = parse(query, Dialect::Spark).expect("parses").remove(0);
        check_constants(&statement)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn string_literals_read_backslashes_as_spark() {
        let s = parse(r"SELECT '\\d+', 'it\'s', 'a\tb'", Dialect::Spark).expect("parses");
        assert_eq!(s[0].to_string(), "SELECT '\\d+', 'it''s', 'a\tb'");
        let s = parse(r"SELECT '\\d+'", Dialect::DataFusion).expect("parses");
        assert_eq!(s[0].to_string(), r"SELECT '\\d+'");
    }

    #[test]
    fn subscripts_are_zero_based_and_explode_is_unnest() {
        let mut s = parse(
            "SELECT a[0], m['k'], explode(a) FROM t WHERE b NOT RLIKE 'x'",
            Dialect::Spark,
        )
        .expect("parses")
        .remove(0);
        rewrite(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT a[(0) + 1], m['k'], unnest(a) FROM t WHERE NOT rlike(b, 'x')"
        );
    }

    #[test]
    fn constants_that_cannot_work_are_refused() {
        let e = refused("SELECT regexp_extract(value, '[(', 1) FROM lines");
        assert!(
            e.contains("regexp_extract(...): the second argument, the regex `[(`"),
            "{e}"
        );
        let e = refused("SELECT regexp_extract(value, '(a)', 2) FROM lines");
        assert!(e.contains("group index 2"), "{e}");
        let e = refused("SELECT to_timestamp(value, 'yyyy-QQ') FROM lines");
        assert!(
            e.contains("to_timestamp(...): the second argument") && e.contains("`QQ`"),
            "{e}"
        );
        let e = refused("SELECT value FROM lines WHERE value RLIKE '(?=x)'");
        assert!(e.contains("look-around"), "{e}");
        let e = refused("SELECT regexp_replace(value, '(a)', '$2') FROM lines");
        assert!(e.contains("the replacement `$2`"), "{e}");
        let e = refused("SELECT get_json_object(value, 'a.b') FROM lines");
        assert!(e.contains("does not start with `$`"), "{e}");
        let e = refused("SELECT rand() FROM lines");
        assert!(e.contains("exactly once"), "{e}");
        let e = refused("SELECT date_format(value, value) FROM lines");
        assert!(e.contains("must be a text constant, not `value`"), "{e}");
        let e = refused("SELECT unix_timestamp() FROM lines");
        assert!(e.contains("current time"), "{e}");
        let ok = parse(
            "SELECT regexp_extract(value, '\\\\[(\\\\w+)\\\\]', 1), \
             to_timestamp(value, 'EEE MMM dd HH:mm:ss yyyy') FROM lines",
            Dialect::Spark,
        )
        .expect("parses");
        check_constants(&ok[0]).expect("valid");
    }
}
