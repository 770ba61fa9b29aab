//! Process plumbing of one run. The caller P forks a *relay* C that unshares
//! the namespaces (it must be a fresh single-threaded child: `unshare` of a
//! user namespace is refused to threaded processes, and P's own namespaces
//! must stay untouched; for `Network::Private` it first `setns`es into the
//! sandbox's private network namespace, see [`crate::private_net`]); C forks
//! *init* I, PID 1 of the new pid namespace,
//! which builds the filesystem (procfs can only be mounted from inside the
//! pid namespace), then forks the *worker* W that becomes the command.
//!
//! Results travel through one shared anonymous page (mmap MAP_SHARED made
//! before the first fork), not through pipes: W closes every fd above 2 before
//! it even changes directory, so nothing of the host is reachable through
//! `/proc/self/fd` (CVE-2024-21626), yet an exec failure is still reported.
//!
//! C and I die with their parent (`PR_SET_PDEATHSIG`), and when I (PID 1)
//! dies the kernel kills everything in the pid namespace, so killing kiln
//! leaves no process and, the mount namespace being gone, no mount.
//!
//! Signals: C and I forward the signals that another *process* sent them
//! (`si_code <= 0`) to their child. Terminal-generated signals (Ctrl-C) are
//! not forwarded, because the kernel already delivers them to the whole
//! foreground process group, which includes the command.

use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use crate::{Network, RunSpec};

/// How the children isolate, decided by [`crate::Sandbox`] before forking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// mount, pid, ipc, uts (+net) namespaces; a user namespace is created too
    /// when the caller is not (namespace-)root.
    Namespaces { new_userns: bool },
    /// chroot, plus a mount namespace if the host allows one (probed when
    /// the sandbox is made); without one, see [`crate::copied`].
    Chroot { mount_ns: bool },
    /// No namespace, no chroot: traced with ptrace, see [`crate::traced`].
    Traced,
}

/// Everything the children need, computed by the parent before forking so
/// that the children do little more than syscalls.
pub(crate) struct Plan<'a> {
    pub spec: &'a RunSpec,
    pub mode: Mode,
    pub scratch: &'a Path,
    pub hosts: Option<Vec<u8>>,
    pub resolv_conf: Option<Vec<u8>>,
    pub hostname_file: Vec<u8>,
    pub last_cap: u32,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub euid: u32,
    pub egid: u32,
    /// Raw fds to become 0, 1, 2 (borrowed by the caller for the whole run).
    pub io: [Option<i32>; 3],
    /// `Network::Private`: the namespaces to join.
    pub private_ns: Option<PrivateNs>,
}

/// Raw fds of the private network's namespaces (owned by the sandbox, open
/// for the whole run; init closes them before the command exists).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrivateNs {
    pub net: i32,
    /// Set when the runs would make their own user namespace: they join
    /// this one, which owns the network namespace, instead.
    pub user: Option<i32>,
}

/// `setns(fd, nstype)`.
fn join(fd: i32, nstype: i32, what: &'static str) -> Result<()> {
    // SAFETY: setns on an fd we were given; single-threaded child.
    if unsafe { libc::setns(fd, nstype) } != 0 {
        return Err(Error::sys(what, std::io::Error::last_os_error()));
    }
    Ok(())
}

const MSG_LEN: usize = 3800;
const STATE_EXITED: u32 = 1;
const STATE_FAILED: u32 = 2;
pub(crate) const KIND_SETUP: u32 = 1;
const KIND_EXEC: u32 = 2;

#[repr(C)]
struct ReportData {
    state: u32,
    kind: u32,
    errno: i32,
    wait_status: i32,
    len: u32,
    msg: [u8; MSG_LEN],
}

/// The shared result page.
pub(crate) struct Report(*mut ReportData);

impl Report {
    pub(crate) fn new() -> Result<Report> {
        // SAFETY: anonymous shared mapping, checked for MAP_FAILED; zeroed by
        // the kernel, which is a valid ReportData.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<ReportData>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::sys("mmap", std::io::Error::last_os_error()));
        }
        Ok(Report(p.cast()))
    }

    fn data(&self) -> *mut ReportData {
        self.0
    }

    /// Record a failure (first one wins).
    pub(crate) fn fail(&self, kind: u32, errno: i32, msg: &str) {
        // SAFETY: the page is mapped for the lifetime of Report in every
        // process; writers are sequential (a child writes, then exits).
        unsafe {
            let d = &mut *self.data();
            if d.state == STATE_FAILED {
                return;
            }
            let n = msg.len().min(MSG_LEN);
            d.msg[..n].copy_from_slice(&msg.as_bytes()[..n]);
            d.len = n as u32;
            d.kind = kind;
            d.errno = errno;
            d.state = STATE_FAILED;
        }
    }

    pub(crate) fn fail_setup(&self, e: &Error) {
        self.fail(KIND_SETUP, 0, &e.to_string());
    }

    pub(crate) fn fail_exec(&self, errno: i32) {
        self.fail(KIND_EXEC, errno, "");
    }

    pub(crate) fn exited(&self, wait_status: i32) {
        // SAFETY: see fail().
        unsafe {
            let d = &mut *self.data();
            if d.state != STATE_FAILED {
                d.wait_status = wait_status;
                d.state = STATE_EXITED;
            }
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        // SAFETY: mapped in new() with this size.
        unsafe { libc::munmap(self.0.cast(), std::mem::size_of::<ReportData>()) };
    }
}

// ---- signal forwarding -------------------------------------------------

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// Signals relayed to the child.
pub(crate) const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    // si_code > 0 means the kernel generated it (e.g. the tty's Ctrl-C): the
    // child, in the same foreground process group, got it as well.
    if code > 0 {
        return;
    }
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Saved dispositions, restored by [`restore_forwarding`].
pub(crate) type SavedActions = Vec<(i32, libc::sigaction)>;

/// Install handlers that relay [`FORWARDED`] signals to `pid`.
pub(crate) fn forward_signals_to(pid: i32) -> SavedActions {
    FORWARD_TO.store(pid, Ordering::SeqCst);
    let mut saved = Vec::new();
    for &sig in FORWARDED {
        // SAFETY: sigaction with a zeroed struct and a valid handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &sa, &mut old) == 0 {
                saved.push((sig, old));
            }
        }
    }
    saved
}

pub(crate) fn restore_forwarding(saved: SavedActions) {
    for (sig, old) in saved {
        // SAFETY: restoring a disposition we read earlier.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
    FORWARD_TO.store(0, Ordering::SeqCst);
}

/// Block or unblock the forwarded signals (around fork, so a signal cannot
/// arrive before the forwarding target is known).
pub(crate) fn block_forwarded(block: bool) {
    // SAFETY: plain sigset manipulation.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// `waitpid` retrying on EINTR.
pub(crate) fn wait_pid(pid: i32) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: valid pointer to status.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Die with the parent; if it is already gone, exit now.
pub(crate) fn die_with_parent(expected_parent: i32) {
    // SAFETY: prctl with an integer argument.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: getppid/_exit are always safe to call.
    if unsafe { libc::getppid() } != expected_parent {
        unsafe { libc::_exit(1) };
    }
}

/// A warning from a forked child: a raw write(2) to stderr. No tracing, no
/// std stderr lock: the parent may have been multi-threaded at fork time and
/// any lock held then stays held forever in the child.
pub(crate) fn child_warn(msg: &str) {
    let line = format!("kiln: warning: {msg}\n");
    // SAFETY: writing a valid buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

fn write_proc(path: &str, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::path("write", path, e))
}

// ---- the run -----------------------------------------------------------

/// Fork the relay, wait, and turn the shared report into a result.
pub(crate) fn run(plan: &Plan<'_>, forward: bool) -> Result<ExitStatus> {
    let report = Report::new()?;
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork; the child only runs relay(), which ends in _exit. glibc's
    // fork resets the malloc locks, so the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match relay(plan, &report, parent) {
            Ok(()) => 0,
            Err(e) => {
                report.fail_setup(&e);
                1
            }
        };
        // SAFETY: leave without running the parent's destructors/atexit.
        unsafe { libc::_exit(code) };
    }
    let saved = forward.then(|| forward_signals_to(pid));
    let status = wait_pid(pid);
    if let Some(saved) = saved {
        restore_forwarding(saved);
    }
    let status = status.map_err(|e| Error::sys("waitpid", e))?;
    outcome(plan, &report, status)
}

/// The run's result from the report page, once the first child (exit
/// status `status`) has ended.
pub(crate) fn outcome(plan: &Plan<'_>, report: &Report, status: i32) -> Result<ExitStatus> {
    // SAFETY: the children have exited; we are the only accessor now.
    let d = unsafe { &*report.data() };
    match d.state {
        STATE_EXITED => Ok(ExitStatus::from_raw(d.wait_status)),
        STATE_FAILED if d.kind == KIND_EXEC => Err(Error::Exec {
            argv0: plan.spec.argv.first().cloned().unwrap_or_default(),
            cause: std::io::Error::from_raw_os_error(d.errno),
        }),
        STATE_FAILED => Err(Error::Child(
            String::from_utf8_lossy(&d.msg[..(d.len as usize).min(MSG_LEN)]).into_owned(),
        )),
        _ => Err(Error::Child(format!(
            "sandbox relay ended without a result ({:?})",
            ExitStatus::from_raw(status)
        ))),
    }
}

/// C: create the namespaces, fork init, relay signals, wait.
fn relay(plan: &Plan<'_>, report: &Report, parent: i32) -> Result<()> {
    die_with_parent(parent);
    let none = plan.spec.network == Network::None;
    // Joined before anything is unshared: the private network namespace is
    // owned by our user namespace (or the one it joins here).
    let mut new_userns_needed = true;
    if let Some(ns) = plan.private_ns {
        if let Some(user) = ns.user {
            join(user, libc::CLONE_NEWUSER, "setns(private user namespace)")?;
            new_userns_needed = false;
        }
        join(
            ns.net,
            libc::CLONE_NEWNET,
            "setns(private network namespace)",
        )?;
    }
    let (have_mntns, new_pidns) = match plan.mode {
        Mode::Namespaces { new_userns } => {
            let new_userns = new_userns && new_userns_needed;
            let mut flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
            if none {
                flags |= libc::CLONE_NEWNET;
            }
            if new_userns {
                flags |= libc::CLONE_NEWUSER;
            }
            // SAFETY: single-threaded child; no fds are shared across threads.
            if unsafe { libc::unshare(flags) } != 0 {
                return Err(Error::sys("unshare", std::io::Error::last_os_error()));
            }
            if new_userns {
                // Only our own IDs can be mapped without newuidmap; setgroups
                // must be denied for an unprivileged gid_map write.
                write_proc("/proc/self/setgroups", "deny")?;
                write_proc("/proc/self/uid_map", &format!("0 {} 1", plan.euid))?;
                write_proc("/proc/self/gid_map", &format!("0 {} 1", plan.egid))?;
            }
            (true, true)
        }
        Mode::Traced => {
            return Err(Error::Unsupported {
                mode: "traced",
                reason: "traced runs do not go through the namespace relay".into(),
            });
        }
        Mode::Chroot { mount_ns } => {
            // `Network::None` is a promise: without a network namespace, fail.
            // SAFETY: as above.
            if none && unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Unsupported {
                    mode: "chroot",
                    reason: format!(
                        "network none needs a network namespace: {}",
                        std::io::Error::last_os_error()
                    ),
                });
            }
            // The probe said yes: a failure now is an error, not a silent
            // run without the mounts the caller expects.
            // SAFETY: as above.
            if mount_ns && unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(Error::sys(
                    "unshare(mount namespace)",
                    std::io::Error::last_os_error(),
                ));
            }
            (mount_ns, false)
        }
    };
    block_forwarded(true);
    // SAFETY: see run().
    let me = unsafe { libc::getpid() };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        crate::init::init(plan, report, me, have_mntns, new_pidns, none);
    }
    let saved = forward_signals_to(pid);
    block_forwarded(false);
    let r = wait_pid(pid);
    restore_forwarding(saved);
    r.map_err(|e| Error::sys("waitpid", e))?;
    Ok(())
}
