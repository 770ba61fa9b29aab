//! The local store as an image source and sink.

use std::io::{self, Read};

use crate::reference::Reference;
use crate::store::Store;
use crate::transport::{ImageSink, ImageSource, RawManifest, Result, TransportError};
use crate::{Descriptor, Digest};

/// An image in the store, named by anything [`Store::resolve`] accepts.
pub struct StoreSource<'a> {
    store: &'a Store,
    top: Descriptor,
}

impl<'a> StoreSource<'a> {
    pub fn new(store: &'a Store, name: &str) -> Result<StoreSource<'a>> {
        let top = store.resolve(name)?;
        Ok(StoreSource { store, top })
    }

    pub fn from_descriptor(store: &'a Store, top: Descriptor) -> StoreSource<'a> {
        StoreSource { store, top }
    }
}

impl ImageSource for StoreSource<'_> {
    fn top(&self) -> Result<RawManifest> {
        let bytes = self.store.read_blob(&self.top.digest)?;
        Ok(RawManifest {
            media_type: self.top.media_type.clone(),
            digest: self.top.digest.clone(),
            bytes,
        })
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        let bytes = self.store.read_blob(digest)?;
        let media_type = match crate::AnyManifest::parse(None, &bytes)? {
            crate::AnyManifest::Index(i) => i.media_type,
            crate::AnyManifest::Manifest(m) => m.media_type,
        }
        .unwrap_or_else(|| crate::media::OCI_MANIFEST.into());
        Ok(RawManifest {
            media_type,
            digest: digest.clone(),
            bytes,
        })
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(io::BufReader::with_capacity(
            256 * 1024,
            self.store.open_blob(&desc.digest)?,
        )))
    }
}

/// Writes into the store and names the top manifest (when a name is given).
pub struct StoreSink<'a> {
    store: &'a Store,
    name: Option<Reference>,
    /// The registry repository the blobs are read from, recorded for each
    /// (see [`crate::blob_sources`]).
    source: Option<Reference>,
}

impl<'a> StoreSink<'a> {
    pub fn new(store: &'a Store, name: Option<Reference>) -> StoreSink<'a> {
        StoreSink {
            store,
            name,
            source: None,
        }
    }

    /// Records `repo` as a source of every blob this sink receives or
    /// already has, so that a later push can mount them from there.
    pub fn with_source(mut self, repo: Reference) -> StoreSink<'a> {
        self.source = Some(repo);
        self
    }

    fn note_source(&self, digest: &crate::Digest) {
        if let Some(repo) = &self.source {
            // A hint: failing to keep it costs an upload later, not this copy.
            let _ = self.store.blob_sources().record(digest, repo);
        }
    }
}

impl ImageSink for StoreSink<'_> {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        let has = self.store.has_blob(&desc.digest);
        if has {
            self.note_source(&desc.digest);
        }
        Ok(has)
    }

    fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let mut w = self.store.blob_writer()?;
        io::copy(data, &mut w).map_err(TransportError::io(format!("copy blob {}", desc.digest)))?;
        if w.size() != desc.size {
            return Err(TransportError::Invalid(format!(
                "blob {} is {} bytes, its descriptor says {}",
                desc.digest,
                w.size(),
                desc.size
            )));
        }
        w.commit(Some(&desc.digest))?;
        self.note_source(&desc.digest);
        Ok(())
    }

    fn put_manifest(&self, raw: &RawManifest, top: bool) -> Result<()> {
        let digest = self.store.put_blob(&raw.bytes)?;
        if digest != raw.digest {
            return Err(TransportError::Invalid(format!(
                "manifest content has digest {digest}, expected {}",
                raw.digest
            )));
        }
        if top && let Some(name) = &self.name {
            self.store.tag(name, &raw.descriptor())?;
        }
        Ok(())
    }
}
