//! Private scratch of one RUN: its secret files, its heredoc script and its
//! private copies of cache mounts. They live outside the store, in shared
//! memory when there is some (`/dev/shm`), so a secret never reaches a disk,
//! a layer, a cache entry or a backup of the store.
//!
//! Layout, one parent per store (its name is a hash of the store's path):
//!
//! ```text
//! /dev/shm/kiln-<hash>/            0700, owned by the caller (checked)
//! /dev/shm/kiln-<hash>/run-<id>.lock   flocked by the live RUN
//! /dev/shm/kiln-<hash>/run-<id>/       0700: secret-N (0600 or the asked mode), script, cache-N
//! ```
//!
//! A killed build cannot remove its directory, so liveness is a lock: each
//! RUN holds an exclusive `flock` on its `.lock` file, which the kernel drops
//! when the process dies. [`sweep`] (at the start of every build and run,
//! and in `prune`) removes every directory whose lock it can take;
//! [`leftovers`] lists them for `kiln check`. The lock is taken before the
//! directory exists and checked to still be linked afterwards, so a sweep
//! racing with a new RUN never removes a live directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kiln_image::{Digest, Store};

use crate::BuildError;

/// The directory of one RUN; removed when dropped.
pub struct RunPrivate {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl RunPrivate {
    /// A new private directory for one RUN over `store`.
    pub fn create(store: &Store) -> Result<RunPrivate, BuildError> {
        let parent = parent_dir(store)?;
        for _ in 0..16 {
            let id = kiln_image::store::temp_name();
            let lock_path = parent.join(format!("run-{id}.lock"));
            let lock = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error("create", &lock_path, e)),
            };
            lock.lock().map_err(|e| io_error("lock", &lock_path, e))?;
            // A sweep that took the lock first has unlinked the file.
            if lock.metadata().map(|m| m.nlink()).unwrap_or(0) == 0 {
                continue;
            }
            let dir = parent.join(format!("run-{id}"));
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io_error("create", &dir, e))?;
            return Ok(RunPrivate {
                dir,
                lock_path,
                _lock: lock,
            });
        }
        Err(BuildError::Io(format!(
            "no free private directory name under {}",
            parent.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a file only its owner can read (`mode` is applied after the
    /// content, so there is no moment at which the file is wider).
    pub fn write_file(&self, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, BuildError> {
        use std::io::Write;
        let path = self.dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        f.write_all(bytes)
            .map_err(|e| io_error("write", &path, e))?;
        if mode != 0o600 {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io_error("chmod", &path, e))?;
        }
        Ok(path)
    }
}

impl Drop for RunPrivate {
    fn drop(&mut self) {
        // The directory first: while the lock file exists, no sweep can
        // mistake a half-removed directory for one without an owner.
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Removes what killed RUNs of this store left; returns the directories it
/// removed.
pub fn sweep(store: &Store) -> Result<Vec<PathBuf>, BuildError> {
    let Some(parent) = existing_parent(store)? else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for (dir, lock_path) in abandoned(&parent)? {
        // Held while removing, so a new RUN cannot reuse the name meanwhile.
        let held = match &lock_path {
            Some(l) => match File::open(l) {
                Ok(f) if f.try_lock().is_ok() => Some(f),
                _ => continue,
            },
            None => None,
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io_error("remove", &dir, e))?;
            removed.push(dir);
        }
        if let Some(l) = &lock_path {
            let _ = fs::remove_file(l);
        }
        drop(held);
    }
    Ok(removed)
}

/// The directories of killed RUNs of this store, still there.
pub fn leftovers(store: &Store) -> Result<Vec<PathBuf>, BuildError> {
    let Some(parent) = existing_parent(store)? else {
        return Ok(Vec::new());
    };
    Ok(abandoned(&parent)?
        .into_iter()
        .filter(|(d, _)| d.exists())
        .map(|(d, _)| d)
        .collect())
}

/// Run directories whose lock nobody holds (or that lost their lock file),
/// with their lock file.
fn abandoned(parent: &Path) -> Result<Vec<(PathBuf, Option<PathBuf>)>, BuildError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(parent).map_err(|e| io_error("read", parent, e))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in &names {
        let Some(id) = name.strip_prefix("run-") else {
            continue;
        };
        if let Some(id) = id.strip_suffix(".lock") {
            let lock_path = parent.join(name);
            let free = File::open(&lock_path).is_ok_and(|f| f.try_lock().is_ok());
            if free {
                out.push((parent.join(format!("run-{id}")), Some(lock_path)));
            }
        } else if !names.contains(&format!("{name}.lock")) {
            // The lock is created first and removed last: a directory
            // without one belongs to nobody.
            out.push((parent.join(name), None));
        }
    }
    Ok(out)
}

/// Where this store's RUN directories go: shared memory, else the temp dir.
fn parent_path(store: &Store) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let root = fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    let hash = Digest::sha256_of(root.as_os_str().as_encoded_bytes());
    base.join(format!("kiln-{}", &hash.hex()[..16]))
}

fn parent_dir(store: &Store) -> Result<PathBuf, BuildError> {
    let parent = parent_path(store);
    match fs::DirBuilder::new().mode(0o700).create(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("create", &parent, e)),
    }
    check_owned(&parent)?;
    Ok(parent)
}

fn existing_parent(store: &Store) -> Result<Option<PathBuf>, BuildError> {
    let parent = parent_path(store);
    if fs::symlink_metadata(&parent).is_err() {
        return Ok(None);
    }
    check_owned(&parent)?;
    Ok(Some(parent))
}

/// The name is predictable, so another local user could make it first (or
/// plant a symlink): use it only if it is our own private directory.
fn check_owned(parent: &Path) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(parent).map_err(|e| io_error("stat", parent, e))?;
    let euid = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(BuildError::Io(format!(
            "refusing {} for secrets: it must be a directory owned by uid {euid} with mode 0700 \
             (it is owned by uid {}, mode {:o}); remove it",
            parent.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn io_error(op: &str, path: &Path, e: io::Error) -> BuildError {
    BuildError::Io(format!("{op} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_dir_is_kept_and_a_dead_one_swept() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path().join("store")).unwrap();
        let live = RunPrivate::create(&store).unwrap();
        let secret = live.write_file("secret-0", b"s3cret", 0o400).unwrap();
        assert_eq!(fs::metadata(&secret).unwrap().mode() & 0o777, 0o400);
        assert_eq!(fs::metadata(live.path()).unwrap().mode() & 0o777, 0o700);
        // A killed RUN: its directory stays, its lock file is not held.
        let parent = live.path().parent().unwrap().to_path_buf();
        let dead = parent.join("run-dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("secret-0"), b"s3cret").unwrap();
        File::create(parent.join("run-dead.lock")).unwrap();
        let orphan = parent.join("run-orphan");
        fs::create_dir(&orphan).unwrap();

        let left = leftovers(&store).unwrap();
        assert_eq!(left, vec![dead.clone(), orphan.clone()]);
        let swept = sweep(&store).unwrap();
        assert_eq!(swept, vec![dead.clone(), orphan.clone()]);
        assert!(!dead.exists() && !orphan.exists());
        assert!(!parent.join("run-dead.lock").exists());
        assert!(secret.exists(), "the live RUN's secret must stay");
        let dir = live.path().to_path_buf();
        drop(live);
        assert!(!dir.exists());
        assert!(leftovers(&store).unwrap().is_empty());
    }
}
