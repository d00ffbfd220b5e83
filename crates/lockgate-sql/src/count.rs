//! A fused partial aggregation for queries that count rows by group — `count(*)`,
//! `count(x)` — over projections and filters of the stream table (the errors per
//! event-time window of a log, say): the part below the aggregation runs as
//! [`Steps`], the group keys are evaluated by DataFusion's expressions, and the rows
//! are counted per key and exact event time in a hash map, without DataFusion's
//! aggregation operator. The partials are those the planned part would output, so
//! the state and its checkpoints are the same whichever runs.
//!
//! A partition's windowed partials come out ordered by key and event time, which the
//! window operator aggregates in runs.
//!
//! [`CountGroup::of`] recognizes the planned part; anything else (another aggregate, a
//! `DISTINCT` or `FILTER`, a join or `unnest` below) is left to DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::PhysicalExpr;
use rustc_hash::FxHashMap;

use lockgate_core::source::TextChunk;

use crate::input::chunk_batch;
use crate::shape::{self, strip_alias};
use crate::steps::Steps;
use crate::value::{encode_keys, epoch_ms, Key, Partials, Slot};

/// What one partial column counts.
enum Counted {
    /// Every row.
    Rows,
    /// The rows where the expression is not NULL.
    NonNull(Arc<dyn PhysicalExpr>),
}

/// A partial aggregation of counts, recognized in a planned part (see the module
/// docs).
pub struct CountGroup {
    /// Below the aggregation.
    input: Steps,
    /// For file chunks: the text a `value LIKE '%text%'` filter over the scan needs,
    /// and the steps without that filter (only lines holding the text are made).
    pushed: Option<(String, Steps)>,
    /// The group keys other than the window, over the input's output.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The window's event time, over the input's output.
    time: Option<Arc<dyn PhysicalExpr>>,
    /// The aggregation's counts.
    counts: Vec<Counted>,
    /// Which count each partial column of the output is.
    partials: Vec<usize>,
}

impl CountGroup {
    /// The fused aggregation that `pre` (a planned, optimized part: a partial
    /// aggregation over the stream table `table`, its first `groups` columns the group
    /// keys, the window's at `window`) is, if it is one.
    pub fn of(
        pre: &LogicalPlan,
        table: &str,
        groups: usize,
        window: Option<usize>,
        state: &SessionState,
    ) -> Option<CountGroup> {
        let (agg, picked) = shape::partial_aggregate(pre, groups)?;
        let input = Steps::of(&agg.input, table, state)?;
        let pushed = shape::contains_filter(&agg.input, table, "value").and_then(|text| {
            let rest = shape::without_contains_filter(&agg.input, table, "value", &text)?;
            Some((text, Steps::of(&rest, table, state)?))
        });
        let schema = agg.input.schema();
        let mut keys = Vec::new();
        let mut time = None;
        for (i, e) in agg.group_expr.iter().enumerate() {
            if e.is_volatile() {
                return None;
            }
            let p = state.create_physical_expr(e.clone(), schema).ok()?;
            if Some(i) == window {
                time = Some(p);
            } else {
                keys.push(p);
            }
        }
        if window.is_some() != time.is_some() {
            return None;
        }
        let mut counts = Vec::new();
        for e in &agg.aggr_expr {
            let Expr::AggregateFunction(f) = strip_alias(e) else {
                return None;
            };
            if f.func.name() != "count"
                || f.params.distinct
                || f.params.filter.is_some()
                || !f.params.order_by.is_empty()
            {
                return None;
            }
            counts.push(match f.params.args.as_slice() {
                [] => Counted::Rows,
                [Expr::Literal(v, _)] if !v.is_null() => Counted::Rows,
                [arg] if !arg.is_volatile() => {
                    Counted::NonNull(state.create_physical_expr(arg.clone(), schema).ok()?)
                }
                _ => return None,
            });
        }
        let partials = picked[groups..].iter().map(|&at| at - groups).collect();
        Some(CountGroup {
            input,
            pushed,
            keys,
            time,
            counts,
            partials,
        })
    }

    /// The partials of a partition's batches (of the stream table's schema): per key
    /// and exact event time that occurred, one count per partial column; ordered by
    /// key and time when there is a window.
    pub fn run(&self, batches: &[RecordBatch]) -> Result<Vec<(Key, Option<i64>, Partials)>> {
        self.count(&self.input, batches.iter().cloned())
    }

    /// The partials of a partition of file chunks (the `lines` table's), each made a
    /// batch of its lines (only those holding the text of a `value LIKE '%text%'`
    /// filter, found by a substring search over the chunk).
    pub fn of_chunks(&self, chunks: &[TextChunk]) -> Result<Vec<(Key, Option<i64>, Partials)>> {
        match &self.pushed {
            Some((text, steps)) => {
                let finder = memchr::memmem::Finder::new(text);
                let batches = chunks.iter().map(|c| chunk_batch(c, Some(&finder)));
                self.count(steps, batches)
            }
            None => self.count(&self.input, chunks.iter().map(|c| chunk_batch(c, None))),
        }
    }

    /// The partials of `batches` with `input` below the aggregation.
    fn count(
        &self,
        input: &Steps,
        batches: impl Iterator<Item = RecordBatch>,
    ) -> Result<Vec<(Key, Option<i64>, Partials)>> {
        let width = self.counts.len();
        // Group index by key and time (by time alone when there are no other keys, the
        // commonest case: a count per window); the counts of group g at g * width.
        let mut groups: FxHashMap<(Key, Option<i64>), usize> = FxHashMap::default();
        let mut by_time: FxHashMap<Option<i64>, usize> = FxHashMap::default();
        let mut counts: Vec<i64> = Vec::new();
        for batch in batches {
            let b = input.run(&batch)?;
            let n = b.num_rows();
            if n == 0 {
                continue;
            }
            let times = match &self.time {
                Some(t) => epoch_ms(&t.evaluate(&b)?.into_array(n)?)?,
                None => vec![None; n],
            };
            // Per count, the rows it counts: all, or the non-NULL ones (logically: a
            // NULL constant or a dictionary of NULLs counts none).
            let counted = self
                .counts
                .iter()
                .map(|c| match c {
                    Counted::Rows => Ok(None),
                    Counted::NonNull(e) => {
                        let values = e.evaluate(&b)?.into_array(n)?;
                        Ok(Some(values.logical_nulls()))
                    }
                })
                .collect::<Result<Vec<Option<Option<NullBuffer>>>>>()?;
            let mut add = |row: usize, g: usize| {
                if g * width == counts.len() {
                    counts.resize(counts.len() + width, 0);
                }
                for (slot, c) in counts[g * width..][..width].iter_mut().zip(&counted) {
                    let counts_row = match c {
                        None | Some(None) => true,
                        Some(Some(nulls)) => nulls.is_valid(row),
                    };
                    *slot += i64::from(counts_row);
                }
            };
            if self.keys.is_empty() {
                for (row, time) in times.into_iter().enumerate() {
                    let next = by_time.len();
                    add(row, *by_time.entry(time).or_insert(next));
                }
                continue;
            }
            let key_cols = self
                .keys
                .iter()
                .map(|k| k.evaluate(&b)?.into_array(n))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let keys = encode_keys(&key_cols, n)?;
            for (row, key) in keys.into_iter().zip(times).enumerate() {
                let next = groups.len();
                add(row, *groups.entry(key).or_insert(next));
            }
        }
        // Windowed partials ordered by key and time (the groups sorted as indexes:
        // moving whole rows costs more).
        let mut order: Vec<((Key, Option<i64>), usize)> = groups
            .into_iter()
            .chain(by_time.into_iter().map(|(t, g)| ((Key::default(), t), g)))
            .collect();
        if self.time.is_some() {
            if self.keys.is_empty() {
                order.sort_unstable_by_key(|((_, t), _)| *t);
            } else {
                order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
        }
        let rows = order
            .into_iter()
            .map(|((key, time), g)| {
                let c = &counts[g * width..][..width];
                let p = self.partials.iter().map(|&i| Slot::Int(c[i])).collect();
                (key, time, Partials(p))
            })
            .collect();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::plan::AggPlan;
    use crate::testing::{merged, planned, session, values_batch as batch, Merged};

    fn datafusions(state: &SessionState, a: &AggPlan, batches: Vec<RecordBatch>) -> Merged {
        let out = crate::exec::run(
            state,
            &crate::exec::Prepared::new(a.pre.clone()),
            "lines",
            batches,
        )
        .expect("runs");
        let window = a.window.as_ref().map(|w| w.index);
        let keys: Vec<usize> = (0..a.groups).filter(|i| Some(*i) != window).collect();
        merged(crate::value::partial_rows(&out, &keys, window, a.groups).expect("partials"))
    }

    const LINES: [Option<&str>; 9] = [
        Some("[Fri Dec 18 00:00:00 2015] [ERROR] [client 10.0.0.1] a"),
        Some("[Fri Dec 18 00:00:00 2015] [INFO] [client 10.0.0.1] b"),
        Some("[Fri Dec 18 00:00:31 2015] [ERROR] [client 10.0.0.2] c"),
        Some("[Fri Dec 18 00:00:00 2015] [ERROR] [client 10.0.0.1] d"),
        Some("[Sat Dec 18 00:00:00 2015] [ERROR] a wrong weekday"),
        Some("no time at all ERROR"),
        None,
        Some(""),
        Some("[Fri Dec 18 00:01:10 2015] [WARN] x"),
    ];

    #[test]
    fn fused_counts_equal_datafusions_partials() {
        let state = session();
        let ts = "try_to_timestamp(substr(value, 2, 24), '%a %b %d %H:%M:%S %Y')";
        for sql in [
            format!(
                "SELECT to_unixtime(window.start) AS start, count(*) AS count FROM (SELECT \
                 {ts} AS ts FROM lines WHERE value LIKE '%ERROR%') AS e \
                 GROUP BY window(ts, '30 seconds')"
            ),
            format!(
                "SELECT window.start, window.end, count(*) AS n, count(ts) AS m FROM (SELECT \
                 {ts} AS ts FROM lines) GROUP BY window(ts, '30 seconds', '10 seconds')"
            ),
            format!(
                "SELECT level, window.start, count(*) AS n FROM (SELECT split_part(value, ' ', \
                 6) AS level, {ts} AS ts FROM lines WHERE length(value) > 3) \
                 GROUP BY level, window(ts, '1 minute')"
            ),
            "SELECT count(*) AS errors FROM lines WHERE value LIKE '%ERROR%'".to_string(),
            "SELECT substr(value, 1, 4) AS k, count(*) AS n, count(nullif(value, '')) AS m, \
             count(1) AS o, count(*) AS p, count(NULL) AS q FROM lines \
             GROUP BY substr(value, 1, 4)"
                .to_string(),
        ] {
            let a = planned(&state, &sql);
            let count = a
                .count
                .as_ref()
                .unwrap_or_else(|| panic!("fused: {sql}\n{}", a.pre));
            // Whole, in two batches, and one line at a time.
            let all = batch(&LINES);
            let (one, two) = (batch(&LINES[..4]), batch(&LINES[4..]));
            let singles: Vec<RecordBatch> = LINES.iter().map(|l| batch(&[*l])).collect();
            for batches in [vec![all], vec![one, two], singles, Vec::new()] {
                let want = datafusions(&state, &a, batches.clone());
                let got = merged(count.run(&batches).expect("counts"));
                assert_eq!(got, want, "{sql}");
            }
            // Chunks, made lines by the source.
            let text = LINES
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            let chunk = TextChunk::from_bytes(format!("{text}\r\n{text}\n"));
            let lines = crate::input::chunk_batch(&chunk, None);
            let want = datafusions(&state, &a, vec![lines.clone()]);
            assert_eq!(merged(count.run(&[lines]).expect("counts")), want, "{sql}");
            // Made inside the operator, only lines holding a LIKE's text, if any.
            let got = merged(count.of_chunks(&[chunk.clone(), chunk]).expect("counts"));
            let twice: Merged = want
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().map(|n| n * 2).collect()))
                .collect();
            assert_eq!(got, twice, "{sql}");
            assert_eq!(count.pushed.is_some(), sql.contains("LIKE"), "{sql}");
        }
    }

    #[test]
    fn windowed_partials_come_ordered_by_key_and_time() {
        let state = session();
        let a = planned(
            &state,
            "SELECT level, window.start, count(*) AS n FROM (SELECT split_part(value, ' ', 2) \
             AS level, try_to_timestamp(split_part(value, ' ', 1)) AS ts FROM lines) \
             GROUP BY level, window(ts, '1 minute')",
        );
        let count = a.count.as_ref().expect("fused");
        let got = count
            .run(&[batch(&[
                Some("2015-12-18T00:00:09Z b"),
                Some("2015-12-18T00:00:01Z b"),
                Some("2015-12-18T00:00:05Z a"),
                Some("2015-12-18T00:00:01Z b"),
            ])])
            .expect("counts");
        let order: Vec<(Vec<u8>, Option<i64>)> =
            got.iter().map(|(k, t, _)| (k.0.to_vec(), *t)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn other_aggregations_are_left_to_datafusion() {
        let state = session();
        for sql in [
            "SELECT sum(length(value)) AS n FROM lines",
            "SELECT count(*) FILTER (WHERE value <> '') AS n FROM lines",
            "SELECT value, min(value) AS n FROM lines GROUP BY value",
            "SELECT w, count(*) AS n FROM (SELECT unnest(string_to_array(upper(value), ' ')) \
             AS w FROM lines) GROUP BY w",
            "SELECT count(*) AS n FROM lines WHERE random() < 0.5",
            "SELECT count(*) AS n FROM lines JOIN (VALUES ('a')) AS v(x) ON value = x",
        ] {
            let a = planned(&state, sql);
            assert!(a.count.is_none(), "{sql}\n{}", a.pre);
        }
    }
}
