//! The uid/gid syscalls of a traced process, answered from its emulated
//! credentials ([`super::fakeroot::Creds`]) without running them:
//! `get*id`, `getgroups` report, `set*id`, `setgroups` change and succeed.

use libc::user_regs_struct as Regs;
use rustix::io::Errno;

use super::fakeroot::{Creds, EFFECTIVE, FS, REAL, SAVED, set_ids};
use super::mem::{arg, read_mem, write_mem};
use super::tracer::{Action, Tracer};

impl Tracer {
    /// The uid/gid family, answered from the emulated credentials.
    pub(super) fn ids(&mut self, pid: i32, nr: libc::c_long, r: &Regs) -> Result<Action, Errno> {
        let c = self
            .creds
            .entry(pid)
            .or_insert_with(|| Creds::new(0, 0, Vec::new()));
        let a = |i| arg(r, i) as u32;
        let ret = match nr {
            libc::SYS_getuid => c.uid[REAL] as i64,
            libc::SYS_geteuid => c.uid[EFFECTIVE] as i64,
            libc::SYS_getgid => c.gid[REAL] as i64,
            libc::SYS_getegid => c.gid[EFFECTIVE] as i64,
            libc::SYS_setuid => {
                if c.uid[EFFECTIVE] == 0 {
                    set_ids(&mut c.uid, a(0), a(0), a(0));
                } else {
                    set_ids(&mut c.uid, u32::MAX, a(0), u32::MAX);
                }
                0
            }
            libc::SYS_setgid => {
                if c.uid[EFFECTIVE] == 0 {
                    set_ids(&mut c.gid, a(0), a(0), a(0));
                } else {
                    set_ids(&mut c.gid, u32::MAX, a(0), u32::MAX);
                }
                0
            }
            libc::SYS_setreuid => {
                set_ids(&mut c.uid, a(0), a(1), a(1));
                0
            }
            libc::SYS_setregid => {
                set_ids(&mut c.gid, a(0), a(1), a(1));
                0
            }
            libc::SYS_setresuid => {
                set_ids(&mut c.uid, a(0), a(1), a(2));
                0
            }
            libc::SYS_setresgid => {
                set_ids(&mut c.gid, a(0), a(1), a(2));
                0
            }
            libc::SYS_setfsuid => {
                let old = c.uid[FS];
                if a(0) != u32::MAX {
                    c.uid[FS] = a(0);
                }
                old as i64
            }
            libc::SYS_setfsgid => {
                let old = c.gid[FS];
                if a(0) != u32::MAX {
                    c.gid[FS] = a(0);
                }
                old as i64
            }
            libc::SYS_getresuid | libc::SYS_getresgid => {
                let ids = if nr == libc::SYS_getresuid {
                    c.uid
                } else {
                    c.gid
                };
                for (i, id) in [ids[REAL], ids[EFFECTIVE], ids[SAVED]].iter().enumerate() {
                    write_mem(pid, arg(r, i), &id.to_le_bytes())?;
                }
                0
            }
            libc::SYS_getgroups => {
                let n = c.groups.len();
                let size = arg(r, 0) as i32;
                if size != 0 {
                    if (size as usize) < n || size < 0 {
                        return Err(Errno::INVAL);
                    }
                    let bytes: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
                    write_mem(pid, arg(r, 1), &bytes)?;
                }
                n as i64
            }
            libc::SYS_setgroups => {
                let n = (arg(r, 0) as usize).min(65536);
                let mut bytes = vec![0u8; n * 4];
                if n > 0 && read_mem(pid, arg(r, 1), &mut bytes) != bytes.len() {
                    return Err(Errno::FAULT);
                }
                c.groups = bytes
                    .chunks(4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
                    .collect();
                0
            }
            _ => return Ok(Action::Continue),
        };
        Ok(Action::Skip(ret))
    }
}
