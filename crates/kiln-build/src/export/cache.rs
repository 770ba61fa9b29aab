//! The build cache as ordinary OCI content, for `--cache-to` and
//! `--cache-from` (buildx's syntax): `type=registry,ref=…` or an OCI
//! layout directory (`type=local,dest=…` / `src=…`).
//!
//! A cache is an image manifest whose layers are the cached layer blobs
//! (`compression=gzip` by default, as buildx; `zstd`, or `uncompressed`
//! for the store's plain tars) and whose config, of media type
//! [`CACHE_CONFIG`], maps each cache key to its layer's index (none for a
//! step that changed nothing), diff ID, plain size and the time it was
//! made. An imported layer is stored plain, checked against its diff ID. Any
//! registry that stores images stores it, and skopeo can copy it.
//!
//! Writers push every blob before the manifest, so a reader never sees a
//! manifest whose blobs are missing; several writers to one ref: the last
//! manifest written wins, whole. Readers check everything: a ref that holds
//! something else, or a config that does not add up, is refused whole
//! before the build starts; a blob that is gone or wrong is refused when it
//! is fetched (see [`crate::cache_session`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use kiln_image::layout::{LayoutSink, LayoutSource};
use kiln_image::manifest::AnyManifest;
use kiln_image::media::{self, Compression, Format};
use kiln_image::transport::{self, CopyOptions, ImageSink, ImageSource, RawManifest};
use kiln_image::{Descriptor, Digest, Image, Manifest, Reference, Store};
use kiln_registry::{Client, ClientConfig, RegistrySink, RegistrySource};
use serde::{Deserialize, Serialize};

use crate::BuildError;
use crate::cache::CachedLayer;
use crate::cache_session::{CacheSession, ImportedCache, ImportedEntry};

/// The media type of a cache manifest's config.
pub const CACHE_CONFIG: &str = "application/vnd.kiln.cache.config.v1+json";

/// A cache config larger than this is refused unread.
const MAX_CONFIG: u64 = 64 << 20;

/// Where a cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=…`; `registry.insecure=true` allows plain HTTP
    /// or an unverified certificate (loopback registries may use HTTP
    /// anyway).
    Registry {
        reference: Reference,
        insecure: bool,
    },
    /// `type=local`: an OCI layout directory, the cache under `tag`.
    Local { dir: PathBuf, tag: String },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry { reference, .. } => write!(f, "{reference}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// `mode=`: which entries `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The layers of the output image (buildx's default).
    Min,
    /// Every step of every stage the build ran or found.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// `compression=`: how the layers travel (gzip unless said).
    pub compression: Compression,
    /// `ignore-error=true`: a failed export is a warning, not a failure.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub location: CacheLocation,
    /// `ignore-error=false` makes a cache that cannot be used fail the
    /// build; by default it is a warning, as buildx's.
    pub ignore_error: bool,
}

/// What a `--cache-to`/`--cache-from` spec says, before its direction's
/// own checks. `Ok(None)`: a kind kiln does not do yet (the caller warns).
struct Spec {
    location: CacheLocation,
    mode: Option<CacheMode>,
    compression: Option<Compression>,
    ignore_error: Option<bool>,
}

fn parse_spec(flag: &str, spec: &str, dir_key: &str) -> Result<Option<Spec>, BuildError> {
    let usage = |msg: String| BuildError::Usage(format!("{flag} {spec:?}: {msg}"));
    // As buildx: a bare reference is a registry cache.
    if !spec.contains('=') {
        let reference = Reference::parse(spec).map_err(|e| usage(e.to_string()))?;
        return Ok(Some(Spec {
            location: CacheLocation::Registry {
                reference,
                insecure: false,
            },
            mode: None,
            compression: None,
            ignore_error: None,
        }));
    }
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| usage(format!("{part:?} is not KEY=VALUE")))?;
        fields.insert(k, v);
    }
    let bool_of = |k: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(usage(format!("{k}={v}: expected true or false"))),
    };
    let mut out = Spec {
        location: CacheLocation::Local {
            dir: PathBuf::new(),
            tag: String::new(),
        },
        mode: None,
        compression: None,
        ignore_error: None,
    };
    let kind = fields.remove("type").unwrap_or("registry");
    let mut insecure = false;
    let mut reference = None;
    let mut dir = None;
    let mut tag = "latest".to_string();
    for (k, v) in fields {
        match k {
            "ref" if kind == "registry" => {
                reference = Some(Reference::parse(v).map_err(|e| usage(e.to_string()))?)
            }
            "registry.insecure" => insecure = bool_of(k, v)?,
            "tag" if kind == "local" => tag = v.to_string(),
            k if k == dir_key && kind == "local" => dir = Some(PathBuf::from(v)),
            "mode" => {
                out.mode = Some(match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(usage(format!("mode={v}: expected min or max"))),
                })
            }
            "ignore-error" => out.ignore_error = Some(bool_of(k, v)?),
            "compression" => {
                out.compression = Some(match v {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    _ => {
                        return Err(usage(format!(
                            "compression={v}: expected gzip, zstd or uncompressed"
                        )));
                    }
                })
            }
            // A cache is always an OCI image manifest, compressed once per
            // layer at the default level.
            "compression-level" | "force-compression" | "oci-mediatypes" | "image-manifest" => {}
            _ => return Err(usage(format!("unknown key {k:?} for type={kind}"))),
        }
    }
    out.location = match kind {
        "registry" => CacheLocation::Registry {
            reference: reference.ok_or_else(|| usage("type=registry needs ref=".into()))?,
            insecure,
        },
        "local" => CacheLocation::Local {
            dir: dir.ok_or_else(|| usage(format!("type=local needs {dir_key}=")))?,
            tag,
        },
        "inline" | "gha" | "s3" | "azblob" => return Ok(None),
        other => {
            return Err(usage(format!("type={other}: expected registry or local")));
        }
    };
    Ok(Some(out))
}

impl CacheTo {
    /// Parses a `--cache-to` value; `Ok(None)` for a kind kiln does not
    /// export yet (`inline`, the cloud caches).
    pub fn parse(spec: &str) -> Result<Option<CacheTo>, BuildError> {
        Ok(parse_spec("--cache-to", spec, "dest")?.map(|s| CacheTo {
            location: s.location,
            mode: s.mode.unwrap_or(CacheMode::Min),
            compression: s.compression.unwrap_or(Compression::Gzip),
            ignore_error: s.ignore_error.unwrap_or(false),
        }))
    }
}

impl CacheFrom {
    /// Parses a `--cache-from` value; `Ok(None)` as [`CacheTo::parse`].
    pub fn parse(spec: &str) -> Result<Option<CacheFrom>, BuildError> {
        let s = parse_spec("--cache-from", spec, "src")?;
        if let Some(Spec {
            mode, compression, ..
        }) = &s
            && (mode.is_some() || compression.is_some())
        {
            return Err(BuildError::Usage(format!(
                "--cache-from {spec:?}: mode= and compression= are for --cache-to"
            )));
        }
        Ok(s.map(|s| CacheFrom {
            location: s.location,
            ignore_error: s.ignore_error.unwrap_or(true),
        }))
    }
}

/// The cache config: key → entry.
#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    entries: BTreeMap<String, ConfigEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigEntry {
    /// Index into the manifest's layers; none for a step that changed
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diff_id: Option<Digest>,
    /// The plain layer's size (the blob's when it is not compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    created: i64,
}

fn registry_client(location: &CacheLocation) -> Result<Client, BuildError> {
    let mut config = ClientConfig::default();
    if let CacheLocation::Registry {
        reference,
        insecure: true,
    } = location
    {
        config.transport.insecure_registries = vec![reference.registry().to_string()];
    }
    Client::new(config).map_err(|e| BuildError::Io(format!("registry client: {e}")))
}

/// What [`export_cache`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub manifest: Descriptor,
    pub entries: usize,
    pub layers: usize,
}

/// Writes the entries `session` recorded (all of them with `mode=max`;
/// with `mode=min`, those of `image`'s layers) to `to`.
pub fn export_cache(
    store: &Store,
    session: &CacheSession,
    image: &Image,
    to: &CacheTo,
) -> Result<Exported, BuildError> {
    let in_image: std::collections::BTreeSet<&Digest> =
        image.layers.iter().map(|l| &l.digest).collect();
    let entries: BTreeMap<Digest, CachedLayer> = session
        .recorded()
        .into_iter()
        .filter(|(_, e)| match (&e.layer, to.mode) {
            (_, CacheMode::Max) | (None, CacheMode::Min) => true,
            (Some((blob, _)), CacheMode::Min) => in_image.contains(&blob.digest),
        })
        .collect();
    let (manifest, config) = cache_manifest(store, &entries, to.compression)?;
    let src = CacheImage {
        store,
        manifest: manifest.clone(),
        config,
    };
    let what =
        |e: &dyn std::fmt::Display| BuildError::Io(format!("--cache-to {}: {e}", to.location));
    match &to.location {
        CacheLocation::Registry { reference, .. } => {
            let client = registry_client(&to.location)?;
            let sink = RegistrySink::new(&client, reference.clone());
            let mut attempt = 1;
            loop {
                match copy_to(&src, &sink) {
                    Ok(()) => break,
                    Err(e) if attempt < WRITER_RACE_ATTEMPTS && lost_writer_race(&e) => {
                        std::thread::sleep(std::time::Duration::from_millis(
                            100 * attempt + u64::from(std::process::id() % 100),
                        ));
                        attempt += 1;
                    }
                    Err(e) => return Err(what(&e)),
                }
            }
        }
        CacheLocation::Local { dir, tag } => {
            let sink = LayoutSink::create(dir, Some(tag)).map_err(|e| what(&e))?;
            copy_to(&src, &sink).map_err(|e| what(&e))?;
        }
    }
    Ok(Exported {
        manifest: manifest.descriptor(),
        entries: entries.len(),
        layers: src.layer_count(),
    })
}

/// How often an export starts over after losing a race to another writer.
const WRITER_RACE_ATTEMPTS: u64 = 4;

/// Whether the registry refused the manifest because a blob it names was
/// not linked at that instant. distribution rewrites a repository's blob
/// link in place (truncate, then write) whenever a writer uploads or
/// mounts that blob, so a manifest whose blobs another writer is pushing
/// at the same moment can be refused (`MANIFEST_BLOB_UNKNOWN`, 400). The
/// blobs are all there a moment later: the whole copy starts over (it
/// finds them and only writes the manifest again).
fn lost_writer_race(e: &BuildError) -> bool {
    let BuildError::Transport(transport::TransportError::Other(e)) = e else {
        return false;
    };
    matches!(
        e.downcast_ref::<kiln_registry::RegistryError>(),
        Some(kiln_registry::RegistryError::Status { op, status, .. })
            if op.starts_with("PUT manifest") && status.as_u16() == 400
    )
}

/// Blobs first, the manifest last (what [`transport::copy`] does).
fn copy_to(src: &CacheImage<'_>, sink: &dyn ImageSink) -> Result<(), BuildError> {
    transport::copy(src, sink, &CopyOptions::default())?;
    Ok(())
}

/// The cache manifest and its config's bytes for `entries`.
fn cache_manifest(
    store: &Store,
    entries: &BTreeMap<Digest, CachedLayer>,
    compression: Compression,
) -> Result<(RawManifest, Vec<u8>), BuildError> {
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut index_of = BTreeMap::new();
    let mut config = CacheConfig {
        entries: BTreeMap::new(),
    };
    for (key, e) in entries {
        let layer = match &e.layer {
            None => None,
            Some((blob, _)) => Some(match index_of.get(&blob.digest) {
                Some(i) => *i,
                None => {
                    // Once per layer, remembered in the store (as a push's).
                    let (digest, size) = match compression {
                        Compression::None => (blob.digest.clone(), blob.size),
                        c => kiln_image::compressed::compressed_blob(store, &blob.digest, c)?,
                    };
                    layers.push(Descriptor::new(
                        Format::Oci.layer(compression),
                        digest,
                        size,
                    ));
                    index_of.insert(blob.digest.clone(), layers.len() - 1);
                    layers.len() - 1
                }
            }),
        };
        config.entries.insert(
            key.to_string(),
            ConfigEntry {
                layer,
                diff_id: e.layer.as_ref().map(|(_, d)| d.clone()),
                size: e.layer.as_ref().map(|(b, _)| b.size),
                created: e.created,
            },
        );
    }
    let config = kiln_image::canonical::to_vec(&config)
        .map_err(|e| BuildError::Io(format!("cache config: {e}")))?;
    let config_desc = Descriptor::new(
        CACHE_CONFIG,
        Digest::sha256_of(&config),
        config.len() as u64,
    );
    let manifest = Manifest::new(Format::Oci, config_desc, layers);
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| BuildError::Io(format!("cache manifest: {e}")))?;
    Ok((RawManifest::new(media::OCI_MANIFEST, bytes), config))
}

/// The cache as an image source: its manifest and config from memory, its
/// layers from the store.
struct CacheImage<'a> {
    store: &'a Store,
    manifest: RawManifest,
    config: Vec<u8>,
}

impl CacheImage<'_> {
    fn layer_count(&self) -> usize {
        match self.manifest.parse() {
            Ok(AnyManifest::Manifest(m)) => m.layers.len(),
            _ => 0,
        }
    }
}

impl ImageSource for CacheImage<'_> {
    fn top(&self) -> transport::Result<RawManifest> {
        Ok(self.manifest.clone())
    }

    fn manifest(&self, digest: &Digest) -> transport::Result<RawManifest> {
        Err(transport::TransportError::Invalid(format!(
            "the cache has no manifest {digest}"
        )))
    }

    fn blob(&self, desc: &Descriptor) -> transport::Result<Box<dyn Read + Send + '_>> {
        if desc.media_type == CACHE_CONFIG {
            return Ok(Box::new(std::io::Cursor::new(self.config.clone())));
        }
        Ok(Box::new(self.store.open_blob(&desc.digest)?))
    }
}

/// Reads the cache `from` names; an error says why it cannot be used.
pub fn import_cache(from: &CacheFrom) -> Result<ImportedCache, BuildError> {
    let source: Box<dyn ImageSource> = match &from.location {
        CacheLocation::Registry { reference, .. } => Box::new(RegistrySource::new(
            &registry_client(&from.location)?,
            reference.clone(),
        )),
        CacheLocation::Local { dir, tag } => Box::new(LayoutSource::open(dir, Some(tag))?),
    };
    let entries = read_entries(source.as_ref())?;
    Ok(ImportedCache::new(
        from.location.to_string(),
        entries,
        source,
        !from.ignore_error,
    ))
}

fn read_entries(source: &dyn ImageSource) -> Result<BTreeMap<Digest, ImportedEntry>, BuildError> {
    let bad = |msg: String| BuildError::Io(msg);
    let top = source.top()?;
    let manifest = match top.parse().map_err(|e| bad(format!("its manifest: {e}")))? {
        AnyManifest::Manifest(m) if m.config.media_type == CACHE_CONFIG => m,
        AnyManifest::Manifest(m) => {
            return Err(bad(format!(
                "it holds no kiln cache (an image whose config is {})",
                m.config.media_type
            )));
        }
        AnyManifest::Index(_) => {
            return Err(bad("it holds no kiln cache (an image index)".into()));
        }
    };
    if manifest.config.size > MAX_CONFIG {
        return Err(bad(format!(
            "its cache config is {} bytes, more than kiln reads",
            manifest.config.size
        )));
    }
    let mut bytes = Vec::new();
    source
        .blob(&manifest.config)?
        .take(manifest.config.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("reading its cache config: {e}")))?;
    if Digest::sha256_of(&bytes) != manifest.config.digest {
        return Err(bad("its cache config does not match its digest".into()));
    }
    let config: CacheConfig = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("its cache config is corrupt: {e}")))?;
    let mut entries = BTreeMap::new();
    for (key, e) in config.entries {
        let corrupt = |why: &str| bad(format!("its cache config is corrupt: entry {key}: {why}"));
        let digest: Digest = key.parse().map_err(|_| corrupt("not a digest"))?;
        let (layer, remote) = match (e.layer, e.diff_id) {
            (None, None) => (None, None),
            (Some(i), Some(diff_id)) => {
                let remote = manifest
                    .layers
                    .get(i)
                    .ok_or_else(|| corrupt("its layer index is past the layers"))?;
                // The store keeps the layer plain: its digest is its diff
                // ID, and a plain blob must say so itself.
                let size = match media::layer_compression(&remote.media_type) {
                    Some(Compression::None) if remote.digest != diff_id => {
                        return Err(corrupt("a plain layer whose digest is not its diff ID"));
                    }
                    Some(Compression::None) => remote.size,
                    Some(_) => e.size.ok_or_else(|| corrupt("a layer without its size"))?,
                    None => return Err(corrupt("its layer is not a layer")),
                };
                let plain = Descriptor::new(media::OCI_LAYER, diff_id.clone(), size);
                (Some((plain, diff_id)), Some(remote.clone()))
            }
            _ => return Err(corrupt("a layer without a diff ID, or the reverse")),
        };
        entries.insert(
            digest,
            ImportedEntry {
                entry: CachedLayer {
                    layer,
                    created: e.created,
                },
                remote,
            },
        );
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildx_writes_them() {
        let to = CacheTo::parse("type=registry,ref=localhost:5000/c:1,mode=max,ignore-error=true")
            .unwrap()
            .unwrap();
        assert_eq!(to.mode, CacheMode::Max);
        assert!(to.ignore_error);
        assert_eq!(to.location.to_string(), "localhost:5000/c:1");
        let to = CacheTo::parse("type=local,dest=/tmp/c").unwrap().unwrap();
        assert_eq!((to.mode, to.ignore_error), (CacheMode::Min, false));
        let from = CacheFrom::parse("localhost:5000/c:1").unwrap().unwrap();
        assert!(from.ignore_error);
        let from = CacheFrom::parse("type=local,src=/tmp/c,tag=x")
            .unwrap()
            .unwrap();
        assert_eq!(from.location.to_string(), "/tmp/c:x");
        assert!(CacheTo::parse("type=inline").unwrap().is_none());
        for bad in [
            "type=registry",
            "type=local,src=/x",
            "type=registry,ref=a/b,mode=most",
            "type=registry,ref=a/b,colour=blue",
            "type=nope,ref=a/b",
        ] {
            assert!(CacheTo::parse(bad).is_err(), "{bad}");
        }
        assert!(CacheFrom::parse("type=local,dest=/x").is_err());
        assert!(CacheFrom::parse("type=registry,ref=a/b,mode=max").is_err());
    }
}
