//! Copying and removing trees by file descriptor, never following a
//! symlink: what chroot isolation without a mount namespace uses to put a
//! mount's contents into a rootfs and take them out again ([`crate::copied`]).
//! Every step is relative to the fd of a directory already opened, with
//! `O_NOFOLLOW`, so a tree that a RUN rearranged while we walk it (a
//! directory swapped for a symlink to `/`) is copied or removed as it is,
//! never through the link. Owners (unprivileged: recorded in kiln's owner
//! xattr instead), modes and times are kept; xattrs and
//! hard links between copied files are not (mount contents do not need them).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};

fn err(op: &'static str, what: &str) -> impl FnOnce(Errno) -> Error + use<> {
    let what = what.to_string();
    move |e| Error::path(op, what, e)
}

/// Opens the directory `name` in `dir` for reading, refusing a symlink.
pub(crate) fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn times(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Copies the node `src_name` of `src_dir` (not followed if a symlink) to
/// `dst_name` in `dst_dir`, which must not exist. `shown` names it in errors.
pub(crate) fn copy_at(
    src_dir: BorrowedFd<'_>,
    src_name: &CStr,
    dst_dir: BorrowedFd<'_>,
    dst_name: &CStr,
    shown: &str,
) -> Result<()> {
    let st =
        rfs::statat(src_dir, src_name, AtFlags::SYMLINK_NOFOLLOW).map_err(err("stat", shown))?;
    copy_node(src_dir, src_name, &st, dst_dir, dst_name, shown)
}

/// Copies the node open as `src` (an `O_PATH` fd, already resolved by the
/// caller) to `dst_name` in `dst_dir`.
pub(crate) fn copy_fd(
    src: BorrowedFd<'_>,
    dst_dir: BorrowedFd<'_>,
    dst_name: &CStr,
    shown: &str,
) -> Result<()> {
    let st = rfs::fstat(src).map_err(err("fstat", shown))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let dir = rfs::openat(
                src,
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err("open", shown))?;
            copy_dir(dir.as_fd(), &st, dst_dir, dst_name, shown)
        }
        FileType::RegularFile => {
            // An O_PATH fd cannot be read; its /proc link reopens the very
            // same file (kiln itself is not chrooted).
            let file = rfs::open(
                format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&src)),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err("reopen", shown))?;
            copy_file(file, &st, dst_dir, dst_name, shown)
        }
        _ => copy_node(src, c"", &st, dst_dir, dst_name, shown),
    }
}

fn copy_node(
    src_dir: BorrowedFd<'_>,
    src_name: &CStr,
    st: &rfs::Stat,
    dst_dir: BorrowedFd<'_>,
    dst_name: &CStr,
    shown: &str,
) -> Result<()> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let dir = open_dir_nofollow(src_dir, src_name).map_err(err("open", shown))?;
            copy_dir(dir.as_fd(), st, dst_dir, dst_name, shown)
        }
        FileType::RegularFile => {
            // NONBLOCK: a file swapped for a fifo must not hang us.
            let file = rfs::openat(
                src_dir,
                src_name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err("open", shown))?;
            let now = rfs::fstat(&file).map_err(err("fstat", shown))?;
            if FileType::from_raw_mode(now.st_mode) != FileType::RegularFile {
                return Err(Error::path("copy", shown, Errno::INVAL));
            }
            copy_file(file, &now, dst_dir, dst_name, shown)
        }
        FileType::Symlink => {
            let target =
                rfs::readlinkat(src_dir, src_name, Vec::new()).map_err(err("readlink", shown))?;
            rfs::symlinkat(target.as_c_str(), dst_dir, dst_name).map_err(err("symlink", shown))?;
            finish(dst_dir, dst_name, st, None, shown)
        }
        FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
            rfs::mknodat(
                dst_dir,
                dst_name,
                FileType::from_raw_mode(st.st_mode),
                Mode::from_raw_mode(st.st_mode & 0o7777),
                st.st_rdev,
            )
            .map_err(err("mknod", shown))?;
            finish(dst_dir, dst_name, st, Some(st.st_mode & 0o7777), shown)
        }
        // A socket cannot be copied; the caller links those.
        _ => Err(Error::path("copy", shown, Errno::OPNOTSUPP)),
    }
}

fn copy_file(
    file: OwnedFd,
    st: &rfs::Stat,
    dst_dir: BorrowedFd<'_>,
    dst_name: &CStr,
    shown: &str,
) -> Result<()> {
    let out = rfs::openat(
        dst_dir,
        dst_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(err("create", shown))?;
    let mut from = std::fs::File::from(file);
    let mut to = std::fs::File::from(out);
    std::io::copy(&mut from, &mut to).map_err(|e| Error::path("copy", shown, e))?;
    let to = OwnedFd::from(to);
    set_owner_mode(to.as_fd(), st, shown)?;
    rfs::futimens(&to, &times(st)).map_err(err("set times of", shown))
}

fn copy_dir(
    src: BorrowedFd<'_>,
    st: &rfs::Stat,
    dst_dir: BorrowedFd<'_>,
    dst_name: &CStr,
    shown: &str,
) -> Result<()> {
    rfs::mkdirat(dst_dir, dst_name, Mode::from_raw_mode(0o700)).map_err(err("mkdir", shown))?;
    let dst = open_dir_nofollow(dst_dir, dst_name).map_err(err("open", shown))?;
    for_each_child(src, shown, |name| {
        let child = format!("{shown}/{}", name.to_string_lossy());
        copy_at(src, name, dst.as_fd(), name, &child)
    })?;
    set_owner_mode(dst.as_fd(), st, shown)?;
    rfs::futimens(&dst, &times(st)).map_err(err("set times of", shown))
}

fn set_owner_mode(fd: BorrowedFd<'_>, st: &rfs::Stat, shown: &str) -> Result<()> {
    match rfs::fchown(
        fd,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    ) {
        Ok(()) => {}
        // Unprivileged (traced isolation): the owner is recorded where the
        // traced RUN sees it, as for an extracted layer.
        Err(Errno::PERM) if !rustix::process::geteuid().is_root() => {
            let v = format!("{}:{}", st.st_uid, st.st_gid);
            let _ = rfs::fsetxattr(
                fd,
                kiln_image::layer::OWNER_XATTR,
                v.as_bytes(),
                rfs::XattrFlags::empty(),
            );
        }
        Err(e) => return Err(Error::path("chown", shown, e)),
    }
    // After chown, which clears setuid bits.
    rfs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(err("chmod", shown))
}

/// Owner, mode (when given: not for symlinks) and times of a node made by
/// name.
fn finish(
    dir: BorrowedFd<'_>,
    name: &CStr,
    st: &rfs::Stat,
    mode: Option<u32>,
    shown: &str,
) -> Result<()> {
    match rfs::chownat(
        dir,
        name,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => {}
        // Unprivileged: symlinks and nodes keep kiln's owner.
        Err(Errno::PERM) if !rustix::process::geteuid().is_root() => {}
        Err(e) => return Err(Error::path("chown", shown, e)),
    }
    if let Some(mode) = mode {
        rfs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(err("chmod", shown))?;
    }
    rfs::utimensat(dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(err("set times of", shown))
}

/// Calls `f` with the name of each entry of the readable directory `dir`.
fn for_each_child(
    dir: BorrowedFd<'_>,
    shown: &str,
    mut f: impl FnMut(&CStr) -> Result<()>,
) -> Result<()> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir).map_err(err("read", shown))? {
        let entry = entry.map_err(err("read", shown))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    for name in names {
        f(&name)?;
    }
    Ok(())
}

/// Removes `name` in `dir` and everything under it, following no symlink;
/// gone already is fine.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &CStr, shown: &str) -> Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::path("stat", shown, e)),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let sub = open_dir_nofollow(dir, name).map_err(err("open", shown))?;
        clear_dir(sub.as_fd(), shown)?;
        match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::path("rmdir", shown, e)),
        }
    } else {
        match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::path("unlink", shown, e)),
        }
    }
}

/// Removes everything inside the readable directory `dir`.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>, shown: &str) -> Result<()> {
    for_each_child(dir, shown, |name| {
        remove_at(dir, name, &format!("{shown}/{}", name.to_string_lossy()))
    })
}

/// Copies every entry of the readable directory `src` into the readable
/// directory `dst` (which must not hold those names).
pub(crate) fn copy_children(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, shown: &str) -> Result<()> {
    for_each_child(src, shown, |name| {
        copy_at(
            src,
            name,
            dst,
            name,
            &format!("{shown}/{}", name.to_string_lossy()),
        )
    })
}
