//! Image locations in skopeo's transport syntax, and opening them as image
//! sources and sinks:
//!
//! - `docker://REF`: a registry;
//! - `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`:
//!   layouts and archives (kiln-image's transports);
//! - `kiln:NAME`, `containers-storage:NAME`, or a plain `NAME`: the local store.
//!
//! `kiln copy` reads a bare reference as crane does instead
//! ([`Location::parse_for_copy`]): one that names a registry host is the
//! registry.
//!
//! It parses and opens; the copying is `kiln_image::transport::copy`.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use kiln_image::archive::{ArchiveKind, ArchiveSink, DockerArchiveSource, OciArchiveSource};
use kiln_image::layout::{LayoutSink, LayoutSource};
use kiln_image::store_io::{StoreSink, StoreSource};
use kiln_image::transport::{ImageSink, ImageSource};
use kiln_image::{Reference, Store};
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

    /// [`Location::parse`] for `kiln copy`, where a bare reference that
    /// names a registry (`reg.example.com/app:1`, `localhost:5000/app`,
    /// `localhost/app`) is that registry, as `crane copy` reads it; other
    /// bare names (`app:1`, `team/app`) stay the store's, and `kiln:NAME`
    /// is always the store.
    pub fn parse_for_copy(s: &str) -> Result<Location> {
        if names_registry(s) {
            return Ok(Location::Docker(
                Reference::parse(s).with_context(|| format!("in {s:?}"))?,
            ));
        }
        Location::parse(s)
    }
}

/// Whether a bare reference starts with a registry host: a first
/// component, before a `/`, with a dot or a port, or `localhost` (docker's
/// rule for telling a host from a Docker Hub namespace). A transport
/// prefix (`oci:DIR/x`, `kiln:reg/app`) is not a host and port.
fn names_registry(s: &str) -> bool {
    let Some((first, _)) = s.split_once('/') else {
        return false;
    };
    if let Some((scheme, _)) = first.split_once(':') {
        // `oci:dir/x`, `kiln:reg/app`: a transport, not host:port.
        const TRANSPORTS: &[&str] = &[
            "docker",
            "oci",
            "oci-archive",
            "docker-archive",
            "kiln",
            "containers-storage",
            "dir",
        ];
        if TRANSPORTS.contains(&scheme) {
            return false;
        }
    }
    first == "localhost" || first.contains('.') || first.contains(':')
}

/// What opening a location needs. The store is opened on first use and
/// kept, since store sources and sinks borrow it.
pub struct Env<'a> {
    pub client: &'a Client,
    pub store_root: PathBuf,
    store: OnceLock<Store>,
}

impl<'a> Env<'a> {
    pub fn new(client: &'a Client, store_root: PathBuf) -> Env<'a> {
        Env {
            client,
            store_root,
            store: OnceLock::new(),
        }
    }

    fn store(&self) -> Result<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = super::open_store(&self.store_root)?;
        Ok(self.store.get_or_init(|| s))
    }
}

pub fn open_source<'e>(loc: &Location, env: &'e Env) -> Result<Box<dyn ImageSource + 'e>> {
    Ok(match loc {
        // Every sink verifies digests (the ImageSink contract): hashing
        // each byte once more in the source would only cost CPU.
        Location::Docker(r) => {
            Box::new(RegistrySource::new(env.client, r.clone()).verify_blobs(false))
        }
        Location::Store(name) => Box::new(StoreSource::new(env.store()?, name)?),
        Location::Oci { dir, tag } => Box::new(LayoutSource::open(dir, tag.as_deref())?),
        Location::OciArchive { file, tag } => {
            Box::new(OciArchiveSource::open(file, tag.as_deref())?)
        }
        Location::DockerArchive { file, reference } => {
            Box::new(DockerArchiveSource::open(file, reference.as_deref())?)
        }
    })
}

/// [`open_source`] for a copy to `dest`: an image leaving the store for a
/// registry has its plain-tar layers compressed first (gzip), as `docker
/// push` and `podman push` do; see `kiln_image::compressed`.
pub fn open_source_to<'e>(
    loc: &Location,
    env: &'e Env,
    dest: &Location,
) -> Result<Box<dyn ImageSource + 'e>> {
    if let (Location::Store(name), Location::Docker(_)) = (loc, dest) {
        let store = env.store()?;
        let top = store.resolve(name)?;
        let top = kiln_image::compressed::compressed_top(
            store,
            &top,
            kiln_image::media::Compression::Gzip,
        )?;
        return Ok(Box::new(StoreSource::from_descriptor(store, top)));
    }
    open_source(loc, env)
}

/// `source`: where the image comes from. A registry source on the same
/// registry lets a registry sink mount blobs instead of uploading them; a
/// named source names the image in archives that want a name.
pub fn open_sink<'e>(
    loc: &Location,
    env: &'e Env,
    source: Option<&Location>,
) -> Result<Box<dyn ImageSink + 'e>> {
    open_sink_mounting(loc, env, source, &[])
}

/// [`open_sink`], where a registry sink may also mount blobs from the
/// registry locations in `more` (a rebase's new base).
pub fn open_sink_mounting<'e>(
    loc: &Location,
    env: &'e Env,
    source: Option<&Location>,
    more: &[Location],
) -> Result<Box<dyn ImageSink + 'e>> {
    let source_name = match source {
        Some(Location::Docker(r)) => Some(r.clone()),
        Some(Location::Store(n)) => Reference::parse(n).ok(),
        _ => None,
    };
    Ok(match loc {
        Location::Docker(r) => {
            let mut sink = RegistrySink::new(env.client, r.clone());
            for from in source.into_iter().chain(more) {
                if let Location::Docker(from) = from {
                    sink = sink.mount_from(from);
                }
            }
            if let Some(Location::Store(_)) = source {
                // A pulled base's layers are mounted from where they came.
                sink = sink.mount_recorded(env.store()?.blob_sources());
            }
            Box::new(sink)
        }
        Location::Store(name) => {
            let sink = StoreSink::new(env.store()?, Some(Reference::parse(name)?));
            Box::new(match source {
                Some(Location::Docker(from)) => sink.with_source(from.clone()),
                _ => sink,
            })
        }
        Location::Oci { dir, tag } => Box::new(
            LayoutSink::create(dir, tag.as_deref())?
                .with_image_name(source_name.map(|r| r.to_string())),
        ),
        Location::OciArchive { file, tag } => Box::new(ArchiveSink::create(
            file,
            ArchiveKind::Oci {
                tag: tag.clone(),
                image_name: source_name.map(|r| r.to_string()),
            },
        )?),
        Location::DockerArchive { file, reference } => {
            let repo_tags = match (reference, source_name) {
                (Some(r), _) => vec![Reference::parse(r)?.familiar()],
                (None, Some(r)) if r.tag().is_some() => vec![r.familiar()],
                _ => Vec::new(),
            };
            Box::new(ArchiveSink::create(
                file,
                ArchiveKind::Docker { repo_tags },
            )?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_reference_with_a_registry_host_is_the_registry_for_copy() {
        for registry in [
            "reg.example.com/app:1",
            "localhost:5000/app",
            "localhost/app",
            "127.0.0.1:5000/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(
                matches!(Location::parse_for_copy(registry), Ok(Location::Docker(_))),
                "{registry}"
            );
        }
        for store in [
            "app:1",
            "team/app",
            "kiln:reg.example.com/app:1",
            "containers-storage:localhost/app",
        ] {
            assert!(
                matches!(Location::parse_for_copy(store), Ok(Location::Store(_))),
                "{store}"
            );
        }
        for other in [
            "oci:/tmp/x:1",
            "oci-archive:./a.b/c.tar",
            "docker-archive:d.e/f.tar",
        ] {
            assert!(
                !matches!(Location::parse_for_copy(other), Ok(Location::Docker(_))),
                "{other}"
            );
        }
        // The store commands keep reading a bare name as the store's.
        assert!(matches!(
            Location::parse("reg.example.com/app:1"),
            Ok(Location::Store(_))
        ));
    }
}
