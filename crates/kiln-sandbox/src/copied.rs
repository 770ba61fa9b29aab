//! Chroot isolation without a mount namespace (root in a default container
//! or Kubernetes pod: `unshare` refused, `chroot` allowed). Nothing can be
//! mounted, so what the other modes mount is put into the rootfs directory
//! for the run and taken out afterwards:
//! - `/dev`: a fresh directory with `null zero full random urandom tty`
//!   made by `mknod` where the host allows it (else left out, said once,
//!   but for `null`, then an empty plain file),
//!   `pts/`, `shm/` and the `fd stdin stdout stderr` links;
//! - `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`: written as files;
//! - [`MountSpec`]s: binds and secrets copied in, caches and read-write
//!   volumes copied in and written back, tmpfs an empty directory, a socket
//!   hard-linked.
//!
//! Whatever was at a target before is renamed aside (into a directory next
//! to the rootfs, outside it) and renamed back after the run, once what was
//! put there is removed (secrets included). The differ (kiln-snapshot's copy
//! mode) leaves every mount target and these standard paths out of the
//! layer, as it does when they are real mounts.
//!
//! Every target is resolved inside the rootfs (`openat2(RESOLVE_IN_ROOT)`
//! for its parent, the final name taken as it is, never followed), and the
//! parent's fd is kept for the restore, so a RUN that swaps a directory for
//! a symlink to `/` makes the restore act inside the rootfs still.
//!
//! Not isolated in this mode (the caller states it): no pid, ipc, uts or
//! network namespace, so the RUN sees (and as root may signal) the
//! container's processes, shares its network and hostname; no `/proc` or
//! `/sys`; bind mounts are writable copies (writes are dropped, not
//! refused).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, at};
use crate::resolve::{Kind, clean, ensure_in_root, open_in_root};
use crate::spawn::Plan;
use crate::{MountSpec, Rootfs};

/// The device nodes made in `/dev`: name, major, minor (as on every Linux).
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Warns once per process for each `key`.
pub(crate) fn warn_once(key: &'static str, msg: &str) {
    static SAID: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(key) {
        crate::warn(msg);
    }
}

/// What to put at a target.
enum Content<'a> {
    /// A `/dev`; `nodes`: try `mknod` (traced runs see the host's nodes
    /// through the tracer instead, and get empty files as placeholders).
    Dev {
        nodes: bool,
    },
    Bytes(&'a [u8]),
    /// A copy of the node open as this `O_PATH` fd.
    Copy(OwnedFd),
    /// An empty directory with this mode.
    EmptyDir(u32),
    /// A hard link to this socket (it cannot be copied).
    Link(&'a Path),
}

/// One target put in place.
struct Item {
    /// `O_PATH` fd of the target's parent directory inside the rootfs.
    parent: OwnedFd,
    name: CString,
    shown: String,
    /// The name of what was there before, in the aside directory.
    aside: Option<CString>,
    /// A host directory the target's contents are written back to.
    write_back: Option<PathBuf>,
}

/// The rootfs with this run's files in place; [`Provisioned::restore`]
/// takes them out.
pub(crate) struct Provisioned {
    aside_dir: Option<tempfile::TempDir>,
    aside: OwnedFd,
    items: Vec<Item>,
}

/// Puts `/dev`, the `/etc` files and the mounts of `plan` into its `Dir`
/// rootfs.
pub(crate) fn provision(plan: &Plan<'_>) -> Result<Provisioned> {
    let Rootfs::Dir(dir) = &plan.spec.rootfs else {
        return Err(Error::Unsupported {
            mode: "chroot",
            reason: "an overlay rootfs needs a mount namespace, which this host refuses; \
                     use the copy snapshotter (--snapshotter copy)"
                .into(),
        });
    };
    let root = rfs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open", dir))?;
    // Next to the rootfs, so on its filesystem (renames) but outside it.
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let aside_dir = tempfile::Builder::new()
        .prefix(".kiln-aside-")
        .tempdir_in(parent)
        .map_err(|e| Error::path("mkdtemp", parent, e))?;
    let aside = rfs::open(
        aside_dir.path(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open", aside_dir.path()))?;
    let mut p = Provisioned {
        aside_dir: Some(aside_dir),
        aside,
        items: Vec::new(),
    };
    match p.fill(root.as_fd(), plan) {
        Ok(()) => Ok(p),
        Err(e) => {
            let _ = p.restore();
            Err(e)
        }
    }
}

impl Provisioned {
    fn fill(&mut self, root: BorrowedFd<'_>, plan: &Plan<'_>) -> Result<()> {
        let nodes = plan.mode != crate::spawn::Mode::Traced;
        self.put(root, Path::new("/dev"), Content::Dev { nodes }, None)?;
        for (name, data) in [
            ("hosts", plan.hosts.as_deref()),
            ("resolv.conf", plan.resolv_conf.as_deref()),
            ("hostname", Some(plan.hostname_file.as_slice())),
        ] {
            if let Some(data) = data {
                let target = Path::new("/etc").join(name);
                self.put(root, &target, Content::Bytes(data), None)?;
            }
        }
        for m in &plan.spec.mounts {
            self.mount(root, m)?;
        }
        Ok(())
    }

    fn mount(&mut self, root: BorrowedFd<'_>, m: &MountSpec) -> Result<()> {
        let open_path = |p: &Path| {
            rfs::open(p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(at("open", p))
        };
        match m {
            MountSpec::Bind { source, target, .. } => {
                let fd = open_path(source)?;
                let is_socket = rfs::fstat(&fd)
                    .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Socket)
                    .unwrap_or(false);
                let content = if is_socket {
                    Content::Link(source)
                } else {
                    Content::Copy(fd)
                };
                self.put(root, target, content, None)
            }
            MountSpec::BindInRoot {
                root: tree,
                source,
                target,
                ..
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
                self.put(root, target, Content::Copy(fd), None)
            }
            MountSpec::Cache { source, target } => {
                let fd = open_path(source)?;
                self.put(root, target, Content::Copy(fd), Some(source.clone()))
            }
            MountSpec::Volume {
                source,
                target,
                readonly,
            } => {
                let fd = open_path(source)?;
                let is_dir = rfs::fstat(&fd)
                    .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                    .map_err(at("stat", source))?;
                if !*readonly && !is_dir {
                    return Err(Error::Unsupported {
                        mode: "chroot",
                        reason: format!(
                            "a read-write volume of the file {} needs a mount namespace",
                            source.display()
                        ),
                    });
                }
                let back = (!*readonly).then(|| source.clone());
                self.put(root, target, Content::Copy(fd), back)
            }
            MountSpec::Tmpfs { target, mode, .. } => self.put(
                root,
                target,
                Content::EmptyDir(mode.unwrap_or(0o1777)),
                None,
            ),
        }
    }

    /// Moves aside what is at `target` and puts `content` there.
    fn put(
        &mut self,
        root: BorrowedFd<'_>,
        target: &Path,
        content: Content<'_>,
        write_back: Option<PathBuf>,
    ) -> Result<()> {
        let comps = clean(target);
        let Some((last, dirs)) = comps.split_last() else {
            return Err(Error::InvalidSpec(format!(
                "a mount on {} needs a mount namespace",
                target.display()
            )));
        };
        let shown = format!("/{}", comps.join("/"));
        let parent = if dirs.is_empty() {
            open_in_root(root, ".").map_err(at("openat2", "/"))?
        } else {
            ensure_in_root(root, Path::new(&dirs.join("/")), Kind::Dir)?
        };
        let name = CString::new(last.as_str())
            .map_err(|_| Error::InvalidSpec(format!("NUL byte in {shown:?}")))?;
        let aside = match rfs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {
                let to = CString::new(self.items.len().to_string()).expect("digits");
                rfs::renameat(&parent, &name, &self.aside, &to)
                    .map_err(at("move aside", &shown))?;
                Some(to)
            }
            Err(Errno::NOENT) => None,
            Err(e) => return Err(Error::path("stat", &shown, e)),
        };
        self.items.push(Item {
            parent,
            name,
            shown,
            aside,
            write_back,
        });
        let item = self.items.last().expect("just pushed");
        let (dir, name, shown) = (item.parent.as_fd(), item.name.as_c_str(), &item.shown);
        match content {
            Content::Dev { nodes } => make_dev(dir, name, shown, nodes),
            Content::Bytes(data) => write_new(dir, name, data, shown),
            Content::Copy(src) => crate::tree::copy_fd(src.as_fd(), dir, name, shown),
            Content::EmptyDir(mode) => {
                rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(at("mkdir", shown))?;
                rfs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(at("chmod", shown))
            }
            Content::Link(socket) => {
                rfs::linkat(CWD, socket, dir, name, AtFlags::empty()).map_err(|e| {
                    Error::Unsupported {
                        mode: "chroot",
                        reason: format!(
                            "the socket {} can only be hard-linked into the rootfs without a mount \
                         namespace, and that failed: {e}",
                            socket.display()
                        ),
                    }
                })
            }
        }
    }

    /// Writes caches and volumes back, removes what the run was given and
    /// puts back what was there before, last target first.
    pub(crate) fn restore(mut self) -> Result<()> {
        let mut first_err = None;
        while let Some(item) = self.items.pop() {
            if let Err(e) = self.restore_one(&item)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        if first_err.is_none()
            && let Some(d) = self.aside_dir.take()
        {
            // Empty now; kept (with its contents) on an error, to be looked at.
            let _ = d.close();
        } else if let Some(d) = self.aside_dir.take() {
            let _ = d.keep();
        }
        first_err.map_or(Ok(()), Err)
    }

    fn restore_one(&self, item: &Item) -> Result<()> {
        let (dir, name, shown) = (item.parent.as_fd(), item.name.as_c_str(), &item.shown);
        let mut result = Ok(());
        if let Some(back) = &item.write_back {
            result = write_back(dir, name, back, shown);
        }
        crate::tree::remove_at(dir, name, shown)?;
        if let Some(aside) = &item.aside {
            rfs::renameat(&self.aside, aside, dir, name).map_err(at("move back", shown))?;
        }
        result
    }
}

/// Replaces the contents of the host directory `back` with those of the
/// run's directory `name` in `dir`.
fn write_back(dir: BorrowedFd<'_>, name: &CStr, back: &Path, shown: &str) -> Result<()> {
    let from = crate::tree::open_dir_nofollow(dir, name).map_err(|e| Error::Unsupported {
        mode: "chroot",
        reason: format!("the mount target {shown} was replaced by the run ({e}); not written back"),
    })?;
    let to = rfs::open(
        back,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open", back))?;
    let shown_back = back.display().to_string();
    crate::tree::clear_dir(to.as_fd(), &shown_back)?;
    crate::tree::copy_children(from.as_fd(), to.as_fd(), shown)
}

fn write_new(dir: BorrowedFd<'_>, name: &CStr, data: &[u8], shown: &str) -> Result<()> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(at("create", shown))?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, data).map_err(at("write", shown))?;
    rfs::fchmod(&f, Mode::from_raw_mode(0o644)).map_err(at("chmod", shown))
}

/// A `/dev` directory: device nodes where `mknod` is allowed.
fn make_dev(parent: BorrowedFd<'_>, name: &CStr, shown: &str, nodes: bool) -> Result<()> {
    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o755)).map_err(at("mkdir", shown))?;
    let dev = crate::tree::open_dir_nofollow(parent, name).map_err(at("open", shown))?;
    rfs::fchmod(&dev, Mode::from_raw_mode(0o755)).map_err(at("chmod", shown))?;
    for (node, _, _) in DEVICES.iter().filter(|_| !nodes) {
        write_new(
            dev.as_fd(),
            &CString::new(*node).expect("no NUL"),
            b"",
            &format!("/dev/{node}"),
        )?;
    }
    for (node, major, minor) in DEVICES.iter().filter(|_| nodes) {
        let made = rfs::mknodat(
            &dev,
            *node,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rfs::makedev(*major, *minor),
        );
        match made {
            Ok(()) => rfs::chmodat(&dev, *node, Mode::from_raw_mode(0o666), AtFlags::empty())
                .map_err(at("chmod", format!("/dev/{node}")))?,
            Err(e) => {
                warn_once(
                    "mknod",
                    &format!(
                        "this host refuses mknod ({e}): RUN steps get no device nodes in /dev; \
                         /dev/null is an empty plain file"
                    ),
                );
                // Redirections from and to /dev/null (a shell's background
                // jobs read it) then work; what is written there stays for
                // the rest of the step, in this /dev only.
                write_new(dev.as_fd(), c"null", b"", &format!("{shown}/null"))?;
                rfs::chmodat(&dev, "null", Mode::from_raw_mode(0o666), AtFlags::empty())
                    .map_err(at("chmod", "/dev/null"))?;
                break;
            }
        }
    }
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777)] {
        rfs::mkdirat(&dev, dir, Mode::from_raw_mode(0o700))
            .map_err(at("mkdir", format!("/dev/{dir}")))?;
        rfs::chmodat(&dev, dir, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(at("chmod", format!("/dev/{dir}")))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rfs::symlinkat(to, &dev, link).map_err(at("symlink", format!("/dev/{link}")))?;
    }
    Ok(())
}
