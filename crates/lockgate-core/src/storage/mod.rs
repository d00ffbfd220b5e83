//! Where a checkpoint's files live: a local directory ([`LocalDir`]) or an object store
//! (the `lockgate-object-store` crate), behind one small interface of whole files
//! addressed by key (`offsets/12`, `state/<operator>/<partition>/12.delta`,
//! `wal/<source>/<block>.wal`): the layout under the location is the same everywhere.
//!
//! A storage also decides who may write: a local directory is held with `flock`; an
//! object store with a lease renewed by conditional writes, whose holder is the only one
//! whose writes count (see [`Storage::take_ownership`] and [`Storage::check_owner`]).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

pub(crate) mod dir_lock;
pub mod file;

use file::Placement;

/// One entry of a listing: a file, or a directory (a common prefix on object stores).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its name (the last key segment).
    pub name: String,
    /// Its size in bytes (0 for directories).
    pub bytes: u64,
    /// True for a directory.
    pub dir: bool,
}

/// How a process waits for a checkpoint another process owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// Refuse at once, naming the owner (the default: two jobs on one checkpoint are a
    /// deployment mistake).
    Refuse,
    /// Wait as a standby until the owner is gone (its lock released or its lease
    /// expired), then take over.
    Standby,
}

/// Requests made to a storage so far (object stores charge per request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Writes (PUTs).
    pub puts: u64,
    /// Reads (GETs and HEADs).
    pub gets: u64,
    /// Listings.
    pub lists: u64,
    /// Deletes.
    pub deletes: u64,
    /// Requests retried after a failure.
    pub retries: u64,
    /// True while the last request is still being retried (the store is unreachable).
    pub retrying: bool,
    /// True while this process waits as a standby for another to release the location.
    pub standby: bool,
}

/// A checkpoint location.
pub trait Storage: Send + Sync + Debug {
    /// Where it is, for messages and the UI: a directory path or a URL (never secrets).
    fn location(&self) -> &str;

    /// The local directory, when it is one (local files are appended and synced in
    /// place; object stores get whole objects).
    fn local_dir(&self) -> Option<&Path> {
        None
    }

    /// Whether fewer, larger files are written here: where every request costs and
    /// takes milliseconds (an object store), plans logged together go into one file and
    /// a commit's state changes into one file per operator partition. Everywhere but a
    /// local directory.
    fn groups_writes(&self) -> bool {
        self.local_dir().is_none()
    }

    /// A path-like name of `key` for messages.
    fn name_of(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.location().trim_end_matches('/')))
    }

    /// The bytes of `key`, or `None` when it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// The bytes of each of `keys` (object stores read them concurrently).
    fn get_many(&self, keys: &[String]) -> Vec<Result<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Writes whole files. On a local directory they are durable after the next
    /// [`sync`](Self::sync) and placed as `placement` says; on an object store each is
    /// durable when this returns.
    fn put_all(&self, files: Vec<(String, Vec<u8>)>, placement: Placement) -> Result<()>;

    /// Makes every file written so far durable (one filesystem sync locally).
    fn sync(&self) -> Result<()>;

    /// The files and directories directly under `dir` (empty when it does not exist).
    fn list(&self, dir: &str) -> Result<Vec<Listed>>;

    /// Deletes a file (a missing one is no error).
    fn delete(&self, key: &str) -> Result<()>;

    /// Deletes a directory and everything under it.
    fn delete_dir(&self, dir: &str) -> Result<()>;

    /// Makes this process the location's only writer until the returned hold is
    /// dropped; refuses (naming the owner) or waits, as `takeover` says.
    fn take_ownership(&self, takeover: Takeover) -> Result<Box<dyn Ownership>>;

    /// An error when this process no longer owns the location (its lease was taken by
    /// another process): checked before a sink commits a batch.
    fn check_owner(&self) -> Result<()> {
        Ok(())
    }

    /// The requests made so far.
    fn stats(&self) -> StorageStats {
        StorageStats::default()
    }
}

/// A process's hold on a checkpoint location, released when dropped.
pub trait Ownership: Send + Sync {}

/// A checkpoint location as given by a user: a local path, or a storage already opened
/// (an object store: `lockgate_object_store::open`).
#[derive(Clone, Debug)]
pub struct CheckpointLocation(pub Arc<dyn Storage>);

impl CheckpointLocation {
    /// A local directory (created when missing); a `file://` URL is read as its path.
    /// Other URL schemes (`s3://`, `gs://`, `az://`) need an object store opened by
    /// `lockgate_object_store::open`: they are refused here with that advice.
    pub fn local(location: &str) -> Result<Self> {
        if let Some(path) = location.strip_prefix("file://") {
            return Ok(Self::dir(Path::new(path)));
        }
        if let Some((scheme, _)) = location.split_once("://") {
            return Err(Error::Config(format!(
                "checkpoint location `{location}`: `{scheme}://` is an object store; open it \
                 with lockgate_object_store::open(..) and pass the storage (the `lockgate` \
                 CLI does this for s3://, gs:// and az://)"
            )));
        }
        Ok(Self::dir(Path::new(location)))
    }

    /// A local directory.
    pub fn dir(path: &Path) -> Self {
        CheckpointLocation(Arc::new(LocalDir::new(path)))
    }
}

impl From<&str> for CheckpointLocation {
    /// A directory path or `file://` URL; an object store's URL gives a location whose
    /// every use is an error saying how to open it.
    fn from(s: &str) -> Self {
        Self::local(s).unwrap_or_else(|e| {
            CheckpointLocation(Arc::new(Unopened {
                url: s.to_string(),
                advice: e.to_string(),
            }))
        })
    }
}
impl From<String> for CheckpointLocation {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}
impl From<&String> for CheckpointLocation {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}
impl From<&Path> for CheckpointLocation {
    fn from(p: &Path) -> Self {
        Self::dir(p)
    }
}
impl From<PathBuf> for CheckpointLocation {
    fn from(p: PathBuf) -> Self {
        Self::dir(&p)
    }
}
impl From<&PathBuf> for CheckpointLocation {
    fn from(p: &PathBuf) -> Self {
        Self::dir(p)
    }
}
impl From<Arc<dyn Storage>> for CheckpointLocation {
    fn from(s: Arc<dyn Storage>) -> Self {
        CheckpointLocation(s)
    }
}

/// A checkpoint in a local directory.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    shown: String,
    /// True while waiting as a standby for the directory's lock.
    standby: std::sync::atomic::AtomicBool,
}

impl LocalDir {
    /// The directory `root` (created when first written).
    pub fn new(root: &Path) -> Self {
        LocalDir {
            root: root.to_path_buf(),
            shown: root.display().to_string(),
            standby: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }
}

struct DirHold(#[allow(dead_code)] dir_lock::DirLock);
impl Ownership for DirHold {}

impl Storage for LocalDir {
    fn location(&self) -> &str {
        &self.shown
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn name_of(&self, key: &str) -> PathBuf {
        self.path(key)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read checkpoint file", path, e)),
        }
    }

    fn put_all(&self, files: Vec<(String, Vec<u8>)>, placement: Placement) -> Result<()> {
        file::write_framed(
            files
                .into_iter()
                .map(|(key, bytes)| (self.path(&key), bytes))
                .collect(),
            placement,
        )
    }

    fn sync(&self) -> Result<()> {
        file::sync_filesystem(&self.root)
    }

    fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let path = self.path(dir);
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list checkpoint directory", path, e)),
        };
        let mut out = Vec::new();
        for e in rd.filter_map(|e| e.ok()) {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let meta = e.metadata().ok();
            out.push(Listed {
                name,
                bytes: meta.as_ref().map_or(0, |m| m.len()),
                dir: meta.is_some_and(|m| m.is_dir()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("delete checkpoint file", path, e))
            }
            _ => Ok(()),
        }
    }

    fn delete_dir(&self, dir: &str) -> Result<()> {
        let path = self.path(dir);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("delete checkpoint directory", path, e))
            }
            _ => Ok(()),
        }
    }

    fn take_ownership(&self, takeover: Takeover) -> Result<Box<dyn Ownership>> {
        use std::sync::atomic::Ordering;
        let mut announced = false;
        loop {
            match dir_lock::acquire(&self.root) {
                Ok(hold) => {
                    self.standby.store(false, Ordering::Relaxed);
                    if announced {
                        tracing::info!(checkpoint = %self.shown, "standby: the owner is gone; taking over");
                    }
                    return Ok(Box::new(DirHold(hold)));
                }
                Err(Error::Checkpoint { path, reason })
                    if takeover == Takeover::Standby && reason.contains("is running a job") =>
                {
                    if !announced {
                        tracing::info!(checkpoint = %self.shown, lock = %path.display(), "standby: another process owns this checkpoint; waiting for it to end");
                        announced = true;
                        self.standby.store(true, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    self.standby.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    fn stats(&self) -> StorageStats {
        StorageStats {
            standby: self.standby.load(std::sync::atomic::Ordering::Relaxed),
            ..StorageStats::default()
        }
    }
}

/// An object store's URL given where only directories are understood: every use is an
/// error naming the URL and how to open it.
#[derive(Debug)]
struct Unopened {
    url: String,
    advice: String,
}

impl Unopened {
    fn refuse<T>(&self) -> Result<T> {
        Err(Error::Config(self.advice.clone()))
    }
}

impl Storage for Unopened {
    fn location(&self) -> &str {
        &self.url
    }
    fn get(&self, _key: &str) -> Result<Option<Vec<u8>>> {
        self.refuse()
    }
    fn put_all(&self, _files: Vec<(String, Vec<u8>)>, _placement: Placement) -> Result<()> {
        self.refuse()
    }
    fn sync(&self) -> Result<()> {
        self.refuse()
    }
    fn list(&self, _dir: &str) -> Result<Vec<Listed>> {
        self.refuse()
    }
    fn delete(&self, _key: &str) -> Result<()> {
        self.refuse()
    }
    fn delete_dir(&self, _dir: &str) -> Result<()> {
        self.refuse()
    }
    fn take_ownership(&self, _takeover: Takeover) -> Result<Box<dyn Ownership>> {
        self.refuse()
    }
}

/// The key of a file under a directory key.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
