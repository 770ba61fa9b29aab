//! Traced isolation: a RUN isolated without any privilege (no user
//! namespace, no capability, no root), for a pod under the "restricted"
//! policy. x86_64 only. The command runs as kiln's own user, traced with
//! ptrace by a forked tracer, under a seccomp filter (`filter`) that
//! stops only the syscalls taking paths or IDs; every path is resolved
//! inside the step's rootfs directory (`paths`), and uid 0 is emulated
//! (`fakeroot`) with owners recorded for the layer. `/dev`'s nodes are
//! the host's, `/proc` is the host's but shows only the traced processes,
//! the `/etc` files and RUN mounts are copied in and out as chroot
//! isolation without a mount namespace does (`copied`).
//!
//! Processes: kiln forks the tracer T (not dumpable, so the command, which
//! runs as the same user, cannot read or write its memory through /proc),
//! T forks the worker W, which sets up stdio, rlimits and its working
//! directory, closes every fd above 2, sets `no_new_privs`, asks to be
//! traced, stops until T has set the trace options (fork, vfork, clone,
//! exec, seccomp events; the tracees die with T), installs the filter and
//! execs the command: the first exec is already translated. The result
//! comes back through the shared report page, as in `spawn`.
//!
//! What it does not isolate (said in `kiln info` and the README): no pid,
//! network, ipc or uts namespace (the command shares the container's
//! network and may signal kiln's own processes, which run as the same
//! user; it cannot ptrace or read them); permission checks are the real
//! user's. A traced process racing another one (a directory swapped for a
//! symlink between the tracer's resolution and the kernel's) would reach
//! outside the rootfs, as under PRoot; a Landlock ruleset (`landlock`)
//! makes the kernel refuse that where the host has Landlock (said once
//! where it has not).

mod exec;
pub(crate) mod fakeroot;
pub(crate) mod filter;
mod ids;
mod landlock;
mod mem;
pub(crate) mod paths;
mod placement;
mod stat;
pub(crate) mod tracer;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::process::ExitStatus;

use crate::error::{Error, Result, at};
use crate::resolve::{Kind, ensure_in_root, open_in_root};
use crate::spawn::{self, Plan, Report};
use crate::{Rootfs, user};

pub use fakeroot::OWNER_XATTR;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether traced isolation can work on this machine (it needs x86_64
/// syscall numbers): `Err` says why not.
pub fn supported_arch() -> std::result::Result<(), String> {
    if cfg!(target_arch = "x86_64") {
        Ok(())
    } else {
        Err(format!(
            "traced isolation knows only x86_64's syscalls, not {}'s",
            std::env::consts::ARCH
        ))
    }
}

/// Can this process trace a child under a seccomp filter? Tried for real.
pub(crate) fn probe() -> std::result::Result<(), String> {
    supported_arch()?;
    crate::info::in_child(|| {
        rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
        // SAFETY: fork in a single-threaded probe child; the grandchild
        // only makes syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: plain syscalls, then _exit.
            unsafe {
                // Refused: leave at once (a stop untraced would never be
                // reported to the waitpid below).
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    libc::_exit(2);
                }
                libc::raise(libc::SIGSTOP);
                let code = i32::from(filter::install(&filter::program()).is_err());
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waitpid on our child.
        unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 2 {
            return Err("ptrace: PTRACE_TRACEME refused".into());
        }
        let traced = libc::WIFSTOPPED(status);
        let opts = libc::PTRACE_O_TRACESECCOMP | libc::PTRACE_O_EXITKILL;
        // SAFETY: ptrace requests on our stopped child.
        let set = traced && unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, opts) } == 0;
        let err = std::io::Error::last_os_error();
        // SAFETY: as above; a child we could not trace must not stay stopped.
        unsafe {
            if !set {
                libc::kill(pid, libc::SIGKILL);
            }
            libc::ptrace(libc::PTRACE_CONT, pid, 0, 0)
        };
        let status = spawn::wait_pid(pid).map_err(|e| format!("waitpid: {e}"))?;
        if !traced || !set {
            return Err(format!("ptrace: {err}"));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err("seccomp: a filter cannot be installed".into());
        }
        Ok(())
    })
}

/// What W needs, computed before forking.
struct Exec {
    argv: Vec<CString>,
    env: Vec<CString>,
    candidates: Vec<CString>,
    cwd: std::os::fd::OwnedFd,
    ulimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    null_stdin: bool,
    tty: bool,
    filter: Vec<libc::sock_filter>,
    /// The Landlock ruleset W puts itself under (see `landlock`).
    landlock: Option<std::os::fd::OwnedFd>,
}

/// Runs `plan` traced; its rootfs must be a directory with `/dev`, the
/// `/etc` files and the mounts already put in (`copied::provision`).
pub(crate) fn run(plan: &Plan<'_>, forward: bool) -> Result<ExitStatus> {
    supported_arch().map_err(|reason| Error::Unsupported {
        mode: "traced",
        reason,
    })?;
    let Rootfs::Dir(dir) = &plan.spec.rootfs else {
        return Err(Error::Unsupported {
            mode: "traced",
            reason: "traced isolation needs a plain rootfs directory: use the copy snapshotter \
                     (--snapshotter copy)"
                .into(),
        });
    };
    let root = paths::Root::new(dir).map_err(|e| Error::path("canonicalize", dir, e))?;
    let root_fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(at("open", dir))?;
    let db = |name: &str| {
        open_in_root(root_fd.as_fd(), name)
            .ok()
            .map(|fd| user::read_db(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd()))))
            .unwrap_or_default()
    };
    let spec = plan.spec;
    let who = user::resolve(&spec.user, &db("etc/passwd"), &db("etc/group")).map_err(|reason| {
        Error::User {
            user: spec.user.clone(),
            reason,
        }
    })?;
    let cwd_path = ensure_in_root(root_fd.as_fd(), &spec.cwd, Kind::Dir)?;
    // An O_PATH fd cannot be fchdir'ed into on every kernel: reopen it.
    let cwd = rustix::fs::openat(
        &cwd_path,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(at("open", &spec.cwd))?;

    let mut env = plan.env.clone();
    let has = |k: &str| {
        plan.env
            .iter()
            .any(|e| e.to_bytes().starts_with(format!("{k}=").as_bytes()))
    };
    let cs = |s: String| CString::new(s).map_err(|e| Error::InvalidSpec(e.to_string()));
    if !has("PATH") {
        env.push(cs(format!("PATH={DEFAULT_PATH}"))?);
    }
    if !has("HOME") {
        env.push(cs(format!("HOME={}", who.home))?);
    }
    if !has("HOSTNAME") {
        env.push(cs(format!("HOSTNAME={}", spec.hostname))?);
    }
    let argv0 = spec.argv.first().map(String::as_str).unwrap_or_default();
    let candidates = crate::init::path_candidates(argv0, &env)?;
    let x = Exec {
        argv: plan.argv.clone(),
        env,
        candidates,
        cwd,
        ulimits: spec
            .ulimits
            .iter()
            .map(|u| Ok((u.resource()?, u.rlimit())))
            .collect::<Result<_>>()?,
        null_stdin: spec.null_stdin,
        tty: spec.tty,
        filter: filter::program(),
        landlock: match landlock::ruleset(dir) {
            Ok(fd) => Some(fd),
            Err(why) => {
                crate::copied::warn_once(
                    "traced-landlock",
                    &format!(
                        "traced isolation without Landlock ({why}): a RUN that races the tracer \
                         (swapping a directory for a symlink) could reach outside its rootfs"
                    ),
                );
                None
            }
        },
    };
    let owners = fakeroot::Owners::new((plan.euid, plan.egid));
    let creds = fakeroot::Creds::new(who.uid, who.gid, who.groups.clone());

    let report = Report::new()?;
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork; the child runs the tracer and ends in _exit (see spawn).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match tracer_process(plan, &x, &report, parent, root, owners, creds) {
            Ok(()) => 0,
            Err(e) => {
                report.fail_setup(&e);
                1
            }
        };
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(x);
    let saved = forward.then(|| spawn::forward_signals_to(pid));
    let status = spawn::wait_pid(pid);
    if let Some(saved) = saved {
        spawn::restore_forwarding(saved);
    }
    let status = status.map_err(|e| Error::sys("waitpid", e))?;
    spawn::outcome(plan, &report, status)
}

/// T: fork W, set the trace options, trace until the command is done.
fn tracer_process(
    plan: &Plan<'_>,
    x: &Exec,
    report: &Report,
    parent: i32,
    root: paths::Root,
    owners: fakeroot::Owners,
    creds: fakeroot::Creds,
) -> Result<()> {
    spawn::die_with_parent(parent);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    spawn::block_forwarded(true);
    // SAFETY: getpid/fork: W only makes syscalls and execs or _exits.
    let me = unsafe { libc::getpid() };
    let w = unsafe { libc::fork() };
    if w < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if w == 0 {
        let (what, errno) = worker(plan, x, me);
        if what == "exec" {
            report.fail_exec(errno);
        } else {
            report.fail(
                spawn::KIND_SETUP,
                errno,
                &format!("{what}: {}", std::io::Error::from_raw_os_error(errno)),
            );
        }
        // SAFETY: end W.
        unsafe { libc::_exit(127) };
    }
    let saved = spawn::forward_signals_to(w);
    spawn::block_forwarded(false);
    let mut status = 0;
    // SAFETY: waitpid on our child.
    unsafe { libc::waitpid(w, &mut status, libc::__WALL) };
    if !libc::WIFSTOPPED(status) {
        // W failed before it asked to be traced; its report says why.
        spawn::restore_forwarding(saved);
        report.exited(status);
        return Ok(());
    }
    let opts = libc::PTRACE_O_TRACESECCOMP
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_EXITKILL;
    // SAFETY: ptrace requests on our stopped child.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, w, 0, opts) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: kill our child; it must not run untraced.
        unsafe { libc::kill(w, libc::SIGKILL) };
        let _ = spawn::wait_pid(w);
        return Err(Error::sys("ptrace(PTRACE_SETOPTIONS)", e));
    }
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_CONT, w, 0, 0) };
    let place = placement::Placement::start(w);
    let status = tracer::Tracer::new(root, owners, w, creds, place).run();
    spawn::restore_forwarding(saved);
    report.exited(status);
    Ok(())
}

/// W: returns only on failure: the step that failed and its errno.
fn worker(plan: &Plan<'_>, x: &Exec, tracer: i32) -> (&'static str, i32) {
    spawn::die_with_parent(tracer);
    let last = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: plain signal syscalls.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    if crate::init::install_stdio(plan.io).is_err() {
        return ("install stdio", last());
    }
    for (resource, limit) in &x.ulimits {
        // SAFETY: a valid resource and a pointer to a live rlimit.
        if unsafe { libc::setrlimit(*resource, limit) } != 0 {
            return ("setrlimit (--ulimit)", last());
        }
    }
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if x.tty && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0) {
            return ("make the terminal the controlling terminal", last());
        }
        if x.null_stdin {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if fd < 0 || libc::dup2(fd, 0) < 0 {
                return ("open /dev/null as stdin", last());
            }
            if fd != 0 {
                libc::close(fd);
            }
        }
        libc::umask(0o022);
        if libc::fchdir(x.cwd.as_raw_fd()) != 0 {
            return ("chdir to the working directory", last());
        }
        // The kernel's own check under the tracer's: files outside the
        // rootfs stay out of reach even if a path changes after the tracer
        // resolved it. Landlock needs no_new_privs first.
        if let Some(ruleset) = &x.landlock {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return ("prctl(PR_SET_NO_NEW_PRIVS)", last());
            }
            if landlock::restrict_self(ruleset.as_raw_fd()) != 0 {
                return ("landlock_restrict_self", last());
            }
        }
        // Nothing of the host stays reachable through an fd.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            return ("close_range", last());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return ("prctl(PR_SET_NO_NEW_PRIVS)", last());
        }
        // T made itself not dumpable (the command must not reach its
        // memory); W inherited that, which would keep T out of W's
        // memory for the first exec.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
            return ("ptrace(PTRACE_TRACEME)", last());
        }
        // T sets the options while we are stopped: from here on, every
        // process of the command is traced.
        libc::raise(libc::SIGSTOP);
    }
    if let Err(e) = filter::install(&x.filter) {
        return ("seccomp filter", e);
    }
    (
        "exec",
        crate::init::exec_candidates(&x.argv, &x.env, &x.candidates),
    )
}
