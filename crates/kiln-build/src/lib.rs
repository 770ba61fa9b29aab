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

pub mod annotate;
pub mod base;
mod bind;
pub mod cache;
pub mod cache_mount;
pub mod cache_mount_transfer;
pub mod cache_session;
pub mod commit;
pub mod context;
pub mod copy;
mod copy_step;
pub mod declarative;
pub mod entitlements;
pub mod exec;
pub mod export;
pub mod fs;
pub mod git;
pub mod graph;
pub mod host_net;
pub mod inroot;
pub mod key;
pub mod lazy;
pub mod named;
pub mod options;
pub mod output;
pub mod plan;
pub mod platform;
mod precompress;
pub mod progress;
pub mod remote;
pub mod run_private;
pub mod sched;
pub mod solver;
pub mod source;
pub mod squash;
mod step_layer;
pub mod tty;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use entitlements::Entitlements;
pub use named::NamedContext;
pub use options::{BuildOptions, BuildResult, FetchBase};
pub use progress::{Progress, ProgressMode};
pub use solver::build;
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
    /// A RUN's process failed; `tail` is the end of its output.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    RunFailed {
        command: String,
        code: i32,
        tail: Vec<output::OutputLine>,
    },
    #[error("{0}")]
    Io(String),
    /// A file operation failed: `what` says which, `cause` why (in the
    /// message, so a step's report shows it; not also a `source`).
    #[error("{what}: {cause}")]
    File { what: String, cause: std::io::Error },
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
    /// A step failed: where in the Dockerfile, and why. Displayed as
    /// BuildKit does: the step, the end of its output, the Dockerfile
    /// lines around it, then the cause.
    #[error("{}", step_report(.0))]
    Step(Box<StepFailure>),
    /// A stage this one waits for failed (its own error is reported).
    #[error("stage {0} failed")]
    DependencyFailed(usize),
    /// Stopped because another stage failed.
    #[error("canceled: another step failed")]
    Canceled,
}

impl BuildError {
    /// For `map_err`: a file operation on `what` failed.
    pub fn file(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let what = what.into();
        move |cause| BuildError::File { what, cause }
    }
}

#[derive(Debug)]
pub struct StepFailure {
    pub file: String,
    pub line: usize,
    pub instruction: String,
    /// The step as the progress log names it (`[build 2/3] RUN make`).
    pub name: String,
    /// The Dockerfile lines around the instruction, numbered, the
    /// instruction's own lines marked `>>>`.
    pub excerpt: String,
    pub cause: BuildError,
}

fn step_report(f: &StepFailure) -> String {
    let mut s = format!(
        "{}:{}: {}\n------\n > {}:\n",
        f.file, f.line, f.instruction, f.name
    );
    if let BuildError::RunFailed { tail, .. } = &f.cause {
        for l in tail {
            s.push_str(&format!("{:.3} {}\n", l.at, l.text));
        }
    }
    s.push_str("------\n");
    if !f.excerpt.is_empty() {
        s.push_str(&format!(
            "--------------------\n{}--------------------\n",
            f.excerpt
        ));
    }
    s.push_str(&f.cause.to_string());
    s
}

/// The lines of `text` around the byte range `span` (one before, one
/// after), numbered, those of the span marked `>>>`; at most 12 lines of
/// the span itself.
pub fn excerpt(text: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line_of = |at: usize| {
        text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    };
    let first = line_of(start);
    // A span that ends with its newline ends on the line before.
    let last = line_of(end.saturating_sub(1).max(start)).max(first);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let from = first.saturating_sub(1);
    let to = (last + 1).min(lines.len().saturating_sub(1));
    for (i, l) in lines.iter().enumerate().take(to + 1).skip(from) {
        let marked = (first..=last).contains(&i);
        if marked && i >= first + 12 {
            if i == first + 12 {
                out.push_str("     | >>> ...\n");
            }
            continue;
        }
        let mark = if marked { ">>>" } else { "   " };
        out.push_str(&format!("{:>4} | {mark} {l}\n", i + 1));
    }
    out
}

/// Build args and other string maps.
pub type Vars = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_instruction_between_its_neighbours() {
        let df = "FROM a\nRUN one \\\n    two\nCMD x\nLABEL y=1\n";
        let start = df.find("RUN").unwrap();
        let end = df.find("CMD").unwrap();
        assert_eq!(
            excerpt(df, start..end),
            "   1 |     FROM a\n   2 | >>> RUN one \\\n   3 | >>>     two\n   4 |     CMD x\n"
        );
        // The first and last lines have one neighbour only.
        assert_eq!(excerpt("RUN x", 0..5), "   1 | >>> RUN x\n");
    }

    #[test]
    fn a_failed_run_reports_its_output_in_a_box() {
        let e = BuildError::Step(Box::new(StepFailure {
            file: "Dockerfile".into(),
            line: 2,
            instruction: "RUN false".into(),
            name: "[stage-0 2/2] RUN false".into(),
            excerpt: "   2 | >>> RUN false\n".into(),
            cause: BuildError::RunFailed {
                command: "/bin/sh -c false".into(),
                code: 1,
                tail: vec![output::OutputLine {
                    at: 0.25,
                    text: "oops".into(),
                }],
            },
        }));
        assert_eq!(
            e.to_string(),
            "Dockerfile:2: RUN false\n------\n > [stage-0 2/2] RUN false:\n0.250 oops\n------\n\
             --------------------\n   2 | >>> RUN false\n--------------------\n\
             process \"/bin/sh -c false\" did not complete successfully: exit code: 1"
        );
    }
}
