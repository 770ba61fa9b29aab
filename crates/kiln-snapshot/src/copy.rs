//! The copy snapshotter's tree copy: the merged view of a stack of layer
//! directories (overlay rules: whiteouts hide, opaque directories stop the
//! descent, the topmost version wins) copied into one plain directory, and
//! its [`StatIndex`] filled on the way.
//!
//! Why it is shaped like this: the copy is the copy snapshotter's whole
//! cost, and it is syscall-bound. Every directory is opened once (relative
//! to the root, symlinks refused) and every entry is handled relative to
//! its directory fd, so no path is resolved from the root per file; nothing
//! is fsynced (a container is scratch: a crash loses it, which is fine);
//! file data goes by reflink where the filesystem has it, else by
//! `copy_file_range` (in the kernel, no buffer); directories are spread
//! over a few threads. Files linked more than once stay hard links.
//! Directory times are set last, once nothing is added to them any more,
//! and their stamps (and those of hard links, whose ctime each link moves)
//! are taken then. Symlinks and device nodes are copied without xattrs.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Statx, StatxTimestamp, Timespec, Timestamps};
use rustix::io::Errno;

use crate::stat_index::{
    Stamp, StatIndex, for_each_entry, open_dir_beneath, open_root, stat_at, stat_entry,
};
use crate::{Error, Result};

/// One directory to fill: its path, and the layers (indices, top first)
/// that hold a directory there, the first one giving its metadata.
struct Job {
    rel: PathBuf,
    layers: Vec<usize>,
    /// Only these names of the directory ([`restore`]); `None`: all.
    only: Option<HashSet<OsString>>,
}

#[derive(Default)]
struct Part {
    names: Vec<(PathBuf, HashMap<OsString, Stamp>)>,
    /// Directories' times and modes, set once they are filled.
    dir_times: Vec<(PathBuf, Timestamps, Mode)>,
    linked: Vec<PathBuf>,
}

struct Ctx<'a> {
    layers: &'a [PathBuf],
    layer_fds: Vec<OwnedFd>,
    dest: &'a Path,
    dest_fd: OwnedFd,
    /// (layer device, inode) of a file linked more than once -> its first
    /// copy in the destination.
    links: Mutex<HashMap<(u32, u32, u64), PathBuf>>,
    /// A file linked more than once was copied: [`restore`] cannot link
    /// it to the other names a full copy would.
    linked_source: AtomicBool,
}

static NO_REFLINK: AtomicBool = AtomicBool::new(false);

fn errno(op: &'static str, path: PathBuf) -> impl FnOnce(Errno) -> Error {
    move |e| Error::Io {
        op,
        path,
        cause: e.into(),
    }
}

fn is_whiteout(st: &Statx) -> bool {
    FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::CharacterDevice
        && st.stx_rdev_major == 0
        && st.stx_rdev_minor == 0
}

fn is_dir(st: &Statx) -> bool {
    FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory
}

fn times_of(st: &Statx) -> Timestamps {
    let ts = |t: &StatxTimestamp| Timespec {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec.into(),
    };
    Timestamps {
        last_access: ts(&st.stx_atime),
        last_modification: ts(&st.stx_mtime),
    }
}

use kiln_image::layer::overlay::is_opaque_fd as is_opaque;

/// Copies the merged view of `layers` (top first) into the empty directory
/// `dest` and returns the stat index of the copy.
pub(crate) fn copy_layers(layers: &[PathBuf], dest: &Path) -> Result<StatIndex> {
    let ctx = Ctx::new(layers, dest)?;
    let root = Job {
        rel: PathBuf::new(),
        layers: (0..layers.len()).collect(),
        only: None,
    };
    let mut index = StatIndex::default();
    ctx.run(vec![root], &mut index)?;
    Ok(index)
}

/// Puts the merged view of `layers` back into `dest`, a copy of them that
/// a run changed, where the stat walk of the run's changes (`found`, from
/// `diff::walk_changes` against `index`) says it differs, and updates
/// `index` to match. Each changed, new or deleted path is removed and
/// copied again (a whole subtree where a directory was new, replaced or
/// had its mode or owner changed); every other directory whose stamp moved
/// gets its mode and times back (a directory whose xattrs differ is copied
/// again instead). Returns false when the result may differ from a fresh
/// copy: a file that had other hard links was copied again, and a fresh
/// copy would have linked it. The cost grows with what the run changed,
/// not with the tree.
pub(crate) fn restore(
    layers: &[PathBuf],
    dest: &Path,
    index: &mut StatIndex,
    found: &crate::diff::Found,
) -> Result<bool> {
    let ctx = Ctx::new(layers, dest)?;
    let moved: HashSet<&PathBuf> = found.moved_dirs.iter().collect();
    let opaque: HashSet<&PathBuf> = found.opaque.iter().collect();
    let mut paths: Vec<PathBuf> = found
        .changed
        .iter()
        .chain(&found.deleted)
        .chain(&found.opaque)
        .filter(|p| !moved.contains(p) || opaque.contains(p))
        .cloned()
        .collect();
    // Kept directories: their mode and times come back; if the run set an
    // xattr on one (or changed its mode or owner), the whole directory.
    let mut dirs = vec![PathBuf::new()];
    for d in &found.moved_dirs {
        let same = match ctx.top_dir(d)? {
            Some((l, src)) => {
                let now = open_dir_beneath(&ctx.dest_fd, dest, d)?;
                let was = index.get(d);
                let here = now
                    .as_ref()
                    .map(|fd| stat_at(fd, dest, OsStr::new("")))
                    .transpose()?;
                match (now, was, here) {
                    (Some(now), Some(was), Some(here)) => {
                        (was.mode, was.uid, was.gid)
                            == (u32::from(here.stx_mode), here.stx_uid, here.stx_gid)
                            && xattrs(&src, &layers[l].join(d))? == xattrs(&now, &dest.join(d))?
                    }
                    _ => false,
                }
            }
            None => false,
        };
        if same {
            dirs.push(d.clone());
        } else {
            paths.push(d.clone());
        }
    }
    paths.sort();
    paths.dedup();
    let mut tops: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !tops.last().is_some_and(|t| p.starts_with(t)) {
            tops.push(p);
        }
    }
    let under_top = |p: &Path| {
        p.ancestors()
            .any(|a| tops.binary_search_by(|t| t.as_path().cmp(a)).is_ok())
    };
    for t in &tops {
        crate::remove::remove_beneath(&ctx.dest_fd, dest, t)?;
    }
    index.forget(&tops);
    // One job per parent directory, limited to the names to put back.
    let mut by_parent: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
    for t in &tops {
        let (Some(parent), Some(name)) = (t.parent(), t.file_name()) else {
            continue;
        };
        by_parent
            .entry(parent.to_path_buf())
            .or_default()
            .insert(name.to_os_string());
    }
    for d in dirs {
        if !under_top(&d) {
            by_parent.entry(d).or_default();
        }
    }
    let mut jobs = Vec::with_capacity(by_parent.len());
    for (rel, names) in by_parent {
        let Some(layers) = ctx.layers_of_dir(&rel)? else {
            // A parent that is not a directory of the layers was new, so
            // it is among the tops and gone: nothing to put back there.
            continue;
        };
        jobs.push(Job {
            rel,
            layers,
            only: Some(names),
        });
    }
    ctx.run(jobs, index)?;
    Ok(!ctx.linked_source.load(Ordering::Relaxed))
}

/// Turns `dest`, a copy of other layers, into a copy of `layers` (top
/// first), where the two stacks differ only by the layer directories
/// `differing` (the old stack's layers above the common base, and the new
/// one's): every path those hold is put back from `layers`' merged view
/// (files, symlinks, whiteouts, opaque and new directories copied again; a
/// directory that only passes through gets its mode and times). Returns
/// false as [`restore`] does (the tree is then no such copy).
pub(crate) fn switch_layers(
    layers: &[PathBuf],
    differing: &[PathBuf],
    dest: &Path,
    index: &mut StatIndex,
) -> Result<bool> {
    let mut found = crate::diff::Found::default();
    for layer in differing {
        walk_layer(layer, Path::new(""), &mut found)?;
    }
    found.changed.sort();
    found.changed.dedup();
    found.moved_dirs.sort();
    found.moved_dirs.dedup();
    restore(layers, dest, index, &found)
}

/// Records the paths under `rel` of one layer directory: directories as
/// moved (opaque ones as changed), everything else as changed.
fn walk_layer(layer: &Path, rel: &Path, found: &mut crate::diff::Found) -> Result<()> {
    let dir = layer.join(rel);
    let rd = std::fs::read_dir(&dir).map_err(crate::io_err("read", &dir))?;
    for e in rd {
        let e = e.map_err(crate::io_err("read", &dir))?;
        let path = rel.join(e.file_name());
        let md = e.metadata().map_err(crate::io_err("stat", &e.path()))?;
        if !md.is_dir() || kiln_image::layer::overlay::is_opaque(&e.path()) {
            found.changed.push(path);
        } else {
            found.moved_dirs.push(path.clone());
            walk_layer(layer, &path, found)?;
        }
    }
    Ok(())
}

/// The xattrs (names and values, overlayfs' own left out) of `fd`,
/// sorted by name.
fn xattrs(fd: &OwnedFd, shown: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = list_xattrs(fd, shown)?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let os = OsStr::from_bytes(name);
        let len = match rustix::fs::fgetxattr_query(fd, os) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(errno("read xattr", shown.to_path_buf())(e)),
        };
        let mut value = vec![0u8; len];
        let n = rustix::fs::fgetxattr(fd, os, &mut value[..])
            .map_err(errno("read xattr", shown.to_path_buf()))?;
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

impl<'a> Ctx<'a> {
    fn new(layers: &'a [PathBuf], dest: &'a Path) -> Result<Ctx<'a>> {
        Ok(Ctx {
            layers,
            layer_fds: layers.iter().map(|l| open_root(l)).collect::<Result<_>>()?,
            dest,
            dest_fd: open_root(dest)?,
            links: Mutex::new(HashMap::new()),
            linked_source: AtomicBool::new(false),
        })
    }

    /// Fills the directories of `jobs` and what they push, then sets the
    /// directories' modes and times and records every stamp in `index`
    /// (merged into a directory's names where a job had `only`).
    fn run(&self, jobs: Vec<Job>, index: &mut StatIndex) -> Result<()> {
        let parts = crate::pool::run(
            jobs,
            crate::pool::threads(),
            |job, part: &mut Part, more| self.fill_dir(job, part, more),
        )?;
        let mut finish = Vec::new();
        let mut linked = Vec::new();
        for part in parts {
            for (dir, names) in part.names {
                index.dirs.entry(dir).or_default().extend(names);
            }
            finish.extend(part.dir_times);
            linked.extend(part.linked);
        }
        for rel in linked {
            let st = stat_at(&self.dest_fd, self.dest, rel.as_os_str())?;
            index.insert(&rel, Stamp::of(&st));
        }
        for (rel, times, mode) in finish {
            let dir = open_dir_beneath(&self.dest_fd, self.dest, &rel)?
                .ok_or_else(|| errno("open", self.dest.join(&rel))(Errno::NOENT))?;
            rustix::fs::fchmod(&dir, mode).map_err(errno("chmod", self.dest.join(&rel)))?;
            rustix::fs::futimens(&dir, &times)
                .map_err(errno("set times of", self.dest.join(&rel)))?;
            if !rel.as_os_str().is_empty() {
                let st = stat_at(&dir, self.dest, OsStr::new(""))?;
                index.insert(&rel, Stamp::of(&st));
            }
        }
        Ok(())
    }

    /// The layers (indices, top first) that hold a directory at `rel` in
    /// the merged view, cut below an opaque one; `None` when `rel` is no
    /// directory there (absent, whited out, or a file in a higher layer).
    fn layers_of_dir(&self, rel: &Path) -> Result<Option<Vec<usize>>> {
        let mut layers: Vec<usize> = (0..self.layers.len()).collect();
        let mut at = PathBuf::new();
        for c in rel.components() {
            at.push(c);
            let mut next = Vec::new();
            for &l in &layers {
                let Some(st) = stat_entry(&self.layer_fds[l], &self.layers[l], at.as_os_str())?
                else {
                    continue;
                };
                if !is_dir(&st) {
                    break; // a file or a whiteout hides everything below
                }
                next.push(l);
                let opaque = open_dir_beneath(&self.layer_fds[l], &self.layers[l], &at)?
                    .is_some_and(|fd| is_opaque(&fd));
                if opaque {
                    break;
                }
            }
            if next.is_empty() {
                return Ok(None);
            }
            layers = next;
        }
        Ok(Some(layers))
    }

    /// The topmost layer's version of the directory `rel`, opened.
    fn top_dir(&self, rel: &Path) -> Result<Option<(usize, OwnedFd)>> {
        let Some(layers) = self.layers_of_dir(rel)? else {
            return Ok(None);
        };
        let l = layers[0];
        Ok(open_dir_beneath(&self.layer_fds[l], &self.layers[l], rel)?.map(|fd| (l, fd)))
    }
}

impl Ctx<'_> {
    fn fill_dir(&self, job: Job, part: &mut Part, more: &mut Vec<Job>) -> Result<()> {
        let shown = self.dest.join(&job.rel);
        let dest = open_dir_beneath(&self.dest_fd, self.dest, &job.rel)?
            .ok_or_else(|| errno("open", shown.clone())(Errno::NOENT))?;
        // The layers' versions of this directory, cut below an opaque one.
        let mut srcs: Vec<(usize, OwnedFd)> = Vec::with_capacity(job.layers.len());
        for &l in &job.layers {
            let Some(fd) = open_dir_beneath(&self.layer_fds[l], &self.layers[l], &job.rel)? else {
                continue;
            };
            let opaque = job.layers.len() > 1 && is_opaque(&fd);
            srcs.push((l, fd));
            if opaque {
                break;
            }
        }
        let Some((top, top_fd)) = srcs.first() else {
            return Ok(());
        };
        let st = stat_at(top_fd, &self.layers[*top].join(&job.rel), OsStr::new(""))?;
        self.set_owner_xattrs(top_fd, &dest, &st, &shown)?;
        // Its mode may forbid adding entries: set with the times, at the end.
        let mode = Mode::from_raw_mode(u32::from(st.stx_mode) & 0o7777);
        part.dir_times.push((job.rel.clone(), times_of(&st), mode));

        let mut names: HashMap<OsString, Stamp> = HashMap::new();
        let mut seen: std::collections::HashSet<OsString> = std::collections::HashSet::new();
        for (pos, (layer, fd)) in srcs.iter().enumerate() {
            let src_shown = self.layers[*layer].join(&job.rel);
            for_each_entry(fd, &src_shown, |name| {
                // With one layer every name is new; with more, the topmost
                // version of a name decides (and hides the ones below).
                if job.only.as_ref().is_some_and(|only| !only.contains(name)) {
                    return Ok(());
                }
                if srcs.len() > 1 && !seen.insert(name.to_os_string()) {
                    return Ok(());
                }
                let Some(st) = stat_entry(fd, &src_shown, name)? else {
                    return Ok(());
                };
                if is_whiteout(&st) {
                    return Ok(());
                }
                let rel = job.rel.join(name);
                if is_dir(&st) {
                    rustix::fs::mkdirat(&dest, name, Mode::from_raw_mode(0o700))
                        .map_err(errno("create", self.dest.join(&rel)))?;
                    let mut layers = vec![*layer];
                    for (lower, lower_fd) in &srcs[pos + 1..] {
                        match stat_entry(lower_fd, &src_shown, name)? {
                            None => continue,
                            Some(s) if is_dir(&s) => layers.push(*lower),
                            Some(_) => break,
                        }
                    }
                    more.push(Job {
                        rel,
                        layers,
                        only: None,
                    });
                    // Its stamp is taken when its times are set, at the end.
                    return Ok(());
                }
                if let Some(stamp) = self.copy_entry(*layer, fd, &dest, name, &st, &rel, part)? {
                    names.insert(name.to_os_string(), stamp);
                }
                Ok(())
            })?;
        }
        part.names.push((job.rel, names));
        Ok(())
    }

    /// Owner, then xattrs (chown clears capabilities, so it goes first),
    /// from `st` and `src` onto `dst`.
    fn set_owner_xattrs(
        &self,
        src: &OwnedFd,
        dst: &OwnedFd,
        st: &Statx,
        shown: &Path,
    ) -> Result<()> {
        let have = stat_at(dst, shown, OsStr::new(""))?;
        if (have.stx_uid, have.stx_gid) != (st.stx_uid, st.stx_gid) {
            rustix::fs::fchown(
                dst,
                Some(rustix::fs::Uid::from_raw(st.stx_uid)),
                Some(rustix::fs::Gid::from_raw(st.stx_gid)),
            )
            .map_err(errno("chown", shown.to_path_buf()))?;
        }
        copy_xattrs(src, dst, shown)
    }

    /// Copies one non-directory; returns its stamp (`None` for what is not
    /// copied: sockets, and device nodes this user may not make).
    #[allow(clippy::too_many_arguments)]
    fn copy_entry(
        &self,
        layer: usize,
        src_dir: &OwnedFd,
        dest: &OwnedFd,
        name: &OsStr,
        st: &Statx,
        rel: &Path,
        part: &mut Part,
    ) -> Result<Option<Stamp>> {
        let shown = self.dest.join(rel);
        let ft = FileType::from_raw_mode(u32::from(st.stx_mode));
        let perm = Mode::from_raw_mode(u32::from(st.stx_mode) & 0o7777);
        if ft == FileType::RegularFile && st.stx_nlink > 1 {
            self.linked_source.store(true, Ordering::Relaxed);
            let key = (st.stx_dev_major, st.stx_dev_minor, st.stx_ino);
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(first) = links.get(&key) {
                rustix::fs::linkat(&self.dest_fd, first, dest, name, AtFlags::empty())
                    .map_err(errno("link", shown.clone()))?;
            } else {
                self.copy_file(src_dir, dest, name, st, &shown)?;
                links.insert(key, rel.to_path_buf());
            }
            // Each link moves the inode's ctime: stamped at the end.
            part.linked.push(rel.to_path_buf());
            return Ok(None);
        }
        match ft {
            FileType::RegularFile => {
                return self.copy_file(src_dir, dest, name, st, &shown).map(Some);
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_dir, name, Vec::new())
                    .map_err(errno("read link", self.layers[layer].join(rel)))?;
                rustix::fs::symlinkat(target.as_c_str(), dest, name)
                    .map_err(errno("create", shown.clone()))?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let dev = rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor);
                match rustix::fs::mknodat(dest, name, ft, perm, dev) {
                    Ok(()) => {}
                    // The layer was unpacked by someone allowed to; we are not.
                    Err(Errno::PERM) if ft != FileType::Fifo => return Ok(None),
                    Err(e) => return Err(errno("create", shown)(e)),
                }
                rustix::fs::chmodat(dest, name, perm, AtFlags::empty())
                    .map_err(errno("chmod", shown.clone()))?;
            }
            _ => return Ok(None), // sockets are not content
        }
        rustix::fs::chownat(
            dest,
            name,
            Some(rustix::fs::Uid::from_raw(st.stx_uid)),
            Some(rustix::fs::Gid::from_raw(st.stx_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno("chown", shown.clone()))?;
        rustix::fs::utimensat(dest, name, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno("set times of", shown.clone()))?;
        let parent = shown.parent().unwrap_or(self.dest);
        Ok(Some(Stamp::of(&stat_at(dest, parent, name)?)))
    }

    fn copy_file(
        &self,
        src_dir: &OwnedFd,
        dest: &OwnedFd,
        name: &OsStr,
        st: &Statx,
        shown: &Path,
    ) -> Result<Stamp> {
        let src = rustix::fs::openat(
            src_dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("open", shown.to_path_buf()))?;
        let dst = rustix::fs::openat(
            dest,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno("create", shown.to_path_buf()))?;
        if st.stx_size > 0 {
            copy_data(&src, &dst, st.stx_size).map_err(|cause| Error::Io {
                op: "copy",
                path: shown.to_path_buf(),
                cause,
            })?;
        }
        self.set_owner_xattrs(&src, &dst, st, shown)?;
        // After chown, which clears setuid and setgid.
        rustix::fs::fchmod(&dst, Mode::from_raw_mode(u32::from(st.stx_mode) & 0o7777))
            .map_err(errno("chmod", shown.to_path_buf()))?;
        rustix::fs::futimens(&dst, &times_of(st))
            .map_err(errno("set times of", shown.to_path_buf()))?;
        Ok(Stamp::of(&stat_at(&dst, shown, OsStr::new(""))?))
    }
}

/// The bytes of `src` into the empty `dst`: a reflink where the filesystem
/// shares extents, else an in-kernel copy, else read and write.
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64) -> std::io::Result<()> {
    if !NO_REFLINK.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => return Ok(()),
            // Not this filesystem (or not across these two): stop asking.
            Err(_) => NO_REFLINK.store(true, Ordering::Relaxed),
        }
    }
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(src, None, dst, None, want) {
            Ok(0) => break, // shrank meanwhile; what is there is copied
            Ok(n) => left -= n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if left == size => {
                let mut from = std::fs::File::from(src.try_clone()?);
                let mut to = std::fs::File::from(dst.try_clone()?);
                std::io::copy(&mut from, &mut to)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The xattrs of `src` onto `dst`, except overlayfs' own. Names the
/// destination refuses (e.g. `trusted.*` in a user namespace) are skipped,
/// as unpacking skips them.
fn copy_xattrs(src: &OwnedFd, dst: &OwnedFd, shown: &Path) -> Result<()> {
    for (name, value) in xattrs(src, shown)? {
        let name = OsStr::from_bytes(&name);
        match rustix::fs::fsetxattr(dst, name, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(Errno::PERM | Errno::NOTSUP) => {}
            Err(e) => return Err(errno("set xattr", shown.to_path_buf())(e)),
        }
    }
    Ok(())
}

/// The NUL-separated xattr names of `fd` (empty where unsupported).
fn list_xattrs(fd: &OwnedFd, shown: &Path) -> Result<Vec<u8>> {
    let mut small = [0u8; 256];
    match rustix::fs::flistxattr(fd, &mut small[..]) {
        Ok(n) => Ok(small[..n].to_vec()),
        Err(Errno::RANGE) => {
            let len = rustix::fs::flistxattr_query(fd)
                .map_err(errno("list xattrs", shown.to_path_buf()))?;
            let mut buf = vec![0u8; len];
            let n = rustix::fs::flistxattr(fd, &mut buf[..])
                .map_err(errno("list xattrs", shown.to_path_buf()))?;
            buf.truncate(n);
            Ok(buf)
        }
        Err(Errno::NOTSUP) => Ok(Vec::new()),
        Err(e) => Err(errno("list xattrs", shown.to_path_buf())(e)),
    }
}

use std::os::unix::ffi::OsStrExt;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::diff::diff_copy;

    fn whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
    }

    /// Whether this process may make whiteouts (device nodes need root).
    /// Under `CI=true` it must: CI runs as root, and a skip there would be
    /// a pass that tested nothing.
    fn can_make_whiteouts() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "whiteouts are device nodes, which need root: run the tests as root"
        );
        eprintln!("skipped: whiteouts are device nodes, which need root");
        false
    }

    /// Marks a layer directory opaque, as unpacking a `.wh..wh..opq` does.
    fn opaque(p: &Path) {
        rustix::fs::setxattr(
            p,
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    /// Two layer directories in overlay form: the copy shows what overlay
    /// would, its index covers every path, and the diff sees one change.
    #[test]
    fn merged_copy_follows_overlay_rules() {
        if !can_make_whiteouts() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, dest) = (t.path().join("l"), t.path().join("u"), t.path().join("c"));
        for d in ["a", "b", "d", "e"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::write(lower.join("a/f1"), "old").unwrap();
        fs::write(lower.join("a/f2"), "gone").unwrap();
        fs::write(lower.join("b/x"), "hidden").unwrap();
        fs::write(lower.join("d/old"), "under a file").unwrap();
        fs::write(lower.join("e/kept"), "kept").unwrap();
        fs::write(lower.join("h1"), "linked").unwrap();
        fs::hard_link(lower.join("h1"), lower.join("h2")).unwrap();
        for d in ["a", "b"] {
            fs::create_dir_all(upper.join(d)).unwrap();
        }
        fs::write(upper.join("a/f1"), "new").unwrap();
        whiteout(&upper.join("a/f2"));
        opaque(&upper.join("b"));
        fs::write(upper.join("b/y"), "mine").unwrap();
        fs::write(upper.join("d"), "a file now").unwrap();
        fs::create_dir(&dest).unwrap();

        let index = copy_layers(&[upper.clone(), lower.clone()], &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a/f1")).unwrap(), "new");
        assert!(!dest.join("a/f2").exists());
        assert!(!dest.join("b/x").exists(), "opaque dir shows a lower file");
        assert_eq!(fs::read_to_string(dest.join("b/y")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(dest.join("d")).unwrap(), "a file now");
        assert_eq!(fs::read_to_string(dest.join("e/kept")).unwrap(), "kept");
        let (h1, h2) = (
            fs::metadata(dest.join("h1")).unwrap(),
            fs::metadata(dest.join("h2")).unwrap(),
        );
        assert_eq!(h1.ino(), h2.ino(), "hard links were split");
        let mut buf = [0u8; 4];
        assert!(
            rustix::fs::lgetxattr(dest.join("b"), "user.overlay.opaque", &mut buf).is_err(),
            "an overlay xattr was copied"
        );
        // Every path is indexed, with the stamps the tree has now.
        let walked = StatIndex::build(&dest).unwrap();
        assert_eq!(index.len(), walked.len());
        for (dir, names) in &walked.dirs {
            for (name, stamp) in names {
                assert_eq!(
                    index.get(&dir.join(name)),
                    Some(stamp),
                    "{}",
                    dir.join(name).display()
                );
            }
        }
        assert!(
            diff_copy(&dest, &index, &[]).unwrap().is_empty(),
            "a fresh copy has changes"
        );

        fs::write(dest.join("e/kept"), "changed").unwrap();
        fs::remove_file(dest.join("a/f1")).unwrap();
        let mut got: Vec<String> = diff_copy(&dest, &index, &[])
            .unwrap()
            .iter()
            .map(|e| {
                let gone = matches!(e.kind, kiln_image::layer::EntryKind::Whiteout);
                format!(
                    "{}{}",
                    e.path.display(),
                    if gone { " (deleted)" } else { "" }
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, ["a", "a/f1 (deleted)", "e", "e/kept"]);
    }

    /// Everything a fresh copy determines about a tree, by path: type,
    /// mode, owner, size, mtime, link target or content, xattrs.
    fn describe(root: &Path) -> Vec<String> {
        fn go(root: &Path, rel: &Path, out: &mut Vec<String>) {
            let p = root.join(rel);
            let md = fs::symlink_metadata(&p).unwrap();
            let what = if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if md.is_file() {
                fs::read_to_string(&p).unwrap()
            } else {
                String::new()
            };
            let xattrs: Vec<String> = xattr_names(&p);
            out.push(format!(
                "{} {:o} {}:{} {} {} {what} {xattrs:?}",
                rel.display(),
                md.mode(),
                md.uid(),
                md.gid(),
                if md.is_dir() { 0 } else { md.size() },
                md.mtime(),
            ));
            if md.is_dir() {
                let mut names: Vec<_> = fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for n in names {
                    go(root, &rel.join(n), out);
                }
            }
        }
        fn xattr_names(p: &Path) -> Vec<String> {
            let mut buf = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or(0);
            buf[..n]
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        }
        let mut out = Vec::new();
        go(root, Path::new(""), &mut out);
        out
    }

    /// A run's changes of every kind, undone: the tree equals a fresh copy
    /// of its layers again, and its index equals a walk of it, so the next
    /// run's diff starts from the truth.
    #[test]
    fn restore_undoes_a_run_to_what_a_fresh_copy_gives() {
        if !can_make_whiteouts() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, dest, fresh) = (
            t.path().join("l"),
            t.path().join("u"),
            t.path().join("c"),
            t.path().join("f"),
        );
        for d in ["a/deep/er", "b", "e", "k"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::write(lower.join("a/f1"), "old").unwrap();
        fs::write(lower.join("a/deep/er/x"), "deep").unwrap();
        fs::write(lower.join("b/x"), "hidden").unwrap();
        fs::write(lower.join("e/kept"), "kept").unwrap();
        fs::write(lower.join("k/same"), "same").unwrap();
        std::os::unix::fs::symlink("a/f1", lower.join("ln")).unwrap();
        fs::create_dir_all(upper.join("b")).unwrap();
        opaque(&upper.join("b"));
        fs::write(upper.join("b/y"), "mine").unwrap();
        fs::create_dir_all(upper.join("a")).unwrap();
        whiteout(&upper.join("a/gone"));
        fs::write(upper.join("a/f1"), "new").unwrap();
        let layers = [upper.clone(), lower.clone()];
        for d in [&dest, &fresh] {
            fs::create_dir(d).unwrap();
        }
        let mut index = copy_layers(&layers, &dest).unwrap();
        copy_layers(&layers, &fresh).unwrap();
        let want = describe(&fresh);
        assert_eq!(describe(&dest), want);

        // The run.
        fs::write(dest.join("a/f1"), "changed").unwrap();
        fs::remove_file(dest.join("e/kept")).unwrap();
        fs::create_dir_all(dest.join("n/m")).unwrap();
        fs::write(dest.join("n/m/new"), "new").unwrap();
        fs::remove_dir_all(dest.join("b")).unwrap();
        fs::create_dir(dest.join("b")).unwrap();
        fs::write(dest.join("b/z"), "other").unwrap();
        fs::remove_dir_all(dest.join("a/deep")).unwrap();
        fs::write(dest.join("a/deep"), "a file where a directory was").unwrap();
        fs::set_permissions(dest.join("e"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dest.join("k/tmp"), "made and removed").unwrap();
        fs::remove_file(dest.join("k/tmp")).unwrap();
        rustix::fs::setxattr(
            dest.join("k"),
            "user.run",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::remove_file(dest.join("ln")).unwrap();
        std::os::unix::fs::symlink("/", dest.join("ln")).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(describe(&dest), want);

        let found = crate::diff::walk_changes(&dest, &index).unwrap();
        assert!(
            restore(&layers, &dest, &mut index, &found).unwrap(),
            "inexact"
        );
        assert_eq!(describe(&dest), want);
        let walked = StatIndex::build(&dest).unwrap();
        assert_eq!(walked.dirs, index.dirs, "the index is not the tree's");
        assert!(diff_copy(&dest, &index, &[]).unwrap().is_empty());
    }

    /// A file with other hard links cannot be put back linked: the tree
    /// is then not reusable, and restore says so.
    #[test]
    fn restore_refuses_what_it_cannot_link_again() {
        let t = tempfile::tempdir().unwrap();
        let (lower, dest) = (t.path().join("l"), t.path().join("c"));
        fs::create_dir_all(&lower).unwrap();
        fs::write(lower.join("h1"), "linked").unwrap();
        fs::hard_link(lower.join("h1"), lower.join("h2")).unwrap();
        fs::create_dir(&dest).unwrap();
        let layers = [lower.clone()];
        let mut index = copy_layers(&layers, &dest).unwrap();
        fs::write(dest.join("h1"), "written through one name").unwrap();
        let found = crate::diff::walk_changes(&dest, &index).unwrap();
        assert!(!restore(&layers, &dest, &mut index, &found).unwrap());
    }

    /// A copy of the lower layers, with the upper ones put onto it, equals
    /// a fresh copy of them all (whiteouts, opaque and new directories, a
    /// file where a directory was, a directory whose mode a layer sets).
    #[test]
    fn a_copy_switched_to_other_layers_equals_a_fresh_copy_of_them() {
        if !can_make_whiteouts() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, top, dest, fresh) = (
            t.path().join("l"),
            t.path().join("u"),
            t.path().join("t"),
            t.path().join("c"),
            t.path().join("f"),
        );
        for d in ["a/deep", "b/in", "e", "m"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        for f in ["a/f1", "a/gone", "a/deep/x", "b/in/x", "e/kept", "m/x"] {
            fs::write(lower.join(f), f).unwrap();
        }
        for d in ["a", "b", "n/o", "m"] {
            fs::create_dir_all(upper.join(d)).unwrap();
        }
        fs::set_permissions(upper.join("m"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(upper.join("a/f1"), "new").unwrap();
        whiteout(&upper.join("a/gone"));
        fs::write(upper.join("a/deep"), "a file now").unwrap();
        opaque(&upper.join("b"));
        fs::write(upper.join("b/y"), "mine").unwrap();
        fs::write(upper.join("n/o/p"), "new dir").unwrap();
        fs::create_dir_all(top.join("e")).unwrap();
        fs::write(top.join("e/top"), "top").unwrap();
        whiteout(&top.join("e/kept"));
        for d in [&dest, &fresh] {
            fs::create_dir(d).unwrap();
        }
        let all = [top.clone(), upper.clone(), lower.clone()];
        copy_layers(&all, &fresh).unwrap();
        let mut index = copy_layers(&all[2..], &dest).unwrap();
        assert_ne!(describe(&dest), describe(&fresh));
        assert!(
            switch_layers(&all, &all[..2], &dest, &mut index).unwrap(),
            "inexact"
        );
        assert_eq!(describe(&dest), describe(&fresh));
        let walked = StatIndex::build(&dest).unwrap();
        assert_eq!(walked.dirs, index.dirs, "the index is not the tree's");
        // And back down: the upper layers taken off again.
        let lower_only = fs::create_dir(t.path().join("lo"))
            .map(|()| t.path().join("lo"))
            .unwrap();
        copy_layers(&all[2..], &lower_only).unwrap();
        assert!(switch_layers(&all[2..], &all[..2], &dest, &mut index).unwrap());
        assert_eq!(describe(&dest), describe(&lower_only));
        // And sideways: one upper layer swapped for another.
        let swapped = [top.clone(), lower.clone()];
        let side = fs::create_dir(t.path().join("sd"))
            .map(|()| t.path().join("sd"))
            .unwrap();
        copy_layers(&swapped, &side).unwrap();
        copy_layers(&all[1..], &{
            let d = t.path().join("mid");
            fs::create_dir(&d).unwrap();
            d
        })
        .unwrap();
        let mut index = StatIndex::build(&t.path().join("mid")).unwrap();
        assert!(
            switch_layers(
                &swapped,
                &[top.clone(), upper.clone()],
                &t.path().join("mid"),
                &mut index
            )
            .unwrap()
        );
        assert_eq!(describe(&t.path().join("mid")), describe(&side));
    }
}
