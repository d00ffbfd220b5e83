//! `lockgate`: the command-line interface. Runs the built-in jobs (`run log-errors`,
//! `run word-count`) and SQL queries (`sql`), generates sample data (`generate logs`),
//! and inspects checkpoints (`checkpoint`). Argument parsing and wiring only: the jobs
//! are `lockgate-jobs`; the crash tortures and benchmarks are the `lockgate-dev` tool.

mod checkpoint_cmd;
mod progress;
mod term;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use term::say;

use lockgate_core::parse_duration;
use lockgate_core::source::direct::{
    DirectStreamOptions, OnExpiredOffsets, StartingOffsets, TopicPartition,
};
use lockgate_jobs::{self as jobs, Input, Job, JobConfig};

#[derive(Parser)]
#[command(
    name = "lockgate",
    version,
    about = "Exactly-once micro-batch stream processing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a built-in job.
    Run {
        /// Which job.
        job: JobName,
        #[command(flatten)]
        opts: Box<RunOpts>,
    },
    /// Run a SQL query over the input as a stream (Structured Streaming's unbounded
    /// table): `lines(value)` for text, `kafka(key, value, topic, partition, offset,
    /// timestamp, headers)` for Kafka; rows to --output DIR/<NAME>/batch=<id>/ or --sink.
    Sql(Box<SqlOpts>),
    /// Generate sample data.
    Generate {
        #[command(subcommand)]
        what: GenerateWhat,
    },
    /// Inspect a checkpoint directory, or check an upgrade against it.
    Checkpoint {
        #[command(subcommand)]
        what: checkpoint_cmd::CheckpointCmd,
    },
}

/// A built-in job on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum JobName {
    /// Lines containing ERROR, printed per batch and counted over a sliding window (or, with
    /// --event-time, per event-time window).
    LogErrors,
    /// Running word count (map_with_state): each batch, the words whose count changed.
    WordCount,
}

impl From<JobName> for Job {
    fn from(j: JobName) -> Job {
        match j {
            JobName::LogErrors => Job::LogErrors,
            JobName::WordCount => Job::WordCount,
        }
    }
}

/// Delivery guarantee on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum Delivery {
    /// Every record affects the output once (replay + idempotent output).
    ExactlyOnce,
    /// Never lost, may be repeated.
    AtLeastOnce,
    /// Never repeated, may be lost.
    AtMostOnce,
}

/// `--starting-offsets`: `earliest`, `latest`, `group`, or Spark's JSON
/// `{"TOPIC":{"0":23,"1":-2}}` (-2 earliest, -1 latest; unlisted partitions earliest).
/// The parsed flag (its JSON may name several topics).
fn parse_starting_offsets(s: &str) -> std::result::Result<StartingOffsets, String> {
    match s {
        "earliest" => return Ok(StartingOffsets::Earliest),
        "latest" => return Ok(StartingOffsets::Latest),
        "group" => return Ok(StartingOffsets::Group),
        _ => {}
    }
    let bad = |why: String| {
        format!(
            "{why}; give earliest, latest, group or JSON like {{\"TOPIC\":{{\"0\":23,\"1\":-2}}}} \
             (-2: earliest, -1: latest)"
        )
    };
    let json: serde_json::Value =
        serde_json::from_str(s).map_err(|e| bad(format!("not a known word nor JSON ({e})")))?;
    let topics = json
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad("expected an object of topics".into()))?;
    let mut offsets = std::collections::BTreeMap::new();
    for (name, partitions) in topics {
        let partitions = partitions
            .as_object()
            .ok_or_else(|| bad("expected an object of partitions".into()))?;
        for (p, o) in partitions {
            let p: u32 = p
                .parse()
                .map_err(|_| bad(format!("partition `{p}` is not a number")))?;
            let o = o
                .as_i64()
                .filter(|&o| o >= -2)
                .ok_or_else(|| bad(format!("offset of partition {p} must be -2, -1 or >= 0")))?;
            offsets.insert(TopicPartition::new(name.clone(), p), o);
        }
    }
    Ok(StartingOffsets::Explicit(offsets))
}

/// `--on-expired-offsets`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnExpiredArg {
    /// Stop with an error.
    Fail,
    /// Skip to the earliest offset still held, counting the lost records.
    Earliest,
}

/// `--state-upgrade`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum StateUpgradeArg {
    /// Refuse to start.
    Fail,
    /// New operators and operators whose state types changed start empty.
    StartEmpty,
    /// State of operators no longer in the job is deleted.
    DropOld,
    /// Both.
    StartEmptyAndDropOld,
}

impl From<StateUpgradeArg> for lockgate_core::StateUpgrade {
    fn from(a: StateUpgradeArg) -> Self {
        match a {
            StateUpgradeArg::Fail => Self::Fail,
            StateUpgradeArg::StartEmpty => Self::StartEmpty,
            StateUpgradeArg::DropOld => Self::DropOld,
            StateUpgradeArg::StartEmptyAndDropOld => Self::StartEmptyAndDropOld,
        }
    }
}

/// Flags shared by `run` and `checkpoint check-upgrade`.
#[derive(Args)]
pub struct RunOpts {
    /// Read lines from a TCP server at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "input")]
    socket: Option<String>,
    /// Read the files of DIR (those present and those that appear).
    #[arg(long, value_name = "DIR")]
    input: Option<PathBuf>,
    /// Read a Kafka topic (--kafka-topic) from these bootstrap servers, as a direct
    /// stream: offset ranges per partition planned and logged per batch, exactly once
    /// with --checkpoint; each record's value is a line.
    #[arg(
        long,
        value_name = "HOST:PORT[,...]",
        conflicts_with_all = ["input", "socket"]
    )]
    kafka_brokers: Option<String>,
    /// The Kafka topics to read (with --kafka-brokers), comma-separated: one stream of
    /// all their partitions.
    #[arg(
        long,
        value_name = "TOPIC[,TOPIC...]",
        requires = "kafka_brokers",
        value_delimiter = ',',
        conflicts_with = "kafka_topic_pattern"
    )]
    kafka_topic: Vec<String>,
    /// Read every Kafka topic whose whole name matches this regular expression (Spark's
    /// subscribePattern), internal topics excepted; topics created while the job runs
    /// are read from their start.
    #[arg(long, value_name = "REGEX", requires = "kafka_brokers")]
    kafka_topic_pattern: Option<String>,
    /// A librdkafka consumer property for the Kafka source, e.g. security.protocol=SSL
    /// or sasl.username=...; repeat for several. Values are never printed.
    #[arg(long, value_name = "KEY=VALUE", requires = "kafka_brokers")]
    kafka_property: Vec<String>,
    /// Kafka: after each batch, commit its offsets to this consumer group (asynchronously;
    /// for lag monitors such as kafka-consumer-groups; positions live in the checkpoint);
    /// with --scale-out, the group every instance of the job joins [default:
    /// lockgate-<job>]
    #[arg(long, value_name = "GROUP", requires = "kafka_brokers")]
    kafka_group: Option<String>,
    /// Kafka: at most N records per partition per batch (Spark's maxRatePerPartition
    /// times the batch interval).
    #[arg(long, value_name = "N")]
    max_records_per_partition: Option<u64>,
    /// Kafka: where partitions start when the checkpoint holds no position for them:
    /// earliest, latest, group (the --kafka-group's committed offsets) or Spark's JSON
    /// {"TOPIC":{"0":23,"1":-2}} (-2 earliest, -1 latest; unlisted partitions earliest).
    #[arg(long, value_name = "WHERE", default_value = "earliest", value_parser = parse_starting_offsets)]
    starting_offsets: StartingOffsets,
    /// Kafka: when offsets still to be read have been deleted by retention, fail (naming
    /// the partition and the lost range) or go on from the earliest offset still held
    /// (the lost records are counted in lockgate_source_lost_records_total and logged).
    #[arg(long, value_enum, default_value = "fail")]
    on_expired_offsets: OnExpiredArg,
    /// Also write each output stream as JSON lines under DIR/<stream>/batch=<id>/.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// What a restart does with checkpointed operator state the job no longer matches
    /// (after an upgrade): fail (default), start-empty (new or changed operators start
    /// with no state), drop-old (state of operators gone from the job is deleted), or
    /// start-empty-and-drop-old. `checkpoint check-upgrade` shows what each would do.
    #[arg(long, value_enum, default_value = "fail")]
    state_upgrade: StateUpgradeArg,
    /// Batch interval, e.g. 10s or 500ms (default 10s; 1s for the demo).
    #[arg(long, value_parser = parse_duration)]
    batch_interval: Option<Duration>,
    /// Window length of log-errors' count, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    window: Duration,
    /// Window slide of log-errors' count, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    slide: Duration,
    /// Process what the input holds at start, then stop: the files in --input, or a
    /// Kafka topic up to the end offsets of its partitions at start. Batch times advance
    /// one interval per batch from the epoch, so output is deterministic.
    #[arg(long)]
    once: bool,
    /// At most N files per batch.
    #[arg(long, value_name = "N")]
    max_files_per_batch: Option<usize>,
    /// Worker threads (default: number of cores); with --scale-out, the instance's
    /// threads, shared by all its tasks (default: each task its own, one per core).
    #[arg(long, value_name = "N")]
    parallelism: Option<usize>,
    /// Do not print batches to stdout.
    #[arg(long)]
    quiet: bool,
    /// Checkpoint into a directory or an object store (s3://BUCKET/PREFIX; gs://, az://);
    /// a restart on the same location recovers and re-runs an interrupted batch
    /// (exactly-once with the file output).
    #[arg(long, value_name = "DIR|URL")]
    checkpoint: Option<String>,
    /// An object-store setting for --checkpoint, e.g. endpoint=http://127.0.0.1:9000,
    /// allow_http=true, region=eu-west-1 (on top of the AWS_*/GOOGLE_*/AZURE_*
    /// environment variables); repeat for several. Values are never printed.
    #[arg(long, value_name = "KEY=VALUE")]
    checkpoint_option: Vec<String>,
    /// Start as a standby when another process owns the --checkpoint: wait, then take
    /// over and continue exactly once when the owner dies (within --lease-timeout on an
    /// object store, at once on a local directory).
    #[arg(long, requires = "checkpoint")]
    standby: bool,
    /// Scale out: join --kafka-group with every other instance started with the same
    /// job, --kafka-topic and --checkpoint; the group spreads the topic's partitions
    /// over the instances, each running one task per partition it is given (its
    /// checkpoint under CHECKPOINT/tasks/<topic>-<partition>/, its output under
    /// DIR/<stream>/task=<task>/). word-count and log-errors --event-time repartition
    /// their keys through a topic lockgate-<job>-<operator>-repartition (created on
    /// start); see docs/deploy.md.
    #[arg(long, requires_all = ["kafka_brokers", "checkpoint"])]
    scale_out: bool,
    /// This instance's name in logs, the consumer group and checkpoint leases
    /// [default: host name and pid].
    #[arg(long, value_name = "NAME")]
    instance_id: Option<String>,
    /// --scale-out: the consumer group's session timeout; an instance that died loses
    /// its partitions to the others this long after its last heartbeat.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    kafka_session_timeout: Duration,
    /// --scale-out: partitions of a repartition topic created on start [default: the
    /// input topic's].
    #[arg(long, value_name = "N", requires = "scale_out")]
    repartition_partitions: Option<u32>,
    /// --scale-out: second-stage tasks read a repartition partition only up to the end
    /// their previous batch's plan saw (one batch interval later), for brokers that make
    /// a partition's end visible before its last records can be fetched (the test
    /// broker, tansu 0.6, does; Kafka does not).
    #[arg(long, requires = "scale_out")]
    repartition_read_behind: bool,
    /// Object-store checkpoints: how long the owner's lease lasts without renewal; a
    /// standby takes over this long after the owner stopped.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    lease_timeout: Duration,
    /// Object-store checkpoints: how long a request is retried, with back-off, through
    /// an outage of the store before the job fails with the error.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    checkpoint_retry_timeout: Duration,
    /// How often a socket receiver writes what it received to its write-ahead log
    /// (with --checkpoint); records count as received only once written.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    block_interval: Duration,
    /// Also write results to a database, in one transaction per batch with the batch's
    /// offsets: sqlite:PATH or postgres://USER@HOST:PORT/DB (tables window_counts or
    /// word_counts, and lockgate_offsets); or to a Kafka topic,
    /// kafka://HOST:PORT[,HOST:PORT...]/TOPIC: each output row as JSON (as --output
    /// writes it, plus "stream"), one transaction per batch with --checkpoint.
    #[arg(long, value_name = "URL")]
    sink: Option<String>,
    /// A librdkafka producer property for a kafka:// sink (and, with --scale-out, the
    /// repartition topic's producers), e.g. security.protocol=SSL; repeat for several.
    /// Values are never printed.
    #[arg(long, value_name = "KEY=VALUE")]
    kafka_sink_property: Vec<String>,
    /// With --sink: when the checkpoint has no committed batch (new or lost), resume
    /// after the batches the sink recorded (their input is skipped, batch ids continue).
    #[arg(long)]
    from_sink_offsets: bool,
    /// Port of the streaming UI and JSON/Prometheus API (the next free one if taken).
    #[arg(long, default_value_t = 4040)]
    ui_port: u16,
    /// Address the UI binds to (default loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    ui_host: std::net::IpAddr,
    /// Do not start the UI.
    #[arg(long)]
    no_ui: bool,
    /// Backpressure: limit the socket receiver, or the records per Kafka partition per
    /// batch, to the rate the job keeps up with (a PID controller, as Spark's
    /// spark.streaming.backpressure.enabled).
    #[arg(long)]
    backpressure: bool,
    /// Delivery guarantee with --checkpoint.
    #[arg(long, value_enum, default_value = "exactly-once")]
    delivery: Delivery,
    /// A file is taken once it has been still (same size and modification time) for
    /// DURATION, so that a file written in place is not read half-written; raise it
    /// above your writers' longest pause, or set 0 when they rename files in whole.
    #[arg(long, default_value = "1s", value_parser = parse_age, value_name = "DURATION")]
    file_min_age: Duration,
    /// How long a source retries, with back-off, what may pass (a broker that does not
    /// answer, too many open files) before the job fails with the error.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    source_retry_timeout: Duration,
    /// How long a database sink retries a batch, with back-off, through an outage
    /// before the job fails with the error.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    sink_retry_timeout: Duration,
    /// log-errors: count ERROR lines per event-time window read from each line's
    /// `[Fri Dec 18 00:00:00 2015]` timestamp (UTC): streams tumbling_30s and
    /// sliding_30s_10s, watermark 10s, update mode. Malformed timestamps are counted and
    /// skipped.
    #[arg(long)]
    event_time: bool,
}

/// When a SQL aggregation emits its rows.
#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Every batch, the groups and windows it changed, with their values so far.
    Update,
    /// Each window once, when the watermark passes its end.
    Append,
}

/// Flags of `lockgate sql`.
#[derive(Args)]
pub struct SqlOpts {
    #[command(flatten)]
    run: RunOpts,
    /// The output's name: rows go to DIR/<NAME>/batch=<id>/part-<n>.jsonl, to the
    /// database table <NAME>, or to Kafka with "stream": "<NAME>"; the query's state is
    /// checkpointed under it (keep it when restarting on a checkpoint).
    #[arg(long, default_value = "result")]
    name: String,
    /// Decode each line (or Kafka value) into the --schema's columns: json (one object
    /// per line) or csv; values that do not decode are counted and skipped.
    #[arg(long, value_name = "json|csv", requires = "schema")]
    format: Option<String>,
    /// The columns of --format, e.g. 'ts TIMESTAMP, level STRING, bytes BIGINT'
    /// (STRING, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, DATE).
    #[arg(long, value_name = "COLUMNS", requires = "format")]
    schema: Option<String>,
    /// The event-time column of the query's window(...) and how late records may be,
    /// e.g. 'ts 10 seconds': records further behind the largest event time are dropped
    /// (counted), and windows behind it are finished and evicted.
    #[arg(long, value_name = "COLUMN DELAY")]
    watermark: Option<String>,
    /// When an aggregation emits rows.
    #[arg(long, value_enum, default_value = "update")]
    output_mode: ModeArg,
    /// A static table to join with: NAME=FILE.csv (header line), NAME=FILE.parquet or
    /// NAME=postgres://USER@HOST:PORT/DB#TABLE; read once, at start. Repeat for several.
    #[arg(long = "table", value_name = "NAME=SOURCE")]
    tables: Vec<String>,
    /// Whose SQL the query is: spark (Spark SQL's functions, datetime patterns, regexes,
    /// string literals and 0-based arr[i]) or datafusion (DataFusion's own).
    #[arg(long, value_name = "spark|datafusion", default_value = "spark")]
    dialect: lockgate_sql::Dialect,
    /// The query, e.g. "SELECT count(*) AS errors FROM lines WHERE value LIKE '%ERROR%'".
    query: String,
}

#[derive(Subcommand)]
enum GenerateWhat {
    /// Apache-error-log style lines, about 10% at level ERROR.
    Logs {
        /// Directory to write logs-NNNNN.log files into.
        outdir: PathBuf,
        /// Total number of lines.
        #[arg(long, default_value_t = 100_000)]
        lines: u64,
        /// Number of files.
        #[arg(long, default_value_t = 10)]
        files: u64,
        /// Random seed (same seed, same bytes).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Where the embedded default (no --input, no --socket) keeps its files.
const DEMO_DIR: &str = "lockgate-demo";

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (`lockgate run … 2>&1 | head`) must not panic the thread that
        // logs: the default reports a failed write with `eprintln!`, which panics.
        .log_internal_errors(false)
        .init();
    if let Err(e) = real_main(Cli::parse()) {
        say!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, `: `-separated, each cause once: library errors often
/// include their cause's text in their own message already.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { job, opts } => run_job(job, *opts),
        Command::Sql(opts) => run_sql(*opts),
        Command::Generate {
            what:
                GenerateWhat::Logs {
                    outdir,
                    lines,
                    files,
                    seed,
                },
        } => {
            let paths = jobs::sample::generate_logs(&outdir, lines, files, seed)?;
            say!(
                "wrote {lines} lines in {} files to {}",
                paths.len(),
                outdir.display()
            );
            Ok(())
        }
        Command::Checkpoint { what } => checkpoint_cmd::run(what),
    }
}

/// The streaming demo's batch interval.
const DEMO_BATCH: Duration = Duration::from_secs(1);
/// How many files the streaming demo feeds, one per batch interval.
const DEMO_FILES: usize = 60;

/// The streaming demo's feeder: clears `DEMO_DIR/stream`, then puts one of the sample
/// log files there every batch interval (written aside and renamed in whole, as a file
/// source wants), `DEMO_FILES` in all, then stops the job gracefully.
fn start_demo_feeder(ctx: &lockgate_core::StreamingContext) -> Result<std::thread::JoinHandle<()>> {
    let pool = demo_input()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&pool)
        .with_context(|| format!("listing {}", pool.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no sample logs in {}; delete the directory to generate them again",
            pool.display()
        );
    }
    let stream = Path::new(DEMO_DIR).join("stream");
    if stream.exists() {
        std::fs::remove_dir_all(&stream).context("clearing the previous demo input")?;
    }
    std::fs::create_dir_all(&stream).context("creating the demo input directory")?;
    let ctx = ctx.clone();
    let interval = ctx.batch_interval();
    std::thread::Builder::new()
        .name("lockgate-demo-feeder".into())
        .spawn(move || {
            for i in 0..DEMO_FILES {
                if ctx.is_stopping() {
                    return;
                }
                let from = &files[i % files.len()];
                let tmp = stream.join(format!(".logs-{i:05}.tmp"));
                let to = stream.join(format!("logs-{i:05}.log"));
                if let Err(e) = std::fs::copy(from, &tmp).and_then(|_| std::fs::rename(&tmp, &to)) {
                    say!("demo: cannot add {}: {e}", to.display());
                    break;
                }
                std::thread::sleep(interval);
            }
            if !ctx.is_stopping() {
                say!("demo: all {DEMO_FILES} files fed; stopping gracefully");
                ctx.request_stop(true);
            }
        })
        .context("starting the demo feeder")
}

/// Generates the demo input once; later runs reuse it.
fn demo_input() -> Result<PathBuf> {
    let dir = Path::new(DEMO_DIR).join("input");
    let has_files = std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has_files {
        jobs::sample::generate_logs(&dir, 100_000, 10, 42)?;
        say!("generated sample logs in {}", dir.display());
    }
    Ok(dir)
}

/// `KEY=VALUE` arguments of `flag` as pairs.
fn key_values(args: &[String], flag: &str) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                // Not echoed: the argument may hold a secret.
                .with_context(|| format!("{flag}: expected KEY=VALUE, with a key"))
        })
        .collect()
}

/// The Kafka input of the flags.
fn kafka_input(opts: &RunOpts, brokers: &str) -> Result<Input> {
    let properties = key_values(&opts.kafka_property, "--kafka-property")?;
    let mut topics: Vec<String> = Vec::new();
    for t in &opts.kafka_topic {
        let t = t.trim();
        anyhow::ensure!(!t.is_empty(), "--kafka-topic: an empty topic name");
        if !topics.iter().any(|have| have == t) {
            topics.push(t.to_string());
        }
    }
    let subscription = match &opts.kafka_topic_pattern {
        Some(pattern) => lockgate_kafka::Subscription::Pattern(pattern.clone()),
        None if topics.is_empty() => {
            bail!(
                "--kafka-brokers needs the topics to read: --kafka-topic or --kafka-topic-pattern"
            )
        }
        None => lockgate_kafka::Subscription::Topics(topics.clone()),
    };
    if let StartingOffsets::Explicit(offsets) = &opts.starting_offsets {
        if let Some(other) = offsets
            .keys()
            .find(|tp| !topics.is_empty() && !topics.contains(&tp.topic))
        {
            bail!(
                "--starting-offsets names topic `{}`, but the job reads {}",
                other.topic,
                topics
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let call_timeout = lockgate_jobs::kafka_call_timeout(opts.source_retry_timeout);
    Ok(Input::Kafka {
        config: lockgate_kafka::KafkaConfig {
            properties,
            timeout: call_timeout,
            group: opts.kafka_group.clone(),
            ..lockgate_kafka::KafkaConfig::for_subscription(brokers, subscription)
        },
        options: DirectStreamOptions {
            max_records_per_partition: opts.max_records_per_partition,
            starting_offsets: opts.starting_offsets.clone(),
            on_expired_offsets: match opts.on_expired_offsets {
                OnExpiredArg::Fail => OnExpiredOffsets::Fail,
                OnExpiredArg::Earliest => OnExpiredOffsets::Earliest,
            },
            retry_timeout: opts.source_retry_timeout,
            read_behind: false,
        },
    })
}

/// The job configuration from the flags (the demo input when none of --input, --socket
/// and --kafka-brokers is given).
pub fn job_config(opts: &RunOpts) -> Result<JobConfig> {
    let demo = is_demo(opts);
    if !opts.checkpoint_option.is_empty() && opts.checkpoint.is_none() {
        bail!("--checkpoint-option applies to an object-store --checkpoint; give --checkpoint URL");
    }
    if opts.max_records_per_partition.is_some() && opts.kafka_brokers.is_none() {
        bail!("--max-records-per-partition applies to Kafka input (--kafka-brokers) only");
    }
    if !opts.kafka_sink_property.is_empty() && opts.sink.is_none() && !opts.scale_out {
        bail!(
            "--kafka-sink-property applies to a Kafka --sink (or, with --scale-out, the \
             repartition topic's producers); give --sink kafka://HOST:PORT/TOPIC"
        );
    }
    if opts.max_records_per_partition == Some(0) {
        bail!("--max-records-per-partition must be at least 1");
    }
    let input = match (&opts.socket, &opts.input, &opts.kafka_brokers) {
        (Some(s), _, _) => Input::socket(s)?,
        (None, Some(d), _) => Input::Dir(d.clone()),
        (None, None, Some(brokers)) => kafka_input(opts, brokers)?,
        (None, None, None) if opts.once => Input::Dir(demo_input()?),
        (None, None, None) => Input::Dir(Path::new(DEMO_DIR).join("stream")),
    };
    let output = if demo && opts.output.is_none() {
        Some(Path::new(DEMO_DIR).join("output"))
    } else {
        opts.output.clone()
    };
    Ok(JobConfig {
        input,
        batch_interval: opts.batch_interval.unwrap_or(if demo && !opts.once {
            DEMO_BATCH
        } else {
            Duration::from_secs(10)
        }),
        window: opts.window,
        slide: opts.slide,
        output,
        once: opts.once,
        max_files_per_batch: opts.max_files_per_batch.or(if demo && opts.once {
            Some(1)
        } else {
            None
        }),
        parallelism: opts.parallelism,
        worker_pool: None,
        print: !opts.quiet,
        checkpoint: opts
            .checkpoint
            .as_deref()
            .map(|c| open_checkpoint(c, opts))
            .transpose()?,
        standby: opts.standby,
        before_recovery: {
            let (no_ui, host, port) = (opts.no_ui, opts.ui_host, opts.ui_port);
            Some(jobs::BeforeRecovery(std::sync::Arc::new(move |ctx| {
                start_ui(ctx, no_ui, host, port)
            })))
        },
        block_interval: opts.block_interval,
        sink: opts.sink.clone(),
        kafka_sink_properties: key_values(&opts.kafka_sink_property, "--kafka-sink-property")?,
        backpressure: opts.backpressure,
        from_sink_offsets: opts.from_sink_offsets,
        delivery: match opts.delivery {
            Delivery::ExactlyOnce => lockgate_core::DeliveryMode::ExactlyOnce,
            Delivery::AtLeastOnce => lockgate_core::DeliveryMode::AtLeastOnce,
            Delivery::AtMostOnce => lockgate_core::DeliveryMode::AtMostOnce,
        },
        event_time: opts.event_time,
        file_min_age: opts.file_min_age,
        state_upgrade: opts.state_upgrade.into(),
        source_retry_timeout: opts.source_retry_timeout,
        sink_retry_timeout: opts.sink_retry_timeout,
        task: None,
    })
}

/// Opens `--checkpoint` with the object-store flags.
fn open_checkpoint(
    location: &str,
    opts: &RunOpts,
) -> Result<lockgate_core::storage::CheckpointLocation> {
    open_location(
        location,
        &opts.checkpoint_option,
        object_store_options(opts),
    )
}

/// The object-store options of the flags (lease, retries, instance name).
fn object_store_options(opts: &RunOpts) -> lockgate_object_store::Options {
    let mut options = lockgate_object_store::Options {
        lease_timeout: opts.lease_timeout,
        retry_timeout: opts.checkpoint_retry_timeout,
        ..Default::default()
    };
    if let Some(id) = &opts.instance_id {
        options.instance.clone_from(id);
    }
    options
}

/// Opens a checkpoint location with `--checkpoint-option` settings.
fn open_location(
    location: &str,
    settings: &[String],
    mut options: lockgate_object_store::Options,
) -> Result<lockgate_core::storage::CheckpointLocation> {
    for spec in settings {
        options
            .parse_setting(spec)
            .map_err(|e| anyhow::anyhow!("--checkpoint-option: {e}"))?;
    }
    lockgate_object_store::open(location, &options)
        .map_err(|e| anyhow::anyhow!("--checkpoint {location}: {e}"))
}

/// A duration that may be zero (`0`, `0s`): what `--file-min-age` takes.
fn parse_age(text: &str) -> Result<Duration, String> {
    let zero = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !zero.is_empty() && zero.trim().chars().all(|c| c == '0' || c == '.') {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// True when no input is given: the demo's generated logs.
fn is_demo(opts: &RunOpts) -> bool {
    opts.socket.is_none() && opts.input.is_none() && opts.kafka_brokers.is_none()
}

/// What the sources' line policy did, for the run summary: ` (100 with invalid UTF-8
/// replaced, 1 cut at 1 MiB)`, or nothing when it did nothing.
fn input_notes(metrics: &lockgate_core::StreamingMetrics) -> String {
    use lockgate_core::SourceCounters;
    let (mut invalid, mut cut, mut unreadable, mut changed, mut skipped) = (0, 0, 0, 0, 0);
    for name in metrics.source_names() {
        let c = metrics.source(&name);
        invalid += SourceCounters::get(&c.invalid_utf8_lines);
        cut += SourceCounters::get(&c.truncated_lines);
        unreadable += SourceCounters::get(&c.unreadable_files);
        changed += SourceCounters::get(&c.changed_files);
        skipped += SourceCounters::get(&c.skipped_entries);
    }
    let max = lockgate_core::source::DEFAULT_MAX_LINE_BYTES;
    let mut notes = Vec::new();
    if invalid > 0 {
        notes.push(format!("{invalid} with invalid UTF-8 replaced"));
    }
    if cut > 0 {
        notes.push(format!("{cut} cut at {} MiB", max >> 20));
    }
    if unreadable > 0 {
        notes.push(format!("{unreadable} unreadable file(s) skipped"));
    }
    if skipped > 0 {
        notes.push(format!(
            "{skipped} directory entr(ies) not regular files skipped: see the warnings"
        ));
    }
    if changed > 0 {
        notes.push(format!(
            "{changed} file(s) changed after they were planned, not read whole: see the warnings"
        ));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    }
}

/// Checks that a job has an output, and clears the demo's previous output.
fn prepare_output(opts: &RunOpts, cfg: &JobConfig) -> Result<()> {
    if !cfg.print && cfg.output.is_none() && cfg.sink.is_none() {
        bail!(
            "--quiet with neither --output nor --sink leaves the job no output; \
             drop --quiet to print batches, or add --output DIR or --sink URL"
        );
    }
    if is_demo(opts) && opts.output.is_none() && opts.checkpoint.is_none() {
        let out = Path::new(DEMO_DIR).join("output");
        if out.exists() {
            say!(
                "the demo starts afresh: deleting the previous demo run's output {} \
                 (give --output DIR to keep a run's results)",
                out.display()
            );
            std::fs::remove_dir_all(&out).context("clearing the previous demo output")?;
        }
    }
    Ok(())
}

fn run_job(job: JobName, opts: RunOpts) -> Result<()> {
    let cfg = job_config(&opts)?;
    prepare_output(&opts, &cfg)?;
    let job = Job::from(job);
    let app = job.name();
    if opts.scale_out {
        return run_scaled_out(job, &opts, &cfg);
    }
    let ctx = cfg.build(job)?;
    run_context(&ctx, app, &opts, &cfg)?;
    if cfg.event_time && job == Job::LogErrors {
        // Both windows see the same lines: report the first one's counts.
        let c = ctx.metrics().event_time(jobs::EVENT_WINDOWS[0].0);
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        say!(
            "{app}: ERROR lines skipped: {} late (behind the watermark), {} without a \
             readable timestamp",
            get(&c.late_records),
            get(&c.records_without_time)
        );
    }
    if let Some(out) = &cfg.output {
        say!("output written under {}", out.display());
    }
    Ok(())
}

/// `run --scale-out`: this instance's share of the job, until Ctrl-C or a task fails.
fn run_scaled_out(job: Job, opts: &RunOpts, cfg: &JobConfig) -> Result<()> {
    let base = opts
        .checkpoint
        .clone()
        .context("--scale-out needs --checkpoint")?;
    let settings = opts.checkpoint_option.clone();
    let store = object_store_options(opts);
    let instance = store.instance.clone();
    let checkpoint = jobs::scale_out::TaskCheckpoint(std::sync::Arc::new(move |sub: &str| {
        let at = format!("{}/{sub}", base.trim_end_matches('/'));
        open_location(&at, &settings, store.clone())
            .map_err(|e| lockgate_core::Error::Config(format!("{e:#}")))
    }));
    let scale = jobs::scale_out::ScaleOut {
        group: opts.kafka_group.clone(),
        instance: instance.clone(),
        session_timeout: opts.kafka_session_timeout,
        repartition_partitions: opts.repartition_partitions,
        repartition_read_behind: opts.repartition_read_behind,
        checkpoint,
    };
    let mut cfg = cfg.clone();
    // Each task opens its own checkpoint; the UI is not started per task.
    cfg.checkpoint = None;
    cfg.before_recovery = None;
    let running = std::sync::Arc::new(
        jobs::scale_out::ScaleOutJob::start(&cfg, job, scale)
            .with_context(|| format!("starting {} as instance {instance}", job.name()))?,
    );
    {
        let running = running.clone();
        let once = std::sync::atomic::AtomicBool::new(false);
        ctrlc::set_handler(move || {
            if once.swap(true, std::sync::atomic::Ordering::AcqRel) {
                std::process::exit(130);
            }
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"stopping: the tasks finish their batch in flight, then this instance \
                  leaves the group (press Ctrl-C again to stop at once)\n",
            );
            running.request_stop();
        })
        .context("installing the Ctrl-C handler")?;
    }
    say!(
        "{}: instance {instance} joined the group; tasks start as partitions are assigned",
        job.name()
    );
    let _ui = (!opts.no_ui)
        .then(|| {
            let (contexts, ready) = (running.clone(), running.clone());
            let instance = lockgate_web::Instance {
                contexts: std::sync::Arc::new(move || contexts.contexts()),
                ready: std::sync::Arc::new(move || ready.readiness()),
            };
            let cfg = lockgate_web::UiConfig {
                host: opts.ui_host,
                port: opts.ui_port,
                ..Default::default()
            };
            lockgate_web::UiServer::start_instance(instance, &cfg)
                .inspect(|ui| {
                    say!(
                        "streaming UI, API and probes (/health, /ready) at {}",
                        ui.url()
                    )
                })
                .map_err(|e| say!("warning: no UI: {e}"))
                .ok()
        })
        .flatten();
    running
        .await_termination()
        .with_context(|| format!("instance {instance} of {} failed", job.name()))?;
    say!(
        "{}: instance {instance} stopped and left the group",
        job.name()
    );
    Ok(())
}

/// `COLUMN DELAY` (`ts 10 seconds`, `ts 10s`).
fn parse_watermark(text: &str) -> Result<(String, Duration)> {
    let text = text.trim();
    let (col, delay) = text.split_once(char::is_whitespace).with_context(|| {
        format!("--watermark `{text}`: expected COLUMN DELAY, e.g. 'ts 10 seconds'")
    })?;
    let delay = lockgate_core::parse_duration(delay)
        .map_err(|e| anyhow::anyhow!("--watermark `{text}`: {e}"))?;
    Ok((col.to_string(), delay))
}

fn run_sql(opts: SqlOpts) -> Result<()> {
    let run = &opts.run;
    if run.scale_out {
        bail!(
            "`lockgate sql --scale-out` is not supported yet: run the query as one instance \
             (with --standby for failover), or scale out the built-in jobs with `lockgate run`"
        );
    }
    let cfg = job_config(run)?;
    prepare_output(run, &cfg)?;
    if opts.name.is_empty()
        || !opts
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!(
            "--name `{}`: use letters, digits, `_` and `-` (it names a directory and a table)",
            opts.name
        );
    }
    let decoder = match (&opts.format, &opts.schema) {
        (Some(f), Some(s)) => Some(lockgate_sql::Decoder::new(
            f.parse()?,
            lockgate_sql::parse_schema(s)?,
        )),
        _ => None,
    };
    let tables = opts
        .tables
        .iter()
        .map(|t| {
            t.split_once('=')
                .filter(|(n, s)| !n.is_empty() && !s.is_empty())
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .with_context(|| format!("--table `{t}`: expected NAME=FILE.csv, NAME=FILE.parquet or NAME=postgres://...#TABLE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let job = jobs::sql::SqlJob {
        query: opts.query.clone(),
        name: opts.name.clone(),
        decoder,
        watermark: opts.watermark.as_deref().map(parse_watermark).transpose()?,
        mode: match opts.output_mode {
            ModeArg::Update => lockgate_core::OutputMode::Update,
            ModeArg::Append => lockgate_core::OutputMode::Append,
        },
        tables,
        dialect: opts.dialect,
    };
    let app = job.app_name();
    let (ctx, info) = cfg.build_sql(&job)?;
    run_context(&ctx, &app, run, &cfg)?;
    if let Some(skipped) = &info.skipped {
        let n = skipped.load(std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            say!("{app}: {n} value(s) did not decode with --format/--schema and were skipped");
        }
    }
    if let Some(out) = &cfg.output {
        say!("output written under {}", out.join(&job.name).display());
    }
    Ok(())
}

/// Runs a built context to its end: the UI, the demo's feeder, progress, a summary.
/// The UI of this process's job, once started.
static UI: std::sync::Mutex<Option<lockgate_web::UiServer>> = std::sync::Mutex::new(None);

/// Starts the UI of `ctx` (once). The UI helps but is not the job: without a free port
/// the job runs on without it.
fn start_ui(ctx: &lockgate_core::StreamingContext, no_ui: bool, host: std::net::IpAddr, port: u16) {
    let mut ui = UI.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if no_ui || ui.is_some() {
        return;
    }
    let cfg = lockgate_web::UiConfig {
        host,
        port,
        ..Default::default()
    };
    match lockgate_web::UiServer::start(ctx, &cfg) {
        Ok(server) => {
            say!("streaming UI and API at {}", server.url());
            *ui = Some(server);
        }
        Err(e) => say!("warning: no UI: {e}"),
    }
}

fn run_context(
    ctx: &lockgate_core::StreamingContext,
    app: &str,
    opts: &RunOpts,
    cfg: &JobConfig,
) -> Result<()> {
    let demo = is_demo(opts);
    ctx.stop_gracefully_on_shutdown()?;
    // Started before recovery with a checkpoint (a standby shows itself while it waits).
    start_ui(ctx, opts.no_ui, opts.ui_host, opts.ui_port);
    let feeder = if demo && !cfg.once {
        say!(
            "demo: streaming sample logs for about {} s, one file every {:?} (Ctrl-C stops \
             it sooner; `--once` runs them as one bounded run)",
            DEMO_FILES as u64 * cfg.batch_interval.as_secs().max(1),
            cfg.batch_interval
        );
        Some(start_demo_feeder(ctx)?)
    } else {
        None
    };
    let started = Instant::now();
    if let Err(e) = ctx.start() {
        if ctx.is_stopping() {
            say!("{app}: stopped before it started");
            return Ok(());
        }
        return Err(e).with_context(|| format!("starting the {app} job"));
    }
    // A bounded run has a known backlog: show its progress; a streaming job shows how a
    // backlog drains when one builds up (after downtime).
    let progress = if cfg.once {
        progress::Progress::start(ctx)
    } else {
        progress::Progress::catch_up(ctx)
    };
    let result = ctx.await_termination();
    drop(progress);
    if let Some(f) = feeder {
        let _ = f.join();
    }
    result.with_context(|| format!("the {app} job failed"))?;
    let m = ctx.metrics().snapshot();
    let secs = started.elapsed().as_secs_f64();
    let stopped = match ctx.graceful_stop_drained() {
        Some(n) => format!("; stopped gracefully, {n} planned batch(es) drained"),
        None => String::new(),
    };
    say!(
        "{app}: {} batches, {} input records{} in {secs:.2} s{stopped}",
        m.total_completed,
        m.total_records,
        input_notes(&ctx.metrics())
    );
    Ok(())
}
