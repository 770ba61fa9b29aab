//! `docker://` as an [`ImageSource`]: the top manifest by the reference's
//! tag or digest, children by digest, blobs streamed (verified, resumable)
//! through [`crate::blob::BlobReader`].
//!
//! It does not select platforms; [`kiln_image::transport::copy`] does that.

use std::io::Read;

use kiln_image::transport::{ImageSource, RawManifest, Result, TransportError};
use kiln_image::{Descriptor, Digest, Reference};

use crate::client::Client;
use crate::error::RegistryError;

pub struct RegistrySource {
    client: Client,
    reference: Reference,
    verify_blobs: bool,
}

impl RegistrySource {
    pub fn new(client: &Client, reference: Reference) -> RegistrySource {
        RegistrySource {
            client: client.clone(),
            reference,
            verify_blobs: true,
        }
    }

    /// Whether blob readers check digests themselves (default: yes). Every
    /// `ImageSink` verifies what it is given, so a copy may turn this off
    /// and hash each byte once instead of twice.
    pub fn verify_blobs(mut self, verify: bool) -> RegistrySource {
        self.verify_blobs = verify;
        self
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

pub(crate) fn to_transport(e: RegistryError) -> TransportError {
    TransportError::Other(Box::new(e))
}

impl ImageSource for RegistrySource {
    fn top(&self) -> Result<RawManifest> {
        self.client
            .get_manifest(&self.reference)
            .map_err(to_transport)
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        let r = self.reference.with_digest(digest.clone());
        self.client
            .block_on(self.client.get_manifest_async(&r, &digest.to_string()))
            .map_err(to_transport)
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.client.open_blob_with(
            &self.reference,
            desc,
            self.verify_blobs,
        )))
    }

    fn blob_present(&self, desc: &Descriptor) -> Result<Option<bool>> {
        self.client
            .blob_exists(&self.reference, &desc.digest)
            .map(Some)
            .map_err(to_transport)
    }
}
