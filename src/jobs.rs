//! The built-in jobs (`log-errors`, `word-count`): their inputs, graphs and outputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lockgate_core::dstream::output::write_batch_dir;
use lockgate_core::{
    Batch, DStream, DeliveryMode, FileStreamOptions, StreamingContext, StreamingContextBuilder,
    Time, Trigger,
};
use lockgate_sql_sinks::{Backend, SqlSink, SqlType, SqlValue, Table, WriteMode};
use rayon::prelude::*;
use serde_json::json;

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
}

impl Input {
    /// Parses `HOST:PORT`.
    pub fn socket(spec: &str) -> Result<Input> {
        let (host, port) = spec.rsplit_once(':').with_context(|| {
            format!("--socket `{spec}`: expected HOST:PORT, e.g. localhost:9999")
        })?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("--socket `{spec}`: `{port}` is not a port number"))?;
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
    /// Print each batch's first elements to stdout.
    pub print: bool,
    /// Checkpoint directory (recovery on restart).
    pub checkpoint: Option<PathBuf>,
    /// Receivers' WAL block interval.
    pub block_interval: Duration,
    /// A transactional sink: `sqlite:PATH` or `postgres://...`.
    pub sink: Option<String>,
    /// Resume from the sink's offsets when the checkpoint has no commit.
    pub from_sink_offsets: bool,
    /// Backpressure on receivers.
    pub backpressure: bool,
    /// Delivery guarantee (with a checkpoint).
    pub delivery: DeliveryMode,
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
    pub fn validate(&self) -> Result<()> {
        if self.once && !matches!(self.input, Input::Dir(_)) {
            bail!("--once needs a bounded input: use --input DIR (a socket never ends)");
        }
        if self.max_files_per_batch == Some(0) {
            bail!("--max-files-per-batch must be at least 1");
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
        if self.once {
            // Batch times count from the epoch: the same input gives the same output.
            b = b.trigger(Trigger::AvailableNow).start_time(Time(0));
        }
        if self.checkpoint.is_some() {
            b = b.delivery(self.delivery);
        }
        let sink = self.sink.as_deref().map(lockgate_sql_sinks::redact_url);
        let output = self.output.as_ref().map(|o| o.display().to_string());
        b.setting("sink", sink.as_deref().unwrap_or("none"))
            .setting("output", output.as_deref().unwrap_or("none"))
    }

    /// Builds the context of `job` with its whole graph; with a checkpoint directory,
    /// recovers from it.
    pub fn build(&self, job: Job) -> Result<StreamingContext> {
        self.validate()?;
        // Connect first: an unreachable database is reported before anything runs.
        let mut backend = match &self.sink {
            Some(url) => Some(lockgate_sql_sinks::open_url(url)?),
            None => None,
        };
        let offsets = match (&mut backend, self.from_sink_offsets) {
            (Some(b), true) => {
                let sink = match job {
                    Job::LogErrors => "window_counts",
                    Job::WordCount => "word_counts",
                };
                lockgate_sql_sinks::offsets_of(b.committed(job.name(), sink)?)?
            }
            (None, true) => bail!("--from-sink-offsets needs --sink"),
            _ => None,
        };
        let mut install = |ctx: &StreamingContext| -> lockgate_core::Result<()> {
            let lines = self.lines(ctx);
            let json = self.output.as_deref().map(JsonOutput::new);
            match job {
                Job::LogErrors => {
                    let streams = log_errors(self, &lines, json.as_ref());
                    if let Some(b) = backend.take() {
                        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
                        let sink = SqlSink::new(
                            "window_counts",
                            b,
                            window_counts_table(),
                            WriteMode::Upsert,
                            move |(t, c): &(i64, i64)| {
                                vec![
                                    SqlValue::Text("error_window_counts".into()),
                                    SqlValue::Int(t - window_ms),
                                    SqlValue::Int(*t),
                                    SqlValue::Int(*c),
                                ]
                            },
                        )
                        .map_err(sink_err)?;
                        streams
                            .window_counts
                            .transform(|b, t| b.map(move |c| (t.millis(), c)))
                            .write_to(sink);
                    }
                }
                Job::WordCount => {
                    let changed = word_count(self, &lines, json.as_ref());
                    if let Some(b) = backend.take() {
                        let sink = SqlSink::new(
                            "word_counts",
                            b,
                            word_counts_table(),
                            WriteMode::Upsert,
                            |(w, c): &(String, i64)| {
                                vec![SqlValue::Text(w.clone()), SqlValue::Int(*c)]
                            },
                        )
                        .map_err(sink_err)?;
                        changed.write_to(sink);
                    }
                }
            }
            Ok(())
        };
        let ctx = match &self.checkpoint {
            Some(dir) => StreamingContext::get_or_create(dir, |b| {
                let ctx = self
                    .configure(job.name(), b)
                    .from_sink_offsets(offsets.clone())
                    .build()?;
                install(&ctx)?;
                Ok(ctx)
            })
            .with_context(|| format!("opening checkpoint {}", dir.display()))?,
            None => {
                let ctx = self
                    .configure(job.name(), StreamingContext::builder())
                    .from_sink_offsets(offsets.clone())
                    .build()?;
                install(&ctx)?;
                ctx
            }
        };
        Ok(ctx)
    }

    /// The stream of input lines.
    pub fn lines(&self, ctx: &StreamingContext) -> DStream<String> {
        match &self.input {
            Input::Socket { host, port } => ctx.socket_text_stream(host, *port).stream(),
            Input::Dir(dir) => ctx.text_file_stream_with(
                dir,
                FileStreamOptions {
                    max_files_per_batch: self.max_files_per_batch,
                    // The CLI processes what is already there too (Spark would not).
                    new_files_only: false,
                    ..Default::default()
                },
            ),
        }
    }
}

fn sink_err(e: lockgate_sql_sinks::Error) -> lockgate_core::Error {
    lockgate_core::Error::Config(e.to_string())
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

/// Writes output streams as JSON lines: `DIR/<stream>/batch=<batch id>/part-<n>.jsonl`,
/// each batch directory written atomically (a replayed batch is replaced).
#[derive(Clone)]
pub struct JsonOutput {
    dir: Arc<PathBuf>,
}

impl JsonOutput {
    /// Output under `dir`.
    pub fn new(dir: &Path) -> Self {
        JsonOutput {
            dir: Arc::new(dir.to_path_buf()),
        }
    }

    /// Writes every batch of `stream` under `<dir>/<name>/`, one JSON object per element.
    pub fn write<T: lockgate_core::Data>(
        &self,
        stream: &DStream<T>,
        name: &str,
        to_json: impl Fn(&T, Time) -> serde_json::Value + Send + Sync + 'static,
    ) {
        let root = self.dir.join(name);
        stream.foreach_batch(move |batch: &Batch<T>, b| {
            let dir = root.join(format!("batch={}", b.id));
            write_batch_dir(
                &dir,
                batch.partitions().par_iter().enumerate().map(|(i, part)| {
                    let mut buf = Vec::with_capacity(part.len() * 64);
                    for e in part.iter() {
                        // Serializing a Value into a Vec cannot fail.
                        let _ = serde_json::to_writer(&mut buf, &to_json(e, b.time));
                        buf.push(b'\n');
                    }
                    (format!("part-{i}.jsonl"), buf)
                }),
            )
        });
    }
}

/// The streams of the log-errors job.
pub struct LogErrors {
    /// Lines containing `ERROR`.
    pub errors: DStream<String>,
    /// Number of error lines per window, one element per slide.
    pub window_counts: DStream<i64>,
}

/// Spark Streaming's classic log processor: keep the lines containing `ERROR`, count
/// them over a sliding window.
pub fn log_errors(cfg: &JobConfig, lines: &DStream<String>, out: Option<&JsonOutput>) -> LogErrors {
    let finder = memchr::memmem::Finder::new("ERROR").into_owned();
    let errors = lines
        .filter(move |l| finder.find(l.as_bytes()).is_some())
        .name("errors");
    let window_counts = errors
        .count_by_window(cfg.window, cfg.slide)
        .name("error_window_counts");
    if cfg.print {
        errors.print();
        window_counts.print();
    }
    if let Some(out) = out {
        out.write(&errors, "errors", |l, _| json!({ "line": l }));
        out.write(
            &window_counts,
            "error_window_counts",
            |c, t| json!({ "batch_time_ms": t.millis(), "count": c }),
        );
    }
    LogErrors {
        errors,
        window_counts,
    }
}

/// Running word count (words split on single spaces; empty strings are not words),
/// emitting each batch the words whose count changed, with their new count.
pub fn word_count(
    cfg: &JobConfig,
    lines: &DStream<String>,
    out: Option<&JsonOutput>,
) -> DStream<(String, i64)> {
    let counts = lines
        .flat_map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|w| (w, 1i64))
        .reduce_by_key(|a, b| a + b)
        // State: (count, changed in this batch).
        .update_state_by_key(|new: &[i64], state: Option<(i64, bool)>| {
            let before = state.map_or(0, |s| s.0);
            match new.iter().sum::<i64>() {
                0 if new.is_empty() => state.map(|(c, _)| (c, false)),
                added => Some((before + added, true)),
            }
        })
        .name("word_counts_state");
    let changed = counts
        .filter(|(_, (_, changed))| *changed)
        .map(|(w, (c, _))| (w, c))
        .name("word_counts");
    if cfg.print {
        changed.print();
    }
    if let Some(out) = out {
        out.write(
            &changed,
            "word_counts",
            |(w, c), _| json!({ "word": w, "count": c }),
        );
    }
    changed
}
