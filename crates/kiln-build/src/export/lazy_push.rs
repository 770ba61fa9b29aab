//! What a push reads: the built image from the store, and the layers the
//! build left remote from where they are. A registry that mounts a layer
//! (or has it) never asks for it; one that cannot gets it streamed from
//! its source, checked by the registry sink against its digest.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use kiln_image::store_io::StoreSource;
use kiln_image::transport::{ImageSource, RawManifest, Result};
use kiln_image::{Descriptor, Digest, Store};

use crate::lazy::RemoteLayers;

pub(super) struct PushSource<'a> {
    store: &'a Store,
    inner: StoreSource<'a>,
    /// By the digest the pushed manifest names.
    remote: BTreeMap<Digest, (Arc<dyn ImageSource>, Descriptor)>,
}

impl<'a> PushSource<'a> {
    pub(super) fn new(
        store: &'a Store,
        inner: StoreSource<'a>,
        layers: Option<&RemoteLayers>,
    ) -> PushSource<'a> {
        PushSource {
            store,
            inner,
            remote: layers.map(RemoteLayers::remote_blobs).unwrap_or_default(),
        }
    }
}

impl ImageSource for PushSource<'_> {
    fn top(&self) -> Result<RawManifest> {
        self.inner.top()
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        self.inner.manifest(digest)
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        match self.remote.get(&desc.digest) {
            Some((source, remote)) if !self.store.has_blob(&desc.digest) => source.blob(remote),
            _ => self.inner.blob(desc),
        }
    }
}
