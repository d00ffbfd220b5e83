//! [`ObjectStorage`]: a checkpoint location on an object store. Requests go through
//! the retrying, counting client (`client.rs`); every write is checked against this
//! process's lease (`lease.rs`) before and after it, and a file in the way of a
//! create-only write is read back to tell a lost answer, an older owner's leftover and
//! a successor's file apart (see the crate's docs).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use lockgate_core::storage::file::Placement;
use lockgate_core::storage::{Listed, Ownership, Storage, StorageStats, Takeover};
use lockgate_core::Error as CoreError;
use object_store::ObjectStore;

use crate::client::{client_retry, with_timeouts, Client, Conditional, PARALLEL_WRITES};
use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseHold};
use crate::Options;

/// A checkpoint location in an object store.
pub struct ObjectStorage {
    client: Arc<Client>,
    lease: Arc<Lease>,
}

/// Shows the location only: the client's own `Debug` may hold credentials.
impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("location", &self.client.shown())
            .finish_non_exhaustive()
    }
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
        Ok(ObjectStorage {
            client: Arc::new(Client::new(store, shown, prefix, options.retry_timeout)?),
            lease: Arc::new(Lease::new(&options.instance, options.lease_timeout)),
        })
    }
}

impl ObjectStorage {
    /// The client (tests).
    #[cfg(test)]
    pub(crate) fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Takes this location's lease (waits or refuses as `takeover` says).
    pub(crate) fn take_lease(&self, takeover: Takeover) -> lockgate_core::Result<LeaseHold> {
        Lease::acquire(&self.client, &self.lease, takeover)
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
        let client = &self.client;
        let limit = client.retry_timeout();
        let mut etag = None;
        for _ in 0..8 {
            match client
                .put_conditional(&key, bytes.clone(), generation, etag.take(), limit)
                .await?
            {
                Conditional::Written(_) => return Ok(()),
                Conditional::Conflict => {}
            }
            let Some(found) = client.get_versioned(&key, limit).await? else {
                continue; // deleted meanwhile: create again
            };
            if found.bytes == bytes {
                return Ok(());
            }
            if found.generation > generation {
                return Err(self.lease.fenced(
                    client.shown(),
                    format!(
                        "`{}` was written by generation {} of the lease; this process holds \
                         generation {generation}",
                        client.name_of(&key).display(),
                        found.generation
                    ),
                ));
            }
            // An older owner's file (or ours, rewritten): replace exactly that version.
            self.lease.check(client)?;
            etag = found.etag;
            if etag.is_none() {
                return Err(CoreError::Store {
                    operation: "replace a file (the store returned no ETag)".into(),
                    location: client.name_of(&key).display().to_string(),
                    source: "conditional writes need ETags".into(),
                });
            }
        }
        Err(CoreError::Store {
            operation: "put".into(),
            location: client.name_of(&key).display().to_string(),
            source: "the file kept changing under this process's writes".into(),
        })
    }
}

fn unknown_setting(key: &str, shown: &str) -> Error {
    Error::Config(format!(
        "`{shown}`: unknown checkpoint option `{key}`; use the store's setting names, e.g. \
         endpoint, region, allow_http, access_key_id, secret_access_key (S3), \
         service_account (GCS), account_name (Azure)"
    ))
}

impl Storage for ObjectStorage {
    fn location(&self) -> &str {
        self.client.shown()
    }
    fn get(&self, key: &str) -> lockgate_core::Result<Option<Vec<u8>>> {
        self.client.get(key)
    }
    fn get_many(&self, keys: &[String]) -> Vec<lockgate_core::Result<Option<Vec<u8>>>> {
        let client = &self.client;
        let reads: Vec<_> = keys
            .iter()
            .map(|k| client.get_versioned(k, client.retry_timeout()))
            .collect();
        let got = client.block(
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
        _placement: Placement, // an object is written whole: no torn write to avoid
    ) -> lockgate_core::Result<()> {
        let client = &self.client;
        let generation = self.lease.check(client)?;
        client.block(async {
            futures::stream::iter(files)
                .map(|(key, bytes)| self.put_file(key, bytes, generation))
                .buffer_unordered(PARALLEL_WRITES)
                .try_collect::<Vec<()>>()
                .await
        })?;
        // A write that landed after a successor took over is never acted on: this
        // process stops here instead.
        self.lease.check(client)?;
        Ok(())
    }
    fn sync(&self) -> lockgate_core::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &str) -> lockgate_core::Result<Vec<Listed>> {
        self.client.list(dir)
    }
    fn delete(&self, key: &str) -> lockgate_core::Result<()> {
        self.lease.check(&self.client)?;
        self.client.delete(key)
    }
    fn delete_dir(&self, dir: &str) -> lockgate_core::Result<()> {
        self.lease.check(&self.client)?;
        self.client.delete_dir(dir)
    }
    fn take_ownership(&self, takeover: Takeover) -> lockgate_core::Result<Box<dyn Ownership>> {
        Ok(Box::new(self.take_lease(takeover)?))
    }
    fn check_owner(&self) -> lockgate_core::Result<()> {
        self.lease.check(&self.client).map(|_| ())
    }
    fn stats(&self) -> StorageStats {
        self.client.stats()
    }
}
