//! A stage's filesystem as the solver holds it: an ordered list of layers.
//! Reading it goes through the shared layer directories (a single path by
//! overlay lookup rules) or through a read-only view mounted in kiln's own
//! mount namespace (whole trees, for `COPY --from` and bind mounts). Where
//! kiln may not mount (root in a pod that refuses mount namespaces), the
//! view is a copy of the stage, as the copy snapshotter makes for a RUN.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_image::{Descriptor, Digest, Store};
use kiln_snapshot::Snapshots;

use crate::BuildError;
use crate::key::fs_key;

/// A node's metadata with the owner a layer gives it (which, for an
/// unprivileged kiln, is not the one on disk).
pub type OwnedMeta = (fs::Metadata, (u32, u32));

#[derive(Debug, Clone, Default)]
pub struct StageFs {
    /// Oldest first: the blob and its diff ID.
    pub layers: Vec<(Descriptor, Digest)>,
}

impl StageFs {
    /// An image's filesystem: its layers.
    pub fn of(image: &kiln_image::Image) -> StageFs {
        StageFs {
            layers: image
                .layers
                .iter()
                .cloned()
                .zip(image.config.rootfs.diff_ids.iter().cloned())
                .collect(),
        }
    }

    pub fn key(&self) -> Digest {
        let ids: Vec<Digest> = self.layers.iter().map(|(_, d)| d.clone()).collect();
        fs_key(&ids)
    }

    /// Layer directories, top first, unpacked on first use.
    pub fn layer_dirs(&self, store: &Store, snaps: &Snapshots) -> Result<Vec<PathBuf>, BuildError> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (blob, diff_id) in self.layers.iter().rev() {
            out.push(snaps.layer_dir(store, blob, diff_id)?);
        }
        Ok(out)
    }

    /// Reads a small file of the image (at most 4 MiB), if present.
    pub fn read_file(
        &self,
        store: &Store,
        snaps: &Snapshots,
        path: &str,
    ) -> Result<Option<Vec<u8>>, BuildError> {
        let dirs = self.layer_dirs(store, snaps)?;
        let Some(host) = kiln_snapshot::lookup(&dirs, Path::new(path)) else {
            return Ok(None);
        };
        let Ok(meta) = fs::symlink_metadata(&host) else {
            return Ok(None);
        };
        if !meta.is_file() || meta.len() > 4 << 20 {
            return Ok(None);
        }
        Ok(fs::read(&host).ok())
    }

    /// The metadata of `path` in the image, without following symlinks.
    pub fn stat(
        &self,
        store: &Store,
        snaps: &Snapshots,
        path: &Path,
    ) -> Result<Option<fs::Metadata>, BuildError> {
        let dirs = self.layer_dirs(store, snaps)?;
        Ok(kiln_snapshot::lookup(&dirs, path).and_then(|h| fs::symlink_metadata(h).ok()))
    }

    /// [`StageFs::stat`] with the owner a layer gives the node (the one an
    /// unprivileged kiln recorded; see `kiln_image::layer::owner_on_disk`).
    pub fn stat_owned(
        &self,
        store: &Store,
        snaps: &Snapshots,
        path: &Path,
    ) -> Result<Option<OwnedMeta>, BuildError> {
        let dirs = self.layer_dirs(store, snaps)?;
        Ok(kiln_snapshot::lookup(&dirs, path).and_then(|h| {
            let m = fs::symlink_metadata(&h).ok()?;
            let owner = kiln_image::layer::owner_on_disk(&h, &m);
            Some((m, owner))
        }))
    }

    /// Mounts the merged filesystem (writes go to a throwaway upper dir);
    /// where mounting is not permitted, copies it instead.
    pub fn view(
        &self,
        store: &Store,
        snaps: &Snapshots,
        scratch: &Path,
    ) -> Result<View, BuildError> {
        let dir = tempfile::Builder::new()
            .prefix("view-")
            .tempdir_in(scratch)
            .map_err(BuildError::file("view dir"))?;
        let merged = dir.path().join("merged");
        for d in ["merged", "upper", "work", "empty"] {
            fs::create_dir(dir.path().join(d)).map_err(BuildError::file("view dir"))?;
        }
        let lowers = self.layer_dirs(store, snaps);
        let mounted = lowers.and_then(|mut lowers| {
            lowers.push(dir.path().join("empty"));
            kiln_sandbox::mounts::overlay(
                &lowers,
                &dir.path().join("upper"),
                &dir.path().join("work"),
                &merged,
            )
            .map_err(|e| BuildError::Io(format!("mounting a view of a stage: {e}")))
        });
        match mounted {
            Ok(()) => Ok(View {
                dir: Some(dir),
                merged,
                copy: None,
            }),
            // Not allowed to mount (and then maybe not to unpack layers in
            // overlay form either, their whiteouts being device nodes): a
            // copy reads the same.
            Err(mount_err) if !mount_permitted() => {
                let c = snaps
                    .create(store, &self.layers, kiln_snapshot::Mode::Copy)
                    .map_err(|e| {
                        BuildError::Io(format!("{mount_err}; copying the stage instead: {e}"))
                    })?;
                Ok(View {
                    dir: None,
                    merged: c.rootfs(),
                    copy: Some(c),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether this process may mount at all: not root in a pod that refuses
/// mount namespaces, where kiln's own `unshare(CLONE_NEWNS)` failed too.
fn mount_permitted() -> bool {
    rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
    })
}

/// A view of a stage: mounted (unmounted lazily and removed on drop) or a
/// copy (removed on drop).
pub struct View {
    dir: Option<tempfile::TempDir>,
    merged: PathBuf,
    copy: Option<kiln_snapshot::Container>,
}

impl View {
    pub fn path(&self) -> &Path {
        &self.merged
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(c) = self.copy.take() {
            let _ = c.remove();
            return;
        }
        let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
        let _ = &self.dir;
    }
}

/// Parses `/etc/passwd` and `/etc/group` of an image to turn `--chown`
/// names into IDs, as BuildKit does (numbers pass through).
pub fn resolve_chown(
    spec: &str,
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
) -> Result<(u64, u64), BuildError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = String::from_utf8_lossy(passwd.unwrap_or_default());
    let group = String::from_utf8_lossy(group.unwrap_or_default());
    let uid = match user.parse::<u64>() {
        Ok(n) => n,
        Err(_) => kiln_sandbox::user::find_user(&passwd, user)
            .map(|(uid, _)| u64::from(uid))
            .ok_or_else(|| {
                BuildError::Instruction(format!(
                    "--chown: no user {user:?} in the image's /etc/passwd"
                ))
            })?,
    };
    // Docker: a user without a group means the group with the user's ID.
    let gid = match grp {
        None => uid,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => kiln_sandbox::user::find_group(&group, g)
                .map(u64::from)
                .ok_or_else(|| {
                    BuildError::Instruction(format!(
                        "--chown: no group {g:?} in the image's /etc/group"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}
