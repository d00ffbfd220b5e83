//! Kafka to PostgreSQL, exactly once, with the results and the offsets in one database:
//! error counts per minute from the log lines of a topic, upserted into a table in one
//! transaction per batch together with the batch's offset ranges (table
//! `lockgate_offsets`). A batch the database already committed is not written again
//! after a crash; and since the database records what each batch read, the job can
//! resume from it even without its checkpoint (`from_sink_offsets`).
//!
//! ```text
//! scripts/kafka.sh start         # prints HOST:PORT of a local broker
//! scripts/postgres.sh start      # prints a postgres:// URL
//! cargo run --release --example kafka_to_postgres_exactly_once -- HOST:PORT logs postgres://... /tmp/k2pg-cp
//! ```
//! Without arguments it starts a throwaway broker and PostgreSQL server itself, writes a
//! few sample lines, runs until it has read what the topic held at start, and prints the
//! table.

use std::time::Duration;

use lockgate_core::source::direct::DirectStreamOptions;
use lockgate_core::{StreamingContext, Trigger};
use lockgate_kafka::testing::{create_topic, produce, sample_log_lines, KafkaBroker};
use lockgate_kafka::{kafka_lines, KafkaConfig};
use lockgate_sql_sinks::testing::PgServer;
use lockgate_sql_sinks::{open_url, SqlSink, SqlType, SqlValue, Table, WriteMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut services = None;
    let (brokers, topic, url) = match (args.next(), args.next(), args.next()) {
        (Some(b), Some(t), Some(u)) => (b, t, u),
        _ => {
            let broker = KafkaBroker::start()?;
            create_topic(&broker.brokers, "logs", 2)?;
            produce(&broker.brokers, "logs", sample_log_lines(1000))?;
            let pg = PgServer::start()?;
            let found = (broker.brokers.clone(), "logs".to_string(), pg.url.clone());
            services = Some((broker, pg));
            found
        }
    };
    // With throwaway services, a checkpoint of its own too (an old one would name
    // offsets of another broker's topic).
    let checkpoint = args.next().unwrap_or_else(|| {
        let dir = std::env::temp_dir().join(format!("k2pg-cp-{}", std::process::id()));
        dir.to_string_lossy().into_owned()
    });

    let table = Table::new(
        "errors_per_minute",
        &[("minute", SqlType::Text), ("errors", SqlType::BigInt)],
        &["minute"],
    );
    let ctx = StreamingContext::get_or_create(&checkpoint, |builder| {
        let ctx = builder
            .app_name("kafka-to-postgres")
            .batch_interval(Duration::from_secs(1))
            .trigger(Trigger::AvailableNow)
            .build()?;
        let backend = open_url(&url).map_err(|e| lockgate_core::Error::external("SQL sink", e))?;
        let sink = SqlSink::new(
            "errors_per_minute",
            backend,
            table.clone(),
            WriteMode::Upsert,
            |(minute, n): &(String, i64)| vec![SqlValue::Text(minute.clone()), SqlValue::Int(*n)],
        )
        .map_err(|e| lockgate_core::Error::external("SQL sink", e))?;
        kafka_lines(
            &ctx,
            KafkaConfig::new(brokers.as_str(), topic.as_str()),
            DirectStreamOptions::default(),
        )?
        .filter(|l| l.contains("ERROR"))
        // "[Fri Dec 18 00:01" — the minute of the line.
        .map(|l| (l.get(..17).unwrap_or_default().to_string(), 1i64))
        .update_state_by_key(|new: &[i64], n: Option<i64>| {
            Some(n.unwrap_or(0) + new.iter().sum::<i64>())
        })
        .name("errors_per_minute")
        .write_to(sink);
        Ok(ctx)
    })?;
    ctx.start()?;
    ctx.await_termination()?;
    if services.is_some() {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        for row in client.query(
            "SELECT minute, errors FROM errors_per_minute ORDER BY minute",
            &[],
        )? {
            let (minute, errors): (String, i64) = (row.get(0), row.get(1));
            println!("{minute}] {errors}");
        }
    }
    Ok(())
}
