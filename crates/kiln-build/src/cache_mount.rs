//! Where a cache mount lives in the store, for a build's `RUN
//! --mount=type=cache` and `kiln run --mount type=cache` alike, so that a
//! cache a build filled is the one `kiln run` sees under the same id.
//!
//! Layout: `cache-mounts/<sha256 of the name>/` holds `data/` (what the
//! process sees) and `lock` (for `sharing=locked|private`). The name is
//! the mount's id (its target when it has none), or for a cache seeded
//! from a stage the id, the stage's key and the source together
//! (`cache_name`). The name holds no host path, so it is also how a
//! cache mount travels through a registry cache (see
//! `crate::cache_mount_transfer`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::{FromRef, Run};
use kiln_dockerfile::mount::MountType;
use kiln_image::{Digest, Store};

use crate::BuildError;
use crate::fs::StageFs;

/// The store's name of a cache mount: its id, or for one seeded from a
/// stage (`from=`), the id with the stage's content key and the source.
pub(crate) fn cache_name(id: &str, seed: Option<(&Digest, &str)>) -> String {
    match seed {
        None => id.to_string(),
        Some((key, src)) => format!("{id}\0{key}\0{src}"),
    }
}

/// One `--mount=type=cache` of a RUN, named as the store names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCacheMount {
    /// The store's name: the id, or for a cache seeded `from=` a stage,
    /// the id with the stage's content key and the source.
    pub name: String,
    /// What the user wrote (`id=`, else the target), for messages.
    pub id: String,
    /// Where the RUN sees it.
    pub target: String,
}

/// The cache mounts of `run` whose names can be known before it runs
/// (as `crate::exec` names them; a mount it would refuse is left out).
pub(crate) fn run_cache_mounts(
    run: &Run,
    stage_fs: &dyn Fn(usize) -> Option<StageFs>,
) -> Vec<RunCacheMount> {
    let mut out = Vec::new();
    for m in &run.mounts {
        let mm = &m.mount;
        let (MountType::Cache, Some(target)) = (&mm.kind, &mm.target) else {
            continue;
        };
        let id = mm.id.clone().unwrap_or_else(|| target.clone());
        let name = match &m.from_ref {
            None => cache_name(&id, None),
            Some(FromRef::Stage { index, .. }) => {
                let (Some(fs), Ok(src)) = (
                    stage_fs(*index),
                    crate::context::clean_rel(mm.source.as_deref().unwrap_or("")),
                ) else {
                    continue;
                };
                cache_name(&id, Some((&fs.key(), &src)))
            }
            Some(_) => continue,
        };
        out.push(RunCacheMount {
            name,
            id,
            target: target.clone(),
        });
    }
    out
}

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

    /// The cache's own directory (`data`'s parent).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
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
