//! A stat index of a tree: what each path was before a RUN step in the
//! copy snapshotter, so the diff afterwards costs one stat walk and reads
//! only the files whose metadata changed. The copy fills it as it creates
//! the tree (it has each file's final metadata in hand), so the tree is
//! never walked twice before the step.
//!
//! The index is kept per directory (directory path -> name -> stamp): a
//! walk looks each entry up by its name, without building a path for the
//! entries that did not change.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Statx, StatxFlags};

use crate::{Error, Result};

/// What identifies a version of one file without reading it. Any change a
/// process can make (content, mode, owner, xattrs, times, replacement)
/// changes at least one of these; ctime catches the ones that keep mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
    pub rdev: (u32, u32),
    /// Birth time where the filesystem records it: a directory removed and
    /// made again often gets its old inode number back, but not its birth.
    pub born: Option<(i64, u32)>,
}

/// The statx fields a [`Stamp`] needs.
pub(crate) const STAMP_MASK: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::BTIME);

impl Stamp {
    pub fn of(st: &Statx) -> Stamp {
        let t = |t: &rustix::fs::StatxTimestamp| (t.tv_sec, t.tv_nsec);
        Stamp {
            mode: u32::from(st.stx_mode),
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            mtime: t(&st.stx_mtime),
            ctime: t(&st.stx_ctime),
            ino: st.stx_ino,
            rdev: (st.stx_rdev_major, st.stx_rdev_minor),
            born: StatxFlags::from_bits_retain(st.stx_mask)
                .contains(StatxFlags::BTIME)
                .then(|| t(&st.stx_btime)),
        }
    }

    /// Whether `other` is a different file at the same path (replaced,
    /// not changed in place).
    pub fn replaced_by(&self, other: &Stamp) -> bool {
        self.ino != other.ino || self.born != other.born
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Each directory's entries (paths relative to the root; `""` is the root)
/// and their stamps.
#[derive(Debug, Clone, Default)]
pub struct StatIndex {
    pub dirs: HashMap<PathBuf, HashMap<OsString, Stamp>>,
}

impl StatIndex {
    /// The stamp of `path` (relative to the root), if it was there.
    pub fn get(&self, path: &Path) -> Option<&Stamp> {
        let name = path.file_name()?;
        let parent = path.parent().unwrap_or(Path::new(""));
        self.dirs.get(parent)?.get(name)
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.get(path).is_some()
    }

    pub fn len(&self) -> usize {
        self.dirs.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&mut self, path: &Path, stamp: Stamp) {
        let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
            return;
        };
        self.dirs
            .entry(parent.to_path_buf())
            .or_default()
            .insert(name.to_os_string(), stamp);
    }

    /// Drops each of `tops` (sorted, none under another) and everything
    /// under it.
    pub(crate) fn forget(&mut self, tops: &[PathBuf]) {
        if tops.is_empty() {
            return;
        }
        let under_top = |p: &Path| {
            p.ancestors()
                .any(|a| tops.binary_search_by(|t| t.as_path().cmp(a)).is_ok())
        };
        self.dirs.retain(|dir, _| !under_top(dir));
        for t in tops {
            if let (Some(parent), Some(name)) = (t.parent(), t.file_name())
                && let Some(names) = self.dirs.get_mut(parent)
            {
                names.remove(name);
            }
        }
    }

    /// Walks `root` (one stat per entry, every directory opened relative
    /// to the root without following symlinks), not crossing into other
    /// filesystems: mounts inside the tree are not content.
    pub fn build(root: &Path) -> Result<StatIndex> {
        let root_fd = open_root(root)?;
        let dev = dev_of(&stat_at(&root_fd, root, OsStr::new(""))?);
        let parts = crate::pool::run(
            vec![PathBuf::new()],
            crate::pool::threads(),
            |rel: PathBuf, part: &mut Vec<(PathBuf, HashMap<OsString, Stamp>)>, more| {
                let Some(dir) = open_dir_beneath(&root_fd, root, &rel)? else {
                    return Ok(());
                };
                let mut names = HashMap::new();
                for_each_entry(&dir, &root.join(&rel), |name| {
                    let Some(st) = stat_entry(&dir, &root.join(&rel), name)? else {
                        return Ok(());
                    };
                    let stamp = Stamp::of(&st);
                    if stamp.is_dir() && dev_of(&st) == dev {
                        more.push(rel.join(name));
                    }
                    names.insert(name.to_os_string(), stamp);
                    Ok(())
                })?;
                part.push((rel, names));
                Ok(())
            },
        )?;
        Ok(StatIndex {
            dirs: parts.into_iter().flatten().collect(),
        })
    }
}

pub(crate) fn dev_of(st: &Statx) -> (u32, u32) {
    (st.stx_dev_major, st.stx_dev_minor)
}

fn io(op: &'static str, path: PathBuf) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |e| Error::Io {
        op,
        path,
        cause: e.into(),
    }
}

/// An `O_PATH`-free directory fd for the root of a walk.
pub(crate) fn open_root(root: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open", root.to_path_buf()))
}

/// Opens the directory `rel` under `root_fd`, refusing symlinks on the way
/// and any escape; `None` if it is gone (or no longer a directory).
pub(crate) fn open_dir_beneath(
    root_fd: &OwnedFd,
    root: &Path,
    rel: &Path,
) -> Result<Option<OwnedFd>> {
    let path: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    match kiln_image::in_root::openat2(
        root_fd,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            Ok(None)
        }
        Err(e) => Err(io("open", root.join(rel))(e)),
    }
}

/// Calls `f` with each name in the directory (not `.` or `..`).
pub(crate) fn for_each_entry(
    dir: &OwnedFd,
    shown: &Path,
    mut f: impl FnMut(&OsStr) -> Result<()>,
) -> Result<()> {
    let d = rustix::fs::Dir::read_from(dir).map_err(io("read", shown.to_path_buf()))?;
    for ent in d {
        let ent = ent.map_err(io("read", shown.to_path_buf()))?;
        let name = OsStr::from_bytes(ent.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        f(name)?;
    }
    Ok(())
}

/// statx of `name` in `dir`, not following a symlink; `None` if it is gone.
pub(crate) fn stat_entry(dir: impl AsFd, shown: &Path, name: &OsStr) -> Result<Option<Statx>> {
    match rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STAMP_MASK) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(io("stat", shown.join(name))(e)),
    }
}

/// statx of an fd itself (`name` empty) or of `name` under it.
pub(crate) fn stat_at(fd: impl AsFd, shown: &Path, name: &OsStr) -> Result<Statx> {
    let flags = if name.is_empty() {
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::statx(fd, name, flags, STAMP_MASK).map_err(io("stat", shown.join(name)))
}
