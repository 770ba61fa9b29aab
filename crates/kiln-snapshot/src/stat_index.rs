//! A stat index of a tree: what each path was before a RUN step in the
//! copy snapshotter, so the diff afterwards costs one walk and no reads of
//! unchanged files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{Result, io_err};

/// What identifies a version of one file without reading it. Any change a
/// process can make (content, mode, owner, xattrs, times, replacement)
/// changes at least one of these; ctime catches the ones that keep mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub rdev: u64,
    /// Birth time where the filesystem records it: a directory removed and
    /// made again often gets its old inode number back, but not its birth.
    pub born: Option<std::time::SystemTime>,
}

impl Stamp {
    pub fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            rdev: m.rdev(),
            born: m.created().ok(),
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

/// Paths (relative to the root) and their stamps.
#[derive(Debug, Clone, Default)]
pub struct StatIndex {
    pub entries: BTreeMap<PathBuf, Stamp>,
}

impl StatIndex {
    /// Walks `root` without following symlinks or crossing into other
    /// filesystems (mounts inside the tree are not content).
    pub fn build(root: &Path) -> Result<StatIndex> {
        let mut entries = BTreeMap::new();
        let dev = fs::symlink_metadata(root)
            .map_err(io_err("stat", root))?
            .dev();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let dir = root.join(&rel);
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &dir)(e)),
            };
            for e in rd {
                let e = e.map_err(io_err("read", &dir))?;
                let m = match e.metadata() {
                    Ok(m) => m,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(io_err("stat", &e.path())(err)),
                };
                let p = rel.join(e.file_name());
                if m.is_dir() && m.dev() == dev {
                    todo.push(p.clone());
                }
                entries.insert(p, Stamp::of(&m));
            }
        }
        Ok(StatIndex { entries })
    }
}
