//! The local cache index: op key → the layer the op produced (or none,
//! for a step that changed nothing). Entries are small JSON files written
//! atomically, and each is a GC root of the store so `kiln prune` keeps
//! what the cache points at.

use std::path::PathBuf;

use kiln_image::store::write_atomic;
use kiln_image::{Descriptor, Digest, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The layer blob and its diff ID; `None` when the op changed nothing.
    pub layer: Option<(Descriptor, Digest)>,
}

pub struct Cache<'a> {
    store: &'a Store,
    dir: PathBuf,
}

const OWNER: &str = "build-cache";

impl<'a> Cache<'a> {
    pub fn open(store: &'a Store) -> Result<Cache<'a>, kiln_image::StoreError> {
        Ok(Cache {
            dir: store.dir("build-cache")?,
            store,
        })
    }

    pub fn get(&self, key: &Digest) -> Option<CachedLayer> {
        let bytes = std::fs::read(self.dir.join(key.hex())).ok()?;
        let entry: CachedLayer = serde_json::from_slice(&bytes).ok()?;
        match &entry.layer {
            Some((blob, _)) if !self.store.has_blob(&blob.digest) => None,
            _ => Some(entry),
        }
    }

    pub fn put(&self, key: &Digest, entry: &CachedLayer) -> Result<(), kiln_image::StoreError> {
        let digests: Vec<Digest> = entry.layer.iter().map(|(b, _)| b.digest.clone()).collect();
        self.store.set_root(OWNER, key.hex(), &digests)?;
        let bytes = serde_json::to_vec(entry).expect("cache entry serializes");
        write_atomic(&self.dir.join(key.hex()), &bytes)
    }
}
