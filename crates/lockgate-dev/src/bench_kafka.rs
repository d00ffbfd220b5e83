//! `lockgate-dev bench kafka`: Kafka → filter → Kafka, exactly once, against a bare
//! librdkafka consume-filter-produce loop (transactions of the same size, committing its
//! consumer offsets with each as Kafka's exactly-once pattern does), and the Kafka source
//! alone against a bare consumer, all on one throwaway broker (scripts/kafka.sh), over
//! the same input topic, in the same run.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use lockgate_core::source::direct::DirectStreamOptions;
use lockgate_core::{StreamingContext, Trigger};
use lockgate_kafka::testing::{create_topic, produce, sample_log_lines, KafkaBroker};
use lockgate_kafka::{kafka_lines, KafkaConfig, KafkaOutRecord, KafkaSink, KafkaSinkConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Options of `bench kafka`.
#[derive(Args)]
pub struct KafkaBenchOpts {
    /// Records in the input topic (sample log lines, every seventh an ERROR).
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// Records per partition per batch (Lockgate's batches; the bare loop commits a
    /// transaction after as many records over all partitions).
    #[arg(long, default_value_t = 10_000)]
    per_batch: u64,
    /// Runs of each variant (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Worker threads (default: number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
}

/// The input topic.
const INPUT: &str = "bench-in";

/// What one run did.
#[derive(Clone, Copy)]
struct Run {
    elapsed: Duration,
    /// Records read.
    records: u64,
    /// Records written (the ERROR lines), or bytes read by a source-only run.
    out: u64,
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.elapsed);
    runs[runs.len() / 2]
}

fn consumer(brokers: &str, group: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        .create()
        .context("creating a consumer")
}

/// Assigns every input partition from offset 0.
fn assign_all(c: &BaseConsumer, partitions: i32) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(INPUT, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(())
}

/// Polls `c` until every partition reached its end (`total` records seen), calling `f`
/// with each record's partition, offset and value.
fn drain(
    c: &BaseConsumer,
    total: u64,
    mut f: impl FnMut(i32, i64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen = 0u64;
    while seen < total {
        ensure!(
            Instant::now() < deadline,
            "the bare consumer read {seen} of {total} records in 10 minutes"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                seen += 1;
                f(m.partition(), m.offset(), m.payload().unwrap_or_default())?;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => return Err(e).context("bare consumer"),
        }
    }
    Ok(seen)
}

/// The bare consumer: reads the whole topic, counting records and bytes.
fn bare_source(brokers: &str, opts: &KafkaBenchOpts, run: usize) -> Result<Run> {
    let c = consumer(brokers, &format!("bench-bare-source-{run}"))?;
    let start = Instant::now();
    assign_all(&c, opts.partitions)?;
    let mut bytes = 0u64;
    let records = drain(&c, opts.records as u64, |_, _, v| {
        bytes += v.len() as u64;
        Ok(())
    })?;
    Ok(Run {
        elapsed: start.elapsed(),
        records,
        out: bytes,
    })
}

/// A bounded context on `cores` workers, checkpointing in `checkpoint` if given.
fn bounded_context(app: &str, cores: usize, checkpoint: Option<&Path>) -> Result<StreamingContext> {
    let mut b = StreamingContext::builder()
        .app_name(app)
        .parallelism(cores)
        .trigger(Trigger::AvailableNow)
        // Batch times from 0: the first batch does not wait for the clock's next tick.
        .start_time(lockgate_core::Time(0));
    if let Some(dir) = checkpoint {
        b = b.checkpoint_dir(dir);
    }
    Ok(b.build()?)
}

/// Runs `ctx` to its end: the run's time, the records its source read and `out`.
fn run_to_end(ctx: &StreamingContext, out: &AtomicU64) -> Result<Run> {
    let start = Instant::now();
    ctx.start()?;
    ctx.await_termination()?;
    Ok(Run {
        elapsed: start.elapsed(),
        records: ctx.metrics().snapshot().total_records,
        out: out.load(Ordering::Relaxed),
    })
}

/// Lockgate's Kafka source alone: every record as a line, counted with its bytes.
fn lockgate_source(brokers: &str, opts: &KafkaBenchOpts, cores: usize) -> Result<Run> {
    let ctx = bounded_context("bench-kafka-source", cores, None)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    kafka_lines(&ctx, KafkaConfig::new(brokers, INPUT), direct_options(opts))?.foreach_batch(
        move |batch, _| {
            let n: usize = batch.iter().map(String::len).sum();
            b.fetch_add(n as u64, Ordering::Relaxed);
        },
    );
    run_to_end(&ctx, &bytes)
}

fn direct_options(opts: &KafkaBenchOpts) -> DirectStreamOptions {
    DirectStreamOptions {
        max_records_per_partition: Some(opts.per_batch),
        ..Default::default()
    }
}

fn is_error_line(v: &[u8]) -> bool {
    memchr::memmem::find(v, b"ERROR").is_some()
}

/// The bare exactly-once loop: consume, keep the ERROR lines, produce them to `output`
/// in a transaction that also commits the consumer's offsets, one per `per_batch *
/// partitions` records read.
fn bare_pipeline(brokers: &str, opts: &KafkaBenchOpts, run: usize, output: &str) -> Result<Run> {
    let group = format!("bench-bare-{run}");
    let c = consumer(brokers, &group)?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", format!("bench-bare-{run}"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the bare producer")?;
    let t = Duration::from_secs(30);
    let start = Instant::now();
    producer.init_transactions(t)?;
    assign_all(&c, opts.partitions)?;
    let chunk = opts.per_batch * opts.partitions as u64;
    let mut next = vec![0i64; opts.partitions as usize];
    let mut in_txn = 0u64;
    let mut written = 0u64;
    let commit = |next: &[i64]| -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, &o) in next.iter().enumerate() {
            tpl.add_partition_offset(INPUT, p as i32, Offset::Offset(o))?;
        }
        let meta = c
            .group_metadata()
            .context("no group metadata for the bare consumer")?;
        producer.send_offsets_to_transaction(&tpl, &meta, t)?;
        producer.commit_transaction(t)?;
        Ok(())
    };
    producer.begin_transaction()?;
    let records = drain(&c, opts.records as u64, |p, offset, v| {
        if is_error_line(v) {
            let mut rec = BaseRecord::<'_, [u8], [u8]>::to(output).payload(v);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e).context("bare producer"),
                }
            }
            written += 1;
        }
        next[p as usize] = offset + 1;
        in_txn += 1;
        if in_txn == chunk {
            commit(&next)?;
            producer.begin_transaction()?;
            in_txn = 0;
        }
        Ok(())
    })?;
    commit(&next)?;
    Ok(Run {
        elapsed: start.elapsed(),
        records,
        out: written,
    })
}

/// Lockgate's exactly-once job: the topic's lines, the ERROR ones, to `output` with the
/// Kafka sink (one transaction per batch), checkpointing in `dir`.
fn lockgate_pipeline(
    brokers: &str,
    opts: &KafkaBenchOpts,
    cores: usize,
    output: &str,
    dir: &Path,
) -> Result<Run> {
    let _ = std::fs::remove_dir_all(dir);
    let ctx = bounded_context("bench-kafka", cores, Some(dir))?;
    let sink = KafkaSink::new(
        output,
        "bench-kafka",
        KafkaSinkConfig::new(brokers, output),
        |line: &String, _| KafkaOutRecord::value(line.as_bytes()),
    )?;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let errors = kafka_lines(&ctx, KafkaConfig::new(brokers, INPUT), direct_options(opts))?
        .filter(|l| is_error_line(l.as_bytes()));
    errors.write_to(sink);
    errors.foreach_batch(move |b, _| {
        w.fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    run_to_end(&ctx, &written)
}

fn print(name: &str, r: &Run, what: &str) {
    let s = r.elapsed.as_secs_f64();
    println!(
        "{name:<20} {:>9} records {:>8} {what:<7} {:>8.3} s {:>12.0} records/s",
        r.records,
        r.out,
        s,
        r.records as f64 / s
    );
}

/// Runs the benchmark.
pub fn run(opts: &KafkaBenchOpts) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `cargo run --release -p lockgate-dev -- bench kafka`");
    }
    ensure!(
        opts.partitions > 0 && opts.records > 0,
        "--records and --partitions must be positive"
    );
    let cores = opts
        .parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let broker = KafkaBroker::start()?;
    let brokers = broker.brokers.as_str();
    create_topic(brokers, INPUT, opts.partitions)?;
    let loading = Instant::now();
    let parts = opts.partitions;
    // One record per request: the test broker hides the tail of larger record batches.
    produce(
        brokers,
        INPUT,
        sample_log_lines(opts.records).map(|(i, line)| (i % parts, line)),
    )?;
    let errors = (0..opts.records).filter(|i| i % 7 == 0).count() as u64;
    println!(
        "kafka: {} records in {} partitions ({errors} ERROR lines) loaded in {:.1} s; {} per \
         partition per batch, {cores} workers, median of {} runs",
        opts.records,
        opts.partitions,
        loading.elapsed().as_secs_f64(),
        opts.per_batch,
        opts.repeat.max(1)
    );
    let dir = std::env::temp_dir().join(format!("lockgate-bench-kafka-{}", std::process::id()));
    let (mut bare_src, mut lg_src, mut bare_eo, mut lg_eo) = (vec![], vec![], vec![], vec![]);
    for run in 0..opts.repeat.max(1) {
        // Alternated, so that a slower broker later in the run weighs on both sides.
        bare_src.push(bare_source(brokers, opts, run)?);
        lg_src.push(lockgate_source(brokers, opts, cores)?);
        let out = format!("bare-out-{run}");
        create_topic(brokers, &out, opts.partitions)?;
        bare_eo.push(bare_pipeline(brokers, opts, run, &out)?);
        let out = format!("lockgate-out-{run}");
        create_topic(brokers, &out, opts.partitions)?;
        lg_eo.push(lockgate_pipeline(brokers, opts, cores, &out, &dir)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (bare_src, lg_src, bare_eo, lg_eo) = (
        median(bare_src),
        median(lg_src),
        median(bare_eo),
        median(lg_eo),
    );
    for (name, r, what) in [
        ("bare consumer", &bare_src, "bytes"),
        ("lockgate source", &lg_src, "bytes"),
        ("bare eos loop", &bare_eo, "written"),
        ("lockgate eos job", &lg_eo, "written"),
    ] {
        ensure!(
            r.records == opts.records as u64,
            "{name} read {} records, expected {}",
            r.records,
            opts.records
        );
        print(name, r, what);
    }
    ensure!(
        lg_src.out == bare_src.out,
        "the source read {} bytes, the bare consumer {}",
        lg_src.out,
        bare_src.out
    );
    ensure!(
        bare_eo.out == errors && lg_eo.out == errors,
        "ERROR lines written: bare {}, lockgate {}, expected {errors}",
        bare_eo.out,
        lg_eo.out
    );
    let rate = |r: &Run| r.records as f64 / r.elapsed.as_secs_f64();
    println!(
        "lockgate source / bare consumer: {:.1}%",
        100.0 * rate(&lg_src) / rate(&bare_src)
    );
    println!(
        "lockgate exactly-once job / bare exactly-once loop: {:.1}%",
        100.0 * rate(&lg_eo) / rate(&bare_eo)
    );
    Ok(())
}
