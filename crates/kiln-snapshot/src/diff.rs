//! Diffs of a container filesystem back into layer entries.
//!
//! Overlay: the upper dir *is* the diff; whiteouts (char 0/0) and opaque
//! directories (`user.overlay.opaque` or `trusted.overlay.opaque`) become
//! `.wh.` entries, so the cost grows with what changed. Copy: a walk
//! compared against the [`StatIndex`] taken before the step. Both yield the
//! same entries for the same changes, so the layers are digest-equal.
//!
//! Mount points a run created for its mounts (and for /proc, /etc/hosts and
//! friends in the copy snapshotter) are stubs, not content: empty
//! directories and files that did not exist before are dropped, as BuildKit
//! does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiln_image::layer::{Entry, EntryKind, WalkOptions, walk_dir};

use crate::Result;
use crate::stat_index::StatIndex;

/// Paths the sandbox may create as mount points in a plain directory.
pub(crate) const SANDBOX_STUBS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
];

const OPAQUE_XATTRS: &[&str] = &["user.overlay.opaque", "trusted.overlay.opaque"];

fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
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

/// The layer entries of a copied root filesystem compared with its index
/// from before the run.
pub fn diff_copy(root: &Path, before: &StatIndex, stubs: &[PathBuf]) -> Result<Vec<Entry>> {
    let after = StatIndex::build(root)?;
    let mut changed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut opaque: BTreeSet<PathBuf> = BTreeSet::new();
    for (p, now) in &after.entries {
        match before.entries.get(p) {
            None => {
                changed.insert(p.clone());
            }
            Some(was) if was.is_dir() && now.is_dir() => {
                // A directory's times change whenever a child comes or goes;
                // the children carry that change. A new inode (or birth
                // time) means it was removed and made again: overlay would
                // mark it opaque.
                if was.replaced_by(now) {
                    opaque.insert(p.clone());
                    changed.insert(p.clone());
                } else if (was.mode, was.uid, was.gid) != (now.mode, now.uid, now.gid) {
                    changed.insert(p.clone());
                }
            }
            Some(was) if was != now => {
                changed.insert(p.clone());
            }
            Some(_) => {}
        }
    }
    let mut deleted = Vec::new();
    for p in before.entries.keys() {
        if after.entries.contains_key(p) {
            continue;
        }
        // Report only the top of a deleted subtree, and nothing under an
        // opaque directory (the marker hides it all).
        let parent_gone = p
            .parent()
            .is_some_and(|q| !q.as_os_str().is_empty() && !after.entries.contains_key(q));
        let under_opaque = p.ancestors().skip(1).any(|a| opaque.contains(a));
        if !parent_gone && !under_opaque {
            deleted.push(p.clone());
        }
    }
    // Entries to emit: changes, their ancestors, and whole opaque subtrees.
    let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
    for p in changed.iter().chain(deleted.iter()) {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            keep.insert(a.to_path_buf());
        }
    }
    keep.extend(changed.iter().cloned());
    let mut out = Vec::new();
    for e in walk_dir(root, &WalkOptions::default())? {
        let in_opaque = e.path.ancestors().skip(1).any(|a| opaque.contains(a));
        if keep.contains(&e.path) || in_opaque {
            if opaque.contains(&e.path) {
                out.push(Entry::opaque_whiteout(e.path.clone()));
            }
            out.push(e);
        }
    }
    out.extend(deleted.into_iter().map(Entry::whiteout));
    let mut stubs: Vec<PathBuf> = stubs.iter().map(|s| rel(s)).collect();
    stubs.extend(SANDBOX_STUBS.iter().map(PathBuf::from));
    let existed = |p: &Path| before.entries.contains_key(p);
    Ok(drop_stubs(out, &stubs, &existed))
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
