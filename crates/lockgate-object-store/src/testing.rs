//! A throwaway S3-compatible server for tests and demos: moto, started by the repository's
//! `scripts/s3.sh` (installed on first use) and stopped when dropped; it can be paused
//! (SIGSTOP) to play an outage of the store.

use std::path::PathBuf;

use crate::Options;

/// The bucket `scripts/s3.sh` creates.
pub const BUCKET: &str = "lockgate";

/// The repository's S3 server script.
pub fn script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/s3.sh"))
}

/// A running S3 server; stopped on drop.
pub struct S3Server {
    dir: tempfile::TempDir,
    /// Its endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The credentials any request to the test server may use (it checks none).
pub const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "lockgate"),
    ("AWS_SECRET_ACCESS_KEY", "lockgate"),
    ("AWS_REGION", "us-east-1"),
];

impl S3Server {
    fn run(&self, cmd: &str) -> Result<String, String> {
        let dir = self.dir.path().join("s3");
        lockgate_core::testing::run_service_script_with(
            &script(),
            cmd,
            &[("LOCKGATE_S3_DIR", dir.as_os_str())],
        )
    }

    /// Starts a new server with an empty bucket [`BUCKET`].
    pub fn start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("lockgate-s3-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut s = S3Server {
            dir,
            endpoint: String::new(),
        };
        s.endpoint = s.run("start")?;
        Ok(s)
    }

    /// The store settings that reach this server (endpoint, plain HTTP, credentials).
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("endpoint".to_string(), self.endpoint.clone()),
            ("allow_http".to_string(), "true".to_string()),
        ];
        for (k, v) in [
            ("access_key_id", CREDENTIALS[0].1),
            ("secret_access_key", CREDENTIALS[1].1),
            ("region", CREDENTIALS[2].1),
        ] {
            out.push((k.to_string(), v.to_string()));
        }
        out
    }

    /// Options reaching this server, with `lease_timeout` and the defaults otherwise.
    pub fn options(&self, lease_timeout: std::time::Duration) -> Options {
        Options {
            settings: self.settings(),
            lease_timeout,
            ..Options::default()
        }
    }

    /// `s3://lockgate/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// Freezes the server (SIGSTOP): requests hang, as in an outage of the store.
    pub fn pause(&self) -> Result<(), String> {
        self.run("pause").map(|_| ())
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn resume(&self) -> Result<(), String> {
        self.run("resume").map(|_| ())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}
