//! Diffs of a container filesystem back into layer entries.
//!
//! Overlay: the upper dir *is* the diff; whiteouts (char 0/0) and opaque
//! directories (`user.overlay.opaque` or `trusted.overlay.opaque`) become
//! `.wh.` entries, so the cost grows with what changed. Copy: a walk
//! compared against the [`StatIndex`] taken before the step. Both yield the
//! same entries for the same changes, so the layers are digest-equal.
//! The copy diff stats every path once and reads only changed files.
//!
//! Mount points a run created for its mounts (and for /proc, /etc/hosts and
//! friends in the copy snapshotter) are stubs, not content: empty
//! directories and files that did not exist before are dropped, as BuildKit
//! does.
//!
//! In the copy snapshotter, nothing at or under a mount target or those
//! standard paths is content either: where the sandbox could mount, the
//! tree under them is untouched (the run wrote to the mount); where it
//! could not (chroot isolation without a mount namespace) it *copied* the
//! mounts, `/dev` and the `/etc` files in, and they must not reach the
//! layer (a secret least of all). Both give the same layer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::layer::{Entry, EntryKind, WalkOptions, host_entry, owner_on_disk, walk_dir};

use crate::Result;
use crate::stat_index::{
    Stamp, StatIndex, dev_of, for_each_entry, open_dir_beneath, open_root, stat_at, stat_entry,
};

/// Paths the sandbox may create as mount points in a plain directory.
pub(crate) const SANDBOX_STUBS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
];

use kiln_image::layer::overlay::is_opaque;

fn is_whiteout(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| kiln_image::layer::overlay::is_whiteout(&m))
}

/// A container path as the sandbox resolves it: relative to the root, `.`
/// dropped, `..` never above the root.
fn rel(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The layer entries of an overlay upper dir. `existed` says whether a
/// path existed below the upper dir; `stubs` are the mount targets of the
/// run.
pub fn diff_upper(
    upper: &Path,
    existed: &dyn Fn(&Path) -> bool,
    stubs: &[PathBuf],
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in walk_dir(upper, &WalkOptions::default())? {
        match e.kind {
            EntryKind::CharDevice { major: 0, minor: 0 } => out.push(Entry::whiteout(e.path)),
            // overlayfs shares one inode among its whiteouts, so the walker
            // sees all but the first as hard links.
            EntryKind::Hardlink { .. } if is_whiteout(&upper.join(&e.path)) => {
                out.push(Entry::whiteout(e.path))
            }
            EntryKind::Dir => {
                if is_opaque(&upper.join(&e.path)) {
                    out.push(Entry::opaque_whiteout(e.path.clone()));
                }
                out.push(e);
            }
            _ => out.push(e),
        }
    }
    let stubs: Vec<PathBuf> = stubs.iter().map(|s| rel(s)).collect();
    Ok(drop_stubs(out, &stubs, existed))
}

/// What one stat walk of a copied tree found against its index.
#[derive(Default)]
pub(crate) struct Found {
    /// New or changed paths (everything under an opaque directory too).
    pub(crate) changed: Vec<PathBuf>,
    /// Directories removed and made again: overlay would mark them opaque.
    pub(crate) opaque: Vec<PathBuf>,
    /// The tops of deleted subtrees.
    pub(crate) deleted: Vec<PathBuf>,
    /// Directories still there whose stamp moved at all (a child came or
    /// went, times or xattrs set): not layer content, but what putting the
    /// tree back as it was (`copy::restore`) must reset.
    pub(crate) moved_dirs: Vec<PathBuf>,
    /// (device, inode) of files with more than one link -> the first of
    /// their paths in layer order.
    links: HashMap<(u32, u32, u64), PathBuf>,
}

/// A directory to compare; `fresh` when it is new (or opaque), so all it
/// holds is new too.
struct Job {
    rel: PathBuf,
    fresh: bool,
}

/// The layer entries of a copied root filesystem compared with its index
/// from before the run: one stat walk (no file is read), then entries for
/// the changed paths and their parents only.
pub fn diff_copy(root: &Path, before: &StatIndex, stubs: &[PathBuf]) -> Result<Vec<Entry>> {
    let found = walk_changes(root, before)?;
    entries_of(root, before, stubs, &found)
}

/// The layer entries of what [`walk_changes`] found.
pub(crate) fn entries_of(
    root: &Path,
    before: &StatIndex,
    stubs: &[PathBuf],
    found: &Found,
) -> Result<Vec<Entry>> {
    let opaque: BTreeSet<&Path> = found.opaque.iter().map(PathBuf::as_path).collect();
    let mut keep: BTreeSet<&Path> = BTreeSet::new();
    for p in found.changed.iter().chain(found.deleted.iter()) {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() || !keep.insert(a) {
                break;
            }
        }
    }
    keep.extend(found.changed.iter().map(PathBuf::as_path));
    let mut out = Vec::with_capacity(keep.len() + found.deleted.len());
    for p in keep {
        let host = root.join(p);
        let md = match std::fs::symlink_metadata(&host) {
            Ok(md) => md,
            Err(e) => return Err(crate::io_err("stat", &host)(e)),
        };
        if opaque.contains(p) {
            out.push(Entry::opaque_whiteout(p.to_path_buf()));
        }
        let link_to = (!md.is_dir() && md.nlink() > 1)
            .then(|| {
                let rdev = md.dev();
                let key = (libc::major(rdev), libc::minor(rdev), md.ino());
                found
                    .links
                    .get(&key)
                    .filter(|first| first.as_path() != p)
                    .cloned()
            })
            .flatten();
        if let Some(mut e) = host_entry(&host, p.to_path_buf(), &md, link_to, true)? {
            // What traced isolation recorded, not kiln's own IDs.
            let (uid, gid) = owner_on_disk(&host, &md);
            (e.uid, e.gid) = (u64::from(uid), u64::from(gid));
            out.push(e);
        }
    }
    out.extend(found.deleted.iter().cloned().map(Entry::whiteout));
    let mut stubs: Vec<PathBuf> = stubs.iter().map(|s| rel(s)).collect();
    stubs.extend(SANDBOX_STUBS.iter().map(PathBuf::from));
    stubs.retain(|s| !s.as_os_str().is_empty());
    out.retain(|e| !stubs.iter().any(|s| e.path.starts_with(s)));
    let existed = |p: &Path| before.contains(p);
    Ok(drop_stubs(out, &stubs, &existed))
}

/// Whether an unprivileged RUN (traced isolation) recorded an owner for
/// the node: a directory it chowned changes only in ctime and that record.
fn has_owner_record(host: &Path) -> bool {
    let mut buf = [0u8; 32];
    rustix::fs::lgetxattr(host, kiln_image::layer::OWNER_XATTR, &mut buf).is_ok()
}

/// The stat walk of [`diff_copy`], spread over a few threads.
pub(crate) fn walk_changes(root: &Path, before: &StatIndex) -> Result<Found> {
    walk_dirs(root, before, vec![PathBuf::new()], true)
}

/// The walk of [`walk_changes`] over the directories `dirs` only: each one
/// compared with the index, a new or replaced directory below one walked
/// whole, others not entered (`all`: every directory entered).
pub(crate) fn walk_dirs(
    root: &Path,
    before: &StatIndex,
    dirs: Vec<PathBuf>,
    all: bool,
) -> Result<Found> {
    let unprivileged = !rustix::process::geteuid().is_root();
    let root_fd = open_root(root)?;
    let dev = dev_of(&stat_at(&root_fd, root, OsStr::new(""))?);
    let starts: Vec<Job> = dirs
        .into_iter()
        .map(|rel| Job { rel, fresh: false })
        .collect();
    let parts = crate::pool::run(
        starts,
        crate::pool::threads(),
        |job: Job, found: &mut Found, more| {
            let Some(dir) = open_dir_beneath(&root_fd, root, &job.rel)? else {
                return Ok(());
            };
            let shown = root.join(&job.rel);
            let was_here = if job.fresh {
                None
            } else {
                before.dirs.get(&job.rel)
            };
            let mut matched = 0;
            for_each_entry(&dir, &shown, |name| {
                let Some(st) = stat_entry(&dir, &shown, name)? else {
                    return Ok(());
                };
                let now = Stamp::of(&st);
                let path = || job.rel.join(name);
                if !now.is_dir() && st.stx_nlink > 1 {
                    let key = (st.stx_dev_major, st.stx_dev_minor, st.stx_ino);
                    let p = path();
                    match found.links.get_mut(&key) {
                        Some(first) if *first <= p => {}
                        Some(first) => *first = p,
                        None => {
                            found.links.insert(key, p);
                        }
                    }
                }
                let descend = now.is_dir() && dev_of(&st) == dev;
                let was = was_here.and_then(|w| w.get(name));
                matched += usize::from(was.is_some());
                let fresh = match was {
                    None => {
                        found.changed.push(path());
                        true
                    }
                    Some(was) if was.is_dir() && now.is_dir() => {
                        // A directory's times change whenever a child comes or
                        // goes; the children carry that change.
                        if was.replaced_by(&now) {
                            found.opaque.push(path());
                            found.changed.push(path());
                            true
                        } else {
                            if *was != now {
                                found.moved_dirs.push(path());
                            }
                            if (was.mode, was.uid, was.gid) != (now.mode, now.uid, now.gid)
                                || (unprivileged
                                    && was.ctime != now.ctime
                                    && has_owner_record(&shown.join(name)))
                            {
                                found.changed.push(path());
                            }
                            false
                        }
                    }
                    Some(was) if *was != now => {
                        found.changed.push(path());
                        true
                    }
                    Some(_) => false,
                };
                if descend && (all || fresh) {
                    more.push(Job { rel: path(), fresh });
                }
                Ok(())
            })?;
            if let Some(was_here) = was_here
                && matched < was_here.len()
            {
                for name in was_here.keys() {
                    match stat_entry(&dir, &shown, name)? {
                        Some(_) => {}
                        None => found.deleted.push(job.rel.join(name)),
                    }
                }
            }
            Ok(())
        },
    )?;
    let mut all = Found::default();
    for part in parts {
        all.absorb(part);
    }
    Ok(all)
}

impl Found {
    fn absorb(&mut self, other: Found) {
        self.changed.extend(other.changed);
        self.opaque.extend(other.opaque);
        self.deleted.extend(other.deleted);
        self.moved_dirs.extend(other.moved_dirs);
        for (key, p) in other.links {
            match self.links.get_mut(&key) {
                Some(first) if *first <= p => {}
                Some(first) => *first = p,
                None => {
                    self.links.insert(key, p);
                }
            }
        }
    }
}

/// What [`walk_changes`] would find, from the directories a watch saw
/// touched (`dirty`) only; `None` where that cannot give the same answer
/// (a directory was replaced, or a file got a hard link it did not have).
/// A file's other names live in directories nobody touched, yet writing
/// through one name changes them all: so every name of an inode linked
/// more than once, wherever a walked directory holds one of them, has its
/// directory walked too.
pub(crate) fn walk_watched(
    root: &Path,
    before: &StatIndex,
    dirty: BTreeSet<PathBuf>,
) -> Result<Option<Found>> {
    // Inodes the index holds under more than one name, and those names.
    let mut count: HashMap<u64, u32> = HashMap::new();
    for names in before.dirs.values() {
        for st in names.values().filter(|s| !s.is_dir()) {
            *count.entry(st.ino).or_default() += 1;
        }
    }
    let mut names_of: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    for (dir, names) in &before.dirs {
        for (name, st) in names {
            if !st.is_dir() && count.get(&st.ino).is_some_and(|&n| n > 1) {
                names_of.entry(st.ino).or_default().push(dir.join(name));
            }
        }
    }
    let mut all = Found::default();
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut todo: Vec<PathBuf> = dirty.into_iter().collect();
    while !todo.is_empty() {
        let batch: Vec<PathBuf> = std::mem::take(&mut todo)
            .into_iter()
            .filter(|d| done.insert(d.clone()))
            .collect();
        if batch.is_empty() {
            break;
        }
        let found = walk_dirs(root, before, batch.clone(), false)?;
        if !found.opaque.is_empty() {
            return Ok(None);
        }
        let mut linked: Vec<u64> = Vec::new();
        for dir in &batch {
            if let Some(names) = before.dirs.get(dir) {
                linked.extend(names.values().map(|s| s.ino));
            }
        }
        for ((_, _, ino), path) in &found.links {
            if !names_of.contains_key(ino) && found.changed.contains(path) {
                return Ok(None); // a new link to a file elsewhere
            }
            linked.push(*ino);
        }
        for ino in linked {
            if let Some(paths) = names_of.get(&ino) {
                todo.extend(
                    paths
                        .iter()
                        .map(|p| p.parent().unwrap_or(Path::new("")).to_path_buf()),
                );
            }
        }
        all.absorb(found);
    }
    Ok(Some(all))
}

/// Removes mount-point stubs: new, empty entries at or above a mount
/// target, and directories above one that hold nothing else of the layer.
fn drop_stubs(
    entries: Vec<Entry>,
    stubs: &[PathBuf],
    existed: &dyn Fn(&Path) -> bool,
) -> Vec<Entry> {
    if stubs.is_empty() {
        return entries;
    }
    let candidates: BTreeSet<PathBuf> = stubs
        .iter()
        .flat_map(|s| s.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let is_stub_kind = |e: &Entry| match &e.kind {
        EntryKind::Dir => true,
        EntryKind::File { size, .. } => *size == 0,
        _ => false,
    };
    // How many entries live under each candidate that are not candidates.
    let mut content: BTreeMap<&Path, usize> = BTreeMap::new();
    for e in &entries {
        if candidates.contains(&e.path) && is_stub_kind(e) {
            continue;
        }
        for a in e.path.ancestors().skip(1) {
            if let Some(c) = candidates.get(a) {
                *content.entry(c.as_path()).or_default() += 1;
            }
        }
    }
    entries
        .into_iter()
        .filter(|e| {
            if !candidates.contains(&e.path)
                || content.get(e.path.as_path()).copied().unwrap_or(0) > 0
            {
                return true;
            }
            // A new stub goes. So does an existing directory above a stub
            // that holds nothing else of this layer: it is here only because
            // making the stub copied it up (overlay) or touched it (copy).
            if existed(&e.path) {
                !matches!(e.kind, EntryKind::Dir)
            } else {
                !is_stub_kind(e)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// What chroot isolation without a mount namespace copies into a copy
    /// container (a secret, a cache's contents over an image directory,
    /// `/etc/hosts`, `/dev` nodes) is left out of the diff, whatever the run
    /// did there; the run's own change is not.
    #[test]
    fn copied_mounts_and_standard_paths_stay_out_of_the_layer() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["etc", "cache", "dev"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/hosts"), "image's hosts\n").unwrap();
        fs::write(root.join("cache/from-image"), "image\n").unwrap();
        let index = StatIndex::build(root).unwrap();

        fs::create_dir_all(root.join("run/secrets")).unwrap();
        fs::write(root.join("run/secrets/tok"), "s3cret").unwrap();
        fs::remove_file(root.join("cache/from-image")).unwrap();
        fs::write(root.join("cache/from-run"), "cached\n").unwrap();
        fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(root.join("dev/null"), "a plain file\n").unwrap();
        fs::write(root.join("made-by-run"), "kept\n").unwrap();

        let targets = [PathBuf::from("/run/secrets/tok"), PathBuf::from("./cache")];
        let got: Vec<String> = diff_copy(root, &index, &targets)
            .unwrap()
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(got, ["made-by-run"]);
    }
}
