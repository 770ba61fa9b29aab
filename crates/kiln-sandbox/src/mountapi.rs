//! Thin wrappers over the new mount API (`fsopen`/`fsconfig`/`fsmount`,
//! `open_tree`, `mount_setattr`, `move_mount`), which lets every mount be
//! prepared detached and then attached onto an fd resolved inside the root,
//! plus the overlay mount (always `userxattr`, `lowerdir+` for long stacks,
//! a `mount(2)` fallback for kernels before 6.8). Errors carry the kernel's
//! fs-context log message when there is one.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

use crate::error::{Error, Result, at};

/// A detached mount of a new filesystem (`fsopen` + `fsconfig` + `fsmount`).
/// `opts` are `(key, None)` for flags and `(key, Some(value))` for strings.
pub(crate) fn new_mount(
    fstype: &str,
    opts: &[(&str, Option<&str>)],
    attrs: MountAttrFlags,
) -> Result<OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| Error::path("fsopen", fstype, e))?;
    for (k, v) in opts {
        let r = match v {
            Some(v) => rustix::mount::fsconfig_set_string(&fs, *k, *v),
            None => rustix::mount::fsconfig_set_flag(&fs, *k),
        };
        r.map_err(|e| fs_error(&fs, fstype, k, e))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| fs_error(&fs, fstype, "create", e))?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| Error::path("fsmount", fstype, e))
}

/// The kernel explains fsconfig failures in the fs context's log; include it.
fn fs_error(fs: &OwnedFd, fstype: &str, key: &str, e: Errno) -> Error {
    let mut buf = [0u8; 512];
    let log = match rustix::io::read(fs, &mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).trim().to_string(),
        Err(_) => String::new(),
    };
    Error::Child(format!("fsconfig {fstype} {key}: {e} {log}"))
}

/// `open_tree(OPEN_TREE_CLONE)`: a detached copy of the mount at a host path.
pub(crate) fn clone_tree(dirfd: BorrowedFd<'_>, path: &Path, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    if path.as_os_str().is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    rustix::mount::open_tree(dirfd, path, flags).map_err(at("open_tree", path))
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` (rustix lacks it): set attributes such as
/// `MOUNT_ATTR_RDONLY` on a detached tree, recursively if asked.
pub(crate) fn set_attrs(tree: BorrowedFd<'_>, set: MountAttrFlags, recursive: bool) -> Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: set.bits() as u64,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: valid fd, NUL-terminated empty path, attr lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(Error::sys("mount_setattr", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Attach a detached mount onto an `O_PATH` target fd.
pub(crate) fn attach(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &str) -> Result<()> {
    rustix::mount::move_mount(
        mnt,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| Error::path("move_mount", what, e))
}

/// Mount an overlay (always `userxattr`, always `nodev`) on `target`. Uses the new
/// mount API's `lowerdir+` (no page-size limit on long lower stacks), falls
/// back to a `mount(2)` option string on kernels before 6.8.
pub fn overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| Error::path("fsopen", "overlay", e))?;
    let mut legacy = false;
    for l in lowers {
        match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l) {
            Ok(()) => {}
            Err(Errno::INVAL) if l == &lowers[0] => {
                legacy = true;
                break;
            }
            Err(e) => {
                return Err(fs_error(
                    &fs,
                    "overlay",
                    &format!("lowerdir+ {}", l.display()),
                    e,
                ));
            }
        }
    }
    if legacy {
        return overlay_legacy(lowers, upper, work, target);
    }
    for (k, v) in [("upperdir", upper), ("workdir", work)] {
        rustix::mount::fsconfig_set_string(&fs, k, v)
            .map_err(|e| fs_error(&fs, "overlay", &format!("{k} {}", v.display()), e))?;
    }
    rustix::mount::fsconfig_set_flag(&fs, "userxattr")
        .map_err(|e| fs_error(&fs, "overlay", "userxattr", e))?;
    rustix::mount::fsconfig_create(&fs).map_err(|e| fs_error(&fs, "overlay", "create", e))?;
    // nodev: see crate::mounts (no devices cgroup, so no usable mknod).
    let mnt = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| Error::path("fsmount overlay", target, e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(at("move_mount overlay", target))
}

fn overlay_legacy(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let esc = |p: &Path| -> Result<String> {
        let s = p
            .to_str()
            .ok_or_else(|| Error::InvalidSpec(format!("non-UTF-8 overlay path {}", p.display())))?;
        if s.contains(',') {
            return Err(Error::InvalidSpec(format!("',' in overlay path {s}")));
        }
        Ok(s.replace('\\', "\\\\").replace(':', "\\:"))
    };
    let lower: Vec<String> = lowers.iter().map(|p| esc(p)).collect::<Result<_>>()?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.join(":"),
        esc(upper)?,
        esc(work)?
    );
    let data = CString::new(data).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(at("mount overlay", target))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mount(2) fallback (kernels before 6.8), exercised on any kernel
    /// inside a throwaway user + mount namespace.
    #[test]
    fn legacy_overlay_mount_works() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a:b"); // ':' must be escaped in lowerdir=
        for s in ["l", "u", "w", "m"] {
            std::fs::create_dir_all(d.join(s)).unwrap();
        }
        std::fs::write(d.join("l/file"), "lower").unwrap();
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let d2 = d.clone();
        let r = crate::info::in_child(move || {
            // SAFETY: forked single-threaded child.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            let w = |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("{f}: {e}"));
            w("/proc/self/setgroups", "deny".into())?;
            w("/proc/self/uid_map", format!("0 {uid} 1"))?;
            w("/proc/self/gid_map", format!("0 {gid} 1"))?;
            overlay_legacy(&[d2.join("l")], &d2.join("u"), &d2.join("w"), &d2.join("m"))
                .map_err(|e| e.to_string())?;
            let got = std::fs::read_to_string(d2.join("m/file")).map_err(|e| e.to_string())?;
            (got == "lower").then_some(()).ok_or(got)
        });
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(d.join("w/work"), std::fs::Permissions::from_mode(0o700));
        r.unwrap();
    }
}
