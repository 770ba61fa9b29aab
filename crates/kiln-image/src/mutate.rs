//! Pure image edits: an [`Image`] is a config plus its layer descriptors;
//! every edit returns a new value, and [`Image::write`] stores the result.
//! `kiln import --change`, `kiln build` and the crane-like commands all
//! edit images through here.

use std::collections::BTreeMap;

use crate::config::{History, ImageConfig};
use crate::manifest::{Descriptor, Manifest};
use crate::media::{self, Format};
use crate::store::Store;
use crate::transport::{RawManifest, Result, TransportError};
use crate::{AnyManifest, Digest};

/// An image held as values: what a manifest and its config say.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub format: Format,
}

/// A layer to append: the stored blob and its uncompressed digest.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub blob: Descriptor,
    pub diff_id: Digest,
}

impl Image {
    /// An empty image for `platform`, as `FROM scratch` starts.
    pub fn scratch(platform: &crate::Platform) -> Image {
        Image {
            config: ImageConfig::scratch(platform),
            layers: Vec::new(),
            format: Format::Oci,
        }
    }

    /// Loads a stored image by name (see [`Store::resolve`]); an index is
    /// resolved to the manifest for `platform`.
    pub fn load(
        store: &Store,
        name: &str,
        platform: &crate::Platform,
    ) -> Result<(Image, RawManifest)> {
        let desc = store.resolve(name)?;
        Self::load_manifest(store, &desc.digest, platform)
    }

    pub fn load_manifest(
        store: &Store,
        digest: &Digest,
        platform: &crate::Platform,
    ) -> Result<(Image, RawManifest)> {
        let bytes = store.read_blob(digest)?;
        match AnyManifest::parse(None, &bytes)? {
            AnyManifest::Index(index) => {
                let d = index.select(platform).ok_or_else(|| {
                    TransportError::Invalid(format!(
                        "{digest} has no manifest for {platform} (it has {})",
                        crate::manifest::platforms_of(&index)
                    ))
                })?;
                Self::load_manifest(store, &d.digest, platform)
            }
            AnyManifest::Manifest(m) => {
                let config: ImageConfig = store.get_json(&m.config.digest)?;
                let raw = RawManifest {
                    media_type: m
                        .media_type
                        .clone()
                        .unwrap_or_else(|| media::OCI_MANIFEST.into()),
                    digest: digest.clone(),
                    bytes,
                };
                let format = m.format();
                Ok((
                    Image {
                        config,
                        layers: m.layers,
                        format,
                    },
                    raw,
                ))
            }
        }
    }

    /// Appends a layer with its history entry.
    pub fn with_layer(mut self, layer: NewLayer, history: History) -> Image {
        let mut blob = layer.blob;
        blob.media_type = match (self.format, media::layer_compression(&blob.media_type)) {
            (f, Some(c)) => f.layer(c).to_string(),
            (_, None) => blob.media_type,
        };
        self.config.rootfs.diff_ids.push(layer.diff_id);
        self.layers.push(blob);
        self.config.history.push(History {
            empty_layer: false,
            ..history
        });
        self
    }

    /// Records a step that changed only the config.
    pub fn with_empty_history(mut self, history: History) -> Image {
        self.config.history.push(History {
            empty_layer: true,
            ..history
        });
        self
    }

    /// Sets `created` (and so the image ID changes with it).
    pub fn created_at(mut self, rfc3339: String) -> Image {
        self.config.created = Some(rfc3339);
        self
    }

    /// Writes config and manifest into the store; returns the manifest.
    pub fn write(&self, store: &Store) -> Result<RawManifest> {
        let (config, raw) = self.encode(&BTreeMap::new())?;
        store.put_blob(&config)?;
        store.put_blob(&raw.bytes)?;
        Ok(raw)
    }

    /// The config blob and the manifest (with `annotations`) that say this
    /// image, as bytes, written nowhere yet.
    pub fn encode(&self, annotations: &BTreeMap<String, String>) -> Result<(Vec<u8>, RawManifest)> {
        let (config, digest) = crate::canonical::to_vec_with_digest(&self.config)
            .map_err(|e| TransportError::Invalid(format!("config does not serialize: {e}")))?;
        let config_desc = Descriptor::new(self.format.config(), digest, config.len() as u64);
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if let Some(c) = media::layer_compression(&l.media_type) {
                    l.media_type = self.format.layer(c).to_string();
                }
                l
            })
            .collect();
        let mut manifest = Manifest::new(self.format, config_desc, layers);
        manifest.annotations = annotations.clone();
        let bytes = crate::canonical::to_vec(&manifest)
            .map_err(|e| TransportError::Invalid(format!("manifest does not serialize: {e}")))?;
        Ok((config, RawManifest::new(self.format.manifest(), bytes)))
    }

    /// The image ID Docker shows: the config's digest.
    pub fn id(&self) -> Digest {
        crate::canonical::to_vec_with_digest(&self.config)
            .map(|(_, d)| d)
            .expect("config serializes")
    }
}
