//! Removing a container's tree, on a few threads: a copied rootfs has as
//! many files as its image, and unlinking them one by one on one core is
//! a good part of a copy-snapshotter run.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};

use crate::stat_index::{for_each_entry, open_dir_beneath, open_root, stat_entry};
use crate::{Result, io_err};

/// Deletes `rel` under the directory `root_fd` (shown as `root`), and
/// everything under it if it is a directory, resolving nothing outside
/// the root and following no symlink. Gone already is fine.
pub(crate) fn remove_beneath(root_fd: &OwnedFd, root: &Path, rel: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(());
    };
    let Some(parent_fd) = open_dir_beneath(root_fd, root, parent)? else {
        return Ok(());
    };
    let shown = root.join(rel);
    let Some(st) = stat_entry(&parent_fd, &root.join(parent), name)? else {
        return Ok(());
    };
    if FileType::from_raw_mode(u32::from(st.stx_mode)) != FileType::Directory {
        return rustix::fs::unlinkat(&parent_fd, name, AtFlags::empty())
            .map_err(|e| io_err("remove", &shown)(e.into()));
    }
    let Some(dir_fd) = open_dir_beneath(root_fd, root, rel)? else {
        return Ok(());
    };
    empty_dir(&dir_fd, &shown)?;
    rustix::fs::unlinkat(&parent_fd, name, AtFlags::REMOVEDIR)
        .map_err(|e| io_err("remove", &shown)(e.into()))
}

/// Deletes everything under the directory `root_fd` (shown as `dir`).
fn empty_dir(root_fd: &OwnedFd, dir: &Path) -> Result<()> {
    let parts = crate::pool::run(
        vec![PathBuf::new()],
        crate::pool::threads(),
        |rel: PathBuf, dirs: &mut Vec<PathBuf>, more| {
            let Some(fd) = open_dir_beneath(root_fd, dir, &rel)? else {
                return Ok(());
            };
            let shown = dir.join(&rel);
            for_each_entry(&fd, &shown, |name: &OsStr| {
                let Some(st) = stat_entry(&fd, &shown, name)? else {
                    return Ok(());
                };
                if FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory {
                    more.push(rel.join(name));
                } else {
                    rustix::fs::unlinkat(&fd, name, AtFlags::empty())
                        .map_err(|e| io_err("remove", &shown.join(name))(e.into()))?;
                }
                Ok(())
            })?;
            dirs.push(rel);
            Ok(())
        },
    )?;
    // Deepest first, so each directory is empty when its turn comes.
    let mut dirs: Vec<PathBuf> = parts.into_iter().flatten().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
        rustix::fs::unlinkat(root_fd, d, AtFlags::REMOVEDIR)
            .map_err(|e| io_err("remove", &dir.join(d))(e.into()))?;
    }
    Ok(())
}

/// Deletes `dir` and everything under it, never following a symlink.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    let fast = || -> Result<()> {
        let root_fd = open_root(dir)?;
        empty_dir(&root_fd, dir)?;
        drop(root_fd);
        std::fs::remove_dir(dir).map_err(io_err("remove", dir))
    };
    // Whatever the fast path tripped on (a directory whose mode denies
    // reading, say), std's remover gets a go at the rest.
    fast().or_else(|_| std::fs::remove_dir_all(dir).map_err(io_err("remove", dir)))
}
