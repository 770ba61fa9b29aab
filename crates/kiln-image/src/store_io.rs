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
}

impl<'a> StoreSink<'a> {
    pub fn new(store: &'a Store, name: Option<Reference>) -> StoreSink<'a> {
        StoreSink { store, name }
    }
}

impl ImageSink for StoreSink<'_> {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.store.has_blob(&desc.digest))
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
