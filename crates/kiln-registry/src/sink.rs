//! `docker://` as an [`ImageSink`]: skips blobs the repository has (HEAD),
//! mounts blobs from a source repository on the same registry (the copy's
//! source, or where the store recorded fetching the blob), uploads the
//! rest, and puts manifests by digest (children) and by tag (the top).
//!
//! It never publishes content that does not match its descriptor: the
//! upload verifies before its closing PUT.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use kiln_image::blob_sources::BlobSources;
use kiln_image::transport::{ImageSink, RawManifest, Result, TransportError};
use kiln_image::{Descriptor, Digest, Reference};
use reqwest::Url;

use crate::client::Client;
use crate::mount::Mount;
use crate::source::to_transport;

pub struct RegistrySink {
    client: Client,
    reference: Reference,
    /// Repositories on the same registry that have the blobs (the source
    /// of a registry-to-registry copy, the new base of a rebase): blobs
    /// are mounted from them, tried in order.
    mount_from: Vec<Reference>,
    /// Where the local store fetched each blob from: tried before
    /// `mount_from`, for that blob only.
    sources: Option<BlobSources>,
    /// Upload sessions a failed mount opened, to upload into.
    sessions: Mutex<HashMap<Digest, Url>>,
}

impl RegistrySink {
    pub fn new(client: &Client, reference: Reference) -> RegistrySink {
        RegistrySink {
            client: client.clone(),
            reference,
            mount_from: Vec::new(),
            sources: None,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Mount blobs from `from` when it is on the same registry (after any
    /// repository given before).
    pub fn mount_from(mut self, from: &Reference) -> RegistrySink {
        if from.registry() == self.reference.registry()
            && from.repository() != self.reference.repository()
            && !self
                .mount_from
                .iter()
                .any(|r| r.repository() == from.repository())
        {
            self.mount_from.push(from.clone());
        }
        self
    }

    /// Also mount each blob from the repositories the store recorded it
    /// came from (a pulled base's layers, say), when on this registry, and
    /// record this repository for every blob it is found to hold.
    pub fn mount_recorded(mut self, sources: BlobSources) -> RegistrySink {
        self.sources = Some(sources);
        self
    }

    /// Records that this repository now holds `digest`, so a later push
    /// elsewhere on the registry mounts it from here (as docker does).
    fn note_here(&self, digest: &Digest) {
        if let Some(s) = &self.sources {
            // A hint: losing it costs a later upload, not this push.
            let _ = s.record(digest, &self.reference);
        }
    }

    /// The repositories to try mounting `digest` from, in order.
    fn mount_candidates(&self, digest: &Digest) -> Vec<Reference> {
        let recorded = self.sources.iter().flat_map(|s| s.get(digest));
        let mut out: Vec<Reference> = Vec::new();
        for from in recorded.chain(self.mount_from.iter().cloned()) {
            if from.registry() == self.reference.registry()
                && from.repository() != self.reference.repository()
                && !out.iter().any(|r| r.repository() == from.repository())
            {
                out.push(from);
            }
        }
        out
    }
}

impl ImageSink for RegistrySink {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        let c = &self.client;
        if c.block_on(c.blob_exists_async(&self.reference, &desc.digest, true))
            .map_err(to_transport)?
        {
            c.inner.stats.blobs_skipped.fetch_add(1, Ordering::Relaxed);
            self.note_here(&desc.digest);
            return Ok(true);
        }
        for from in &self.mount_candidates(&desc.digest) {
            match c.mount_blob(&self.reference, from, &desc.digest) {
                Mount::Mounted => {
                    self.note_here(&desc.digest);
                    return Ok(true);
                }
                Mount::Upload(url) => {
                    // The registry opened an upload instead; the first
                    // such session is the one uploaded into, if it comes
                    // to that (the others expire unused).
                    self.sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(desc.digest.clone())
                        .or_insert(url);
                }
                Mount::Failed(why) => tracing::debug!("{why}"),
            }
        }
        Ok(false)
    }

    fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&desc.digest);
        self.client
            .upload_blob(&self.reference, desc, data, session)
            .map(|()| self.note_here(&desc.digest))
            .map_err(|e| {
                if e.is_transient() {
                    // copy() will open the source again and start over.
                    TransportError::Transient(Box::new(e))
                } else {
                    to_transport(e)
                }
            })
    }

    fn put_manifest(&self, raw: &RawManifest, top: bool) -> Result<()> {
        let reference = match (top, self.reference.tag(), self.reference.digest()) {
            (true, _, Some(d)) if *d != raw.digest => {
                return Err(TransportError::Invalid(format!(
                    "{} is pinned to {d}, but the image is {}",
                    self.reference, raw.digest
                )));
            }
            (true, Some(tag), _) => tag.to_string(),
            _ => raw.digest.to_string(),
        };
        self.client
            .put_manifest(&self.reference, &reference, raw)
            .map(drop)
            .map_err(to_transport)
    }
}
