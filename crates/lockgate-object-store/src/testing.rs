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

/// An object-store checkpoint prefix for the development tools (`lockgate-dev torture`
/// and `bench` with `--checkpoint-url`): the URL and its settings as given, or, for an
/// `s3://` URL without an `endpoint=` setting, a throwaway local server (kept running as
/// long as this value) with its settings and credentials.
pub struct ToolStore {
    /// The URL prefix, without a trailing `/`.
    pub url: String,
    /// `KEY=VALUE` settings, as `--checkpoint-option` takes them.
    pub settings: Vec<String>,
    /// Environment variables a child process needs (the local server's credentials).
    pub env: Vec<(&'static str, &'static str)>,
    /// The local server, when one was started.
    pub server: Option<S3Server>,
}

impl ToolStore {
    /// The store of `url` with `given` settings.
    pub fn new(url: &str, given: &[String]) -> Result<Self, String> {
        if !crate::is_object_store(url) {
            return Err(format!(
                "--checkpoint-url {url}: not an object store's URL (s3://BUCKET/PREFIX)"
            ));
        }
        let mut settings = given.to_vec();
        let (mut env, mut server) = (Vec::new(), None);
        if url.starts_with("s3://") && !settings.iter().any(|s| s.starts_with("endpoint=")) {
            let s = S3Server::start().map_err(|e| format!("starting the local S3 server: {e}"))?;
            settings.extend(s.settings().iter().map(|(k, v)| format!("{k}={v}")));
            env.extend(CREDENTIALS);
            server = Some(s);
        }
        Ok(ToolStore {
            url: url.trim_end_matches('/').to_string(),
            settings,
            env,
            server,
        })
    }

    /// Options reaching the store, to open it in this process.
    pub fn options(&self) -> Result<Options, crate::Error> {
        let mut options = Options::default();
        for s in &self.settings {
            options.parse_setting(s)?;
        }
        Ok(options)
    }

    /// Adds `--checkpoint-option` settings and the environment to a child's command.
    pub fn apply(&self, c: &mut std::process::Command) {
        for s in &self.settings {
            c.arg("--checkpoint-option").arg(s);
        }
        c.envs(self.env.iter().copied());
    }
}
