//! The object-store client under a checkpoint location: every request is retried
//! through outages with back-off, counted and logged, and writes are conditional
//! (create-only or replace-if-unchanged) and tagged with the writer's lease generation
//! (user metadata `lockgate-generation`). What a generation means, and who may write,
//! is the lease's business, not the client's. The client is async; the engine calls it
//! from its own threads, so it owns a small tokio runtime and blocks on it (from a
//! thread of its own when the caller is itself inside a runtime).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lockgate_core::storage::{Listed, StorageStats};
use lockgate_core::sync::lock;
use lockgate_core::Error as CoreError;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};

use crate::error::{Error, Result};

/// The user metadata naming the lease generation that wrote an object.
const GENERATION: &str = "lockgate-generation";

/// How many writes of one group run at once.
pub(crate) const PARALLEL_WRITES: usize = 16;

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

/// A client of one location (a bucket and a prefix), shared by the storage and the
/// lease's renewal thread.
pub(crate) struct Client {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: String,
    runtime: tokio::runtime::Runtime,
    retry_timeout: Duration,
    pub(crate) counts: Counts,
    /// When a failed request was last logged.
    warned: Mutex<Option<Instant>>,
    /// Since when requests fail (an outage), if they do.
    outage: Mutex<Option<Instant>>,
}

impl Client {
    /// A client of `store` under `prefix`, shown in messages as `shown`; requests are
    /// retried for `retry_timeout`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        shown: &str,
        prefix: &str,
        retry_timeout: Duration,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lockgate-object-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the object-store client: {e}")))?;
        Ok(Client {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            shown: shown.to_string(),
            runtime,
            retry_timeout,
            counts: Counts::default(),
            warned: Mutex::new(None),
            outage: Mutex::new(None),
        })
    }

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
                    lock(&self.outage).get_or_insert_with(Instant::now);
                    // One line per 10 s for the whole store (writes go out in parallel).
                    let due = {
                        let mut last = lock(&self.warned);
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
            if let Some(since) = lock(&self.outage).take() {
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

    /// Reads `key`, if it exists.
    pub(crate) fn get(&self, key: &str) -> lockgate_core::Result<Option<Vec<u8>>> {
        self.block(self.get_versioned(key, self.retry_timeout))
            .map(|v| v.map(|v| v.bytes))
    }

    /// The files and directories directly under `dir`, by name.
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

    /// Deletes `key` (a missing one is fine).
    pub(crate) fn delete(&self, key: &str) -> lockgate_core::Result<()> {
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

    /// Deletes every object under `dir`.
    pub(crate) fn delete_dir(&self, dir: &str) -> lockgate_core::Result<()> {
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

    /// The request counts.
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

/// No retries in the client: [`Client::retrying`] retries every failed request itself,
/// so that each is logged and counted, and decides how long an outage is ridden through.
pub(crate) fn client_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 0,
        retry_timeout: Duration::from_secs(10),
    }
}

/// Request timeouts: a store that stopped answering is noticed (logged, counted,
/// retried) within seconds. Settings `timeout` and `connect_timeout` override them (for
/// large state on a slow link).
pub(crate) fn with_timeouts<B>(
    b: B,
    set: impl Fn(B, object_store::ClientConfigKey, &str) -> B,
) -> B {
    let b = set(b, object_store::ClientConfigKey::ConnectTimeout, "2s");
    set(b, object_store::ClientConfigKey::Timeout, "5s")
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
