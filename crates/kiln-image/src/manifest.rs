//! Descriptors, manifests, indexes and platforms: the JSON documents that
//! tie an image's blobs together (OCI image spec and Docker schema 2).
//!
//! Maps are `BTreeMap`s so that serializing them is deterministic; unknown
//! fields are kept so that a manifest read and written again keeps its digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Digest;
use crate::media;

/// A pointer to content: its media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// The platform an image runs on, as in an index entry or `--platform`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformError(pub String);

impl Platform {
    /// The platform kiln runs on, in Go's names (`amd64`, `arm64`, ...).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(Into::into),
        }
    }

    /// Splits `os/arch[/variant]` into its parts as written: the grammar
    /// of a platform, for `--platform` here and for the Dockerfile
    /// frontend's build args (which keep what was written).
    pub fn split(s: &str) -> Result<(&str, &str, Option<&str>), PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        // A list (`linux/amd64,linux/arm64`) is several platforms, not one
        // with an architecture "amd64,linux".
        let part_ok = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if parts.len() < 2 || parts.len() > 3 || !parts.iter().all(part_ok) {
            return Err(PlatformError(s.into()));
        }
        Ok((parts[0], parts[1], parts.get(2).copied()))
    }

    /// Parses `os/arch[/variant]`, as `--platform` takes it, with Go's
    /// architecture names (`x86_64` is `amd64`) and arm64's variant `v8`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let (os, arch, variant) = Platform::split(s)?;
        let mut variant = variant.map(str::to_string);
        let architecture = match arch {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            a => a.to_string(),
        };
        if architecture == "arm64" && variant.is_none() {
            variant = Some("v8".into());
        }
        Ok(Platform {
            os: os.to_string(),
            architecture,
            os_version: None,
            os_features: Vec::new(),
            variant,
        })
    }

    /// Whether an index entry for `self` can serve a request for `want`.
    /// A missing variant on either side matches, as containerd's matcher does
    /// for the common cases.
    pub fn satisfies(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && match (&self.variant, &want.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The platforms of an index's entries, for error messages: `linux/amd64,
/// linux/arm64/v8` (or `none`).
pub fn platforms_of(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// An image manifest: one config and an ordered list of layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Manifest {
    pub fn new(format: media::Format, config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(format.manifest().to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Whether the manifest uses Docker schema-2 media types.
    pub fn format(&self) -> media::Format {
        match self.media_type.as_deref() {
            Some(media::DOCKER_MANIFEST) => media::Format::Docker,
            _ if self.config.media_type == media::DOCKER_CONFIG => media::Format::Docker,
            _ => media::Format::Oci,
        }
    }
}

/// An index (OCI) or manifest list (Docker): manifests per platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Index {
    pub fn new(format: media::Format, manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(format.index().to_string()),
            manifests,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The entry for `want`, skipping attestation manifests (which BuildKit
    /// marks with platform `unknown/unknown`).
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .filter(|d| media::is_manifest(&d.media_type))
            .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(want)))
    }
}

/// What the first bytes of a manifest-ish document say it is.
// One is parsed per image reference and matched on at once: boxing the
// larger variant would cost an allocation and buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AnyManifest {
    Manifest(Manifest),
    Index(Index),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "Docker schema 1 manifests are not supported (media type {0}); push the image again with a current client"
    )]
    Schema1(String),
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
    #[error("invalid manifest JSON: {0}")]
    Json(serde_json::Error),
}

impl From<serde_json::Error> for ManifestError {
    fn from(e: serde_json::Error) -> Self {
        ManifestError::Json(e)
    }
}

impl AnyManifest {
    /// Parses a manifest or index. `media_type` is what the transport said
    /// (a registry's Content-Type); the document's own `mediaType` wins when
    /// present, and the shape decides when neither says.
    pub fn parse(media_type: Option<&str>, bytes: &[u8]) -> Result<AnyManifest, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            schema_version: Option<u32>,
            manifests: Option<Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        let mt = probe
            .media_type
            .clone()
            .or_else(|| media_type.map(str::to_string));
        if probe.schema_version == Some(1) || mt.as_deref().is_some_and(media::is_schema1) {
            return Err(ManifestError::Schema1(
                mt.unwrap_or_else(|| media::DOCKER_SCHEMA1.into()),
            ));
        }
        match mt.as_deref() {
            Some(t) if media::is_index(t) => Ok(AnyManifest::Index(serde_json::from_slice(bytes)?)),
            Some(t) if media::is_manifest(t) => {
                Ok(AnyManifest::Manifest(serde_json::from_slice(bytes)?))
            }
            None | Some("application/json") | Some("") => {
                if probe.manifests.is_some() {
                    Ok(AnyManifest::Index(serde_json::from_slice(bytes)?))
                } else {
                    Ok(AnyManifest::Manifest(serde_json::from_slice(bytes)?))
                }
            }
            Some(t) => Err(ManifestError::Unsupported(t.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_match() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let arm = Platform::parse("linux/arm64").unwrap();
        assert_eq!(arm.variant.as_deref(), Some("v8"));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//").is_err());
        let entry = Platform::parse("linux/arm/v7").unwrap();
        assert!(entry.satisfies(&Platform::parse("linux/arm").unwrap()));
        assert!(!entry.satisfies(&Platform::parse("linux/arm/v6").unwrap()));
    }

    #[test]
    fn schema1_is_refused() {
        let doc = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = AnyManifest::parse(None, doc).unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    #[test]
    fn unknown_fields_survive() {
        let doc = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[],"x-extra":{"b":1,"a":2}}"#;
        let AnyManifest::Manifest(m) = AnyManifest::parse(None, doc.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.extra["x-extra"]["a"], 2);
        let again = crate::canonical::to_vec(&m).unwrap();
        assert!(
            String::from_utf8(again)
                .unwrap()
                .contains(r#""x-extra":{"a":2,"b":1}"#)
        );
    }
}
