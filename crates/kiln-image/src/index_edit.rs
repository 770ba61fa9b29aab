//! Indexes (manifest lists) as values, edited as podman's `manifest` verbs
//! do: each edit takes an [`Index`] and returns a new one; [`encode`]
//! turns it into the bytes to store or push. `kiln manifest` and `kiln
//! build --platform a,b` make their indexes here.
//!
//! An entry is one image's manifest descriptor with the platform it is
//! for ([`entry`], from the image's config). There is at most one entry
//! per digest: adding an image already listed replaces its entry.
//!
//! Example: `crates/kiln-image/examples/index.rs`
//! (`cargo run -p kiln-image --example index`).

use std::collections::BTreeMap;

use crate::config::ImageConfig;
use crate::manifest::{Descriptor, Index, Platform};
use crate::media::Format;
use crate::transport::{RawManifest, Result, TransportError};
use crate::{AnyManifest, Digest};

/// An empty index (OCI media types).
pub fn empty() -> Index {
    Index::new(Format::Oci, Vec::new())
}

/// The index entry of the image whose manifest is `manifest` and config
/// `config`: its descriptor, with the config's platform.
pub fn entry(manifest: &RawManifest, config: &ImageConfig) -> Descriptor {
    let mut d = manifest.descriptor();
    d.platform = Some(config.platform());
    d
}

/// `index` with `entry` added last, or in place of the entry with the
/// same digest.
pub fn add(mut index: Index, entry: Descriptor) -> Index {
    match index
        .manifests
        .iter_mut()
        .find(|d| d.digest == entry.digest)
    {
        Some(d) => *d = entry,
        None => index.manifests.push(entry),
    }
    index
}

/// `index` without the entry `digest`; an error naming what it has when
/// there is no such entry.
pub fn remove(mut index: Index, digest: &Digest) -> Result<Index> {
    let before = index.manifests.len();
    index.manifests.retain(|d| &d.digest != digest);
    if index.manifests.len() == before {
        return Err(not_listed(&index, digest));
    }
    Ok(index)
}

/// What [`annotate`] changes on one entry.
#[derive(Debug, Clone, Default)]
pub struct EntryEdit {
    /// Replaces the entry's platform (`os`, `architecture`, `variant`).
    pub platform: Option<Platform>,
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// `index` with the entry `digest` edited.
pub fn annotate(mut index: Index, digest: &Digest, edit: &EntryEdit) -> Result<Index> {
    let Some(d) = index.manifests.iter_mut().find(|d| &d.digest == digest) else {
        return Err(not_listed(&index, digest));
    };
    if let Some(p) = &edit.platform {
        d.platform = Some(p.clone());
    }
    for k in &edit.remove {
        d.annotations.remove(k);
    }
    d.annotations.extend(edit.set.clone());
    Ok(index)
}

fn not_listed(index: &Index, digest: &Digest) -> TransportError {
    let listed: Vec<String> = index
        .manifests
        .iter()
        .map(|d| match &d.platform {
            Some(p) => format!("{} ({p})", d.digest),
            None => d.digest.to_string(),
        })
        .collect();
    TransportError::Invalid(format!(
        "{digest} is not in the index; it lists {}",
        if listed.is_empty() {
            "nothing".to_string()
        } else {
            listed.join(", ")
        }
    ))
}

/// The index as the manifest to store or push.
pub fn encode(index: &Index) -> Result<RawManifest> {
    let bytes = crate::canonical::to_vec(index)
        .map_err(|e| TransportError::Invalid(format!("index does not serialize: {e}")))?;
    let media_type = index
        .media_type
        .clone()
        .unwrap_or_else(|| Format::Oci.index().to_string());
    Ok(RawManifest::new(media_type, bytes))
}

/// Reads `raw` as an index; an image manifest is an error naming it.
pub fn parse(raw: &RawManifest) -> Result<Index> {
    match raw.parse()? {
        AnyManifest::Index(i) => Ok(i),
        AnyManifest::Manifest(_) => Err(TransportError::Invalid(format!(
            "{} is an image, not an index (manifest list)",
            raw.digest
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(n: u8, arch: &str) -> Descriptor {
        let mut d = Descriptor::new(
            Format::Oci.manifest(),
            Digest::sha256_of(&[n]),
            u64::from(n),
        );
        d.platform = Some(Platform::parse(&format!("linux/{arch}")).unwrap());
        d
    }

    #[test]
    fn add_replace_annotate_remove() {
        let i = add(add(empty(), desc(1, "amd64")), desc(2, "arm64"));
        assert_eq!(i.manifests.len(), 2);
        // The same image again replaces its entry.
        let i = add(i, desc(1, "amd64"));
        assert_eq!(i.manifests.len(), 2);
        let edit = EntryEdit {
            platform: Some(Platform::parse("linux/arm/v7").unwrap()),
            set: [("k".to_string(), "v".to_string())].into(),
            remove: Vec::new(),
        };
        let i = annotate(i, &Digest::sha256_of(&[2]), &edit).unwrap();
        assert_eq!(i.manifests[1].annotations["k"], "v");
        assert_eq!(
            i.manifests[1].platform.as_ref().unwrap().to_string(),
            "linux/arm/v7"
        );
        let i = remove(i, &Digest::sha256_of(&[1])).unwrap();
        assert_eq!(i.manifests.len(), 1);
        let e = remove(i, &Digest::sha256_of(&[9])).unwrap_err().to_string();
        assert!(e.contains("linux/arm/v7"), "{e}");
        let raw = encode(&empty()).unwrap();
        assert!(parse(&raw).unwrap().manifests.is_empty());
    }
}
