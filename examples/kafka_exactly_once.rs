//! Error counts per minute from the log lines of a Kafka topic, exactly once: each batch
//! reads a logged offset range per partition, the running counts are checkpointed, and
//! the per-batch output directories are replaced atomically, so killing this at any
//! moment and starting it again on the same checkpoint directory neither loses nor
//! double-counts a line.
//!
//! ```text
//! scripts/kafka.sh start                          # prints HOST:PORT of a local broker
//! cargo run --release --example kafka_exactly_once -- HOST:PORT logs /tmp/kafka-cp /tmp/kafka-out
//! ```
//! Without arguments it starts a throwaway broker itself, creates the topic `logs` and
//! writes a few sample lines to it first. It stops when it has read what the topic held
//! at start (`Trigger::AvailableNow`); drop that line to keep it running.

use std::time::Duration;

use lockgate_core::source::direct::{DirectStreamOptions, OnExpiredOffsets};
use lockgate_core::{StreamingContext, Trigger};
use lockgate_kafka::testing::{create_topic, produce, sample_log_lines, KafkaBroker};
use lockgate_kafka::{kafka_lines, KafkaConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut _broker = None;
    let brokers = match args.next() {
        Some(b) => b,
        None => {
            let b = KafkaBroker::start()?;
            create_topic(&b.brokers, "logs", 2)?;
            produce(&b.brokers, "logs", sample_log_lines(1000))?;
            let addr = b.brokers.clone();
            _broker = Some(b);
            addr
        }
    };
    let topic = args.next().unwrap_or_else(|| "logs".into());
    let checkpoint = args.next().unwrap_or_else(|| "/tmp/kafka-cp".into());
    let output = args.next().unwrap_or_else(|| "/tmp/kafka-out".into());

    let ctx = StreamingContext::get_or_create(&checkpoint, |builder| {
        let ctx = builder
            .app_name("kafka-exactly-once")
            .batch_interval(Duration::from_secs(1))
            .trigger(Trigger::AvailableNow)
            .build()?;
        let opts = DirectStreamOptions {
            max_records_per_partition: Some(200),
            // Stop, rather than skip, if retention deleted lines before they were read.
            on_expired_offsets: OnExpiredOffsets::Fail,
            ..Default::default()
        };
        kafka_lines(
            &ctx,
            KafkaConfig::new(brokers.as_str(), topic.as_str()),
            opts,
        )?
        .filter(|l| l.contains("ERROR"))
        // "[Fri Dec 18 00:01" — the minute of the line.
        .map(|l| (l.get(..17).unwrap_or_default().to_string(), 1i64))
        .update_state_by_key(|new: &[i64], n: Option<i64>| {
            Some(n.unwrap_or(0) + new.iter().sum::<i64>())
        })
        .name("errors_per_minute")
        .save_as_text_files(&format!("{output}/errors"), "txt");
        Ok(ctx)
    })?;
    // Ctrl-C stops it gracefully (planned batches finish first), as the CLI does.
    ctx.stop_gracefully_on_shutdown()?;
    ctx.start()?;
    ctx.await_termination()?;
    println!("done: counts under {output}/errors-<batch time>.txt/");
    Ok(())
}
