//! The local content store: content-addressed blobs and named images, laid
//! out as an OCI image layout so that other tools (`skopeo`, `umoci`) can
//! read it as `oci:<root>:<name>`.
//!
//! ```text
//! <root>/oci-layout
//! <root>/index.json          named images (annotation org.opencontainers.image.ref.name)
//! <root>/blobs/sha256/<hex>  content
//! <root>/roots/<owner>/<key> extra GC roots (build cache entries), one digest per line
//! <root>/tmp/                blobs being written
//! <root>/gc.lock, index.lock
//! ```
//!
//! Every write goes to a temp file that is fsynced and renamed into place, so
//! a process killed at any instant leaves either the old or the new state
//! plus stray temp files, which `prune` removes. Several processes share the
//! store: each holds a shared lock on `gc.lock` while it lives, `prune` takes
//! it exclusively, and updates of `index.json` are serialized by `index.lock`.
//!
//! The root and every component directory ([`Store::dir`]) are private to
//! their owner (0700), as containers/storage keeps its own: unpacked layers,
//! containers and cache mounts hold what images and RUN steps put there,
//! device nodes and set-id files included, and no other local user may reach
//! them.
//!
//! It knows nothing of tar or compression; the layer codec streams into a
//! [`BlobWriter`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::manifest::{AnyManifest, Descriptor, Index};
use crate::reference::{Reference, ReferenceError};
use crate::{Digest, Hasher, media};

/// The annotation OCI layouts use to name a manifest.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// When the name was last pointed at its manifest (RFC 3339).
pub const TAGGED_AT: &str = "io.kiln.tagged";
/// The digest a registry knows the name's image by, once it was pulled or
/// pushed: after a push it differs from the stored manifest's (the layers
/// went out compressed), and it is what `docker images --digests` shows.
pub const REGISTRY_DIGEST: &str = "io.kiln.registry.digest";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {cause}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    /// The name as typed, quoted, and what it was looked up as.
    #[error("image {0} is not in the store")]
    ImageNotFound(String),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("corrupt {what} in the store: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("invalid JSON in {what}: {cause}")]
    Json {
        what: String,
        cause: serde_json::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |cause| StoreError::Io { op, path, cause }
}

/// A handle on a store root. Holding it keeps `prune` from running.
pub struct Store {
    root: PathBuf,
    _gc_lease: File,
}

/// The default root: `/var/lib/kiln` for root, else `$XDG_DATA_HOME/kiln`
/// (`~/.local/share/kiln`). `KILN_ROOT` overrides both; `--root` overrides
/// that, in the binary.
pub fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("KILN_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    if rustix_is_root() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/kiln")
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other live process or thread of this machine is using now:
/// pid, a process-wide counter and the clock's nanoseconds. For temp files
/// and directories that are renamed into place or removed.
pub fn temp_name() -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:x}", std::process::id())
}

/// Makes a directory 0700 unless it already is (one stat when it is).
pub fn make_private(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if !meta.is_dir() {
        return Err(io_err("open", dir)(io::Error::other("not a directory")));
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", dir))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", temp_name()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("write", path)(e)
    })
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err("create", &root))?;
        // Best effort: a store put in a directory the caller does not own
        // keeps its mode, and its component directories stay private anyway.
        let _ = make_private(&root);
        for d in ["blobs/sha256", "tmp", "roots"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        make_private(&root.join("tmp"))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _guard = lock(&root.join("index.lock"), true)?;
            if !index.exists() {
                write_atomic(
                    &index,
                    &crate::canonical::to_vec(&empty_index()).expect("index"),
                )?;
            }
        }
        let gc_lease = lock(&root.join("gc.lock"), false)?;
        Ok(Store {
            root,
            _gc_lease: gc_lease,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory of the store for another component's state (snapshots,
    /// cache mounts, build cache), created on first use.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.root.join(name);
        fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        let mut dir = self.root.clone();
        for part in Path::new(name).components() {
            dir.push(part);
            make_private(&dir)?;
        }
        Ok(p)
    }

    /// Where the store's blobs were fetched from (see [`crate::blob_sources`]).
    pub fn blob_sources(&self) -> crate::blob_sources::BlobSources {
        crate::blob_sources::BlobSources::new(&self.root)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => io_err("open", &p)(e),
        })
    }

    /// Reads a small blob (manifest, config) whole.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let p = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .map_err(io_err("read", &p))?;
        Ok(buf)
    }

    /// A writer for a new blob. Nothing is visible until [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let path = self.root.join("tmp").join(temp_name());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(BlobWriter {
            store_root: self.root.clone(),
            path,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            hasher: Hasher::sha256(),
            size: 0,
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256_of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(io_err("write", &w.path.clone()))?;
        w.commit(Some(&digest))?;
        Ok(digest)
    }

    /// Stores `value` as canonical JSON and returns its descriptor.
    pub fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes = crate::canonical::to_vec(value).map_err(|cause| StoreError::Json {
            what: media_type.to_string(),
            cause,
        })?;
        let digest = self.put_blob(&bytes)?;
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    /// Reads and parses a JSON blob.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|cause| StoreError::Json {
            what: digest.to_string(),
            cause,
        })
    }

    // ---- names ----

    fn read_index(&self) -> Result<Index> {
        let p = self.root.join("index.json");
        let bytes = fs::read(&p).map_err(io_err("read", &p))?;
        serde_json::from_slice(&bytes).map_err(|cause| StoreError::Json {
            what: p.display().to_string(),
            cause,
        })
    }

    fn update_index(&self, f: impl FnOnce(&mut Index)) -> Result<()> {
        let _guard = lock(&self.root.join("index.lock"), true)?;
        let mut index = self.read_index()?;
        f(&mut index);
        index.manifests.sort_by(|a, b| {
            a.annotations
                .get(REF_NAME)
                .cmp(&b.annotations.get(REF_NAME))
        });
        let bytes = crate::canonical::to_vec(&index).expect("index serializes");
        write_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Points `name` at the manifest or index `desc` (which must be stored).
    pub fn tag(&self, name: &Reference, desc: &Descriptor) -> Result<()> {
        if !self.has_blob(&desc.digest) {
            return Err(StoreError::BlobNotFound(desc.digest.clone()));
        }
        let key = name.to_string();
        let mut entry = Descriptor::new(&desc.media_type, desc.digest.clone(), desc.size);
        entry.platform = desc.platform.clone();
        entry.annotations.insert(REF_NAME.into(), key.clone());
        entry.annotations.insert(TAGGED_AT.into(), now_rfc3339());
        self.update_index(|index| {
            // The same image tagged again is still what the registry knows.
            if let Some(old) = index
                .manifests
                .iter()
                .find(|d| d.annotations.get(REF_NAME) == Some(&key) && d.digest == entry.digest)
                && let Some(r) = old.annotations.get(REGISTRY_DIGEST)
            {
                entry.annotations.insert(REGISTRY_DIGEST.into(), r.clone());
            }
            index
                .manifests
                .retain(|d| d.annotations.get(REF_NAME) != Some(&key));
            index.manifests.push(entry);
        })
    }

    /// Records that a registry knows `name`'s image as `digest` (after a
    /// pull or a push). Nothing happens when `name` is not in the store.
    pub fn set_registry_digest(&self, name: &Reference, digest: &Digest) -> Result<()> {
        let key = name.to_string();
        self.update_index(|index| {
            for d in &mut index.manifests {
                if d.annotations.get(REF_NAME) == Some(&key) {
                    d.annotations
                        .insert(REGISTRY_DIGEST.into(), digest.to_string());
                }
            }
        })
    }

    /// Removes `name`. Content stays until `prune`.
    pub fn untag(&self, name: &Reference) -> Result<()> {
        let key = name.to_string();
        let mut found = false;
        self.update_index(|index| {
            let before = index.manifests.len();
            index
                .manifests
                .retain(|d| d.annotations.get(REF_NAME) != Some(&key));
            found = index.manifests.len() != before;
        })?;
        if found {
            Ok(())
        } else {
            Err(StoreError::ImageNotFound(format!("\"{name}\"")))
        }
    }

    /// All named images, sorted by name.
    pub fn images(&self) -> Result<Vec<(Reference, Descriptor)>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for d in index.manifests {
            let Some(name) = d.annotations.get(REF_NAME) else {
                continue;
            };
            if let Ok(r) = Reference::parse(name) {
                out.push((r, d));
            }
        }
        Ok(out)
    }

    /// Resolves a user's name for an image: a reference (`busybox` means
    /// `docker.io/library/busybox:latest`), a full or short config digest
    /// (image ID), or a manifest digest.
    pub fn resolve(&self, name: &str) -> Result<Descriptor> {
        let images = self.images()?;
        if let Ok(r) = Reference::parse(name) {
            if let Some((_, d)) = images.iter().find(|(n, _)| *n == r) {
                return Ok(d.clone());
            }
            if let Some(want) = r.digest()
                && self.has_blob(want)
            {
                return self.descriptor_of_manifest(want);
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (_, d) in &images {
                if d.digest.hex().starts_with(hex) {
                    return Ok(d.clone());
                }
                if let Ok(cfg) = self.config_digest(d)
                    && cfg.hex().starts_with(hex)
                {
                    return Ok(d.clone());
                }
            }
        }
        Err(StoreError::ImageNotFound(match Reference::parse(name) {
            // What was typed and what it means: `busybox` is looked up as
            // docker.io/library/busybox:latest, and the error says so.
            Ok(r) if r.to_string() != name => format!("\"{name}\" ({r})"),
            _ => format!("\"{name}\""),
        }))
    }

    fn descriptor_of_manifest(&self, digest: &Digest) -> Result<Descriptor> {
        let bytes = self.read_blob(digest)?;
        let media_type = match AnyManifest::parse(None, &bytes) {
            Ok(AnyManifest::Index(i)) => i.media_type.unwrap_or_else(|| media::OCI_INDEX.into()),
            Ok(AnyManifest::Manifest(m)) => {
                m.media_type.unwrap_or_else(|| media::OCI_MANIFEST.into())
            }
            Err(e) => {
                return Err(StoreError::Corrupt {
                    what: format!("manifest {digest}"),
                    detail: e.to_string(),
                });
            }
        };
        Ok(Descriptor::new(
            media_type,
            digest.clone(),
            bytes.len() as u64,
        ))
    }

    fn config_digest(&self, desc: &Descriptor) -> Result<Digest> {
        match self.manifest_doc(&desc.digest)? {
            AnyManifest::Manifest(m) => Ok(m.config.digest),
            AnyManifest::Index(_) => Err(StoreError::Corrupt {
                what: desc.digest.to_string(),
                detail: "an index has no config".into(),
            }),
        }
    }

    /// Reads and parses a stored manifest or index.
    pub fn manifest_doc(&self, digest: &Digest) -> Result<AnyManifest> {
        let bytes = self.read_blob(digest)?;
        AnyManifest::parse(None, &bytes).map_err(|e| StoreError::Corrupt {
            what: format!("manifest {digest}"),
            detail: e.to_string(),
        })
    }

    // ---- GC roots and garbage ----

    /// Records `digests` as reachable under `owner/key` (for example the
    /// build cache), so that `prune` keeps them.
    pub fn set_root(&self, owner: &str, key: &str, digests: &[Digest]) -> Result<()> {
        let dir = self.dir(&format!("roots/{owner}"))?;
        let body: String = digests.iter().map(|d| format!("{d}\n")).collect();
        write_atomic(&dir.join(key), body.as_bytes())
    }

    pub fn remove_root(&self, owner: &str, key: &str) -> Result<()> {
        let p = self.root.join("roots").join(owner).join(key);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    /// Every blob reachable from a name or a GC root, but the roots of the
    /// owners in `forget`.
    fn reachable(&self, forget: &[&str]) -> Result<BTreeSet<Digest>> {
        let mut todo: Vec<Digest> = self
            .read_index()?
            .manifests
            .into_iter()
            .map(|d| d.digest)
            .collect();
        let roots = self.root.join("roots");
        for entry in walk_files(&roots)? {
            let owner = entry
                .strip_prefix(&roots)
                .ok()
                .and_then(|p| p.iter().next());
            if owner.is_some_and(|o| forget.iter().any(|f| o == *f)) {
                continue;
            }
            let text = fs::read_to_string(&entry).map_err(io_err("read", &entry))?;
            todo.extend(text.lines().filter_map(|l| l.trim().parse::<Digest>().ok()));
        }
        let mut seen = BTreeSet::new();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) || !self.has_blob(&d) {
                continue;
            }
            // Only documents that parse as manifests have children; layers
            // and configs are leaves. Read at most a few MiB to decide.
            if self.blob_size(&d)? > 4 << 20 {
                continue;
            }
            let bytes = self.read_blob(&d)?;
            match AnyManifest::parse(None, &bytes) {
                Ok(AnyManifest::Manifest(m)) => {
                    todo.push(m.config.digest);
                    todo.extend(m.layers.into_iter().map(|l| l.digest));
                }
                Ok(AnyManifest::Index(i)) => todo.extend(i.manifests.into_iter().map(|m| m.digest)),
                Err(_) => {}
            }
        }
        Ok(seen)
    }

    /// Removes blobs no name or GC root reaches, and stray temp files. Waits
    /// for other kiln processes on this store to finish first.
    pub fn prune(self) -> Result<PruneReport> {
        self.prune_with(&[], |_, _| Ok(()))
    }

    /// [`Store::prune`], first forgetting the GC roots and the store
    /// directories named in `forget` (a cache, say), and then calling
    /// `after` with the blobs that stay, still under the exclusive lock, so
    /// that caches kept above the store (unpacked layers) can follow.
    pub fn prune_with(
        self,
        forget: &[&str],
        after: impl FnOnce(&Store, &BTreeSet<Digest>) -> Result<()>,
    ) -> Result<PruneReport> {
        let Store { root, _gc_lease } = self;
        drop(_gc_lease);
        let exclusive = lock(&root.join("gc.lock"), true)?;
        let store = Store {
            root: root.clone(),
            _gc_lease: exclusive,
        };
        for name in forget {
            for dir in [root.join("roots").join(name), root.join(name)] {
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &dir)(e)),
                }
            }
        }
        let keep = store.reachable(&[])?;
        let mut report = PruneReport::default();
        for algo in ["sha256", "sha512"] {
            let dir = root.join("blobs").join(algo);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let keep_it = format!("{algo}:{name}")
                    .parse::<Digest>()
                    .is_ok_and(|d| keep.contains(&d));
                if !keep_it {
                    report.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    report.blobs += 1;
                    let p = e.path();
                    fs::remove_file(&p).map_err(io_err("remove", &p))?;
                    store.blob_sources().forget(algo, &name);
                }
            }
        }
        report.temp_files = clear_dir(&root.join("tmp"))?;
        for dir in [root.clone(), root.join("blobs/sha256")] {
            for e in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(e.path());
                    report.temp_files += 1;
                }
            }
        }
        after(&store, &keep)?;
        Ok(report)
    }

    /// What [`Store::prune_with`] would remove, removing nothing: the blobs
    /// no name (nor GC root, but those of `forget`) reaches, with the set
    /// that stays, and the temp files. Other processes may add to the
    /// store meanwhile; the answer is for this instant.
    pub fn garbage(&self, forget: &[&str]) -> Result<(PruneReport, BTreeSet<Digest>)> {
        let keep = self.reachable(forget)?;
        let mut report = PruneReport::default();
        for (d, size) in self.blobs()? {
            if !keep.contains(&d) {
                report.blobs += 1;
                report.bytes += size;
            }
        }
        let tmp = self.root.join("tmp");
        report.temp_files = fs::read_dir(&tmp).map_err(io_err("read", &tmp))?.count();
        Ok((report, keep))
    }

    /// Every blob in the store, with its size.
    pub fn blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for algo in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(algo);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(d) = format!("{algo}:{name}").parse::<Digest>() {
                    out.push((d, e.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
        }
        Ok(out)
    }

    /// Verifies the store: every blob matches its digest, every name points
    /// at a manifest whose config and layers are present.
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(want) = format!("sha256:{name}").parse::<Digest>() else {
                report
                    .problems
                    .push(format!("stray file blobs/sha256/{name}"));
                continue;
            };
            let p = e.path();
            let mut f = File::open(&p).map_err(io_err("open", &p))?;
            let mut h = Hasher::sha256();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(io_err("read", &p))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let got = h.finish();
            if got != want {
                report
                    .problems
                    .push(format!("blob {want} has content {got}"));
            }
            report.blobs += 1;
        }
        for (name, desc) in self.images()? {
            report.images += 1;
            let mut todo = vec![desc.digest.clone()];
            while let Some(d) = todo.pop() {
                if !self.has_blob(&d) {
                    report
                        .problems
                        .push(format!("{}: missing blob {d}", name.familiar()));
                    continue;
                }
                match self.manifest_doc(&d) {
                    Ok(AnyManifest::Manifest(m)) => {
                        for l in std::iter::once(&m.config).chain(&m.layers) {
                            if !self.has_blob(&l.digest) {
                                report.problems.push(format!(
                                    "{}: missing blob {}",
                                    name.familiar(),
                                    l.digest
                                ));
                            }
                        }
                    }
                    Ok(AnyManifest::Index(i)) => {
                        todo.extend(i.manifests.into_iter().map(|m| m.digest))
                    }
                    Err(e) => report.problems.push(format!("{}: {e}", name.familiar())),
                }
            }
        }
        let tmp = self.root.join("tmp");
        report.temp_files = fs::read_dir(&tmp).map_err(io_err("read", &tmp))?.count();
        Ok(report)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub bytes: u64,
    pub temp_files: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub blobs: usize,
    pub images: usize,
    /// Temp files left by killed writers: harmless, removed by `prune`.
    pub temp_files: usize,
    pub problems: Vec<String>,
}

/// A blob being written. It hashes what passes through; `commit` verifies,
/// fsyncs and renames it into place. Dropped without commit, it removes its
/// temp file.
pub struct BlobWriter {
    store_root: PathBuf,
    path: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the blob visible. With `expected`, content that does not match
    /// is discarded and an error returned.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let file = self.file.take().expect("commit once");
        let path = self.path.clone();
        let file = file
            .into_inner()
            .map_err(|e| io_err("write", &path)(e.into_error()))?;
        let digest = std::mem::replace(&mut self.hasher, Hasher::sha256()).finish();
        if let Some(want) = expected
            && *want != digest
        {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(StoreError::DigestMismatch {
                expected: want.clone(),
                actual: digest,
            });
        }
        file.sync_all().map_err(io_err("fsync", &path))?;
        drop(file);
        let dir = self.store_root.join("blobs").join("sha256");
        let dest = dir.join(digest.hex());
        fs::rename(&path, &dest).map_err(io_err("rename", &dest))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))?;
        let _ = fs::set_permissions(&dest, fs::Permissions::from_mode(0o644));
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn empty_index() -> Index {
    Index::new(media::Format::Oci, Vec::new())
}

fn lock(path: &Path, exclusive: bool) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let r = if exclusive { f.lock() } else { f.lock_shared() };
    r.map_err(io_err("lock", path))?;
    Ok(f)
}

fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() && !e.file_name().to_string_lossy().starts_with(".tmp-") => {
                    out.push(p)
                }
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

fn clear_dir(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir).map_err(io_err("read", dir))?.flatten() {
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(io_err("remove", &p))?;
        n += 1;
    }
    Ok(n)
}

/// The current time as RFC 3339 in UTC, second precision; `SOURCE_DATE_EPOCH`
/// is not consulted here (names are not content).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::time::rfc3339(secs)
}

/// Names and their manifest digests, for callers that need a snapshot.
pub fn names_by_digest(images: &[(Reference, Descriptor)]) -> BTreeMap<Digest, Vec<Reference>> {
    let mut m: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
    for (r, d) in images {
        m.entry(d.digest.clone()).or_default().push(r.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_tags_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = store
            .put_json(media::OCI_CONFIG, &serde_json::json!({"os":"linux"}))
            .unwrap();
        let layer = store.put_blob(b"layer bytes").unwrap();
        let stray = store.put_blob(b"unreferenced").unwrap();
        let m = crate::Manifest::new(
            media::Format::Oci,
            cfg.clone(),
            vec![Descriptor::new(media::OCI_LAYER, layer.clone(), 11)],
        );
        let md = store.put_json(media::OCI_MANIFEST, &m).unwrap();
        let name = Reference::parse("test/app:1").unwrap();
        store.tag(&name, &md).unwrap();
        assert_eq!(store.resolve("test/app:1").unwrap().digest, md.digest);
        assert_eq!(
            store.resolve(&cfg.digest.hex()[..12]).unwrap().digest,
            md.digest
        );
        assert!(store.resolve("test/app:2").is_err());

        let mut w = store.blob_writer().unwrap();
        w.write_all(b"half").unwrap();
        std::mem::forget(w); // as if killed mid-write
        let report = store.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.temp_files, 1);

        let report = store.prune().unwrap();
        assert_eq!(report.blobs, 1);
        assert_eq!(report.temp_files, 1);
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.has_blob(&stray));
        assert!(store.has_blob(&layer));
        store.untag(&name).unwrap();
        store.prune().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.has_blob(&layer));
    }

    #[test]
    fn mismatched_content_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"evil").unwrap();
        let want = Digest::sha256_of(b"good");
        assert!(matches!(
            w.commit(Some(&want)),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&want));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
