//! The error type of `lockgate-web`.

use std::net::IpAddr;

/// What can go wrong starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No port in the range could be bound.
    #[error("cannot listen on {host} ports {from}..={to}: {source}; choose another --ui-port")]
    Bind {
        /// The address.
        host: IpAddr,
        /// First port tried.
        from: u16,
        /// Last port tried.
        to: u16,
        /// The last error.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("UI server: {0}")]
    Io(#[from] std::io::Error),
}

/// The result type of `lockgate-web`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
