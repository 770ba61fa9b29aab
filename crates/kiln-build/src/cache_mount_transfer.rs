//! Cache mounts between a build and its imported caches: which
//! `RUN --mount=type=cache` mounts the build used (so `--cache-to
//! …,mounts=true` exports them, see `crate::export::cache`), and restoring
//! the mounts an imported cache carries into the store before the first
//! RUN that runs with one.
//!
//! A mount is restored only where the store's copy is absent or empty: a
//! local cache is never overwritten (it is this machine's, and may be
//! newer). The layer is unpacked by kiln's layer extractor (nothing lands
//! outside the directory it unpacks into, whatever the tar says), checked
//! against its diff ID while it is read, into a fresh directory beside the
//! mount that is renamed into place only when complete: a cache that lies
//! leaves nothing. Owners are restored as recorded, which inside kiln's
//! user namespace (rootless) are the IDs the sandbox sees, as they were
//! when exported.
//!
//! A failed restore is warned about once per cache (or fails the build
//! with `ignore-error=false`), and the RUN runs with the mount as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln_image::digest::HashingReader;
use kiln_image::layer::{ExtractOptions, extract};
use kiln_image::transport::ImageSource;
use kiln_image::{Descriptor, Digest, Store};

use crate::cache_mount::{CacheMount, RunCacheMount};
use crate::progress::Step;

/// One cache mount an imported cache carries.
#[derive(Debug, Clone)]
pub struct ImportedMount {
    /// The store's name of the mount (see `crate::cache_mount`).
    pub name: String,
    pub id: String,
    pub target: String,
    pub remote: Descriptor,
    pub diff_id: Digest,
    /// The plain tar's size.
    pub size: u64,
    /// Bytes of file content, for messages.
    pub bytes: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The cache mounts of one `--cache-from`, and where their blobs are.
pub struct ImportedMounts {
    name: String,
    mounts: Vec<ImportedMount>,
    source: Option<Box<dyn ImageSource>>,
    required: bool,
    broken: AtomicBool,
}

impl ImportedMounts {
    pub fn new(
        name: String,
        mounts: Vec<ImportedMount>,
        source: Option<Box<dyn ImageSource>>,
        required: bool,
    ) -> ImportedMounts {
        ImportedMounts {
            name,
            mounts,
            source,
            required,
            broken: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.mounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }
}

/// One restored mount, for the build's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub id: String,
    pub target: String,
    pub bytes: u64,
}

/// A build's cache mounts beyond the store; see the module docs.
#[derive(Default)]
pub struct CacheMounts {
    imports: Vec<ImportedMounts>,
    used: Mutex<BTreeMap<String, RunCacheMount>>,
    /// Names already considered for a restore (held while restoring, so
    /// RUNs in parallel restore a mount once).
    tried: Mutex<BTreeSet<String>>,
    restored: Mutex<Vec<Restored>>,
    warnings: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
}

impl CacheMounts {
    /// The mounts of the `--cache-from`s, in their order (the first that
    /// has a mount gives it).
    pub fn new(imports: Vec<ImportedMounts>) -> CacheMounts {
        CacheMounts {
            imports,
            ..CacheMounts::default()
        }
    }

    /// Every cache mount of every RUN of the build, run or cached.
    pub fn used(&self) -> Vec<RunCacheMount> {
        lock(&self.used).values().cloned().collect()
    }

    pub fn restored(&self) -> Vec<Restored> {
        lock(&self.restored).clone()
    }

    /// The mount named `name` as the first import that has it carries
    /// it: what an export passes on for a mount this store never filled
    /// (every RUN with it was cached), so that a fully cached build does
    /// not drop the mounts from the cache it writes.
    pub fn carried(&self, name: &str) -> Option<ImportedMount> {
        self.imports
            .iter()
            .filter(|i| i.source.is_some())
            .find_map(|i| i.mounts.iter().find(|m| m.name == name))
            .cloned()
    }

    /// The blob of a carried mount, from the import that has it.
    pub fn blob(
        &self,
        desc: &Descriptor,
    ) -> Option<kiln_image::transport::Result<Box<dyn std::io::Read + Send + '_>>> {
        self.imports.iter().find_map(|i| {
            let source = i.source.as_deref()?;
            i.mounts
                .iter()
                .any(|m| m.remote.digest == desc.digest)
                .then(|| source.blob(desc))
        })
    }

    /// Failed restores (one per cache), taken once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }

    /// Failed restores from caches imported with `ignore-error=false`.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.errors))
    }

    /// Notes that a RUN (run or cached) has these mounts.
    pub(crate) fn note_used(&self, mounts: &[RunCacheMount]) {
        let mut used = lock(&self.used);
        for m in mounts {
            used.entry(m.name.clone()).or_insert_with(|| m.clone());
        }
    }

    /// Before a RUN runs: restores each of its `mounts` an import carries
    /// and the store lacks (absent or empty), saying so on `step`.
    pub(crate) fn restore(&self, store: &Store, mounts: &[RunCacheMount], step: &Step<'_>) {
        if self.imports.iter().all(|i| i.is_empty()) {
            return;
        }
        let mut tried = lock(&self.tried);
        for m in mounts {
            if !tried.insert(m.name.clone()) {
                continue;
            }
            let Some((import, mount)) = self.imports.iter().find_map(|i| {
                let found = i.mounts.iter().find(|x| x.name == m.name)?;
                (!i.broken.load(Ordering::Relaxed)).then_some((i, found))
            }) else {
                continue;
            };
            match restore_one(store, import, mount) {
                Ok(true) => {
                    step.output(&format!(
                        "restored cache mount {} ({}): {}",
                        m.id,
                        m.target,
                        human_bytes(mount.bytes)
                    ));
                    lock(&self.restored).push(Restored {
                        id: m.id.clone(),
                        target: m.target.clone(),
                        bytes: mount.bytes,
                    });
                }
                Ok(false) => {
                    step.output(&format!(
                        "cache mount {} ({}): the store has its own; not restored",
                        m.id, m.target
                    ));
                }
                Err(e) => {
                    if !import.broken.swap(true, Ordering::Relaxed) {
                        let msg = format!(
                            "--cache-from {}: cache mount {} ({}): {e}; building without its cache mounts",
                            import.name, m.id, m.target
                        );
                        step.output(&msg);
                        let list = match import.required {
                            true => &self.errors,
                            false => &self.warnings,
                        };
                        lock(list).push(msg);
                    }
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `dir` is missing or an empty directory.
fn absent_or_empty(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Restores `mount` unless the store has a non-empty one; `Ok(false)`:
/// the store's was kept.
fn restore_one(
    store: &Store,
    import: &ImportedMounts,
    mount: &ImportedMount,
) -> Result<bool, String> {
    let cache = CacheMount::open(store, &mount.name).map_err(|e| e.to_string())?;
    let data = cache.data();
    if !absent_or_empty(&data) {
        return Ok(false);
    }
    let source = import
        .source
        .as_deref()
        .ok_or_else(|| "no source for its blobs".to_string())?;
    let tmp = cache
        .dir()
        .join(format!("restore-{}", kiln_image::store::temp_name()));
    fs::create_dir(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let done = unpack(source, mount, &tmp).and_then(|()| {
        // The store's empty directory (a RUN made it, or a failed
        // restore) gives way; one with files in it meanwhile is kept.
        if data.exists() && fs::remove_dir(&data).is_err() {
            return Ok(false);
        }
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            &data,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map(|()| true)
        .or_else(|e| match e {
            rustix::io::Errno::EXIST => Ok(false),
            e => Err(format!("moving it into place: {e}")),
        })
    });
    if !matches!(done, Ok(true)) {
        let _ = fs::remove_dir_all(&tmp);
    }
    done
}

/// Fetches the mount's layer and unpacks it into `dir`, checked against
/// its diff ID, then gives `dir` the mount's mode and owner.
fn unpack(source: &dyn ImageSource, mount: &ImportedMount, dir: &Path) -> Result<(), String> {
    use std::io::Read;
    let blob = source.blob(&mount.remote).map_err(|e| e.to_string())?;
    // One byte more than announced: a longer blob fails its digest.
    let mut blob = HashingReader::new(
        blob.take(mount.remote.size + 1),
        mount.remote.digest.hasher(),
    );
    let opts = ExtractOptions {
        expect_diff_id: Some(mount.diff_id.clone()),
        ..ExtractOptions::default()
    };
    extract(
        std::io::BufReader::with_capacity(256 * 1024, &mut blob),
        dir,
        &opts,
    )
    .map_err(|e| format!("unpacking it: {e}"))?;
    // The rest (a compressor's trailer) is read too: the blob's own digest
    // is checked, and the connection is left clean.
    std::io::copy(&mut blob, &mut std::io::sink()).map_err(|e| format!("reading it: {e}"))?;
    let (_, digest, size) = blob.finish();
    if digest != mount.remote.digest || size != mount.remote.size {
        return Err(format!(
            "the blob is {digest} ({size} bytes), not the {} ({} bytes) the cache names",
            mount.remote.digest, mount.remote.size
        ));
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mount.mode))
        .map_err(|e| format!("setting its mode: {e}"))?;
    // Best effort, as for a new cache mount: a user without a subordinate
    // range has only their own IDs.
    let _ = std::os::unix::fs::chown(dir, Some(mount.uid), Some(mount.gid));
    Ok(())
}

/// `12.3 MB`: decimal units, as progress output says sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    match u {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[u]),
    }
}

#[cfg(test)]
mod tests;
