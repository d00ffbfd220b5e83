//! `lockgate sql`: a SQL query over the job's input ([`lockgate_sql`]), with the
//! built-in jobs' inputs and outputs: a directory, a socket or Kafka as the stream
//! table; JSON lines under `DIR/<name>/batch=<id>/`, a database table `<name>` or a
//! Kafka topic as the output; exactly once with a checkpoint.
//!
//! Stream tables: `lines(value)` for text (files, a socket, or Kafka values as lines);
//! `kafka(key, value, topic, partition, offset, timestamp, headers)` for Kafka; with a
//! [`Decoder`] (`--format json|csv --schema ...`), the schema's columns, under the same
//! names.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion_types::*;
use lockgate_core::{DStream, FileStreamOptions, OutputMode, StreamingContext};
use lockgate_sql::{Decoder, Row, SqlContext, SqlStream};
use lockgate_sql_sinks::{SqlSink, SqlType, SqlValue, Table, WriteMode};

use crate::{sink_err, Error, Input, JobConfig, Result};

mod datafusion_types {
    pub use lockgate_sql::datafusion::arrow::array::{
        ArrayRef, Int32Builder, Int64Builder, MapBuilder, StringBuilder,
        TimestampMillisecondBuilder,
    };
    pub use lockgate_sql::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    pub use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
    pub use lockgate_sql::datafusion::scalar::ScalarValue;
}

/// The word-count job as SQL (words split on single spaces, empty strings are not
/// words): the same final rows as [`crate::word_count`].
pub const WORD_COUNT_SQL: &str = "SELECT word, count(*) AS count FROM \
     (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines) AS t \
     WHERE word <> '' GROUP BY word";

/// `log-errors --event-time` as SQL: ERROR lines counted per event-time window of
/// `size` (sliding every `slide`, if given) over the bracketed timestamp that starts
/// each line, in epoch seconds — run it with the watermark [`LOG_ERRORS_WATERMARK`] to
/// get the same final rows as [`crate::log_errors`] in event time.
pub fn log_errors_sql(size: &str, slide: Option<&str>) -> String {
    let window = match slide {
        Some(slide) => format!("'{size}', '{slide}'"),
        None => format!("'{size}'"),
    };
    format!(
        "SELECT to_unixtime(window.start) AS start, to_unixtime(window.end) AS end, \
         count(*) AS count FROM (SELECT try_to_timestamp(substr(value, 2, 24), \
         '%a %b %d %H:%M:%S %Y') AS ts FROM lines WHERE value LIKE '%ERROR%') AS e \
         GROUP BY window(ts, {window})"
    )
}

/// The watermark of [`log_errors_sql`], as `--watermark` takes it.
pub const LOG_ERRORS_WATERMARK: &str = "ts 10 seconds";

/// A SQL job: the query and how its input and output are read and named.
#[derive(Clone, Debug)]
pub struct SqlJob {
    /// The query.
    pub query: String,
    /// The output's name: `DIR/<name>/...`, the database table, the `stream` field of
    /// Kafka records; also the state's (keep it stable across restarts).
    pub name: String,
    /// Decode values into columns instead of `lines(value)`.
    pub decoder: Option<Decoder>,
    /// The watermark: event-time column and how late records may be.
    pub watermark: Option<(String, Duration)>,
    /// Update (default) or append.
    pub mode: OutputMode,
    /// Static tables: name and a CSV or Parquet file, or a PostgreSQL table
    /// (`postgres://...#TABLE`).
    pub tables: Vec<(String, String)>,
    /// Spark SQL's dialect (the default) or DataFusion's.
    pub dialect: lockgate_sql::Dialect,
}

impl SqlJob {
    /// The application name (checkpoints, Kafka groups and transactional ids).
    pub fn app_name(&self) -> String {
        format!("sql-{}", self.name)
    }
}

/// The schema of the `kafka` table.
fn kafka_schema() -> SchemaRef {
    let headers = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()).finish();
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(
                lockgate_sql::datafusion::arrow::datatypes::TimeUnit::Millisecond,
                None,
            ),
            true,
        ),
        Field::new(
            "headers",
            lockgate_sql::datafusion::arrow::array::Array::data_type(&headers).clone(),
            false,
        ),
    ]))
}

/// A Kafka record's value decoded under the line policy, with where it came from.
#[derive(Clone)]
struct LocatedValue {
    text: String,
    topic: String,
    partition: u32,
    offset: i64,
}

/// The `kafka` table's batch of `records`. Keys, values and header values are text:
/// invalid UTF-8 is replaced by U+FFFD and counted in the source's
/// `invalid_utf8_lines`, as on every text path.
fn kafka_batch(
    records: &[lockgate_kafka::KafkaRecord],
    counters: &lockgate_core::SourceCounters,
) -> lockgate_core::Result<RecordBatch> {
    fn text<'a>(b: &'a [u8], counters: &lockgate_core::SourceCounters) -> Cow<'a, str> {
        let t = String::from_utf8_lossy(b);
        if matches!(t, Cow::Owned(_)) {
            counters
                .invalid_utf8_lines
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        t
    }
    let mut key = StringBuilder::new();
    let mut value = StringBuilder::new();
    let mut topic = StringBuilder::new();
    let mut partition = Int32Builder::new();
    let mut offset = Int64Builder::new();
    let mut ts = TimestampMillisecondBuilder::new();
    let mut headers = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for r in records {
        key.append_option(r.key.as_deref().map(|b| text(b, counters)));
        value.append_option(r.value.as_deref().map(|b| text(b, counters)));
        topic.append_value(&r.topic);
        partition.append_value(i32::try_from(r.partition).unwrap_or(i32::MAX));
        offset.append_value(r.offset);
        ts.append_option(r.timestamp_ms);
        for (k, v) in &r.headers {
            headers.keys().append_value(k);
            headers.values().append_value(text(v, counters));
        }
        headers
            .append(true)
            .map_err(|e| lockgate_core::Error::external("SQL Kafka table", e))?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(key.finish()),
        Arc::new(value.finish()),
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(ts.finish()),
        Arc::new(headers.finish()),
    ];
    RecordBatch::try_new(kafka_schema(), columns)
        .map_err(|e| lockgate_core::Error::external("SQL Kafka table", e))
}

impl JobConfig {
    /// Builds the context of a SQL job (recovering from the checkpoint directory, if
    /// any); returns it with the query's description.
    pub fn build_sql(&self, job: &SqlJob) -> Result<(StreamingContext, SqlInfo)> {
        if self.event_time {
            return Err(Error::Config(
                "--event-time applies to log-errors; in SQL, group by window(ts, ...) \
                 with --watermark"
                    .into(),
            ));
        }
        if self.from_sink_offsets {
            return Err(Error::Config(
                "--from-sink-offsets applies to the built-in jobs; use --checkpoint".into(),
            ));
        }
        self.validate(crate::Job::WordCount)?;
        let app = job.app_name();
        let kafka = match self.sink.as_deref() {
            Some(url) if url.starts_with("kafka:") => Some(self.kafka_sink(url)?),
            _ => None,
        };
        let mut backend = match (&self.sink, &kafka) {
            (Some(url), None) => Some(lockgate_sql_sinks::open_url(url)?),
            _ => None,
        };
        let statics = load_static_tables(&job.tables)?;
        let mut info = None;
        // The query's own error, kept whole (the engine only carries its text).
        let mut refused = None;
        let mut install = |ctx: &StreamingContext| -> lockgate_core::Result<()> {
            let q = match self.sql_stream(ctx, job, &statics) {
                Ok(q) => q,
                Err(lockgate_sql::Error::Engine(e)) => return Err(e),
                Err(e) => {
                    let text = e.to_string();
                    refused = Some(e);
                    return Err(lockgate_core::Error::Config(text));
                }
            };
            let rows = q.rows();
            let json = self.json_output(&app, kafka.as_ref());
            if self.print {
                let f = q.json_fn();
                rows.map(move |r| f(&r).to_string()).print();
            }
            if json.is_some() {
                let f = q.json_fn();
                let keys = key_indexes(&q);
                json.write(
                    rows,
                    &job.name,
                    move |r: &Row, _| {
                        (!keys.is_empty()).then(|| {
                            let (batch, row) = r.batch();
                            serde_json::Value::Array(
                                keys.iter()
                                    .map(|&i| lockgate_sql::to_json(batch.column(i), row))
                                    .collect(),
                            )
                            .to_string()
                        })
                    },
                    move |r, _| f(r),
                )?;
            }
            if let Some(b) = backend.take() {
                let (table, mode) = sql_table(&job.name, &q).map_err(sink_err)?;
                let sink = SqlSink::new(&job.name, b, table, mode, |r: &Row| {
                    r.values().iter().map(sql_value).collect()
                })
                .map_err(sink_err)?
                .retry_timeout(self.sink_retry_timeout);
                rows.write_to(sink);
            }
            info = Some(SqlInfo {
                columns: q.columns().to_vec(),
                warnings: q.warnings().to_vec(),
                skipped: job.decoder.as_ref().map(Decoder::skipped_counter),
            });
            Ok(())
        };
        let built = self.build_context(&app, |b| b, &mut install);
        let ctx = match (built, refused) {
            (Ok(ctx), _) => ctx,
            (Err(_), Some(sql)) => return Err(Error::Sql(sql)),
            (
                Err(Error::Checkpoint {
                    dir,
                    source: lockgate_core::Error::StateMismatch { operator, .. },
                }),
                None,
            ) if operator.starts_with(&format!("{}_", job.name)) => {
                return Err(Error::Config(format!(
                    "--checkpoint {}: it holds the state of another query named `{}` (its \
                     GROUP BY keys, aggregates or window differ; state `{operator}`): this \
                     query cannot continue it. Use a new --checkpoint directory, or restore \
                     the query that wrote it",
                    dir, job.name
                )))
            }
            (Err(e), None) => return Err(e),
        };
        let info = info.ok_or_else(|| Error::Config("the SQL query was not installed".into()))?;
        Ok((ctx, info))
    }

    /// The query over this job's input, on `ctx`.
    fn sql_stream(
        &self,
        ctx: &StreamingContext,
        job: &SqlJob,
        statics: &[(String, SchemaRef, Vec<RecordBatch>)],
    ) -> lockgate_sql::Result<SqlStream> {
        self.sql_context(ctx, job, statics)?
            .sql_named(&job.query, &job.name)
    }

    /// A SQL context on `ctx` with this job's input registered as its stream table
    /// (`kafka` when `job`'s query names it and the input is Kafka, else `lines`), the
    /// static tables, and `job`'s watermark and output mode; more queries may run on it.
    pub fn sql_context(
        &self,
        ctx: &StreamingContext,
        job: &SqlJob,
        statics: &[(String, SchemaRef, Vec<RecordBatch>)],
    ) -> lockgate_sql::Result<SqlContext> {
        let mut sql = SqlContext::with_dialect(job.dialect);
        for (name, schema, batches) in statics {
            sql.register_batches(name, schema.clone(), batches.clone())?;
        }
        if let Some((col, delay)) = &job.watermark {
            sql.with_watermark(col, *delay);
        }
        sql.output_mode(job.mode);
        // A query that does not parse reads no table: sql_named reports its error.
        let wants_kafka_table = lockgate_sql::tables_read(&job.query)
            .is_ok_and(|tables| tables.iter().any(|t| t == "kafka"));
        match (&self.input, &job.decoder) {
            (Input::Kafka { config, options }, decoder)
                if wants_kafka_table || decoder.is_some() =>
            {
                let mut config = config.clone();
                config
                    .group
                    .get_or_insert_with(|| format!("lockgate-{}", ctx.app_name()));
                let counters = ctx.metrics().source(&ctx.next_source_name("kafka"));
                let records = lockgate_kafka::kafka_records(ctx, config, options.clone())
                    .map_err(|e| lockgate_sql::Error::Config(e.to_string()))?;
                let table = if wants_kafka_table { "kafka" } else { "lines" };
                match decoder {
                    Some(d) => {
                        // Each value with where it came from, under the line policy.
                        let d = d.clone().counting_in(counters.clone());
                        let values = records.map(move |r| LocatedValue {
                            text: lockgate_core::source::decode_text_line(
                                r.value.as_deref().unwrap_or_default(),
                                lockgate_core::source::DEFAULT_MAX_LINE_BYTES,
                                &counters,
                            ),
                            topic: r.topic,
                            partition: r.partition,
                            offset: r.offset,
                        });
                        sql.register_decoded_with(
                            table,
                            &values,
                            d,
                            |v| v.text.as_str(),
                            |v| {
                                Some(format!(
                                    "topic `{}` partition {} offset {}",
                                    v.topic, v.partition, v.offset
                                ))
                            },
                        )?;
                    }
                    None => {
                        let batches = records.try_map_partitions(
                            move |part: Vec<lockgate_kafka::KafkaRecord>| {
                                if part.is_empty() {
                                    return Ok(Vec::new());
                                }
                                Ok(vec![kafka_batch(&part, &counters)?])
                            },
                        );
                        sql.register_stream(table, kafka_schema(), batches)?;
                    }
                }
            }
            (Input::Dir(dir), decoder) => {
                let name = ctx.next_source_name("files");
                let chunks = ctx.text_file_chunk_stream(
                    dir,
                    FileStreamOptions {
                        chunks_per_worker: 1,
                        ..self.file_options()
                    },
                );
                match decoder {
                    Some(d) => sql.register_decoded_chunks(
                        "lines",
                        &chunks,
                        d.clone().counting_in(ctx.metrics().source(&name)),
                    )?,
                    None => sql.register_text_chunks("lines", &chunks)?,
                }
            }
            (_, decoder) => {
                let before = ctx.metrics().source_names();
                let lines: DStream<String> = self.lines(ctx)?;
                match decoder {
                    Some(d) => {
                        let d = match ctx
                            .metrics()
                            .source_names()
                            .into_iter()
                            .find(|n| !before.contains(n))
                        {
                            Some(name) => d.clone().counting_in(ctx.metrics().source(&name)),
                            None => d.clone(),
                        };
                        sql.register_decoded("lines", &lines, d)?
                    }
                    None => sql.register_lines("lines", &lines)?,
                }
            }
        }
        Ok(sql)
    }
}

/// What a SQL job's query looks like, for the CLI.
#[derive(Clone, Debug)]
pub struct SqlInfo {
    /// The output columns.
    pub columns: Vec<String>,
    /// Warnings about the query (state without bound).
    pub warnings: Vec<String>,
    /// How many values did not decode (with `--format`).
    pub skipped: Option<Arc<std::sync::atomic::AtomicU64>>,
}

fn key_indexes(q: &SqlStream) -> Vec<usize> {
    q.key_columns()
        .iter()
        .filter_map(|k| q.columns().iter().position(|c| c == k))
        .collect()
}

/// The database table of a query's output: its columns, keyed by the group keys in
/// update mode (upserts); plain inserts otherwise.
fn sql_table(name: &str, q: &SqlStream) -> lockgate_sql_sinks::Result<(Table, WriteMode)> {
    let columns: Vec<(&str, SqlType)> = q
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Boolean => SqlType::BigInt,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => SqlType::Double,
                _ => SqlType::Text,
            };
            (f.name().as_str(), t)
        })
        .collect();
    let keys: Vec<&str> = q.key_columns().iter().map(String::as_str).collect();
    let mode = if q.is_stateful() && !keys.is_empty() {
        WriteMode::Upsert
    } else {
        WriteMode::Insert
    };
    Ok((
        Table::new(
            name,
            &columns,
            if mode == WriteMode::Upsert {
                &keys
            } else {
                &[]
            },
        ),
        mode,
    ))
}

fn sql_value(v: &ScalarValue) -> SqlValue {
    use ScalarValue as S;
    if v.is_null() {
        return SqlValue::Null;
    }
    match v {
        S::Boolean(Some(b)) => SqlValue::Int(i64::from(*b)),
        S::Int8(Some(x)) => SqlValue::Int(i64::from(*x)),
        S::Int16(Some(x)) => SqlValue::Int(i64::from(*x)),
        S::Int32(Some(x)) => SqlValue::Int(i64::from(*x)),
        S::Int64(Some(x)) => SqlValue::Int(*x),
        S::UInt8(Some(x)) => SqlValue::Int(i64::from(*x)),
        S::UInt16(Some(x)) => SqlValue::Int(i64::from(*x)),
        S::UInt32(Some(x)) => SqlValue::Int(i64::from(*x)),
        S::UInt64(Some(x)) => SqlValue::Int(i64::try_from(*x).unwrap_or(i64::MAX)),
        S::Float32(Some(x)) => SqlValue::Float(f64::from(*x)),
        S::Float64(Some(x)) => SqlValue::Float(*x),
        other => match other.to_array() {
            Ok(a) => match lockgate_sql::to_json(&a, 0) {
                serde_json::Value::String(s) => SqlValue::Text(s),
                j => SqlValue::Text(j.to_string()),
            },
            Err(_) => SqlValue::Text(other.to_string()),
        },
    }
}

/// Reads the static tables (for [`JobConfig::sql_context`]): CSV and Parquet files, PostgreSQL tables
/// (`postgres://USER@HOST:PORT/DB#TABLE`), once, at start.
pub fn load_static_tables(
    tables: &[(String, String)],
) -> Result<Vec<(String, SchemaRef, Vec<RecordBatch>)>> {
    let mut out = Vec::new();
    for (name, source) in tables {
        let bad = |why: String| Error::Config(format!("--table {name}={source}: {why}"));
        let (schema, batches) =
            if source.starts_with("postgres://") || source.starts_with("postgresql://") {
                crate::static_pg::read_table(source).map_err(bad)?
            } else {
                let path = PathBuf::from(source);
                let reader = lockgate_sql::StaticReader::new();
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                match ext.as_str() {
                    "csv" => reader.csv(&path),
                    "parquet" => reader.parquet(&path),
                    other => {
                        return Err(bad(format!(
                            "`.{other}`: give a .csv or .parquet file, or postgres://...#TABLE"
                        )))
                    }
                }
                .map_err(|e| bad(e.to_string()))?
            };
        out.push((name.clone(), schema, batches));
    }
    Ok(out)
}
