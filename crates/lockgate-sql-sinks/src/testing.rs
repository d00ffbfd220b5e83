//! A throwaway PostgreSQL server for tests, started by the repository's
//! `scripts/postgres.sh` (which installs Debian's PostgreSQL on first use) and stopped
//! when dropped.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The repository's server script.
pub fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/postgres.sh"
    ))
}

/// A running server; stopped (and its data deleted) on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    /// Its connection URL.
    pub url: String,
}

impl PgServer {
    fn run(&self, cmd: &str) -> Result<String> {
        lockgate_core::testing::run_service_script(
            &script(),
            cmd,
            "LOCKGATE_PG_DIR",
            &self.dir.path().join("pg"),
        )
        .map_err(Error::Config)
    }

    /// Starts a new server.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lockgate-pg-")
            .tempdir()
            .map_err(|e| Error::Config(format!("temp dir: {e}")))?;
        let mut s = PgServer {
            dir,
            url: String::new(),
        };
        s.url = s.run("start")?;
        Ok(s)
    }

    /// Stops the server abruptly, keeping its data (a crash of the database).
    pub fn pause(&self) -> Result<()> {
        self.run("pause").map(|_| ())
    }

    /// Starts a paused server again on the same port.
    pub fn resume(&self) -> Result<()> {
        self.run("resume").map(|_| ())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}
