//! One build's view of caches beyond the store: the entries it used or
//! made (so `--cache-to` can export them afterwards) and the imported
//! caches (`--cache-from`) consulted, in order, when the store's own cache
//! misses.
//!
//! An imported cache is a key → entry map read from a cache manifest (see
//! `kiln_build::export::cache`) plus the source its layer blobs come from.
//! A hit does not fetch the layer: it names it in the session's
//! [`RemoteLayers`], and it is fetched when something needs its bytes (see
//! `crate::lazy`). A fetch decompresses the blob and checks it against its
//! diff ID while it is written, so a cache that lies about a blob puts
//! nothing into the store; its first failure is warned about once, the
//! cache is not asked again, and the solver builds again without it
//! (what the failed attempt found in it cannot be trusted).
//!
//! It does not parse command lines or know registries: a source is any
//! [`ImageSource`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiln_image::transport::ImageSource;
use kiln_image::{Descriptor, Digest, Platform, Reference, Store};

use crate::cache::CachedLayer;
use crate::lazy::{Origin, RemoteLayers};

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
    source: Arc<dyn ImageSource>,
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
            source: Arc::from(source),
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
    /// Layers the build uses that are still elsewhere (cache hits,
    /// registry base images).
    layers: RemoteLayers,
    /// How many imported caches failed during the build.
    breaks: AtomicU64,
    /// Hits whose layer was not in the store yet: kept in the store's
    /// cache once it is (see `Cache::settle`).
    deferred: Mutex<Vec<(Digest, CachedLayer)>>,
    /// Base images loaded without their layers: (name, manifest,
    /// platform), named in the store once every layer is there.
    lazy_bases: Mutex<Vec<(Reference, Descriptor, Platform)>>,
    /// Whether the outputs need the built image's bytes (a store image,
    /// an archive); a build that only pushes leaves its layers remote.
    outputs_need_bytes: AtomicBool,
    /// Whether the build exports a cache (`--cache-to`): then every step
    /// finds its content key too, not only its definition key.
    exporting: AtomicBool,
    /// The cache mounts the build used, and those the imports carry.
    pub mounts: crate::cache_mount_transfer::CacheMounts,
}

impl CacheSession {
    pub fn new(imports: Vec<ImportedCache>) -> CacheSession {
        CacheSession {
            imports,
            outputs_need_bytes: AtomicBool::new(true),
            ..CacheSession::default()
        }
    }

    /// The build's remote layers.
    pub fn layers(&self) -> &RemoteLayers {
        &self.layers
    }

    /// Says that the outputs only push (or not): then the built image's
    /// layers are left where they are, for the push to mount.
    pub fn set_outputs_need_bytes(&self, need: bool) {
        self.outputs_need_bytes.store(need, Ordering::Relaxed);
    }

    /// Says that the build's entries will be exported: a step is then
    /// looked up by its content key (reading its inputs' files) so the
    /// export has both keys, as a build without definition keys would.
    pub fn set_exporting(&self, exporting: bool) {
        self.exporting.store(exporting, Ordering::Relaxed);
    }

    pub fn exporting(&self) -> bool {
        self.exporting.load(Ordering::Relaxed)
    }

    pub fn outputs_need_bytes(&self) -> bool {
        self.outputs_need_bytes.load(Ordering::Relaxed)
    }

    /// How many imported caches have failed so far.
    pub fn breaks(&self) -> u64 {
        self.breaks.load(Ordering::Relaxed)
    }

    /// Makes the layer blob `stored` present in the store (fetching a
    /// remote one); a cache whose blob fails is dropped for the rest of
    /// the build, and said so once.
    pub fn ensure(&self, store: &Store, stored: &Digest) -> Result<(), String> {
        self.layers.ensure(store, stored).map_err(|f| {
            let Some(Origin::Cache(i)) = f.origin else {
                return f.why;
            };
            let remote = f.remote.unwrap_or_else(|| stored.clone());
            self.break_cache(i, &remote, &f.why)
        })
    }

    /// Drops the cache at `i` for the rest of the build because its layer
    /// `remote` failed, saying so once; returns the failure.
    fn break_cache(&self, i: usize, remote: &Digest, why: &str) -> String {
        let cache = &self.imports[i];
        let msg = format!("--cache-from {}: layer {remote}: {why}", cache.name);
        if !cache.broken.swap(true, Ordering::Relaxed) {
            self.layers.forget_cache(i);
            let list = if cache.required {
                &self.errors
            } else {
                &self.warnings
            };
            list.lock()
                .expect("lock")
                .push(format!("{msg}; building without this cache"));
            self.breaks.fetch_add(1, Ordering::Relaxed);
        }
        msg
    }

    /// Fetches the layer of every entry the build used or made, for an
    /// export that writes them (`--cache-to`).
    pub fn ensure_recorded(&self, store: &Store) -> Result<(), String> {
        for entry in self.recorded().values() {
            if let Some((blob, _)) = &entry.layer {
                self.ensure(store, &blob.digest)?;
            }
        }
        Ok(())
    }

    pub(crate) fn defer(&self, key: &Digest, entry: &CachedLayer) {
        self.deferred
            .lock()
            .expect("lock")
            .push((key.clone(), entry.clone()));
    }

    pub(crate) fn take_deferred(&self) -> Vec<(Digest, CachedLayer)> {
        std::mem::take(&mut *self.deferred.lock().expect("lock"))
    }

    /// A base image `name` loaded for `platform` without its layers, from
    /// the manifest `top` (its blob and config's are in the store).
    pub fn add_lazy_base(&self, name: &Reference, top: &Descriptor, platform: &Platform) {
        self.lazy_bases
            .lock()
            .expect("lock")
            .push((name.clone(), top.clone(), platform.clone()));
    }

    /// Names in the store each lazily loaded base whose layers all came
    /// (as a pull would have); the others stay in this build's memory,
    /// so the store never names an image whose blobs are absent.
    pub fn settle_bases(&self, store: &Store) {
        let bases = std::mem::take(&mut *self.lazy_bases.lock().expect("lock"));
        for (name, top, platform) in bases {
            let complete = kiln_image::Image::load_manifest(store, &top.digest, &platform)
                .is_ok_and(|(img, _)| img.layers.iter().all(|l| store.has_blob(&l.digest)));
            if complete {
                let _ = store.tag(&name, &top);
            } else {
                self.lazy_bases
                    .lock()
                    .expect("lock")
                    .push((name, top, platform));
            }
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

    /// Layers fetched from imported caches and registries so far.
    pub fn fetched(&self) -> Fetched {
        let counts = self.layers.counts_fetched();
        Fetched {
            layers: counts.0,
            bytes: counts.1,
        }
    }

    /// The first imported cache's entry for `key` whose layer is usable.
    /// A layer the store lacks stays remote when its source says it has
    /// it (a registry's HEAD), and is fetched now when the source cannot
    /// tell (a local layout: nothing to save, and a lie is caught before
    /// any step relies on it).
    pub(crate) fn import(&self, store: &Store, key: &Digest) -> Option<CachedLayer> {
        for (i, cache) in self.imports.iter().enumerate() {
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
            let usable = match cache.source.blob_present(remote) {
                Ok(Some(true)) => {
                    self.layers
                        .add_cache_layer(blob, remote, cache.source.clone(), i, None);
                    Ok(())
                }
                Ok(Some(false)) => Err("the cache's registry does not have it".to_string()),
                Ok(None) => {
                    self.layers
                        .add_cache_layer(blob, remote, cache.source.clone(), i, None);
                    self.ensure(store, &blob.digest).map(drop)
                }
                Err(e) => Err(e.to_string()),
            };
            match usable {
                Ok(()) => return Some(entry.clone()),
                Err(why) => {
                    self.break_cache(i, &remote.digest, &why);
                }
            }
        }
        None
    }
}
