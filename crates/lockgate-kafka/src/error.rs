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
            | Error::Read { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Building a Kafka stream inside a job's graph (where errors are the engine's): a bad
/// setting is a configuration error of the job.
impl From<Error> for lockgate_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Config(message) => {
                lockgate_core::Error::Config(format!("Kafka source: {message}"))
            }
            other => lockgate_core::Error::Config(other.to_string()),
        }
    }
}

/// The result type of `lockgate-kafka`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
