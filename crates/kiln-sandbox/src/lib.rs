//! Run one process inside a root filesystem, isolated by namespaces, rootless
//! by design. It knows nothing about images or layers: the caller hands it a
//! prepared [`Rootfs`] (a directory, or overlay lowers + upper + work dirs)
//! and gets the process's [`ExitStatus`] back; the overlay's upper dir then
//! holds the changes, for the differ (kiln-snapshot). Of kiln-image it uses
//! only the one lexical path cleaning (`kiln_image::clean_path`), so that
//! a mount target means what a layer's or a Dockerfile's path means.
//!
//! # Use
//! ```no_run
//! use kiln_sandbox::{Isolation, Rootfs, RunSpec, Sandbox, exit_code, userns};
//! # fn main() -> Result<(), kiln_sandbox::Error> {
//! // First thing in main, while single-threaded: an unprivileged kiln
//! // re-executes itself as root of a user namespace (subuid/subgid mapped).
//! userns::ensure_root_in_userns()?;
//! let sandbox = Sandbox::new(Isolation::Auto)?;
//! let mut spec = RunSpec::new(
//!     Rootfs::Overlay { lowers: vec!["/l2".into(), "/l1".into()], upper: "/u".into(), work: "/w".into() },
//!     ["sh", "-c", "apt-get install -y hello"],
//! );
//! spec.user = "app".into();
//! let status = sandbox.run(&spec)?;
//! std::process::exit(exit_code(&status));
//! # }
//! ```
//!
//! # What a run gets
//! - namespaces: mount, pid (our own init is PID 1: it reaps and relays
//!   signals), ipc, uts, and net: by default ([`Network::Private`]) the
//!   sandbox's private network namespace, which reaches the outside through
//!   `slirp4netns` but not the host's loopback ([`private_net`]); a fresh
//!   one with only `lo` for [`Network::None`]; the host's for
//!   [`Network::Host`]. A user namespace when the caller is unprivileged (prefer
//!   [`userns::ensure_root_in_userns`], which maps the subuid ranges; without
//!   it only the caller's own ID is mapped). `Isolation::Chroot` is the
//!   fallback where namespaces are refused (e.g. a default Kubernetes pod);
//!   `ensure_root_in_userns` then returns `UsernsState::Unavailable`.
//!   Asked for by name, `Rootless` or `Root` on a host that refuses them
//!   fails in [`Sandbox::new`], naming what was refused (tried for real,
//!   procfs mount included).
//! - chroot without a mount namespace (root in a default container): the
//!   rootfs must be a [`Rootfs::Dir`]; `/dev` (nodes by `mknod` where
//!   allowed), the `/etc` files and the [`MountSpec`]s are copied into it
//!   for the run and taken out after (caches written back), see the
//!   `copied` module; `CAP_SYS_CHROOT` is taken from the command (see
//!   [`caps::CAP_SYS_CHROOT`]). Not isolated: processes (no pid
//!   namespace: the command sees and, as root, may signal the container's
//!   processes), network ([`Sandbox::default_network`]), hostname; no
//!   `/proc` or `/sys`; binds are writable copies whose writes are dropped.
//! - traced, for a process with no privilege at all (`Isolation::Traced`,
//!   x86_64; what `Auto` picks where namespaces and chroot are both
//!   refused): the rootfs must be a [`Rootfs::Dir`], provisioned as for
//!   chroot without a mount namespace; the command runs as the caller,
//!   ptraced under a seccomp filter, its paths resolved inside the rootfs
//!   and uid 0 emulated (chown recorded in [`traced::OWNER_XATTR`] for the
//!   differ). Same gaps as chroot, and see [`traced`].
//! - filesystem: fresh /proc (Docker's masked/read-only paths), minimal /dev
//!   ([`dev`]), /sys read-only bind (best effort), and /etc/hosts,
//!   /etc/resolv.conf, /etc/hostname bind-mounted from files kept outside the
//!   rootfs. With an overlay rootfs their mount points come from a hidden
//!   bottom layer, so these three files and /proc, /dev, /sys never appear in
//!   the upper dir. With a `Dir` rootfs missing mount points are created in
//!   the dir (it is modified in place anyway).
//! - [`MountSpec`]s: read-only binds, read-write binds whose writes are
//!   discarded, persistent caches, tmpfs. A bind's source in a tree kiln
//!   does not trust is given as a root and a path resolved inside it when
//!   mounting ([`MountSpec::BindInRoot`]). Targets are resolved inside
//!   the rootfs (`openat2(RESOLVE_IN_ROOT)`) and mounted through the fd.
//! - process: argv, env (+ PATH, HOME, HOSTNAME defaults), working directory
//!   created if missing, umask 0022, user from the rootfs's /etc/passwd and
//!   /etc/group with supplementary groups, Docker's default capabilities
//!   ([`caps`]), no fds but 0, 1, 2 (inherited, so output streams straight
//!   through, or the caller's fds via [`Sandbox::run_with_io`]; stdin may be
//!   /dev/null instead), `no_new_privs` off unless
//!   asked (Docker's default; RUN steps may need setuid tools).
//! - exit: [`ExitStatus`] of the command; [`exit_code`] gives code or 128+N.
//!
//! # For the differ
//! Overlay is always mounted with `userxattr`, as root or rootless, so the
//! upper dir marks opaque directories with [`OPAQUE_XATTR`]
//! (`user.overlay.opaque` = `y`) and deleted files with whiteouts (character
//! device 0/0). Accept `trusted.overlay.opaque` too, for uppers made by other
//! tools. Mount-point directories created for user mounts stay in the upper
//! dir (empty directories); nothing is ever cleaned up by path after a run.
//!
//! # For the layer writer / store
//! Rootless, files in the lowers must be owned by IDs mapped in the user
//! namespace, i.e. extracted *after* [`userns::ensure_root_in_userns`] (as
//! root of the namespace), or they read as nobody and copy-up may fail.
//!
//! # Processes of one run
//! The caller forks a relay that unshares the namespaces; the relay forks
//! init (PID 1), which builds the filesystem, `pivot_root`s, closes every fd
//! and forks the command. Results come back through a shared memory page, so
//! no fd has to survive into the sandbox. Relay and init die with their
//! parent (`PR_SET_PDEATHSIG`); init's death kills the pid namespace; the
//! mount namespace, and every mount in it, goes with the last process. Cost:
//! ~4-15 ms per run (three forks, ~25 mount syscalls, one overlay mount),
//! plus ~15 ms once per [`Sandbox`] for the private network's slirp4netns.
//! Forking a multi-threaded caller is fine: the children only allocate and
//! make syscalls (glibc's fork keeps malloc usable), never take std's stdio
//! locks or tracing.
//!
//! # Tests
//! `cargo test -p kiln-sandbox` (plain `cargo test` builds the `sandbox_run`
//! example the integration tests drive). As root, every scenario also runs
//! as the unprivileged user `kilntest` (created, with subuid/subgid
//! 200000:65536). Needs `busybox-static`, `uidmap`, `slirp4netns` (with
//! `/dev/net/tun` at 0666 for kilntest), `iproute2`, `debootstrap` and the
//! Debian mirror for the apt test (cached in /var/tmp/kiln-test-debian; skip
//! it with `KILN_SKIP_DEBIAN=1`). `buildah`, if present, is timed for
//! comparison.
//!
//! # Not here
//! cgroups/resource limits, seccomp (but traced isolation's own filter),
//! image resolution, snapshots and diffs,
//! relaying between a [`pty::Pty`] and the caller's terminal.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod caps;
mod copied;
pub mod dev;
pub mod error;
pub mod info;
mod init;
mod mountapi;
pub mod mounts;
pub mod net;
pub mod private_net;
pub mod pty;
mod resolve;
mod spawn;
pub mod traced;
mod tree;
pub mod ulimit;
pub mod user;
pub mod userns;

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
pub use std::process::ExitStatus;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

pub use error::{Error, Result};
pub use mounts::ETC_FILES;
pub use ulimit::Ulimit;

/// The xattr that marks an opaque directory in upper dirs made by this crate.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The root filesystem of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// Use (and modify in place) this directory.
    Dir(PathBuf),
    /// Mount an overlay inside the sandbox's mount namespace. `lowers` are
    /// top first. The mount disappears with the process; `upper` keeps the
    /// changes. `work` must be an empty dir on the same filesystem as `upper`.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
}

/// Network of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The default, as BuildKit's: a network namespace of the sandbox's own
    /// (its `lo` is not the host's) that reaches the outside world through
    /// `slirp4netns` (which must be installed; a clear error says so when it
    /// is not). The host's loopback and link-local 169.254.0.0/16 are out of
    /// reach; DNS goes to the host's resolver. One namespace per
    /// [`Sandbox`], shared by its private runs (see [`private_net`]).
    #[default]
    Private,
    /// Share the host's network namespace: the host's loopback services
    /// are reachable. Callers should ask the user to opt in.
    Host,
    /// A new network namespace with only `lo`, up.
    None,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Private => "private",
            Network::Host => "host",
            Network::None => "none",
        })
    }
}

/// An extra mount (for `RUN --mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// Bind a host file or directory. Read-write binds get an overlay (dirs)
    /// or a copy (files): the container's writes are discarded.
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// Bind `source` as found inside the directory `root`, for trees that
    /// may be hostile (a build context, a stage's filesystem): `source` is
    /// resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
    /// against an fd of `root` at mount time, and that very fd is what gets
    /// mounted, so a symlink anywhere in it (relative, absolute, swapped in
    /// after the caller looked) is followed inside `root`, never out of it.
    /// `root` itself is trusted (opened by path). Read-only and read-write
    /// as for [`MountSpec::Bind`].
    BindInRoot {
        root: PathBuf,
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// A persistent cache: the host directory is bound read-write.
    Cache { source: PathBuf, target: PathBuf },
    /// A host file or directory bound as it is, as `docker run -v` does:
    /// read-write, the container's writes reach the host. For the caller's
    /// own paths only (`kiln run`); a build's binds are [`MountSpec::Bind`].
    Volume {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// A tmpfs; `mode` defaults to 01777, `size` (bytes) to the kernel's.
    Tmpfs {
        target: PathBuf,
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// Where `/etc/hosts` or `/etc/resolv.conf` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EtcFile {
    /// The host's file (hosts: plus a line for the sandbox hostname). With
    /// a network of its own (`None`, `Private`) hosts is a generated
    /// localhost-only file; `Private` gets the host's resolv.conf with
    /// loopback nameservers replaced by slirp4netns's forwarder.
    #[default]
    Host,
    /// These contents.
    Contents(String),
    /// Leave the rootfs's own file alone.
    Keep,
}

/// One process to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub rootfs: Rootfs,
    pub argv: Vec<String>,
    /// `KEY=value` strings; PATH, HOME and HOSTNAME are added if missing.
    pub env: Vec<String>,
    /// Absolute path inside the rootfs; created (0755, root) if missing.
    pub cwd: PathBuf,
    /// `name`, `uid`, `name:group`, `uid:gid`; empty = root.
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<MountSpec>,
    pub hosts: EtcFile,
    /// `(name, address)` lines added to `/etc/hosts` (`--add-host`), unless
    /// it is [`EtcFile::Keep`].
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// The size of `/dev/shm` in bytes (default 64 MiB, as docker).
    pub shm_size: Option<u64>,
    /// `--ulimit`s, set in the command's process before it execs.
    pub ulimits: Vec<Ulimit>,
    pub resolv_conf: EtcFile,
    /// Set `PR_SET_NO_NEW_PRIVS` (off by default, like Docker).
    pub no_new_privileges: bool,
    /// Give the command `/dev/null` as stdin instead of ours (what `docker
    /// build` does for RUN; stdout and stderr are always inherited).
    pub null_stdin: bool,
    /// fd 0 is a terminal (the slave of a [`pty::Pty`], handed as stdin,
    /// stdout and stderr through [`RunIo`]): the command gets a session of
    /// its own with it as its controlling terminal (`setsid` +
    /// `TIOCSCTTY`), so job control, Ctrl-C and `isatty` work as on a
    /// terminal, as with `docker run -t`.
    pub tty: bool,
}

impl RunSpec {
    /// A spec with defaults: root, cwd `/`, hostname `kiln`, private network.
    pub fn new<I, S>(rootfs: Rootfs, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RunSpec {
            rootfs,
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: String::new(),
            hostname: "kiln".into(),
            network: Network::Private,
            mounts: Vec::new(),
            hosts: EtcFile::Host,
            extra_hosts: Vec::new(),
            shm_size: None,
            ulimits: Vec::new(),
            resolv_conf: EtcFile::Host,
            no_new_privileges: false,
            null_stdin: false,
            tty: false,
        }
    }
}

/// How runs are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Namespaces if the host allows them, else chroot (with a warning).
    #[default]
    Auto,
    /// Namespaces, as root of a user namespace.
    Rootless,
    /// Namespaces without a user namespace; needs real root.
    Root,
    /// chroot (+ a mount namespace when allowed): weaker, for hosts that
    /// refuse namespaces, such as root in a default container or pod. No
    /// pid/uts/ipc/net isolation; `CAP_SYS_CHROOT` is dropped for the
    /// command. Without a mount namespace the rootfs must be a
    /// [`Rootfs::Dir`], and `/dev`, the `/etc` files and the mounts are
    /// copied in and taken out again (see the `copied` module).
    Chroot,
    /// No privilege at all (a non-root pod without capabilities under the
    /// "restricted" policy): the command is traced with ptrace under a
    /// seccomp filter, every path it passes is resolved inside the rootfs
    /// (a [`Rootfs::Dir`]) and uid 0 is emulated; see [`traced`]. x86_64
    /// only. No pid/net/ipc/uts isolation, as chroot without namespaces.
    Traced,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Auto => "auto",
            Isolation::Rootless => "rootless",
            Isolation::Root => "root",
            Isolation::Chroot => "chroot",
            Isolation::Traced => "traced",
        })
    }
}

impl FromStr for Isolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Isolation::Auto,
            "rootless" => Isolation::Rootless,
            "root" => Isolation::Root,
            "chroot" => Isolation::Chroot,
            "traced" => Isolation::Traced,
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "isolation {s:?}: expected auto, rootless, root, chroot or traced"
                )));
            }
        })
    }
}

/// What `Auto` means on this host, with the reason when it is chroot.
pub(crate) fn resolve_auto() -> (Isolation, Option<String>) {
    static AUTO: OnceLock<(Isolation, Option<String>)> = OnceLock::new();
    AUTO.get_or_init(|| {
        let euid = rustix::process::geteuid().as_raw();
        // What a run needs, tried for real: unshare alone succeeds in some
        // containers whose procfs then cannot be mounted.
        let probe = if euid == 0 {
            info::probe_isolation(false)
        } else {
            info::probe_isolation(true)
        };
        match probe {
            Ok(()) if euid == 0 && !userns::in_user_namespace() => (Isolation::Root, None),
            Ok(()) => (Isolation::Rootless, None),
            // Not even chroot (a non-root pod without capabilities): the
            // traced mode needs no privilege.
            Err(e) if info::probe_chroot().is_err() && traced::probe().is_ok() => (
                Isolation::Traced,
                Some(format!(
                    "isolation auto: namespaces are refused here ({}) and so is chroot; \
                     using traced isolation (ptrace + seccomp, uid 0 emulated; RUN steps \
                     share this container's processes and network; `kiln info` lists the modes)",
                    e.trim()
                )),
            ),
            Err(e) => (
                Isolation::Chroot,
                Some(format!(
                    "isolation auto: namespaces are refused here ({}); falling back to chroot \
                     isolation (RUN steps share this container's processes and network; \
                     `kiln info` lists the modes)",
                    e.trim()
                )),
            ),
        }
    })
    .clone()
}

/// Replacement stdio for [`Sandbox::run_with_io`]; `None` inherits ours.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunIo<'a> {
    pub stdin: Option<BorrowedFd<'a>>,
    pub stdout: Option<BorrowedFd<'a>>,
    pub stderr: Option<BorrowedFd<'a>>,
}

/// Runs processes. Holds a private, empty temp dir that each run mounts its
/// scratch tmpfs over (inside its own mount namespace only).
pub struct Sandbox {
    isolation: Isolation,
    mode: spawn::Mode,
    /// Whether this host lets us make a network namespace.
    netns: bool,
    /// Chroot isolation on a host that refuses chroot too (a non-root pod
    /// under the "restricted" policy): why, said when a run is asked for.
    /// Not at creation: a build without RUN needs no isolation.
    unusable: Option<String>,
    scratch: tempfile::TempDir,
    forward_signals: bool,
    /// The private network, made on the first `Network::Private` run.
    private_net: Mutex<Option<private_net::PrivateNet>>,
}

impl Sandbox {
    /// Resolve `isolation` (probing the host for `Auto`) and prepare; the
    /// private scratch dir goes in the system temp dir.
    pub fn new(isolation: Isolation) -> Result<Sandbox> {
        Self::new_in(isolation, &std::env::temp_dir())
    }

    /// Like [`Sandbox::new`], with the (empty, 0700) scratch mount point
    /// created in `parent`, e.g. the store's tmp dir. It is removed on drop;
    /// if kiln is killed an empty directory may stay behind, nothing else.
    pub fn new_in(isolation: Isolation, parent: &Path) -> Result<Sandbox> {
        let euid = rustix::process::geteuid().as_raw();
        let isolation = match isolation {
            Isolation::Auto => {
                let (iso, warning) = resolve_auto();
                if let Some(w) = warning {
                    warn(&w);
                }
                iso
            }
            other => other,
        };
        let mode = match isolation {
            Isolation::Root if euid != 0 => {
                return Err(Error::Unsupported {
                    mode: "root",
                    reason: format!("running as uid {euid}"),
                });
            }
            Isolation::Root => spawn::Mode::Namespaces { new_userns: false },
            Isolation::Rootless => spawn::Mode::Namespaces {
                new_userns: !(euid == 0 && userns::in_user_namespace()),
            },
            Isolation::Chroot | Isolation::Auto => spawn::Mode::Chroot {
                mount_ns: info::probe_mount_ns().is_ok(),
            },
            Isolation::Traced => {
                if let Err(reason) = traced::probe() {
                    return Err(Error::Unsupported {
                        mode: "traced",
                        reason,
                    });
                }
                spawn::Mode::Traced
            }
        };
        // Asked for by name, namespaces the host refuses fail here, before
        // anything runs, naming what was refused.
        if let spawn::Mode::Namespaces { new_userns } = mode
            && let Err(refused) = info::probe_isolation(new_userns)
        {
            return Err(Error::Unsupported {
                mode: if isolation == Isolation::Root {
                    "root"
                } else {
                    "rootless"
                },
                reason: format!(
                    "this host refuses {refused}; --isolation chroot (or auto) works here"
                ),
            });
        }
        let netns = match mode {
            spawn::Mode::Namespaces { .. } => true,
            spawn::Mode::Chroot { .. } => info::probe_netns().is_ok(),
            // The traced command never joins a namespace.
            spawn::Mode::Traced => false,
        };
        let unusable = match mode {
            spawn::Mode::Chroot { .. } => info::probe_chroot().err().map(|e| {
                let traced = match traced::probe() {
                    Ok(()) => "--isolation traced works here".to_string(),
                    Err(t) => format!("traced isolation is refused too ({t})"),
                };
                format!(
                    "this host refuses namespaces and {e}: chroot needs root with \
                     CAP_SYS_CHROOT (a pod under the \"restricted\" policy has neither); \
                     {traced}; `kiln info` lists what was tried"
                )
            }),
            spawn::Mode::Namespaces { .. } | spawn::Mode::Traced => None,
        };
        let scratch = tempfile::Builder::new()
            .prefix(".kiln-sandbox-")
            .tempdir_in(parent)
            .map_err(|e| Error::path("mkdtemp", parent, e))?;
        Ok(Sandbox {
            isolation,
            mode,
            netns,
            unusable,
            scratch,
            forward_signals: false,
            private_net: Mutex::new(None),
        })
    }

    /// The isolation actually used (never `Auto`).
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether runs get a mount namespace; without one (chroot isolation
    /// in a default container) the rootfs must be a [`Rootfs::Dir`].
    pub fn has_mount_namespace(&self) -> bool {
        !matches!(
            self.mode,
            spawn::Mode::Chroot { mount_ns: false } | spawn::Mode::Traced
        )
    }

    /// The network a build step gets when it asks for none in particular:
    /// [`Network::Private`], or, where this host refuses network namespaces
    /// (chroot isolation in a default container or pod), [`Network::Host`],
    /// which there is the container's own network namespace (said once);
    /// always so under traced isolation.
    /// An explicit [`Network::Private`] is never replaced like this.
    pub fn default_network(&self) -> Network {
        if self.netns {
            return Network::Private;
        }
        copied::warn_once(
            "netns",
            if self.mode == spawn::Mode::Traced {
                "traced isolation makes no network namespace: RUN steps share this host's network"
            } else {
                "this host refuses network namespaces: RUN steps share this container's network"
            },
        );
        Network::Host
    }

    /// Relay signals sent to this process (SIGTERM, SIGHUP, ...) to the
    /// sandbox while [`Sandbox::run`] waits. Off by default because it
    /// installs process-wide handlers; a CLI should turn it on.
    pub fn forward_signals(&mut self, on: bool) -> &mut Self {
        self.forward_signals = on;
        self
    }

    /// Run `spec` to completion; stdio is inherited.
    pub fn run(&self, spec: &RunSpec) -> Result<ExitStatus> {
        self.run_with_io(spec, RunIo::default())
    }

    /// Run `spec` with stdin/stdout/stderr replaced by the given fds (e.g.
    /// the write end of a pipe the builder reads for its log view). The fds
    /// are only borrowed; the sandbox's init makes them 0, 1, 2 and closes
    /// everything else. Drain a pipe from another thread: `run_with_io`
    /// blocks until the command exits, and a full pipe would block it.
    pub fn run_with_io(&self, spec: &RunSpec, io: RunIo<'_>) -> Result<ExitStatus> {
        if let Some(why) = &self.unusable {
            return Err(Error::Unsupported {
                mode: "chroot",
                reason: why.clone(),
            });
        }
        let spec = &normalize(spec)?;
        let cstr =
            |s: &str| CString::new(s).map_err(|_| Error::InvalidSpec(format!("NUL byte in {s:?}")));
        let argv = spec
            .argv
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>>>()?;
        let env = spec
            .env
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>>>()?;
        let hostname_line = format!("127.0.0.1\t{}\n", spec.hostname);
        let hosts = match &spec.hosts {
            EtcFile::Keep => None,
            EtcFile::Contents(c) => Some(c.clone().into_bytes()),
            EtcFile::Host if spec.network != Network::Host => Some(
                format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{hostname_line}")
                    .into_bytes(),
            ),
            EtcFile::Host => {
                let mut h = std::fs::read("/etc/hosts")
                    .unwrap_or_else(|_| b"127.0.0.1\tlocalhost\n".to_vec());
                if !h.ends_with(b"\n") && !h.is_empty() {
                    h.push(b'\n');
                }
                h.extend_from_slice(hostname_line.as_bytes());
                Some(h)
            }
        }
        .map(|mut h| {
            for (name, addr) in &spec.extra_hosts {
                h.extend_from_slice(format!("{addr}\t{name}\n").as_bytes());
            }
            h
        });
        let resolv_conf = match &spec.resolv_conf {
            EtcFile::Keep => None,
            EtcFile::Contents(c) => Some(c.clone().into_bytes()),
            EtcFile::Host if spec.network == Network::Private => Some(
                net::private_resolv_conf(
                    &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                )
                .into_bytes(),
            ),
            EtcFile::Host => Some(std::fs::read("/etc/resolv.conf").unwrap_or_default()),
        };
        if self.mode == spawn::Mode::Traced && spec.network != Network::Host {
            return Err(Error::Unsupported {
                mode: "traced",
                reason: format!(
                    "network {} needs a network namespace, which traced isolation does not \
                     make: RUN steps use the host's (or pod's) network",
                    spec.network
                ),
            });
        }
        // The fds stay open while `self` lives, i.e. for the whole run.
        let private_ns = match spec.network {
            Network::Private => Some(self.private_namespaces()?),
            _ => None,
        };
        if let Rootfs::Overlay { .. } = spec.rootfs
            && !self.has_mount_namespace()
        {
            let traced = self.mode == spawn::Mode::Traced;
            return Err(Error::Unsupported {
                mode: if traced { "traced" } else { "chroot" },
                reason: if traced {
                    "traced isolation mounts nothing, so an overlay rootfs cannot be used; \
                     use the copy snapshotter (--snapshotter copy)"
                } else {
                    "an overlay rootfs needs a mount namespace, which this host refuses; \
                     use the copy snapshotter (--snapshotter copy)"
                }
                .into(),
            });
        }
        let plan = spawn::Plan {
            spec,
            mode: self.mode,
            scratch: self.scratch.path(),
            hosts,
            resolv_conf,
            hostname_file: format!("{}\n", spec.hostname).into_bytes(),
            last_cap: caps::kernel_last_cap(),
            argv,
            env,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            io: [io.stdin, io.stdout, io.stderr].map(|f| f.map(|f| f.as_raw_fd())),
            private_ns,
        };
        if self.has_mount_namespace() {
            return spawn::run(&plan, self.forward_signals);
        }
        // No mount namespace: what would be mounted is copied in, and out.
        let provisioned = copied::provision(&plan)?;
        let status = if self.mode == spawn::Mode::Traced {
            traced::run(&plan, self.forward_signals)
        } else {
            spawn::run(&plan, self.forward_signals)
        };
        let restored = provisioned.restore();
        let status = status?;
        restored?;
        Ok(status)
    }

    /// The private network's namespace fds (net, and user when the runs
    /// make their own user namespace), starting it on first use.
    fn private_namespaces(&self) -> Result<spawn::PrivateNs> {
        let mut guard = self
            .private_net
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            let own_userns = self.mode == (spawn::Mode::Namespaces { new_userns: true });
            *guard = Some(private_net::PrivateNet::start(
                own_userns,
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )?);
        }
        let net = guard.as_ref().expect("set above");
        Ok(spawn::PrivateNs {
            net: net.netns.as_raw_fd(),
            user: net.userns.as_ref().map(|u| u.as_raw_fd()),
        })
    }
}

/// Validate and make host paths absolute (the children change directory).
fn normalize(spec: &RunSpec) -> Result<RunSpec> {
    let mut s = spec.clone();
    if s.argv.is_empty() {
        return Err(Error::InvalidSpec("empty argv".into()));
    }
    if s.hostname.is_empty() || s.hostname.len() > 64 || s.hostname.contains(['/', '\n', '\0']) {
        return Err(Error::InvalidSpec(format!("bad hostname {:?}", s.hostname)));
    }
    for u in &s.ulimits {
        u.check()?;
    }
    let abs = |p: &Path| std::path::absolute(p).map_err(|e| Error::path("absolute", p, e));
    s.rootfs = match &s.rootfs {
        Rootfs::Dir(d) => Rootfs::Dir(abs(d)?),
        Rootfs::Overlay {
            lowers,
            upper,
            work,
        } => Rootfs::Overlay {
            lowers: lowers.iter().map(|l| abs(l)).collect::<Result<_>>()?,
            upper: abs(upper)?,
            work: abs(work)?,
        },
    };
    for m in &mut s.mounts {
        match m {
            MountSpec::Bind { source, .. }
            | MountSpec::Cache { source, .. }
            | MountSpec::Volume { source, .. } => {
                *source = abs(source)?;
            }
            MountSpec::BindInRoot { root, .. } => {
                *root = abs(root)?;
            }
            MountSpec::Tmpfs { .. } => {}
        }
    }
    Ok(s)
}

/// A user-facing warning: through tracing when the program installed a
/// subscriber, else straight to stderr (so it is never lost, never doubled).
pub(crate) fn warn(msg: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{msg}");
    } else {
        eprintln!("kiln: warning: {msg}");
    }
}

/// The shell convention: the exit code, or 128 + the signal that killed it.
pub fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
