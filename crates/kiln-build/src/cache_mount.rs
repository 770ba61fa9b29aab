//! Where a cache mount lives in the store, for a build's `RUN
//! --mount=type=cache` and `kiln run --mount type=cache` alike, so that a
//! cache a build filled is the one `kiln run` sees under the same id.
//!
//! Layout: `cache-mounts/<sha256 of the name>/` holds `data/` (what the
//! process sees) and `lock` (for `sharing=locked|private`). The name is
//! the mount's id (its target when it has none), or for a cache seeded
//! from a stage the id, the stage's key and the source together.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use kiln_image::{Digest, Store};

use crate::BuildError;

/// One cache mount's directory in the store.
pub struct CacheMount {
    dir: PathBuf,
}

impl CacheMount {
    /// The cache named `name` (see the module doc), its directory made if
    /// missing.
    pub fn open(store: &Store, name: &str) -> Result<CacheMount, BuildError> {
        let hex = Digest::sha256_of(name.as_bytes()).hex().to_string();
        let dir = store.dir(&format!("cache-mounts/{hex}"))?;
        Ok(CacheMount { dir })
    }

    /// What the process sees at the mount's target.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Makes [`CacheMount::data`] if missing, with this mode and owner (a
    /// cache that exists keeps its own, as BuildKit's does). The owner is
    /// best effort: a rootless build cannot give files to other users.
    pub fn create_data(&self, mode: u32, uid: u32, gid: u32) -> Result<(), BuildError> {
        let data = self.data();
        if data.exists() {
            return Ok(());
        }
        fs::create_dir_all(&data).map_err(|e| BuildError::File {
            what: format!("creating cache mount {}", data.display()),
            cause: e,
        })?;
        let _ = fs::set_permissions(&data, fs::Permissions::from_mode(mode));
        let _ = std::os::unix::fs::chown(&data, Some(uid), Some(gid));
        Ok(())
    }

    /// The cache's lock file, open for `flock`.
    pub fn lock_file(&self) -> Result<fs::File, BuildError> {
        let path = self.dir.join("lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BuildError::File {
                what: format!("opening {}", path.display()),
                cause: e,
            })
    }
}
