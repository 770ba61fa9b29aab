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

use std::collections::HashMap;
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
    let ctx = Ctx {
        layers,
        layer_fds: layers.iter().map(|l| open_root(l)).collect::<Result<_>>()?,
        dest,
        dest_fd: open_root(dest)?,
        links: Mutex::new(HashMap::new()),
    };
    let root = Job {
        rel: PathBuf::new(),
        layers: (0..layers.len()).collect(),
    };
    let parts = crate::pool::run(
        vec![root],
        crate::pool::threads(),
        |job, part: &mut Part, more| ctx.fill_dir(job, part, more),
    )?;
    let mut index = StatIndex::default();
    let mut finish = Vec::new();
    for part in parts {
        index.dirs.extend(part.names);
        finish.extend(part.dir_times);
        for rel in part.linked {
            let st = stat_at(&ctx.dest_fd, dest, rel.as_os_str())?;
            index.insert(&rel, Stamp::of(&st));
        }
    }
    for (rel, times, mode) in finish {
        let dir = open_dir_beneath(&ctx.dest_fd, dest, &rel)?
            .ok_or_else(|| errno("open", dest.join(&rel))(Errno::NOENT))?;
        rustix::fs::fchmod(&dir, mode).map_err(errno("chmod", dest.join(&rel)))?;
        rustix::fs::futimens(&dir, &times).map_err(errno("set times of", dest.join(&rel)))?;
        if !rel.as_os_str().is_empty() {
            let st = stat_at(&dir, dest, OsStr::new(""))?;
            index.insert(&rel, Stamp::of(&st));
        }
    }
    Ok(index)
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
                    more.push(Job { rel, layers });
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
    let mut small = [0u8; 256];
    let names: Vec<u8> = match rustix::fs::flistxattr(src, &mut small[..]) {
        Ok(0) => return Ok(()),
        Ok(n) => small[..n].to_vec(),
        Err(Errno::RANGE) => {
            let len = rustix::fs::flistxattr_query(src)
                .map_err(errno("list xattrs", shown.to_path_buf()))?;
            let mut buf = vec![0u8; len];
            let n = rustix::fs::flistxattr(src, &mut buf[..])
                .map_err(errno("list xattrs", shown.to_path_buf()))?;
            buf.truncate(n);
            buf
        }
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(errno("list xattrs", shown.to_path_buf())(e)),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let len = match rustix::fs::fgetxattr_query(src, name) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(errno("read xattr", shown.to_path_buf())(e)),
        };
        let mut value = vec![0u8; len];
        let n = rustix::fs::fgetxattr(src, name, &mut value[..])
            .map_err(errno("read xattr", shown.to_path_buf()))?;
        match rustix::fs::fsetxattr(dst, name, &value[..n], rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(Errno::PERM | Errno::NOTSUP) => {}
            Err(e) => return Err(errno("set xattr", shown.to_path_buf())(e)),
        }
    }
    Ok(())
}

use std::os::unix::ffi::OsStrExt;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

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

    /// Two layer directories in overlay form: the copy shows what overlay
    /// would, its index covers every path, and the diff sees one change.
    #[test]
    fn merged_copy_follows_overlay_rules() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: whiteouts are device nodes, which need root");
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
        rustix::fs::setxattr(
            upper.join("b"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
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
}
