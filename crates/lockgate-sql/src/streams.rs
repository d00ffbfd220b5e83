//! Stream tables: where a registered stream's record batches come from, and the parts
//! that queries over the same stream share.

use std::collections::BTreeMap;
use std::sync::Mutex;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use lockgate_core::source::TextChunk;
use lockgate_core::sync::lock;
use lockgate_core::DStream;

use crate::value::{Key, Partials};
use crate::{input, shape};

/// Partial aggregates of a batch partition: (group key, exact event time, partials).
pub(crate) type PartialStream = DStream<(Key, Option<i64>, Partials)>;

/// A registered stream, queried as a table.
pub(crate) struct StreamTable {
    pub source: Source,
    /// The batch streams made of chunks so far, by pushed-down filter: queries with the
    /// same filter share one.
    made: Mutex<BTreeMap<Option<String>, DStream<RecordBatch>>>,
    /// The partial aggregations made so far, by the text of their plan: queries whose
    /// part below the aggregation is the same (the tumbling and the sliding window of
    /// one filter, say) share one.
    partials: Mutex<BTreeMap<String, PartialStream>>,
}

/// Where a stream table's batches come from.
pub(crate) enum Source {
    /// Record batches, as they are.
    Batches(DStream<RecordBatch>),
    /// File chunks, made `lines(value)` batches per query (so a `LIKE '%text%'` filter
    /// on `value` is searched for in the whole chunk, and only matching lines are made).
    Chunks(DStream<TextChunk>),
}

impl StreamTable {
    /// A table reading `source`.
    pub fn new(source: Source) -> Self {
        StreamTable {
            source,
            made: Mutex::default(),
            partials: Mutex::default(),
        }
    }

    /// The table's batches for a query planned as `plan`.
    pub fn batches(&self, plan: &LogicalPlan, table: &str) -> DStream<RecordBatch> {
        match &self.source {
            Source::Batches(b) => b.clone(),
            Source::Chunks(chunks) => {
                let needle = shape::contains_filter(plan, table, "value");
                lock(&self.made)
                    .entry(needle.clone())
                    .or_insert_with(|| {
                        chunks.map(move |c| {
                            let finder = needle.as_deref().map(memchr::memmem::Finder::new);
                            input::chunk_batch(&c, finder.as_ref())
                        })
                    })
                    .clone()
            }
        }
    }

    /// The partial aggregation keyed `shared` (the text of its plan), made by `make`
    /// the first time a query asks for it.
    pub fn partials(&self, shared: String, make: impl FnOnce() -> PartialStream) -> PartialStream {
        lock(&self.partials)
            .entry(shared)
            .or_insert_with(make)
            .clone()
    }
}
