//! Remote layers: layers a build uses but has not downloaded. A registry
//! cache hit and a registry base image name their layers here instead of
//! fetching them; a layer is fetched into the store only when something
//! needs its bytes: unpacking it (the snapshots' `EnsureBlob` hook, which
//! every RUN, COPY --from, bind mount and file lookup goes through) or an
//! output that writes it (see [`RemoteLayers::ensure_image`]). A push to
//! the registry that holds a layer mounts it there instead (see
//! [`crate::export::Push`]), so a fully cached push moves no layer bytes.
//!
//! A fetch is checked as a pull is: a cache's layer is decompressed and
//! checked against its diff ID while it is written, a base's against its
//! digest; the store's writer commits by temp file, fsync and rename, so
//! a failed or lying fetch leaves nothing. Each layer is fetched once,
//! however many ops want it at the same time.
//!
//! It does not decide what a failure means: the build's cache session
//! does (a broken cache is dropped and the build tried again without it).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiln_image::media::Compression;
use kiln_image::transport::{ImageSink, ImageSource, RawManifest, TransportError};
use kiln_image::{Descriptor, Digest, Reference, Store};

/// Where a remote layer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The imported cache at this position of the session's list.
    Cache(usize),
    /// A base image, by its name.
    Base(String),
}

/// One layer the store does not have yet.
struct RemoteLayer {
    /// The blob as its source holds it (compressed, usually).
    remote: Descriptor,
    /// What the store keeps: the plain layer a cache's blob unpacks to,
    /// or `None` when the blob is kept as it is (a base image's layer).
    plain: Option<Descriptor>,
    source: Arc<dyn ImageSource>,
    origin: Origin,
    /// The repository a push to the same registry mounts it from.
    repository: Option<Reference>,
    /// Held while fetching, so two ops fetch it once.
    fetching: Mutex<()>,
}

impl RemoteLayer {
    fn stored(&self) -> &Digest {
        self.plain
            .as_ref()
            .map_or(&self.remote.digest, |p| &p.digest)
    }
}

/// A fetch that failed: which cache (if any) lied or is gone, and why.
#[derive(Debug)]
pub struct FetchFailure {
    pub origin: Option<Origin>,
    pub remote: Option<Digest>,
    pub why: String,
}

/// Layers fetched during the build and those that stayed remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerCounts {
    pub fetched: u64,
    pub fetched_bytes: u64,
    pub remote: u64,
}

/// The build's remote layers; see the module docs.
#[derive(Default)]
pub struct RemoteLayers {
    /// By the digest the store will keep.
    by_stored: Mutex<BTreeMap<Digest, Arc<RemoteLayer>>>,
    fetched: AtomicU64,
    bytes: AtomicU64,
}

impl RemoteLayers {
    /// A cache's layer: `remote` in `source` unpacks to `plain`.
    pub fn add_cache_layer(
        &self,
        plain: &Descriptor,
        remote: &Descriptor,
        source: Arc<dyn ImageSource>,
        cache: usize,
        repository: Option<Reference>,
    ) {
        self.add(RemoteLayer {
            remote: remote.clone(),
            plain: Some(plain.clone()),
            source,
            origin: Origin::Cache(cache),
            repository,
            fetching: Mutex::new(()),
        });
    }

    /// A base image's layer, kept as `source` has it.
    pub fn add_base_layer(
        &self,
        remote: &Descriptor,
        source: Arc<dyn ImageSource>,
        name: &Reference,
    ) {
        self.add(RemoteLayer {
            remote: remote.clone(),
            plain: None,
            source,
            origin: Origin::Base(name.to_string()),
            repository: Some(name.clone()),
            fetching: Mutex::new(()),
        });
    }

    fn add(&self, layer: RemoteLayer) {
        // The first source named keeps it: caches are tried in order.
        lock(&self.by_stored)
            .entry(layer.stored().clone())
            .or_insert_with(|| Arc::new(layer));
    }

    /// Drops the layers of the cache at `cache` (it failed): the build
    /// goes on without them.
    pub fn forget_cache(&self, cache: usize) {
        lock(&self.by_stored).retain(|_, l| l.origin != Origin::Cache(cache));
    }

    fn get(&self, stored: &Digest) -> Option<Arc<RemoteLayer>> {
        lock(&self.by_stored).get(stored).cloned()
    }

    /// Makes the layer blob `stored` present in `store`, fetching it if it
    /// is a remote layer the store lacks.
    pub fn ensure(&self, store: &Store, stored: &Digest) -> Result<(), FetchFailure> {
        if store.has_blob(stored) {
            return Ok(());
        }
        let Some(layer) = self.get(stored) else {
            return Err(FetchFailure {
                origin: None,
                remote: None,
                why: format!("layer {stored} is neither in the store nor in a known registry"),
            });
        };
        let _one_at_a_time = lock(&layer.fetching);
        if store.has_blob(stored) {
            return Ok(());
        }
        let fetched = match &layer.plain {
            Some(plain) => fetch_plain(store, layer.source.as_ref(), &layer.remote, plain),
            None => fetch_as_is(store, layer.source.as_ref(), &layer.remote),
        };
        match fetched {
            Ok(()) => {
                if let Some(repo) = &layer.repository {
                    // A hint for later pushes of images that hold it; its
                    // loss costs an upload, not this build.
                    let _ = store.blob_sources().record(&layer.remote.digest, repo);
                }
                self.fetched.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(layer.remote.size, Ordering::Relaxed);
                Ok(())
            }
            Err(why) => Err(FetchFailure {
                origin: Some(layer.origin.clone()),
                remote: Some(layer.remote.digest.clone()),
                why,
            }),
        }
    }

    /// Whether `stored` is a layer that is only remote.
    pub fn is_remote(&self, store: &Store, stored: &Digest) -> bool {
        !store.has_blob(stored) && self.get(stored).is_some()
    }

    /// The blob to push for the plain layer `plain` without fetching it:
    /// its cache's blob, when that is what `compression` would make (so
    /// a push to the cache's registry mounts it).
    pub fn compressed_remote(
        &self,
        store: &Store,
        plain: &Digest,
        compression: Compression,
    ) -> Option<Descriptor> {
        let layer = self.get(plain)?;
        let same =
            kiln_image::media::layer_compression(&layer.remote.media_type) == Some(compression);
        (layer.plain.is_some() && same && !store.has_blob(plain)).then(|| layer.remote.clone())
    }

    /// Every remote blob's source and descriptor, by the blob's digest
    /// (what a pushed manifest names), for a registry that cannot mount it.
    pub fn remote_blobs(&self) -> BTreeMap<Digest, (Arc<dyn ImageSource>, Descriptor)> {
        lock(&self.by_stored)
            .values()
            .map(|l| {
                (
                    l.remote.digest.clone(),
                    (l.source.clone(), l.remote.clone()),
                )
            })
            .collect()
    }

    /// Repositories that hold remote layers, to mount from on a push.
    pub fn repositories(&self) -> Vec<Reference> {
        let mut out: Vec<Reference> = Vec::new();
        for l in lock(&self.by_stored).values() {
            if let Some(r) = &l.repository
                && !out.iter().any(|o| o.repository() == r.repository())
            {
                out.push(r.clone());
            }
        }
        out
    }

    /// Fetches every layer of `image` the store lacks: before the image
    /// is written where its bytes are read (the store, an archive).
    pub fn ensure_image(
        &self,
        store: &Store,
        image: &kiln_image::Image,
    ) -> Result<(), FetchFailure> {
        for l in &image.layers {
            self.ensure(store, &l.digest)?;
        }
        Ok(())
    }

    /// How many layers were fetched, and their bytes.
    pub fn counts_fetched(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// How many layers were fetched, and how many of those the build
    /// named are still only remote.
    pub fn counts(&self, store: &Store) -> LayerCounts {
        let remote = lock(&self.by_stored)
            .keys()
            .filter(|d| !store.has_blob(d))
            .count() as u64;
        LayerCounts {
            fetched: self.fetched.load(Ordering::Relaxed),
            fetched_bytes: self.bytes.load(Ordering::Relaxed),
            remote,
        }
    }
}

/// Fetches `remote` and stores it as the plain layer `plain`, decompressed
/// on the way; the store's writer checks the plain digest (the diff ID)
/// and the sizes are checked here, so nothing else is ever committed.
fn fetch_plain(
    store: &Store,
    source: &dyn ImageSource,
    remote: &Descriptor,
    plain: &Descriptor,
) -> Result<(), String> {
    let compression = kiln_image::media::layer_compression(&remote.media_type)
        .ok_or_else(|| format!("{} is not a layer media type", remote.media_type))?;
    let reader = source.blob(remote).map_err(|e| e.to_string())?;
    // One byte more than announced, to notice a blob that is longer.
    let reader = std::io::BufReader::with_capacity(256 * 1024, reader.take(remote.size + 1));
    let reader = kiln_image::layer::decompress(reader, compression)
        .map_err(|e| format!("reading it: {e}"))?;
    let mut writer = store.blob_writer().map_err(|e| e.to_string())?;
    let copied = std::io::copy(&mut reader.take(plain.size + 1), &mut writer)
        .map_err(|e| format!("reading it: {e}"))?;
    if copied != plain.size {
        return Err(format!(
            "it unpacks to {copied} bytes where the cache says {}",
            plain.size
        ));
    }
    writer
        .commit(Some(&plain.digest))
        .map_err(|e| e.to_string())?;
    // A cached layer is one kiln built: it leaves compressed, as it would
    // have from the store that made it.
    kiln_image::compressed::mark_built(store, &plain.digest).map_err(|e| e.to_string())
}

/// Fetches `remote` into the store as it is (a pulled layer); the writer
/// checks its digest, and its size is checked here.
fn fetch_as_is(store: &Store, source: &dyn ImageSource, remote: &Descriptor) -> Result<(), String> {
    let reader = source.blob(remote).map_err(|e| e.to_string())?;
    let mut writer = store.blob_writer().map_err(|e| e.to_string())?;
    let copied = std::io::copy(&mut reader.take(remote.size + 1), &mut writer)
        .map_err(|e| format!("reading it: {e}"))?;
    if copied != remote.size {
        return Err(format!(
            "it is {copied} bytes where its manifest says {}",
            remote.size
        ));
    }
    writer
        .commit(Some(&remote.digest))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a base image is copied to when its layers are to stay remote:
/// its manifests and config go into the store as blobs (named by no
/// tag), each layer the store lacks becomes a remote layer of `layers`.
pub struct LazyBaseSink<'a> {
    pub store: &'a Store,
    pub layers: &'a RemoteLayers,
    pub source: Arc<dyn ImageSource>,
    pub name: Reference,
}

impl ImageSink for LazyBaseSink<'_> {
    fn has_blob(&self, desc: &Descriptor) -> kiln_image::transport::Result<bool> {
        if kiln_image::media::layer_compression(&desc.media_type).is_some() {
            if !self.store.has_blob(&desc.digest) {
                self.layers
                    .add_base_layer(desc, self.source.clone(), &self.name);
            }
            return Ok(true);
        }
        Ok(self.store.has_blob(&desc.digest))
    }

    fn put_blob(
        &self,
        desc: &Descriptor,
        data: &mut dyn Read,
    ) -> kiln_image::transport::Result<()> {
        let mut writer = self.store.blob_writer()?;
        std::io::copy(data, &mut writer)
            .map_err(TransportError::io(format!("reading blob {}", desc.digest)))?;
        writer.commit(Some(&desc.digest))?;
        Ok(())
    }

    fn put_manifest(&self, raw: &RawManifest, _top: bool) -> kiln_image::transport::Result<()> {
        self.store.put_blob(&raw.bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::layer::{Entry, LayerOptions, write_entries_layer};
    use kiln_image::media;
    use std::sync::atomic::AtomicUsize;

    /// A source serving one blob from memory, counting the reads.
    struct OneBlob {
        bytes: Vec<u8>,
        reads: AtomicUsize,
    }

    impl ImageSource for OneBlob {
        fn top(&self) -> kiln_image::transport::Result<RawManifest> {
            Err(TransportError::Invalid("no manifest".into()))
        }
        fn manifest(&self, _: &Digest) -> kiln_image::transport::Result<RawManifest> {
            Err(TransportError::Invalid("no manifest".into()))
        }
        fn blob(&self, _: &Descriptor) -> kiln_image::transport::Result<Box<dyn Read + Send + '_>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            // Slow enough that concurrent callers overlap.
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(Box::new(std::io::Cursor::new(self.bytes.clone())))
        }
    }

    /// A gzip layer's bytes, its descriptor, and the plain layer's.
    fn gzip_layer() -> (Vec<u8>, Descriptor, Descriptor) {
        let opts = LayerOptions {
            compression: Compression::Gzip,
            ..LayerOptions::default()
        };
        let entries = vec![Entry::file_bytes("f", "x".repeat(5000))];
        let (bytes, info) = write_entries_layer(entries, &opts, Vec::new()).unwrap();
        let remote = Descriptor::new(media::OCI_LAYER_GZIP, info.digest, info.size);
        let plain = Descriptor::new(media::OCI_LAYER, info.diff_id, info.uncompressed_size);
        (bytes, remote, plain)
    }

    #[test]
    fn a_layer_wanted_by_many_is_fetched_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (bytes, remote, plain) = gzip_layer();
        let source = Arc::new(OneBlob {
            bytes,
            reads: AtomicUsize::new(0),
        });
        let layers = RemoteLayers::default();
        layers.add_cache_layer(&plain, &remote, source.clone(), 0, None);
        assert!(layers.is_remote(&store, &plain.digest));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| layers.ensure(&store, &plain.digest).unwrap());
            }
        });
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        assert!(store.has_blob(&plain.digest));
        let counts = layers.counts(&store);
        assert_eq!((counts.fetched, counts.remote), (1, 0));
    }

    #[test]
    fn a_blob_that_lies_leaves_nothing_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (mut bytes, remote, plain) = gzip_layer();
        // Same length, other content: the gzip trailer's check fails, or
        // the plain digest does.
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        let layers = RemoteLayers::default();
        let source = Arc::new(OneBlob {
            bytes,
            reads: AtomicUsize::new(0),
        });
        layers.add_cache_layer(&plain, &remote, source, 3, None);
        let failure = layers.ensure(&store, &plain.digest).unwrap_err();
        assert_eq!(failure.origin, Some(Origin::Cache(3)));
        assert!(!store.has_blob(&plain.digest));
        // A layer nobody named is refused, not looked for.
        let other = Digest::sha256_of(b"other");
        assert!(layers.ensure(&store, &other).unwrap_err().origin.is_none());
    }
}
