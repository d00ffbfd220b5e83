//! # lockgate-sql
//!
//! Streaming SQL on Lockgate, in the model of Spark's Structured Streaming: a stream is
//! an unbounded table, and a query over it is evaluated incrementally, one micro-batch
//! at a time, exactly once with a checkpoint.
//!
//! [DataFusion](https://datafusion.apache.org) parses, plans and evaluates the SQL over
//! Arrow record batches. Lockgate cuts the plan at its aggregation ([`plan`]): the
//! stateless parts (projections, filters, DataFusion's scalar functions, `unnest`,
//! joins with static tables) run as DataFusion plans on each batch partition; the
//! aggregation runs as Lockgate operators whose state — partial aggregates per group,
//! and per event-time window with a watermark — is checkpointed under stable names and
//! recovered exactly once like all state.
//!
//! ```
//! use std::time::Duration;
//! use lockgate_core::{InputQueue, StreamingContext, Time, Trigger};
//! use lockgate_sql::SqlContext;
//!
//! let ctx = StreamingContext::builder()
//!     .batch_interval(Duration::from_secs(1))
//!     .trigger(Trigger::AvailableNow)
//!     .start_time(Time(0))
//!     .build()?;
//! let lines = ctx.queue_stream(
//!     InputQueue::from_batches(vec![vec!["a b".to_string(), "b".to_string()]]),
//!     true,
//!     None,
//! );
//! let mut sql = SqlContext::new(&ctx);
//! sql.register_lines("lines", &lines)?;
//! let counts = sql.sql(
//!     "SELECT word, count(*) AS n FROM \
//!      (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines) GROUP BY word",
//! )?;
//! let to_json = counts.json_fn();
//! counts.rows().foreach_batch(move |batch, _| {
//!     let mut got: Vec<String> = batch.collect().iter().map(|r| to_json(r).to_string()).collect();
//!     got.sort();
//!     assert_eq!(got, [r#"{"n":1,"word":"a"}"#, r#"{"n":2,"word":"b"}"#]);
//! });
//! ctx.start()?;
//! ctx.await_termination()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod count;
mod error;
mod exec;
pub mod input;
pub mod plan;
pub mod rewrite;
pub mod shape;
mod slot;
pub mod split;
pub mod steps;
#[cfg(test)]
mod testing;
pub mod udf;
pub mod value;

/// The DataFusion this crate is built on (for Arrow types and scalars in row values).
pub use datafusion;
use error::execute_failed;
pub use error::{Error, Result};
pub use input::{Decoder, Format};
use lockgate_core::sync::lock;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use lockgate_core::source::TextChunk;
use lockgate_core::{DStream, OutputMode, StateSpec, StreamingContext, Time, Windowed};

use crate::plan::{AggPlan, Kind, StreamPlan, AGG_TABLE};
use crate::value::{Key, Layout, Partials};

pub use exec::Row;

/// Rows per record batch inside DataFusion's operators: a micro-batch partition is
/// large (a file chunk), so batches larger than DataFusion's default 8192 cost less per
/// row.
const BATCH_ROWS: usize = 65_536;

struct StreamTable {
    source: Source,
    /// The batch streams made of chunks so far, by pushed-down filter: queries with the
    /// same filter share one.
    made: std::sync::Mutex<BTreeMap<Option<String>, DStream<RecordBatch>>>,
    /// The partial aggregations made so far, by the text of their plan: queries whose
    /// part below the aggregation is the same (the tumbling and the sliding window of
    /// one filter, say) share one.
    partials: std::sync::Mutex<BTreeMap<String, PartialStream>>,
}

/// Partial aggregates of a batch partition: (group key, exact event time, partials).
type PartialStream = DStream<(Key, Option<i64>, Partials)>;

/// Where a stream table's batches come from.
enum Source {
    /// Record batches, as they are.
    Batches(DStream<RecordBatch>),
    /// File chunks, made `lines(value)` batches per query (so a `LIKE '%text%'` filter
    /// on `value` is searched for in the whole chunk, and only matching lines are made).
    Chunks(DStream<TextChunk>),
}

impl StreamTable {
    /// The table's batches for a query planned as `plan`.
    fn batches(&self, plan: &LogicalPlan, table: &str) -> DStream<RecordBatch> {
        match &self.source {
            Source::Batches(b) => b.clone(),
            Source::Chunks(chunks) => {
                let needle = shape::contains_filter(plan, table, "value");
                let mut made = lock(&self.made);
                made.entry(needle.clone())
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
}

/// Streams and static tables, queried with SQL (see the crate docs).
pub struct SqlContext {
    session: SessionContext,
    streams: BTreeMap<String, StreamTable>,
    watermark: Option<(String, Duration)>,
    mode: OutputMode,
}

impl SqlContext {
    /// A SQL context over `ctx`'s streams, with DataFusion's functions and Lockgate's
    /// (`try_to_timestamp`, the window markers).
    pub fn new(_ctx: &StreamingContext) -> Self {
        // The engine runs a batch's partitions in parallel: DataFusion plans each
        // partition single-threaded.
        let session = SessionContext::new_with_config(
            SessionConfig::new()
                .with_target_partitions(1)
                .with_batch_size(BATCH_ROWS),
        );
        for f in udf::all() {
            session.register_udf(f);
        }
        SqlContext {
            session,
            streams: BTreeMap::new(),
            watermark: None,
            mode: OutputMode::Update,
        }
    }

    /// Registers a stream of record batches of `schema` as table `name`.
    pub fn register_stream(
        &mut self,
        name: &str,
        schema: SchemaRef,
        stream: DStream<RecordBatch>,
    ) -> Result<()> {
        self.add_stream(name, schema, Source::Batches(stream))
    }

    fn add_stream(&mut self, name: &str, schema: SchemaRef, source: Source) -> Result<()> {
        self.session
            .register_table(name, Arc::new(slot::SlotTable::new(name, schema)))
            .map_err(Error::Plan)?;
        let (made, partials) = Default::default();
        self.streams.insert(
            name.to_string(),
            StreamTable {
                source,
                made,
                partials,
            },
        );
        Ok(())
    }

    /// Registers a stream of file chunks as the text table `name` (`value`): each chunk
    /// becomes one batch of its lines; a query's `value LIKE '%text%'` filter is
    /// searched for over whole chunks, so only matching lines are made into rows.
    pub fn register_text_chunks(&mut self, name: &str, chunks: &DStream<TextChunk>) -> Result<()> {
        self.add_stream(name, input::lines_schema(), Source::Chunks(chunks.clone()))
    }

    /// Registers a stream of lines as table `name` with one column, `value` (Spark's
    /// text source).
    pub fn register_lines(&mut self, name: &str, lines: &DStream<String>) -> Result<()> {
        let batches = lines.map_partitions(|part: Vec<String>| {
            if part.is_empty() {
                return Vec::new();
            }
            vec![input::lines_batch(
                part.iter().map(String::as_str),
                part.len(),
            )]
        });
        self.register_stream(name, input::lines_schema(), batches)
    }

    /// Registers a stream of values (lines, message payloads) decoded by `decoder` into
    /// its schema's columns; values that do not decode are counted and skipped.
    pub fn register_decoded(
        &mut self,
        name: &str,
        values: &DStream<String>,
        decoder: Decoder,
    ) -> Result<()> {
        let schema = decoder.schema().clone();
        let batches = values.try_map_partitions(move |part: Vec<String>| {
            if part.is_empty() {
                return Ok(Vec::new());
            }
            let b = decoder
                .decode(part.iter().map(String::as_str))
                .map_err(Error::into_engine)?;
            Ok(if b.num_rows() == 0 {
                Vec::new()
            } else {
                vec![b]
            })
        });
        self.register_stream(name, schema, batches)
    }

    /// Registers a CSV file (with a header line) as the static table `name`, read once,
    /// now: a stream joins against this snapshot.
    pub fn register_csv(&mut self, name: &str, path: &Path) -> Result<()> {
        let (schema, batches) = StaticReader::new().csv(path)?;
        self.register_batches(name, schema, batches)
    }

    /// Registers a Parquet file as the static table `name`, read once, now.
    pub fn register_parquet(&mut self, name: &str, path: &Path) -> Result<()> {
        let (schema, batches) = StaticReader::new().parquet(path)?;
        self.register_batches(name, schema, batches)
    }

    /// Registers record batches (rows read from a database, say) as the static table
    /// `name`.
    pub fn register_batches(
        &mut self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        let table = MemTable::try_new(schema, vec![batches]).map_err(Error::Plan)?;
        self.session
            .register_table(name, Arc::new(table))
            .map_err(Error::Plan)?;
        Ok(())
    }

    /// Event time for windows: `column` (the event-time column of the query's
    /// `window(...)`) may be `delay` late; records further behind the largest event
    /// time seen are dropped and counted, and windows the watermark passed are
    /// finished and evicted (Spark's `withWatermark`).
    pub fn with_watermark(&mut self, column: &str, delay: Duration) -> &mut Self {
        self.watermark = Some((column.to_string(), delay));
        self
    }

    /// When an aggregation emits rows: update (default: changed groups every batch) or
    /// append (a window once, when the watermark passes its end).
    pub fn output_mode(&mut self, mode: OutputMode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// The query as a stream of rows, named `sql` in the graph (state under
    /// `sql_...`). See [`SqlContext::sql_named`].
    pub fn sql(&self, query: &str) -> Result<SqlStream> {
        self.sql_named(query, "sql")
    }

    /// The query as a stream of rows; its operators (and checkpointed state) are named
    /// after `name`, so keep it stable across restarts. Unsupported constructs are
    /// errors here, before any batch runs.
    pub fn sql_named(&self, query: &str, name: &str) -> Result<SqlStream> {
        let mut statements =
            Parser::parse_sql(&GenericDialect {}, query).map_err(|e| Error::Plan(e.into()))?;
        if statements.len() != 1 {
            return Err(Error::Unsupported(format!(
                "{} statements: give one SELECT query",
                statements.len()
            )));
        }
        let mut statement = statements.remove(0);
        let Statement::Query(q) = &mut statement else {
            return Err(Error::Unsupported(format!(
                "`{statement}`: only SELECT queries run over streams"
            )));
        };
        let window = rewrite::rewrite_windows(q)?;
        if let (Some((col, _)), Some(w)) = (&self.watermark, &window) {
            if !w.watermarked_by(col) {
                return Err(Error::Config(format!(
                    "--watermark names the column `{col}`, but the query's window is over \
                     `{}`: give the window's event-time column, --watermark {} DELAY",
                    w.time, w.time
                )));
            }
        }
        let state = self.session.state();
        // Which stream the query reads.
        let mut table = None;
        for t in self.streams.keys() {
            if mentions(query, t) {
                if table.is_some() {
                    return Err(Error::Unsupported(format!(
                        "the query names two streams ({} and {t}): joins of streams are \
                         not supported; join a stream with static tables",
                        table.unwrap_or_default()
                    )));
                }
                table = Some(t.clone());
            }
        }
        let table = match table {
            Some(t) => t,
            None if self.streams.is_empty() => {
                return Err(Error::Config("no stream is registered".into()))
            }
            None => self.streams.keys().next().cloned().unwrap_or_default(),
        };
        let planned = block_on(plan::plan(&state, statement, &table, window.as_ref()))?;
        let source = &self.streams[&table];
        let mut warnings = Vec::new();
        let rows = match &planned.kind {
            Kind::Stateless(p) => {
                if self.watermark.is_some() {
                    return Err(Error::Unsupported(
                        "--watermark with a query that does not aggregate by window(...)".into(),
                    ));
                }
                let input = source.batches(p, &table);
                let steps = steps::Steps::of(p, &table, &state).map(Arc::new);
                let (state, p) = (Arc::new(state), Arc::new(exec::Prepared::new(p.clone())));
                let t = table.clone();
                input
                    .try_map_partitions(move |batches| {
                        if batches.is_empty() {
                            return Ok(Vec::new());
                        }
                        let out = match &steps {
                            // Projections and filters: evaluated as expressions.
                            Some(steps) => batches
                                .iter()
                                .map(|b| steps.run(b))
                                .collect::<datafusion::error::Result<Vec<_>>>()
                                .map_err(execute_failed)?,
                            None => {
                                exec::run(&state, &p, &t, batches).map_err(Error::into_engine)?
                            }
                        };
                        exec::rows(out).map_err(Error::into_engine)
                    })
                    .name(name)
            }
            Kind::Aggregate(a) => {
                self.aggregate(&state, source, &planned, a, name, &mut warnings)?
            }
        };
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(SqlStream {
            rows,
            columns: Arc::new(
                planned
                    .output
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            ),
            schema: planned.output.clone(),
            key_columns: planned.key_columns.clone(),
            warnings,
            plan: planned,
        })
    }

    fn aggregate(
        &self,
        state: &SessionState,
        source: &StreamTable,
        planned: &StreamPlan,
        a: &AggPlan,
        name: &str,
        warnings: &mut Vec<String>,
    ) -> Result<DStream<Row>> {
        let state = Arc::new(state.clone());
        // The state's operators are named after the query and what its state holds: a
        // query whose keys, aggregates or window changed does not read the old state
        // (recovery names the mismatch instead), while a changed select list does.
        let sig = state_signature(a);
        let (table, output_schema) = (planned.table.as_str(), &planned.output);
        let (pre, t) = (
            Arc::new(exec::Prepared::new(a.pre.clone())),
            table.to_string(),
        );
        let layout = Arc::new(a.layout.clone());
        let groups = a.groups;
        let window_index = a.window.as_ref().map(|w| w.index);
        // Partial aggregates of each partition: (key, exact event time, partials).
        let st = state.clone();
        let key_index: Vec<usize> = (0..groups).filter(|i| Some(*i) != window_index).collect();
        let shared = format!("{}", a.pre.display_indent_schema());
        let count = a.count.clone();
        let run_pre = move |batches: Vec<RecordBatch>| {
            if batches.is_empty() {
                return Ok(Vec::new());
            }
            if let Some(count) = &count {
                // Rows counted by group without DataFusion's aggregation.
                return count.run(&batches).map_err(execute_failed);
            }
            let out = exec::run(&st, &pre, &t, batches).map_err(Error::into_engine)?;
            partial_rows(&out, &key_index, window_index, groups).map_err(execute_failed)
        };
        let split = a.split.clone();
        let partials = lock(&source.partials)
            .entry(shared)
            .or_insert_with(|| {
                match (split, &source.source) {
                    // Words counted in place in the chunks.
                    (Some(split), Source::Chunks(chunks)) => {
                        chunks.try_map_partitions(move |chunks| {
                            split.of_chunks(&chunks).map_err(execute_failed)
                        })
                    }
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
            .clone();
        let post = Arc::new(exec::Prepared::new(a.post.clone()));
        // A select list (and HAVING) over the changed groups is evaluated as
        // expressions when it can be.
        let post_steps = steps::Steps::of(&a.post, AGG_TABLE, &state).map(Arc::new);
        let post_columns = a.post_columns.clone();
        let agg_schema = a.agg_schema.clone();
        let output = Arc::new(Schema::new(self_output_fields(
            &a.agg_schema,
            post_columns.as_deref(),
            output_schema,
        )));
        let agg_types = Arc::new(a.agg_types.clone());
        let key_types: Arc<Vec<DataType>> = Arc::new(
            (0..groups)
                .filter(|i| Some(*i) != window_index)
                .map(|i| a.agg_schema.field(i).data_type().clone())
                .collect(),
        );
        // The changed groups' columns, then the part after the aggregation.
        let post_rows = move |columns: Vec<ArrayRef>| -> lockgate_core::Result<Vec<Row>> {
            let batch = RecordBatch::try_new(agg_schema.clone(), columns)
                .map_err(|e| execute_failed(e.into()))?;
            if let Some(pick) = &post_columns {
                let cols = pick.iter().map(|&i| batch.column(i).clone()).collect();
                let out = RecordBatch::try_new(output.clone(), cols)
                    .map_err(|e| execute_failed(e.into()))?;
                return exec::rows(vec![out]).map_err(Error::into_engine);
            }
            let out = match &post_steps {
                Some(steps) => vec![steps.run(&batch).map_err(execute_failed)?],
                None => {
                    exec::run(&state, &post, AGG_TABLE, vec![batch]).map_err(Error::into_engine)?
                }
            };
            exec::rows(out).map_err(Error::into_engine)
        };
        match &a.window {
            None => {
                if self.watermark.is_some() {
                    return Err(Error::Unsupported(
                        "--watermark with an aggregation that has no event-time window: \
                         group by window(ts, ...) (without a window, a group never closes)"
                            .into(),
                    ));
                }
                if self.mode == OutputMode::Append {
                    return Err(Error::Unsupported(
                        "append mode with an aggregation that has no event-time window: a \
                         group never closes, so it would never be emitted; use update mode \
                         or group by window(ts, ...) with a watermark"
                            .into(),
                    ));
                }
                if a.groups > 0 {
                    warnings.push(format!(
                        "SQL query `{name}`: an aggregation without an event-time window \
                         keeps every group in state, so its state grows without bound \
                         with the number of distinct keys"
                    ));
                }
                let (l1, l2) = (layout.clone(), layout.clone());
                let changed = partials
                    .map(|(k, _, p)| (k, p))
                    .reduce_by_key(move |mut a, b| {
                        l1.merge(&mut a, &b);
                        a
                    })
                    .map_with_state(StateSpec::function(
                        move |k: &Key,
                              p: Option<Partials>,
                              total: &mut lockgate_core::State<Partials>| {
                            let mut now = total.get().cloned().unwrap_or_default();
                            if let Some(p) = p {
                                l2.merge(&mut now, &p);
                            }
                            total.update(now.clone());
                            (k.clone(), now)
                        },
                    ))
                    .name(&format!("{name}_state_{sig}"))
                    .stream();
                Ok(changed
                    .try_map_partitions(move |groups: Vec<(Key, Partials)>| {
                        if groups.is_empty() {
                            return Ok(Vec::new());
                        }
                        let mut cols = value::decode_keys(groups.iter().map(|g| &g.0), &key_types)
                            .map_err(execute_failed)?;
                        cols.extend(
                            layout
                                .finish(groups.iter().map(|g| &g.1), &agg_types)
                                .map_err(execute_failed)?,
                        );
                        post_rows(cols)
                    })
                    .name(name))
            }
            Some(w) => {
                let time_type = w.time_type.clone();
                let index = w.index;
                let time_of = |r: &(Key, Option<i64>, Partials)| r.1.map(Time);
                let events = match &self.watermark {
                    Some((_col, delay)) => partials.with_watermark(time_of, *delay),
                    None => {
                        warnings.push(format!(
                            "SQL query `{name}`: a window without a watermark (--watermark \
                             COLUMN DELAY) never closes, so its state grows without bound"
                        ));
                        partials.with_event_time(time_of)
                    }
                };
                let (l1, l2) = (layout.clone(), layout.clone());
                let windows = events
                    .window(w.spec)
                    .key_by(|r: &(Key, Option<i64>, Partials)| r.0.clone())
                    .output_mode(self.mode)
                    .aggregate(
                        Partials::default,
                        move |acc, r| l1.merge(acc, &r.2),
                        move |acc, other| l2.merge(acc, other),
                    )
                    .name(&format!("{name}_window_{sig}"));
                Ok(windows
                    .try_map_partitions(move |ws: Vec<Windowed<Key, Partials>>| {
                        if ws.is_empty() {
                            return Ok(Vec::new());
                        }
                        let mut cols = value::decode_keys(ws.iter().map(|w| &w.key), &key_types)
                            .map_err(execute_failed)?;
                        let starts =
                            value::from_epoch_ms(ws.iter().map(|w| w.window.start.0), &time_type)
                                .map_err(execute_failed)?;
                        cols.insert(index, starts);
                        cols.extend(
                            layout
                                .finish(ws.iter().map(|w| &w.value), &agg_types)
                                .map_err(execute_failed)?,
                        );
                        cols.push(
                            value::from_epoch_ms(ws.iter().map(|w| w.window.end.0), &time_type)
                                .map_err(execute_failed)?,
                        );
                        post_rows(cols)
                    })
                    .name(name))
            }
        }
    }
}

/// Reads static tables (CSV with a header line, Parquet) into memory.
pub struct StaticReader {
    session: SessionContext,
}

impl Default for StaticReader {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticReader {
    /// A reader.
    pub fn new() -> Self {
        StaticReader {
            session: SessionContext::new(),
        }
    }

    fn load(
        &self,
        path: &Path,
        df: datafusion::common::Result<datafusion::dataframe::DataFrame>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let what = |e| Error::Config(format!("reading {}: {e}", path.display()));
        let df = df.map_err(what)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = block_on(df.collect()).map_err(what)?;
        Ok((schema, batches))
    }

    /// The rows of a CSV file with a header line (types inferred).
    pub fn csv(&self, path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let p = path_text(path)?;
        self.load(
            path,
            block_on(self.session.read_csv(p.as_str(), CsvReadOptions::new())),
        )
    }

    /// The rows of a Parquet file.
    pub fn parquet(&self, path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let p = path_text(path)?;
        self.load(
            path,
            block_on(
                self.session
                    .read_parquet(p.as_str(), ParquetReadOptions::default()),
            ),
        )
    }
}

/// The partial aggregates of the pre part's output: (key, exact event time, partials)
/// per group that occurred.
fn partial_rows(
    out: &[RecordBatch],
    key_index: &[usize],
    window_index: Option<usize>,
    groups: usize,
) -> datafusion::error::Result<Vec<(Key, Option<i64>, Partials)>> {
    let mut rows = Vec::new();
    for b in out {
        let n = b.num_rows();
        let key_cols: Vec<ArrayRef> = key_index.iter().map(|&i| b.column(i).clone()).collect();
        let keys = value::encode_keys(&key_cols, n)?;
        let times = match window_index {
            Some(w) => value::epoch_ms(b.column(w))?,
            None => vec![None; n],
        };
        let partials = value::read_partials(&b.columns()[groups..], n)?;
        rows.extend(
            keys.into_iter()
                .zip(times)
                .zip(partials)
                .filter(|(_, p)| Layout::rows(p) > 0)
                .map(|((k, t), p)| (k, t, p)),
        );
    }
    if window_index.is_some() {
        sort_for_windows(&mut rows);
    }
    Ok(rows)
}

/// Orders a partition's windowed partials by key and event time (a hash aggregation
/// gives them in no order): the window operator aggregates a run of one key's records
/// that fall in the same windows once, so sorted partials make long runs.
fn sort_for_windows(rows: &mut [(Key, Option<i64>, Partials)]) {
    rows.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
}

/// The fields of a query's output when it only picks columns of the aggregation's
/// table: the output's names with the picked columns' types.
fn self_output_fields(agg: &SchemaRef, pick: Option<&[usize]>, output: &SchemaRef) -> Vec<Field> {
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

fn path_text(path: &Path) -> Result<String> {
    if !path.exists() {
        return Err(Error::Config(format!("{}: no such file", path.display())));
    }
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Config(format!("{}: the path is not UTF-8", path.display())))
}

/// True when `query` names `table` as a word (not inside another identifier).
pub fn mentions(query: &str, table: &str) -> bool {
    let q = query.to_ascii_lowercase();
    let t = table.to_ascii_lowercase();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    q.match_indices(&t).any(|(i, _)| {
        let before = q[..i].chars().next_back();
        let after = q[i + t.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // Planning happens once, at start, on the caller's thread.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => panic!("cannot start a runtime to plan the query: {e}"),
    }
}

/// A query over streams: its rows as a stream, and what describes them.
pub struct SqlStream {
    rows: DStream<Row>,
    columns: Arc<Vec<String>>,
    schema: SchemaRef,
    key_columns: Vec<String>,
    warnings: Vec<String>,
    plan: StreamPlan,
}

impl SqlStream {
    /// The rows, each the query's columns in order: in update mode, every batch the
    /// groups (and windows) it changed; in append mode, finished windows; without
    /// aggregation, every batch's rows.
    pub fn rows(&self) -> &DStream<Row> {
        &self.rows
    }

    /// The output columns' names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Output columns that identify a row in update mode (the group keys and window
    /// bounds the query selects as they are): the key of an upsert.
    pub fn key_columns(&self) -> &[String] {
        &self.key_columns
    }

    /// What the query warns about (state without bound).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// True when the query keeps state (aggregates).
    pub fn is_stateful(&self) -> bool {
        matches!(self.plan.kind, Kind::Aggregate(_))
    }

    /// A row as a JSON object of the query's column names.
    pub fn to_json(&self, row: &Row) -> serde_json::Value {
        row.to_json()
    }

    /// [`Row::to_json`] as a function to move into sinks.
    pub fn json_fn(&self) -> impl Fn(&Row) -> serde_json::Value + Send + Sync + Clone + 'static {
        |row: &Row| row.to_json()
    }

    /// The rows as Arrow record batches, one per partition.
    pub fn record_batches(&self) -> DStream<RecordBatch> {
        let schema = self.schema.clone();
        self.rows.try_map_partitions(move |rows: Vec<Row>| {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Vec<ScalarValue>> = rows.iter().map(Row::values).collect();
            Ok(vec![
                exec::batch_of(&schema, &values).map_err(Error::into_engine)?
            ])
        })
    }
}
