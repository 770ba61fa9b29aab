//! The stat family (`stat`, `lstat`, `fstat`, `newfstatat`, `statx`),
//! answered at the syscall's entry: the tracer makes the call itself, on
//! the host path the tracee's path resolves to (or, for a file
//! descriptor, through `/proc/<pid>/fd/<n>`), shows the emulated owner
//! ([`super::fakeroot`]) in the result, writes it into the tracee's buffer
//! and skips the syscall. One stop per call instead of an entry and an
//! exit stop: stat is what interpreters call most (a Python import stats
//! each entry of its path), and every stop is two context switches.
//! Errors are the kernel's own (the tracer's call fails as the tracee's
//! would: same user, same path), `EFAULT` for a bad buffer included.

use std::ffi::CString;

use libc::user_regs_struct as Regs;
use rustix::io::Errno;

use super::mem::{Scratch, arg, last_errno};
use super::tracer::{Action, PathArg, Tracer};

const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: i32 = 0x100;
const AT_EMPTY_PATH: i32 = 0x1000;
/// `sizeof(struct stat)` and `sizeof(struct statx)` on x86_64: what the
/// kernel copies out.
const STAT_LEN: usize = 144;
const STATX_LEN: usize = 256;

/// The node a stat call names.
enum Node {
    /// A host path, resolved inside the rootfs.
    Path(Vec<u8>),
    /// A magic link of /proc (an fd or the cwd), to be followed.
    Through(Vec<u8>),
}

impl Tracer {
    /// Answers the stat-family syscall `nr` of `pid` (see the module doc).
    pub(super) fn stat(
        &mut self,
        pid: i32,
        nr: libc::c_long,
        r: &Regs,
        s: &mut Scratch,
    ) -> Result<Action, Errno> {
        let a = |i| arg(r, i);
        // (path argument, flags, statx mask, result buffer); no path
        // argument: fstat's fd in register 0.
        let (path, flags, mask, buf): (Option<PathArg>, i32, Option<u32>, u64) = match nr {
            libc::SYS_stat => (Some((None, 0, true)), 0, None, a(1)),
            libc::SYS_lstat => (Some((None, 0, false)), AT_SYMLINK_NOFOLLOW, None, a(1)),
            libc::SYS_fstat => (None, AT_EMPTY_PATH, None, a(1)),
            libc::SYS_newfstatat => {
                let f = a(3) as i32;
                let follow = f & AT_SYMLINK_NOFOLLOW == 0;
                (Some((Some(0), 1, follow)), f, None, a(2))
            }
            libc::SYS_statx => {
                let f = a(2) as i32;
                let follow = f & AT_SYMLINK_NOFOLLOW == 0;
                (Some((Some(0), 1, follow)), f, Some(a(3) as u32), a(4))
            }
            _ => return Ok(Action::Continue),
        };
        let node = match path {
            // Since 6.11 a NULL path with AT_EMPTY_PATH names the fd.
            Some(p) if !(a(p.1) == 0 && flags & AT_EMPTY_PATH != 0) => self
                .resolve(pid, r, p)?
                .map(|(t, _)| Node::Path(self.host(&t))),
            _ => None,
        };
        let node = match node {
            Some(n) => n,
            None if flags & AT_EMPTY_PATH == 0 => return Err(Errno::NOENT),
            None => {
                let fd = match path {
                    Some((Some(i), _, _)) => a(i) as i32,
                    Some(_) => return Err(Errno::NOENT),
                    None => a(0) as i32,
                };
                Node::Through(match fd {
                    AT_FDCWD if path.is_some() => format!("/proc/{pid}/cwd").into_bytes(),
                    fd if fd < 0 => return Err(Errno::BADF),
                    fd => format!("/proc/{pid}/fd/{fd}").into_bytes(),
                })
            }
        };
        let (host, through, call_flags) = match &node {
            Node::Path(h) => (h, false, flags & !AT_EMPTY_PATH),
            Node::Through(l) => (l, true, flags & !(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)),
        };
        let c = CString::new(host.as_slice()).map_err(|_| Errno::NOENT)?;
        let mut out = vec![0u8; if mask.is_some() { STATX_LEN } else { STAT_LEN }];
        // SAFETY: a NUL-terminated path and a buffer of the size the
        // kernel writes.
        let ret = unsafe {
            match mask {
                Some(m) => libc::syscall(
                    libc::SYS_statx,
                    AT_FDCWD,
                    c.as_ptr(),
                    call_flags,
                    m,
                    out.as_mut_ptr(),
                ),
                None => libc::syscall(
                    libc::SYS_newfstatat,
                    AT_FDCWD,
                    c.as_ptr(),
                    out.as_mut_ptr(),
                    call_flags,
                ),
            }
        };
        if ret != 0 {
            return Ok(Action::Skip(-(last_errno() as i64)));
        }
        let u32_at = |o: usize| u32::from_le_bytes(out[o..o + 4].try_into().expect("4"));
        let u64_at = |o: usize| u64::from_le_bytes(out[o..o + 8].try_into().expect("8"));
        let (uid_off, dev, ino) = if mask.is_some() {
            (20, libc::makedev(u32_at(136), u32_at(140)), u64_at(32))
        } else {
            (28, u64_at(0), u64_at(8))
        };
        let real = (u32_at(uid_off), u32_at(uid_off + 4));
        let shown = self.owners.shown(Some(host), through, dev, ino, real);
        out[uid_off..uid_off + 4].copy_from_slice(&shown.0.to_le_bytes());
        out[uid_off + 4..uid_off + 8].copy_from_slice(&shown.1.to_le_bytes());
        s.writes.push((buf, out));
        Ok(Action::Skip(0))
    }
}
