//! The local cache index: op key → the layer the op produced (or none,
//! for a step that changed nothing) and when it was made. Entries are small
//! JSON files written atomically, and each is a GC root of the store so
//! `kiln prune` keeps what the cache points at.
//!
//! A build's [`crate::cache_session::CacheSession`], when one is attached,
//! sees every entry the build uses or makes (for `--cache-to`) and is asked
//! on a miss (for `--cache-from`); an entry it supplies is recorded here
//! like one the build made.
//!
//! The time is what history entries and the image's created time derive
//! from (as BuildKit's come from its cache records): a rebuild that finds
//! every layer here writes the same config, so the image keeps its ID.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_image::store::write_atomic;
use kiln_image::{Descriptor, Digest, Store};
use serde::{Deserialize, Serialize};

use crate::cache_session::CacheSession;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The layer blob and its diff ID; `None` when the op changed nothing.
    pub layer: Option<(Descriptor, Digest)>,
    /// When the layer was made, in seconds since the epoch. Entries written
    /// before this field existed get their file's modification time.
    #[serde(default = "unknown_time")]
    pub created: i64,
}

const UNKNOWN: i64 = i64::MIN;

fn unknown_time() -> i64 {
    UNKNOWN
}

pub struct Cache<'a> {
    store: &'a Store,
    dir: PathBuf,
    session: Option<Arc<CacheSession>>,
}

const OWNER: &str = "build-cache";

impl<'a> Cache<'a> {
    /// The store's cache alone.
    pub fn open(store: &'a Store) -> Result<Cache<'a>, kiln_image::StoreError> {
        Cache::with_session(store, None)
    }

    /// The store's cache with a build's `session` (`BuildOptions::cache_session`).
    pub fn with_session(
        store: &'a Store,
        session: Option<Arc<CacheSession>>,
    ) -> Result<Cache<'a>, kiln_image::StoreError> {
        Ok(Cache {
            dir: store.dir("build-cache")?,
            session,
            store,
        })
    }

    pub fn get(&self, key: &Digest) -> Option<CachedLayer> {
        let hit = self.get_local(key).or_else(|| {
            let session = self.session.as_ref()?;
            let entry = session.import(self.store, key)?;
            match &entry.layer {
                // Still remote: kept here once it is fetched (the store's
                // cache names no blob the store lacks).
                Some((blob, _)) if !self.store.has_blob(&blob.digest) => session.defer(key, &entry),
                // Kept like a layer the build made; failing, it is used anyway.
                _ => {
                    let _ = self.put_local(key, &entry);
                }
            }
            Some(entry)
        });
        if let (Some(s), Some(entry)) = (&self.session, &hit) {
            s.record(key, entry);
        }
        hit
    }

    /// Keeps the session's hits whose layers came during the build; those
    /// still remote wait for the next call (the output may fetch them).
    pub(crate) fn settle(&self) {
        let Some(session) = &self.session else {
            return;
        };
        for (key, entry) in session.take_deferred() {
            match &entry.layer {
                Some((blob, _)) if !self.store.has_blob(&blob.digest) => {
                    session.defer(&key, &entry)
                }
                _ => {
                    let _ = self.put_local(&key, &entry);
                }
            }
        }
    }

    fn get_local(&self, key: &Digest) -> Option<CachedLayer> {
        let path = self.dir.join(key.hex());
        let bytes = std::fs::read(&path).ok()?;
        let mut entry: CachedLayer = serde_json::from_slice(&bytes).ok()?;
        if entry.created == UNKNOWN {
            use std::os::unix::fs::MetadataExt;
            entry.created = std::fs::metadata(&path).ok()?.mtime();
        }
        match &entry.layer {
            Some((blob, _)) if !self.store.has_blob(&blob.digest) => None,
            _ => Some(entry),
        }
    }

    pub fn put(&self, key: &Digest, entry: &CachedLayer) -> Result<(), kiln_image::StoreError> {
        if let Some(s) = &self.session {
            s.record(key, entry);
            // A layer still in a registry is kept here once it came.
            if let Some((blob, _)) = &entry.layer
                && !self.store.has_blob(&blob.digest)
            {
                s.defer(key, entry);
                return Ok(());
            }
        }
        self.put_local(key, entry)
    }

    fn put_local(&self, key: &Digest, entry: &CachedLayer) -> Result<(), kiln_image::StoreError> {
        let digests: Vec<Digest> = entry.layer.iter().map(|(b, _)| b.digest.clone()).collect();
        self.store.set_root(OWNER, key.hex(), &digests)?;
        let bytes = serde_json::to_vec(entry).expect("cache entry serializes");
        write_atomic(&self.dir.join(key.hex()), &bytes)
    }
}
