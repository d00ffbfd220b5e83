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
//! - [`testing`]: a throwaway broker started by the repository's `scripts/kafka.sh`, and
//!   helpers to create topics and produce records.
//! - [`error`]: this crate's error type.

#![deny(missing_docs)]

pub mod error;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use sink::{KafkaOutRecord, KafkaSink, KafkaSinkConfig};
pub use source::{
    kafka_lines, kafka_records, kafka_stream, KafkaConfig, KafkaLog, KafkaRecord, Subscription,
};
