//! The error type of `lockgate-core`: one enum, variants by the phase that failed.

use std::path::PathBuf;

use crate::clock::Time;

/// A boxed error as returned by user code (output functions, receivers).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the core engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid (builder settings, options).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The stream graph is invalid; reported when the context starts.
    #[error("invalid stream graph at operator `{operator}`: {reason}")]
    Graph {
        /// The stable name of the operator at fault.
        operator: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// The context was used in a state that does not allow the call
    /// (for example `start` twice, or adding streams after `start`).
    #[error("streaming context: {0}")]
    Lifecycle(String),

    /// A source could not plan or read its input.
    #[error("source `{source_name}`: {message}")]
    Source {
        /// The source's name.
        source_name: String,
        /// What failed.
        message: String,
    },

    /// An operator failed (a user function panicked or misused its state)
    /// while computing a batch.
    #[error("operator `{operator}` failed at batch time {time}: {message}")]
    Operator {
        /// The stable name of the operator.
        operator: String,
        /// The batch time being computed.
        time: Time,
        /// The panic message or reason.
        message: String,
    },

    /// An output operation returned an error.
    #[error("output `{operator}` failed at batch time {time}: {source}")]
    Output {
        /// The output operation's name.
        operator: String,
        /// The batch time being written.
        time: Time,
        /// The error the output returned.
        #[source]
        source: BoxError,
    },

    /// A checkpoint file is missing, truncated, corrupt or from an incompatible version.
    #[error("checkpoint file `{}`: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// An operator's checkpointed state does not decode (damaged files, or written by
    /// code whose state types encode differently under the same names).
    #[error(
        "checkpoint state of operator `{operator}` in `{}` does not decode: {source}; \
         restore the directory from a backup, or give the operator a new name with \
         .name(..) and start it empty (StateUpgrade::StartEmpty; on the CLI, where \
         operators keep their names, move the checkpoint away to start anew)",
        path.display()
    )]
    StateDecode {
        /// The operator's stable name.
        operator: String,
        /// Its state directory.
        path: PathBuf,
        /// What failed to decode.
        #[source]
        source: crate::codec::CodecError,
    },

    /// Recovery found operator state that does not match the graph built by the code.
    #[error("checkpoint state of operator `{operator}`: {reason}")]
    StateMismatch {
        /// The operator's stable name.
        operator: String,
        /// What differs and which option resolves it.
        reason: String,
    },

    /// A component outside the engine (a connector such as the Kafka source, a sink's
    /// database client) failed; its own error is kept as the source, so a caller can
    /// downcast it and the whole cause chain is there.
    #[error("{component}: {source}")]
    External {
        /// The component ("Kafka source", "SQL sink", ...).
        component: String,
        /// The component's error.
        #[source]
        source: BoxError,
    },

    /// A checkpoint store (an object store) failed an operation, after retrying for as
    /// long as allowed.
    #[error("checkpoint store `{location}`: {operation} failed: {source}")]
    Store {
        /// What was being done ("put", "get", "list", "delete", "renew the lease").
        operation: String,
        /// The object or prefix (a URL, never with secrets).
        location: String,
        /// The store's error.
        #[source]
        source: BoxError,
    },

    /// Another process took over the checkpoint: this one must stop writing.
    #[error("checkpoint `{location}`: this process no longer owns it: {reason}")]
    Fenced {
        /// The checkpoint's location.
        location: String,
        /// Who took over, and when.
        reason: String,
    },

    /// A file or directory could not be read or written.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done ("read file", "create directory", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::External`] for `component`'s error.
    pub fn external(component: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::External {
            component: component.into(),
            source: source.into(),
        }
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The result type of `lockgate-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
