//! The error type of `lockgate-kafka`.

/// What can go wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid.
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    /// The client could not be created or the brokers could not be asked.
    #[error("Kafka at {brokers}: {message}")]
    Connect {
        /// The bootstrap servers.
        brokers: String,
        /// What failed.
        message: String,
        /// The client's error, when it gave one.
        #[source]
        cause: Option<Box<rdkafka::error::KafkaError>>,
    },
    /// The topic does not exist or has no partitions.
    #[error("Kafka topic `{topic}` at {brokers}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// What is wrong.
        message: String,
    },
    /// A partition's records could not be read.
    #[error("reading partition {partition} of Kafka topic `{topic}`: {message}")]
    Read {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What failed.
        message: String,
        /// The client's error, when it gave one.
        #[source]
        cause: Option<Box<rdkafka::error::KafkaError>>,
    },
    /// Records could not be written, or a transaction not committed.
    #[error("writing Kafka topic `{topic}`: {message}")]
    Write {
        /// The topic.
        topic: String,
        /// What failed.
        message: String,
        /// The client's error, when it gave one.
        #[source]
        cause: Option<Box<rdkafka::error::KafkaError>>,
    },
    /// Another producer with the same transactional id started: this one may not write
    /// any more.
    #[error(
        "the Kafka producer with transactional.id `{transactional_id}` was fenced: another \
         instance of this job (same application and sink) started and took over its \
         transactions; stop one of the two ({cause})"
    )]
    Fenced {
        /// The transactional id.
        transactional_id: String,
        /// The client's error.
        #[source]
        cause: Box<rdkafka::error::KafkaError>,
    },
    /// The broker test harness failed.
    #[error("test broker: {0}")]
    Harness(String),
}

impl Error {
    /// What went wrong without naming the brokers, topic or partition (for messages
    /// that name them already).
    pub fn detail(&self) -> String {
        match self {
            Error::Connect { message, .. }
            | Error::Topic { message, .. }
            | Error::Read { message, .. }
            | Error::Write { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Building a Kafka stream inside a job's graph (where errors are the engine's): a bad
/// setting is a configuration error of the job; anything else (brokers, topic, reads)
/// is the Kafka source's own error, kept whole as the source of
/// [`lockgate_core::Error::External`] (downcast it to this type).
impl From<Error> for lockgate_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Config(message) => {
                lockgate_core::Error::Config(format!("Kafka source: {message}"))
            }
            other => lockgate_core::Error::external("Kafka source", other),
        }
    }
}

/// The result type of `lockgate-kafka`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Regression: a broker outage became `invalid configuration: …` with its cause
    /// chain gone. Now only settings are configuration errors; the rest keeps the Kafka
    /// error whole, with the client's error under it.
    #[test]
    fn engine_errors_keep_the_kafka_error_and_its_cause() {
        let client = rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
        );
        let outage: lockgate_core::Error = Error::Connect {
            brokers: "b:9092".into(),
            message: format!("no metadata ({client})"),
            cause: Some(Box::new(client)),
        }
        .into();
        let text = outage.to_string();
        assert!(
            text.starts_with("Kafka source: Kafka at b:9092: no metadata"),
            "{text}"
        );
        assert!(!text.contains("invalid configuration"), "{text}");
        let kafka = outage
            .source()
            .and_then(|s| s.downcast_ref::<Error>())
            .expect("the Kafka error is the source");
        assert!(matches!(kafka, Error::Connect { .. }));
        let cause = kafka.source().expect("the client's error is kept");
        assert!(cause.is::<Box<rdkafka::error::KafkaError>>(), "{cause:?}");

        let setting: lockgate_core::Error = Error::Config("no topic given".into()).into();
        assert!(
            matches!(setting, lockgate_core::Error::Config(_)),
            "{setting}"
        );
    }
}
