//! A minimal `/dev`, as Docker gives: a fresh tmpfs holding `null zero full
//! random urandom tty` (bind-mounted from the host, because a rootless
//! process cannot `mknod`), a private devpts instance (`ptmxmode=0666`, with
//! `/dev/ptmx -> pts/ptmx`), a `shm` tmpfs and the `fd stdin stdout stderr`
//! symlinks. It does not expose any other host device (no /dev/fuse, no
//! disks, no /dev/kmsg).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{self as rfs, CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;

use crate::error::{Error, Result, at};
use crate::mounts::{Kind, attach, clone_tree, ensure_in_root, new_mount, open_in_root};

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Build `/dev` inside `root` (an `O_PATH` fd of the container's root).
pub(crate) fn setup(root: BorrowedFd<'_>, shm_size: Option<u64>) -> Result<()> {
    let target = ensure_in_root(root, Path::new("dev"), Kind::Dir)?;
    let tmpfs = new_mount(
        "tmpfs",
        &[("mode", Some("755")), ("size", Some("65536k"))],
        // nodev: the devices below are binds (their own mounts); a node
        // mknod'ed here must not open (see crate::mounts).
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_STRICTATIME,
    )?;
    attach(tmpfs.as_fd(), target.as_fd(), "/dev")?;
    // Re-resolve: the fd above is the directory *under* the new tmpfs.
    let dev = open_in_root(root, "dev").map_err(at("openat2", "/dev"))?;
    let dev = rfs::openat(
        &dev,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open", "/dev"))?;

    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        rfs::openat(
            &dev,
            *name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(at("create", &host))?;
        let point = rfs::openat(
            &dev,
            *name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(at("open", &host))?;
        match clone_tree(CWD, &host, false) {
            Ok(tree) => attach(tree.as_fd(), point.as_fd(), &host.display().to_string())?,
            // A host without /dev/tty (some CI containers): leave the file.
            Err(_) if *name == "tty" => {}
            Err(e) => return Err(e),
        }
    }

    rfs::mkdirat(&dev, "pts", Mode::from_raw_mode(0o755)).map_err(at("mkdir", "/dev/pts"))?;
    let pts_attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let base = [
        ("newinstance", None),
        ("ptmxmode", Some("0666")),
        ("mode", Some("0620")),
    ];
    let mut with_gid = base.to_vec();
    with_gid.push(("gid", Some("5")));
    // gid=5 (tty) fails when only root is mapped; then go without.
    let pts = new_mount("devpts", &with_gid, pts_attrs)
        .or_else(|_| new_mount("devpts", &base, pts_attrs))?;
    let point = rfs::openat(&dev, "pts", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(at("open", "/dev/pts"))?;
    attach(pts.as_fd(), point.as_fd(), "/dev/pts")?;

    rfs::mkdirat(&dev, "shm", Mode::from_raw_mode(0o1777)).map_err(at("mkdir", "/dev/shm"))?;
    // docker's default is 64 MiB; --shm-size changes it.
    let size = shm_size.map_or_else(|| "65536k".to_string(), |b| b.to_string());
    let shm = new_mount(
        "tmpfs",
        &[("mode", Some("1777")), ("size", Some(size.as_str()))],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let point = rfs::openat(&dev, "shm", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(at("open", "/dev/shm"))?;
    attach(shm.as_fd(), point.as_fd(), "/dev/shm")?;

    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        match rfs::symlinkat(to, &dev, link) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::path("symlink", format!("/dev/{link}"), e)),
        }
    }
    Ok(())
}
