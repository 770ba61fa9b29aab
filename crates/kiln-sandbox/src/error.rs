//! Typed errors of the sandbox. Every variant names the syscall or file that
//! failed, so a user sees "mount overlay on /tmp/x: Invalid argument" and not
//! a bare errno. Errors raised inside the forked children cannot travel as
//! values; they are rendered to text and come back as [`Error::Child`].

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while preparing or running a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syscall on a path failed.
    #[error("{syscall} {}: {cause}", path.display())]
    Path {
        syscall: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A syscall that has no path failed.
    #[error("{syscall}: {cause}")]
    Sys {
        syscall: &'static str,
        cause: std::io::Error,
    },
    /// The run description is unusable (empty argv, relative target, NUL byte...).
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// `user` could not be resolved in the rootfs's /etc/passwd and /etc/group.
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    /// The requested isolation cannot work on this host.
    #[error("isolation {mode} unavailable: {reason}")]
    Unsupported { mode: &'static str, reason: String },
    /// The private network (its namespace or slirp4netns) could not be set up.
    #[error("network: {0}")]
    Network(String),
    /// Setting up the user namespace (newuidmap, re-exec) failed.
    #[error("user namespace: {0}")]
    Userns(String),
    /// The command could not be executed inside the sandbox.
    #[error("exec {argv0:?} in the sandbox: {cause}")]
    Exec {
        argv0: String,
        cause: std::io::Error,
    },
    /// A `--ulimit` that is malformed or cannot be set (the text says which).
    #[error("{0}")]
    Ulimit(String),
    /// The sandbox's own setup failed inside the child; the text names the step.
    #[error("sandbox setup: {0}")]
    Child(String),
}

impl Error {
    pub(crate) fn path(
        syscall: &'static str,
        path: impl Into<PathBuf>,
        e: impl Into<std::io::Error>,
    ) -> Self {
        Error::Path {
            syscall,
            path: path.into(),
            cause: e.into(),
        }
    }

    pub(crate) fn sys(syscall: &'static str, e: impl Into<std::io::Error>) -> Self {
        Error::Sys {
            syscall,
            cause: e.into(),
        }
    }
}

/// Shorthand: `.map_err(at("mount", &path))`.
pub(crate) fn at<E: Into<std::io::Error>>(
    syscall: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(E) -> Error {
    let path = path.into();
    move |e| Error::path(syscall, path, e)
}
