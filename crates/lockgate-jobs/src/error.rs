//! The error type of `lockgate-jobs`.

/// What can go wrong setting up or running a built-in job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job's settings do not fit together (the message names the flag and the fix).
    #[error("{0}")]
    Config(String),
    /// The engine refused the job's graph or failed running it.
    #[error(transparent)]
    Engine(#[from] lockgate_core::Error),
    /// The checkpoint could not be opened or recovered.
    #[error("opening checkpoint {dir}")]
    Checkpoint {
        /// The directory or URL.
        dir: String,
        /// Why.
        #[source]
        source: lockgate_core::Error,
    },
    /// A SQL query cannot run (refused at start, before any batch).
    #[error(transparent)]
    Sql(#[from] lockgate_sql::Error),
    /// A file or directory could not be written (sample data).
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A SQL sink could not be set up.
    #[error(transparent)]
    Sink(#[from] lockgate_sql_sinks::Error),
    /// Kafka could not be asked (topics, the consumer group of a scale-out job).
    #[error(transparent)]
    Kafka(#[from] lockgate_kafka::Error),
    /// The consumer group gave this instance's partitions to others while it did not
    /// answer (paused, cut off): their tasks run elsewhere now.
    #[error(
        "instance {instance} lost partitions {partitions} to the consumer group: it did not \
         answer within the session timeout (paused or cut off) and other instances took \
         over their tasks; stopping (a restart joins the group as a new member)"
    )]
    Lost {
        /// This instance.
        instance: String,
        /// The partitions taken (`<topic>-<partition>`, comma-separated).
        partitions: String,
    },
    /// A scale-out task failed: the instance stops (its partitions go to the others).
    #[error("scale-out task {task}")]
    Task {
        /// The task (`<topic>-<partition>`).
        task: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// An I/O error doing `what` on `path`.
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The result type of `lockgate-jobs`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
