//! The built-in jobs of the `lockgate` CLI (`log-errors`, `word-count`) as a library:
//! their inputs (a directory, a socket, a Kafka topic), graphs and outputs (JSON lines per
//! batch, SQLite or PostgreSQL). The CLI parses flags into a [`JobConfig`] and calls
//! [`JobConfig::build`]; a program can do the same to embed a job, or reuse its parts
//! ([`log_errors`], [`word_count`], [`words::count_words`]).

#![deny(missing_docs)]

mod error;
pub mod sample;
pub mod scale_out;
pub mod sql;
mod stages;
mod static_pg;
pub mod words;

pub use error::{Error, Result};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lockgate_core::source::direct::DirectStreamOptions;
use lockgate_core::storage::CheckpointLocation;
use lockgate_core::{
    CompactString, DStream, DeliveryMode, FileStreamOptions, JsonLinesSink, State, StateSpec,
    StreamingContext, StreamingContextBuilder, Time, Trigger, WindowSpec,
};
use lockgate_kafka::{KafkaOutRecord, KafkaSink, KafkaSinkConfig};
use lockgate_sql_sinks::{Backend, SqlSink, SqlType, SqlValue, Table, WriteMode};
use serde_json::json;

/// A function called with a job's context before recovery (see
/// [`JobConfig::before_recovery`]).
#[derive(Clone)]
pub struct BeforeRecovery(pub Arc<dyn Fn(&StreamingContext) + Send + Sync>);

impl std::fmt::Debug for BeforeRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeRecovery(..)")
    }
}

/// Where a job reads its lines.
#[derive(Clone, Debug)]
pub enum Input {
    /// A TCP server sending lines.
    Socket {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A directory of files.
    Dir(PathBuf),
    /// A Kafka topic, read as a direct stream (offset ranges per batch).
    Kafka {
        /// Brokers and topic.
        config: lockgate_kafka::KafkaConfig,
        /// Limits, starting offsets, what to do when offsets expired.
        options: DirectStreamOptions,
    },
}

impl Input {
    /// Parses `HOST:PORT`.
    pub fn socket(spec: &str) -> Result<Input> {
        let (host, port) = spec.rsplit_once(':').ok_or_else(|| {
            Error::Config(format!(
                "--socket `{spec}`: expected HOST:PORT, e.g. localhost:9999"
            ))
        })?;
        let port: u16 = port.parse().map_err(|e| {
            Error::Config(format!(
                "--socket `{spec}`: `{port}` is not a port number ({e})"
            ))
        })?;
        Ok(Input::Socket {
            host: host.to_string(),
            port,
        })
    }
}

/// Everything a built-in job is configured with.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// The input.
    pub input: Input,
    /// The batch interval.
    pub batch_interval: Duration,
    /// Window length (log-errors).
    pub window: Duration,
    /// Window slide (log-errors).
    pub slide: Duration,
    /// Where JSON-lines output goes, if anywhere.
    pub output: Option<PathBuf>,
    /// Process the files present at start, then stop.
    pub once: bool,
    /// The most files per batch.
    pub max_files_per_batch: Option<usize>,
    /// Worker threads (default: cores).
    pub parallelism: Option<usize>,
    /// Worker threads shared with other contexts (a scale-out instance's tasks share
    /// `parallelism` threads); `None`: the context starts its own.
    pub worker_pool: Option<lockgate_core::WorkerPool>,
    /// Print each batch's first elements to stdout.
    pub print: bool,
    /// Checkpoint location (recovery on restart): a directory, or an object store
    /// opened by `lockgate_object_store::open`.
    pub checkpoint: Option<CheckpointLocation>,
    /// Wait as a standby while another process owns the checkpoint, then take over.
    pub standby: bool,
    /// What recovery does with operator state the code no longer matches.
    pub state_upgrade: lockgate_core::StateUpgrade,
    /// Called with the context built, before recovery takes the checkpoint (where the
    /// CLI starts its UI, so that a waiting standby shows itself).
    pub before_recovery: Option<BeforeRecovery>,
    /// Receivers' WAL block interval.
    pub block_interval: Duration,
    /// A transactional sink: `sqlite:PATH`, `postgres://...` or
    /// `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`.
    pub sink: Option<String>,
    /// librdkafka producer properties of a Kafka sink.
    pub kafka_sink_properties: Vec<(String, String)>,
    /// Resume from the sink's offsets when the checkpoint has no commit.
    pub from_sink_offsets: bool,
    /// Backpressure on receivers.
    pub backpressure: bool,
    /// Delivery guarantee (with a checkpoint).
    pub delivery: DeliveryMode,
    /// log-errors: count per event-time window (the timestamp at the start of each
    /// line) instead of per processing-time window.
    pub event_time: bool,
    /// A file is taken once it has been still this long (see
    /// [`FileStreamOptions::min_age`](lockgate_core::FileStreamOptions::min_age)).
    pub file_min_age: Duration,
    /// How long a source retries passing read errors before the job fails.
    pub source_retry_timeout: Duration,
    /// How long a database sink retries a batch through an outage before the job fails.
    pub sink_retry_timeout: Duration,
    /// The scale-out task this configuration runs (set by [`scale_out`]; `None`: the
    /// whole job in one process): outputs per task, no lag commits to the group.
    pub task: Option<String>,
}

impl JobConfig {
    /// A job reading `input` with the CLI's defaults: 10 s batches, a 30 s window
    /// sliding by 10 s, no output, no checkpoint, exactly once, printing nothing,
    /// 200 ms receiver blocks, 2 minutes of source and sink retries; set the fields to
    /// change them.
    ///
    /// ```
    /// use lockgate_jobs::{Input, Job, JobConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// lockgate_jobs::sample::generate_logs(&dir.path().join("in"), 1000, 2, 7)?;
    /// let mut job = JobConfig::new(Input::Dir(dir.path().join("in")));
    /// job.once = true; // read the files there are, then stop
    /// job.event_time = true;
    /// job.output = Some(dir.path().join("out"));
    /// let ctx = job.build(Job::LogErrors)?;
    /// ctx.start()?;
    /// ctx.await_termination()?;
    /// let windows = lockgate_core::sink::read_json_lines(&dir.path().join("out/tumbling_30s"))?;
    /// assert!(!windows.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(input: Input) -> Self {
        JobConfig {
            input,
            batch_interval: Duration::from_secs(10),
            window: Duration::from_secs(30),
            slide: Duration::from_secs(10),
            output: None,
            once: false,
            max_files_per_batch: None,
            parallelism: None,
            worker_pool: None,
            print: false,
            checkpoint: None,
            state_upgrade: lockgate_core::StateUpgrade::Fail,
            standby: false,
            before_recovery: None,
            block_interval: Duration::from_millis(200),
            sink: None,
            kafka_sink_properties: Vec::new(),
            from_sink_offsets: false,
            backpressure: false,
            delivery: DeliveryMode::ExactlyOnce,
            event_time: false,
            file_min_age: lockgate_core::source::files::DEFAULT_MIN_AGE,
            source_retry_timeout: Duration::from_secs(120),
            sink_retry_timeout: Duration::from_secs(120),
            task: None,
        }
    }
}

/// The built-in jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// `log-errors`.
    LogErrors,
    /// `word-count`.
    WordCount,
}

impl Job {
    /// The job's (and application's) name.
    pub fn name(self) -> &'static str {
        match self {
            Job::LogErrors => "log-errors",
            Job::WordCount => "word-count",
        }
    }
}

impl JobConfig {
    /// Checks flag combinations that the engine cannot check itself.
    pub fn validate(&self, job: Job) -> Result<()> {
        if self.event_time && job != Job::LogErrors {
            return Err(Error::Config(format!(
                "--event-time applies to log-errors only ({} has no timestamps to read)",
                job.name()
            )));
        }
        if self.once && matches!(self.input, Input::Socket { .. }) {
            return Err(Error::Config(
                "--once needs a bounded input: use --input DIR or a Kafka topic (a socket \
                 never ends)"
                    .into(),
            ));
        }
        if self.max_files_per_batch == Some(0) {
            return Err(Error::Config(
                "--max-files-per-batch must be at least 1".into(),
            ));
        }
        if job == Job::LogErrors && !self.event_time {
            // Processing-time windows are made of whole batches.
            let ms = |d: Duration| d.as_millis();
            let (w, sl, b) = (
                ms(self.window),
                ms(self.slide),
                ms(self.batch_interval).max(1),
            );
            if w == 0 || sl == 0 || w % b != 0 || sl % b != 0 {
                let show = |d: Duration| match ms(d) {
                    n if n % 1000 == 0 => format!("{}s", n / 1000),
                    n => format!("{n}ms"),
                };
                return Err(Error::Config(format!(
                    "--window {} and --slide {} must be positive multiples of \
                     --batch-interval {} (log-errors counts errors per window of whole \
                     batches); e.g. --window {} --slide {}, or --event-time for windows of \
                     the lines' own timestamps",
                    show(self.window),
                    show(self.slide),
                    show(self.batch_interval),
                    show(self.batch_interval * 3),
                    show(self.batch_interval),
                )));
            }
        }
        if self.max_files_per_batch.is_some() && !matches!(self.input, Input::Dir(_)) {
            return Err(Error::Config(
                "--max-files-per-batch applies to --input only (with Kafka, use \
                 --max-records-per-partition)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Applies the settings to a builder.
    pub fn configure(&self, app: &str, b: StreamingContextBuilder) -> StreamingContextBuilder {
        let mut b = b
            .app_name(app)
            .batch_interval(self.batch_interval)
            .block_interval(self.block_interval)
            .backpressure(self.backpressure);
        if let Some(p) = self.parallelism {
            b = b.parallelism(p);
        }
        if let Some(pool) = &self.worker_pool {
            b = b.worker_pool(pool.clone());
        }
        if self.once {
            // Batch times count from the epoch: the same input gives the same output.
            b = b.trigger(Trigger::AvailableNow).start_time(Time(0));
        }
        if self.checkpoint.is_some() {
            b = b
                .delivery(self.delivery)
                .standby(self.standby)
                .state_upgrade(self.state_upgrade);
        }
        let sink = self.sink.as_deref().map(lockgate_sql_sinks::redact_url);
        let output = self.output.as_ref().map(|o| o.display().to_string());
        b.setting("sink", sink.as_deref().unwrap_or("none"))
            .setting("output", output.as_deref().unwrap_or("none"))
    }

    /// Builds the context of `job` with its whole graph; with a checkpoint directory,
    /// recovers from it.
    pub fn build(&self, job: Job) -> Result<StreamingContext> {
        self.build_graph(job, true, &|cfg, ctx, json| {
            Ok(match job {
                Job::LogErrors => Rows::Windows(log_errors(cfg, ctx, json)?.rows),
                Job::WordCount => Rows::Words(word_count(cfg, ctx, json)?),
            })
        })
    }

    /// Builds the context of `job` with the graph `graph` puts in (given the outputs
    /// when `outputs`: `--output`, a Kafka or database sink, which get the rows it
    /// returns); with a checkpoint, recovered from it.
    pub(crate) fn build_graph(
        &self,
        job: Job,
        outputs: bool,
        graph: &Graph<'_>,
    ) -> Result<StreamingContext> {
        self.validate(job)?;
        let kafka = match self.sink.as_deref() {
            Some(url) if outputs && url.starts_with("kafka:") => Some(self.kafka_sink(url)?),
            _ => None,
        };
        if kafka.is_some() && self.from_sink_offsets {
            return Err(Error::Config(
                "--from-sink-offsets needs a database sink: a Kafka sink records only its \
                 last batch id, not what the batches read; use --checkpoint"
                    .into(),
            ));
        }
        // Connect first: an unreachable database is reported before anything runs.
        let mut backend = match (&self.sink, &kafka) {
            (Some(url), None) if outputs => Some(lockgate_sql_sinks::open_url(url)?),
            _ => None,
        };
        let offsets = match (&mut backend, self.from_sink_offsets) {
            (Some(b), true) => {
                let sink = match job {
                    Job::LogErrors => "window_counts",
                    Job::WordCount => "word_counts",
                };
                lockgate_sql_sinks::offsets_of(b.committed(job.name(), sink, "")?)?
            }
            (None, true) => return Err(Error::Config("--from-sink-offsets needs --sink".into())),
            _ => None,
        };
        let mut install = |ctx: &StreamingContext| -> lockgate_core::Result<()> {
            let json = self.json_output(job.name(), kafka.as_ref());
            let json = (outputs && json.is_some()).then_some(json);
            let rows = graph(self, ctx, json.as_ref())?;
            if let Some(b) = backend.take() {
                self.write_rows(rows, b)?;
            }
            Ok(())
        };
        let offsets = &offsets;
        self.build_context(
            job.name(),
            |b| b.from_sink_offsets(offsets.clone()),
            &mut install,
        )
    }

    /// Writes a job's rows to its database (as this configuration's task, if any).
    fn write_rows(
        &self,
        rows: Rows,
        backend: Box<dyn lockgate_sql_sinks::Backend>,
    ) -> lockgate_core::Result<()> {
        let task = self.task.as_deref().unwrap_or_default();
        match rows {
            Rows::Windows(rows) => {
                let sink = SqlSink::new(
                    "window_counts",
                    backend,
                    window_counts_table(),
                    WriteMode::Upsert,
                    |(stream, start, end, count): &WindowRow| {
                        vec![
                            SqlValue::Text((*stream).into()),
                            SqlValue::Int(*start),
                            SqlValue::Int(*end),
                            SqlValue::Int(*count),
                        ]
                    },
                )
                .map_err(sink_err)?
                .retry_timeout(self.sink_retry_timeout)
                .for_task(task);
                rows.write_to(sink);
            }
            Rows::Words(words) => {
                let sink = SqlSink::new(
                    "word_counts",
                    backend,
                    word_counts_table(),
                    WriteMode::Upsert,
                    |(w, c): &(CompactString, i64)| {
                        vec![SqlValue::Text(w.to_string()), SqlValue::Int(*c)]
                    },
                )
                .map_err(sink_err)?
                .retry_timeout(self.sink_retry_timeout)
                .for_task(task);
                words.write_to(sink);
            }
            Rows::None => {}
        }
        Ok(())
    }

    /// The context of application `app` (`more` adds to its builder) with its graph
    /// put in by `install`; with a checkpoint directory, recovered from it.
    fn build_context(
        &self,
        app: &str,
        more: impl Fn(StreamingContextBuilder) -> StreamingContextBuilder,
        install: &mut dyn FnMut(&StreamingContext) -> lockgate_core::Result<()>,
    ) -> Result<StreamingContext> {
        match &self.checkpoint {
            Some(location) => StreamingContext::get_or_create_with(
                location.clone(),
                |b| {
                    let ctx = more(self.configure(app, b)).build()?;
                    install(&ctx)?;
                    Ok(ctx)
                },
                |ctx| {
                    if let Some(hook) = &self.before_recovery {
                        (hook.0)(ctx);
                    }
                },
            )
            .map_err(|source| Error::Checkpoint {
                dir: location.0.location().to_string(),
                source,
            }),
            None => {
                let ctx = more(self.configure(app, StreamingContext::builder())).build()?;
                install(&ctx)?;
                Ok(ctx)
            }
        }
    }

    /// Where the job's JSON rows go: `--output`'s directory and/or a Kafka sink (as
    /// application `app`).
    fn json_output(&self, app: &str, kafka: Option<&KafkaSinkConfig>) -> JsonOutput {
        let mut json = self
            .output
            .as_deref()
            .map(JsonOutput::new)
            .unwrap_or_default();
        if let Some(task) = &self.task {
            json = json.for_task(task);
        }
        match kafka {
            Some(config) => json.with_kafka(app, config.clone()),
            None => json,
        }
    }

    /// The Kafka sink of `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`: one transaction per
    /// batch with a checkpoint in exactly-once mode, else the idempotent producer.
    fn kafka_sink(&self, url: &str) -> Result<KafkaSinkConfig> {
        let bad = |why: &str| {
            Error::Config(format!(
                "--sink {url}: {why}; write kafka://HOST:PORT[,HOST:PORT...]/TOPIC"
            ))
        };
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("not a kafka:// address"))?;
        let (brokers, topic) = rest
            .split_once('/')
            .ok_or_else(|| bad("no topic after the brokers"))?;
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
            return Err(bad("every broker needs HOST:PORT"));
        }
        if topic.is_empty() || topic.contains('/') {
            return Err(bad("the topic is one name after the brokers"));
        }
        let mut config = KafkaSinkConfig::new(brokers, topic);
        config.transactional =
            self.checkpoint.is_some() && self.delivery == DeliveryMode::ExactlyOnce;
        config.properties = self.kafka_sink_properties.clone();
        config.retry_timeout = self.sink_retry_timeout;
        config.timeout = kafka_call_timeout(self.sink_retry_timeout);
        Ok(config)
    }

    /// The stream of input lines (a Kafka record's value is a line).
    pub fn lines(&self, ctx: &StreamingContext) -> lockgate_core::Result<DStream<String>> {
        Ok(match &self.input {
            Input::Socket { host, port } => ctx.socket_text_stream(host, *port).stream(),
            Input::Dir(dir) => ctx.text_file_stream_with(dir, self.file_options()),
            Input::Kafka { config, options } => {
                let mut config = config.clone();
                if self.task.is_some() {
                    // The group is the instances' own: its members commit, tasks not.
                    config.group = None;
                } else {
                    // Offsets of completed batches go to this group, for lag monitors.
                    config
                        .group
                        .get_or_insert_with(|| format!("lockgate-{}", ctx.app_name()));
                }
                lockgate_kafka::kafka_lines(ctx, config, options.clone())?
            }
        })
    }

    fn file_options(&self) -> FileStreamOptions {
        FileStreamOptions {
            max_files_per_batch: self.max_files_per_batch,
            // The CLI processes what is already there too (Spark would not).
            new_files_only: false,
            min_age: self.file_min_age,
            retry_timeout: self.source_retry_timeout,
            ..Default::default()
        }
    }

    /// The lines containing `ERROR`, mapped by `f`. Files are read as chunks and only
    /// the matching lines are looked at (no allocation per line); socket and Kafka lines
    /// are filtered one by one.
    fn error_lines<U: lockgate_core::Data>(
        &self,
        ctx: &StreamingContext,
        f: fn(&[u8]) -> U,
    ) -> lockgate_core::Result<DStream<U>> {
        Ok(match &self.input {
            Input::Dir(dir) => ctx
                .text_file_chunk_stream(dir, self.file_options())
                .flat_map(move |chunk| chunk.lines_containing(b"ERROR").map(f).collect::<Vec<_>>()),
            Input::Socket { .. } | Input::Kafka { .. } => {
                let finder = memchr::memmem::Finder::new("ERROR").into_owned();
                self.lines(ctx)?
                    .flat_map(move |l| finder.find(l.as_bytes()).map(|_| f(l.as_bytes())))
            }
        })
    }
}

/// The rows a job's database sink writes.
pub(crate) enum Rows {
    /// log-errors' windowed counts (table `window_counts`).
    Windows(DStream<WindowRow>),
    /// word-count's changed counts (table `word_counts`).
    Words(DStream<(CompactString, i64)>),
    /// Nothing for a database (a scale-out job's first stage).
    None,
}

/// Puts a job's graph into a context, writing its streams to the given JSON outputs;
/// returns the rows for a database sink.
pub(crate) type Graph<'a> =
    dyn Fn(&JobConfig, &StreamingContext, Option<&JsonOutput>) -> lockgate_core::Result<Rows> + 'a;

/// A SQL sink's error in the engine's terms: a bad setting is the job's configuration
/// error; a database error is kept whole as the source.
fn sink_err(e: lockgate_sql_sinks::Error) -> lockgate_core::Error {
    match e {
        lockgate_sql_sinks::Error::Config(_) => lockgate_core::Error::Config(e.to_string()),
        other => lockgate_core::Error::external("SQL sink", other),
    }
}

/// `window_counts(stream, start, "end", count)`: windowed counts by stream and window
/// start (epoch seconds for event-time windows, batch-time milliseconds for the
/// processing-time counts of `error_window_counts`).
pub fn window_counts_table() -> Table {
    Table::new(
        "window_counts",
        &[
            ("stream", SqlType::Text),
            ("start", SqlType::BigInt),
            ("end", SqlType::BigInt),
            ("count", SqlType::BigInt),
        ],
        &["stream", "start"],
    )
}

/// `word_counts(word PRIMARY KEY, count)`.
pub fn word_counts_table() -> Table {
    Table::new(
        "word_counts",
        &[("word", SqlType::Text), ("count", SqlType::BigInt)],
        &["word"],
    )
}

/// Where the built-in jobs write their output streams, each row a JSON object: JSON
/// lines under a directory (`DIR/<stream>/batch=<batch id>/part-<n>.jsonl`, each batch
/// directory written atomically; a replayed batch is replaced), and/or a Kafka topic
/// (the same object plus a field `"stream"` naming its stream, keyed by the row's key;
/// one [`KafkaSink`] per stream).
#[derive(Clone, Default)]
pub struct JsonOutput {
    dir: Option<Arc<PathBuf>>,
    kafka: Option<Arc<(String, KafkaSinkConfig)>>,
    /// The scale-out task writing: `DIR/<stream>/task=<task>/...`, and the Kafka
    /// sink's transactional id per task.
    task: Option<Arc<str>>,
}

impl JsonOutput {
    /// Output under `dir`.
    pub fn new(dir: &Path) -> Self {
        JsonOutput {
            dir: Some(Arc::new(dir.to_path_buf())),
            kafka: None,
            task: None,
        }
    }

    /// Also (or only) to Kafka, as application `app` (named in the sinks'
    /// transactional ids and consumer groups).
    pub fn with_kafka(mut self, app: &str, config: KafkaSinkConfig) -> Self {
        self.kafka = Some(Arc::new((app.to_string(), config)));
        self
    }

    /// Written by scale-out task `task`: under `DIR/<stream>/task=<task>/`, and to
    /// Kafka with the task's own transactional id (`lockgate-<app>-<stream>-<task>`).
    pub fn for_task(mut self, task: &str) -> Self {
        self.task = Some(task.into());
        self
    }

    /// True when the output goes somewhere.
    pub fn is_some(&self) -> bool {
        self.dir.is_some() || self.kafka.is_some()
    }

    /// Writes every batch of `stream` as stream `name`, one JSON object per element
    /// made by `to_json` (given the batch time); `key` gives a Kafka record's key.
    pub fn write<T: lockgate_core::Data>(
        &self,
        stream: &DStream<T>,
        name: &str,
        key: impl Fn(&T, Time) -> Option<String> + Send + Sync + 'static,
        to_json: impl Fn(&T, Time) -> serde_json::Value + Send + Sync + 'static,
    ) -> lockgate_core::Result<()> {
        let to_json = Arc::new(to_json);
        if let Some(dir) = &self.dir {
            let f = to_json.clone();
            let dir = match &self.task {
                Some(task) => dir.join(name).join(format!("task={task}")),
                None => dir.join(name),
            };
            stream.write_to(JsonLinesSink::new(dir, move |e, t| f(e, t)));
        }
        if let Some(kafka) = &self.kafka {
            let (app, config) = &**kafka;
            let config = KafkaSinkConfig {
                task: self.task.as_deref().map(str::to_string),
                ..config.clone()
            };
            let stream_name = serde_json::Value::from(name);
            let sink = KafkaSink::new(name, app, config, move |e: &T, t| {
                let mut value = to_json(e, t);
                if let serde_json::Value::Object(fields) = &mut value {
                    fields.insert("stream".into(), stream_name.clone());
                }
                KafkaOutRecord {
                    key: key(e, t).map(String::into_bytes),
                    // Serializing a Value cannot fail.
                    value: serde_json::to_vec(&value).unwrap_or_default(),
                    ..Default::default()
                }
            })
            .map_err(|e| match e {
                lockgate_kafka::Error::Config(m) => {
                    lockgate_core::Error::Config(format!("Kafka sink: {m}"))
                }
                other => lockgate_core::Error::external("Kafka sink", other),
            })?;
            stream.write_to(sink);
        }
        Ok(())
    }
}

/// A row of windowed counts: (stream, window start, window end, count). Event-time
/// windows are in epoch seconds; the processing-time `error_window_counts` in batch-time
/// milliseconds.
pub type WindowRow = (&'static str, i64, i64, i64);

/// The streams of the log-errors job.
pub struct LogErrors {
    /// Lines containing `ERROR` (processing-time mode only).
    pub errors: Option<DStream<String>>,
    /// The windowed counts, as rows for a database sink.
    pub rows: DStream<WindowRow>,
}

/// The event-time windows of `log-errors --event-time`: (stream name, spec).
pub const EVENT_WINDOWS: [(&str, u64, u64); 2] =
    [("tumbling_30s", 30, 30), ("sliding_30s_10s", 30, 10)];

/// How far event time may go back before a line is late.
pub const EVENT_WATERMARK: Duration = Duration::from_secs(10);

/// Spark Streaming's classic log processor: keep the lines containing `ERROR`, count
/// them over a sliding processing-time window; or, with `event_time`, count them per
/// event-time window (the timestamp that starts each line) with a watermark.
pub fn log_errors(
    cfg: &JobConfig,
    ctx: &StreamingContext,
    out: Option<&JsonOutput>,
) -> lockgate_core::Result<LogErrors> {
    if cfg.event_time {
        return log_errors_event_time(cfg, ctx, out);
    }
    let errors = cfg
        .error_lines(ctx, |l| String::from_utf8_lossy(l).into_owned())?
        .name("errors");
    let window_counts = errors
        .count_by_window(cfg.window, cfg.slide)
        .name("error_window_counts");
    if cfg.print {
        errors.print();
        window_counts.print();
    }
    let window_ms = i64::try_from(cfg.window.as_millis()).unwrap_or(i64::MAX);
    if let Some(out) = out {
        out.write(&errors, "errors", |_, _| None, |l, _| json!({ "line": l }))?;
        out.write(
            &window_counts,
            "error_window_counts",
            // The window's start, in batch-time milliseconds.
            move |_, t| Some((t.millis() - window_ms).to_string()),
            |c, t| json!({ "batch_time_ms": t.millis(), "count": c }),
        )?;
    }
    let rows = window_counts.transform(move |b, t| {
        b.map(move |c| ("error_window_counts", t.millis() - window_ms, t.millis(), c))
    });
    Ok(LogErrors {
        errors: Some(errors),
        rows,
    })
}

fn log_errors_event_time(
    cfg: &JobConfig,
    ctx: &StreamingContext,
    out: Option<&JsonOutput>,
) -> lockgate_core::Result<LogErrors> {
    // Seconds since the epoch of each ERROR line; None when its timestamp is malformed
    // (counted by the window operators as records without event time, and skipped).
    let times = cfg.error_lines(ctx, parse_apache_time)?.name("error_times");
    let events = times.with_watermark(|t: &Option<i64>| t.map(|s| Time(s * 1000)), EVENT_WATERMARK);
    let mut rows: Vec<DStream<WindowRow>> = Vec::new();
    for (name, size, slide) in EVENT_WINDOWS {
        let spec = if size == slide {
            WindowSpec::tumbling(Duration::from_secs(size))
        } else {
            WindowSpec::sliding(Duration::from_secs(size), Duration::from_secs(slide))
        };
        let counts = events.window(spec).count().name(name);
        if cfg.print {
            counts.print();
        }
        if let Some(out) = out {
            out.write(
                &counts,
                name,
                |w, _| Some((w.window.start.0 / 1000).to_string()),
                |w, _| {
                    json!({
                        "start": w.window.start.0 / 1000,
                        "end": w.window.end.0 / 1000,
                        "count": w.value,
                    })
                },
            )?;
        }
        rows.push(counts.map(move |w| {
            (
                name,
                w.window.start.0 / 1000,
                w.window.end.0 / 1000,
                w.value,
            )
        }));
    }
    Ok(LogErrors {
        errors: None,
        rows: ctx.union(&rows),
    })
}

/// Epoch seconds of the Apache timestamp starting `line`: `[Fri Dec 18 00:00:00 2015]`
/// (UTC; the weekday is not checked). `None` when the line does not start with one.
pub fn parse_apache_time(line: &[u8]) -> Option<i64> {
    match line.get(..26) {
        Some(fixed) => parse_fixed_apache_time(fixed).or_else(|| parse_any_apache_time(line)),
        None => parse_any_apache_time(line),
    }
}

/// The common layout, `[Www Mmm dd hh:mm:ss yyyy]` (day zero- or space-padded), read
/// at fixed positions; `None` for anything else (then parsed by the general path).
fn parse_fixed_apache_time(b: &[u8]) -> Option<i64> {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let digit = |i: usize| at(i).is_ascii_digit().then(|| u32::from(at(i) - b'0'));
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let layout = [
        (0, b'['),
        (4, b' '),
        (8, b' '),
        (11, b' '),
        (14, b':'),
        (17, b':'),
    ];
    if layout.iter().any(|&(i, c)| at(i) != c)
        || at(20) != b' '
        || at(25) != b']'
        || !b.get(1..4)?.iter().all(u8::is_ascii_alphabetic)
    {
        return None;
    }
    let (h, m, s) = (two(12)?, two(15)?, two(18)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Lines in time order share their date: the day's first second is kept per thread
    // for the last date seen (month, day and year bytes).
    let mut date = [0u8; 10];
    date[..6].copy_from_slice(b.get(5..11)?);
    date[6..].copy_from_slice(b.get(21..25)?);
    let day_start = match LAST_DATE.get() {
        (last, start) if last == date => start,
        _ => {
            let month = month_number(b.get(5..8)?)?;
            let day = if at(9) == b' ' { digit(10)? } else { two(9)? };
            let year = i64::from(two(21)? * 100 + two(23)?);
            let start = lockgate_core::epoch_seconds(year, month, day, (0, 0, 0))?;
            LAST_DATE.set((date, start));
            start
        }
    };
    Some(day_start + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}

thread_local! {
    /// The last date [`parse_fixed_apache_time`] read on this thread (`Mmm dd` and
    /// `yyyy`) and the epoch second its day starts at (zeros: none yet).
    static LAST_DATE: std::cell::Cell<([u8; 10], i64)> =
        const { std::cell::Cell::new(([0; 10], 0)) };
}

fn month_number(name: &[u8]) -> Option<u32> {
    let months: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let i = months.iter().position(|m| *m == name)?;
    u32::try_from(i + 1).ok()
}

/// Any spacing of the fields (split on whitespace), for what the fixed layout rejects.
fn parse_any_apache_time(line: &[u8]) -> Option<i64> {
    let rest = line.strip_prefix(b"[")?;
    let end = memchr::memchr(b']', &rest[..rest.len().min(40)])?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let _weekday = parts.next()?;
    let month = month_number(parts.next()?.as_bytes())?;
    let day: u32 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.splitn(3, ':');
    let mut field = || -> Option<u32> {
        let f = hms.next()?;
        if f.len() != 2 {
            return None;
        }
        f.parse().ok()
    };
    let (h, m, sec) = (field()?, field()?, field()?);
    let year: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    lockgate_core::epoch_seconds(year, month, day, (h, m, sec))
}

/// Running word count (words split on single spaces; empty strings are not words),
/// emitting each batch the words whose count changed, with their new count.
///
/// Files are read as chunks and each chunk's words are counted in place (borrowed, no
/// allocation per word) before one `(word, n)` pair per distinct word goes to
/// `reduce_by_key`; the running totals live in `map_with_state`, which touches (and
/// checkpoints) only the words of the batch.
pub fn word_count(
    cfg: &JobConfig,
    ctx: &StreamingContext,
    out: Option<&JsonOutput>,
) -> lockgate_core::Result<DStream<(CompactString, i64)>> {
    running_word_counts(cfg, word_pairs(cfg, ctx)?, out)
}

/// The `(word, 1)` pairs of the input's lines (`(word, n)` per chunk for files).
fn word_pairs(
    cfg: &JobConfig,
    ctx: &StreamingContext,
) -> lockgate_core::Result<DStream<(CompactString, i64)>> {
    Ok(match &cfg.input {
        Input::Socket { .. } | Input::Kafka { .. } => cfg.lines(ctx)?.flat_map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .map(|w| (CompactString::from(w), 1i64))
                .collect::<Vec<_>>()
        }),
        Input::Dir(dir) => ctx
            .text_file_chunk_stream(
                dir,
                FileStreamOptions {
                    // One chunk per worker: each chunk costs its distinct words.
                    chunks_per_worker: 1,
                    ..cfg.file_options()
                },
            )
            .flat_map(|chunk| words::count_words(chunk.as_bytes())),
    })
}

/// The running totals of `(word, n)` pairs: the words whose count changed in a batch,
/// with their new count, written to `out`.
fn running_word_counts(
    cfg: &JobConfig,
    pairs: DStream<(CompactString, i64)>,
    out: Option<&JsonOutput>,
) -> lockgate_core::Result<DStream<(CompactString, i64)>> {
    let changed = pairs
        .reduce_by_key(|a, b| a + b)
        .map_with_state(StateSpec::function(
            |w: &CompactString, n: Option<i64>, total: &mut State<i64>| {
                let now = total.get().copied().unwrap_or(0) + n.unwrap_or(0);
                total.update(now);
                (w.clone(), now)
            },
        ))
        .name("word_counts_state")
        .stream()
        .name("word_counts");
    if cfg.print {
        changed.print();
    }
    if let Some(out) = out {
        out.write(
            &changed,
            "word_counts",
            |(w, _), _| Some(w.to_string()),
            |(w, c), _| json!({ "word": w.as_str(), "count": c }),
        )?;
    }
    Ok(changed)
}

/// How long one call to Kafka brokers may wait, for a source or sink retried for
/// `retry_timeout`: a third of it, between 1 and 30 s, so a broker that does not answer
/// is tried a few times before the job fails.
pub fn kafka_call_timeout(retry_timeout: Duration) -> Duration {
    (retry_timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_layout_parser_agrees_with_the_general_one() {
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut lines = Vec::new();
        for t in (1_420_070_400i64..1_420_070_400 + 400 * 86_400).step_by(86_400 * 3 + 3_907) {
            let c = lockgate_core::civil_time(t);
            let (h, m, s) = c.hms;
            let month = months[c.month as usize - 1];
            lines.push(format!(
                "[Mon {month} {:02} {h:02}:{m:02}:{s:02} {}] x",
                c.day, c.year
            ));
            lines.push(format!(
                "[Mon {month} {:>2} {h:02}:{m:02}:{s:02} {}]",
                c.day, c.year
            ));
        }
        lines.extend(
            [
                "[Fri Dec 18 00:00:00 2015]",
                // The same date again (its day start is cached), with other times.
                "[Fri Dec 18 12:34:56 2015]",
                "[Fri Dec 18 00:60:00 2015]",
                "[Fri Dec 18 00:00:61 2015]",
                "[Fri Dec 18 23:59:60 2015]",
                "[Fri Dec 32 00:00:00 2015]",
                "[Fri Feb 29 00:00:00 2015]",
                "[Fri Dec 18 24:00:00 2015]",
                "[Fri Dec 1x 00:00:00 2015]",
                "[F i Dec 18 00:00:00 2015]",
                "[Fri Dec 18 00:00:00 201]]",
                "[Fri Dek 18 00:00:00 2015]",
                "(Fri Dec 18 00:00:00 2015]",
            ]
            .map(String::from),
        );
        for line in &lines {
            let b = line.as_bytes();
            if let Some(fixed) = parse_fixed_apache_time(b) {
                assert_eq!(Some(fixed), parse_any_apache_time(b), "{line}");
            }
            assert_eq!(parse_apache_time(b), parse_any_apache_time(b), "{line}");
        }
        assert_eq!(
            parse_fixed_apache_time(lines[0].as_bytes()),
            Some(1_420_070_400)
        );
    }

    #[test]
    fn apache_timestamps_parse_and_malformed_ones_do_not() {
        assert_eq!(
            parse_apache_time(b"[Fri Dec 18 00:00:00 2015] [ERROR] x"),
            Some(1_450_396_800)
        );
        assert_eq!(
            parse_apache_time(b"[Sat Dec 19 01:02:03 2015] [info]"),
            Some(1_450_396_800 + 86_400 + 3723)
        );
        // A space-padded day, as some servers write it.
        assert_eq!(
            parse_apache_time(b"[Tue Dec  1 00:00:00 2015]"),
            Some(1_448_928_000)
        );
        for bad in [
            &b""[..],
            b"no timestamp ERROR",
            b"[Fri Dec 18 00:00:00 2015",
            b"[Fri Foo 18 00:00:00 2015]",
            b"[Fri Dec 32 00:00:00 2015]",
            b"[Fri Dec 18 25:00:00 2015]",
            b"[Fri Dec 18 0:0:0 2015]",
            b"[Fri Dec 18 00:00:00 2015 extra]",
            b"[Fri Dec 18 00:00:00 x]",
            b"[\xff\xfe]",
        ] {
            assert_eq!(
                parse_apache_time(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
