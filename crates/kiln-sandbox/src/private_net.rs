//! The private network of [`crate::Network::Private`]: one network namespace
//! per [`crate::Sandbox`], made on its first private run and joined (`setns`)
//! by every later one, with `slirp4netns` attached once as its way out.
//!
//! Why this shape: a RUN must not see the host's loopback (services that
//! listen only on the host's 127.0.0.1 trust everything that reaches them),
//! yet apt and pip must still reach the world, rootless and without a
//! daemon. slirp4netns is a user-mode TCP/IP stack: it owns a tap device in
//! the namespace and re-makes each connection from the host side as an
//! ordinary socket, so it needs no privilege; `--disable-host-loopback`
//! refuses the guest's connections to the host's loopback (10.0.2.2).
//! Starting it costs ~10 ms, as much as a whole RUN, so it is paid once per
//! sandbox rather than once per run.
//!
//! Steps of `PrivateNet::start`: a forked *holder* unshares the network
//! namespace (and, when the sandbox makes its own single-ID user namespace,
//! that too), brings `lo` up, makes link-local 169.254.0.0/16 unreachable
//! (cloud metadata services live there and trust whoever asks), reports, and
//! waits. The parent opens the holder's namespace files, starts slirp4netns
//! on them and waits for its ready byte; then the holder is killed: the open
//! namespace fds keep the namespaces alive for as long as the sandbox.
//! Runs hold no CAP_NET_ADMIN, so a RUN cannot change the shared namespace's
//! routes or addresses for the RUNs after it.
//!
//! slirp4netns exits when its `--exit-fd` pipe closes, i.e. when the sandbox
//! is dropped or kiln dies, whatever killed it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spawn::{die_with_parent, wait_pid};

/// The helper program that connects the namespace to the outside.
pub const SLIRP4NETNS: &str = "slirp4netns";

/// The DNS forwarder slirp4netns serves inside the namespace (it relays to
/// the host's resolver, loopback ones such as systemd-resolved's included).
pub const SLIRP_DNS: &str = "10.0.2.3";

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running private network: the namespace fds and its slirp4netns.
pub(crate) struct PrivateNet {
    /// The network namespace every private run joins.
    pub netns: OwnedFd,
    /// The user namespace that owns it, when the sandbox makes its own
    /// (runs join it instead of unsharing a new one).
    pub userns: Option<OwnedFd>,
    slirp: Child,
    /// Closing it tells slirp4netns to exit.
    exit_w: Option<OwnedFd>,
}

/// Where slirp4netns is, if it is in PATH.
pub fn find_slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(SLIRP4NETNS))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn missing_tool() -> Error {
    Error::Network(format!(
        "the private network of a run needs {SLIRP4NETNS}, which is not in PATH; install it \
         (Debian/Ubuntu: apt-get install {SLIRP4NETNS}; Fedora: dnf install {SLIRP4NETNS}), \
         or share the host's network on purpose (kiln: --network=host --allow network.host)"
    ))
}

impl PrivateNet {
    /// Make the namespace and attach slirp4netns. `own_userns`: the runs
    /// make their own user namespace mapping only `euid`/`egid` to root.
    pub(crate) fn start(own_userns: bool, euid: u32, egid: u32) -> Result<PrivateNet> {
        let slirp_bin = find_slirp4netns().ok_or_else(missing_tool)?;
        let holder = Holder::fork(own_userns, euid, egid)?;
        let ns_path = |ns: &str| PathBuf::from(format!("/proc/{}/ns/{ns}", holder.pid));
        let open = |p: PathBuf| {
            File::open(&p)
                .map(OwnedFd::from)
                .map_err(|e| Error::path("open", p, e))
        };
        let netns = open(ns_path("net"))?;
        let userns = if own_userns {
            Some(open(ns_path("user"))?)
        } else {
            None
        };

        let (ready_r, ready_w) = cloexec_pipe()?;
        let (exit_r, exit_w) = cloexec_pipe()?;
        let log = tempfile::tempfile().map_err(|e| Error::sys("tempfile", e))?;
        let mut cmd = Command::new(&slirp_bin);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--ready-fd=3",
            "--exit-fd=4",
            "--netns-type=path",
        ]);
        if own_userns {
            cmd.arg(format!("--userns-path={}", ns_path("user").display()));
        } else {
            // It parses the guest's packets, as (namespace) root: confine it
            // to an empty mount namespace without capabilities and a syscall
            // filter (~4 ms). Both need the privilege of root of a user
            // namespace, which a caller without one lacks.
            cmd.args(["--enable-sandbox", "--enable-seccomp"]);
        }
        cmd.arg(ns_path("net")).arg("tap0");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone().map_err(|e| Error::sys("dup", e))?);
        let (ready_fd, exit_fd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        // SAFETY: only fcntl/dup2 (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, so neither dup2 clobbers the other's
                // source; dup2 leaves the copies without FD_CLOEXEC.
                let high_ready = libc::fcntl(ready_fd, libc::F_DUPFD_CLOEXEC, 10);
                let high_exit = libc::fcntl(exit_fd, libc::F_DUPFD_CLOEXEC, 10);
                if high_ready < 0
                    || high_exit < 0
                    || libc::dup2(high_ready, 3) < 0
                    || libc::dup2(high_exit, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let slirp = cmd
            .spawn()
            .map_err(|e| Error::path("spawn", &slirp_bin, e))?;
        drop((ready_w, exit_r));
        let mut net = PrivateNet {
            netns,
            userns,
            slirp,
            exit_w: Some(exit_w),
        };
        let ready = net.wait_ready(&ready_r);
        drop(holder);
        if let Err(why) = ready {
            let mut log = log;
            let mut text = String::new();
            let _ = log.rewind();
            let _ = log.take(4096).read_to_string(&mut text);
            // Without udev (minimal VMs, some containers) the tun device
            // stays at the kernel's 0600, which only real root may open.
            let hint = if text.contains("/dev/net/tun") {
                "; a rootless slirp4netns needs /dev/net/tun readable and writable by \
                 everyone (mode 0666, as udev makes it: chmod 0666 /dev/net/tun)"
            } else {
                ""
            };
            return Err(Error::Network(format!(
                "{} did not configure the private network: {why}{}{hint}",
                slirp_bin.display(),
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!("; it said: {}", text.trim())
                }
            )));
        }
        Ok(net)
    }

    /// Wait for slirp4netns's ready byte, watching that it still runs (other
    /// children forked meanwhile may hold a copy of the pipe's write end, so
    /// EOF alone cannot tell that it died).
    fn wait_ready(&mut self, ready_r: &OwnedFd) -> std::result::Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut pfd = libc::pollfd {
                fd: ready_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 50) };
            if n > 0 {
                let mut b = [0u8; 1];
                return match rustix::io::read(ready_r, &mut b) {
                    Ok(1) => Ok(()),
                    Ok(_) => Err("it exited".into()),
                    Err(e) => Err(format!("read of its ready fd: {e}")),
                };
            }
            if let Ok(Some(status)) = self.slirp.try_wait() {
                return Err(format!("it exited ({status})"));
            }
            if Instant::now() > deadline {
                return Err(format!("no answer in {} s", READY_TIMEOUT.as_secs()));
            }
        }
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        drop(self.exit_w.take());
        // A forked run of another thread may still hold a copy of the exit
        // pipe; do not wait for it to close.
        let _ = self.slirp.kill();
        // Its exit takes ~25 ms (the kernel tears the tap device down):
        // reap it on the side rather than make every caller wait. A process
        // that exits first leaves nothing: the kill is already sent.
        let pid = self.slirp.id() as i32;
        let reaped = std::thread::Builder::new()
            .name("kiln-slirp-reaper".into())
            .spawn(move || wait_pid(pid));
        if reaped.is_err() {
            let _ = self.slirp.wait();
        }
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| Error::sys("pipe", e))
}

/// The forked process whose namespaces become the private network.
struct Holder {
    pid: i32,
}

impl Holder {
    fn fork(own_userns: bool, euid: u32, egid: u32) -> Result<Holder> {
        let (r, w) = cloexec_pipe()?;
        // SAFETY: getpid is always safe.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child only makes syscalls and small allocations, then
        // waits to be killed; it never returns into the caller's code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::sys("fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(r);
            die_with_parent(parent);
            let msg = match holder_setup(own_userns, euid, egid) {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = rustix::io::write(&w, msg.as_bytes());
            drop(w);
            loop {
                // SAFETY: wait for SIGKILL.
                unsafe { libc::pause() };
            }
        }
        drop(w);
        let holder = Holder { pid };
        let mut msg = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = rustix::io::read(&r, &mut buf) {
            msg.extend_from_slice(&buf[..n]);
            if msg == b"ok" {
                break;
            }
        }
        match &msg[..] {
            b"ok" => Ok(holder),
            b"" => Err(Error::Network(
                "the private network's holder process died".into(),
            )),
            m => Err(Error::Network(format!(
                "cannot make a private network namespace here ({}); share the host's \
                 network on purpose instead (kiln: --network=host --allow network.host)",
                String::from_utf8_lossy(m)
            ))),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = wait_pid(self.pid);
    }
}

/// In the holder: the namespaces, `lo` up, link-local unreachable.
fn holder_setup(own_userns: bool, euid: u32, egid: u32) -> Result<()> {
    let mut flags = libc::CLONE_NEWNET;
    if own_userns {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: a forked, single-threaded child.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(Error::sys(
            "unshare(CLONE_NEWNET)",
            std::io::Error::last_os_error(),
        ));
    }
    if own_userns {
        let write =
            |p: &str, s: String| std::fs::write(p, s).map_err(|e| Error::path("write", p, e));
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("0 {euid} 1"))?;
        write("/proc/self/gid_map", format!("0 {egid} 1"))?;
    }
    crate::net::loopback_up()?;
    crate::net::reject_route([169, 254, 0, 0], 16)
}
