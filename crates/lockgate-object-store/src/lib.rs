//! Lockgate checkpoints on object storage: plans, commits, metadata, state deltas and
//! snapshots, the file source's taken files and the receivers' write-ahead logs under
//! one prefix of an S3 bucket (or S3-compatible server), a Google Cloud Storage bucket or
//! an Azure container, in the same layout as a local checkpoint directory.
//!
//! [`open`] turns a location (`s3://BUCKET/PREFIX`, `gs://...`, `az://...`, a path or
//! `file://`) into a [`CheckpointLocation`] for
//! [`StreamingContext::get_or_create`](lockgate_core::StreamingContext::get_or_create):
//!
//! ```no_run
//! use lockgate_core::StreamingContext;
//! use lockgate_object_store::{open, Options};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut options = Options::default();
//! options.set("endpoint", "http://127.0.0.1:9000")?;
//! options.set("allow_http", "true")?;
//! let location = open("s3://my-bucket/jobs/word-count", &options)?;
//! let ctx = StreamingContext::get_or_create(location, |b| b.build())?;
//! # Ok(()) }
//! ```
//!
//! **One owner at a time** ([`lease`]): a lease object, created and renewed with
//! conditional writes, names the owning process and its *generation*. Every file is
//! written with a create-only request tagged with the writer's generation; a file found
//! in the way is read back: the same bytes are a write whose answer was lost, an older
//! generation's file is replaced (conditionally on its ETag), a newer generation's file
//! means another process took over, and this one stops with an error naming it.
//!
//! **Outages** (the private `client` module): every request is retried with back-off for up to
//! [`Options::retry_timeout`], each retry logged and counted; then the operation fails
//! with an error naming the store, the object and the operation.

#![deny(missing_docs)]

mod client;
mod error;
pub mod lease;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use store::ObjectStorage;

use std::sync::Arc;
use std::time::Duration;

use lockgate_core::storage::{CheckpointLocation, Storage};

/// How an object-store checkpoint is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// Store settings (`endpoint`, `region`, `allow_http`, `access_key_id`, ... as
    /// `object_store` names them), on top of the standard environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub settings: Vec<(String, String)>,
    /// How long an owner's lease lasts without renewal: a standby takes over this long
    /// after the owner stopped renewing (default 10 s).
    pub lease_timeout: Duration,
    /// How long a request is retried through an outage before the operation fails
    /// (default 2 minutes).
    pub retry_timeout: Duration,
    /// This process's name in the lease (default: host name and pid).
    pub instance: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Vec::new(),
            lease_timeout: Duration::from_secs(10),
            retry_timeout: Duration::from_secs(120),
            instance: default_instance(),
        }
    }
}

impl Options {
    /// Adds a store setting from `KEY=VALUE` (the CLI's `--checkpoint-option`).
    pub fn parse_setting(&mut self, spec: &str) -> Result<()> {
        let (k, v) = spec.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "checkpoint option `{spec}`: expected KEY=VALUE, e.g. endpoint=http://127.0.0.1:9000"
            ))
        })?;
        self.set(k.trim(), v.trim())
    }

    /// Adds a store setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Config("checkpoint option with an empty key".into()));
        }
        self.settings.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

/// The host name and pid, as an instance's default name.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// True when `location` names an object store (`s3://`, `gs://`, `az://`, ...) rather
/// than a local directory (a path or `file://`).
pub fn is_object_store(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| scheme != "file")
}

/// Opens a checkpoint location: a directory (a path or `file://`) or an object store.
/// Store settings given for a directory are refused (they would silently do nothing).
pub fn open(location: &str, options: &Options) -> Result<CheckpointLocation> {
    if !is_object_store(location) {
        if let Some((k, _)) = options.settings.first() {
            return Err(Error::Config(format!(
                "checkpoint option `{k}` applies to object stores, but `{location}` is a local \
                 directory; drop the option or give an s3://, gs:// or az:// location"
            )));
        }
        return CheckpointLocation::local(location).map_err(Error::Core);
    }
    let storage: Arc<dyn Storage> = Arc::new(ObjectStorage::open(location, options)?);
    Ok(CheckpointLocation(storage))
}
