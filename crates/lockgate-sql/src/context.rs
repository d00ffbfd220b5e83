//! [`SqlContext`]: streams and static tables registered as tables, and a query over
//! them turned into a stream of rows — parsed, its windows rewritten ([`crate::rewrite`]),
//! its stream found among the tables it names, planned ([`crate::plan`]), and built as
//! a stateless pipeline ([`crate::stateless`]) or an aggregation over plain groups
//! ([`crate::groups`]) or event-time windows ([`crate::windows`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use lockgate_core::source::TextChunk;
use lockgate_core::{DStream, OutputMode};

use crate::aggregate::{self, Aggregation};
use crate::error::{Error, Result};
use crate::exec::block_on;
use crate::input::{self, Decoder};
use crate::plan::{self, Kind};
use crate::spark::{self, Dialect};
use crate::stream::SqlStream;
use crate::streams::{Source, StreamTable};
use crate::tables::StaticReader;
use crate::{groups, rewrite, slot, stateless, udf, windows};

/// Rows per record batch inside DataFusion's operators: a micro-batch partition is
/// large (a file chunk), so batches larger than DataFusion's default 8192 cost less per
/// row.
const BATCH_ROWS: usize = 65_536;

/// Streams and static tables, queried with SQL (see the crate docs).
pub struct SqlContext {
    session: SessionContext,
    streams: BTreeMap<String, StreamTable>,
    watermark: Option<(String, Duration)>,
    mode: OutputMode,
    dialect: Dialect,
}

impl Default for SqlContext {
    fn default() -> Self {
        Self::new()
    }
}

impl SqlContext {
    /// A SQL context reading queries as Spark SQL ([`Dialect::Spark`]). Its queries run
    /// on the streams registered in it, so on their streaming context.
    pub fn new() -> Self {
        Self::with_dialect(Dialect::Spark)
    }

    /// A SQL context reading queries in `dialect`: DataFusion's functions, Spark's over
    /// them in Spark's dialect, and Lockgate's (`try_to_timestamp`, the window markers).
    pub fn with_dialect(dialect: Dialect) -> Self {
        // The engine runs a batch's partitions in parallel: DataFusion plans each
        // partition single-threaded.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(BATCH_ROWS);
        let session = SessionContext::new_with_state(spark::session_state(config, dialect));
        for f in udf::all() {
            session.register_udf(f);
        }
        // Spark's `try_to_timestamp` in both dialects: Lockgate's only way to parse
        // text that may not be a time without failing the batch.
        session.register_udf(spark::try_to_timestamp());
        if dialect == Dialect::Spark {
            for f in spark::functions() {
                session.register_udf(f);
            }
        }
        SqlContext {
            session,
            streams: BTreeMap::new(),
            watermark: None,
            mode: OutputMode::Update,
            dialect,
        }
    }

    /// The dialect its queries are read in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
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
        self.streams
            .insert(name.to_string(), StreamTable::new(source));
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
    /// its schema's columns; values that do not decode are counted and skipped (see
    /// [`Decoder`]). The values have no location: prefer
    /// [`register_decoded_with`](Self::register_decoded_with) or
    /// [`register_decoded_chunks`](Self::register_decoded_chunks) where they have one.
    pub fn register_decoded(
        &mut self,
        name: &str,
        values: &DStream<String>,
        decoder: Decoder,
    ) -> Result<()> {
        self.register_decoded_with(name, values, decoder, String::as_str, |_| None)
    }

    /// Registers a stream of located values as a decoded table: `text` gives an
    /// element's value, `locate` where it came from (asked only of the values skipped,
    /// for the log and the streaming page: `topic t partition 0 offset 12`).
    pub fn register_decoded_with<T: lockgate_core::Data>(
        &mut self,
        name: &str,
        values: &DStream<T>,
        decoder: Decoder,
        text: fn(&T) -> &str,
        locate: fn(&T) -> Option<String>,
    ) -> Result<()> {
        let schema = decoder.schema().clone();
        let batches = values.try_map_partitions(move |part: Vec<T>| {
            if part.is_empty() {
                return Ok(Vec::new());
            }
            let b = decoder
                .decode_at(part.iter().map(text), |i| part.get(i).and_then(locate))
                .map_err(Error::into_engine)?;
            Ok(if b.num_rows() == 0 {
                Vec::new()
            } else {
                vec![b]
            })
        });
        self.register_stream(name, schema, batches)
    }

    /// Registers the lines of file chunks as a decoded table; a line that does not
    /// decode is located by its file and line number.
    pub fn register_decoded_chunks(
        &mut self,
        name: &str,
        chunks: &DStream<TextChunk>,
        decoder: Decoder,
    ) -> Result<()> {
        let schema = decoder.schema().clone();
        let batches = chunks.try_map_partitions(move |part: Vec<TextChunk>| {
            let mut out = Vec::new();
            for chunk in &part {
                let base = chunk.as_bytes().as_ptr() as usize;
                // Each line with its offset in the chunk (invalid UTF-8 was counted by
                // the source, and is replaced here).
                let lines: Vec<(std::borrow::Cow<'_, str>, usize)> = chunk
                    .lines()
                    .map(|l| (String::from_utf8_lossy(l), l.as_ptr() as usize - base))
                    .collect();
                let locate = |i: usize| {
                    let (_, at) = lines.get(i)?;
                    let line = chunk.line_number(*at);
                    Some(match chunk.origin() {
                        Some(file) => format!("file `{}` line {line}", file.display()),
                        None => format!("line {line} of a chunk"),
                    })
                };
                let b = decoder
                    .decode_at(lines.iter().map(|(l, _)| l.as_ref()), locate)
                    .map_err(Error::into_engine)?;
                if b.num_rows() > 0 {
                    out.push(b);
                }
            }
            Ok(out)
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

    /// Runs `query` once over the static tables registered with
    /// [`register_batches`](Self::register_batches) (read in the context's dialect, with
    /// its functions): a batch query, as Spark's `spark.sql(...)` over temporary views.
    /// The result's schema and batches. Queries over streams go through
    /// [`sql`](Self::sql) instead.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lockgate_sql::datafusion::arrow::array::{ArrayRef, StringArray};
    /// use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
    /// use lockgate_sql::SqlContext;
    ///
    /// let words: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
    /// let batch = RecordBatch::try_from_iter([("word", words)])?;
    /// let mut sql = SqlContext::new();
    /// sql.register_batches("words", batch.schema(), vec![batch])?;
    /// let (schema, out) = sql.query_static("SELECT count(*) AS n FROM words WHERE word = 'a'")?;
    /// assert_eq!(schema.field(0).name(), "n");
    /// assert_eq!(out[0].num_rows(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query_static(&self, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut statement = parse_one(query, self.dialect)?;
        if self.dialect == Dialect::Spark {
            spark::rewrite(&mut statement);
            spark::check_constants(&statement)?;
        }
        for table in table_names_of(&statement)? {
            if self.streams.contains_key(&table) {
                return Err(Error::Unsupported(format!(
                    "`{table}` is a stream: a static query reads static tables only"
                )));
            }
        }
        let state = self.session.state();
        block_on(async {
            let plan = state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    statement,
                )))
                .await
                .map_err(Error::Plan)?;
            let frame = self
                .session
                .execute_logical_plan(plan)
                .await
                .map_err(Error::Plan)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await.map_err(Error::Execute)?;
            Ok((schema, batches))
        })
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
        let mut statement = parse_one(query, self.dialect)?;
        if self.dialect == Dialect::Spark {
            spark::rewrite(&mut statement);
            spark::check_constants(&statement)?;
        }
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
        self.check_tables(&statement)?;
        let table = self.stream_of(&statement)?;
        let session = self.session.state();
        let planned = block_on(plan::plan(&session, statement, &table, window.as_ref()))?;
        let source = &self.streams[&table];
        let mut warnings = Vec::new();
        let rows = match &planned.kind {
            Kind::Stateless(p) => {
                if self.watermark.is_some() {
                    return Err(Error::Unsupported(
                        "--watermark with a query that does not aggregate by window(...)".into(),
                    ));
                }
                stateless::rows(&session, source, p, &table, name)
            }
            Kind::Aggregate(a) => {
                let session = Arc::new(session);
                let agg = Arc::new(Aggregation::new(&session, a, &planned.output));
                let partials = aggregate::partials(&session, source, &table, a, name);
                match &a.window {
                    None => groups::rows(
                        &partials,
                        &agg,
                        a.groups > 0,
                        self.mode,
                        self.watermark.is_some(),
                        name,
                        &mut warnings,
                    )?,
                    Some(w) => windows::rows(
                        &partials,
                        &agg,
                        w,
                        self.mode,
                        self.watermark.as_ref().map(|(_, delay)| *delay),
                        name,
                        &mut warnings,
                    )?,
                }
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

    /// Refuses a statement naming a table that is not registered, naming those that are.
    fn check_tables(&self, statement: &Statement) -> Result<()> {
        let known: Vec<String> = self
            .session
            .catalog("datafusion")
            .and_then(|c| c.schema("public"))
            .map(|s| s.table_names())
            .unwrap_or_default();
        for t in table_names_of(statement)? {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(&t)) {
                let mut names: Vec<String> = known
                    .iter()
                    .map(|k| {
                        if self.streams.contains_key(k) {
                            format!("{k} (a stream)")
                        } else {
                            format!("{k} (static)")
                        }
                    })
                    .collect();
                names.sort();
                return Err(Error::Config(format!(
                    "there is no table `{t}`: the query can read {}",
                    if names.is_empty() {
                        "no table (none is registered)".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// The stream the statement reads: the one registered stream among the tables it
    /// names (found by DataFusion's resolver, so a name inside a string, a column or a
    /// CTE does not count). A statement naming two streams is refused; one naming none
    /// is planned against the first stream, which planning refuses by name.
    fn stream_of(&self, statement: &Statement) -> Result<String> {
        let mut found: Vec<String> = table_names_of(statement)?
            .into_iter()
            .filter_map(|t| {
                self.streams
                    .keys()
                    .find(|s| s.eq_ignore_ascii_case(&t))
                    .cloned()
            })
            .collect();
        found.sort();
        found.dedup();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => self
                .streams
                .keys()
                .next()
                .cloned()
                .ok_or_else(|| Error::Config("no stream is registered".into())),
            [a, b, ..] => Err(Error::Unsupported(format!(
                "the query names two streams ({a} and {b}): joins of streams are not \
                 supported; join a stream with static tables"
            ))),
        }
    }
}

/// The one statement of `query` (several, or none, is an error).
fn parse_one(query: &str, dialect: Dialect) -> Result<Statement> {
    let mut statements = spark::parse(query, dialect)?;
    if statements.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{} statements: give one SELECT query",
            statements.len()
        )));
    }
    Ok(statements.remove(0))
}

/// The tables `statement` reads (not its CTEs), by their last name part as SQL spells
/// it (unquoted in lower case).
fn table_names_of(statement: &Statement) -> Result<Vec<String>> {
    let wrapped = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
    let (tables, _ctes) =
        datafusion::sql::resolve::resolve_table_references(&wrapped, true).map_err(Error::Plan)?;
    Ok(tables.iter().map(|t| t.table().to_string()).collect())
}

/// The tables a query reads (not its CTEs), found by parsing it: e.g. whether it reads
/// the `kafka` table.
///
/// ```
/// let tables = lockgate_sql::tables_read(
///     "WITH e AS (SELECT value FROM lines WHERE value LIKE '%kafka%') \
///      SELECT count(*) FROM e JOIN users ON e.value = users.name",
/// )?;
/// assert_eq!(tables, ["lines", "users"]);
/// # Ok::<(), lockgate_sql::Error>(())
/// ```
pub fn tables_read(query: &str) -> Result<Vec<String>> {
    table_names_of(&parse_one(query, Dialect::Spark)?)
}
