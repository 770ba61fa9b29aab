//! Path translation of traced isolation: a path a traced process passes to
//! the kernel (a container path, absolute or relative to its working
//! directory or to a directory fd) becomes the host path of the same node
//! inside the step's rootfs directory. Resolution is done here, component
//! by component: `..` never climbs above the rootfs, every symlink met on
//! the way is read and followed inside the rootfs (an absolute target is
//! relative to the rootfs), at most 40 of them (then `ELOOP`). The last
//! component is followed only when the syscall follows it, so the path
//! handed to the kernel has no symlink left that it would follow, and no
//! `..`.
//!
//! Presented at their places: `/proc` is the host's procfs, but a
//! `/proc/<pid>` of a process outside the traced tree does not exist
//! (`ENOENT`), and the magic links `root`, `cwd`, `exe` and `fd/<n>` of the
//! traced ones are resolved here, to container paths (a `root` is the
//! rootfs), never by the kernel; `map_files` is refused (`EACCES`). A
//! directory fd leading outside the rootfs is refused (`EACCES`).
//! `/dev/{null,zero,full,random,urandom,tty,ptmx}` and `/dev/pts/` are
//! the host's.
//!
//! Host paths found not to be symlinks are remembered, so that a deep path
//! (a Python import stats many) costs no `readlink` per component each
//! time. Only a symlink appearing can make that memory wrong, and in the
//! rootfs only a traced syscall can make one (`symlink*`, `rename*`,
//! `link*`; io_uring and mounts are refused): the tracer forgets it all
//! ([`Root::forget_plain`]) at the entry and at the exit of each, so the
//! window is the same as without it.
//!
//! Not done here: the race of a traced process swapping a directory for a
//! symlink between this resolution and the kernel's (PRoot has it too); see
//! the module doc of `traced`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::io::Errno;

/// Host device nodes shown at `/dev/<name>`.
pub(crate) const HOST_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Whether `comps` (starting with `dev`) is a host node shown in `/dev`:
/// one of [`HOST_DEVICES`], or the host's `ptmx` and `pts/` (terminals
/// for `posix_openpt`; a pty's slave is no way out of the rootfs).
fn is_host_dev(comps: &[Vec<u8>]) -> bool {
    match comps {
        [_, n] => n == b"ptmx" || n == b"pts" || HOST_DEVICES.iter().any(|d| d.as_bytes() == n),
        [_, pts, _] => pts == b"pts",
        _ => false,
    }
}

/// Symlinks followed in one resolution before `ELOOP`, as the kernel.
const MAX_LINKS: u32 = 40;

/// Host paths remembered as not symlinks before the memory starts over.
const MAX_PLAIN: usize = 200_000;

/// Container path components (no `.`, `..` or empty ones).
pub(crate) type Comps = Vec<Vec<u8>>;

/// Which processes are traced: their `/proc/<pid>` entries exist.
pub(crate) trait Procs {
    fn is_traced(&self, pid: i32) -> bool;
}

/// A rootfs directory and the rules to translate paths into it.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    /// Canonical host path of the rootfs, without a trailing slash.
    host: Vec<u8>,
    /// Host paths that exist and are not symlinks (see the module doc).
    plain: RefCell<HashSet<Vec<u8>>>,
}

/// What a resolved path leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A container path (inside the rootfs, or `/proc`, `/dev` nodes).
    Container(Comps),
    /// A host path that is not a container path: a `/proc/<pid>/fd/<n>` of
    /// a pipe, socket or host file given to the step (its stdio).
    Host(Vec<u8>),
}

impl Root {
    pub(crate) fn new(dir: &Path) -> std::io::Result<Root> {
        let canon = std::fs::canonicalize(dir)?;
        let mut host = canon.as_os_str().as_bytes().to_vec();
        while host.len() > 1 && host.ends_with(b"/") {
            host.pop();
        }
        if host == b"/" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the host's / cannot be a traced rootfs",
            ));
        }
        Ok(Root {
            host,
            plain: RefCell::default(),
        })
    }

    /// Forgets which paths are not symlinks: one may have appeared.
    pub(crate) fn forget_plain(&self) {
        self.plain.borrow_mut().clear();
    }

    #[cfg(test)]
    pub(crate) fn host(&self) -> &[u8] {
        &self.host
    }

    /// The host path of a resolved container path.
    pub(crate) fn host_of(&self, comps: &[Vec<u8>]) -> Vec<u8> {
        let first = comps.first().map(Vec::as_slice);
        let passthrough = match first {
            Some(b"proc") => true,
            Some(b"dev") => is_host_dev(comps),
            _ => false,
        };
        let mut out = if passthrough {
            Vec::new()
        } else {
            self.host.clone()
        };
        if comps.is_empty() {
            return if passthrough { b"/".to_vec() } else { out };
        }
        for c in comps {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        out
    }

    /// The container path of a host path (as the kernel reports a cwd or
    /// an fd's link), or `None` when it is outside the rootfs and not a
    /// presented host place.
    pub(crate) fn container_of(&self, host: &[u8]) -> Option<Comps> {
        let rest = if host == self.host.as_slice() {
            Some(&b""[..])
        } else {
            host.strip_prefix(self.host.as_slice())
                .and_then(|r| r.strip_prefix(b"/"))
        };
        if let Some(rest) = rest {
            return Some(split(rest));
        }
        let comps = split(host);
        match comps.first().map(Vec::as_slice) {
            Some(b"proc") if host.starts_with(b"/") => Some(comps),
            Some(b"dev") if is_host_dev(&comps) => Some(comps),
            _ => None,
        }
    }

    /// Resolves `path` (as passed by process `pid`) against `base` (the
    /// container directory a relative path starts from). `follow_last`:
    /// whether the syscall follows a symlink in the last component.
    pub(crate) fn resolve(
        &self,
        procs: &dyn Procs,
        pid: i32,
        base: &[Vec<u8>],
        path: &[u8],
        follow_last: bool,
    ) -> Result<Target, Errno> {
        let mut stack: Comps = if path.starts_with(b"/") {
            Vec::new()
        } else {
            base.to_vec()
        };
        let mut pending: std::collections::VecDeque<Vec<u8>> = split(path).into();
        let mut links = 0;
        while let Some(c) = pending.pop_front() {
            if c == b".." {
                stack.pop();
                continue;
            }
            stack.push(c);
            let last = pending.is_empty();
            if stack.first().map(Vec::as_slice) == Some(b"proc") {
                match self.proc_step(procs, pid, &mut stack, last && !follow_last)? {
                    ProcStep::Plain => {}
                    ProcStep::Jumped => continue,
                    ProcStep::Host(h) => {
                        if pending.is_empty() {
                            return Ok(Target::Host(h));
                        }
                        return Err(Errno::NOTDIR);
                    }
                }
                // The rest of /proc is the host's procfs, whose symlinks
                // (other than the magic ones above) stay inside /proc.
                continue;
            }
            if last && !follow_last {
                break;
            }
            let host = self.host_of(&stack);
            if self.plain.borrow().contains(&host) {
                continue;
            }
            let target = match std::fs::read_link(OsStr::from_bytes(&host)) {
                Ok(t) => t,
                Err(e) => {
                    // EINVAL: it exists and is not a symlink.
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        let mut plain = self.plain.borrow_mut();
                        if plain.len() >= MAX_PLAIN {
                            plain.clear();
                        }
                        plain.insert(host);
                    }
                    continue;
                }
            };
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::LOOP);
            }
            stack.pop();
            let t = target.as_os_str().as_bytes();
            if t.starts_with(b"/") {
                stack.clear();
            }
            for c in split(t).into_iter().rev() {
                pending.push_front(c);
            }
        }
        Ok(Target::Container(stack))
    }

    /// One component under `/proc` was pushed: checks the pid and resolves
    /// magic links (unless `keep_link`: the syscall acts on the link).
    fn proc_step(
        &self,
        procs: &dyn Procs,
        pid: i32,
        stack: &mut Comps,
        keep_link: bool,
    ) -> Result<ProcStep, Errno> {
        // `self` and `thread-self` name the calling process.
        if stack.len() == 2 {
            let c = stack[1].clone();
            if c == b"self" || c == b"thread-self" {
                stack[1] = tgid_of(pid).to_string().into_bytes();
                if c == b"thread-self" {
                    stack.push(b"task".to_vec());
                    stack.push(pid.to_string().into_bytes());
                }
                return Ok(ProcStep::Plain);
            }
            if let Some(n) = number(&c)
                && !procs.is_traced(n)
            {
                return Err(Errno::NOENT);
            }
            return Ok(ProcStep::Plain);
        }
        // /proc/<pid>/task/<tid> must be traced too.
        if stack.len() == 4 && stack[2] == b"task" {
            if let Some(n) = number(&stack[3])
                && !procs.is_traced(n)
            {
                return Err(Errno::NOENT);
            }
            return Ok(ProcStep::Plain);
        }
        // The process directory a magic link belongs to: /proc/N or
        // /proc/N/task/T.
        let (proc_dir, rest) = if stack.len() >= 5 && stack[2] == b"task" {
            (&stack[..4], &stack[4..])
        } else if stack.len() >= 3 {
            (&stack[..2], &stack[2..])
        } else {
            return Ok(ProcStep::Plain);
        };
        if number(&proc_dir[1]).is_none() {
            return Ok(ProcStep::Plain);
        }
        let magic = match rest {
            [one] if one == b"root" || one == b"cwd" || one == b"exe" => true,
            [fd, _] if fd == b"fd" => true,
            [m, ..] if m == b"map_files" => return Err(Errno::ACCESS),
            _ => false,
        };
        if !magic || keep_link {
            return Ok(ProcStep::Plain);
        }
        match self.magic_target(stack)? {
            Target::Container(c) => {
                *stack = c;
                Ok(ProcStep::Jumped)
            }
            Target::Host(h) => Ok(ProcStep::Host(h)),
        }
    }

    /// Where the magic link at `link` (`/proc/N/{root,cwd,exe,fd/M}`, or
    /// under `task/T`) leads, in container terms.
    pub(crate) fn magic_target(&self, link: &[Vec<u8>]) -> Result<Target, Errno> {
        if link.last().map(Vec::as_slice) == Some(b"root") {
            return Ok(Target::Container(Vec::new()));
        }
        let host = self.host_of(link);
        let target = std::fs::read_link(OsStr::from_bytes(&host)).map_err(errno)?;
        let t = target.as_os_str().as_bytes();
        if !t.starts_with(b"/") {
            // pipe:[N], socket:[N], anon_inode:...: no path to leave by.
            return Ok(Target::Host(host));
        }
        if let Some(c) = self.container_of(t) {
            return Ok(Target::Container(c));
        }
        // A host file outside the rootfs: stdio the step was given (a log
        // file) may be reopened; a directory is a way out.
        let md = std::fs::metadata(OsStr::from_bytes(&host)).map_err(errno)?;
        let is_fd = link.len() >= 2 && link[link.len() - 2] == b"fd";
        if md.is_dir() || !is_fd {
            return Err(Errno::ACCESS);
        }
        Ok(Target::Host(host))
    }
}

/// Whether `comps` names a magic link of a process: `/proc/N/{root,cwd,exe}`,
/// `/proc/N/fd/M`, or the same under `/proc/N/task/T`.
pub(crate) fn is_magic(comps: &[Vec<u8>]) -> bool {
    if comps.first().map(Vec::as_slice) != Some(b"proc") || comps.len() < 3 {
        return false;
    }
    if number(&comps[1]).is_none() {
        return false;
    }
    let rest = if comps.len() >= 5 && comps[2] == b"task" {
        &comps[4..]
    } else {
        &comps[2..]
    };
    match rest {
        [one] => one == b"root" || one == b"cwd" || one == b"exe",
        [fd, n] => fd == b"fd" && number(n).is_some(),
        _ => false,
    }
}

enum ProcStep {
    /// Nothing special: continue with the next component.
    Plain,
    /// The stack was replaced by a magic link's container target.
    Jumped,
    /// A magic link to a host object that is not a path.
    Host(Vec<u8>),
}

fn number(c: &[u8]) -> Option<i32> {
    std::str::from_utf8(c).ok()?.parse().ok()
}

/// The thread group of `tid` (`/proc/self` names the process, not the
/// thread).
fn tgid_of(tid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tid)
}

pub(crate) fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The components of a path, `.` and empty ones dropped (`..` kept).
pub(crate) fn split(p: &[u8]) -> Comps {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// `/a/b` for components.
pub(crate) fn show(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for c in comps {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Only(i32);
    impl Procs for Only {
        fn is_traced(&self, pid: i32) -> bool {
            pid == self.0
        }
    }

    fn fixture() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("rootfs");
        std::fs::create_dir_all(r.join("etc/sub")).unwrap();
        std::fs::write(r.join("etc/passwd"), "root").unwrap();
        symlink("/", r.join("escape")).unwrap();
        symlink("../../../../..", r.join("etc/up")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        symlink("sub", r.join("etc/rel")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        symlink("/nowhere/new", r.join("dangling")).unwrap();
        let root = Root::new(&r).unwrap();
        (t, root)
    }

    fn host(root: &Root, base: &[&str], p: &str, follow: bool) -> Result<String, Errno> {
        let me = std::process::id() as i32;
        let base: Comps = base.iter().map(|c| c.as_bytes().to_vec()).collect();
        match root.resolve(&Only(me), me, &base, p.as_bytes(), follow)? {
            Target::Container(c) => Ok(String::from_utf8(root.host_of(&c)).unwrap()),
            Target::Host(h) => Ok(format!("HOST:{}", String::from_utf8(h).unwrap())),
        }
    }

    #[test]
    fn absolute_relative_and_dotdot_stay_inside() {
        let (_t, root) = fixture();
        let r = String::from_utf8(root.host().to_vec()).unwrap();
        assert_eq!(
            host(&root, &[], "/etc/passwd", true).unwrap(),
            format!("{r}/etc/passwd")
        );
        assert_eq!(
            host(&root, &["etc"], "passwd", true).unwrap(),
            format!("{r}/etc/passwd")
        );
        assert_eq!(
            host(&root, &["etc"], "../../../../x", true).unwrap(),
            format!("{r}/x")
        );
        assert_eq!(
            host(&root, &[], "/../../etc/./passwd", true).unwrap(),
            format!("{r}/etc/passwd")
        );
        assert_eq!(host(&root, &[], "/", true).unwrap(), r);
    }

    #[test]
    fn a_symlink_that_replaces_a_directory_is_followed_once_forgotten() {
        let (_t, root) = fixture();
        let dir = Path::new(OsStr::from_bytes(root.host())).join("swap");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            host(&root, &[], "/swap/x", true).unwrap(),
            host(&root, &[], "/swap", true).unwrap() + "/x"
        );
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink("/etc", &dir).unwrap();
        root.forget_plain();
        let etc = host(&root, &[], "/etc", true).unwrap();
        assert_eq!(host(&root, &[], "/swap/x", true).unwrap(), etc + "/x");
    }

    #[test]
    fn symlinks_are_followed_inside_the_root() {
        let (_t, root) = fixture();
        let r = String::from_utf8(root.host().to_vec()).unwrap();
        assert_eq!(
            host(&root, &[], "/escape/etc/passwd", true).unwrap(),
            format!("{r}/etc/passwd")
        );
        assert_eq!(host(&root, &[], "/escape", true).unwrap(), r);
        assert_eq!(
            host(&root, &[], "/etc/up/canary", true).unwrap(),
            format!("{r}/canary")
        );
        assert_eq!(
            host(&root, &[], "/abs", true).unwrap(),
            format!("{r}/etc/passwd")
        );
        assert_eq!(
            host(&root, &[], "/etc/rel/x", true).unwrap(),
            format!("{r}/etc/sub/x")
        );
        // The last component is left alone when the syscall does not follow.
        assert_eq!(
            host(&root, &[], "/escape", false).unwrap(),
            format!("{r}/escape")
        );
        assert_eq!(
            host(&root, &[], "/escape/abs", false).unwrap(),
            format!("{r}/abs")
        );
        // A dangling absolute link is created inside the root.
        assert_eq!(
            host(&root, &[], "/dangling", true).unwrap(),
            format!("{r}/nowhere/new")
        );
        assert_eq!(host(&root, &[], "/loop", true), Err(Errno::LOOP));
    }

    #[test]
    fn proc_magic_links_do_not_lead_out() {
        let (_t, root) = fixture();
        let r = String::from_utf8(root.host().to_vec()).unwrap();
        let me = std::process::id();
        assert_eq!(
            host(&root, &[], "/proc/self/root/etc/passwd", true).unwrap(),
            format!("{r}/etc/passwd")
        );
        assert_eq!(host(&root, &[], "/proc/self/root", true).unwrap(), r);
        assert_eq!(
            host(&root, &[], &format!("/proc/{me}/root/x"), true).unwrap(),
            format!("{r}/x")
        );
        // Processes that are not traced have no /proc entry.
        assert_eq!(
            host(&root, &[], "/proc/1/root/canary", true),
            Err(Errno::NOENT)
        );
        // Our cwd is outside this root: refused, not followed.
        assert_eq!(
            host(&root, &[], "/proc/self/cwd/x", true),
            Err(Errno::ACCESS)
        );
        // A magic link kept as it is (readlink, lstat) names the proc path.
        assert_eq!(
            host(&root, &[], "/proc/self/root", false).unwrap(),
            format!("/proc/{me}/root")
        );
        assert_eq!(
            host(&root, &[], "/proc/cpuinfo", true).unwrap(),
            "/proc/cpuinfo"
        );
        assert_eq!(
            host(&root, &[], "/proc/self/map_files/x", true),
            Err(Errno::ACCESS)
        );
    }

    #[test]
    fn fd_links_to_host_directories_are_refused() {
        let (t, root) = fixture();
        let outside = std::fs::File::open(t.path()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&outside);
        assert_eq!(
            host(&root, &[], &format!("/proc/self/fd/{fd}/x"), true),
            Err(Errno::ACCESS)
        );
        let inside = std::fs::File::open(t.path().join("rootfs/etc")).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&inside);
        let r = String::from_utf8(root.host().to_vec()).unwrap();
        assert_eq!(
            host(&root, &[], &format!("/proc/self/fd/{fd}/passwd"), true).unwrap(),
            format!("{r}/etc/passwd")
        );
    }

    #[test]
    fn devices_and_reverse_mapping() {
        let (_t, root) = fixture();
        assert_eq!(host(&root, &[], "/dev/null", true).unwrap(), "/dev/null");
        let r = String::from_utf8(root.host().to_vec()).unwrap();
        assert_eq!(
            host(&root, &[], "/dev/sda", true).unwrap(),
            format!("{r}/dev/sda")
        );
        assert_eq!(
            root.container_of(format!("{r}/a/b").as_bytes()),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(root.container_of(r.as_bytes()), Some(vec![]));
        assert_eq!(root.container_of(format!("{r}x/a").as_bytes()), None);
        assert_eq!(root.container_of(b"/etc/passwd"), None);
        assert!(Root::new(Path::new("/")).is_err());
    }
}
