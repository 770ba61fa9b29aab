//! Capabilities of the sandboxed process: Docker's default set for root in the
//! container, nothing else. The bounding set is cut to that list (so neither
//! the process nor anything it execs, setuid binaries included, can regain the
//! rest), the ambient set is cleared and the inheritable set emptied (as Docker
//! does since CVE-2022-24769). For root, execve then yields permitted =
//! effective = bounding set; for a non-root user the kernel clears permitted
//! and effective on `setuid`, so the user gets no capability unless a file
//! capability grants one (within the bounding set). This module does not
//! handle seccomp or LSMs: kiln runs build steps the user wrote, not untrusted
//! services; namespaces plus the reduced bounding set are the boundary.

use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::error::{Error, Result};

/// Docker's default capabilities (moby `oci/caps/defaults.go`), by number
/// (from linux/capability.h; the libc crate does not export them).
pub const DEFAULT_CAPS: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (4, "CAP_FSETID"),
    (3, "CAP_FOWNER"),
    (27, "CAP_MKNOD"),
    (13, "CAP_NET_RAW"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (31, "CAP_SETFCAP"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (18, "CAP_SYS_CHROOT"),
    (5, "CAP_KILL"),
    (29, "CAP_AUDIT_WRITE"),
];

/// `CAP_SYS_CHROOT`, which chroot isolation takes away from the command:
/// with it, root escapes a chroot (chroot into a subdirectory, then climb
/// `..` from the old root). Without it, the command's permitted set is also
/// no longer a superset of the caps of the container's other root processes
/// (kiln included), which the kernel requires to `ptrace` them without
/// `CAP_SYS_PTRACE`: no pid namespace, yet no escape through a debugger.
pub const CAP_SYS_CHROOT: u32 = 18;

fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0, |m, (c, _)| m | (1u64 << c))
}

/// The running kernel's highest capability number (read before
/// `pivot_root`: in chroot mode the container may have no /proc).
pub fn kernel_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Step 1, while still fully privileged (needs CAP_SETPCAP): cut the bounding
/// set and clear the ambient set; `last_cap` from [`kernel_last_cap`].
/// The capabilities in `also_drop` (a mask by number) go too.
pub fn restrict_bounding_set(last_cap: u32, also_drop: u64) -> Result<()> {
    let keep = default_mask() & !also_drop;
    for cap in 0..=last_cap.min(63) {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number; no pointers.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        // EINVAL: the kernel does not know this capability; nothing to drop.
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(Error::sys("prctl(PR_CAPBSET_DROP)", e));
            }
        }
    }
    // SAFETY: no pointers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Step 2, after `setresuid`: permitted/effective reduced to the default set
/// (a no-op for a non-root user, whose sets the kernel already cleared),
/// inheritable emptied; without the capabilities in `also_drop`.
pub fn set_process_caps(also_drop: u64) -> Result<()> {
    let cur = rustix::thread::capabilities(None).map_err(|e| Error::sys("capget", e))?;
    let keep = CapabilitySet::from_bits_retain(default_mask() & !also_drop);
    let sets = CapabilitySets {
        effective: cur.effective & keep,
        permitted: cur.permitted & keep,
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, sets).map_err(|e| Error::sys("capset", e))
}
