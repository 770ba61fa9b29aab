//! The resolved, fully expanded instruction types the build engine
//! consumes. Producing them from the parsed form is `convert`'s job; the
//! stage model around them is in `stage`.

use serde::Serialize;

use crate::diag::Span;
use crate::mount::Mount;
use crate::parse::CommandForm;

/// A `key=value` pair after expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Var {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

impl Var {
    /// Builds a pair.
    pub fn new(k: &str, v: &str) -> Self {
        Var {
            key: k.to_string(),
            value: v.to_string(),
        }
    }
}

/// What a `--from` (COPY) or `from=` (RUN --mount) names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromRef {
    /// A stage of this Dockerfile, by index (name if it has one).
    Stage {
        /// Stage index in the file (0-based).
        index: usize,
        /// Stage name, lower-case.
        name: Option<String>,
    },
    /// A named build context supplied by the caller.
    Context {
        /// Context name.
        name: String,
    },
    /// An image reference.
    Image {
        /// The reference as written, expanded.
        reference: String,
    },
}

/// A mount with its `from` resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMount {
    /// Mount options with defaults applied.
    #[serde(flatten)]
    pub mount: Mount,
    /// What `from=` resolved to (bind and cache mounts).
    pub from_ref: Option<FromRef>,
}

/// RUN network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The default sandbox network.
    Default,
    /// No network.
    None,
    /// The host network (needs an entitlement).
    Host,
}

/// RUN security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Default sandbox.
    Sandbox,
    /// Privileged (needs an entitlement).
    Insecure,
}

/// A file made from a heredoc.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeredocFile {
    /// Delimiter word, also the file name.
    pub name: String,
    /// Content (expanded for COPY/ADD unless the delimiter was quoted).
    pub content: String,
    /// Whether the delimiter allowed expansion.
    pub expand: bool,
}

/// A script file BuildKit mounts for `RUN <<EOF` whose body starts with
/// `#!`: the body is written to `path` (mode 0755) and executed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptFile {
    /// Where it is mounted (`/dev/pipes/<name>`).
    pub path: String,
    /// Content.
    pub content: String,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The command as written (shell text is not expanded: the shell does).
    pub command: CommandForm,
    /// Heredocs on the line.
    pub heredocs: Vec<HeredocFile>,
    /// Final argv, shell prepended for shell form.
    pub argv: Vec<String>,
    /// Script file to mount for a `#!` heredoc.
    pub script_file: Option<ScriptFile>,
    /// Mounts.
    pub mounts: Vec<RunMount>,
    /// Network mode.
    pub network: Network,
    /// Security mode.
    pub security: Security,
    /// Extra environment for the process beyond the image ENV: ARGs in
    /// scope (not shadowed by ENV) and supplied proxy args.
    pub env: Vec<Var>,
    /// ARGs recorded in history (`|N K=V ...`); proxies excluded unless
    /// declared.
    pub history_args: Vec<Var>,
    /// History `created_by`, as BuildKit writes it.
    pub created_by: String,
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A path (may contain wildcards) or, for ADD, a URL/git reference.
    Path {
        /// Expanded path.
        path: String,
    },
    /// Inline file from a heredoc.
    Heredoc(HeredocFile),
}

/// `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Chmod {
    /// Octal mode, e.g. 0755.
    Octal(u32),
    /// Symbolic mode, e.g. `u+x,g-w`.
    Symbolic(String),
}

/// COPY.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Copy {
    /// Sources.
    pub sources: Vec<Source>,
    /// Destination (relative to WORKDIR when not absolute).
    pub dest: String,
    /// `--from`.
    pub from: Option<FromRef>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// ADD.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Add {
    /// Sources (paths, URLs, git references, heredocs).
    pub sources: Vec<Source>,
    /// Destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--checksum` digest.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`; `None` means the default (unpack local archives only).
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Healthcheck {
    /// Image-config `Test`: `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    /// `--interval` in nanoseconds.
    pub interval_ns: Option<u64>,
    /// `--timeout` in nanoseconds.
    pub timeout_ns: Option<u64>,
    /// `--start-period` in nanoseconds.
    pub start_period_ns: Option<u64>,
    /// `--start-interval` in nanoseconds.
    pub start_interval_ns: Option<u64>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// An ARG as declared, with the value it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArgValue {
    /// Name.
    pub key: String,
    /// Value in effect (build arg, default, global or automatic).
    pub value: Option<String>,
}

/// A resolved instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "instruction", rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Instr {
    Run(Run),
    Copy(Copy),
    Add(Add),
    Env {
        vars: Vec<Var>,
    },
    Label {
        labels: Vec<Var>,
    },
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    User {
        user: String,
    },
    /// `path` as written (expanded); `resolved` made absolute against the
    /// previous WORKDIR.
    Workdir {
        path: String,
        resolved: String,
    },
    Cmd {
        command: CommandForm,
        argv: Vec<String>,
    },
    Entrypoint {
        command: CommandForm,
        argv: Vec<String>,
    },
    Shell {
        shell: Vec<String>,
    },
    Healthcheck(Healthcheck),
    Stopsignal {
        signal: String,
    },
    /// Trigger text stored in the image config, not expanded.
    Onbuild {
        expression: String,
    },
    Arg {
        args: Vec<ArgValue>,
    },
    Maintainer {
        name: String,
    },
}

/// A resolved instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    /// The instruction.
    #[serde(flatten)]
    pub instr: Instr,
    /// The logical source line (continuations joined).
    pub original: String,
    /// Span in the Dockerfile (for triggers: the FROM that ran them).
    pub span: Span,
    /// 1-based line.
    pub line: usize,
    /// Injected from a base image's ONBUILD trigger.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_onbuild: bool,
}
