//! The sandbox's filesystem, built inside its own private mount namespace.
//!
//! Layout (all of it vanishes with the namespace; nothing is unmounted by path
//! afterwards, nothing leaks on Ctrl-C):
//! - a *scratch* tmpfs is mounted over the `Sandbox`'s private, empty temp dir.
//!   It holds `root/` (where the rootfs is mounted), `skel/` (a bottom overlay
//!   layer with empty `proc dev sys etc/{hosts,resolv.conf,hostname}` mount
//!   points), `files/` (this run's hosts/resolv.conf/hostname) and `binds/`
//!   (throwaway uppers of read-write bind mounts).
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
//!
//! Not done here: device nodes (see [`crate::dev`]), choosing the isolation.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::error::{Error, Result, at};
use crate::spawn::Plan;
use crate::{MountSpec, Rootfs};

/// What a mount target must be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Lexically clean a container path: drop `.`, `..` never climbs above `/`.
/// (openat2 IN_ROOT would also contain `..`; cleaning makes the components
/// usable as names for `mkdirat`.)
pub(crate) fn clean(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn in_root_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `openat2(root, path, O_PATH, RESOLVE_IN_ROOT)`: follows symlinks, but
/// only ever inside `root`.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, path: &str) -> rustix::io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    rfs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        in_root_flags(),
    )
}

/// Resolve `path` inside `root`, creating missing directories (0755) and, for
/// `Kind::File`, an empty final file (0644). Returns an `O_PATH` fd of the
/// target, suitable as a `move_mount` destination.
pub(crate) fn ensure_in_root(root: BorrowedFd<'_>, path: &Path, kind: Kind) -> Result<OwnedFd> {
    let mut comps = clean(path);
    if comps.is_empty() {
        if kind == Kind::File {
            return Err(Error::InvalidSpec(format!(
                "{} is the root, not a file",
                path.display()
            )));
        }
        return open_in_root(root, ".").map_err(at("openat2", path));
    }
    let mut hops = 0;
    let mut i = 0;
    while i < comps.len() {
        let prefix = comps[..=i].join("/");
        let last = i + 1 == comps.len();
        match open_in_root(root, &prefix) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => {
                i += 1;
                continue;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::path("openat2 (in root)", &prefix, e)),
        }
        let parent_path = comps[..i].join("/");
        let parent =
            open_in_root(root, &parent_path).map_err(at("openat2 (in root)", &parent_path))?;
        let name = comps[i].clone();
        // A dangling symlink: follow it by hand (still inside the root) and
        // create what it points to, as Docker's securejoin does.
        if let Ok(target) = rfs::readlinkat(&parent, name.as_str(), Vec::new()) {
            hops += 1;
            if hops > 40 {
                return Err(Error::path("resolve (in root)", path, Errno::LOOP));
            }
            let target = PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes()));
            let mut next = PathBuf::from("/");
            if !target.is_absolute() {
                next.push(&parent_path);
            }
            next.push(target);
            for c in &comps[i + 1..] {
                next.push(c);
            }
            comps = clean(&next);
            if comps.is_empty() {
                return open_in_root(root, ".").map_err(at("openat2", path));
            }
            i = 0;
            continue;
        }
        if last && kind == Kind::File {
            // O_EXCL|O_NOFOLLOW: never follows anything at the final name.
            rfs::openat(
                &parent,
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(at("create mount point", &prefix))?;
        } else {
            match rfs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::path("mkdirat (in root)", &prefix, e)),
            }
        }
        if last {
            return open_in_root(root, &prefix).map_err(at("openat2 (in root)", &prefix));
        }
        i += 1;
    }
    unreachable!("the loop returns on the last component")
}

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

/// Mount an overlay (always `userxattr`) as a detached mount. Uses the new
/// mount API's `lowerdir+` (no page-size limit on long lower stacks), falls
/// back to a `mount(2)` option string on kernels before 6.8.
pub(crate) fn overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
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
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
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
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(at("mount overlay", target))
}

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
    crate::dev::setup(root)?;
    // /sys: a read-only recursive bind of the host's (rootless cannot mount a
    // sysfs without its own network namespace). Best effort: builds rarely
    // need it, and some hosts lock it.
    if let Err(e) = bind_sys(root) {
        tracing::debug!("no /sys in the sandbox: {e}");
    }

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
                tracing::warn!("not providing /{}: {e}", target.display());
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
    let kind_of = |src: &Path| -> Result<Kind> {
        let md = std::fs::metadata(src).map_err(at("stat", src))?;
        Ok(if md.is_dir() { Kind::Dir } else { Kind::File })
    };
    match m {
        MountSpec::Bind {
            source,
            target,
            readonly: true,
        } => {
            let kind = kind_of(source)?;
            let tree = clone_tree(CWD, source, true)?;
            set_attrs(tree.as_fd(), MountAttrFlags::MOUNT_ATTR_RDONLY, true)?;
            let fd = ensure_in_root(root, target, kind)?;
            attach(tree.as_fd(), fd.as_fd(), &target.display().to_string())
        }
        MountSpec::Bind {
            source,
            target,
            readonly: false,
        } => {
            // Writes are discarded: the container writes into an overlay
            // whose upper dir lives on the scratch tmpfs, or into a copy.
            let kind = kind_of(source)?;
            let base = scratch.join("binds").join(i.to_string());
            mkdir(&base, 0o700)?;
            let fd = ensure_in_root(root, target, kind)?;
            if kind == Kind::Dir {
                let (upper, work, merged) = (base.join("u"), base.join("w"), base.join("m"));
                for d in [&upper, &work, &merged] {
                    mkdir(d, 0o755)?;
                }
                overlay(std::slice::from_ref(source), &upper, &work, &merged)?;
                let tree = clone_tree(CWD, &merged, false)?;
                attach(tree.as_fd(), fd.as_fd(), &target.display().to_string())
            } else {
                let copy = base.join("file");
                std::fs::copy(source, &copy).map_err(at("copy", source))?;
                let tree = clone_tree(CWD, &copy, false)?;
                attach(tree.as_fd(), fd.as_fd(), &target.display().to_string())
            }
        }
        MountSpec::Cache { source, target } => {
            let tree = clone_tree(CWD, source, true)?;
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
