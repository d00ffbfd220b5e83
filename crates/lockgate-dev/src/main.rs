//! `lockgate-dev`: Lockgate's development tools, kept out of the user CLI (`lockgate`)
//! and its dependencies.
//!
//! - `lockgate-dev torture ...`: runs the real `lockgate` executable (the one beside
//!   this program, or `--lockgate PATH`), SIGKILLs it at random moments, restarts it on
//!   its checkpoint and compares the output with an uninterrupted run's; Kafka and
//!   PostgreSQL pipelines start throwaway servers through the repository's scripts.
//! - `lockgate-dev bench ...`: benchmarks (use a release build:
//!   `cargo run --release -p lockgate-dev -- bench ...`), each with its baseline
//!   measured in the same run.

use anyhow::Result;
use clap::{Parser, Subcommand};
use lockgate_dev::{bench, bench_kafka, bench_scale_out, torture};
use lockgate_jobs::Job;

#[derive(Parser)]
#[command(
    name = "lockgate-dev",
    version,
    about = "Lockgate's development tools: crash tortures and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark (use a release build: `cargo run --release -p lockgate-dev -- bench ...`).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Kill a real job with SIGKILL again and again, restart it on its checkpoint, and
    /// check that its output equals an uninterrupted run's.
    Torture(torture::TortureOpts),
}

#[derive(Subcommand)]
enum BenchWhat {
    /// log-errors over generated files, --once, one file per batch, against a raw
    /// memchr scan of the same files.
    LogErrors(bench::BenchOpts),
    /// word-count over the same generated files, against the same raw scan.
    WordCount(bench::BenchOpts),
    /// The built-in word-count and log-errors --event-time against the same jobs
    /// written as SQL (`lockgate sql`), interleaved, on the same files.
    Sql(bench::BenchOpts),
    /// A Nexmark query over generated events, against the generator alone.
    Nexmark(bench::NexmarkOpts),
    /// Recovery time of a word count holding many keys (default 1M).
    Recovery(bench::RecoveryOpts),
    /// Kafka → filter → Kafka exactly once against a bare librdkafka loop, and the Kafka
    /// source alone against a bare consumer, on a throwaway broker (scripts/kafka.sh).
    Kafka(bench_kafka::KafkaBenchOpts),
    /// Word count on an 8-partition topic: one process, one scale-out instance, two
    /// scale-out instances (real processes, a throwaway broker).
    ScaleOut(bench_scale_out::ScaleOutBenchOpts),
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .init();
    if let Err(e) = real_main(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench { what } => match what {
            BenchWhat::LogErrors(opts) => bench::run(Job::LogErrors, &opts),
            BenchWhat::WordCount(opts) => bench::run(Job::WordCount, &opts),
            BenchWhat::Sql(opts) => bench::sql(&opts),
            BenchWhat::Nexmark(opts) => bench::nexmark(&opts),
            BenchWhat::Recovery(opts) => bench::recovery(&opts),
            BenchWhat::Kafka(opts) => bench_kafka::run(&opts),
            BenchWhat::ScaleOut(opts) => bench_scale_out::run(&opts),
        },
        Command::Torture(opts) => torture::run(&opts),
    }
}
