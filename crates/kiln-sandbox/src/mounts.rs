//! The sandbox's filesystem, built inside its own private mount namespace.
//!
//! Layout (all of it vanishes with the namespace; nothing is unmounted by path
//! afterwards, nothing leaks on Ctrl-C):
//! - a *scratch* tmpfs is mounted over the `Sandbox`'s private, empty temp dir.
//!   It holds `root/` (where the rootfs is mounted), `skel/` (a bottom overlay
//!   layer with empty `proc dev sys etc/{hosts,resolv.conf,hostname}` mount
//!   points), `files/` (this run's hosts/resolv.conf/hostname) and `binds/`
//!   (read-write bind mounts: the source attached at `src`, and the
//!   throwaway upper over it).
//! - the rootfs: `Rootfs::Dir` is bind-mounted, `Rootfs::Overlay` is mounted
//!   with `userxattr` in every mode, so the differ always sees
//!   `user.overlay.opaque` (see [`crate::OPAQUE_XATTR`]). The `skel` layer at
//!   the bottom means the standard mount points exist without ever being
//!   created in the upper dir: `/etc/hosts` & co never reach a layer.
//! - every target inside the rootfs is resolved with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, missing directories
//!   are created with `mkdirat` relative to an fd also resolved in the root,
//!   and mounts are attached with `move_mount` onto that fd. An image symlink
//!   `/mnt -> /` therefore points at the container's root, never the host's.
//!   Mount-point directories created for user mounts live in the upper dir
//!   (or the `Dir` rootfs) and are the differ's business; they are never
//!   removed by path after the run (the BuildKit CVE-2024-23652 pattern).
//! - a bind's source is opened once (`O_PATH`) and that fd is cloned and
//!   mounted; a [`MountSpec::BindInRoot`] source is resolved inside its
//!   root the same way as targets, so a build context or stage whose
//!   symlinks point at `/etc` binds its own `/etc`, not the host's.
//!
//! - everything writable the container sees is `nodev` (rootfs, binds,
//!   caches, tmpfs, /dev's tmpfs): kiln creates no devices cgroup, so
//!   without it container root (CAP_MKNOD, as in Docker) could `mknod` the
//!   host's disk and open it. Device nodes can still be *created* (they land
//!   in the layer), just not opened. In a user namespace the kernel forces
//!   nodev anyway, so root and rootless behave the same. The few real
//!   devices come from binds of the host's nodes (see [`crate::dev`]).
//!
//! Not done here: device nodes (see [`crate::dev`]), choosing the isolation.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, CWD, Mode, OFlags};
use rustix::mount::{MountAttrFlags, MountPropagationFlags, MoveMountFlags, UnmountFlags};

use crate::error::{Error, Result, at};
/// Public for kiln-build's stage views: mount an overlay (`userxattr`,
/// `nodev`, `lowerdir+`) on a path, in the caller's mount namespace.
pub use crate::mountapi::overlay;
pub(crate) use crate::mountapi::{attach, clone_tree, new_mount, set_attrs};
pub(crate) use crate::resolve::{Kind, clean, ensure_in_root, open_in_root};
use crate::spawn::Plan;
use crate::{MountSpec, Rootfs};

const SKEL_DIRS: &[&str] = &["proc", "dev", "sys", "etc"];
/// The files bind-mounted from `files/`; listed so the differ can be told.
pub const ETC_FILES: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc/hostname"];

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(at("create", path))?;
    f.write_all(data).map_err(at("write", path))
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    rfs::mkdir(path, Mode::from_raw_mode(mode)).map_err(at("mkdir", path))
}

/// Build the whole filesystem and switch the process root to it. On return
/// the cwd is `/` of the container.
pub(crate) fn setup(plan: &Plan<'_>, have_mntns: bool, new_pidns: bool) -> Result<()> {
    let spec = plan.spec;
    if !have_mntns {
        // Chroot without a mount namespace: no mounts at all.
        let Rootfs::Dir(dir) = &spec.rootfs else {
            return Err(Error::Unsupported {
                mode: "chroot",
                reason: "an overlay rootfs needs a mount namespace".into(),
            });
        };
        rustix::process::chroot(dir).map_err(at("chroot", dir))?;
        rustix::process::chdir("/").map_err(at("chdir", "/"))?;
        return Ok(());
    }

    // Nothing we mount may propagate back to the host.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(at("make-rprivate", "/"))?;

    let scratch = plan.scratch;
    rustix::mount::mount(
        "kiln-scratch",
        scratch,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        c"mode=0700",
    )
    .map_err(at("mount tmpfs", scratch))?;
    let root_dir = scratch.join("root");
    mkdir(&root_dir, 0o755)?;
    let skel = scratch.join("skel");
    mkdir(&skel, 0o755)?;
    for d in SKEL_DIRS {
        mkdir(&skel.join(d), 0o755)?;
    }
    for f in ETC_FILES {
        write_file(&skel.join(f), b"", 0o644)?;
    }
    let files = scratch.join("files");
    mkdir(&files, 0o755)?;
    mkdir(&scratch.join("binds"), 0o700)?;

    match &spec.rootfs {
        Rootfs::Dir(dir) => {
            let tree = clone_tree(CWD, dir, true)?;
            set_attrs(tree.as_fd(), MountAttrFlags::MOUNT_ATTR_NODEV, true)?;
            rustix::mount::move_mount(
                &tree,
                "",
                CWD,
                &root_dir,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(at("move_mount rootfs", dir))?;
        }
        Rootfs::Overlay {
            lowers,
            upper,
            work,
        } => {
            let mut all = lowers.clone();
            all.push(skel.clone());
            overlay(&all, upper, work, &root_dir)?;
        }
    }
    let root = rfs::open(
        &root_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open", &root_dir))?;
    let root = root.as_fd();

    mount_proc(root, new_pidns)?;
    crate::dev::setup(root, plan.spec.shm_size)?;
    // /sys: a read-only recursive bind of the host's (rootless cannot mount a
    // sysfs without its own network namespace). Best effort: builds rarely
    // need it, and some hosts lock it.
    let _ = bind_sys(root);

    for (name, data) in [
        ("hosts", plan.hosts.as_deref()),
        ("resolv.conf", plan.resolv_conf.as_deref()),
        ("hostname", Some(plan.hostname_file.as_slice())),
    ] {
        let Some(data) = data else { continue };
        let src = files.join(name);
        write_file(&src, data, 0o644)?;
        let target = Path::new("etc").join(name);
        let fd = match ensure_in_root(root, &target, Kind::File) {
            Ok(fd) => fd,
            Err(e) => {
                // e.g. an image whose /etc/resolv.conf is a dangling symlink
                crate::spawn::child_warn(&format!("not providing /{}: {e}", target.display()));
                continue;
            }
        };
        let tree = clone_tree(CWD, &src, false)?;
        attach(tree.as_fd(), fd.as_fd(), &format!("/{}", target.display()))?;
    }

    for (i, m) in spec.mounts.iter().enumerate() {
        user_mount(root, scratch, i, m)?;
    }

    // Switch root. pivot_root(".", ".") stacks the old root on top of the new
    // one; detaching it leaves only the container's tree in this namespace.
    rustix::process::fchdir(root).map_err(at("fchdir", &root_dir))?;
    if new_pidns {
        rustix::process::pivot_root(".", ".").map_err(at("pivot_root", &root_dir))?;
        rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(at("umount old root", "/"))?;
    } else {
        // chroot isolation: no pid namespace, pivot_root still works but keep
        // the classic semantics the mode promises.
        rustix::process::chroot(".").map_err(at("chroot", &root_dir))?;
    }
    rustix::process::chdir("/").map_err(at("chdir", "/"))?;
    Ok(())
}

fn mount_proc(root: BorrowedFd<'_>, new_pidns: bool) -> Result<()> {
    let target = ensure_in_root(root, Path::new("proc"), Kind::Dir)?;
    let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let mnt = if new_pidns {
        new_mount("proc", &[], attrs)?
    } else {
        // chroot isolation shares the host pid namespace; inside a user
        // namespace a new procfs is refused for it, so bind the host's.
        match new_mount("proc", &[], attrs) {
            Ok(m) => m,
            Err(_) => clone_tree(CWD, Path::new("/proc"), true)?,
        }
    };
    attach(mnt.as_fd(), target.as_fd(), "/proc")?;

    // Docker's masked and read-only /proc paths: without them, container root
    // (real root in `Root` isolation) could write /proc/sysrq-trigger or
    // /proc/sys. ENOENT is fine (not every kernel has every file).
    for p in ["sys", "sysrq-trigger", "irq", "bus"] {
        let path = format!("proc/{p}");
        let Ok(fd) = open_in_root(root, &path) else {
            continue;
        };
        let tree = clone_tree(fd.as_fd(), Path::new(""), true)?;
        set_attrs(
            tree.as_fd(),
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
            true,
        )?;
        attach(tree.as_fd(), fd.as_fd(), &path)?;
    }
    for p in ["kcore", "keys", "timer_list", "sched_debug"] {
        let path = format!("proc/{p}");
        let Ok(fd) = open_in_root(root, &path) else {
            continue;
        };
        let null = clone_tree(CWD, Path::new("/dev/null"), false)?;
        attach(null.as_fd(), fd.as_fd(), &path)?;
    }
    for p in ["acpi", "scsi"] {
        let path = format!("proc/{p}");
        let Ok(fd) = open_in_root(root, &path) else {
            continue;
        };
        let t = new_mount(
            "tmpfs",
            &[("size", Some("0"))],
            MountAttrFlags::MOUNT_ATTR_RDONLY,
        )?;
        attach(t.as_fd(), fd.as_fd(), &path)?;
    }
    Ok(())
}

fn bind_sys(root: BorrowedFd<'_>) -> Result<()> {
    let tree = clone_tree(CWD, Path::new("/sys"), true)?;
    set_attrs(
        tree.as_fd(),
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        true,
    )?;
    let target = ensure_in_root(root, Path::new("sys"), Kind::Dir)?;
    attach(tree.as_fd(), target.as_fd(), "/sys")
}

fn user_mount(root: BorrowedFd<'_>, scratch: &Path, i: usize, m: &MountSpec) -> Result<()> {
    match m {
        MountSpec::Bind {
            source,
            target,
            readonly,
        } => {
            // A host path the caller chose: opened as it is, symlinks and all.
            let fd = rfs::open(source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(at("open", source))?;
            bind(root, scratch, i, fd, target, *readonly)
        }
        MountSpec::BindInRoot {
            root: tree,
            source,
            target,
            readonly,
        } => {
            let tree_fd = rfs::open(
                tree,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(at("open", tree))?;
            let rel = clean(source).join("/");
            let fd = open_in_root(tree_fd.as_fd(), &rel).map_err(|e| {
                Error::path(
                    "openat2 (in the bind's root)",
                    format!("{} in {}", source.display(), tree.display()),
                    e,
                )
            })?;
            bind(root, scratch, i, fd, target, *readonly)
        }
        MountSpec::Volume {
            source,
            target,
            readonly,
        } => {
            let kind = match std::fs::metadata(source).map_err(at("stat", source))? {
                m if m.is_dir() => Kind::Dir,
                _ => Kind::File,
            };
            let tree = clone_tree(CWD, source, true)?;
            let mut attrs = MountAttrFlags::MOUNT_ATTR_NODEV;
            if *readonly {
                attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
            }
            set_attrs(tree.as_fd(), attrs, true)?;
            let fd = ensure_in_root(root, target, kind)?;
            attach(tree.as_fd(), fd.as_fd(), &target.display().to_string())
        }
        MountSpec::Cache { source, target } => {
            let tree = clone_tree(CWD, source, true)?;
            set_attrs(tree.as_fd(), MountAttrFlags::MOUNT_ATTR_NODEV, true)?;
            let fd = ensure_in_root(root, target, Kind::Dir)?;
            attach(tree.as_fd(), fd.as_fd(), &target.display().to_string())
        }
        MountSpec::Tmpfs { target, size, mode } => {
            let size = size.map(|s| s.to_string());
            let mode = format!("{:o}", mode.unwrap_or(0o1777));
            let mut opts = vec![("mode", Some(mode.as_str()))];
            if let Some(s) = &size {
                opts.push(("size", Some(s.as_str())));
            }
            let t = new_mount(
                "tmpfs",
                &opts,
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
            )?;
            let fd = ensure_in_root(root, target, Kind::Dir)?;
            attach(t.as_fd(), fd.as_fd(), &target.display().to_string())
        }
    }
}

/// Bind the file or directory open as `source` (an `O_PATH` fd: what is
/// mounted is what was resolved, never a path looked up again). Writes to
/// a read-write bind are discarded: a directory gets an overlay whose upper
/// dir lives on the scratch tmpfs, a file a copy there.
fn bind(
    root: BorrowedFd<'_>,
    scratch: &Path,
    i: usize,
    source: OwnedFd,
    target: &Path,
    readonly: bool,
) -> Result<()> {
    let shown = target.display().to_string();
    let is_dir = rfs::fstat(&source)
        .map(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
        .map_err(|e| Error::path("fstat", &shown, e))?;
    let kind = if is_dir { Kind::Dir } else { Kind::File };
    let tree = clone_tree(source.as_fd(), Path::new(""), true)?;
    if readonly {
        set_attrs(
            tree.as_fd(),
            MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV,
            true,
        )?;
        let fd = ensure_in_root(root, target, kind)?;
        return attach(tree.as_fd(), fd.as_fd(), &shown);
    }
    // The source is first attached on the scratch tmpfs, where a path to
    // it is ours: the overlay's lowerdir and the copy name that path.
    let base = scratch.join("binds").join(i.to_string());
    mkdir(&base, 0o700)?;
    let src = base.join("src");
    if is_dir {
        mkdir(&src, 0o755)?;
    } else {
        write_file(&src, b"", 0o600)?;
    }
    let src_fd =
        rfs::open(&src, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(at("open", &src))?;
    attach(tree.as_fd(), src_fd.as_fd(), &src.display().to_string())?;
    let fd = ensure_in_root(root, target, kind)?;
    if is_dir {
        let (upper, work, merged) = (base.join("u"), base.join("w"), base.join("m"));
        for d in [&upper, &work, &merged] {
            mkdir(d, 0o755)?;
        }
        overlay(std::slice::from_ref(&src), &upper, &work, &merged)?;
        let tree = clone_tree(CWD, &merged, false)?;
        attach(tree.as_fd(), fd.as_fd(), &shown)
    } else {
        let copy = base.join("file");
        std::fs::copy(&src, &copy).map_err(at("copy", &src))?;
        let tree = clone_tree(CWD, &copy, false)?;
        attach(tree.as_fd(), fd.as_fd(), &shown)
    }
}
