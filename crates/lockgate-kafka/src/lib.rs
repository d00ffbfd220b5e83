//! Kafka for Lockgate: the direct source ([`kafka_stream`], [`kafka_lines`]) reads a
//! topic in per-partition offset ranges planned and logged per batch (the engine's
//! [`direct_stream`](lockgate_core::StreamingContext::direct_stream)), so a batch
//! replayed after a crash reads exactly the same records; positions live in the
//! checkpoint, not in consumer-group offsets.
//!
//! - [`source`]: the [`KafkaLog`](source::KafkaLog) (bounds by metadata and watermark
//!   queries, reads by assigning a partition at an offset) and the stream constructors.
//! - [`sink`]: [`KafkaSink`], writing each batch to a topic exactly once (one
//!   transaction per batch, committing the batch id with it) or at least once.
//! - [`group`]: [`GroupMember`](group::GroupMember), membership of a consumer group
//!   that tells a scale-out job which partitions' tasks this instance runs.
//! - [`repartition`]: repartition topics (first-stage writes, second-stage reads with
//!   de-duplication), for keyed state in scale-out jobs.
//! - [`admin`]: topic creation (repartition topics) and partition counts.
//! - [`testing`]: a throwaway broker started by the repository's `scripts/kafka.sh`, and
//!   helpers to create topics and produce records.
//! - [`error`]: this crate's error type.
//!
//! Kafka in, errors filtered, Kafka out, exactly once (a checkpoint for the source's
//! offset ranges, one transaction per batch for the sink):
//!
//! ```no_run
//! use std::time::Duration;
//! use lockgate_core::source::direct::DirectStreamOptions;
//! use lockgate_core::StreamingContext;
//! use lockgate_kafka::{kafka_lines, KafkaConfig, KafkaOutRecord, KafkaSink, KafkaSinkConfig};
//!
//! let ctx = StreamingContext::get_or_create("/var/lib/lockgate/errors", |b| {
//!     let ctx = b
//!         .app_name("errors")
//!         .batch_interval(Duration::from_secs(1))
//!         .build()?;
//!     let lines = kafka_lines(
//!         &ctx,
//!         KafkaConfig::new("127.0.0.1:9092", "logs"),
//!         DirectStreamOptions::default(),
//!     )?;
//!     let sink = KafkaSink::new(
//!         "errors-out",
//!         "errors",
//!         KafkaSinkConfig::new("127.0.0.1:9092", "errors"),
//!         |line: &String, _time| KafkaOutRecord::value(line.clone()),
//!     )?;
//!     lines.filter(|l| l.contains("ERROR")).write_to(sink);
//!     Ok(ctx)
//! })?;
//! ctx.start()?;
//! ctx.await_termination()?;
//! # Ok::<(), lockgate_core::Error>(())
//! ```

#![deny(missing_docs)]

pub mod admin;
pub mod error;
pub mod group;
mod probe;
pub mod repartition;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use sink::{KafkaOutRecord, KafkaSink, KafkaSinkConfig};
pub use source::{
    kafka_lines, kafka_records, kafka_stream, KafkaConfig, KafkaLog, KafkaRecord, Subscription,
};
