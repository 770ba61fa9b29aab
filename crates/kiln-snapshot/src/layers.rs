//! Layer directories and container filesystems.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_image::layer::{Entry, ExtractError, ExtractOptions, OverlayFormat, extract};
use kiln_image::{Descriptor, Digest, Store};

use crate::copy::{copy_layers, restore, switch_layers};
use crate::diff::{Found, diff_upper, entries_of, walk_changes, walk_watched};
use crate::remove::remove_tree;
use crate::stat_index::StatIndex;
use crate::tree_pool::TreePool;
use crate::watch::Watch;

use crate::{Error, Result, io_err};

/// How a container's filesystem is made writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Layer directories as overlay lowers, changes in an upper dir.
    Overlay,
    /// The layers unpacked into one plain directory, diffed by stat index.
    Copy,
}

/// Makes a layer blob present in the store before it is unpacked (a
/// build's layers may still be in a registry); says why it cannot.
pub type EnsureBlob =
    std::sync::Arc<dyn Fn(&Store, &Descriptor) -> std::result::Result<(), String> + Send + Sync>;

/// The snapshot area of a store.
pub struct Snapshots {
    dir: PathBuf,
    ensure_blob: Option<EnsureBlob>,
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", kiln_image::store::temp_name())
}

fn create_dir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(io_err("create", p))
}

impl Snapshots {
    pub fn open(store: &Store) -> Result<Snapshots> {
        let dir = store.dir("snapshots")?;
        create_dir(&dir.join("layers"))?;
        create_dir(&dir.join("containers"))?;
        Ok(Snapshots {
            dir,
            ensure_blob: None,
        })
    }

    /// Every layer this unpacks is first made present with `ensure`:
    /// the one place where a build's remote layers are fetched for
    /// anything that reads their files.
    pub fn with_ensure_blob(mut self, ensure: EnsureBlob) -> Snapshots {
        self.ensure_blob = Some(ensure);
        self
    }

    fn ensure(&self, store: &Store, blob: &Descriptor) -> Result<()> {
        match &self.ensure_blob {
            Some(f) if !store.has_blob(&blob.digest) => {
                f(store, blob).map_err(|cause| Error::Fetch {
                    digest: blob.digest.to_string(),
                    cause,
                })
            }
            _ => Ok(()),
        }
    }

    fn trees(&self) -> TreePool {
        TreePool::new(self.dir.join("trees"))
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// Every unpacked layer directory.
    pub fn layer_dirs(&self) -> Result<Vec<PathBuf>> {
        let layers = self.layers_dir();
        let mut out: Vec<PathBuf> = fs::read_dir(&layers)
            .map_err(io_err("read", &layers))?
            .flatten()
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }

    /// The copy snapshotter's kept trees (all of which
    /// [`Snapshots::prune`] removes).
    pub fn kept_trees(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dir.join("trees"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// The layer directories [`Snapshots::prune`] would remove with `keep`
    /// (containers aside), removing nothing.
    pub fn unused_layers(&self, keep: &BTreeSet<Digest>) -> Result<Vec<PathBuf>> {
        Ok(self
            .layer_dirs()?
            .into_iter()
            .filter(|p| !Self::kept(p, keep))
            .collect())
    }

    fn kept(dir: &Path, keep: &BTreeSet<Digest>) -> bool {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("sha256:{name}")
            .parse::<Digest>()
            .is_ok_and(|d| keep.contains(&d))
    }

    /// Removes the layer directories whose diff ID is not in `keep`, and
    /// what killed runs left (temp and staging directories, containers);
    /// returns how many directories went. Only while no other kiln process
    /// uses the store: under `Store::prune_with`.
    pub fn prune(&self, keep: &BTreeSet<Digest>) -> Result<usize> {
        let mut removed = 0;
        let layers = self.layers_dir();
        for e in fs::read_dir(&layers)
            .map_err(io_err("read", &layers))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let kept = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| keep.contains(&d));
            if !kept {
                remove_tree(&e.path())?;
                removed += 1;
            }
        }
        // Kept trees are scratch, not counted among the directories.
        self.trees().clear()?;
        let containers = self.dir.join("containers");
        for e in fs::read_dir(&containers)
            .map_err(io_err("read", &containers))?
            .flatten()
        {
            remove_tree(&e.path())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The unpacked directory of one layer, with whiteouts kept in overlay
    /// form (`userxattr` flavour, which the sandbox always mounts with). It
    /// is unpacked on first use, into a temp dir renamed into place, so
    /// concurrent builds share it and a killed one leaves only a temp dir.
    pub fn layer_dir(&self, store: &Store, blob: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.dir.join("layers").join(diff_id.hex());
        if dest.is_dir() {
            return Ok(dest);
        }
        self.ensure(store, blob)?;
        let tmp = self.dir.join("layers").join(unique(".tmp-"));
        create_dir(&tmp)?;
        // Keyed by diff ID, so shared by every image that names it: what is
        // unpacked must be what the name says, or one image's config could
        // plant its files under another's layer.
        let opts = ExtractOptions {
            overlay_whiteouts: Some(OverlayFormat::User),
            expect_diff_id: Some(diff_id.clone()),
            ..ExtractOptions::default()
        };
        let unpacked = store
            .open_blob(&blob.digest)
            .map_err(Error::from)
            .and_then(|f| {
                extract(
                    std::io::BufReader::with_capacity(256 * 1024, f),
                    &tmp,
                    &opts,
                )
                .map_err(|cause| Error::Extract {
                    diff_id: diff_id.to_string(),
                    cause,
                })
            });
        if let Err(e) = unpacked {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if fs::rename(&tmp, &dest).is_err() {
            // Another process won the race; its copy is as good as ours.
            let _ = fs::remove_dir_all(&tmp);
            if !dest.is_dir() {
                return Err(io_err("rename", &dest)(std::io::Error::other(
                    "layer directory vanished",
                )));
            }
        }
        Ok(dest)
    }

    /// A writable filesystem over `layers` (oldest first, with their diff
    /// IDs).
    pub fn create(
        &self,
        store: &Store,
        layers: &[(Descriptor, Digest)],
        mode: Mode,
    ) -> Result<Container> {
        let dir = self.dir.join("containers").join(unique(""));
        let container = match mode {
            Mode::Overlay => {
                let mut lowers = Vec::with_capacity(layers.len());
                for (blob, diff_id) in layers.iter().rev() {
                    lowers.push(self.layer_dir(store, blob, diff_id)?);
                }
                create_dir(&dir.join("upper"))?;
                create_dir(&dir.join("work"))?;
                Container {
                    dir,
                    mode,
                    lowers,
                    index: None,
                    pooled: None,
                    found: std::sync::Mutex::new(None),
                    watch: std::sync::Mutex::new(None),
                }
            }
            Mode::Copy => {
                let (index, pooled) = self.fill_copy(store, layers, &dir)?;
                let watch = Watch::start(&dir.join("rootfs"), &index);
                Container {
                    dir,
                    mode,
                    lowers: Vec::new(),
                    index: Some(index),
                    pooled,
                    found: std::sync::Mutex::new(None),
                    watch: std::sync::Mutex::new(watch),
                }
            }
        };
        Ok(container)
    }
}

/// Where a copy container's tree goes back to when it is removed.
struct Pooled {
    pool: TreePool,
    /// The diff IDs it shows, oldest first.
    chain: Vec<String>,
    /// The layer directories it shows, top first (what `restore` copies
    /// from).
    layer_dirs: Vec<PathBuf>,
}

impl Snapshots {
    /// Fills the empty `rootfs` with the merged layers and returns its stat
    /// index. The layers' shared directories are copied (unpacked once,
    /// like overlay's lowers); if a layer cannot be unpacked in overlay form
    /// here (whiteouts are device nodes, which a host may refuse), the
    /// layer blobs are unpacked straight into the rootfs instead.
    fn fill_copy(
        &self,
        store: &Store,
        layers: &[(Descriptor, Digest)],
        dir: &Path,
    ) -> Result<(StatIndex, Option<Pooled>)> {
        let rootfs = dir.join("rootfs");
        let mut dirs = Vec::with_capacity(layers.len());
        for (blob, diff_id) in layers.iter().rev() {
            match self.layer_dir(store, blob, diff_id) {
                Ok(d) => dirs.push(d),
                Err(Error::Extract { cause, .. })
                    if !matches!(cause, ExtractError::DiffIdMismatch { .. }) =>
                {
                    create_dir(&rootfs)?;
                    return Ok((self.unpack_into(store, layers, &rootfs)?, None));
                }
                Err(e) => return Err(e),
            }
        }
        let chain: Vec<String> = layers.iter().map(|(_, d)| d.to_string()).collect();
        let pooled = Pooled {
            pool: self.trees(),
            chain,
            layer_dirs: dirs,
        };
        if let Some(index) = self.claim_nearest(&pooled, dir)? {
            return Ok((index, Some(pooled)));
        }
        create_dir(&rootfs)?;
        let index = copy_layers(&pooled.layer_dirs, &rootfs)?;
        Ok((index, Some(pooled)))
    }

    /// Takes the kept tree nearest to `pooled`'s layers (the most layers
    /// shared from the bottom, then the fewest to change) into `dir`, and
    /// makes it show those layers; `None` when no tree shares the base or
    /// one could not be switched (it is removed then).
    fn claim_nearest(&self, pooled: &Pooled, dir: &Path) -> Result<Option<StatIndex>> {
        let want = &pooled.chain;
        let mut near: Vec<(usize, usize, crate::tree_pool::Kept)> = pooled
            .pool
            .kept()
            .into_iter()
            .filter_map(|k| {
                let shared = k.chain.iter().zip(want).take_while(|(a, b)| a == b).count();
                let differ = k.chain.len() + want.len() - 2 * shared;
                (shared > 0).then_some((shared, differ, k))
            })
            .collect();
        near.sort_by_key(|(shared, differ, _)| (std::cmp::Reverse(*shared), *differ));
        for (shared, _, kept) in near {
            // The old stack's layers above the shared base must still be
            // unpacked: their paths are what changes.
            let mut differing: Vec<PathBuf> = kept.chain[shared..]
                .iter()
                .map(|d| self.layers_dir().join(d.trim_start_matches("sha256:")))
                .collect();
            if !differing.iter().all(|d| d.is_dir()) {
                continue;
            }
            let Some(mut index) = pooled.pool.claim(&kept.key, dir) else {
                continue;
            };
            // `layer_dirs` is top first: the new stack's own layers are
            // its first `want.len() - shared`.
            differing.extend_from_slice(&pooled.layer_dirs[..want.len() - shared]);
            let rootfs = dir.join("rootfs");
            match switch_layers(&pooled.layer_dirs, &differing, &rootfs, &mut index) {
                Ok(true) => return Ok(Some(index)),
                _ => {
                    remove_tree(dir)?;
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// The fallback of [`Snapshots::fill_copy`]: every layer blob unpacked
    /// in order into `rootfs`, then indexed by a walk.
    fn unpack_into(
        &self,
        store: &Store,
        layers: &[(Descriptor, Digest)],
        rootfs: &Path,
    ) -> Result<StatIndex> {
        for (blob, diff_id) in layers {
            self.ensure(store, blob)?;
            let f = store.open_blob(&blob.digest).map_err(Error::from)?;
            let opts = ExtractOptions {
                expect_diff_id: Some(diff_id.clone()),
                ..ExtractOptions::default()
            };
            extract(
                std::io::BufReader::with_capacity(256 * 1024, f),
                rootfs,
                &opts,
            )
            .map_err(|cause| Error::Extract {
                diff_id: diff_id.to_string(),
                cause,
            })?;
        }
        StatIndex::build(rootfs)
    }
}

/// One writable filesystem. Dropping it does not remove it; call
/// [`Container::remove`] when the diff has been taken.
pub struct Container {
    dir: PathBuf,
    mode: Mode,
    lowers: Vec<PathBuf>,
    index: Option<StatIndex>,
    pooled: Option<Pooled>,
    /// What the diff's walk found (copy mode), for putting the tree back.
    found: std::sync::Mutex<Option<Found>>,
    /// The directories the run touched (copy mode), until the diff.
    watch: std::sync::Mutex<Option<Watch>>,
}

impl Container {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Overlay lowers, top first.
    pub fn lowers(&self) -> &[PathBuf] {
        &self.lowers
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The plain root directory (copy mode).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The changes made since the container was created, as layer
    /// entries. `mount_targets` are the run's mount points, whose stubs are
    /// left out.
    pub fn diff(&self, mount_targets: &[PathBuf]) -> Result<Vec<Entry>> {
        match self.mode {
            Mode::Overlay => {
                let lowers = &self.lowers;
                let existed = |p: &Path| {
                    lowers
                        .iter()
                        .any(|l| fs::symlink_metadata(l.join(p)).is_ok())
                };
                diff_upper(&self.upper(), &existed, mount_targets)
            }
            Mode::Copy => {
                let root = self.rootfs();
                let index = self.index.as_ref().expect("copy containers have an index");
                let watch = self.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
                let found = changes(&root, index, watch)?;
                let entries = entries_of(&root, index, mount_targets, &found)?;
                *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                Ok(entries)
            }
        }
    }

    /// Deletes the container's directories; a copied tree is put back as
    /// its layers show it and kept for the next container over them.
    pub fn remove(mut self) -> Result<()> {
        let watch = self.watch.into_inner().unwrap_or_else(|p| p.into_inner());
        if let (Some(pooled), Some(index)) = (self.pooled.take(), self.index.take()) {
            let found = self.found.into_inner().unwrap_or_else(|p| p.into_inner());
            match recycle(&self.dir, pooled, index, found, watch) {
                Ok(()) => return Ok(()),
                Err(_) => return remove_tree(&self.dir),
            }
        }
        // overlayfs leaves `work/work` with mode 000; root may still remove it.
        remove_tree(&self.dir)
    }
}

/// What changed in a copied tree since `index`: from the directories the
/// watch saw touched where it can tell, else by a walk of everything.
fn changes(root: &Path, index: &StatIndex, watch: Option<Watch>) -> Result<Found> {
    let dirty = watch.and_then(|w| w.dirty());
    if let Some(dirty) = dirty
        && let Some(found) = walk_watched(root, index, dirty)?
    {
        return Ok(found);
    }
    walk_changes(root, index)
}

/// Undoes a run's changes in a copied tree and keeps it (or removes it
/// when the result would not equal a fresh copy).
fn recycle(
    dir: &Path,
    pooled: Pooled,
    mut index: StatIndex,
    found: Option<Found>,
    watch: Option<Watch>,
) -> Result<()> {
    let root = dir.join("rootfs");
    let found = match found {
        Some(f) => f,
        None => changes(&root, &index, watch)?,
    };
    if !restore(&pooled.layer_dirs, &root, &mut index, &found)? {
        return remove_tree(dir);
    }
    pooled.pool.put(dir, &pooled.chain, &index)
}
