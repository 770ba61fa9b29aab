//! `--build-context NAME=VALUE`: what a named context is, and the image
//! it stands for when FROM or `COPY --from` names it.
//!
//! - `PATH`: a local directory (read like the main context);
//! - `docker-image://REF`: an image in the store;
//! - `oci-layout://DIR[:TAG][@sha256:…]`: an image in an OCI layout,
//!   copied into the store (only the blobs it lacks) through kiln-image's
//!   layout source, then read from there like any base image.

use std::path::{Path, PathBuf};

use kiln_image::layout::LayoutSource;
use kiln_image::store_io::StoreSink;
use kiln_image::transport::{self, CopyOptions};
use kiln_image::{AnyManifest, Descriptor, Digest, Image, Platform, Store, media};

use crate::BuildError;

/// What a `--build-context` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (`NAME=PATH`).
    Dir(PathBuf),
    /// An image in the store (`NAME=docker-image://REF`).
    Image(String),
    /// An image in an OCI layout (`NAME=oci-layout://DIR[:TAG][@DIGEST]`).
    Layout {
        dir: PathBuf,
        tag: Option<String>,
        digest: Option<Digest>,
    },
}

impl NamedContext {
    pub fn parse(value: &str) -> Result<NamedContext, BuildError> {
        if let Some(r) = value.strip_prefix("docker-image://") {
            return Ok(NamedContext::Image(r.to_string()));
        }
        let Some(rest) = value.strip_prefix("oci-layout://") else {
            return Ok(NamedContext::Dir(PathBuf::from(value)));
        };
        let (rest, digest) = match rest.rsplit_once('@') {
            Some((r, d)) => {
                let d: Digest = d.parse().map_err(|e| {
                    BuildError::Usage(format!("--build-context {value:?}: bad digest: {e}"))
                })?;
                (r, Some(d))
            }
            None => (rest, None),
        };
        // The tag is what follows the last ':' of the last path component.
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.is_empty() && !t.contains('/') => (d, Some(t.to_string())),
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(BuildError::Usage(format!(
                "--build-context {value:?}: expected oci-layout://DIR[:TAG][@sha256:…]"
            )));
        }
        Ok(NamedContext::Layout {
            dir: PathBuf::from(dir),
            tag,
            digest,
        })
    }

    /// The image this context names for `platform`; `None` for a
    /// directory.
    pub fn image(
        &self,
        store: &Store,
        opts: &crate::BuildOptions,
        platform: &Platform,
    ) -> Result<Option<Image>, BuildError> {
        match self {
            NamedContext::Dir(_) => Ok(None),
            NamedContext::Image(r) => {
                crate::base::load_image(store, opts, r, platform, opts.platform_requested).map(Some)
            }
            NamedContext::Layout { dir, tag, digest } => {
                load_layout(store, dir, tag.as_deref(), digest.as_ref(), platform).map(Some)
            }
        }
    }
}

fn load_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    digest: Option<&Digest>,
    platform: &Platform,
) -> Result<Image, BuildError> {
    let err = |m: String| BuildError::Instruction(format!("OCI layout {}: {m}", dir.display()));
    let src = match digest {
        None => LayoutSource::open(dir, tag).map_err(|e| err(e.to_string()))?,
        Some(d) => {
            let listed = LayoutSource::entries(dir)
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .map(|(desc, _)| desc)
                .find(|desc| &desc.digest == d);
            let desc = match listed {
                Some(desc) => desc,
                // A digest below the index (one platform's manifest): its
                // media type is read from the document itself.
                None => {
                    let p = dir.join("blobs").join(d.algorithm().as_str()).join(d.hex());
                    let bytes = std::fs::read(&p).map_err(|e| err(format!("{d}: {e}")))?;
                    let media_type = match AnyManifest::parse(None, &bytes) {
                        Ok(AnyManifest::Index(i)) => {
                            i.media_type.unwrap_or_else(|| media::OCI_INDEX.into())
                        }
                        Ok(AnyManifest::Manifest(m)) => {
                            m.media_type.unwrap_or_else(|| media::OCI_MANIFEST.into())
                        }
                        Err(e) => return Err(err(format!("{d}: {e}"))),
                    };
                    Descriptor::new(media_type, d.clone(), bytes.len() as u64)
                }
            };
            LayoutSource::from_descriptor(dir, desc)
        }
    };
    let opts = CopyOptions {
        platform: Some(platform.clone()),
        ..CopyOptions::default()
    };
    let raw = transport::copy(&src, &StoreSink::new(store, None), &opts)
        .map_err(|e| err(e.to_string()))?;
    Image::load_manifest(store, &raw.digest, platform)
        .map(|(img, _)| img)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(
            NamedContext::parse("./dir").unwrap(),
            NamedContext::Dir("./dir".into())
        );
        assert_eq!(
            NamedContext::parse("docker-image://alpine:3").unwrap(),
            NamedContext::Image("alpine:3".into())
        );
        assert_eq!(
            NamedContext::parse("oci-layout:///tmp/l:v1").unwrap(),
            NamedContext::Layout {
                dir: "/tmp/l".into(),
                tag: Some("v1".into()),
                digest: None
            }
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            NamedContext::parse(&format!("oci-layout://rel/l@{d}")).unwrap(),
            NamedContext::Layout {
                dir: "rel/l".into(),
                tag: None,
                digest: Some(d.parse().unwrap())
            }
        );
        assert!(NamedContext::parse("oci-layout://x@sha256:zz").is_err());
    }
}
