//! A fused partial aggregation for the commonest streaming query of all — words counted
//! by word: `GROUP BY` the elements of `unnest(string_to_array(text, 'delimiter'))`,
//! counting them, with any filters on the element.
//!
//! DataFusion would make every word a row (a list of all of them, flattened by `unnest`,
//! filtered, hashed by the aggregation). Here each word is counted where it lies in the
//! text, in [`lockgate_core::text`]'s packed-word table, and rows are made once per
//! *distinct* word: the filters (deterministic predicates on the element alone) are
//! evaluated by DataFusion on those, which gives the same groups as filtering every
//! occurrence. The partials are those the planned part would output — the same keys,
//! one count per partial column — so the state and its checkpoints are the same
//! whichever runs.
//!
//! [`SplitGroup::of`] recognizes the planned part, and anything else (another key or
//! aggregate, a filter on the line, a computed text, a non-ASCII delimiter) is left to
//! DataFusion, as are record batches whose text column holds NULLs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DFSchemaRef, NullHandling};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use lockgate_core::source::TextChunk;
use lockgate_core::text::{for_each_part, WordCounts};
use smallvec::smallvec;

use crate::shape::strip_alias;
use crate::value::{encode_keys, Key, Partials, Slot};

/// Counts the parts of the value `v` split by `finder`'s delimiter: none for an empty
/// value (a value is not lines: it has no line ends).
fn split_value<'a>(counts: &mut WordCounts<'a>, finder: &memchr::memmem::Finder<'_>, v: &'a [u8]) {
    if v.is_empty() {
        return;
    }
    let mut from = 0;
    for at in finder.find_iter(v) {
        counts.add(v, from, at);
        from = at + finder.needle().len();
    }
    counts.add(v, from, v.len());
}

/// A partial aggregation of split words, recognized in a planned part (see the module
/// docs).
pub struct SplitGroup {
    /// The text column split (of the stream table).
    column: String,
    /// The delimiter (ASCII, not empty).
    delimiter: Vec<u8>,
    /// The filters on the element, bottom-up, each with the schema it reads (one
    /// column).
    filters: Vec<(Arc<dyn PhysicalExpr>, SchemaRef)>,
    /// The number of partial columns (the row count, then the counts): each is the
    /// group's number of occurrences, the elements never being NULL.
    width: usize,
}

/// True when `plan` outputs one column.
fn one_column(plan: &LogicalPlan) -> bool {
    plan.schema().fields().len() == 1
}

impl SplitGroup {
    /// The fused aggregation that `pre` (a planned, optimized part: a partial
    /// aggregation over the stream table `table`) is, if it is one.
    pub fn of(pre: &LogicalPlan, table: &str, state: &SessionState) -> Option<SplitGroup> {
        // The aggregation (the key first, then counts).
        let (agg, _) = crate::shape::partial_aggregate(pre, 1)?;
        let [group] = agg.group_expr.as_slice() else {
            return None;
        };
        if !matches!(strip_alias(group), Expr::Column(_)) || !one_column(&agg.input) {
            return None;
        }
        // Every partial a count of a constant or of the element (never NULL).
        for e in &agg.aggr_expr {
            let Expr::AggregateFunction(f) = strip_alias(e) else {
                return None;
            };
            let counts_all = match f.params.args.as_slice() {
                [Expr::Literal(v, _)] => !v.is_null(),
                [Expr::Column(_)] => true,
                _ => false,
            };
            if f.func.name() != "count"
                || f.params.distinct
                || f.params.filter.is_some()
                || !counts_all
            {
                return None;
            }
        }
        // Down to the unnest: filters on the element, renames.
        let mut filters: Vec<(Expr, DFSchemaRef)> = Vec::new();
        let mut node = agg.input.as_ref();
        let unnest = loop {
            node = match node {
                LogicalPlan::Filter(f) if !f.predicate.is_volatile() => {
                    filters.push((f.predicate.clone(), f.input.schema().clone()));
                    f.input.as_ref()
                }
                LogicalPlan::Projection(p) if matches!(p.expr.as_slice(), [e] if matches!(strip_alias(e), Expr::Column(_))) => {
                    p.input.as_ref()
                }
                LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
                LogicalPlan::Unnest(u) => break u,
                _ => return None,
            };
            if !one_column(node) {
                return None;
            }
        };
        let plain = unnest.list_type_columns.len() == 1
            && unnest.list_type_columns.iter().all(|(_, l)| l.depth == 1)
            && unnest.struct_type_columns.is_empty()
            && unnest.options.recursions.iter().all(|r| r.depth == 1)
            && unnest.options.null_handling != NullHandling::PreserveAndExpandEmpty;
        if !plain || !one_column(&unnest.input) {
            return None;
        }
        // The split: string_to_array(column, 'delimiter') of the scanned table.
        let LogicalPlan::Projection(p) = unnest.input.as_ref() else {
            return None;
        };
        let [e] = p.expr.as_slice() else {
            return None;
        };
        let Expr::ScalarFunction(f) = strip_alias(e) else {
            return None;
        };
        let [Expr::Column(column), Expr::Literal(d, _)] = f.args.as_slice() else {
            return None;
        };
        let delimiter = match d {
            ScalarValue::Utf8(Some(d))
            | ScalarValue::Utf8View(Some(d))
            | ScalarValue::LargeUtf8(Some(d)) => d.as_bytes().to_vec(),
            _ => return None,
        };
        if f.func.name() != "string_to_array" || delimiter.is_empty() || !delimiter.is_ascii() {
            return None;
        }
        let LogicalPlan::TableScan(scan) = p.input.as_ref() else {
            return None;
        };
        if scan.table_name.table() != table || !scan.filters.is_empty() || scan.fetch.is_some() {
            return None;
        }
        // The filters as physical expressions, bottom-up.
        let filters = filters
            .into_iter()
            .rev()
            .map(|(e, schema)| {
                let physical = state.create_physical_expr(e, &schema).ok()?;
                Some((physical, Arc::new(schema.as_arrow().clone())))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SplitGroup {
            column: column.name.clone(),
            delimiter,
            filters,
            width: pre.schema().fields().len() - 1,
        })
    }

    /// The partials of a partition of file chunks (the `lines` table's `value`).
    pub fn of_chunks(&self, chunks: &[TextChunk]) -> Result<Vec<(Key, Option<i64>, Partials)>> {
        let mut counts = WordCounts::new();
        for c in chunks {
            let buf = c.as_bytes();
            for_each_part(buf, &self.delimiter, |s, e| counts.add(buf, s, e));
        }
        self.partials(counts)
    }

    /// The partials of a partition of record batches, or `None` when a batch's text
    /// column is not text or holds NULLs (left to DataFusion).
    pub fn of_batches(
        &self,
        batches: &[RecordBatch],
    ) -> Option<Result<Vec<(Key, Option<i64>, Partials)>>> {
        let mut columns = Vec::with_capacity(batches.len());
        for b in batches {
            let c = b.column_by_name(&self.column)?;
            if c.null_count() > 0 {
                return None;
            }
            columns.push(c);
        }
        let mut counts = WordCounts::new();
        let finder = memchr::memmem::Finder::new(&self.delimiter);
        for c in &columns {
            let values: Box<dyn Iterator<Item = &str>> = if let Some(a) = c.as_string_view_opt() {
                Box::new(a.iter().flatten())
            } else if let Some(a) = c.as_string_opt::<i32>() {
                Box::new(a.iter().flatten())
            } else if let Some(a) = c.as_string_opt::<i64>() {
                Box::new(a.iter().flatten())
            } else {
                return None;
            };
            for v in values {
                split_value(&mut counts, &finder, v.as_bytes());
            }
        }
        Some(self.partials(counts))
    }

    /// One row per distinct word that passes the filters: its key and partials.
    fn partials(&self, counts: WordCounts<'_>) -> Result<Vec<(Key, Option<i64>, Partials)>> {
        let n = counts.len();
        let mut words = StringBuilder::with_capacity(n, n * 8);
        let mut occurrences = Vec::with_capacity(n);
        // Invalid UTF-8 replaced, as the `lines` table does: words that differ only in
        // invalid bytes become one key twice, which the state merges.
        counts.for_each(|w, count| {
            match std::str::from_utf8(w) {
                Ok(s) => words.append_value(s),
                Err(_) => words.append_value(String::from_utf8_lossy(w)),
            }
            occurrences.push(count);
        });
        let mut words: ArrayRef = Arc::new(words.finish());
        let mut occurrences: ArrayRef =
            Arc::new(datafusion::arrow::array::Int64Array::from(occurrences));
        for (predicate, schema) in &self.filters {
            let typed = match schema.field(0).data_type() {
                DataType::Utf8 => words.clone(),
                other => cast(&words, other)?,
            };
            let batch = RecordBatch::try_new(schema.clone(), vec![typed])?;
            let keep = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
            let Some(keep) = keep.as_boolean_opt() else {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "the filter {predicate} is not a condition"
                )));
            };
            words = filter(&words, keep)?;
            occurrences = filter(&occurrences, keep)?;
        }
        let keys = encode_keys(&[words], occurrences.len())?;
        let occurrences = occurrences.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        Ok(keys
            .into_iter()
            .zip(occurrences.values().iter())
            .map(|(k, &n)| (k, None, Partials(smallvec![Slot::Int(n); self.width])))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::AggPlan;
    use crate::testing::{merged, planned, session, Merged};
    use datafusion::arrow::array::StringViewArray;

    fn datafusions(state: &SessionState, a: &AggPlan, batch: RecordBatch) -> Merged {
        let out = crate::exec::run(
            state,
            &crate::exec::Prepared::new(a.pre.clone()),
            "lines",
            vec![batch],
        )
        .expect("runs");
        merged(crate::value::partial_rows(&out, &[0], None, 1).expect("partials"))
    }

    const TEXTS: [&[u8]; 7] = [
        b"a bb  a\r\nthe-longest-word-here a\n\nbb last\n",
        b"",
        b"\n \n \r\n\r\n",
        b"x a\rb a\r",
        b"caf\xc3\xa9 caf\xff caf\xfe x::y::::z \xe2\x82 end",
        b"w1::w2 w1::::w3 :: a:: ::b\nw1\n",
        b"12345678901234567 123456789012345 1234567890123456 12345678 1234567",
    ];

    #[test]
    fn fused_counts_equal_datafusions_partials() {
        let state = session();
        for sql in [
            "SELECT word, count(*) AS count FROM (SELECT unnest(string_to_array(value, ' ')) \
             AS word FROM lines) AS t WHERE word <> '' GROUP BY word",
            "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(value, ' ')) AS \
             word FROM lines) GROUP BY word",
            "SELECT w, count(*) AS n, count(w) AS m, count(1) AS o FROM (SELECT \
             unnest(string_to_array(value, '::')) AS w FROM lines) AS t WHERE length(w) > 1 \
             AND w NOT LIKE 'w2%' GROUP BY w HAVING count(*) > 0",
            "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(value, 'a')) AS \
             word FROM lines) WHERE word IS NOT NULL GROUP BY word",
        ] {
            let a = planned(&state, sql);
            let split = a
                .split
                .as_ref()
                .unwrap_or_else(|| panic!("fused: {sql}\n{}", a.pre));
            for text in TEXTS {
                let chunk = TextChunk::from_bytes(text);
                let want = datafusions(&state, &a, crate::input::chunk_batch(&chunk, None));
                let got = merged(split.of_chunks(&[chunk]).expect("counts"));
                assert_eq!(got, want, "{sql} over chunk {text:?}");
                // Record batches: each value whole (not lines).
                let values: Vec<String> = String::from_utf8_lossy(text)
                    .split('\n')
                    .map(str::to_string)
                    .collect();
                let column = StringViewArray::from_iter_values(values.iter());
                let batch = RecordBatch::try_new(
                    crate::input::lines_schema(),
                    vec![Arc::new(column) as ArrayRef],
                )
                .expect("a batch");
                let want = datafusions(&state, &a, batch.clone());
                let got = merged(
                    split
                        .of_batches(&[batch])
                        .expect("text without NULLs")
                        .expect("counts"),
                );
                assert_eq!(got, want, "{sql} over values {values:?}");
            }
        }
    }

    #[test]
    fn other_aggregations_are_left_to_datafusion() {
        let state = session();
        for sql in [
            // A computed key, another aggregate, a computed or filtered text, another
            // split, a non-ASCII delimiter.
            "SELECT lower(word) AS w, count(*) AS n FROM (SELECT \
             unnest(string_to_array(value, ' ')) AS word FROM lines) GROUP BY lower(word)",
            "SELECT word, sum(length(word)) AS n FROM (SELECT \
             unnest(string_to_array(value, ' ')) AS word FROM lines) GROUP BY word",
            "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(upper(value), ' ')) \
             AS word FROM lines) GROUP BY word",
            "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(value, ' ')) AS \
             word FROM lines WHERE value LIKE '%ERROR%') GROUP BY word",
            "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(value, 'ö')) AS \
             word FROM lines) GROUP BY word",
            "SELECT word, count(*) FILTER (WHERE word <> 'a') AS n FROM (SELECT \
             unnest(string_to_array(value, ' ')) AS word FROM lines) GROUP BY word",
            "SELECT value, count(*) AS n FROM lines GROUP BY value",
        ] {
            let a = planned(&state, sql);
            assert!(a.split.is_none(), "{sql}\n{}", a.pre);
        }
    }

    #[test]
    fn text_with_nulls_is_left_to_datafusion() {
        let state = session();
        let a = planned(
            &state,
            "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(value, ' ')) AS \
             word FROM lines) GROUP BY word",
        );
        let split = a.split.as_ref().expect("fused");
        let column = StringViewArray::from(vec![Some("a b"), None]);
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("value", DataType::Utf8View, true),
        ]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(column) as ArrayRef]).expect("a batch");
        assert!(split.of_batches(&[batch]).is_none());
    }
}
