//! The seccomp BPF filter of traced isolation, written by hand (a linear
//! list: one compare and one return per syscall). A process may install
//! it without any privilege once `no_new_privs` is set. It:
//! - kills a process that makes a syscall of another architecture (the
//!   numbers below are x86_64's; an x32 syscall gets `ENOSYS`);
//! - refuses (`EPERM`) what would leave or blind the tracing: `ptrace`,
//!   `process_vm_readv`/`writev`, `pidfd_getfd`, `seccomp` and
//!   `prctl(PR_SET_SECCOMP)`, `clone` with `CLONE_UNTRACED`, handles
//!   (`name_to_handle_at`, `open_by_handle_at`), `chroot`, `pivot_root`,
//!   `mount` and the new mount API, `unshare`, `setns`, `bpf`,
//!   `fanotify_mark`, `quotactl`, `uselib`, `acct`, swap;
//! - refuses with `ENOSYS` (callers fall back): `clone3` (its flags are
//!   behind a pointer the filter cannot read), `io_uring_*` (its operations
//!   take paths without a syscall), `openat2` (its `RESOLVE_*` flags would
//!   act on the translated path) and the `*xattrat` family;
//! - returns `SECCOMP_RET_TRACE` for the path-taking syscalls, the
//!   uid/gid, chown and stat families, which the tracer rewrites, and
//!   `sched_{get,set}affinity`, which must not show where the tracer
//!   places threads (`placement`);
//! - allows the rest, unseen (the cost of tracing is paid only there).

use libc::{c_long, sock_filter};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// Syscalls the tracer sees.
pub(crate) const TRACED: &[c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_execve,
    libc::SYS_truncate,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_rename,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_creat,
    libc::SYS_link,
    libc::SYS_unlink,
    libc::SYS_symlink,
    libc::SYS_readlink,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_utime,
    libc::SYS_mknod,
    libc::SYS_statfs,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_utimes,
    libc::SYS_inotify_add_watch,
    libc::SYS_openat,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_fchownat,
    libc::SYS_futimesat,
    libc::SYS_newfstatat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_fchmodat,
    libc::SYS_faccessat,
    libc::SYS_utimensat,
    libc::SYS_execveat,
    libc::SYS_renameat2,
    libc::SYS_statx,
    libc::SYS_faccessat2,
    libc::SYS_fchmodat2,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_getuid,
    libc::SYS_getgid,
    libc::SYS_geteuid,
    libc::SYS_getegid,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_getgroups,
    libc::SYS_setgroups,
    libc::SYS_setresuid,
    libc::SYS_getresuid,
    libc::SYS_setresgid,
    libc::SYS_getresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
];

/// Refused with `EPERM`.
const REFUSED: &[c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_seccomp,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_chroot,
    libc::SYS_pivot_root,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_bpf,
    libc::SYS_fanotify_mark,
    libc::SYS_quotactl,
    libc::SYS_uselib,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
];

/// Refused with `ENOSYS`: callers fall back to what the tracer handles.
/// 463-466: setxattrat, getxattrat, listxattrat, removexattrat (6.13).
const MISSING: &[c_long] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_openat2,
    463,
    464,
    465,
    466,
];

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The program (see the module doc).
pub(crate) fn program() -> Vec<sock_filter> {
    let errno = |e: i32| SECCOMP_RET_ERRNO | (e as u32 & 0xffff);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, errno(libc::ENOSYS)),
        // clone: CLONE_UNTRACED would make a child the tracer never sees.
        jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 4),
        stmt(BPF_LD_W_ABS, ARG0_LOW),
        jump(BPF_JSET_K, libc::CLONE_UNTRACED as u32, 0, 1),
        stmt(BPF_RET_K, errno(libc::EPERM)),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        // prctl(PR_SET_SECCOMP) would stack a filter that can outrank ours.
        jump(BPF_JEQ_K, libc::SYS_prctl as u32, 0, 4),
        stmt(BPF_LD_W_ABS, ARG0_LOW),
        jump(BPF_JEQ_K, libc::PR_SET_SECCOMP as u32, 0, 1),
        stmt(BPF_RET_K, errno(libc::EPERM)),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ];
    let mut rule = |nrs: &[c_long], ret: u32| {
        for &nr in nrs {
            p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
            p.push(stmt(BPF_RET_K, ret));
        }
    };
    rule(REFUSED, errno(libc::EPERM));
    rule(MISSING, errno(libc::ENOSYS));
    rule(TRACED, SECCOMP_RET_TRACE);
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p
}

/// Installs the filter on the calling thread (after `no_new_privs`);
/// returns the errno on failure. Async-signal-safe apart from the
/// allocation of `prog`, which the caller made before forking.
pub(crate) fn install(prog: &[sock_filter]) -> Result<(), i32> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut sock_filter,
    };
    // SAFETY: a valid program for the lifetime of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fits_and_jumps_stay_in_it() {
        let p = program();
        assert!(p.len() < 4096);
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < p.len());
            }
        }
        assert_eq!(p.last().unwrap().k, SECCOMP_RET_ALLOW);
        // No syscall is in two lists.
        for nr in TRACED {
            assert!(!REFUSED.contains(nr) && !MISSING.contains(nr), "{nr}");
        }
    }
}
