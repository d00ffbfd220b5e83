//! [`ObjectStorage`]: a checkpoint location on an object store, through the
//! `object_store` crate, with every request retried through outages and counted.
//!
//! Writes are create-only and tagged with the writer's lease generation (user metadata
//! `lockgate-generation`); see the crate's docs and [`crate::lease`] for why. The client
//! is async; this storage is called from the engine's threads, so it owns a small tokio
//! runtime and blocks on it (from a thread of its own when the caller is itself inside a
//! runtime).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use lockgate_core::checkpoint::file::Placement;
use lockgate_core::checkpoint::storage::{Listed, Ownership, Storage, StorageStats, Takeover};
use lockgate_core::Error as CoreError;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};

use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseHold};
use crate::Options;

/// The user metadata naming the lease generation that wrote an object.
const GENERATION: &str = "lockgate-generation";

/// How many writes of one group run at once.
const PARALLEL_WRITES: usize = 16;

/// Request counts.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    puts: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    retries: AtomicU64,
    retrying: AtomicBool,
    /// True while waiting as a standby for the lease.
    pub(crate) standby: AtomicBool,
    /// True once any request succeeded: before that, a failure is more likely a wrong
    /// endpoint or missing credentials than an outage, and is reported sooner.
    reached: AtomicBool,
}

/// How long requests are retried before the store was ever reached.
const FIRST_CONTACT_RETRY: Duration = Duration::from_secs(15);

/// An object read with its version.
pub(crate) struct Versioned {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
    pub generation: u64,
}

/// What a conditional write found.
pub(crate) enum Conditional {
    /// Written; the new ETag.
    Written(Option<String>),
    /// The object exists (create) or changed (update).
    Conflict,
}

/// A checkpoint location in an object store.
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

/// Shows the location only: the client's own `Debug` may hold credentials.
impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("location", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

/// The storage's client, counts and lease, shared with the lease's renewal thread.
pub(crate) struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: String,
    runtime: tokio::runtime::Runtime,
    retry_timeout: Duration,
    pub(crate) counts: Counts,
    /// When a failed request was last logged.
    warned: std::sync::Mutex<Option<Instant>>,
    /// Since when requests fail (an outage), if they do.
    outage: std::sync::Mutex<Option<Instant>>,
    pub(crate) lease: Lease,
}

/// Lower-cased schemes of the object stores understood.
fn scheme_of(url: &str) -> Option<&str> {
    url.split_once("://").map(|(s, _)| s)
}

impl ObjectStorage {
    /// Opens `url` (`s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`,
    /// `az://CONTAINER/PREFIX`) with `options`.
    pub fn open(url: &str, options: &Options) -> Result<Self> {
        let bad = |why: String| Error::Config(format!("`{url}`: {why}"));
        let scheme = scheme_of(url).ok_or_else(|| bad("not a URL".into()))?;
        let rest = &url[scheme.len() + 3..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(format!(
                "no bucket after `{scheme}://`; write {scheme}://BUCKET/PREFIX"
            )));
        }
        let prefix = prefix.trim_matches('/').to_string();
        let shown = if prefix.is_empty() {
            format!("{scheme}://{bucket}")
        } else {
            format!("{scheme}://{bucket}/{prefix}")
        };
        let open_err = |source| Error::Open {
            location: shown.clone(),
            source,
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_config(AmazonS3ConfigKey::ConditionalPut, "etag")
                    .with_retry(client_retry());
                b = with_timeouts(b, |b, k, v| b.with_config(AmazonS3ConfigKey::Client(k), v));
                for (k, v) in &options.settings {
                    let key: AmazonS3ConfigKey = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_setting(k, &shown))?;
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(open_err)?)
            }
            "gs" => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(client_retry());
                b = with_timeouts(b, |b, k, v| b.with_config(GoogleConfigKey::Client(k), v));
                for (k, v) in &options.settings {
                    let key: GoogleConfigKey = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_setting(k, &shown))?;
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(open_err)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_retry(client_retry());
                b = with_timeouts(b, |b, k, v| b.with_config(AzureConfigKey::Client(k), v));
                for (k, v) in &options.settings {
                    let key: AzureConfigKey = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| unknown_setting(k, &shown))?;
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(open_err)?)
            }
            other => {
                return Err(bad(format!(
                    "`{other}://` is not a checkpoint store; use a directory, file://, s3://, \
                     gs:// or az://"
                )))
            }
        };
        Self::with_store(store, &shown, &prefix, options)
    }

    /// A storage on an already built `store` (any `object_store` implementation, e.g.
    /// `InMemory` in tests), under `prefix`, shown as `shown`.
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        shown: &str,
        prefix: &str,
        options: &Options,
    ) -> Result<Self> {
        if options.lease_timeout < Duration::from_millis(500) {
            return Err(Error::Config(format!(
                "lease timeout {:?} is too short: renewals every fifth of it must reach the \
                 store; give at least 500 ms (10 s is the default)",
                options.lease_timeout
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lockgate-object-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the object-store client: {e}")))?;
        let inner = Inner {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            shown: shown.to_string(),
            runtime,
            retry_timeout: options.retry_timeout,
            counts: Counts::default(),
            warned: std::sync::Mutex::new(None),
            outage: std::sync::Mutex::new(None),
            lease: Lease::new(&options.instance, options.lease_timeout),
        };
        Ok(ObjectStorage {
            inner: Arc::new(inner),
        })
    }
}

impl ObjectStorage {
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    /// Where it is, for messages.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// How long requests are retried.
    pub(crate) fn retry_timeout(&self) -> Duration {
        self.retry_timeout
    }

    /// A path-like name of `key` for messages.
    pub(crate) fn name_of(&self, key: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}/{key}", self.shown))
    }

    fn path(&self, key: &str) -> ObjectPath {
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        };
        ObjectPath::from(full)
    }

    /// The key of `path` relative to `dir_key`'s path: its last segment.
    fn last_segment(path: &ObjectPath) -> String {
        path.filename().unwrap_or_default().to_string()
    }

    /// Runs `fut` to completion on this storage's runtime.
    pub(crate) fn block<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside another runtime (a caller's async code): block a thread of our own.
            std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(fut))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.runtime.block_on(fut)
        }
    }

    /// Runs one request, retrying what may pass (timeouts, refused connections, server
    /// errors) with back-off until `deadline` after the first failure; every retry is
    /// counted and the first (then one every 10 s) logged.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        operation: &str,
        key: &str,
        limit: Duration,
        count: &AtomicU64,
        f: F,
    ) -> std::result::Result<T, object_store::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, object_store::Error>>,
    {
        let started = Instant::now();
        let limit = if self.counts.reached.load(Ordering::Relaxed) {
            limit
        } else {
            limit.min(FIRST_CONTACT_RETRY)
        };
        let mut delay = Duration::from_millis(50);
        loop {
            count.fetch_add(1, Ordering::Relaxed);
            match f().await {
                Err(e) if transient(&e) && started.elapsed() < limit => {
                    self.counts.retries.fetch_add(1, Ordering::Relaxed);
                    self.counts.retrying.store(true, Ordering::Relaxed);
                    lockgate_core::sync::lock(&self.outage).get_or_insert_with(Instant::now);
                    // One line per 10 s for the whole store (writes go out in parallel).
                    let due = {
                        let mut last = lockgate_core::sync::lock(&self.warned);
                        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                        if due {
                            *last = Some(Instant::now());
                        }
                        due
                    };
                    if due {
                        tracing::warn!(store = %self.shown, operation, key, error = %e, retrying_for_s = started.elapsed().as_secs(), limit_s = limit.as_secs(), retries_so_far = self.counts.retries.load(Ordering::Relaxed), "checkpoint store request failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                answer => {
                    // The store answered (a success, or an answer such as "exists").
                    if !matches!(&answer, Err(e) if transient(e)) {
                        self.answered();
                    }
                    return answer;
                }
            }
        }
    }

    /// The store answered a request: ends an outage (logged with its length).
    fn answered(&self) {
        self.counts.reached.store(true, Ordering::Relaxed);
        if self.counts.retrying.swap(false, Ordering::Relaxed) {
            if let Some(since) = lockgate_core::sync::lock(&self.outage).take() {
                tracing::info!(store = %self.shown, outage_ms = since.elapsed().as_millis() as u64, retries = self.counts.retries.load(Ordering::Relaxed), "checkpoint store reachable again");
            }
        }
    }

    fn store_err(&self, operation: &str, key: &str, e: object_store::Error) -> CoreError {
        let after = if !self.counts.reached.load(Ordering::Relaxed) {
            format!(
                " (the store was never reached, retried for {} s: check the endpoint and region \
                 (--checkpoint-option endpoint=URL, region=NAME) and the credentials \
                 (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the machine's role))",
                FIRST_CONTACT_RETRY.min(self.retry_timeout).as_secs()
            )
        } else if transient(&e) {
            format!(" (retried for {} s)", self.retry_timeout.as_secs())
        } else {
            String::new()
        };
        CoreError::Store {
            operation: format!("{operation}{after}"),
            location: self.name_of(key).display().to_string(),
            source: Box::new(e),
        }
    }

    /// Reads `key` with its ETag and writer generation.
    pub(crate) async fn get_versioned(
        &self,
        key: &str,
        limit: Duration,
    ) -> lockgate_core::Result<Option<Versioned>> {
        let path = self.path(key);
        let got = self
            .retrying("get", key, limit, &self.counts.gets, || async {
                let r = self.store.get(&path).await?;
                let etag = r.meta.e_tag.clone();
                let generation = r
                    .attributes
                    .get(&Attribute::Metadata(GENERATION.into()))
                    .and_then(|v| v.as_ref().parse().ok())
                    .unwrap_or(0);
                let bytes = r.bytes().await?;
                Ok((bytes.to_vec(), etag, generation))
            })
            .await;
        match got {
            Ok((bytes, etag, generation)) => Ok(Some(Versioned {
                bytes,
                etag,
                generation,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("get", key, e)),
        }
    }

    /// A conditional write: create-only (`etag` None) or replace-if-unchanged.
    pub(crate) async fn put_conditional(
        &self,
        key: &str,
        bytes: Vec<u8>,
        generation: u64,
        etag: Option<String>,
        limit: Duration,
    ) -> lockgate_core::Result<Conditional> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes);
        let mode = match &etag {
            None => PutMode::Create,
            Some(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.clone()),
                version: None,
            }),
        };
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(GENERATION.into()),
            AttributeValue::from(generation.to_string()),
        );
        let put = self
            .retrying("put", key, limit, &self.counts.puts, || {
                let opts = PutOptions {
                    mode: mode.clone(),
                    attributes: attributes.clone(),
                    ..Default::default()
                };
                self.store.put_opts(&path, payload.clone(), opts)
            })
            .await;
        match put {
            Ok(r) => Ok(Conditional::Written(r.e_tag)),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => Ok(Conditional::Conflict),
            Err(e) => Err(self.store_err("put", key, e)),
        }
    }

    /// Writes one file as generation `generation`: create-only; a file in the way is
    /// read back and kept (same bytes: a write whose answer was lost), replaced (an
    /// older generation's, conditionally on its ETag) or a sign of a successor (a newer
    /// generation's: fenced).
    pub(crate) async fn put_file(
        &self,
        key: String,
        bytes: Vec<u8>,
        generation: u64,
    ) -> lockgate_core::Result<()> {
        let limit = self.retry_timeout;
        let mut etag = None;
        for _ in 0..8 {
            match self
                .put_conditional(&key, bytes.clone(), generation, etag.take(), limit)
                .await?
            {
                Conditional::Written(_) => return Ok(()),
                Conditional::Conflict => {}
            }
            let Some(found) = self.get_versioned(&key, limit).await? else {
                continue; // deleted meanwhile: create again
            };
            if found.bytes == bytes {
                return Ok(());
            }
            if found.generation > generation {
                return Err(self.lease.fenced(
                    &self.shown,
                    format!(
                        "`{}` was written by generation {} of the lease; this process holds \
                         generation {generation}",
                        self.name_of(&key).display(),
                        found.generation
                    ),
                ));
            }
            // An older owner's file (or ours, rewritten): replace exactly that version.
            self.lease.check(self)?;
            etag = found.etag;
            if etag.is_none() {
                return Err(CoreError::Store {
                    operation: "replace a file (the store returned no ETag)".into(),
                    location: self.name_of(&key).display().to_string(),
                    source: "conditional writes need ETags".into(),
                });
            }
        }
        Err(CoreError::Store {
            operation: "put".into(),
            location: self.name_of(&key).display().to_string(),
            source: "the file kept changing under this process's writes".into(),
        })
    }
}

/// No retries in the client: [`Inner::retrying`] retries every failed request itself,
/// so that each is logged and counted, and decides how long an outage is ridden through.
fn client_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 0,
        retry_timeout: Duration::from_secs(10),
    }
}

/// Request timeouts: a store that stopped answering is noticed (logged, counted,
/// retried) within seconds. Settings `timeout` and `connect_timeout` override them (for
/// large state on a slow link).
fn with_timeouts<B>(b: B, set: impl Fn(B, object_store::ClientConfigKey, &str) -> B) -> B {
    let b = set(b, object_store::ClientConfigKey::ConnectTimeout, "2s");
    set(b, object_store::ClientConfigKey::Timeout, "5s")
}

fn unknown_setting(key: &str, shown: &str) -> Error {
    Error::Config(format!(
        "`{shown}`: unknown checkpoint option `{key}`; use the store's setting names, e.g. \
         endpoint, region, allow_http, access_key_id, secret_access_key (S3), \
         service_account (GCS), account_name (Azure)"
    ))
}

/// Errors that may pass: network failures, timeouts, server errors.
fn transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
            | E::InvalidPath { .. }
    )
}

impl Inner {
    pub(crate) fn location(&self) -> &str {
        &self.shown
    }

    pub(crate) fn get(&self, key: &str) -> lockgate_core::Result<Option<Vec<u8>>> {
        self.block(self.get_versioned(key, self.retry_timeout))
            .map(|v| v.map(|v| v.bytes))
    }

    pub(crate) fn put_all(
        &self,
        files: Vec<(String, Vec<u8>)>,
        _placement: Placement,
    ) -> lockgate_core::Result<()> {
        let generation = self.lease.check(self)?;
        self.block(async {
            futures::stream::iter(files)
                .map(|(key, bytes)| self.put_file(key, bytes, generation))
                .buffer_unordered(PARALLEL_WRITES)
                .try_collect::<Vec<()>>()
                .await
        })?;
        // A write that landed after a successor took over is never acted on: this
        // process stops here instead.
        self.lease.check(self)?;
        Ok(())
    }

    pub(crate) fn list(&self, dir: &str) -> lockgate_core::Result<Vec<Listed>> {
        let path = self.path(dir);
        let listed =
            self.block(
                self.retrying("list", dir, self.retry_timeout, &self.counts.lists, || {
                    self.store.list_with_delimiter(Some(&path))
                }),
            );
        let listed = listed.map_err(|e| self.store_err("list", dir, e))?;
        let mut out: Vec<Listed> = listed
            .common_prefixes
            .iter()
            .map(|p| Listed {
                name: Self::last_segment(p),
                bytes: 0,
                dir: true,
            })
            .chain(listed.objects.iter().map(|o| Listed {
                name: Self::last_segment(&o.location),
                bytes: o.size,
                dir: false,
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) fn delete(&self, key: &str) -> lockgate_core::Result<()> {
        self.lease.check(self)?;
        let path = self.path(key);
        let done = self.block(self.retrying(
            "delete",
            key,
            self.retry_timeout,
            &self.counts.deletes,
            || self.store.delete(&path),
        ));
        match done {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("delete", key, e)),
        }
    }

    pub(crate) fn delete_dir(&self, dir: &str) -> lockgate_core::Result<()> {
        self.lease.check(self)?;
        let path = self.path(dir);
        let objects: Vec<ObjectPath> = self
            .block(self.retrying(
                "list",
                dir,
                self.retry_timeout,
                &self.counts.lists,
                || async {
                    self.store
                        .list(Some(&path))
                        .map_ok(|m| m.location)
                        .try_collect::<Vec<_>>()
                        .await
                },
            ))
            .map_err(|e| self.store_err("list", dir, e))?;
        for p in objects {
            let done = self.block(self.retrying(
                "delete",
                p.as_ref(),
                self.retry_timeout,
                &self.counts.deletes,
                || self.store.delete(&p),
            ));
            match done {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err("delete", p.as_ref(), e)),
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> StorageStats {
        let c = &self.counts;
        StorageStats {
            puts: c.puts.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            retrying: c.retrying.load(Ordering::Relaxed),
            standby: c.standby.load(Ordering::Relaxed),
        }
    }
}

impl Storage for ObjectStorage {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn get(&self, key: &str) -> lockgate_core::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[String]) -> Vec<lockgate_core::Result<Option<Vec<u8>>>> {
        let inner = &self.inner;
        let reads: Vec<_> = keys
            .iter()
            .map(|k| inner.get_versioned(k, inner.retry_timeout()))
            .collect();
        let got = inner.block(
            futures::stream::iter(reads)
                .buffered(PARALLEL_WRITES)
                .collect::<Vec<_>>(),
        );
        got.into_iter()
            .map(|r| r.map(|v| v.map(|v| v.bytes)))
            .collect()
    }
    fn put_all(
        &self,
        files: Vec<(String, Vec<u8>)>,
        placement: Placement,
    ) -> lockgate_core::Result<()> {
        self.inner.put_all(files, placement)
    }
    fn sync(&self) -> lockgate_core::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &str) -> lockgate_core::Result<Vec<Listed>> {
        self.inner.list(dir)
    }
    fn delete(&self, key: &str) -> lockgate_core::Result<()> {
        self.inner.delete(key)
    }
    fn delete_dir(&self, dir: &str) -> lockgate_core::Result<()> {
        self.inner.delete_dir(dir)
    }
    fn take_ownership(&self, takeover: Takeover) -> lockgate_core::Result<Box<dyn Ownership>> {
        let hold: LeaseHold = Lease::acquire(&self.inner, takeover)?;
        Ok(Box::new(hold))
    }
    fn check_owner(&self) -> lockgate_core::Result<()> {
        self.inner.lease.check(&self.inner).map(|_| ())
    }
    fn stats(&self) -> StorageStats {
        self.inner.stats()
    }
}
