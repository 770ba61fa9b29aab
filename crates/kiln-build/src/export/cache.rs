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
//!
//! With `mounts=true` the cache also carries the build's cache mounts, as
//! layers named in the config's versioned `cache_mounts` section (see
//! `mounts`); readers that predate it ignore it.
//!
//! `--cache-from` also reads an ordinary image (or the host's image of an
//! index) that carries an inline cache in its config: [`super::inline`].

use std::collections::BTreeMap;
use std::io::Read;

use kiln_image::layout::{LayoutSink, LayoutSource};
use kiln_image::manifest::AnyManifest;
use kiln_image::media::{self, Compression, Format};
use kiln_image::transport::{self, CopyOptions, ImageSink, ImageSource, RawManifest};
use kiln_image::{Descriptor, Digest, Image, Manifest, Store};
use kiln_registry::{Client, ClientConfig, RegistrySink, RegistrySource};
use serde::{Deserialize, Serialize};

use crate::BuildError;
use crate::cache::CachedLayer;
use crate::cache_mount_transfer::ImportedMounts;
use crate::cache_session::{CacheSession, ImportedCache, ImportedEntry};

mod mounts;
mod spec;
pub use mounts::DEFAULT_MOUNTS_MAX_SIZE;
pub use spec::{CacheFrom, CacheLocation, CacheMode, CacheTo};

/// The media type of a cache manifest's config.
pub const CACHE_CONFIG: &str = "application/vnd.kiln.cache.config.v1+json";

/// A cache (or image) config larger than this is refused unread.
pub(crate) const MAX_CONFIG: u64 = 64 << 20;

/// The cache config: key → entry.
#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    entries: BTreeMap<String, ConfigEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_mounts: Option<mounts::MountsSection>,
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
    /// Cache mounts exported (`mounts=true`).
    pub mounts: usize,
    /// Cache mounts left out, one line each (over `mounts-max-size`).
    pub warnings: Vec<String>,
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
    let mounts = match to.mounts {
        true => mounts::export_mounts(store, &session.mounts, to.compression, to.mounts_max_size)?,
        false => mounts::Mounts::default(),
    };
    let (manifest, config) = cache_manifest(store, &entries, &mounts.exported, to.compression)?;
    let src = CacheImage {
        store,
        manifest: manifest.clone(),
        config,
        carried: &session.mounts,
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
        CacheLocation::Inline => return Err(inline_elsewhere()),
    }
    Ok(Exported {
        manifest: manifest.descriptor(),
        entries: entries.len(),
        // The steps' layers (the mounts' are counted apart).
        layers: entries
            .values()
            .filter_map(|e| e.layer.as_ref().map(|(blob, _)| &blob.digest))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        mounts: mounts.exported.len(),
        warnings: mounts.warnings,
    })
}

/// `type=inline` lives in the image: [`super::inline`] writes and reads it.
fn inline_elsewhere() -> BuildError {
    BuildError::Usage("type=inline is the image's own config (see export::inline)".into())
}

/// How often an export starts over after losing a race to another writer.
const WRITER_RACE_ATTEMPTS: u64 = 4;

/// Whether the registry refused the manifest (400) as it does when a blob
/// it names is not there. Seen with distribution 2.8 when other writers
/// push the same blobs at the same moment (`DIGEST_INVALID`,
/// `MANIFEST_BLOB_UNKNOWN` for blobs this writer had just pushed; our
/// reading: its repository blob links are rewritten in place). The whole
/// copy starts over: it finds the blobs there and writes the manifest again.
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
    exported_mounts: &[mounts::ExportedMount],
    compression: Compression,
) -> Result<(RawManifest, Vec<u8>), BuildError> {
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut index_of = BTreeMap::new();
    let mut config = CacheConfig {
        entries: BTreeMap::new(),
        cache_mounts: None,
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
    // After the step layers: a reader that predates mounts sees layers no
    // entry names, which it never fetches.
    let mut mount_layers = Vec::new();
    for m in exported_mounts {
        let i = match layers.iter().position(|l| l.digest == m.blob.digest) {
            Some(i) => i,
            None => {
                layers.push(m.blob.clone());
                layers.len() - 1
            }
        };
        mount_layers.push(i);
    }
    config.cache_mounts = mounts::section(exported_mounts, &mount_layers);
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
/// layers from the store, and cache mounts passed on from the imports
/// that carry them.
struct CacheImage<'a> {
    store: &'a Store,
    manifest: RawManifest,
    config: Vec<u8>,
    carried: &'a crate::cache_mount_transfer::CacheMounts,
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
        if !self.store.has_blob(&desc.digest)
            && let Some(blob) = self.carried.blob(desc)
        {
            return blob;
        }
        Ok(Box::new(self.store.open_blob(&desc.digest)?))
    }
}

fn open_source(location: &CacheLocation) -> Result<Box<dyn ImageSource>, BuildError> {
    Ok(match location {
        CacheLocation::Registry { reference, .. } => Box::new(RegistrySource::new(
            &registry_client(location)?,
            reference.clone(),
        )),
        CacheLocation::Local { dir, tag } => Box::new(LayoutSource::open(dir, Some(tag))?),
        CacheLocation::Inline => return Err(inline_elsewhere()),
    })
}

/// Reads the cache `from` names; an error says why it cannot be used.
pub fn import_cache(from: &CacheFrom) -> Result<ImportedCache, BuildError> {
    Ok(import_cache_and_mounts(from)?.0)
}

/// [`import_cache`], and the cache mounts it carries (none with
/// `mounts=false`, none in an inline cache), with a note when it has some
/// this kiln cannot read.
pub fn import_cache_and_mounts(
    from: &CacheFrom,
) -> Result<(ImportedCache, ImportedMounts, Option<String>), BuildError> {
    let source = open_source(&from.location)?;
    let (entries, found, note) = match read_cache(source.as_ref())? {
        Found::Inline(entries) => (entries, Vec::new(), None),
        Found::Cache(found) => {
            let (manifest, mut config) = *found;
            let section = config.cache_mounts.take().filter(|_| from.mounts);
            let (found, note) = mounts::imported(&manifest, section)
                .map_err(|e| BuildError::Io(format!("its cache config is corrupt: {e}")))?;
            (entries_of(&manifest, config)?, found, note)
        }
    };
    let name = from.location.to_string();
    let mount_source = match found.is_empty() {
        true => None,
        false => Some(open_source(&from.location)?),
    };
    let imported_mounts =
        ImportedMounts::new(name.clone(), found, mount_source, !from.ignore_error);
    Ok((
        ImportedCache::new(name, entries, source, !from.ignore_error),
        imported_mounts,
        note,
    ))
}

#[cfg(test)]
fn read_entries(source: &dyn ImageSource) -> Result<BTreeMap<Digest, ImportedEntry>, BuildError> {
    match read_cache(source)? {
        Found::Inline(entries) => Ok(entries),
        Found::Cache(found) => entries_of(&found.0, found.1),
    }
}

/// What a `--cache-from` source holds.
enum Found {
    /// A kiln cache: its manifest and config.
    Cache(Box<(Manifest, CacheConfig)>),
    /// An image whose config carries an inline cache: its entries.
    Inline(BTreeMap<Digest, ImportedEntry>),
}

/// A cache's manifest and config, checked to be a kiln cache, or the
/// entries of an image's inline cache.
fn read_cache(source: &dyn ImageSource) -> Result<Found, BuildError> {
    let bad = |msg: String| BuildError::Io(msg);
    let top = source.top()?;
    let mut manifest = top.parse().map_err(|e| bad(format!("its manifest: {e}")))?;
    // An image index (a multi-platform image): the host's image may carry
    // an inline cache.
    if let AnyManifest::Index(index) = &manifest {
        let host = kiln_image::Platform::host();
        let Some(d) = index.select(&host) else {
            return Err(bad(format!(
                "it holds no kiln cache (an image index without {host})"
            )));
        };
        let raw = source.manifest(&d.digest)?;
        manifest = raw
            .parse()
            .map_err(|e| bad(format!("its manifest for {host}: {e}")))?;
    }
    let manifest = match manifest {
        AnyManifest::Manifest(m) if m.config.media_type == CACHE_CONFIG => m,
        AnyManifest::Manifest(m)
            if [media::OCI_CONFIG, media::DOCKER_CONFIG]
                .contains(&m.config.media_type.as_str()) =>
        {
            return super::inline::read_entries(source, &m).map(Found::Inline);
        }
        AnyManifest::Manifest(m) => {
            return Err(bad(format!(
                "it holds no kiln cache (an artifact whose config is {})",
                m.config.media_type
            )));
        }
        AnyManifest::Index(_) => {
            return Err(bad("it holds no kiln cache (an index of indexes)".into()));
        }
    };
    let bytes = read_config_blob(source, &manifest, "cache config")?;
    let config: CacheConfig = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("its cache config is corrupt: {e}")))?;
    Ok(Found::Cache(Box::new((manifest, config))))
}

/// The config blob `manifest` names (`what` says which, for messages):
/// refused unread past [`MAX_CONFIG`], and checked against its digest.
pub(super) fn read_config_blob(
    source: &dyn ImageSource,
    manifest: &Manifest,
    what: &str,
) -> Result<Vec<u8>, BuildError> {
    let bad = |msg: String| BuildError::Io(msg);
    if manifest.config.size > MAX_CONFIG {
        return Err(bad(format!(
            "its {what} is {} bytes, more than kiln reads",
            manifest.config.size
        )));
    }
    let mut bytes = Vec::new();
    source
        .blob(&manifest.config)?
        .take(manifest.config.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("reading its {what}: {e}")))?;
    if Digest::sha256_of(&bytes) != manifest.config.digest {
        return Err(bad(format!("its {what} does not match its digest")));
    }
    Ok(bytes)
}

/// The entries of a cache config, checked against its manifest.
fn entries_of(
    manifest: &Manifest,
    config: CacheConfig,
) -> Result<BTreeMap<Digest, ImportedEntry>, BuildError> {
    let bad = |msg: String| BuildError::Io(msg);
    let mut entries = BTreeMap::new();
    for (key, e) in config.entries {
        let corrupt = |why: &str| bad(format!("its cache config is corrupt: entry {key}: {why}"));
        let digest: Digest = key.parse().map_err(|_| corrupt("not a digest"))?;
        let layer = match (e.layer, e.diff_id) {
            (None, None) => None,
            (Some(i), Some(diff_id)) => Some((i, diff_id)),
            _ => return Err(corrupt("a layer without a diff ID, or the reverse")),
        };
        let entry = imported_entry(manifest, layer, e.size, e.created).map_err(|w| corrupt(&w))?;
        entries.insert(digest, entry);
    }
    Ok(entries)
}

/// One entry of a cache (or an image's inline cache) whose blobs are
/// `manifest`'s layers: `layer` is an index into them with its diff ID,
/// `size` the plain layer's size. An error says what does not add up.
pub(super) fn imported_entry(
    manifest: &Manifest,
    layer: Option<(usize, Digest)>,
    size: Option<u64>,
    created: i64,
) -> Result<ImportedEntry, String> {
    let (layer, remote) = match layer {
        None => (None, None),
        Some((i, diff_id)) => {
            let remote = manifest
                .layers
                .get(i)
                .ok_or("its layer index is past the layers")?;
            // The store keeps the layer plain: its digest is its diff
            // ID, and a plain blob must say so itself.
            let size = match media::layer_compression(&remote.media_type) {
                Some(Compression::None) if remote.digest != diff_id => {
                    return Err("a plain layer whose digest is not its diff ID".into());
                }
                Some(Compression::None) => remote.size,
                Some(_) => size.ok_or("a layer without its size")?,
                None => return Err("its layer is not a layer".into()),
            };
            let plain = Descriptor::new(media::OCI_LAYER, diff_id.clone(), size);
            (Some((plain, diff_id)), Some(remote.clone()))
        }
    };
    Ok(ImportedEntry {
        entry: CachedLayer { layer, created },
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_session::CacheSession;

    /// A cache held in memory: a manifest and its blobs.
    struct MemSource {
        manifest: RawManifest,
        blobs: BTreeMap<Digest, Vec<u8>>,
    }

    impl ImageSource for MemSource {
        fn top(&self) -> transport::Result<RawManifest> {
            Ok(self.manifest.clone())
        }
        fn manifest(&self, d: &Digest) -> transport::Result<RawManifest> {
            Err(transport::TransportError::Invalid(format!("no {d}")))
        }
        fn blob(&self, desc: &Descriptor) -> transport::Result<Box<dyn Read + Send + '_>> {
            let b = self.blobs.get(&desc.digest).cloned().unwrap_or_default();
            Ok(Box::new(std::io::Cursor::new(b)))
        }
    }

    fn plain(bytes: &[u8]) -> (Descriptor, Digest) {
        let d = Digest::sha256_of(bytes);
        (
            Descriptor::new(media::OCI_LAYER, d.clone(), bytes.len() as u64),
            d,
        )
    }

    /// A cache of one layer (`layer`, served as `served`) and one empty
    /// step, with its config edited by `edit`.
    fn cache(layer: &[u8], served: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> MemSource {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        store.put_blob(layer).unwrap();
        let mut entries = BTreeMap::new();
        entries.insert(
            Digest::sha256_of(b"key-1"),
            CachedLayer {
                layer: Some(plain(layer)),
                created: 7,
            },
        );
        entries.insert(
            Digest::sha256_of(b"key-2"),
            CachedLayer {
                layer: None,
                created: 8,
            },
        );
        let (_, config) = cache_manifest(&store, &entries, &[], Compression::None).unwrap();
        let mut config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        edit(&mut config);
        let config = serde_json::to_vec(&config).unwrap();
        let config_desc = Descriptor::new(
            CACHE_CONFIG,
            Digest::sha256_of(&config),
            config.len() as u64,
        );
        let manifest = Manifest::new(Format::Oci, config_desc.clone(), vec![plain(layer).0]);
        let manifest =
            RawManifest::new(media::OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap());
        let mut blobs = BTreeMap::new();
        blobs.insert(config_desc.digest, config);
        blobs.insert(Digest::sha256_of(layer), served.to_vec());
        MemSource { manifest, blobs }
    }

    #[test]
    fn a_cache_reads_back_as_written() {
        let src = cache(b"layer bytes", b"layer bytes", |_| {});
        let entries = read_entries(&src).unwrap();
        let one = &entries[&Digest::sha256_of(b"key-1")];
        assert_eq!(one.entry.layer, Some(plain(b"layer bytes")));
        assert_eq!(one.entry.created, 7);
        assert_eq!(
            one.remote.as_ref().unwrap().digest,
            Digest::sha256_of(b"layer bytes")
        );
        let two = &entries[&Digest::sha256_of(b"key-2")];
        assert_eq!((two.entry.layer.clone(), two.remote.clone()), (None, None));
    }

    type Edit<'a> = dyn FnOnce(&mut serde_json::Value) + 'a;

    #[test]
    fn a_config_that_does_not_add_up_is_refused_whole() {
        let key = Digest::sha256_of(b"key-1").to_string();
        let cases: Vec<(&str, Box<Edit<'_>>)> = vec![
            (
                "past the layers",
                Box::new(|c| c["entries"][&key]["layer"] = 5.into()),
            ),
            (
                "not its diff ID",
                Box::new(|c| {
                    c["entries"][&key]["diff_id"] = Digest::sha256_of(b"other").to_string().into()
                }),
            ),
            (
                "or the reverse",
                Box::new(|c| {
                    c["entries"][&key]
                        .as_object_mut()
                        .unwrap()
                        .remove("diff_id");
                }),
            ),
            (
                "not a digest",
                Box::new(|c| c["entries"]["sha256:zz"] = c["entries"][&key].clone()),
            ),
            (
                "corrupt",
                Box::new(|c| *c = serde_json::json!({"entries": 3})),
            ),
        ];
        for (why, edit) in cases {
            let err = read_entries(&cache(b"layer", b"layer", edit))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_wrong_blob_never_enters_the_store_and_is_warned_about_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = b"the real layer";
        let src = cache(layer, b"something else", |_| {});
        let entries = read_entries(&src).unwrap();
        let session = CacheSession::new(vec![ImportedCache::new(
            "mem".into(),
            entries,
            Box::new(src),
            false,
        )]);
        let key = Digest::sha256_of(b"key-1");
        assert!(session.import(&store, &key).is_none());
        assert!(!store.has_blob(&Digest::sha256_of(layer)));
        // The cache is not asked again, even for an entry without a layer.
        assert!(
            session
                .import(&store, &Digest::sha256_of(b"key-2"))
                .is_none()
        );
        let warnings = session.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("--cache-from mem: layer sha256:"),
            "{warnings:?}"
        );

        let src = cache(layer, layer, |_| {});
        let entries = read_entries(&src).unwrap();
        let session = CacheSession::new(vec![ImportedCache::new(
            "mem".into(),
            entries,
            Box::new(src),
            false,
        )]);
        assert!(session.import(&store, &key).is_some());
        assert!(store.has_blob(&Digest::sha256_of(layer)));
        assert_eq!(session.fetched().layers, 1);
        assert!(session.take_warnings().is_empty());
    }
}
