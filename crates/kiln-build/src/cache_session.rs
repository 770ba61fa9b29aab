//! One build's view of caches beyond the store: the entries it used or
//! made (so `--cache-to` can export them afterwards) and the imported
//! caches (`--cache-from`) consulted, in order, when the store's own cache
//! misses.
//!
//! An imported cache is a key → entry map read from a cache manifest (see
//! `kiln_build::export::cache`) plus the source its layer blobs come from.
//! A hit fetches the layer blob into the store first ("fetch on hit"): the
//! steps after it, and the output, find it there. The blob is decompressed
//! and checked against its diff ID while it is written, so a cache that lies about a
//! blob puts nothing into the store; its first failure is warned about
//! once, and the build goes on without that cache.
//!
//! It does not parse command lines or know registries: a source is any
//! [`ImageSource`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln_image::transport::ImageSource;
use kiln_image::{Descriptor, Digest, Store};

use crate::cache::CachedLayer;

/// One entry of an imported cache: as the store will keep it (a plain
/// layer), and the blob to fetch for it (compressed or not).
#[derive(Debug, Clone)]
pub struct ImportedEntry {
    pub entry: CachedLayer,
    pub remote: Option<Descriptor>,
}

/// A cache read from elsewhere: its entries and where their blobs are.
pub struct ImportedCache {
    /// What the user named (`registry.example/cache:main`), for messages.
    pub name: String,
    pub entries: BTreeMap<Digest, ImportedEntry>,
    source: Box<dyn ImageSource>,
    /// A failure of a required cache (`ignore-error=false`) fails the build
    /// after it; otherwise it is a warning.
    required: bool,
    /// Set at the first failed fetch: the cache is not asked again.
    broken: AtomicBool,
}

impl ImportedCache {
    pub fn new(
        name: String,
        entries: BTreeMap<Digest, ImportedEntry>,
        source: Box<dyn ImageSource>,
        required: bool,
    ) -> ImportedCache {
        ImportedCache {
            name,
            entries,
            source,
            required,
            broken: AtomicBool::new(false),
        }
    }
}

/// Blobs fetched from imported caches during the build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    pub layers: u64,
    pub bytes: u64,
}

/// What one build's cache did beyond the store; see the module docs.
#[derive(Default)]
pub struct CacheSession {
    imports: Vec<ImportedCache>,
    recorded: Mutex<BTreeMap<Digest, CachedLayer>>,
    warnings: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    layers: AtomicU64,
    bytes: AtomicU64,
}

impl CacheSession {
    pub fn new(imports: Vec<ImportedCache>) -> CacheSession {
        CacheSession {
            imports,
            ..CacheSession::default()
        }
    }

    /// Every entry the build used or made, by key.
    pub fn recorded(&self) -> BTreeMap<Digest, CachedLayer> {
        self.recorded.lock().expect("lock").clone()
    }

    pub(crate) fn record(&self, key: &Digest, entry: &CachedLayer) {
        self.recorded
            .lock()
            .expect("lock")
            .insert(key.clone(), entry.clone());
    }

    /// Warnings about imported caches that failed during the build (one
    /// per cache), taken once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().expect("lock"))
    }

    /// Failures of caches imported with `ignore-error=false`, taken once.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().expect("lock"))
    }

    pub fn fetched(&self) -> Fetched {
        Fetched {
            layers: self.layers.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// The first imported cache's entry for `key` whose blob (if any) is
    /// now in the store.
    pub(crate) fn import(&self, store: &Store, key: &Digest) -> Option<CachedLayer> {
        for cache in &self.imports {
            if cache.broken.load(Ordering::Relaxed) {
                continue;
            }
            let Some(ImportedEntry { entry, remote }) = cache.entries.get(key) else {
                continue;
            };
            let (Some((blob, _)), Some(remote)) = (&entry.layer, remote) else {
                return Some(entry.clone());
            };
            if store.has_blob(&blob.digest) {
                return Some(entry.clone());
            }
            match fetch(store, cache.source.as_ref(), remote, blob) {
                Ok(()) => {
                    self.layers.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(remote.size, Ordering::Relaxed);
                    return Some(entry.clone());
                }
                Err(e) => {
                    // Warned once: the cache is not asked again.
                    if !cache.broken.swap(true, Ordering::Relaxed) {
                        let msg = format!(
                            "--cache-from {}: layer {}: {e}; building without this cache",
                            cache.name, remote.digest
                        );
                        let list = if cache.required {
                            &self.errors
                        } else {
                            &self.warnings
                        };
                        list.lock().expect("lock").push(msg);
                    }
                }
            }
        }
        None
    }
}

/// Fetches `remote` and stores it as the plain layer `plain`, decompressed
/// on the way; the store's writer checks the plain digest (the diff ID)
/// and the sizes are checked here, so nothing else is ever committed.
fn fetch(
    store: &Store,
    source: &dyn ImageSource,
    remote: &Descriptor,
    plain: &Descriptor,
) -> Result<(), String> {
    use std::io::Read;
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
