//! Image sources and sinks: the seam that makes the store, OCI layouts,
//! archives and registries interchangeable, in the style of
//! go-containerregistry. A copy is a source read into a sink; nothing in
//! between holds a blob in memory.
//!
//! Implementations take `&self` and are `Send + Sync` so that [`copy`] can
//! move several blobs at once.

use std::io::Read;

use crate::manifest::{AnyManifest, Descriptor, ManifestError};
use crate::{Digest, StoreError};

/// A manifest or index exactly as stored: its bytes are what the digest is
/// over, so they are never re-serialized on the way through.
#[derive(Debug, Clone, PartialEq)]
pub struct RawManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl RawManifest {
    pub fn new(media_type: impl Into<String>, bytes: Vec<u8>) -> RawManifest {
        RawManifest {
            media_type: media_type.into(),
            digest: Digest::sha256_of(&bytes),
            bytes,
        }
    }

    pub fn parse(&self) -> Result<AnyManifest, ManifestError> {
        AnyManifest::parse(Some(&self.media_type), &self.bytes)
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            &self.media_type,
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// A failure that a fresh attempt may not meet (an upload the registry
    /// dropped midway): [`copy`] opens the blob at the source again and
    /// retries, since a sink cannot rewind the reader it was given.
    #[error(transparent)]
    Transient(Box<dyn std::error::Error + Send + Sync>),
}

/// How often [`copy`] starts a blob over after a [`TransportError::Transient`].
const BLOB_ATTEMPTS: usize = 3;

impl TransportError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TransportError {
        let context = context.into();
        move |cause| TransportError::Io { context, cause }
    }
}

pub type Result<T, E = TransportError> = std::result::Result<T, E>;

/// Where an image is read from.
pub trait ImageSource: Send + Sync {
    /// The manifest or index the source names.
    fn top(&self) -> Result<RawManifest>;
    /// A manifest by digest (a child of an index).
    fn manifest(&self, digest: &Digest) -> Result<RawManifest>;
    /// The bytes of a config or layer blob, streamed.
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;
    /// Whether the source holds the blob, when it can tell without
    /// sending it (a registry's HEAD); `None` when it cannot.
    fn blob_present(&self, _desc: &Descriptor) -> Result<Option<bool>> {
        Ok(None)
    }
}

/// Where an image is written to.
pub trait ImageSink: Send + Sync {
    /// Whether the sink already holds the blob (so it can be skipped).
    fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Writes a blob. The sink verifies the digest and refuses a mismatch.
    fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()>;
    /// Writes a manifest or index. `top` marks the one the sink is to name;
    /// children of an index are written first.
    fn put_manifest(&self, raw: &RawManifest, top: bool) -> Result<()>;
    /// How many blobs the sink accepts at once; an archive, written in
    /// order, takes one.
    fn max_jobs(&self) -> usize {
        usize::MAX
    }
    /// Completes the write (archives write their trailing files here).
    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

/// Options for [`copy`].
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs in flight at once.
    pub jobs: usize,
    /// With an index at the top, copy only this platform's manifest.
    pub platform: Option<crate::Platform>,
    /// The platform was asked for (`--platform`), not assumed (the host's):
    /// a single image for another platform is then an error, not a copy.
    pub require_platform: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: 4,
            platform: None,
            require_platform: false,
        }
    }
}

/// Copies the image `src` names into `dst`; returns the top manifest written.
pub fn copy(src: &dyn ImageSource, dst: &dyn ImageSink, opts: &CopyOptions) -> Result<RawManifest> {
    let top = src.top()?;
    let top = match (top.parse()?, &opts.platform) {
        (AnyManifest::Index(index), Some(want)) => {
            let d = index.select(want).ok_or_else(|| {
                TransportError::Invalid(format!(
                    "no manifest for platform {want} in the index (it has {})",
                    crate::manifest::platforms_of(&index)
                ))
            })?;
            src.manifest(&d.digest)?
        }
        (AnyManifest::Manifest(m), Some(want)) if opts.require_platform => {
            check_platform(src, &m.config, want)?;
            top
        }
        _ => top,
    };
    copy_manifest(src, dst, &top, true, opts)?;
    dst.finish()?;
    Ok(top)
}

/// A single image asked for by platform must be for that platform.
fn check_platform(
    src: &dyn ImageSource,
    config: &Descriptor,
    want: &crate::Platform,
) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
    }
    let mut bytes = Vec::new();
    src.blob(config)?
        .take(4 << 20)
        .read_to_end(&mut bytes)
        .map_err(TransportError::io("reading the image config"))?;
    let p: Probe = serde_json::from_slice(&bytes)
        .map_err(|e| TransportError::Invalid(format!("image config: {e}")))?;
    let has = crate::Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant,
        os_version: None,
        os_features: Vec::new(),
    };
    if has.satisfies(want) {
        Ok(())
    } else {
        Err(TransportError::Invalid(format!(
            "the image is for {has} only, not the requested {want}"
        )))
    }
}

fn copy_manifest(
    src: &dyn ImageSource,
    dst: &dyn ImageSink,
    raw: &RawManifest,
    is_top: bool,
    opts: &CopyOptions,
) -> Result<()> {
    match raw.parse()? {
        AnyManifest::Index(index) => {
            for child in &index.manifests {
                let m = src.manifest(&child.digest)?;
                copy_manifest(src, dst, &m, false, opts)?;
            }
        }
        AnyManifest::Manifest(m) => {
            let blobs: Vec<&Descriptor> = std::iter::once(&m.config).chain(&m.layers).collect();
            copy_blobs(src, dst, &blobs, opts.jobs.min(dst.max_jobs()).max(1))?;
        }
    }
    dst.put_manifest(raw, is_top)
}

fn copy_blobs(
    src: &dyn ImageSource,
    dst: &dyn ImageSink,
    blobs: &[&Descriptor],
    jobs: usize,
) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> Result<()> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(desc) = blobs.get(i) else {
                return Ok(());
            };
            if dst.has_blob(desc)? {
                continue;
            }
            let mut attempt = 1;
            loop {
                let mut r = src.blob(desc)?;
                match dst.put_blob(desc, &mut r) {
                    Err(TransportError::Transient(_)) if attempt < BLOB_ATTEMPTS => attempt += 1,
                    other => break other?,
                }
            }
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs.min(blobs.len()).max(1))
            .map(|_| s.spawn(work))
            .collect();
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err
                        .get_or_insert(TransportError::Invalid("a copy worker panicked".into()));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })
}
