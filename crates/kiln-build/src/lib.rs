//! The build engine: Dockerfile stages, resolved by `kiln-dockerfile`, are
//! solved into an image. Metadata instructions edit the config; COPY, ADD
//! and RUN make layers, each addressed by a cache key over its definition
//! and the content it reads (see [`key`]), so a change re-runs only the
//! steps that read it. Stages that do not depend on each other build at
//! the same time.
//!
//! It does not parse Dockerfiles (`kiln-dockerfile`), isolate processes
//! (`kiln-sandbox`), diff filesystems (`kiln-snapshot`) or talk to
//! registries; it ties them together and writes the result to the store.

pub mod cache;
pub mod context;
pub mod copy;
pub mod exec;
pub mod fs;
pub mod key;
pub mod named;
pub mod platform;
pub mod progress;
pub mod remote;
pub mod solver;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use named::NamedContext;
pub use progress::{Progress, ProgressMode};
pub use solver::{BuildOptions, BuildResult, FetchBase, build};
pub use source::ContextKind;

/// Where a `--secret` comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Parses `id=ID,src=PATH` / `id=ID,env=VAR` (type=file|env too).
    pub fn parse(spec: &str) -> Result<(String, SecretSource), BuildError> {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(PathBuf::from(v)),
                "env" => env = Some(v.to_string()),
                "type" => {}
                _ => {
                    return Err(BuildError::Usage(format!(
                        "--secret {spec:?}: unknown key {k:?}"
                    )));
                }
            }
        }
        let id = id.or_else(|| env.clone()).or_else(|| {
            src.as_ref()
                .and_then(|s| s.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        });
        let id =
            id.ok_or_else(|| BuildError::Usage(format!("--secret {spec:?}: id is required")))?;
        let source = match (src, env) {
            (Some(p), _) => SecretSource::File(p),
            (None, Some(e)) => SecretSource::Env(e),
            (None, None) => SecretSource::Env(id.clone()),
        };
        Ok((id, source))
    }

    pub fn read(&self) -> Result<Vec<u8>, BuildError> {
        match self {
            SecretSource::File(p) => std::fs::read(p)
                .map_err(|e| BuildError::Usage(format!("secret file {}: {e}", p.display()))),
            SecretSource::Env(v) => std::env::var(v).map(String::into_bytes).map_err(|_| {
                BuildError::Usage(format!("secret environment variable {v} is not set"))
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Usage(String),
    #[error("build context: {0}")]
    Context(String),
    #[error("{0}")]
    Instruction(String),
    #[error("process exited with status {code}")]
    RunFailed { code: i32 },
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Dockerfile(#[from] kiln_dockerfile::Diagnostics),
    #[error(transparent)]
    Store(#[from] kiln_image::StoreError),
    #[error(transparent)]
    Transport(#[from] kiln_image::transport::TransportError),
    #[error(transparent)]
    Layer(#[from] kiln_image::layer::LayerError),
    #[error(transparent)]
    Snapshot(#[from] kiln_snapshot::Error),
    #[error("{file}:{line}: {instruction}\n{source}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        #[source]
        source: Box<BuildError>,
    },
}

/// Build args and other string maps.
pub type Vars = BTreeMap<String, String>;
