//! Image locations in skopeo's transport syntax, and opening them as image
//! sources and sinks:
//!
//! - `docker://REF`: a registry;
//! - `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`:
//!   layouts and archives (kiln-image's transports);
//! - `kiln:NAME`, `containers-storage:NAME`, or a plain `NAME`: the local store.
//!
//! It parses and opens; the copying is `kiln_image::transport::copy`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln_image::transport::{self, ImageSink, ImageSource, RawManifest, TransportError};
use kiln_image::{Descriptor, Digest, Reference, Store};
use kiln_registry::{Client, RegistrySink, RegistrySource};

/// Where an image is, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Docker(Reference),
    Store(String),
    Oci {
        dir: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
}

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        // Like skopeo, the path ends at the first ':'.
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.split_once(':') {
                Some((p, t)) if !t.is_empty() => (PathBuf::from(p), Some(t.to_string())),
                Some((p, _)) => (PathBuf::from(p), None),
                None => (PathBuf::from(rest), None),
            }
        };
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(Location::Docker(
                Reference::parse(r).with_context(|| format!("in {s:?}"))?,
            ));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split(rest);
            return Ok(Location::Oci { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split(rest);
            return Ok(Location::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, reference) = split(rest);
            return Ok(Location::DockerArchive { file, reference });
        }
        for p in ["kiln:", "containers-storage:"] {
            if let Some(name) = s.strip_prefix(p) {
                return Ok(Location::Store(name.to_string()));
            }
        }
        if s.starts_with("docker:") || s.starts_with("dir:") {
            bail!("unsupported image location {s:?} (did you mean docker://...?)");
        }
        Ok(Location::Store(s.to_string()))
    }
}

/// What opening a location needs.
pub struct Env<'a> {
    pub client: &'a Client,
    pub store_root: PathBuf,
}

pub fn open_source(loc: &Location, env: &Env) -> Result<Box<dyn ImageSource>> {
    Ok(match loc {
        Location::Docker(r) => Box::new(RegistrySource::new(env.client, r.clone())),
        Location::Store(name) => {
            let store = Store::open(&env.store_root)?;
            Box::new(StoreSource::new(store, name)?)
        }
        other => bail!("{other:?}: this transport is not available in this build yet"),
    })
}

/// `mount_from`: the source, when it is a registry (blobs are mounted from
/// it when the destination is on the same registry).
pub fn open_sink(
    loc: &Location,
    env: &Env,
    mount_from: Option<&Reference>,
) -> Result<Box<dyn ImageSink>> {
    Ok(match loc {
        Location::Docker(r) => {
            let mut sink = RegistrySink::new(env.client, r.clone());
            if let Some(from) = mount_from {
                sink = sink.mount_from(from);
            }
            Box::new(sink)
        }
        Location::Store(name) => {
            let store = Store::open(&env.store_root)?;
            let name = Reference::parse(name)?;
            Box::new(StoreSink { store, name })
        }
        other => bail!("{other:?}: this transport is not available in this build yet"),
    })
}

/// The local store read as an image source (until kiln-image's own
/// `store_io` lands).
pub struct StoreSource {
    store: Store,
    top: Descriptor,
}

impl StoreSource {
    pub fn new(store: Store, name: &str) -> Result<StoreSource> {
        let top = store.resolve(name)?;
        Ok(StoreSource { store, top })
    }

    fn raw(&self, digest: &Digest, media_type: Option<&str>) -> transport::Result<RawManifest> {
        let bytes = self.store.read_blob(digest)?;
        let media_type = match media_type {
            Some(t) => t.to_string(),
            None => match RawManifest::new("", bytes.clone()).parse()? {
                kiln_image::AnyManifest::Manifest(m) => m
                    .media_type
                    .unwrap_or_else(|| kiln_image::media::OCI_MANIFEST.into()),
                kiln_image::AnyManifest::Index(i) => i
                    .media_type
                    .unwrap_or_else(|| kiln_image::media::OCI_INDEX.into()),
            },
        };
        Ok(RawManifest {
            media_type,
            digest: digest.clone(),
            bytes,
        })
    }
}

impl ImageSource for StoreSource {
    fn top(&self) -> transport::Result<RawManifest> {
        self.raw(&self.top.digest, Some(&self.top.media_type))
    }

    fn manifest(&self, digest: &Digest) -> transport::Result<RawManifest> {
        self.raw(digest, None)
    }

    fn blob(&self, desc: &Descriptor) -> transport::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.store.open_blob(&desc.digest)?))
    }
}

/// The local store as an image sink: blobs verified on commit, the top
/// manifest tagged with `name`.
pub struct StoreSink {
    store: Store,
    name: Reference,
}

impl ImageSink for StoreSink {
    fn has_blob(&self, desc: &Descriptor) -> transport::Result<bool> {
        Ok(self.store.has_blob(&desc.digest))
    }

    fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> transport::Result<()> {
        let mut w = self.store.blob_writer()?;
        std::io::copy(data, &mut w).map_err(|e| {
            match e.downcast::<kiln_registry::RegistryError>() {
                Ok(inner) => TransportError::Other(Box::new(inner)),
                Err(e) => TransportError::Io {
                    context: format!("copy blob {}", desc.digest),
                    source: e,
                },
            }
        })?;
        w.commit(Some(&desc.digest))?;
        Ok(())
    }

    fn put_manifest(&self, raw: &RawManifest, top: bool) -> transport::Result<()> {
        let d = self.store.put_blob(&raw.bytes)?;
        if d != raw.digest {
            return Err(TransportError::Invalid(format!(
                "manifest {} hashes to {d}",
                raw.digest
            )));
        }
        if top {
            self.store.tag(&self.name, &raw.descriptor())?;
        }
        Ok(())
    }
}
