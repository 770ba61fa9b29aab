//! What a build is asked to do ([`BuildOptions`]) and what it gives back
//! ([`BuildResult`]): the seam between the CLI, which parses flags, and
//! the engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_dockerfile::instructions::Network;
use kiln_image::media::Compression;
use kiln_image::transport::RawManifest;
use kiln_image::{Digest, Image, Platform, Store};
use kiln_sandbox::Isolation;
use kiln_snapshot::Mode;

use crate::named::NamedContext;
use crate::source::ContextKind;
use crate::{SecretSource, Vars};

pub struct BuildOptions {
    /// The Dockerfile's name (for messages) and text.
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub context_dir: PathBuf,
    /// `.dockerignore` text, if the context has one.
    pub dockerignore: Option<String>,
    pub build_args: Vars,
    pub target: Option<String>,
    pub platform: Platform,
    pub secrets: BTreeMap<String, SecretSource>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub labels: Vars,
    pub isolation: Isolation,
    pub snapshotter: Mode,
    pub source_date_epoch: Option<i64>,
    /// Clamp file times in new layers to `source_date_epoch` too.
    pub rewrite_timestamp: bool,
    /// The compression the outputs will need: layers are compressed for
    /// them in the background as they are made (`None`: the image stays
    /// in the store, whose layers are plain tars either way).
    pub compression: Compression,
    /// `--build-context NAME=…`.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Where `context_dir` came from (see [`crate::source`]).
    pub context_kind: ContextKind,
    /// `--platform` was given: a base image for another platform is then an
    /// error, where the host's platform, assumed, only gets a warning.
    pub platform_requested: bool,
    /// `--add-host NAME:IP`: lines every RUN's `/etc/hosts` gets.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--shm-size`: the size of every RUN's `/dev/shm`, in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`: the resource limits of every RUN.
    pub ulimits: Vec<kiln_sandbox::Ulimit>,
    /// `--network`: the network of a RUN without its own `--network`.
    pub network: Network,
    /// `--allow`: what the Dockerfile may ask for beyond the sandbox.
    pub entitlements: crate::Entitlements,
    /// Brings a base image for a platform into the store when the store
    /// lacks it (or always, with `pull`): the CLI's registry client.
    pub fetch_base: Option<FetchBase>,
    pub pull: bool,
    /// `--cache-from`/`--cache-to`: the imported caches asked on a miss,
    /// and the record of every entry used, for the export.
    pub cache_session: Option<std::sync::Arc<crate::cache_session::CacheSession>>,
}

impl BuildOptions {
    /// What the frontend resolves the Dockerfile with: the build args,
    /// target, platforms and named contexts (base images' configs are
    /// added by the solver once it has loaded them).
    pub fn resolve_options(&self) -> kiln_dockerfile::ResolveOptions {
        kiln_dockerfile::ResolveOptions {
            build_args: self.build_args.clone(),
            target: self.target.clone(),
            build_platform: crate::platform::arg_platform(&Platform::host()),
            target_platform: crate::platform::arg_platform(&self.platform),
            named_contexts: self.named_contexts.keys().cloned().collect(),
            ..kiln_dockerfile::ResolveOptions::default()
        }
    }

    /// The Dockerfile, parsed and resolved without base images.
    pub fn resolve_alone(&self) -> Result<kiln_dockerfile::ResolvedBuild, crate::BuildError> {
        let df = kiln_dockerfile::parse(&self.dockerfile_name, &self.dockerfile)?;
        Ok(kiln_dockerfile::resolve(&df, &self.resolve_options())?)
    }
}

/// Fetches `reference` for a platform into the store, tagged with that
/// name (`Ok(None)`), or loads its manifest and config only, untagged,
/// its layers left remote (`Ok(Some(manifest digest))`). The solver does
/// not talk to registries; its caller's fetcher does.
pub type FetchBase =
    Box<dyn Fn(&Store, &str, &Platform) -> Result<Option<Digest>, String> + Send + Sync>;

pub struct BuildResult {
    pub image: Image,
    pub manifest: RawManifest,
    pub steps_run: usize,
    pub steps_cached: usize,
    pub warnings: Vec<String>,
    /// The image the target stage starts from (reference, manifest
    /// digest): what `org.opencontainers.image.base.*` annotations name.
    pub base: Option<(String, String)>,
}
