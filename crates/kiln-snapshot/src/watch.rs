//! Which directories of a copied tree a run touched, as inotify tells it,
//! so that the diff compares those with the stat index instead of walking
//! the whole tree.
//!
//! Why: with a kept tree (`tree_pool`) the copy is gone from a RUN's cost,
//! and the walk is what is left: a stat of every file, the very thing
//! kaniko does after every step (1.9 s for 100,000 files with a cold page
//! cache). A watch on each directory costs one call per directory, not per
//! file, and needs no privilege.
//!
//! Whenever the events cannot say for sure, [`Watch::dirty`] says so and
//! the caller walks everything: the queue overflowed (a big RUN: apt, pip)
//! or a watch could not be added (the user's inotify limits). A directory
//! made during the run has no watch; it is new, so its parent's event has
//! the diff walk it whole. A directory moved keeps its watches, which then
//! name its old path: moved elsewhere, it is new where it went (walked
//! whole) and gone where it was (its stale events name a path that is no
//! more); moved back (chroot isolation moves `/dev` aside and back) it is
//! where its watches say; replaced by another, the diff's walk sees a new
//! inode and gives up. What is not caught here, hard links, the caller
//! handles (`diff::walk_watched`).

use std::collections::{BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use crate::stat_index::StatIndex;

pub(crate) struct Watch {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
}

impl Watch {
    /// Watches every directory `index` knows in the tree at `root` (and
    /// the root); `None` if inotify refuses any of it.
    pub(crate) fn start(root: &Path, index: &StatIndex) -> Option<Watch> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let mask = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::DONT_FOLLOW
            | WatchFlags::ONLYDIR;
        let mut dirs = HashMap::with_capacity(index.dirs.len() + 1);
        let wd = inotify::add_watch(&fd, root, mask).ok()?;
        dirs.insert(wd, PathBuf::new());
        for (dir, names) in &index.dirs {
            for (name, stamp) in names {
                if stamp.is_dir() {
                    let rel = dir.join(name);
                    let wd = inotify::add_watch(&fd, root.join(&rel), mask).ok()?;
                    dirs.insert(wd, rel);
                }
            }
        }
        Some(Watch { fd, dirs })
    }

    /// The directories whose entries the run may have changed, with their
    /// parents (a directory's own stamp is in its parent's listing); `None`
    /// when the events cannot tell.
    pub(crate) fn dirty(&self) -> Option<BTreeSet<PathBuf>> {
        let mut dirty = BTreeSet::new();
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(Errno::WOULDBLOCK) => break,
                Err(Errno::INTR) => continue,
                Err(_) => return None,
            };
            let flags = ev.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                return None;
            }
            // A directory's own deletion or move: its parent's event says
            // it (and a directory moved keeps its watches, see above).
            if flags.intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF)
            {
                continue;
            }
            let dir = self.dirs.get(&ev.wd())?;
            dirty.insert(dir.clone());
        }
        let parents: Vec<PathBuf> = dirty
            .iter()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.parent().unwrap_or(Path::new("")).to_path_buf())
            .collect();
        dirty.extend(parents);
        Some(dirty)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::diff::{Found, walk_changes, walk_watched};

    fn sorted(f: &Found) -> [Vec<PathBuf>; 4] {
        let s = |v: &Vec<PathBuf>| {
            let mut v = v.clone();
            v.sort();
            v.dedup();
            v
        };
        [s(&f.changed), s(&f.deleted), s(&f.opaque), s(&f.moved_dirs)]
    }

    /// What the watch lets the diff walk find, which must be what a walk
    /// of everything finds; returns the latter.
    fn same_as_full_walk(w: &Watch, root: &Path, index: &StatIndex) -> Found {
        let dirty = w.dirty().expect("the events tell");
        let watched = walk_watched(root, index, dirty)
            .unwrap()
            .expect("no fallback");
        let full = walk_changes(root, index).unwrap();
        assert_eq!(sorted(&watched), sorted(&full));
        full
    }

    fn tree() -> (tempfile::TempDir, PathBuf, StatIndex) {
        let t = tempfile::tempdir().unwrap();
        let (layer, root) = (t.path().join("l"), t.path().join("r"));
        for d in ["a/b/c", "d", "e", "x/y"] {
            fs::create_dir_all(layer.join(d)).unwrap();
        }
        for f in [
            "a/b/c/f",
            "a/g",
            "d/h",
            "e/gone",
            "x/y/z",
            "e/tmpdir-parent",
        ] {
            fs::write(layer.join(f), f).unwrap();
        }
        fs::hard_link(layer.join("d/h"), layer.join("x/h-too")).unwrap();
        fs::create_dir(&root).unwrap();
        let index = crate::copy::copy_layers(&[layer], &root).unwrap();
        (t, root, index)
    }

    /// What the watch lets the diff walk finds exactly what a walk of
    /// everything finds: edits deep down, new trees, deletions, a chmod, a
    /// file made and removed, and a write through one of two hard links
    /// (whose other name is in a directory nothing touched).
    #[test]
    fn watched_directories_give_what_a_full_walk_gives() {
        let (_t, root, index) = tree();
        let w = Watch::start(&root, &index).expect("inotify");
        fs::write(root.join("a/b/c/f"), "edited").unwrap();
        fs::create_dir_all(root.join("n/m")).unwrap();
        fs::write(root.join("n/m/new"), "new").unwrap();
        fs::remove_file(root.join("e/gone")).unwrap();
        fs::set_permissions(root.join("x/y"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("e/tmp"), "made and removed").unwrap();
        fs::remove_file(root.join("e/tmp")).unwrap();
        fs::write(root.join("d/h"), "through one name").unwrap();
        let full = same_as_full_walk(&w, &root, &index);
        assert!(
            full.changed.contains(&PathBuf::from("x/h-too")),
            "the other name"
        );
    }

    /// Directories moved: one elsewhere (and written in after, through
    /// its old watch), one out of the tree and back (as chroot isolation
    /// does with `/dev`), one replaced by another: each gives what a walk
    /// of everything gives, or no answer.
    #[test]
    fn moved_directories_give_what_a_full_walk_gives() {
        let (t, root, index) = tree();
        let w = Watch::start(&root, &index).expect("inotify");
        fs::rename(root.join("a/b"), root.join("d/b")).unwrap();
        fs::write(root.join("d/b/c/late"), "written after the move").unwrap();
        fs::rename(root.join("x"), t.path().join("x-aside")).unwrap();
        fs::rename(t.path().join("x-aside"), root.join("x")).unwrap();
        let full = same_as_full_walk(&w, &root, &index);
        assert!(full.changed.contains(&PathBuf::from("d/b/c/late")));

        let (t, root, index) = tree();
        let w = Watch::start(&root, &index).expect("inotify");
        fs::rename(root.join("e"), t.path().join("e-old")).unwrap();
        fs::rename(root.join("x/y"), root.join("e")).unwrap();
        let dirty = w.dirty().expect("the events tell");
        assert!(walk_watched(&root, &index, dirty).unwrap().is_none());
    }

    /// A new hard link to a file whose directory nothing else touched
    /// cannot be followed from the watched side: no answer, a full walk.
    #[test]
    fn a_new_link_to_an_untouched_file_falls_back() {
        let (_t, root, index) = tree();
        let w = Watch::start(&root, &index).expect("inotify");
        fs::hard_link(root.join("a/g"), root.join("e/g-link")).unwrap();
        let dirty = w.dirty().expect("the events tell");
        assert!(walk_watched(&root, &index, dirty).unwrap().is_none());
    }
}
