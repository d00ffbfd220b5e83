//! The checkpoint directory's lock: one process at a time runs jobs on a directory.
//!
//! Two processes on one directory would write the same plan and commit files and delete
//! each other's state (recovery deletes the state files of uncommitted batches), so the
//! first context of a process to use a directory takes an exclusive `flock` on
//! `DIR/lock` (holding its pid, for the message a second process gets) and keeps it
//! while any context of the process uses the directory. The kernel releases it when
//! the process ends, however it ends. Elsewhere than Linux there is no lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::types::lock;

/// This process's hold on a checkpoint directory; the lock is released when the last
/// hold is dropped.
pub(crate) struct DirLock {
    _file: Arc<File>,
}

/// The directories this process holds, by canonical path.
static HELD: Mutex<BTreeMap<PathBuf, Weak<File>>> = Mutex::new(BTreeMap::new());

/// Takes (or shares, within this process) the lock of checkpoint directory `dir`,
/// creating the directory if needed.
pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Config(format!(
            "checkpoint location `{}` is a file, not a directory; name a directory (it is \
             created when missing)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create checkpoint directory", dir, e))?;
    let key = dir
        .canonicalize()
        .map_err(|e| Error::io("open checkpoint directory", dir, e))?;
    let mut held = lock(&HELD);
    if let Some(file) = held.get(&key).and_then(Weak::upgrade) {
        return Ok(DirLock { _file: file });
    }
    let path = key.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open checkpoint lock", &path, e))?;
    take(&mut file, &path)?;
    let file = Arc::new(file);
    held.retain(|_, f| f.strong_count() > 0);
    held.insert(key, Arc::downgrade(&file));
    Ok(DirLock { _file: file })
}

#[cfg(target_os = "linux")]
fn take(file: &mut File, path: &Path) -> Result<()> {
    use rustix::fs::{flock, FlockOperation};
    use std::io::{Read, Seek, Write};
    if let Err(e) = flock(&*file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "another process".to_string(),
                p => format!("another process (pid {p})"),
            };
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "{holder} is running a job on this checkpoint directory; stop it first \
                     (two jobs on one directory would overwrite each other's plans and \
                     state), or give this job a directory of its own"
                ),
            });
        }
        return Err(Error::io("lock checkpoint directory", path, e.into()));
    }
    let mut write = || -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write().map_err(|e| Error::io("write checkpoint lock", path, e))
}

#[cfg(not(target_os = "linux"))]
fn take(_file: &mut File, _path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_of_one_process_share_the_lock_and_it_is_released_with_the_last() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let b = acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let pid = std::fs::read_to_string(dir.path().join("lock")).unwrap_or_default();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(a);
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{flock, FlockOperation};
            let lock_file =
                || File::open(dir.path().join("lock")).unwrap_or_else(|e| panic!("{e}"));
            // Still held through `b`: another open file (as another process has) is refused.
            assert!(flock(lock_file(), FlockOperation::NonBlockingLockExclusive).is_err());
            drop(b);
            flock(lock_file(), FlockOperation::NonBlockingLockExclusive)
                .unwrap_or_else(|e| panic!("released with the last hold: {e}"));
        }
        #[cfg(not(target_os = "linux"))]
        drop(b);
    }
}
