//! The tracer loop of traced isolation (x86_64): waits for every traced
//! thread, and at each seccomp stop rewrites the syscall: path arguments
//! are translated ([`super::paths`]) and the host path written into the
//! tracee's memory below its stack pointer (beyond the 128-byte red zone),
//! the register pointed at it; `getcwd`, `readlink` of magic links and the
//! `get*id` family are answered here (the syscall skipped); `chown` is
//! recorded, the stat family answered with the recorded owners
//! ([`super::stat`], [`super::fakeroot`]); `execve` of a script or of a dynamically linked
//! program runs its interpreter (resolved in the rootfs) explicitly, since
//! the kernel would look it up on the host. New processes are traced from
//! their first instruction (fork, vfork and clone events), signals are
//! passed on, and when the command exits whatever it left running is
//! killed.
//!
//! Not handled: a stack too close to the end of its mapping for the
//! scratch strings (the syscall then fails with `EFAULT`), group stops
//! (a stopped tracee is resumed), `/proc/self/exe` of a dynamically linked
//! program names its loader.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libc::user_regs_struct as Regs;
use rustix::io::Errno;

use super::fakeroot::{Creds, FS, Owners};
use super::mem::{
    Scratch, arg, get_regs, last_errno, read_cstr, read_mem, readlink_bytes, set_arg, set_regs,
    write_mem,
};
use super::paths::{Comps, Procs, Root, Target, is_magic, show};
use super::placement::Placement;

const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_EMPTY_PATH: u64 = 0x1000;

/// A warning from the tracer process (a forked child).
pub(crate) fn say(msg: &str) {
    crate::spawn::child_warn(msg);
}

/// What to do at a syscall's exit.
pub(super) enum Exit {
    /// The node at `host` did not exist before: if the syscall made it,
    /// it belongs to the creator's emulated fs IDs (a non-root USER).
    Created { host: Vec<u8>, owner: (u32, u32) },
    /// `sched_getaffinity` wrote a mask at `buf`: show the run's whole set.
    Affinity { buf: u64 },
    /// A syscall that may have made a symlink (see `paths`) is done.
    Relinked,
}

/// What the seccomp stop ends with.
pub(super) enum Action {
    Continue,
    /// Skip the syscall; it returns this.
    Skip(i64),
    /// Run it and stop at its exit.
    AtExit(Exit),
}

/// One traced run's state.
pub(crate) struct Tracer {
    pub(super) root: Root,
    pub(super) owners: Owners,
    pub(super) creds: HashMap<i32, Creds>,
    pub(super) traced: HashSet<i32>,
    started: HashSet<i32>,
    pending: HashMap<i32, Exit>,
    main: i32,
    place: Placement,
}

pub(super) struct Set<'a>(pub(super) &'a HashSet<i32>);

impl Procs for Set<'_> {
    fn is_traced(&self, pid: i32) -> bool {
        self.0.contains(&pid)
    }
}

/// A path argument: `(dirfd register, path register, follows the last
/// symlink)`.
pub(super) type PathArg = (Option<usize>, usize, bool);

impl Tracer {
    pub(crate) fn new(
        root: Root,
        owners: Owners,
        main: i32,
        creds: Creds,
        place: Placement,
    ) -> Tracer {
        Tracer {
            root,
            owners,
            creds: HashMap::from([(main, creds)]),
            traced: HashSet::from([main]),
            started: HashSet::from([main]),
            pending: HashMap::new(),
            main,
            place,
        }
    }

    /// Runs until the main process and everything traced are gone; returns
    /// the main process's wait status.
    pub(crate) fn run(mut self) -> i32 {
        let mut main_status = None;
        loop {
            self.place.sweep();
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if pid < 0 {
                // The placement tick (or a forwarded signal).
                if last_errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.forget(pid);
                if pid == self.main {
                    main_status = Some(status);
                    // As a RUN ends with its command: nothing outlives it.
                    for &p in &self.traced {
                        // SAFETY: kill of a traced process (not reaped yet,
                        // so the pid cannot have been reused).
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
                if main_status.is_some() && self.traced.is_empty() {
                    break;
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            self.adopt(pid);
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            let mut inject = 0;
            let mut resume = libc::PTRACE_CONT;
            if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_SECCOMP {
                self.place.syscall(pid);
                if self.on_seccomp(pid) {
                    resume = libc::PTRACE_SYSCALL;
                }
            } else if sig == libc::SIGTRAP | 0x80 {
                self.on_exit(pid);
            } else if sig == libc::SIGTRAP
                && (event == libc::PTRACE_EVENT_FORK
                    || event == libc::PTRACE_EVENT_VFORK
                    || event == libc::PTRACE_EVENT_CLONE)
            {
                let child = event_msg(pid) as i32;
                let creds = self.creds.get(&pid).cloned();
                if let Some(c) = creds {
                    self.creds.insert(child, c);
                }
                self.traced.insert(child);
                self.place.born(pid, child);
            } else if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXEC {
                let former = event_msg(pid) as i32;
                if former != pid {
                    if let Some(c) = self.creds.remove(&former) {
                        self.creds.insert(pid, c);
                    }
                    self.traced.remove(&former);
                    self.started.remove(&former);
                    self.place.gone(former);
                }
            } else if sig == libc::SIGSTOP && self.started.insert(pid) {
                // The first stop of a new traced process.
            } else if event == 0 && has_siginfo(pid) {
                inject = sig;
            }
            // SAFETY: resume a stopped tracee.
            unsafe { libc::ptrace(resume, pid, 0, inject as libc::c_long) };
        }
        main_status.unwrap_or(0)
    }

    fn forget(&mut self, pid: i32) {
        self.traced.remove(&pid);
        self.started.remove(&pid);
        self.creds.remove(&pid);
        self.pending.remove(&pid);
        self.place.gone(pid);
    }

    /// A stop of a pid not seen yet (its fork event may come later).
    fn adopt(&mut self, pid: i32) {
        if self.traced.insert(pid) || !self.creds.contains_key(&pid) {
            let parent = parent_of(pid);
            let c = self
                .creds
                .get(&parent)
                .or_else(|| self.creds.get(&self.main))
                .cloned();
            if let Some(c) = c {
                self.creds.insert(pid, c);
            }
        }
    }

    /// Returns whether to stop at the syscall's exit.
    fn on_seccomp(&mut self, pid: i32) -> bool {
        let Ok(mut regs) = get_regs(pid) else {
            return false;
        };
        let mut scratch = Scratch::new(regs.rsp);
        let action = match self.syscall(pid, &mut regs, &mut scratch) {
            Ok(a) => a,
            Err(e) => Action::Skip(-(e.raw_os_error() as i64)),
        };
        for (addr, data) in &scratch.writes {
            if write_mem(pid, *addr, data).is_err() {
                regs.orig_rax = u64::MAX;
                regs.rax = (-(libc::EFAULT as i64)) as u64;
                let _ = set_regs(pid, &regs);
                return false;
            }
        }
        match action {
            Action::Continue => {
                if !scratch.writes.is_empty() || regs.orig_rax == libc::SYS_execve as u64 {
                    let _ = set_regs(pid, &regs);
                }
                false
            }
            Action::Skip(ret) => {
                regs.orig_rax = u64::MAX;
                regs.rax = ret as u64;
                let _ = set_regs(pid, &regs);
                false
            }
            Action::AtExit(exit) => {
                if !scratch.writes.is_empty() {
                    let _ = set_regs(pid, &regs);
                }
                self.pending.insert(pid, exit);
                true
            }
        }
    }

    fn on_exit(&mut self, pid: i32) {
        let Some(exit) = self.pending.remove(&pid) else {
            return;
        };
        let Ok(regs) = get_regs(pid) else { return };
        match exit {
            Exit::Relinked => self.root.forget_plain(),
            Exit::Created { host, owner } => {
                // It may have made a symlink, too.
                self.root.forget_plain();
                if (regs.rax as i64) >= 0 {
                    let _ = self.owners.chown(&host, false, owner.0, owner.1);
                }
            }
            Exit::Affinity { buf } => {
                if let Some(set) = self.place.whole_set()
                    && (regs.rax as i64) > 0
                {
                    let n = (regs.rax as usize).min(set.len());
                    let _ = write_mem(pid, buf, &set[..n]);
                }
            }
        }
    }

    /// The container directory a relative path of `pid` starts from.
    pub(super) fn base(&self, pid: i32, dirfd: Option<i32>) -> Result<Comps, Errno> {
        let link = match dirfd {
            None | Some(AT_FDCWD) => format!("/proc/{pid}/cwd"),
            Some(fd) if fd < 0 => return Err(Errno::BADF),
            Some(fd) => format!("/proc/{pid}/fd/{fd}"),
        };
        let target = readlink_bytes(link.as_bytes()).ok_or(Errno::BADF)?;
        if !target.starts_with(b"/") {
            return Err(Errno::NOTDIR);
        }
        self.root.container_of(&target).ok_or(Errno::ACCESS)
    }

    /// Resolves the path argument of `pid`; `None` for an empty path.
    pub(super) fn resolve(
        &self,
        pid: i32,
        regs: &Regs,
        (dirfd, at, follow): PathArg,
    ) -> Result<Option<(Target, Vec<u8>)>, Errno> {
        let path = read_cstr(pid, arg(regs, at))?;
        if path.is_empty() {
            return Ok(None);
        }
        let base = if path.starts_with(b"/") {
            Vec::new()
        } else {
            self.base(pid, dirfd.map(|i| arg(regs, i) as i32))?
        };
        let t = self
            .root
            .resolve(&Set(&self.traced), pid, &base, &path, follow)?;
        Ok(Some((t, path)))
    }

    pub(super) fn host(&self, t: &Target) -> Vec<u8> {
        match t {
            Target::Container(c) => self.root.host_of(c),
            Target::Host(h) => h.clone(),
        }
    }

    /// Translates one path argument in place; returns the host path.
    fn translate(
        &self,
        pid: i32,
        regs: &mut Regs,
        s: &mut Scratch,
        p: PathArg,
    ) -> Result<Option<Vec<u8>>, Errno> {
        let Some((t, _)) = self.resolve(pid, regs, p)? else {
            return Ok(None);
        };
        let host = self.host(&t);
        let addr = s.put_cstr(&host);
        set_arg(regs, p.1, addr);
        Ok(Some(host))
    }

    fn syscall(&mut self, pid: i32, r: &mut Regs, s: &mut Scratch) -> Result<Action, Errno> {
        let nr = r.orig_rax as libc::c_long;
        let a = |i| arg(r, i);
        let open_follows = |flags: u64| {
            let f = flags as i32;
            f & libc::O_NOFOLLOW == 0 && !(f & libc::O_CREAT != 0 && f & libc::O_EXCL != 0)
        };
        if matches!(
            nr,
            libc::SYS_stat
                | libc::SYS_lstat
                | libc::SYS_fstat
                | libc::SYS_newfstatat
                | libc::SYS_statx
        ) {
            return self.stat(pid, nr, r, s);
        }
        let paths: Vec<PathArg> = match nr {
            libc::SYS_open => vec![(None, 0, open_follows(a(1)))],
            libc::SYS_openat => vec![(Some(0), 1, open_follows(a(2)))],
            libc::SYS_creat
            | libc::SYS_access
            | libc::SYS_truncate
            | libc::SYS_chdir
            | libc::SYS_chmod
            | libc::SYS_utime
            | libc::SYS_utimes
            | libc::SYS_statfs
            | libc::SYS_setxattr
            | libc::SYS_getxattr
            | libc::SYS_listxattr
            | libc::SYS_removexattr => vec![(None, 0, true)],
            libc::SYS_mkdir
            | libc::SYS_rmdir
            | libc::SYS_unlink
            | libc::SYS_readlink
            | libc::SYS_lsetxattr
            | libc::SYS_lgetxattr
            | libc::SYS_llistxattr
            | libc::SYS_lremovexattr => vec![(None, 0, false)],
            libc::SYS_rename | libc::SYS_link => vec![(None, 0, false), (None, 1, false)],
            libc::SYS_symlink => vec![(None, 1, false)],
            libc::SYS_symlinkat => vec![(Some(1), 2, false)],
            libc::SYS_inotify_add_watch => vec![(None, 1, true)],
            libc::SYS_mkdirat | libc::SYS_unlinkat | libc::SYS_readlinkat => {
                vec![(Some(0), 1, false)]
            }
            libc::SYS_fchmodat | libc::SYS_faccessat | libc::SYS_futimesat => {
                vec![(Some(0), 1, true)]
            }
            libc::SYS_faccessat2 | libc::SYS_fchmodat2 => {
                vec![(Some(0), 1, a(3) & AT_SYMLINK_NOFOLLOW == 0)]
            }
            libc::SYS_utimensat if a(1) != 0 => {
                vec![(Some(0), 1, a(3) & AT_SYMLINK_NOFOLLOW == 0)]
            }
            libc::SYS_renameat | libc::SYS_renameat2 => {
                vec![(Some(0), 1, false), (Some(2), 3, false)]
            }
            libc::SYS_linkat => vec![
                (Some(0), 1, a(4) & AT_SYMLINK_FOLLOW != 0),
                (Some(2), 3, false),
            ],
            libc::SYS_mknod | libc::SYS_mknodat => {
                let (dirfd, at, mode) = if nr == libc::SYS_mknod {
                    (None, 0, a(1))
                } else {
                    (Some(0), 1, a(2))
                };
                let kind = mode as u32 & libc::S_IFMT;
                if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
                    // Device nodes would need real privilege; say no as an
                    // unprivileged root would in a container.
                    return Ok(Action::Skip(-(libc::EPERM as i64)));
                }
                vec![(dirfd, at, false)]
            }
            libc::SYS_execve => return self.exec(pid, r, s, (None, 0, true), 1),
            libc::SYS_execveat => {
                let path = read_cstr(pid, a(1))?;
                if path.is_empty() && a(4) & AT_EMPTY_PATH != 0 {
                    return Ok(Action::Continue);
                }
                let follow = a(4) & AT_SYMLINK_NOFOLLOW == 0;
                // Becomes an execve of the translated path.
                let (argv, envp) = (a(2), a(3));
                let act = self.exec(pid, r, s, (Some(0), 1, follow), 2)?;
                r.orig_rax = libc::SYS_execve as u64;
                let _ = argv;
                r.rdi = r.rsi;
                r.rsi = r.rdx;
                r.rdx = envp;
                return Ok(act);
            }
            libc::SYS_getcwd => return self.getcwd(pid, r, s),
            libc::SYS_chown | libc::SYS_lchown => {
                let p = (None, 0, nr == libc::SYS_chown);
                return self.chown(pid, r, p, a(1), a(2));
            }
            libc::SYS_fchownat => {
                let p = (Some(0), 1, a(4) & AT_SYMLINK_NOFOLLOW == 0);
                return self.chown(pid, r, p, a(2), a(3));
            }
            libc::SYS_fchown => {
                let host = format!("/proc/{pid}/fd/{}", a(0) as i32).into_bytes();
                return Ok(self.chown_host(&host, true, a(1), a(2)));
            }
            libc::SYS_sched_getaffinity | libc::SYS_sched_setaffinity => {
                let target = match a(0) as i32 {
                    0 => pid,
                    t => t,
                };
                if !self.traced.contains(&target) {
                    return Ok(Action::Continue);
                }
                if nr == libc::SYS_sched_setaffinity {
                    self.place.own(target);
                    return Ok(Action::Continue);
                }
                if !self.place.hides(target) {
                    return Ok(Action::Continue);
                }
                return Ok(Action::AtExit(Exit::Affinity { buf: a(2) }));
            }
            libc::SYS_connect | libc::SYS_bind => return self.sockaddr(pid, r, s, 1, 2),
            libc::SYS_sendto if a(4) != 0 => return self.sockaddr(pid, r, s, 4, 5),
            libc::SYS_sendmsg => return self.sendmsg(pid, r, s),
            _ => return self.ids(pid, nr, r),
        };
        if (nr == libc::SYS_readlink || nr == libc::SYS_readlinkat)
            && let Some(a) = self.readlink_magic(pid, r, paths[0])?
        {
            return Ok(a);
        }
        let relinks = matches!(
            nr,
            libc::SYS_symlink
                | libc::SYS_symlinkat
                | libc::SYS_rename
                | libc::SYS_renameat
                | libc::SYS_renameat2
                | libc::SYS_link
                | libc::SYS_linkat
        );
        if relinks {
            self.root.forget_plain();
        }
        let mut last = None;
        for p in paths {
            last = self.translate(pid, r, s, p)?;
        }
        let creates = match nr {
            libc::SYS_open => a_flags(r, 1) & libc::O_CREAT != 0,
            libc::SYS_openat => a_flags(r, 2) & libc::O_CREAT != 0,
            libc::SYS_creat
            | libc::SYS_mkdir
            | libc::SYS_mkdirat
            | libc::SYS_mknod
            | libc::SYS_mknodat
            | libc::SYS_symlink
            | libc::SYS_symlinkat => true,
            _ => false,
        };
        if creates
            && let Some(host) = &last
            && let Some(c) = self.creds.get(&pid)
        {
            let owner = (c.uid[FS], c.gid[FS]);
            let exists = std::fs::symlink_metadata(OsStr::from_bytes(host)).is_ok();
            if owner != (0, 0) && !exists {
                return Ok(Action::AtExit(Exit::Created {
                    host: host.clone(),
                    owner,
                }));
            }
        }
        if relinks {
            return Ok(Action::AtExit(Exit::Relinked));
        }
        Ok(Action::Continue)
    }

    /// `readlink` of a magic link: answered with its container target.
    fn readlink_magic(&self, pid: i32, r: &Regs, p: PathArg) -> Result<Option<Action>, Errno> {
        let Some((Target::Container(c), _)) = self.resolve(pid, r, p)? else {
            return Ok(None);
        };
        if !is_magic(&c) {
            return Ok(None);
        }
        let text = match self.root.magic_target(&c)? {
            Target::Container(t) => show(&t),
            Target::Host(h) => readlink_bytes(&h).ok_or(Errno::NOENT)?,
        };
        let (buf, size) = (arg(r, p.1 + 1), arg(r, p.1 + 2) as usize);
        let n = text.len().min(size);
        write_mem(pid, buf, &text[..n])?;
        Ok(Some(Action::Skip(n as i64)))
    }

    fn getcwd(&self, pid: i32, r: &Regs, _s: &mut Scratch) -> Result<Action, Errno> {
        let cwd = show(&self.base(pid, None)?);
        let (buf, size) = (arg(r, 0), arg(r, 1) as usize);
        if cwd.len() + 1 > size {
            return Err(Errno::RANGE);
        }
        let mut v = cwd;
        v.push(0);
        write_mem(pid, buf, &v)?;
        Ok(Action::Skip(v.len() as i64))
    }

    fn chown(
        &mut self,
        pid: i32,
        r: &Regs,
        p: PathArg,
        uid: u64,
        gid: u64,
    ) -> Result<Action, Errno> {
        let host = match self.resolve(pid, r, p)? {
            Some((t, _)) => self.host(&t),
            None if p.0.is_some() && arg(r, 4) & AT_EMPTY_PATH != 0 => {
                format!("/proc/{pid}/fd/{}", arg(r, 0) as i32).into_bytes()
            }
            None => return Err(Errno::NOENT),
        };
        Ok(self.chown_host(&host, p.2, uid, gid))
    }

    fn chown_host(&mut self, host: &[u8], follow: bool, uid: u64, gid: u64) -> Action {
        match self.owners.chown(host, follow, uid as u32, gid as u32) {
            Ok(()) => Action::Skip(0),
            Err(e) => Action::Skip(-(e.raw_os_error() as i64)),
        }
    }

    /// A unix socket address at register `at` (length at `len_at`): its
    /// path is translated.
    fn sockaddr(
        &self,
        pid: i32,
        r: &mut Regs,
        s: &mut Scratch,
        at: usize,
        len_at: usize,
    ) -> Result<Action, Errno> {
        let (addr, len) = (arg(r, at), arg(r, len_at) as usize);
        if let Some((new, new_len)) = self.unix_addr(pid, addr, len, s)? {
            set_arg(r, at, new);
            set_arg(r, len_at, new_len);
        }
        Ok(Action::Continue)
    }

    fn sendmsg(&self, pid: i32, r: &mut Regs, s: &mut Scratch) -> Result<Action, Errno> {
        let mut hdr = [0u8; 56];
        if read_mem(pid, arg(r, 1), &mut hdr) != 56 {
            return Err(Errno::FAULT);
        }
        let name = u64::from_le_bytes(hdr[0..8].try_into().expect("8"));
        let len = u32::from_le_bytes(hdr[8..12].try_into().expect("4")) as usize;
        if let Some((new, new_len)) = self.unix_addr(pid, name, len, s)? {
            hdr[0..8].copy_from_slice(&new.to_le_bytes());
            hdr[8..12].copy_from_slice(&(new_len as u32).to_le_bytes());
            let at = s.put(hdr.to_vec());
            set_arg(r, 1, at);
        }
        Ok(Action::Continue)
    }

    fn unix_addr(
        &self,
        pid: i32,
        addr: u64,
        len: usize,
        s: &mut Scratch,
    ) -> Result<Option<(u64, u64)>, Errno> {
        if addr == 0 || len <= 2 {
            return Ok(None);
        }
        let mut sa = vec![0u8; len.min(110)];
        if read_mem(pid, addr, &mut sa) != sa.len() {
            return Err(Errno::FAULT);
        }
        let family = u16::from_le_bytes([sa[0], sa[1]]);
        if family != libc::AF_UNIX as u16 || sa[2] == 0 {
            return Ok(None); // not unix, or abstract
        }
        let path: Vec<u8> = sa[2..].iter().take_while(|&&b| b != 0).copied().collect();
        let base = if path.starts_with(b"/") {
            Vec::new()
        } else {
            self.base(pid, None)?
        };
        let t = self
            .root
            .resolve(&Set(&self.traced), pid, &base, &path, true)?;
        let host = self.host(&t);
        if host.len() + 1 > 108 {
            return Err(Errno::NAMETOOLONG);
        }
        let mut out = sa[..2].to_vec();
        out.extend_from_slice(&host);
        out.push(0);
        let n = out.len() as u64;
        Ok(Some((s.put(out), n)))
    }
}

/// The open flags in register `i` (the syscall's, as passed).
fn a_flags(r: &Regs, i: usize) -> i32 {
    arg(r, i) as i32
}

fn event_msg(pid: i32) -> u64 {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: PTRACE_GETEVENTMSG into a valid c_ulong.
    unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            pid,
            0,
            &mut msg as *mut libc::c_ulong,
        )
    };
    msg
}

/// Whether the stop is a signal-delivery stop (a group stop has no siginfo).
fn has_siginfo(pid: i32) -> bool {
    // SAFETY: zeroed plain data, filled by the kernel.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETSIGINFO into a valid siginfo_t.
    unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            0,
            &mut info as *mut libc::siginfo_t,
        ) == 0
    }
}

/// The parent (or, for a thread, its process) of `pid`, from /proc.
fn parent_of(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    match (field("Tgid:"), field("PPid:")) {
        (Some(t), _) if t != pid => t,
        (_, Some(p)) => p,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traced::paths::split;

    #[test]
    fn split_and_show() {
        assert_eq!(show(&split(b"/a//b/./c/")), b"/a/b/c".to_vec());
        assert_eq!(show(&[]), b"/".to_vec());
    }
}
