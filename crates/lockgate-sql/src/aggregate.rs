//! What the two kinds of stateful aggregation (`groups`: a plain `GROUP BY`;
//! `windows`: event-time windows) share: the partial aggregates of each batch partition
//! (the plan's *pre* part, or a fused operator doing the same), the stable name of the
//! state, and the rows made of the changed groups (the *post* part).

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionState;

use crate::error::{execute_failed, Error};
use crate::exec::{self, Row};
use crate::plan::{AggPlan, AGG_TABLE};
use crate::steps::Steps;
use crate::streams::{PartialStream, Source, StreamTable};
use crate::value::{self, Key, Layout, Partials};

/// An aggregation as its stateful operator needs it: how partials merge and become
/// values, the key and value types, and the part after it.
pub(crate) struct Aggregation {
    /// A short, stable fingerprint of what the state holds ([`state_signature`]): the
    /// state's operators are named after the query and it.
    pub sig: String,
    /// The aggregates and how their partials merge.
    pub layout: Arc<Layout>,
    /// The group keys' types (without the window).
    pub key_types: Arc<Vec<DataType>>,
    /// The aggregates' output types.
    pub agg_types: Arc<Vec<DataType>>,
    /// The part after the aggregation.
    pub post: Arc<Post>,
}

impl Aggregation {
    /// The aggregation of `a`, whose query outputs `output`.
    pub fn new(session: &Arc<SessionState>, a: &AggPlan, output: &SchemaRef) -> Self {
        let window_index = a.window.as_ref().map(|w| w.index);
        Aggregation {
            sig: state_signature(a),
            layout: Arc::new(a.layout.clone()),
            key_types: Arc::new(
                (0..a.groups)
                    .filter(|i| Some(*i) != window_index)
                    .map(|i| a.agg_schema.field(i).data_type().clone())
                    .collect(),
            ),
            agg_types: Arc::new(a.agg_types.clone()),
            post: Arc::new(Post::new(session, a, output)),
        }
    }

    /// The group keys' columns, then the aggregates' values, of `groups` (each a key
    /// and its merged partials).
    pub fn columns<'a>(
        &self,
        keys: impl Iterator<Item = &'a Key> + Clone,
        values: impl Iterator<Item = &'a Partials> + Clone,
    ) -> lockgate_core::Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let keys = value::decode_keys(keys, &self.key_types).map_err(execute_failed)?;
        let values = self
            .layout
            .finish(values, &self.agg_types)
            .map_err(execute_failed)?;
        Ok((keys, values))
    }
}

/// The part after the aggregation (the select list, `HAVING`), run on the changed
/// groups' columns: a pick of columns when that is all it does, expressions when it is
/// projections and filters, a DataFusion plan otherwise.
pub(crate) struct Post {
    agg_schema: SchemaRef,
    /// The aggregation's columns the output is, when it only picks and renames them.
    pick: Option<Vec<usize>>,
    /// The output's schema for a pick.
    picked: SchemaRef,
    steps: Option<Steps>,
    plan: exec::Prepared,
    session: Arc<SessionState>,
}

impl Post {
    fn new(session: &Arc<SessionState>, a: &AggPlan, output: &SchemaRef) -> Self {
        let picked = Arc::new(Schema::new(picked_fields(
            &a.agg_schema,
            a.post_columns.as_deref(),
            output,
        )));
        Post {
            agg_schema: a.agg_schema.clone(),
            pick: a.post_columns.clone(),
            picked,
            steps: Steps::of(&a.post, AGG_TABLE, session),
            plan: exec::Prepared::new(a.post.clone()),
            session: session.clone(),
        }
    }

    /// The result rows of the changed groups' columns (those of the aggregation's
    /// table, in its order).
    pub fn rows(&self, columns: Vec<ArrayRef>) -> lockgate_core::Result<Vec<Row>> {
        let batch = RecordBatch::try_new(self.agg_schema.clone(), columns)
            .map_err(|e| execute_failed(e.into()))?;
        if let Some(pick) = &self.pick {
            let cols = pick.iter().map(|&i| batch.column(i).clone()).collect();
            let out = RecordBatch::try_new(self.picked.clone(), cols)
                .map_err(|e| execute_failed(e.into()))?;
            return exec::rows(vec![out]).map_err(Error::into_engine);
        }
        let out = match &self.steps {
            Some(steps) => vec![steps.run(&batch).map_err(execute_failed)?],
            None => exec::run(&self.session, &self.plan, AGG_TABLE, vec![batch])
                .map_err(Error::into_engine)?,
        };
        exec::rows(out).map_err(Error::into_engine)
    }
}

/// The partial aggregates of each batch partition of `source` for `a`: shared by the
/// queries whose part below the aggregation is the same. Words of a split text column
/// and counts by group are made by fused operators ([`crate::split`],
/// [`crate::count`]); anything else by the *pre* plan in DataFusion.
pub(crate) fn partials(
    session: &Arc<SessionState>,
    source: &StreamTable,
    table: &str,
    a: &AggPlan,
    name: &str,
) -> PartialStream {
    let shared = format!("{}", a.pre.display_indent_schema());
    source.partials(shared, || {
        let window_index = a.window.as_ref().map(|w| w.index);
        let key_index: Vec<usize> = (0..a.groups).filter(|i| Some(*i) != window_index).collect();
        let groups = a.groups;
        let (pre, session, t) = (
            Arc::new(exec::Prepared::new(a.pre.clone())),
            session.clone(),
            table.to_string(),
        );
        let count = a.count.clone();
        let run_pre = move |batches: Vec<RecordBatch>| {
            if batches.is_empty() {
                return Ok(Vec::new());
            }
            if let Some(count) = &count {
                // Rows counted by group without DataFusion's aggregation.
                return count.run(&batches).map_err(execute_failed);
            }
            let out = exec::run(&session, &pre, &t, batches).map_err(Error::into_engine)?;
            value::partial_rows(&out, &key_index, window_index, groups).map_err(execute_failed)
        };
        match (a.split.clone(), &source.source) {
            // Words counted in place in the chunks.
            (Some(split), Source::Chunks(chunks)) => chunks
                .try_map_partitions(move |chunks| split.of_chunks(&chunks).map_err(execute_failed)),
            (Some(split), Source::Batches(b)) => {
                b.try_map_partitions(move |batches| match split.of_batches(&batches) {
                    Some(partials) => partials.map_err(execute_failed),
                    None => run_pre(batches),
                })
            }
            (None, Source::Chunks(chunks)) => match a.count.clone() {
                // Rows counted by group as each chunk's lines are made.
                Some(count) => chunks.try_map_partitions(move |chunks| {
                    count.of_chunks(&chunks).map_err(execute_failed)
                }),
                None => source.batches(&a.pre, table).try_map_partitions(run_pre),
            },
            (None, Source::Batches(b)) => b.try_map_partitions(run_pre),
        }
        .name(&format!("{name}_partial"))
    })
}

/// The fields of a query's output when it only picks columns of the aggregation's
/// table: the output's names with the picked columns' types.
fn picked_fields(agg: &SchemaRef, pick: Option<&[usize]>, output: &SchemaRef) -> Vec<Field> {
    match pick {
        Some(pick) => output
            .fields()
            .iter()
            .zip(pick)
            .map(|(f, &i)| Field::new(f.name(), agg.field(i).data_type().clone(), true))
            .collect(),
        None => output.fields().iter().map(|f| f.as_ref().clone()).collect(),
    }
}

/// A short, stable fingerprint of what an aggregation keeps in state: the types of its
/// keys and partial aggregates, its aggregates and its window (FNV-1a, 32 bits, hex).
/// A query whose keys, aggregates or window changed does not read the old state
/// (recovery names the mismatch instead), while a changed select list does.
fn state_signature(a: &AggPlan) -> String {
    let mut text = String::new();
    for f in a.pre.schema().fields() {
        // String views count as plain text (they were strings before the `lines`
        // table held views), so older checkpoints keep their state names.
        text.push_str(&format!("{};", exec::plain_type(f.data_type())));
    }
    text.push_str(&format!(
        "{:?};{:?}",
        a.layout.aggs,
        a.window.as_ref().map(|w| (w.spec, w.index))
    ));
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}
