//! `lockgate-dev torture`: runs a real job process, kills it with SIGKILL at random moments
//! (seeded), restarts it on the same checkpoint until it finishes, and checks that its
//! merged output equals the output of an uninterrupted run, batch by batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};

use lockgate_jobs::sample::{generate_logs, Rng};
use lockgate_object_store::testing::ToolStore;

/// Which pipeline to torture.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Pipeline {
    /// log-errors: files in, JSON-lines files out (stateful window).
    Files,
    /// word-count: files in, JSON-lines files out (map_with_state).
    WordCount,
    /// word-count: files in, PostgreSQL out (results and offsets in one transaction per
    /// batch), on a throwaway server started by scripts/postgres.sh.
    Postgres,
    /// word-count: a Kafka topic in (2 partitions, a direct stream of 30 records per
    /// partition per batch) on a throwaway broker started by scripts/kafka.sh,
    /// JSON-lines files out.
    Kafka,
    /// word-count: a Kafka topic in and a Kafka topic out (`--sink kafka://`, one
    /// transaction per batch), JSON-lines files out too. The output topic's records,
    /// told apart by their `lockgate-batch`/`lockgate-seq` headers, must be exactly the
    /// uninterrupted run's; copies of a record left by transactions a kill interrupted
    /// (which the test broker does not hide from readers) must be identical to it.
    KafkaToKafka,
    /// word-count: the Kafka pipeline's topic in, PostgreSQL out (results, batch ids and
    /// the Kafka offset ranges in one transaction per batch): the databases of the
    /// tortured and the uninterrupted run must be identical.
    KafkaToPostgres,
    /// `lockgate sql`: the built-in jobs written as SQL (word count; log-errors' tumbling
    /// 30 s and sliding 30 s / 10 s event-time windows with a 10 s watermark), files in,
    /// JSON-lines files out, each query killed in turn. Each query's batch outputs must
    /// equal its uninterrupted run's, and its final rows the built-in job's.
    Sql,
    /// word-count: a TCP socket in (receiver + write-ahead log), JSON-lines files out.
    /// Every line is a distinct word; after the kills, every line the job acknowledged
    /// as stored in its WAL must be counted exactly once, and no line more than once.
    Socket,
}

/// Options of `lockgate-dev torture`.
#[derive(Args)]
pub struct TortureOpts {
    /// How many times to kill the job.
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// The pipeline.
    #[arg(long, value_enum, default_value = "files")]
    pipeline: Pipeline,
    /// Seed of the kill delays (printed; rerun with it to reproduce).
    #[arg(long)]
    seed: Option<u64>,
    /// Work directory (default: a new directory under the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Kafka pipelines: also cut the broker off from the job this many times, at random
    /// moments of its runs (every connection dropped and new ones refused for 1-3 s, as
    /// a broker restart looks to its clients; the broker keeps its data). The job must
    /// ride them out: retry, and leave the same output.
    #[arg(long, default_value_t = 0)]
    broker_outages: u32,
    /// The `lockgate` executable to torture (default: the one beside this program, as
    /// `cargo build` leaves them).
    #[arg(long)]
    lockgate: Option<PathBuf>,
    /// Checkpoint on an object store instead of a local directory: every checkpoint of
    /// the run goes under URL/<run>/ (e.g. s3://lockgate/torture). An s3:// URL without
    /// --checkpoint-option endpoint=... uses a throwaway local S3 server (moto, started
    /// by scripts/s3.sh, bucket `lockgate`).
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// A store setting for --checkpoint-url, as `lockgate run --checkpoint-option`.
    #[arg(long, value_name = "KEY=VALUE", requires = "checkpoint_url")]
    checkpoint_option: Vec<String>,
    /// Failover (files and word-count pipelines, with --checkpoint-url): an owner and a
    /// standby (`--standby`) run side by side; each kill SIGKILLs the owner, the standby
    /// takes over and a new standby starts. Prints the takeover times (kill to the
    /// standby's first commit).
    #[arg(long, requires = "checkpoint_url")]
    standby: bool,
    /// The lease timeout of the jobs on an object store (`--lease-timeout`): every
    /// restart after a kill waits this long for the killed owner's lease to expire, so
    /// it is short by default (the jobs' own default is 10 s).
    #[arg(long, default_value = "1s", value_parser = lockgate_core::parse_duration, requires = "checkpoint_url")]
    lease_timeout: Duration,
}

/// Where a tortured job checkpoints: a directory of the work directory, or the same
/// name under an object store's prefix.
pub(crate) struct Checkpoints {
    /// The object store, when the checkpoints are there (`URL/<run>/<name>`).
    remote: Option<(ToolStore, String)>,
    /// The jobs' lease timeout there.
    lease_timeout: Duration,
}

impl Checkpoints {
    fn new(opts: &TortureOpts, run: &str) -> Result<Self> {
        let Some(url) = &opts.checkpoint_url else {
            return Ok(Checkpoints {
                remote: None,
                lease_timeout: opts.lease_timeout,
            });
        };
        let store = ToolStore::new(url, &opts.checkpoint_option).map_err(anyhow::Error::msg)?;
        let base = format!("{}/{run}", store.url);
        Ok(Checkpoints {
            remote: Some((store, base)),
            lease_timeout: opts.lease_timeout,
        })
    }

    /// Where checkpoint `cp` (a path in the work directory) is.
    fn location(&self, cp: &Path) -> String {
        match &self.remote {
            None => cp.display().to_string(),
            Some((_, base)) => format!(
                "{base}/{}",
                cp.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ),
        }
    }

    /// Adds `--checkpoint` (and the store's settings) for checkpoint `cp` to `c`.
    fn apply(&self, c: &mut Command, cp: &Path) {
        c.arg("--checkpoint").arg(self.location(cp));
        if let Some((store, _)) = &self.remote {
            c.arg("--lease-timeout")
                .arg(format!("{}ms", self.lease_timeout.as_millis()));
            store.apply(c);
        }
    }

    /// The logs of checkpoint `cp`, to read.
    fn log(&self, cp: &Path) -> Result<lockgate_core::checkpoint::log::CheckpointLog> {
        use lockgate_core::checkpoint::log::CheckpointLog;
        let Some((store, _)) = &self.remote else {
            return Ok(CheckpointLog::local(cp));
        };
        let location = lockgate_object_store::open(&self.location(cp), &store.options()?)?;
        Ok(CheckpointLog::new(location.0))
    }

    /// On an object store, waits until the job with process id `pid` owns checkpoint
    /// `cp` (a restart after a kill first waits the killed owner's lease out), so that
    /// kills are timed from when the job runs. Gives up silently after 30 s (the kill
    /// then lands during the wait, which is a case worth trying too).
    fn wait_for_owner(&self, cp: &Path, pid: u32) -> Result<()> {
        if self.remote.is_none() {
            return Ok(());
        }
        let storage = self.log(cp)?.storage().clone();
        let me = format!(":{pid}\"");
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Some(bytes) = storage.get(lockgate_object_store::lease::LEASE_KEY)? {
                if String::from_utf8_lossy(&bytes).contains(&me) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.remote {
            None => "a local directory".into(),
            Some((store, base)) => match &store.server {
                Some(s) => format!("{base} (local S3 server {})", s.endpoint),
                None => base.clone(),
            },
        }
    }
}

/// The `lockgate` executable every tortured job runs: set by the first [`run`] of the
/// process (the tortures of one process all run one executable).
static LOCKGATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The executable `--lockgate` names, or the `lockgate` beside this program; an error
/// saying how to build it when there is none.
pub(crate) fn find_lockgate(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let me = std::env::current_exe().context("finding this program's path")?;
            me.with_file_name(format!("lockgate{}", std::env::consts::EXE_SUFFIX))
        }
    };
    ensure!(
        path.is_file(),
        "no lockgate executable at {}: build it (`cargo build --bin lockgate`, with \
         --release for a release lockgate-dev) or name one with --lockgate PATH",
        path.display()
    );
    Ok(path)
}

/// A command running the tortured `lockgate` executable.
fn lockgate_command() -> Result<Command> {
    let exe = LOCKGATE
        .get()
        .context("the lockgate executable is set when the torture starts")?;
    Ok(Command::new(exe))
}

/// The sink's tables as sorted text rows (results, and committed batch ids with what
/// their sources read).
fn db_rows(url: &str) -> Result<Vec<String>> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    let mut rows: Vec<String> = c
        .query("SELECT word, count FROM word_counts ORDER BY word", &[])?
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    rows.extend(
        c.query(
            "SELECT batch_id, batch_time_ms, description FROM lockgate_offsets \
             ORDER BY batch_id",
            &[],
        )?
        .iter()
        .map(|r| {
            let (id, time, what) = (
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, String>(2),
            );
            format!("batch {id} {time} {what}")
        }),
    );
    Ok(rows)
}

/// Every JSON row of every batch of every stream under `out`, sorted per batch.
fn read_output(out: &Path) -> Result<BTreeMap<(String, u64), Vec<String>>> {
    let mut all = BTreeMap::new();
    if !out.exists() {
        return Ok(all);
    }
    for stream in std::fs::read_dir(out)? {
        let stream = stream?;
        let sname = stream.file_name().to_string_lossy().into_owned();
        for (id, rows) in lockgate_core::sink::read_json_lines(&stream.path())? {
            all.insert((sname.clone(), id), rows);
        }
    }
    Ok(all)
}

/// The topic of the Kafka pipeline.
const KAFKA_TOPIC: &str = "logs";

/// Where a tortured job reads: files (one per batch) or a Kafka topic.
enum Source<'a> {
    Files(&'a Path),
    Kafka(&'a str),
}

fn job_command(
    pipeline: Pipeline,
    source: &Source<'_>,
    out: &Path,
    (at, cp): (&Checkpoints, &Path),
    sink: Option<&str>,
) -> Result<Command> {
    let mut c = lockgate_command()?;
    let job = match pipeline {
        Pipeline::Files => "log-errors",
        Pipeline::WordCount
        | Pipeline::Socket
        | Pipeline::Postgres
        | Pipeline::Kafka
        | Pipeline::KafkaToKafka
        | Pipeline::KafkaToPostgres
        | Pipeline::Sql => "word-count",
    };
    c.args(["run", job, "--once", "--quiet", "--parallelism", "2"]);
    match source {
        Source::Files(input) => {
            c.args(["--max-files-per-batch", "1", "--input"]).arg(input);
        }
        Source::Kafka(brokers) => {
            c.args(["--kafka-brokers", brokers, "--kafka-topic", KAFKA_TOPIC])
                .args(["--max-records-per-partition", "30"]);
        }
    }
    c.arg("--output")
        .arg(out)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    at.apply(&mut c, cp);
    if let Some(url) = sink {
        c.arg("--sink").arg(url);
        if url.starts_with("kafka:") {
            // The test broker hides the tail of multi-record batches from readers.
            c.args(["--kafka-sink-property", "batch.num.messages=1"])
                .args(["--kafka-sink-property", "linger.ms=0"]);
        }
    }
    Ok(c)
}

/// A record of an output topic by its identity: (stream, batch id, index in the batch's
/// output) → (key, value).
type TopicRecords = BTreeMap<(String, u64, u64), (Option<Vec<u8>>, Vec<u8>)>;

/// Reads an output topic: every record by its headers, and how many records repeated
/// an identity (copies written by transactions that were interrupted).
fn topic_records(brokers: &str, topic: &str, at_least: usize) -> Result<(TopicRecords, usize)> {
    let records = lockgate_kafka::testing::consume_all(brokers, topic, 2, at_least)?;
    let (mut by_id, mut copies) = (TopicRecords::new(), 0);
    for r in records {
        let value: serde_json::Value = serde_json::from_slice(&r.value)?;
        let stream = value["stream"]
            .as_str()
            .context("a record without \"stream\"")?;
        let header = |name: &str| -> Result<u64> {
            r.header(name)
                .with_context(|| format!("a record of {topic} without header {name}"))?
                .parse()
                .with_context(|| format!("header {name} of a record of {topic}"))
        };
        let id = (
            stream.to_string(),
            header("lockgate-batch")?,
            header("lockgate-seq")?,
        );
        let record = (r.key.clone(), r.value.clone());
        match by_id.get(&id) {
            None => {
                by_id.insert(id, record);
            }
            Some(first) => {
                ensure!(
                    *first == record,
                    "{topic}: two different records claim {id:?}"
                );
                copies += 1;
            }
        }
    }
    Ok((by_id, copies))
}

/// The tortured job's output topic holds exactly the uninterrupted run's records, each
/// identity (stream, batch, index) once up to identical copies of interrupted
/// transactions (a `read_committed` consumer of Kafka would not see those; the test
/// broker shows them, see the README).
fn compare_topics(brokers: &str, reference: &str, tortured: &str, seed: u64) -> Result<()> {
    let (want, ref_copies) = topic_records(brokers, reference, 1)?;
    ensure!(
        ref_copies == 0,
        "the uninterrupted run wrote {ref_copies} records twice"
    );
    let (got, copies) = topic_records(brokers, tortured, want.len())?;
    if want != got {
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        bail!(
            "output topic differs from the uninterrupted run's (seed {seed}): {missing} records \
             missing, {extra} extra, of {}",
            want.len()
        );
    }
    println!(
        "output topics identical: {} records, each batch's once ({copies} copies of records \
         from interrupted transactions, which a read_committed consumer would not see)",
        want.len()
    );
    Ok(())
}

/// Starts a broker and produces the lines of the files in `input` (in name order) to
/// [`KAFKA_TOPIC`], file i to partition i % 2.
/// Starts a broker (behind a proxy, for outages) and loads the input files into the
/// topic: file i to partition i % 2.
fn load_topic(input: &Path, proxied: bool) -> Result<lockgate_kafka::testing::KafkaBroker> {
    use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
    let broker = if proxied {
        KafkaBroker::start_behind_proxy()?
    } else {
        KafkaBroker::start()?
    };
    create_topic(&broker.brokers, KAFKA_TOPIC, 2)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let mut records = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let partition = i32::from(i % 2 == 1);
        records.extend(text.lines().map(|l| (partition, l.to_string())));
    }
    produce(&broker.brokers, KAFKA_TOPIC, records)?;
    Ok(broker)
}

/// `lockgate-dev torture ARGS...` from a program: parses the flags as the command line
/// does (`["--pipeline", "files", "--kills", "20", "--lockgate", PATH]`) and runs.
pub fn run_args(args: &[&str]) -> Result<()> {
    /// The torture's flags alone.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        opts: TortureOpts,
    }
    let flags = <Flags as clap::Parser>::try_parse_from(
        std::iter::once("lockgate-dev torture").chain(args.iter().copied()),
    )?;
    run(&flags.opts)
}

/// Runs the torture test; fails with the seed when outputs differ.
pub fn run(opts: &TortureOpts) -> Result<()> {
    let wanted = find_lockgate(opts.lockgate.as_deref())?;
    let exe = LOCKGATE.get_or_init(|| wanted.clone());
    ensure!(
        *exe == wanted,
        "this process tortures {} already; run the torture of {} in another process",
        exe.display(),
        wanted.display()
    );
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let tmp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir()
                .join(format!("lockgate-torture-{}-{seed}", std::process::id()));
            tmp
        }
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let at = Checkpoints::new(opts, &format!("{}-{seed}", std::process::id()))?;
    println!(
        "torture: pipeline {:?}, {} kills, seed {seed}, dir {}, checkpoints in {}",
        opts.pipeline,
        opts.kills,
        dir.display(),
        at.describe()
    );
    tracing::debug!(lockgate = %exe.display(), "tortured executable");
    if let Pipeline::Socket | Pipeline::Sql = opts.pipeline {
        if let Pipeline::Sql = opts.pipeline {
            sql::run(opts, seed, &dir, &at)?;
        } else {
            socket::run(opts, seed, &dir, &at)?;
        }
        if opts.dir.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Ok(());
    }
    // The PostgreSQL pipeline writes to two databases of a throwaway server.
    let pg = match opts.pipeline {
        Pipeline::Postgres | Pipeline::KafkaToPostgres => {
            Some(lockgate_sql_sinks::testing::PgServer::start()?)
        }
        _ => None,
    };
    let db_url = |db: &str| {
        pg.as_ref()
            .map(|p| format!("{}{db}", p.url.trim_end_matches("postgres")))
    };
    if let Some(p) = &pg {
        let mut c = postgres::Client::connect(&p.url, postgres::NoTls)?;
        c.batch_execute("CREATE DATABASE reference")?;
        c.batch_execute("CREATE DATABASE tortured")?;
    }
    let input = dir.join("input");
    // Enough batches that every restart makes some progress before the next kill.
    // (Failover kills by commits, which trail the batches run by up to a commit interval,
    // tens of batches in a release build: more input.)
    let files = u64::from(opts.kills.max(1)) * if opts.standby { 250 } else { 15 };
    generate_logs(&input, files * 60, files, seed)?;
    // The Kafka pipeline reads the same lines from a topic: file i to partition i % 2.
    let broker = match opts.pipeline {
        Pipeline::Kafka | Pipeline::KafkaToKafka | Pipeline::KafkaToPostgres => {
            Some(load_topic(&input, opts.broker_outages > 0)?)
        }
        _ => {
            ensure!(
                opts.broker_outages == 0,
                "--broker-outages applies to the Kafka pipelines only"
            );
            None
        }
    };
    let kafka_out = |topic: &str| -> Result<Option<String>> {
        match (&broker, opts.pipeline) {
            (Some(b), Pipeline::KafkaToKafka) => {
                lockgate_kafka::testing::create_topic(&b.brokers, topic, 2)?;
                Ok(Some(format!("kafka://{}/{topic}", b.brokers)))
            }
            _ => Ok(None),
        }
    };
    let (ref_sink, sink) = match opts.pipeline {
        Pipeline::KafkaToKafka => (kafka_out("ref-out")?, kafka_out("out")?),
        _ => (db_url("reference"), db_url("tortured")),
    };
    let source = match &broker {
        Some(b) => Source::Kafka(&b.brokers),
        None => Source::Files(&input),
    };

    let reference_started = Instant::now();
    let reference = job_command(
        opts.pipeline,
        &source,
        &dir.join("ref-out"),
        (&at, &dir.join("ref-cp")),
        ref_sink.as_deref(),
    )?
    .output()
    .context("running the reference job")?;
    ensure!(
        reference.status.success(),
        "the reference run failed: {}",
        String::from_utf8_lossy(&reference.stderr)
    );

    let reference_ms = u64::try_from(reference_started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut rng = Rng::new(seed);
    let (out, cp) = (dir.join("out"), dir.join("cp"));
    if opts.standby {
        let command = || job_command(opts.pipeline, &source, &out, (&at, &cp), None);
        failover::run(opts, seed, &mut rng, &at, &cp, command, files)?;
        let batches = compare_outputs(&dir, &out, seed, opts.dir.is_none())?;
        println!(
            "torture passed: {} owners killed, {batches} batch outputs identical to the \
             uninterrupted run",
            opts.kills
        );
        return Ok(());
    }
    let (mut kills, mut runs, mut reruns, mut outages) = (0u32, 0u32, 0usize, 0u32);
    let mut cut = 0usize;
    let count_reruns = |stderr: &[u8]| {
        String::from_utf8_lossy(stderr)
            .matches("re-running a logged batch")
            .count()
    };
    // Calls to the broker that failed and were made again (source and sink).
    let mut retries = 0usize;
    let mut count_retries = |stderr: &[u8]| {
        let text = String::from_utf8_lossy(stderr);
        retries += ["retrying", "calling again", "writing the batch again"]
            .iter()
            .map(|m| text.matches(m).count())
            .sum::<usize>();
    };
    let started = Instant::now();
    loop {
        runs += 1;
        let mut child = job_command(opts.pipeline, &source, &out, (&at, &cp), sink.as_deref())?
            .spawn()
            .context("starting the job")?;
        if let (Some(b), true) = (&broker, outages < opts.broker_outages) {
            std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
            // An outage is meant to cut the job off: wait until it holds a connection
            // (a slow start, or the reconnection after an earlier outage, can take a
            // while on a loaded machine).
            let until = Instant::now() + Duration::from_secs(20);
            while b.connections() == 0 && child.try_wait()?.is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait()?.is_none() {
                cut += b.outage(Duration::from_millis(1000 + rng.below(2000)))?;
                outages += 1;
            }
        }
        if kills < opts.kills {
            // A Kafka job first asks the broker for metadata and offsets (~100 ms); with
            // a Kafka sink it also initialises its transactions, and each batch is a
            // transaction of one-record requests (~250 ms on this broker).
            let (base, spread) = match opts.pipeline {
                // On an object store a start (the lease, reading the checkpoint) and
                // every batch take requests of tens of ms: kill within a share of what
                // the uninterrupted run took, after about a start's worth.
                _ if at.remote.is_some() => {
                    at.wait_for_owner(&cp, child.id())?;
                    let share = (reference_ms / (u64::from(opts.kills) + 1)).max(50);
                    (share / 4, share)
                }
                Pipeline::Kafka => (100, 60),
                Pipeline::KafkaToPostgres => (120, 100),
                Pipeline::KafkaToKafka => (300, 700),
                _ => (5, 60),
            };
            let delay = Duration::from_millis(base + rng.below(spread));
            std::thread::sleep(delay);
            if child.try_wait()?.is_none() {
                child.kill().context("killing the job")?; // SIGKILL
                let killed = child.wait_with_output()?;
                reruns += count_reruns(&killed.stderr);
                count_retries(&killed.stderr);
                kills += 1;
                continue;
            }
        }
        let done = child.wait_with_output()?;
        reruns += count_reruns(&done.stderr);
        count_retries(&done.stderr);
        if !done.status.success() {
            bail!(
                "run {runs} (after {kills} kills, seed {seed}) failed: {}",
                String::from_utf8_lossy(&done.stderr)
            );
        }
        if kills >= opts.kills {
            ensure!(
                outages >= opts.broker_outages,
                "the job finished after only {outages} of {} broker outages (seed {seed})",
                opts.broker_outages
            );
            ensure!(
                outages == 0 || cut > 0,
                "the broker outages cut no connection of the job (seed {seed})"
            );
            break;
        }
        bail!(
            "the job finished after only {kills} of {} kills (seed {seed}); it is too short for \
             this many kills",
            opts.kills
        );
    }
    if let (Some(b), Pipeline::KafkaToKafka) = (&broker, opts.pipeline) {
        compare_topics(&b.brokers, "ref-out", "out", seed)?;
    } else if let (Some(r), Some(t)) = (&ref_sink, &sink) {
        let (want, got) = (db_rows(r)?, db_rows(t)?);
        ensure!(
            want == got,
            "database contents differ from the uninterrupted run (seed {seed}): {} vs {} rows",
            want.len(),
            got.len()
        );
        println!(
            "databases identical: {} rows of word_counts and lockgate_offsets",
            want.len()
        );
    }
    let batches = compare_outputs(&dir, &out, seed, false)?;
    println!(
        "torture passed: {kills} kills{} over {runs} runs in {:.1} s, {reruns} interrupted \
         batches re-run from their logged plans; {batches} batch outputs identical to the \
         uninterrupted run",
        if outages > 0 {
            format!(
                " and {outages} broker outages ({cut} connections cut, {retries} failed broker \
                 calls made again)"
            )
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64(),
    );
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Compares the tortured run's outputs under `out` with the uninterrupted run's under
/// `dir/ref-out`, batch by batch; returns how many batches there are.
fn compare_outputs(dir: &Path, out: &Path, seed: u64, remove: bool) -> Result<usize> {
    let (want, got) = (read_output(&dir.join("ref-out"))?, read_output(out)?);
    if want != got {
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .map(|(k, _)| k)
            .collect();
        bail!(
            "output differs from the uninterrupted run (seed {seed}, dir {}): missing batches \
             {missing:?}, extra batches {extra:?}, different batches {differ:?}",
            dir.display()
        );
    }
    if remove {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(want.len())
}

/// Failover: an owner and a standby on one object-store checkpoint.
mod failover {
    use std::path::Path;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context, Result};

    use super::{Checkpoints, TortureOpts};
    use lockgate_jobs::sample::Rng;

    /// The batch ids committed so far (the highest), read from the store.
    fn last_commit(at: &Checkpoints, cp: &Path) -> Result<Option<u64>> {
        Ok(at.log(cp)?.commit_ids()?.last().copied())
    }

    /// The pid of the lease's owner among `children`, once one owns it.
    fn owner(at: &Checkpoints, cp: &Path, children: &mut [Child]) -> Result<Option<usize>> {
        let storage = at.log(cp)?.storage().clone();
        let Some(lease) = storage.get(lockgate_object_store::lease::LEASE_KEY)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&lease).into_owned();
        if text.contains("\"released\":true") {
            return Ok(None);
        }
        Ok(children
            .iter()
            .position(|c| text.contains(&format!(":{}\"", c.id()))))
    }

    pub fn run(
        opts: &TortureOpts,
        seed: u64,
        rng: &mut Rng,
        at: &Checkpoints,
        cp: &Path,
        command: impl Fn() -> Result<Command>,
        batches: u64,
    ) -> Result<()> {
        let logs = cp.with_file_name("instances");
        std::fs::create_dir_all(&logs)?;
        let spawned = std::cell::Cell::new(0u32);
        let spawn = || -> Result<Child> {
            let mut c = command()?;
            // Each instance's log in a file of its own (a pipe nobody reads would fill).
            let n = spawned.get();
            spawned.set(n + 1);
            let log = std::fs::File::create(logs.join(format!("{n}.log")))?;
            c.arg("--standby").stderr(log);
            c.spawn().context("starting an instance")
        };
        let started = Instant::now();
        let mut children = vec![spawn()?, spawn()?];
        let mut takeovers: Vec<Duration> = Vec::new();
        let mut kills = 0u32;
        // Kills are timed by progress (the batches are quicker than the store's
        // requests): each owner is killed after committing a random few batches, plus a
        // random moment into the next.
        let per_owner = (batches / (2 * u64::from(opts.kills) + 2)).max(1);
        while kills < opts.kills {
            // Wait for an owner, then let it commit a few batches.
            let until = Instant::now() + Duration::from_secs(60);
            let index = loop {
                if let Some(i) = owner(at, cp, &mut children)? {
                    break i;
                }
                let mut running = 0;
                for c in children.iter_mut() {
                    match c.try_wait()? {
                        None => running += 1,
                        Some(status) => ensure!(
                            status.success(),
                            "an instance failed (seed {seed}): {status}; see {}",
                            logs.display()
                        ),
                    }
                }
                if running == 0 {
                    bail!(
                        "the job finished after only {kills} of {} kills (seed {seed}); it is \
                         too short for this many kills",
                        opts.kills
                    );
                }
                ensure!(
                    Instant::now() < until,
                    "no instance took the checkpoint's lease in 60 s (seed {seed}); see {}",
                    logs.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            let target = last_commit(at, cp)?.map_or(0, |c| c + 1) + rng.below(per_owner);
            while last_commit(at, cp)?.is_none_or(|c| c < target)
                && children[index].try_wait()?.is_none()
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.below(20)));
            let mut victim = children.remove(index);
            if victim.try_wait()?.is_some() {
                bail!(
                    "the job finished after only {kills} of {} kills (seed {seed}); it is too \
                     short for this many kills",
                    opts.kills
                );
            }
            let before = last_commit(at, cp)?;
            victim.kill().context("killing the owner")?; // SIGKILL
            let killed_at = Instant::now();
            let _ = victim.wait();
            kills += 1;
            children.push(spawn()?);
            // The takeover: kill to the first commit after the last one seen.
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                if last_commit(at, cp)? > before {
                    takeovers.push(killed_at.elapsed());
                    break;
                }
                if children
                    .iter_mut()
                    .all(|c| matches!(c.try_wait(), Ok(Some(_))))
                {
                    break;
                }
                ensure!(
                    Instant::now() < until,
                    "no instance committed a batch in 60 s after the owner was killed (seed \
                     {seed})"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // The last owner finishes the bounded run and releases; the standby then takes
        // over, finds nothing left and ends too.
        for c in children {
            let done = c.wait_with_output()?;
            ensure!(
                done.status.success(),
                "an instance failed (seed {seed}): {}",
                String::from_utf8_lossy(&done.stderr)
            );
        }
        takeovers.sort();
        let ms: Vec<u128> = takeovers.iter().map(Duration::as_millis).collect();
        println!(
            "failover: {kills} owners killed in {:.1} s; takeover (kill to the standby's first \
             commit) median {} ms, min {} ms, max {} ms, all {ms:?}",
            started.elapsed().as_secs_f64(),
            ms.get(ms.len() / 2).copied().unwrap_or(0),
            ms.first().copied().unwrap_or(0),
            ms.last().copied().unwrap_or(0),
        );
        Ok(())
    }
}

/// The SQL pipeline: three queries, each killed in turn.
mod sql {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use anyhow::{bail, ensure, Context, Result};

    use super::{read_output, Checkpoints, TortureOpts};
    use lockgate_jobs::sample::{generate_logs, Rng};
    use lockgate_jobs::sql::{log_errors_sql, LOG_ERRORS_WATERMARK, WORD_COUNT_SQL};

    fn lockgate(args: &[&str], input: &Path, out: &Path) -> Result<Command> {
        let mut c = super::lockgate_command()?;
        c.args(args)
            .args(["--once", "--quiet", "--no-ui", "--parallelism", "2"])
            .args(["--max-files-per-batch", "1", "--input"])
            .arg(input)
            .arg("--output")
            .arg(out)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ok(c)
    }

    fn run_to_end(mut c: Command, what: &str) -> Result<()> {
        let done = c.output().with_context(|| format!("running {what}"))?;
        ensure!(
            done.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        Ok(())
    }

    /// The last row of every key of stream `name` (the value in the highest batch id).
    fn final_rows(
        all: &BTreeMap<(String, u64), Vec<String>>,
        name: &str,
        key: &[&str],
    ) -> Result<BTreeMap<String, String>> {
        let mut last = BTreeMap::new();
        // Batch ids in order: BTreeMap orders (stream, id).
        for ((stream, _), rows) in all {
            if stream != name {
                continue;
            }
            for r in rows {
                let v: serde_json::Value = serde_json::from_str(r)?;
                let k: Vec<String> = key.iter().map(|k| v[*k].to_string()).collect();
                last.insert(k.join(","), r.clone());
            }
        }
        Ok(last)
    }

    pub fn run(opts: &TortureOpts, seed: u64, dir: &Path, at: &Checkpoints) -> Result<()> {
        let queries: [(&str, String, Option<&str>, &str, &[&str]); 3] = [
            (
                "words",
                WORD_COUNT_SQL.to_string(),
                None,
                "word_counts",
                &["word"],
            ),
            (
                "tumbling",
                log_errors_sql("30 seconds", None),
                Some(LOG_ERRORS_WATERMARK),
                "tumbling_30s",
                &["start"],
            ),
            (
                "sliding",
                log_errors_sql("30 seconds", Some("10 seconds")),
                Some(LOG_ERRORS_WATERMARK),
                "sliding_30s_10s",
                &["start"],
            ),
        ];
        let per_query = opts.kills.div_ceil(3).max(1);
        let input = dir.join("input");
        let files = u64::from(per_query) * 15;
        generate_logs(&input, files * 60, files, seed)?;
        let builtin = dir.join("builtin");
        run_to_end(
            lockgate(&["run", "word-count"], &input, &builtin)?,
            "the built-in word-count",
        )?;
        run_to_end(
            lockgate(&["run", "log-errors", "--event-time"], &input, &builtin)?,
            "the built-in log-errors --event-time",
        )?;
        let builtin = read_output(&builtin)?;
        let mut rng = Rng::new(seed);
        let started = Instant::now();
        let (mut kills, mut runs, mut reruns, mut batches) = (0u32, 0u32, 0usize, 0usize);
        for (name, query, watermark, stream, key) in &queries {
            let command = |out: &Path, cp: Option<&Path>| -> Result<Command> {
                let mut c = lockgate(&["sql", "--name", name], &input, out)?;
                if let Some(w) = watermark {
                    c.args(["--watermark", w]);
                }
                if let Some(cp) = cp {
                    at.apply(&mut c, cp);
                }
                c.arg(query);
                Ok(c)
            };
            let reference = dir.join(format!("ref-{name}"));
            let t = Instant::now();
            // On an object store the reference checkpoints too, so that its time
            // includes the store's (the kills are timed by it).
            let reference_cp = dir.join(format!("ref-cp-{name}"));
            let reference_cp = at.remote.as_ref().map(|_| reference_cp.as_path());
            run_to_end(
                command(&reference, reference_cp)?,
                &format!("the uninterrupted `{name}` query"),
            )?;
            // Each kill comes after a random part of what the uninterrupted run took
            // (at most 1/(kills + 1) of it, so the kills add up to less than the whole
            // run and the query is still running at the last one), whatever this
            // machine's speed or load.
            let whole = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
            let most = (whole / (u64::from(per_query) + 1)).max(2);
            let (out, cp) = (
                dir.join(format!("out-{name}")),
                dir.join(format!("cp-{name}")),
            );
            let mut killed = 0;
            loop {
                runs += 1;
                let mut child = command(&out, Some(&cp))?
                    .spawn()
                    .context("starting the query")?;
                if killed < per_query {
                    at.wait_for_owner(&cp, child.id())?;
                    std::thread::sleep(std::time::Duration::from_millis(
                        most / 2 + rng.below(most / 2),
                    ));
                    if child.try_wait()?.is_none() {
                        child.kill().context("killing the query")?; // SIGKILL
                        let died = child.wait_with_output()?;
                        reruns += String::from_utf8_lossy(&died.stderr)
                            .matches("re-running a logged batch")
                            .count();
                        killed += 1;
                        continue;
                    }
                }
                let done = child.wait_with_output()?;
                reruns += String::from_utf8_lossy(&done.stderr)
                    .matches("re-running a logged batch")
                    .count();
                ensure!(
                    done.status.success(),
                    "`{name}` run {runs} (after {killed} kills, seed {seed}) failed: {}",
                    String::from_utf8_lossy(&done.stderr)
                );
                ensure!(
                    killed >= per_query,
                    "`{name}` finished after only {killed} of {per_query} kills (seed {seed}); \
                     it is too short for this many kills"
                );
                break;
            }
            kills += killed;
            let (want, got) = (read_output(&reference)?, read_output(&out)?);
            if want != got {
                let differ: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(*v))
                    .map(|(k, _)| k)
                    .collect();
                bail!(
                    "`{name}`: output differs from the uninterrupted run (seed {seed}, dir {}): \
                     batches {differ:?} (of {} and {})",
                    dir.display(),
                    want.len(),
                    got.len()
                );
            }
            batches += want.len();
            let (sql_rows, builtin_rows) = (
                final_rows(&got, name, key)?,
                final_rows(&builtin, stream, key)?,
            );
            ensure!(
                !builtin_rows.is_empty(),
                "the built-in {stream} wrote nothing"
            );
            if sql_rows != builtin_rows {
                let differ = builtin_rows
                    .iter()
                    .filter(|(k, v)| sql_rows.get(*k) != Some(*v))
                    .count()
                    + sql_rows
                        .keys()
                        .filter(|k| !builtin_rows.contains_key(*k))
                        .count();
                bail!(
                    "`{name}`: final rows differ from the built-in job's {stream} in {differ} of \
                     {} keys (seed {seed}, dir {})",
                    builtin_rows.len(),
                    dir.display()
                );
            }
            println!(
                "sql `{name}`: {killed} kills; {} batch outputs identical to the uninterrupted \
                 run; final rows equal to the built-in {stream} ({} keys)",
                want.len(),
                builtin_rows.len()
            );
        }
        println!(
            "torture passed: {kills} kills over {runs} runs in {:.1} s, {reruns} interrupted \
             batches re-run from their logged plans; {batches} batch outputs identical to the \
             uninterrupted runs; final rows equal to the built-in jobs'",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// The socket pipeline: the harness is the TCP server.
mod socket {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context, Result};

    use super::{read_output, Checkpoints, TortureOpts};
    use lockgate_jobs::sample::Rng;

    const DEADLINE: Duration = Duration::from_secs(60);

    struct Job {
        child: Child,
        stored: Arc<AtomicU64>,
        reruns: Arc<AtomicUsize>,
        reader: JoinHandle<String>,
    }

    fn start(port: u16, out: &Path, (at, cp): (&Checkpoints, &Path)) -> Result<Job> {
        let mut command = super::lockgate_command()?;
        command
            .args([
                "run",
                "word-count",
                "--quiet",
                "--batch-interval",
                "50ms",
                "--block-interval",
                "10ms",
                "--parallelism",
                "2",
            ])
            .arg("--socket")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--output")
            .arg(out)
            .env("RUST_LOG", "warn,lockgate_core::source::receiver=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        at.apply(&mut command, cp);
        let mut child = command.spawn().context("starting the job")?;
        let stderr = child.stderr.take().context("the job's stderr")?;
        let stored = Arc::new(AtomicU64::new(0));
        let reruns = Arc::new(AtomicUsize::new(0));
        let (st, rr) = (stored.clone(), reruns.clone());
        // The job says how many records reached its WAL; those must never be lost.
        let reader = std::thread::spawn(move || {
            let mut errors = String::new();
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.split("stored_total=").nth(1) {
                    let n: u64 = rest
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    st.fetch_max(n, Ordering::AcqRel);
                } else if line.contains("re-running a logged batch") {
                    rr.fetch_add(1, Ordering::AcqRel);
                } else if line.contains("ERROR") || line.contains("error") {
                    errors.push_str(&line);
                    errors.push('\n');
                }
            }
            errors
        });
        Ok(Job {
            child,
            stored,
            reruns,
            reader,
        })
    }

    fn accept(listener: &TcpListener, job: &mut Job) -> Result<TcpStream> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match listener.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false)?;
                    return Ok(c);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = job.child.try_wait()? {
                        bail!("the job exited ({status}) before connecting");
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "the job did not connect within {DEADLINE:?}"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends lines `from..to` (as far as the connection takes them); returns the next
    /// line not sent.
    fn send(conn: &mut TcpStream, from: u64, to: u64) -> u64 {
        let mut buf = String::new();
        let mut seq = from;
        while seq < to {
            buf.clear();
            let end = (seq + 20).min(to);
            for i in seq..end {
                buf.push_str(&format!("w{i}\n"));
            }
            if conn.write_all(buf.as_bytes()).is_err() {
                break;
            }
            seq = end;
        }
        seq
    }

    pub fn run(opts: &TortureOpts, seed: u64, dir: &Path, at: &Checkpoints) -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the feeder's port")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (out, cp) = (dir.join("out"), dir.join("cp"));
        std::fs::create_dir_all(dir)?;
        let mut rng = Rng::new(seed);
        let mut next: u64 = 0;
        let mut acknowledged: BTreeSet<u64> = BTreeSet::new();
        let (mut kills, mut runs, mut reruns) = (0u32, 0u32, 0usize);
        let started = Instant::now();
        loop {
            runs += 1;
            let mut job = start(port, &out, (at, &cp))?;
            let mut conn = accept(&listener, &mut job)?;
            let first = next;
            if kills < opts.kills {
                // Feed lines for a random while, then SIGKILL.
                let until = Instant::now() + Duration::from_millis(40 + rng.below(160));
                while Instant::now() < until {
                    next = send(&mut conn, next, next + 20);
                    std::thread::sleep(Duration::from_millis(1));
                }
                job.child.kill().context("killing the job")?;
                job.child.wait()?;
                kills += 1;
            } else {
                // The last run: feed a final chunk, wait until all of it is stored, stop.
                next = send(&mut conn, next, next + 2000);
                let deadline = Instant::now() + DEADLINE;
                while job.stored.load(Ordering::Acquire) < next - first {
                    ensure!(
                        Instant::now() < deadline,
                        "the job did not store the final lines"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                let kill = Command::new("kill")
                    .args(["-INT", &job.child.id().to_string()])
                    .status()?;
                ensure!(kill.success(), "cannot send SIGINT to the job");
                let status = job.child.wait()?;
                let errors = job.reader.join().unwrap_or_default();
                ensure!(
                    status.success(),
                    "the final run failed ({status}): {errors}"
                );
                acknowledged.extend(first..first + job.stored.load(Ordering::Acquire));
                reruns += job.reruns.load(Ordering::Acquire);
                break;
            }
            drop(conn);
            let _ = job.reader.join();
            // TCP delivers in order: what the job stored is the first lines it was sent.
            acknowledged.extend(first..first + job.stored.load(Ordering::Acquire));
            reruns += job.reruns.load(Ordering::Acquire);
        }
        // A graceful stop drains: no logged batch is left for a next start.
        let log = at.log(&cp)?;
        let (plans, commits) = (log.plan_ids()?, log.commit_ids()?);
        ensure!(
            plans.last() <= commits.last(),
            "the graceful stop left batches {:?}..={:?} planned but not committed (seed {seed}, \
             dir {})",
            commits.last().map_or(0, |c| c + 1),
            plans.last(),
            dir.display()
        );
        // Every acknowledged line counted exactly once; nothing counted twice.
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for ((_, _), rows) in read_output(&out)? {
            for row in rows {
                let v: serde_json::Value = serde_json::from_str(&row)?;
                let word = v["word"].as_str().unwrap_or_default().to_string();
                let count = v["count"].as_i64().unwrap_or(-1);
                ensure!(
                    count == 1,
                    "`{word}` counted {count} times (seed {seed}, dir {})",
                    dir.display()
                );
                counts.insert(word, count);
            }
        }
        let lost: Vec<u64> = acknowledged
            .iter()
            .filter(|i| !counts.contains_key(&format!("w{i}")))
            .copied()
            .collect();
        ensure!(
            lost.is_empty(),
            "{} lines stored in the WAL were never counted, e.g. {:?} (seed {seed}, dir {})",
            lost.len(),
            &lost[..lost.len().min(10)],
            dir.display()
        );
        ensure!(counts.len() as u64 <= next, "more words than lines sent");
        println!(
            "torture passed: {kills} kills over {runs} runs in {:.1} s, {reruns} interrupted batches \
             re-run from their logged plans; {} lines sent, {} acknowledged by the WAL, {} counted, \
             each exactly once",
            started.elapsed().as_secs_f64(),
            next,
            acknowledged.len(),
            counts.len()
        );
        Ok(())
    }
}
