//! The error type of `lockgate-object-store`: opening a location (its URL and settings).
//! Failures of the checkpoint's operations are the core's errors
//! ([`lockgate_core::Error::Store`], [`lockgate_core::Error::Fenced`]), since the engine
//! reports them.

/// What can go wrong opening an object-store checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The location or a setting is invalid.
    #[error("invalid checkpoint location: {0}")]
    Config(String),

    /// The store client could not be built from the URL and settings.
    #[error("checkpoint location `{location}`: {source}")]
    Open {
        /// The location (without secrets).
        location: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },

    /// The engine refused the location.
    #[error(transparent)]
    Core(#[from] lockgate_core::Error),
}

/// The result type of `lockgate-object-store`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
