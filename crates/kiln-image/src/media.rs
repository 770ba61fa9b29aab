//! Media types of manifests, indexes, configs and layers, OCI and Docker.
//!
//! kiln reads both families and writes OCI unless Docker format is asked for.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The two families of media types an image can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Oci,
    Docker,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Format {
    pub fn manifest(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn index(self) -> &'static str {
        match self {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    pub fn config(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }

    /// The layer media type for a compression. Docker has no type for an
    /// uncompressed layer that tools agree on, so it falls back to OCI's.
    pub fn layer(self, c: Compression) -> &'static str {
        match (self, c) {
            (Format::Oci, Compression::None) | (Format::Docker, Compression::None) => OCI_LAYER,
            (Format::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
            (Format::Oci, Compression::Zstd) => OCI_LAYER_ZSTD,
            (Format::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
            (Format::Docker, Compression::Zstd) => DOCKER_LAYER_ZSTD,
        }
    }
}

pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

pub fn is_schema1(media_type: &str) -> bool {
    matches!(media_type, DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
}

/// The compression of a layer, judged by its media type. `None` for a type
/// that is not a layer kiln knows.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        OCI_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Some(Compression::None)
        }
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | DOCKER_LAYER_FOREIGN
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Some(Compression::Gzip),
        OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => Some(Compression::Zstd),
        _ => None,
    }
}
