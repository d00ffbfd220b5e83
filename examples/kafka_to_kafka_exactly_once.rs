//! Consume, clean, write back to Kafka — exactly once end to end: read the log lines of
//! a topic (logged offset ranges per partition), keep the ERROR lines, trim them, and
//! write each to another topic in one Kafka transaction per batch whose commit also
//! records the batch id. Kill it at any moment and start it again on the same checkpoint
//! directory: a `read_committed` consumer of the output topic sees every error line
//! exactly once (each record also carries its batch id and index in the headers
//! `lockgate-batch` and `lockgate-seq`).
//!
//! ```text
//! scripts/kafka.sh start                  # prints HOST:PORT of a local broker
//! cargo run --release --example kafka_to_kafka_exactly_once -- HOST:PORT logs errors /tmp/k2k-cp
//! ```
//! Without arguments it starts a throwaway broker itself, creates the topics, writes a
//! few sample lines, runs until it has read what the topic held at start
//! (`Trigger::AvailableNow`; drop that line to keep it running) and prints how many
//! records the output topic holds.
//!
//! The producer is created once, when the sink is, and shared by every worker and batch
//! (in Spark it cannot be sent to the executors, so jobs make one per partition and
//! batch; Lockgate's workers share one process).

use std::time::Duration;

use lockgate_core::source::direct::DirectStreamOptions;
use lockgate_core::{StreamingContext, Trigger};
use lockgate_kafka::testing::{consume_all, create_topic, produce, KafkaBroker};
use lockgate_kafka::{kafka_lines, KafkaConfig, KafkaOutRecord, KafkaSink, KafkaSinkConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut broker = None;
    let brokers = match args.next() {
        Some(b) => b,
        None => {
            let b = KafkaBroker::start()?;
            create_topic(&b.brokers, "logs", 2)?;
            create_topic(&b.brokers, "errors", 2)?;
            let lines = (0..1000).map(|i| {
                let level = if i % 7 == 0 { "ERROR" } else { "INFO" };
                (i % 2, format!("  [{level}] request {i}  "))
            });
            produce(&b.brokers, "logs", lines)?;
            let addr = b.brokers.clone();
            broker = Some(b);
            addr
        }
    };
    let input = args.next().unwrap_or_else(|| "logs".into());
    let output = args.next().unwrap_or_else(|| "errors".into());
    // With throwaway services, a checkpoint of its own too (an old one would name
    // offsets of another broker's topic).
    let checkpoint = args.next().unwrap_or_else(|| {
        let dir = std::env::temp_dir().join(format!("k2k-cp-{}", std::process::id()));
        dir.to_string_lossy().into_owned()
    });

    let ctx = StreamingContext::get_or_create(&checkpoint, |builder| {
        let ctx = builder
            .app_name("kafka-to-kafka")
            .batch_interval(Duration::from_secs(1))
            .trigger(Trigger::AvailableNow)
            .build()?;
        let mut sink_config = KafkaSinkConfig::new(brokers.as_str(), output.as_str());
        if broker.is_some() {
            // The throwaway test broker hides the tail of multi-record batches from
            // readers: one record per request (not needed with Kafka itself).
            sink_config.properties = vec![
                ("batch.num.messages".into(), "1".into()),
                ("linger.ms".into(), "0".into()),
            ];
        }
        let sink = KafkaSink::new(
            "errors",
            "kafka-to-kafka",
            sink_config,
            |line: &String, _| KafkaOutRecord::value(line.as_bytes()),
        )
        .map_err(|e| lockgate_core::Error::external("Kafka sink", e))?;
        kafka_lines(
            &ctx,
            KafkaConfig::new(brokers.as_str(), input.as_str()),
            DirectStreamOptions::default(),
        )?
        .filter(|l| l.contains("ERROR"))
        .map(|l| l.trim().to_string())
        .write_to(sink);
        Ok(ctx)
    })?;
    ctx.start()?;
    ctx.await_termination()?;
    if broker.is_some() {
        let written = consume_all(&brokers, &output, 2, 143)?;
        println!("{} error lines in topic `{output}`", written.len());
    }
    Ok(())
}
