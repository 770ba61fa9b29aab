//! What the host supports, found by trying rather than guessing: whether a
//! user namespace can be created, whether overlayfs mounts inside one (tried
//! for real in a forked child, on a throwaway temp dir), the current user's
//! subordinate ID ranges, the kernel, and the isolation `Isolation::Auto`
//! picks. It changes nothing on the host (the probe's temp dir is removed).

use std::fmt;

use crate::Isolation;
use crate::userns::{IdRange, current_subids, in_user_namespace};

/// The answer of [`probe`].
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `uname -sr`.
    pub kernel: String,
    pub euid: u32,
    /// Already inside a (non-initial) user namespace, e.g. kiln's re-exec.
    pub in_user_namespace: bool,
    /// `Ok` if a new user namespace can be created, else why not.
    pub user_namespaces: Result<(), String>,
    /// `Ok` if overlayfs (with `userxattr`) mounts inside a user namespace.
    pub overlay_in_userns: Result<(), String>,
    pub subuid: Vec<IdRange>,
    pub subgid: Vec<IdRange>,
    /// `newuidmap` and `newgidmap` found in PATH.
    pub newuidmap: bool,
    /// What `Isolation::Auto` resolves to here.
    pub auto_isolation: Isolation,
    /// Each isolation mode (`rootless`, `root`, `chroot`, `traced`): whether it works
    /// here (with how, for chroot), else what the host refused.
    pub isolation_modes: Vec<(Isolation, Result<String, String>)>,
    /// The default network (`Network::Private`): the slirp4netns it uses,
    /// or why it cannot work here.
    pub private_network: Result<std::path::PathBuf, String>,
}

/// Whether the private network's helper is there and, rootless, can open
/// the tun device (it must be 0666 as udev makes it).
fn probe_private_network(euid: u32) -> Result<std::path::PathBuf, String> {
    let slirp = crate::private_net::find_slirp4netns().ok_or_else(|| {
        "slirp4netns not in PATH (install it, or use --network=host --allow network.host)"
            .to_string()
    })?;
    let tun = std::path::Path::new("/dev/net/tun");
    let rootless = euid != 0 || in_user_namespace();
    if rootless
        && rustix::fs::access(
            tun,
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        )
        .is_err()
    {
        return Err(format!(
            "{} cannot be opened rootless (chmod 0666 /dev/net/tun, as udev does)",
            tun.display()
        ));
    }
    Ok(slirp)
}

/// Fork a child that runs `f` and exits 0 on success; the error text comes
/// back through a pipe. Needed because `unshare(CLONE_NEWUSER)` is refused to
/// multi-threaded processes and must not change the caller anyway.
pub(crate) fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(r);
        let code = match f() {
            Ok(()) => 0,
            Err(msg) => {
                let _ = rustix::io::write(&w, msg.as_bytes());
                1
            }
        };
        // SAFETY: end the child.
        unsafe { libc::_exit(code) };
    }
    drop(w);
    let mut msg = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = rustix::io::read(&r, &mut buf) {
        msg.extend_from_slice(&buf[..n]);
    }
    let status = crate::spawn::wait_pid(pid).map_err(|e| format!("waitpid: {e}"))?;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&msg).into_owned())
    }
}

fn unshare(flags: i32) -> Result<(), String> {
    // SAFETY: called in a forked single-threaded child.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(format!("unshare: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Can this process create a user namespace?
pub fn probe_userns() -> Result<(), String> {
    in_child(|| unshare(libc::CLONE_NEWUSER))
}

/// Can this process make a mount namespace (chroot isolation's mounts)?
pub(crate) fn probe_mount_ns() -> Result<(), String> {
    in_child(|| unshare(libc::CLONE_NEWNS))
}

/// Can this process chroot (root with `CAP_SYS_CHROOT`)?
pub(crate) fn probe_chroot() -> Result<(), String> {
    in_child(|| rustix::process::chroot("/").map_err(|e| format!("chroot: {e}")))
}

/// Can this process make a network namespace?
pub(crate) fn probe_netns() -> Result<(), String> {
    in_child(|| unshare(libc::CLONE_NEWNET))
}

/// Can runs get the namespaces of `Isolation::Rootless`/`Root` here (a new
/// user namespace too when `new_userns`)? The error names what the host
/// refused, e.g. "unshare(user, mount, pid, ipc, uts): Operation not
/// permitted".
pub(crate) fn probe_isolation(new_userns: bool) -> Result<(), String> {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let mut names = "mount, pid, ipc, uts";
    if new_userns {
        flags |= libc::CLONE_NEWUSER;
        names = "user, mount, pid, ipc, uts";
    }
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    in_child(|| {
        // SAFETY: called in a forked single-threaded child.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(format!(
                "unshare({names} namespaces): {}",
                std::io::Error::last_os_error()
            ));
        }
        if new_userns {
            let w = |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("{f}: {e}"));
            w("/proc/self/setgroups", "deny".into())?;
            w("/proc/self/uid_map", format!("0 {uid} 1"))?;
            w("/proc/self/gid_map", format!("0 {gid} 1"))?;
        }
        // A run mounts a procfs as PID 1 of its pid namespace. Inside a
        // container whose /proc has masked paths (runc's, docker's, a
        // pod's), the kernel refuses that to a nested user namespace, so
        // unshare alone would promise too much.
        in_child(|| {
            let attrs = rustix::mount::MountAttrFlags::MOUNT_ATTR_NOSUID
                | rustix::mount::MountAttrFlags::MOUNT_ATTR_NODEV
                | rustix::mount::MountAttrFlags::MOUNT_ATTR_NOEXEC;
            crate::mountapi::new_mount("proc", &[], attrs)
                .map(drop)
                .map_err(|e| format!("a procfs mount in a new pid namespace ({e})"))
        })
    })
}

/// Mount an overlay with `userxattr` inside a fresh user + mount namespace.
pub fn probe_overlay_in_userns() -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-probe-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let d = dir.path().to_path_buf();
    for s in ["l", "u", "w", "m"] {
        std::fs::create_dir(d.join(s)).map_err(|e| format!("mkdir: {e}"))?;
    }
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let work_dir = d.join("w/work");
    let result = in_child(move || {
        unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS)?;
        let w = |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("{f}: {e}"));
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("0 {uid} 1"))?;
        w("/proc/self/gid_map", format!("0 {gid} 1"))?;
        crate::mounts::overlay(&[d.join("l")], &d.join("u"), &d.join("w"), &d.join("m"))
            .map_err(|e| e.to_string())
    });
    // overlayfs leaves work/work with mode 000, which an unprivileged
    // remove_dir_all cannot descend into.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(work_dir, std::fs::Permissions::from_mode(0o700));
    result
}

/// Whether each isolation mode works here, tried in forked children.
pub fn probe_isolation_modes() -> Vec<(Isolation, Result<String, String>)> {
    let euid = rustix::process::geteuid().as_raw();
    let in_userns = in_user_namespace();
    let rootless = probe_isolation(!(euid == 0 && in_userns))
        .map(|()| "user, mount, pid, ipc, uts namespaces".to_string());
    let root = if euid != 0 || in_userns {
        Err("needs real root (not root of a user namespace)".to_string())
    } else {
        probe_isolation(false).map(|()| "mount, pid, ipc, uts namespaces".to_string())
    };
    let chroot = probe_chroot().map(|()| match probe_mount_ns() {
        Ok(()) => "chroot with a mount namespace".to_string(),
        Err(_) => "chroot without a mount namespace: /dev, /etc files and RUN mounts are \
                   copied in; copy snapshotter; no pid/net/uts isolation"
            .to_string(),
    });
    let traced = crate::traced::probe().map(|()| {
        "traced (ptrace + seccomp, no privilege): paths resolved in the rootfs, uid 0 \
         emulated; copy snapshotter; no pid/net/uts isolation"
            .to_string()
    });
    vec![
        (Isolation::Rootless, rootless),
        (Isolation::Root, root),
        (Isolation::Chroot, chroot),
        (Isolation::Traced, traced),
    ]
}

/// Probe the host (forks a few short-lived children; ~ms).
pub fn probe() -> HostInfo {
    let u = rustix::system::uname();
    let (subuid, subgid) = current_subids();
    let in_path = |t: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).exists()))
            .unwrap_or(false)
    };
    HostInfo {
        kernel: format!(
            "{} {}",
            u.sysname().to_string_lossy(),
            u.release().to_string_lossy()
        ),
        euid: rustix::process::geteuid().as_raw(),
        in_user_namespace: in_user_namespace(),
        user_namespaces: probe_userns(),
        overlay_in_userns: probe_overlay_in_userns(),
        subuid,
        subgid,
        newuidmap: in_path("newuidmap") && in_path("newgidmap"),
        auto_isolation: crate::resolve_auto().0,
        isolation_modes: probe_isolation_modes(),
        private_network: probe_private_network(rustix::process::geteuid().as_raw()),
    }
}

impl fmt::Display for HostInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |r: &Result<(), String>| match r {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("no ({})", e.trim()),
        };
        let ranges = |v: &[IdRange]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|r| format!("{}+{}", r.start, r.count))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(f, "kernel:              {}", self.kernel)?;
        writeln!(f, "effective uid:       {}", self.euid)?;
        writeln!(f, "in user namespace:   {}", self.in_user_namespace)?;
        writeln!(f, "user namespaces:     {}", yn(&self.user_namespaces))?;
        writeln!(f, "overlay in userns:   {}", yn(&self.overlay_in_userns))?;
        writeln!(f, "subuid ranges:       {}", ranges(&self.subuid))?;
        writeln!(f, "subgid ranges:       {}", ranges(&self.subgid))?;
        writeln!(f, "newuidmap/newgidmap: {}", self.newuidmap)?;
        writeln!(f, "isolation (auto):    {}", self.auto_isolation)?;
        for (mode, works) in &self.isolation_modes {
            let key = format!("isolation {mode}:");
            match works {
                Ok(how) => writeln!(f, "{key:<21}yes ({how})")?,
                Err(why) => writeln!(f, "{key:<21}no ({})", why.trim())?,
            }
        }
        match &self.private_network {
            Ok(slirp) => write!(
                f,
                "network (default):   private, via {} (host's loopback unreachable)",
                slirp.display()
            ),
            Err(e) => write!(f, "network (default):   private: unavailable: {e}"),
        }
    }
}
