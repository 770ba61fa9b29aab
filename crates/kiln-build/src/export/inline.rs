//! `--cache-to type=inline`: the built image carries the cache entries of
//! its own layers in its config, under the top-level field
//! [`INLINE_CACHE_FIELD`], and `--cache-from IMAGE` (or
//! `type=registry,ref=IMAGE`) reads them back, fetching the blobs from the
//! image's layers. No other blob is written: only the image's layers can be
//! named, so this is `mode=min` only, as BuildKit's inline cache.
//!
//! The field is a JSON object, `{"entries": {KEY: {"layer": I, "size": N,
//! "created": T}}}`: `I` indexes the image's layers (and `rootfs.diff_ids`,
//! which gives the diff ID), `N` is the plain layer's size, `T` when it was
//! made (`SOURCE_DATE_EPOCH` when set, so two such builds are identical);
//! an entry without `layer` is a step that changed nothing. docker and
//! podman keep unknown top-level config fields and ignore them, so the
//! image runs everywhere; it differs from one built without inline cache
//! only by this field. A stage that starts from such an image does not
//! inherit the field ([`without_inline_cache`]).

use std::collections::BTreeMap;

use kiln_image::manifest::Manifest;
use kiln_image::transport::ImageSource;
use kiln_image::{Digest, Image, Store};
use serde::{Deserialize, Serialize};

use crate::cache_session::{CacheSession, ImportedEntry};
use crate::{BuildError, BuildResult};

/// The image config field that holds the inline cache: namespaced as an
/// annotation key is, so no runtime or registry gives it a meaning.
pub const INLINE_CACHE_FIELD: &str = "dev.kiln.cache.inline.v1";

#[derive(Debug, Serialize, Deserialize)]
struct InlineCache {
    entries: BTreeMap<String, InlineEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct InlineEntry {
    /// Index into the image's layers; none for a step that changed nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    /// The plain layer's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    created: i64,
}

/// `image` without an inline cache: what a stage starting from it gets, so
/// a child image never carries its base's entries.
pub fn without_inline_cache(mut image: Image) -> Image {
    image.config.extra.remove(INLINE_CACHE_FIELD);
    image
}

/// Writes the entries `session` recorded for `result`'s layers (and the
/// steps that changed nothing) into its image config, stores the new config
/// and manifest and makes them the result's. Returns how many entries.
pub fn embed(
    store: &Store,
    result: &mut BuildResult,
    session: &CacheSession,
    source_date_epoch: Option<i64>,
) -> Result<usize, BuildError> {
    let diff_ids = &result.image.config.rootfs.diff_ids;
    let mut entries = BTreeMap::new();
    for (key, e) in session.recorded() {
        let entry = match &e.layer {
            None => InlineEntry {
                layer: None,
                size: None,
                created: e.created,
            },
            Some((blob, diff_id)) => match diff_ids.iter().position(|d| d == diff_id) {
                Some(i) => InlineEntry {
                    layer: Some(i),
                    size: Some(blob.size),
                    created: e.created,
                },
                // Another stage's layer: not in this image, so not here.
                None => continue,
            },
        };
        let created = source_date_epoch.unwrap_or(entry.created);
        entries.insert(key.to_string(), InlineEntry { created, ..entry });
    }
    let count = entries.len();
    let value = serde_json::to_value(InlineCache { entries })
        .map_err(|e| BuildError::Io(format!("inline cache: {e}")))?;
    result
        .image
        .config
        .extra
        .insert(INLINE_CACHE_FIELD.to_string(), value);
    result.manifest = result.image.write(store)?;
    Ok(count)
}

/// The entries of an image's inline cache, its blobs being `manifest`'s
/// layers as `source` serves them. An image without one, or with one that
/// does not add up, is refused whole.
pub(super) fn read_entries(
    source: &dyn ImageSource,
    manifest: &Manifest,
) -> Result<BTreeMap<Digest, ImportedEntry>, BuildError> {
    let bad = |msg: String| BuildError::Io(msg);
    let bytes = super::cache::read_config_blob(source, manifest, "image config")?;
    let config: kiln_image::ImageConfig = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("its image config is corrupt: {e}")))?;
    let Some(field) = config.extra.get(INLINE_CACHE_FIELD) else {
        return Err(bad(
            "it holds no kiln cache (an image built without --cache-to type=inline)".into(),
        ));
    };
    let cache = InlineCache::deserialize(field)
        .map_err(|e| bad(format!("its inline cache is corrupt: {e}")))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(bad(format!(
            "its inline cache is corrupt: {} layers but {} diff IDs",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let mut entries = BTreeMap::new();
    for (key, e) in cache.entries {
        let corrupt = |why: &str| bad(format!("its inline cache is corrupt: entry {key}: {why}"));
        let digest: Digest = key.parse().map_err(|_| corrupt("not a digest"))?;
        let diff_id = match e.layer {
            Some(i) => Some((
                i,
                diff_ids
                    .get(i)
                    .ok_or_else(|| corrupt("its layer index is past the layers"))?
                    .clone(),
            )),
            None => None,
        };
        let entry = super::cache::imported_entry(manifest, diff_id, e.size, e.created)
            .map_err(|why| corrupt(&why))?;
        entries.insert(digest, entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::export::cache::MAX_CONFIG;
    use kiln_image::transport::{self, RawManifest};
    use kiln_image::{Descriptor, media};

    /// An image held in memory: its manifest, config and layers.
    struct MemImage {
        manifest: Manifest,
        blobs: BTreeMap<Digest, Vec<u8>>,
    }

    impl ImageSource for MemImage {
        fn top(&self) -> transport::Result<RawManifest> {
            let bytes = serde_json::to_vec(&self.manifest).unwrap();
            Ok(RawManifest::new(media::OCI_MANIFEST, bytes))
        }
        fn manifest(&self, d: &Digest) -> transport::Result<RawManifest> {
            Err(transport::TransportError::Invalid(format!("no {d}")))
        }
        fn blob(&self, desc: &Descriptor) -> transport::Result<Box<dyn Read + Send + '_>> {
            let b = self.blobs.get(&desc.digest).cloned().unwrap_or_default();
            Ok(Box::new(std::io::Cursor::new(b)))
        }
    }

    /// A one-layer (plain) image whose config's inline field is `field`.
    fn image(field: Option<serde_json::Value>) -> MemImage {
        let layer = b"layer bytes".to_vec();
        let diff_id = Digest::sha256_of(&layer);
        let mut config = kiln_image::ImageConfig::scratch(&kiln_image::Platform::host());
        config.rootfs.diff_ids.push(diff_id.clone());
        if let Some(f) = field {
            config.extra.insert(INLINE_CACHE_FIELD.into(), f);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let config_desc = Descriptor::new(
            media::OCI_CONFIG,
            Digest::sha256_of(&config),
            config.len() as u64,
        );
        let layer_desc = Descriptor::new(media::OCI_LAYER, diff_id.clone(), layer.len() as u64);
        let manifest = Manifest::new(
            kiln_image::media::Format::Oci,
            config_desc.clone(),
            vec![layer_desc],
        );
        let mut blobs = BTreeMap::new();
        blobs.insert(config_desc.digest, config);
        blobs.insert(diff_id, layer);
        MemImage { manifest, blobs }
    }

    fn key(n: &str) -> String {
        Digest::sha256_of(n.as_bytes()).to_string()
    }

    #[test]
    fn an_inline_cache_reads_back_with_the_images_layers() {
        let field = serde_json::json!({"entries": {
            key("made"): {"layer": 0, "size": 11, "created": 5},
            key("empty"): {"created": 6},
        }});
        let src = image(Some(field));
        let entries = read_entries(&src, &src.manifest).unwrap();
        let made = &entries[&Digest::sha256_of(b"made")];
        let diff_id = Digest::sha256_of(b"layer bytes");
        assert_eq!(made.entry.layer.as_ref().unwrap().1, diff_id);
        assert_eq!(made.entry.created, 5);
        assert_eq!(made.remote.as_ref().unwrap(), &src.manifest.layers[0]);
        let empty = &entries[&Digest::sha256_of(b"empty")];
        assert!(empty.entry.layer.is_none() && empty.remote.is_none());
    }

    #[test]
    fn an_image_without_or_with_a_bad_inline_cache_is_refused_whole() {
        let cases = [
            (None, "holds no kiln cache"),
            (Some(serde_json::json!("text")), "inline cache is corrupt"),
            (
                Some(
                    serde_json::json!({"entries": {key("k"): {"layer": 1, "size": 1, "created": 0}}}),
                ),
                "past the layers",
            ),
            (
                Some(serde_json::json!({"entries": {"sha256:zz": {"created": 0}}})),
                "not a digest",
            ),
        ];
        for (field, why) in cases {
            let src = image(field);
            let err = read_entries(&src, &src.manifest).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_config_that_is_not_what_the_manifest_says_is_refused() {
        let mut src = image(None);
        let d = src.manifest.config.digest.clone();
        src.blobs.get_mut(&d).unwrap()[0] ^= 1;
        let err = read_entries(&src, &src.manifest).unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");
        src.manifest.config.size = MAX_CONFIG + 1;
        let err = read_entries(&src, &src.manifest).unwrap_err().to_string();
        assert!(err.contains("more than kiln reads"), "{err}");
    }
}
