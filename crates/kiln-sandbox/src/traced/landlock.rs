//! A Landlock ruleset under the tracer: the traced RUN may touch files in
//! its rootfs, `/proc` and the host devices it is shown, and nothing else
//! of the host's filesystem.
//!
//! The tracer resolves every path inside the rootfs, but between its
//! resolution and the kernel's a RUN racing itself can swap a directory
//! for a symlink (PRoot's known hole). Landlock is checked by the kernel
//! on the file actually reached, so that race ends at a refusal instead of
//! a host file. It needs no privilege (only `no_new_privs`, which the
//! traced child sets anyway). Where the kernel or the seccomp profile
//! refuses Landlock, the mode runs without it and says so once.
//!
//! It does not restrict the network, signals or unix sockets reached by
//! path (Landlock before ABI 6 does not), nor the tracer itself: only the
//! traced child and what it starts are under the ruleset.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::paths::HOST_DEVICES;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
/// `REMOVE_DIR` up to `MAKE_SYM`: ABI 1's other rights.
const ABI1_ALL: u64 = (1 << 13) - 1;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The rights this kernel's Landlock knows (by its ABI version), or why
/// there is none.
fn handled_rights() -> Result<u64, String> {
    // SAFETY: the version query takes no attribute.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Err(format!(
            "Landlock is unavailable ({})",
            std::io::Error::last_os_error()
        ));
    }
    let mut rights = ABI1_ALL;
    if abi >= 2 {
        rights |= REFER;
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    Ok(rights)
}

/// A ruleset that allows everything under `rootfs`, reading and writing
/// `/proc`, and the host devices the tracer shows (`/dev/null`, …,
/// `ptmx`, `pts/`); made before forking, applied by [`restrict_self`].
pub(crate) fn ruleset(rootfs: &Path) -> Result<OwnedFd, String> {
    let handled = handled_rights()?;
    let attr = RulesetAttr {
        handled_access_fs: handled,
    };
    // SAFETY: a valid attribute and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "landlock_create_ruleset: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let file = READ_FILE | WRITE_FILE | (handled & TRUNCATE);
    allow(&ruleset, rootfs, handled)?;
    allow(&ruleset, Path::new("/proc"), file | READ_DIR | EXECUTE)?;
    for dev in HOST_DEVICES.iter().chain(&["ptmx"]) {
        let path = Path::new("/dev").join(dev);
        if path.exists() {
            allow(&ruleset, &path, file)?;
        }
    }
    if Path::new("/dev/pts").is_dir() {
        allow(&ruleset, Path::new("/dev/pts"), file | READ_DIR)?;
    }
    Ok(ruleset)
}

fn allow(ruleset: &OwnedFd, path: &Path, mut access: u64) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a NUL in the path", path.display()))?;
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    let parent = unsafe { OwnedFd::from_raw_fd(fd) };
    if !path.is_dir() {
        // Rights on a file must be file rights.
        access &= EXECUTE | READ_FILE | WRITE_FILE | TRUNCATE;
    }
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent.as_raw_fd(),
    };
    // SAFETY: a valid ruleset fd and attribute.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if r != 0 {
        return Err(format!(
            "landlock_add_rule {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Puts the calling thread (the traced child, before its exec) under
/// `ruleset`; `no_new_privs` must be set. Async-signal-safe: a syscall.
pub(crate) fn restrict_self(ruleset: libc::c_int) -> libc::c_long {
    // SAFETY: a plain syscall on an fd.
    unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) }
}
