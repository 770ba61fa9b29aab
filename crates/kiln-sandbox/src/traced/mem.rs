//! The tracee's registers and memory, for the tracer (x86_64): syscall
//! arguments by index, strings and pointer arrays read with
//! `process_vm_readv` (page by page: the next page may be unmapped), and
//! the [`Scratch`] area below the stack pointer (beyond the 128-byte red
//! zone) where translated paths are written with `process_vm_writev`.
//! It does not decide anything about the syscalls.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libc::user_regs_struct as Regs;
use rustix::io::Errno;

const RED_ZONE: u64 = 128;
pub(super) const PATH_MAX: usize = 4096;

/// Memory below the stack pointer for the strings this syscall needs.
pub(super) struct Scratch {
    next: u64,
    pub(super) writes: Vec<(u64, Vec<u8>)>,
}

impl Scratch {
    pub(super) fn new(rsp: u64) -> Scratch {
        Scratch {
            next: rsp.saturating_sub(RED_ZONE) & !15,
            writes: Vec::new(),
        }
    }

    /// Places `data`; returns its address in the tracee.
    pub(super) fn put(&mut self, data: Vec<u8>) -> u64 {
        self.next = (self.next - data.len() as u64) & !15;
        self.writes.push((self.next, data));
        self.next
    }

    pub(super) fn put_cstr(&mut self, s: &[u8]) -> u64 {
        let mut v = s.to_vec();
        v.push(0);
        self.put(v)
    }
}

pub(super) fn arg(r: &Regs, i: usize) -> u64 {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9][i]
}

pub(super) fn set_arg(r: &mut Regs, i: usize, v: u64) {
    match i {
        0 => r.rdi = v,
        1 => r.rsi = v,
        2 => r.rdx = v,
        3 => r.r10 = v,
        4 => r.r8 = v,
        _ => r.r9 = v,
    }
}

pub(super) fn get_regs(pid: i32) -> Result<Regs, Errno> {
    // SAFETY: zeroed plain data, filled by the kernel.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS into a valid struct of a stopped tracee.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut r as *mut Regs) } != 0 {
        return Err(Errno::from_raw_os_error(last_errno()));
    }
    Ok(r)
}

pub(super) fn set_regs(pid: i32, r: &Regs) -> Result<(), Errno> {
    // SAFETY: PTRACE_SETREGS from a valid struct.
    if unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0, r as *const Regs) } != 0 {
        return Err(Errno::from_raw_os_error(last_errno()));
    }
    Ok(())
}

pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Reads up to `buf.len()` bytes of the tracee at `addr`; returns how many.
pub(super) fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: valid iovecs; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

pub(super) fn write_mem(pid: i32, addr: u64, data: &[u8]) -> Result<(), Errno> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: valid iovecs; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n != data.len() as isize {
        return Err(Errno::FAULT);
    }
    Ok(())
}

/// A NUL-terminated string of the tracee (at most `PATH_MAX` bytes).
pub(super) fn read_cstr(pid: i32, addr: u64) -> Result<Vec<u8>, Errno> {
    if addr == 0 {
        return Err(Errno::FAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() <= PATH_MAX {
        // Never across a page: the next one may be unmapped.
        let room = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; room];
        let n = read_mem(pid, at, &mut buf);
        if n == 0 {
            return Err(Errno::FAULT);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(Errno::NAMETOOLONG)
}

pub(super) fn read_u64s(pid: i32, addr: u64, max: usize) -> Result<Vec<u64>, Errno> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let mut b = [0u8; 8];
        if read_mem(pid, at, &mut b) != 8 {
            return Err(Errno::FAULT);
        }
        let v = u64::from_le_bytes(b);
        if v == 0 {
            return Ok(out);
        }
        out.push(v);
        at += 8;
    }
    Err(Errno::TOOBIG)
}

pub(super) fn readlink_bytes(p: &[u8]) -> Option<Vec<u8>> {
    std::fs::read_link(OsStr::from_bytes(p))
        .ok()
        .map(|t| t.as_os_str().as_bytes().to_vec())
}
