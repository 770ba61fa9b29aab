//! Init (I) and worker (W) of a run. I is PID 1 of the sandbox's pid
//! namespace: it builds the filesystem, switches root, resolves the user in
//! the rootfs's own /etc/passwd, closes every inherited fd, then forks W,
//! relays signals to it, reaps every orphan, and reports W's wait status.
//! When I exits the kernel kills whatever W left running; without a pid
//! namespace (chroot isolation) I kills those processes itself, found as its
//! children (it is their subreaper) through the host's /proc.
//!
//! I is made non-dumpable: it is visible to the container as PID 1 and its
//! memory is a copy of kiln's; non-dumpable means `/proc/1/{mem,fd,environ}`
//! need CAP_SYS_PTRACE, which the container does not have.
//!
//! W drops capabilities, switches user, sets umask 0022, changes into the
//! working directory (already created, inside the new root, by I) and execs.
//! `no_new_privs` is off by default, like Docker: RUN steps may use setuid
//! programs (su, sudo, ping); `RunSpec::no_new_privileges` turns it on.

use std::ffi::CString;
use std::os::fd::AsFd;

use crate::caps;
use crate::error::{Error, Result, at};
use crate::mounts::{Kind, ensure_in_root};
use crate::spawn::{Plan, Report, block_forwarded, die_with_parent, forward_signals_to};
use crate::user::{self, ExecUser};

/// Everything W needs, prepared by I before fork.
struct Exec {
    user: ExecUser,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    /// Candidate paths for argv[0] (PATH search done as execvp would).
    candidates: Vec<CString>,
    no_new_privs: bool,
    null_stdin: bool,
    tty: bool,
    last_cap: u32,
    /// `(resource, limit)` pairs for setrlimit.
    ulimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    /// Capabilities taken from the command beyond Docker's defaults.
    drop_caps: u64,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// I: never returns.
pub(crate) fn init(
    plan: &Plan<'_>,
    report: &Report,
    parent: i32,
    have_mntns: bool,
    new_pidns: bool,
    new_netns: bool,
) -> ! {
    // PID 1 of a new pid namespace sees its parent (outside) as pid 0.
    die_with_parent(if new_pidns { 0 } else { parent });
    // Without a pid namespace nothing kills what the command leaves
    // running: init finds those processes (its children, as subreaper)
    // through the host's /proc, opened before the chroot hides it.
    let proc_fd = if new_pidns {
        -1
    } else {
        // SAFETY: open with a valid C string; the fd is ours.
        unsafe { libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_DIRECTORY) }
    };
    let exec = match prepare(plan, have_mntns, new_pidns, new_netns) {
        Ok(e) => e,
        Err(e) => {
            report.fail_setup(&e);
            // SAFETY: terminate this child only.
            unsafe { libc::_exit(1) };
        }
    };

    if let Err(e) = install_stdio(plan.io) {
        report.fail_setup(&e);
        // SAFETY: terminate this child only.
        unsafe { libc::_exit(1) };
    }
    // Nothing of the host may stay reachable through our fds: close all
    // (not just CLOEXEC) before W exists.
    if proc_fd > 3 {
        close_fds_in(3, proc_fd as u32 - 1);
        close_fds_from(proc_fd as u32 + 1);
    } else if proc_fd == 3 {
        close_fds_from(4);
    } else {
        close_fds_from(3);
    }

    // SAFETY: see spawn::run.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        report.fail_setup(&Error::sys("fork", std::io::Error::last_os_error()));
        unsafe { libc::_exit(1) };
    }
    if pid == 0 {
        if proc_fd >= 0 {
            // SAFETY: W's copy of init's /proc fd; nothing of the host stays.
            unsafe { libc::close(proc_fd) };
        }
        match worker(&exec) {
            ("exec", errno) => report.fail_exec(errno),
            (step, errno) => report.fail(
                crate::spawn::KIND_SETUP,
                errno,
                &format!(
                    "{step} for user {:?}: {}",
                    plan.spec.user,
                    std::io::Error::from_raw_os_error(errno)
                ),
            ),
        }
        // SAFETY: terminate W.
        unsafe { libc::_exit(127) };
    }
    let _saved = forward_signals_to(pid);
    block_forwarded(false);
    // Reap everything; W's status is the result.
    loop {
        let mut status = 0;
        // SAFETY: valid pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            report.exited(status);
            if proc_fd >= 0 {
                kill_leftovers(proc_fd);
            }
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            report.fail_setup(&Error::sys("waitpid", e));
            break;
        }
    }
    // SAFETY: terminate I; the kernel kills the rest of the pid namespace.
    unsafe { libc::_exit(0) }
}

fn prepare(plan: &Plan<'_>, have_mntns: bool, new_pidns: bool, new_netns: bool) -> Result<Exec> {
    let spec = plan.spec;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if !new_pidns {
        // chroot mode: at least adopt W's orphans so they are reaped.
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }

    crate::mounts::setup(plan, have_mntns, new_pidns)?;

    if new_netns {
        crate::net::loopback_up()?;
    }
    if new_pidns {
        rustix::system::sethostname(spec.hostname.as_bytes())
            .map_err(|e| Error::sys("sethostname", e))?;
    }

    // The root is now the container's: these paths cannot leave it.
    let passwd = user::read_db(std::path::Path::new("/etc/passwd"));
    let group = user::read_db(std::path::Path::new("/etc/group"));
    let user = user::resolve(&spec.user, &passwd, &group).map_err(|reason| Error::User {
        user: spec.user.clone(),
        reason,
    })?;

    // Create the working directory as root, inside the root (the process
    // root is the container's now, and the resolution is IN_ROOT anyway).
    let root = rustix::fs::open(
        "/",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(at("open", "/"))?;
    ensure_in_root(root.as_fd(), &spec.cwd, Kind::Dir)?;
    drop(root);
    let cwd_clean = format!("/{}", crate::mounts::clean(&spec.cwd).join("/"));

    let mut env = plan.env.clone();
    let has = |k: &str| {
        plan.env
            .iter()
            .any(|e| e.to_bytes().starts_with(format!("{k}=").as_bytes()))
    };
    if !has("PATH") {
        env.push(CString::new(format!("PATH={DEFAULT_PATH}")).expect("no NUL"));
    }
    if !has("HOME") {
        env.push(
            CString::new(format!("HOME={}", user.home)).map_err(|e| Error::User {
                user: spec.user.clone(),
                reason: e.to_string(),
            })?,
        );
    }
    if !has("HOSTNAME")
        && let Ok(h) = CString::new(format!("HOSTNAME={}", spec.hostname))
    {
        env.push(h);
    }

    let argv0 = spec.argv.first().map(String::as_str).unwrap_or_default();
    let candidates = path_candidates(argv0, &env)?;

    Ok(Exec {
        user,
        argv: plan.argv.clone(),
        env,
        cwd: CString::new(cwd_clean).map_err(|e| Error::InvalidSpec(e.to_string()))?,
        candidates,
        no_new_privs: spec.no_new_privileges,
        null_stdin: spec.null_stdin,
        tty: spec.tty,
        last_cap: plan.last_cap,
        ulimits: spec
            .ulimits
            .iter()
            .map(|u| Ok((u.resource()?, u.rlimit())))
            .collect::<Result<_>>()?,
        drop_caps: match plan.mode {
            crate::spawn::Mode::Chroot { .. } => 1u64 << caps::CAP_SYS_CHROOT,
            crate::spawn::Mode::Namespaces { .. } | crate::spawn::Mode::Traced => 0,
        },
    })
}

/// Make the caller's replacement fds our 0, 1, 2 (W inherits them). Each is
/// first duplicated above 2, so that e.g. stdout=0 cannot be clobbered by an
/// earlier dup2; the copies are closed with everything else afterwards.
pub(crate) fn install_stdio(io: [Option<i32>; 3]) -> Result<()> {
    let mut high = [None; 3];
    for (i, fd) in io.iter().enumerate() {
        if let Some(fd) = *fd {
            // SAFETY: fcntl on an fd the caller keeps open during the run.
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if d < 0 {
                return Err(Error::sys(
                    "fcntl(F_DUPFD) stdio",
                    std::io::Error::last_os_error(),
                ));
            }
            high[i] = Some(d);
        }
    }
    for (target, fd) in high.iter().enumerate() {
        if let Some(fd) = *fd {
            // SAFETY: dup2 onto a standard fd.
            if unsafe { libc::dup2(fd, target as i32) } < 0 {
                return Err(Error::sys("dup2 stdio", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// Kills what the command left running (chroot isolation: no pid
/// namespace to end with init). Init is their subreaper, so once their
/// parents are gone they are init's children: kill those, reap, repeat
/// until none is left. A child not yet reaped keeps its pid, so no
/// unrelated process can be hit.
fn kill_leftovers(proc_fd: i32) {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let path = CString::new(format!("{me}/task/{me}/children")).expect("no NUL");
    for _ in 0..1000 {
        // SAFETY: openat relative to our own /proc fd, valid C string.
        let fd = unsafe { libc::openat(proc_fd, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return;
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        let children: Vec<i32> = String::from_utf8_lossy(&buf[..n.max(0) as usize])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if children.is_empty() {
            return;
        }
        for child in children {
            // SAFETY: a child of ours, not reaped, so the pid is still it.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        // Reap what died (their children are ours now).
        loop {
            let mut status = 0;
            // SAFETY: valid pointer.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Close every fd from `from` to `to`, both included.
fn close_fds_in(from: u32, to: u32) {
    // SAFETY: close_range closes fds this process owns.
    let r = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0u32) };
    if r != 0 {
        for fd in from..=to.min(4095) {
            // SAFETY: closing a possibly-unused fd is harmless here.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Close (not just mark CLOEXEC) every fd >= `from`.
fn close_fds_from(from: u32) {
    // SAFETY: close_range closes fds this process owns; nothing uses them after.
    let r = unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
    if r != 0 {
        // Kernel without close_range: close what /proc would list, bounded.
        for fd in from..4096 {
            // SAFETY: closing a possibly-unused fd is harmless here.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// W: returns only on failure: the step that failed and its errno.
fn worker(x: &Exec) -> (&'static str, i32) {
    // Default dispositions and an empty mask: the command must not inherit
    // kiln's ignored SIGPIPE or our blocked signals.
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
    let errno = |e: Error| -> i32 {
        match e {
            Error::Sys { cause, .. } | Error::Path { cause, .. } => {
                cause.raw_os_error().unwrap_or(libc::EPERM)
            }
            _ => libc::EPERM,
        }
    };
    // Before the user switch, as runc sets them: lowering needs no
    // privilege, and setresuid and execve then check an nproc limit
    // against the user the command runs as.
    for (resource, limit) in &x.ulimits {
        // SAFETY: a valid resource and a pointer to a live rlimit.
        if unsafe { libc::setrlimit(*resource, limit) } != 0 {
            return ("setrlimit (--ulimit)", last_errno());
        }
    }
    if let Err(e) = caps::restrict_bounding_set(x.last_cap, x.drop_caps) {
        return ("drop capabilities from the bounding set", errno(e));
    }
    if let Err(e) = switch_user(&x.user) {
        return e;
    }
    if let Err(e) = caps::set_process_caps(x.drop_caps) {
        return ("capset", errno(e));
    }
    if x.no_new_privs && rustix::thread::set_no_new_privs(true).is_err() {
        return ("prctl(PR_SET_NO_NEW_PRIVS)", libc::EPERM);
    }
    // SAFETY: plain syscalls with valid C strings.
    unsafe {
        // A session of its own with fd 0 (a pty's slave) as its
        // controlling terminal, as a login shell would have.
        if x.tty && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0) {
            return ("make the terminal the controlling terminal", last_errno());
        }
        if x.null_stdin {
            // The container's /dev/null (a bind of the host's null device);
            // where there is none (chroot isolation on a host that refuses
            // mknod), a pipe whose write end is closed reads as empty too.
            let mut fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                let mut ends = [-1; 2];
                if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) == 0 {
                    libc::close(ends[1]);
                    fd = ends[0];
                }
            }
            if fd < 0 || libc::dup2(fd, 0) < 0 {
                return ("open /dev/null as stdin", last_errno());
            }
            if fd != 0 {
                libc::close(fd);
            }
        }
        libc::umask(0o022);
        if libc::chdir(x.cwd.as_ptr()) != 0 {
            return ("chdir to the working directory", last_errno());
        }
    }
    ("exec", exec(x))
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn switch_user(u: &ExecUser) -> std::result::Result<(), (&'static str, i32)> {
    // SAFETY: raw setgroups/setresgid/setresuid on this single thread (W is
    // single-threaded, so the per-thread syscalls are per-process here).
    unsafe {
        let groups: Vec<libc::gid_t> = u.groups.clone();
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            let e = last_errno();
            // setgroups is denied in a single-ID user namespace; harmless
            // when the wanted list is just root's.
            if !(e == libc::EPERM && u.groups == [0]) {
                return Err(("setgroups (is only root mapped? see /etc/subgid)", e));
            }
        }
        if libc::syscall(libc::SYS_setresgid, u.gid, u.gid, u.gid) != 0 {
            return Err((
                "setresgid (is the gid mapped? see /etc/subgid)",
                last_errno(),
            ));
        }
        if libc::syscall(libc::SYS_setresuid, u.uid, u.uid, u.uid) != 0 {
            return Err((
                "setresuid (is the uid mapped? see /etc/subuid)",
                last_errno(),
            ));
        }
    }
    Ok(())
}

/// The paths `execvp` would try for `argv0`: itself when it names a path,
/// else each directory of the `PATH` in `env` (or the default PATH).
pub(crate) fn path_candidates(argv0: &str, env: &[CString]) -> Result<Vec<CString>> {
    if argv0.contains('/') {
        return Ok(vec![
            CString::new(argv0).map_err(|e| Error::InvalidSpec(e.to_string()))?,
        ]);
    }
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    Ok(path
        .split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .filter_map(|d| CString::new(format!("{d}/{argv0}")).ok())
        .collect())
}

fn exec(x: &Exec) -> i32 {
    exec_candidates(&x.argv, &x.env, &x.candidates)
}

/// `execve`s each candidate path for argv[0] in turn, as `execvp` walks
/// PATH, and returns the errno that ends the search (it returns only on
/// failure): the first error other than "not there", else EACCES if a
/// candidate was refused, else ENOENT.
pub(crate) fn exec_candidates(argv: &[CString], env: &[CString], candidates: &[CString]) -> i32 {
    let argv: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut err = libc::ENOENT;
    for c in candidates {
        // SAFETY: NULL-terminated arrays of valid C strings.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        match last_errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => err = libc::EACCES,
            e => return e,
        }
    }
    err
}
