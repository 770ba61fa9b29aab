//! Rootless by design: [`ensure_root_in_userns`] makes the whole kiln process
//! root of a user namespace before it does anything else.
//!
//! Run by an unprivileged user, it re-executes `/proc/self/exe` (same argv,
//! plus the env marker [`MARKER_ENV`]) in a new user + mount namespace. The
//! child unshares, tells the parent through a pipe, and waits; the parent
//! maps the user to 0 and the user's `/etc/subuid` / `/etc/subgid` ranges to
//! 1..N with `newuidmap`/`newgidmap` (the setuid helpers, so `setgroups` stays
//! allowed and apt can drop privileges to `_apt`), then releases the child.
//! The parent forwards signals sent to it, waits, and exits with the child's
//! status (re-raising a fatal signal). With no subordinate range only root is
//! mapped, with a warning: files owned by other IDs then read as nobody.
//!
//! As real root it does nothing: the sandbox uses namespaces without a user
//! namespace. It does not set up networking or cgroups.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::error::{Error, Result};

/// Set in the re-executed child; its presence means "already in the namespace".
pub const MARKER_ENV: &str = "_KILN_SANDBOX_USERNS";

/// One `/etc/subuid`-style range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// Where [`ensure_root_in_userns`] left the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernsState {
    /// Real root in the initial user namespace; nothing was changed.
    Root,
    /// Root of a user namespace kiln set up. `mapped_ids` is how many IDs
    /// are mapped (1 + the subordinate ranges); 1 means only root.
    InUserns { mapped_ids: u64 },
    /// Unprivileged, and the host refuses user namespaces (e.g. a default
    /// Kubernetes pod, or `user.max_user_namespaces=0`). A warning was
    /// printed; `Isolation::Auto` will pick chroot.
    Unavailable { reason: String },
}

/// Parse `/etc/subuid`-style text for `user` (name) or `uid`; malformed lines
/// are skipped.
pub fn parse_subid(text: &str, user: &str, uid: u32) -> Vec<IdRange> {
    let uid_s = uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let who = f.next()?;
            let start = f.next()?.trim().parse().ok()?;
            let count: u32 = f.next()?.trim().parse().ok()?;
            ((who == user || who == uid_s) && count > 0).then_some(IdRange { start, count })
        })
        .collect()
}

/// Subordinate ranges of the current user from `/etc/subuid` and `/etc/subgid`.
pub fn current_subids() -> (Vec<IdRange>, Vec<IdRange>) {
    let uid = rustix::process::getuid().as_raw();
    let name = username(uid);
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    (
        parse_subid(&read("/etc/subuid"), &name, uid),
        parse_subid(&read("/etc/subgid"), &name, uid),
    )
}

fn username(uid: u32) -> String {
    let passwd = crate::user::read_db(std::path::Path::new("/etc/passwd"));
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            f.next()?;
            (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// True when this process is in a user namespace other than the initial one
/// (the initial one maps all 2^32-1 IDs identically).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Make this process root: see the module doc. Call it first thing in
/// `main`, while the process is single-threaded. For an unprivileged caller
/// it does not return in the original process (that one exits with the
/// namespaced child's status); it returns in the child.
pub fn ensure_root_in_userns() -> Result<UsernsState> {
    let euid = rustix::process::geteuid().as_raw();
    if std::env::var_os(MARKER_ENV).is_some() {
        if euid != 0 {
            return Err(Error::Userns(format!(
                "{MARKER_ENV} is set but this process is uid {euid}, not root of a user namespace"
            )));
        }
        let mapped = std::fs::read_to_string("/proc/self/uid_map")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .sum();
        return Ok(UsernsState::InUserns { mapped_ids: mapped });
    }
    if euid == 0 {
        return Ok(UsernsState::Root);
    }
    // Probe first (a fork, ~1 ms): a refusal is a host property to report,
    // not a failure of kiln.
    if let Err(reason) = crate::info::probe_userns() {
        let reason = reason.trim().to_string();
        crate::warn(&format!(
            "user namespaces are refused here ({reason}); running without"
        ));
        return Ok(UsernsState::Unavailable { reason });
    }
    let code = reexec()?;
    std::process::exit(code)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| Error::sys("pipe2", e))
}

/// The parent's half: spawn, map, wait. Returns the exit code to use.
fn reexec() -> Result<i32> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let (subuid, subgid) = current_subids();
    if subuid.is_empty() || subgid.is_empty() {
        crate::warn(&format!(
            "no subordinate ID range for {} in /etc/subuid or /etc/subgid: \
             only root is mapped; files owned by other IDs will read as nobody and \
             privilege-dropping tools (apt) will fail",
            username(uid)
        ));
    }
    let (to_parent_r, to_parent_w) = pipe()?;
    let (to_child_r, to_child_w) = pipe()?;
    let (tp_w, tc_r, tc_w) = (
        to_parent_w.as_raw_fd(),
        to_child_r.as_raw_fd(),
        to_child_w.as_raw_fd(),
    );

    // The child blocks in pre_exec until the maps are written, while
    // Command::spawn blocks until it execs: so a thread does the mapping.
    let mapper = std::thread::spawn(move || -> Result<()> {
        let mut r = std::fs::File::from(to_parent_r);
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf)
            .map_err(|e| Error::Userns(format!("child did not unshare: {e}")))?;
        let pid = i32::from_ne_bytes(buf);
        write_maps(pid, uid, gid, &subuid, &subgid)?;
        let mut w = std::fs::File::from(to_child_w);
        w.write_all(b"1")
            .map_err(|e| Error::Userns(format!("release child: {e}")))?;
        Ok(())
    });

    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "kiln".into());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(argv0).args(args).env(MARKER_ENV, "1");
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls on fds that are open in the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            // Our copy of the release pipe's write end would keep read() from
            // ever seeing EOF if the parent gives up.
            libc::close(tc_w);
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(tp_w, pid.as_ptr().cast(), 4) != 4 {
                return Err(std::io::Error::last_os_error());
            }
            let mut b = 0u8;
            if libc::read(tc_r, (&mut b as *mut u8).cast(), 1) != 1 {
                return Err(std::io::Error::other("uid/gid mapping failed"));
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // Close our copies so the mapper thread sees EOF if the child died.
    drop(to_parent_w);
    drop(to_child_r);
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let why = match mapper.join() {
                Ok(Err(m)) => m.to_string(),
                _ => String::new(),
            };
            return Err(Error::Userns(format!(
                "re-exec in a user namespace: {e} {why}"
            )));
        }
    };
    match mapper.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(Error::Userns("mapper thread panicked".into())),
    }

    let pid = child.id() as i32;
    let _saved = crate::spawn::forward_signals_to(pid);
    let status = crate::spawn::wait_pid(pid).map_err(|e| Error::sys("waitpid", e))?;
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // Die the same way, so our parent (a shell) sees the signal.
        // SAFETY: resetting a disposition and signalling ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
        return Ok(128 + sig);
    }
    Ok(libc::WEXITSTATUS(status))
}

fn write_maps(pid: i32, uid: u32, gid: u32, subuid: &[IdRange], subgid: &[IdRange]) -> Result<()> {
    let helper = |tool: &str, id: u32, ranges: &[IdRange]| -> Result<()> {
        let mut args = vec![pid.to_string(), "0".into(), id.to_string(), "1".into()];
        let mut next: u64 = 1;
        for r in ranges {
            args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
            next += u64::from(r.count);
        }
        let out = Command::new(tool)
            .args(&args)
            .output()
            .map_err(|e| Error::Userns(format!("{tool}: {e}")))?;
        if !out.status.success() {
            return Err(Error::Userns(format!(
                "{tool} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    };
    let uid_ok = helper("newuidmap", uid, subuid);
    let gid_ok = helper("newgidmap", gid, subgid);
    match (uid_ok, gid_ok) {
        (Ok(()), Ok(())) => Ok(()),
        (u, g) if subuid.is_empty() && subgid.is_empty() => {
            // No helpers or no ranges: map just ourselves, which the kernel
            // allows a parent to do (setgroups must be denied for gid_map).
            tracing::debug!("newuidmap/newgidmap: {u:?} {g:?}; writing single maps");
            let p = |f: &str| format!("/proc/{pid}/{f}");
            let w = |f: &str, d: String| {
                std::fs::write(p(f), d).map_err(|e| Error::path("write", p(f), e))
            };
            w("uid_map", format!("0 {uid} 1"))?;
            w("setgroups", "deny".into())?;
            w("gid_map", format!("0 {gid} 1"))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_parsing() {
        let t = "alice:100000:65536\n# c\nbob:x:1\n1000:300000:10\nalice:500000:0\nbad\n";
        assert_eq!(
            parse_subid(t, "alice", 1000),
            vec![
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(parse_subid(t, "bob", 5).is_empty());
    }
}
