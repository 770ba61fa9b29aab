//! A RUN's layer directory made from the files the RUN itself wrote, by
//! hard links, instead of unpacking the tar just written from them.
//!
//! A step's layer is the first lower of the next step; unpacking it again
//! rewrote every byte (for an `apt-get install` of Python, 150 MB and half
//! a second on the critical path). The container's files are private to
//! the build and removed right after, so linking them is safe: nothing
//! else can change them. Context files never come here; they may change.
//!
//! The directory equals what unpacking the layer's tar gives: whiteouts in
//! overlay form, owners, modes, xattrs (without overlayfs' own) and times
//! in whole seconds, as the tar has them. Anything it cannot reproduce
//! exactly (an entry whose parent is not in the layer, a hard link to a
//! lower layer, a file that changed, a reader source, a refused `mknod`)
//! makes [`Snapshots::stage_private`] give up; the layer is then unpacked
//! from its tar when first needed, as any other.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::Digest;
use kiln_image::layer::{Entry, EntryKind, FileSource};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::layers::Snapshots;
use crate::remove::remove_tree;
use crate::{Error, Result, io_err};

/// A layer directory made but not yet named by its diff ID. Dropped
/// without [`StagedLayer::commit`], it is removed.
pub struct StagedLayer {
    tmp: Option<PathBuf>,
    layers: PathBuf,
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = remove_tree(&tmp);
        }
    }
}

impl StagedLayer {
    /// Names the directory `layers/<diff-id>`. If the layer is already
    /// there (another build made it), this copy is dropped.
    pub fn commit(mut self, diff_id: &Digest) -> Result<PathBuf> {
        let tmp = self.tmp.take().expect("committed once");
        let dest = self.layers.join(diff_id.hex());
        if fs::rename(&tmp, &dest).is_err() {
            let _ = remove_tree(&tmp);
            if !dest.is_dir() {
                return Err(io_err("rename", &dest)(std::io::Error::other(
                    "layer directory vanished",
                )));
            }
        }
        Ok(dest)
    }
}

/// Why staging stopped: the caller falls back to unpacking.
fn give_up(why: impl Into<String>, path: &Path) -> Error {
    io_err("stage", path)(std::io::Error::other(why.into()))
}

impl Snapshots {
    /// Makes the layer directory of `entries`, whose host files are
    /// private to this build (a container's upper dir or copied rootfs,
    /// removed after the step) and described by the entries exactly.
    pub fn stage_private(&self, entries: &[Entry]) -> Result<StagedLayer> {
        let layers = self.layers_dir();
        let tmp = layers.join(crate::layers::unique(".stage-"));
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let staged = StagedLayer {
            tmp: Some(tmp.clone()),
            layers,
        };
        let mut order: Vec<&Entry> = entries.iter().collect();
        // Component order: a directory before what is in it.
        order.sort_by(|a, b| clean(&a.path).cmp(clean(&b.path)));
        let mut dirs: HashSet<&Path> = HashSet::new();
        let mut made_dirs: Vec<(&Entry, PathBuf)> = Vec::new();
        let mut links = Vec::new();
        for e in &order {
            let rel = clean(&e.path);
            if rel.components().count() == 0 {
                continue; // the layer root: the directory itself
            }
            let parent = rel.parent().unwrap_or(Path::new(""));
            // Every parent must be a directory made here, so that no path
            // below `tmp` resolves through a symlink.
            if !parent.as_os_str().is_empty() && !dirs.contains(parent) {
                return Err(give_up("parent not in the layer", rel));
            }
            let dest = tmp.join(rel);
            match &e.kind {
                EntryKind::Dir => {
                    mkdir(&dest)?;
                    dirs.insert(rel);
                    made_dirs.push((e, dest));
                }
                EntryKind::File { source, size } => match source {
                    FileSource::Host(src) => link_private(src, &dest, e, *size)?,
                    FileSource::Bytes(b) => {
                        fs::write(&dest, b).map_err(io_err("write", &dest))?;
                        set_meta(&dest, e, true)?;
                    }
                    FileSource::Reader(_) => return Err(give_up("reader source", rel)),
                },
                EntryKind::Symlink { target } => {
                    rustix::fs::symlink(target.as_path(), &dest).map_err(sys("symlink", &dest))?;
                    set_meta(&dest, e, false)?;
                }
                EntryKind::Hardlink { target } => links.push((clean(target), dest)),
                EntryKind::CharDevice { major, minor } => {
                    node(&dest, FileType::CharacterDevice, *major, *minor, e)?
                }
                EntryKind::BlockDevice { major, minor } => {
                    node(&dest, FileType::BlockDevice, *major, *minor, e)?
                }
                EntryKind::Fifo => node(&dest, FileType::Fifo, 0, 0, e)?,
                EntryKind::Whiteout => {
                    rustix::fs::mknodat(CWD, &dest, FileType::CharacterDevice, Mode::empty(), 0)
                        .map_err(sys("mknod", &dest))?;
                }
                EntryKind::OpaqueWhiteout => {} // set on the directory below
            }
        }
        for (target, dest) in links {
            let tparent = target.parent().unwrap_or(Path::new(""));
            if !tparent.as_os_str().is_empty() && !dirs.contains(tparent) {
                return Err(give_up("hard link target not in the layer", target));
            }
            let src = tmp.join(target);
            match fs::symlink_metadata(&src) {
                Ok(m) if m.is_file() => {}
                _ => return Err(give_up("hard link target not in the layer", target)),
            }
            fs::hard_link(&src, &dest).map_err(io_err("link", &dest))?;
        }
        let opaque: HashSet<&Path> = order
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::OpaqueWhiteout))
            .map(|e| clean(&e.path))
            .collect();
        // Directory metadata last, deepest first: making an entry inside a
        // directory changes its mtime, and a mode without `w` would stop
        // the entries after it.
        for (e, dest) in made_dirs.iter().rev() {
            if opaque.contains(clean(&e.path)) {
                kiln_image::layer::overlay::mark_opaque(dest).map_err(sys("setxattr", dest))?;
            }
            set_meta(dest, e, true)?;
        }
        Ok(staged)
    }
}

fn clean(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> Error + use<> {
    let f = io_err(op, path);
    move |e| f(e.into())
}

fn mkdir(dest: &Path) -> Result<()> {
    rustix::fs::mkdir(dest, Mode::from_raw_mode(0o700)).map_err(sys("mkdir", dest))
}

/// Links a private host file into the layer after checking that it is
/// still what the entry says, and makes its metadata what unpacking the
/// tar would: overlayfs' xattrs gone, times in whole seconds.
fn link_private(src: &Path, dest: &Path, e: &Entry, size: u64) -> Result<()> {
    let m = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
    if !m.is_file()
        || m.len() != size
        || m.mode() & 0o7777 != e.mode & 0o7777
        || u64::from(m.uid()) != e.uid
        || u64::from(m.gid()) != e.gid
        || m.mtime() != e.mtime
    {
        return Err(give_up("the file is not what its entry says", src));
    }
    fs::hard_link(src, dest).map_err(io_err("link", dest))?;
    strip_overlay_xattrs(dest)?;
    set_times(dest, e.mtime, true)
}

fn node(dest: &Path, kind: FileType, major: u32, minor: u32, e: &Entry) -> Result<()> {
    rustix::fs::mknodat(
        CWD,
        dest,
        kind,
        Mode::from_raw_mode(e.mode & 0o7777),
        rustix::fs::makedev(major, minor),
    )
    .map_err(sys("mknod", dest))?;
    set_meta(dest, e, true)
}

/// Owner, mode (not for symlinks), xattrs and times of a node made here.
fn set_meta(dest: &Path, e: &Entry, follow: bool) -> Result<()> {
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    let uid = u32::try_from(e.uid).map_err(|_| give_up("uid out of range", dest))?;
    let gid = u32::try_from(e.gid).map_err(|_| give_up("gid out of range", dest))?;
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    rustix::fs::chownat(CWD, dest, Some(uid), Some(gid), flags).map_err(sys("chown", dest))?;
    if follow {
        // After chown, which clears setuid and setgid.
        rustix::fs::chmod(dest, Mode::from_raw_mode(e.mode & 0o7777))
            .map_err(sys("chmod", dest))?;
    }
    for (k, v) in &e.xattrs {
        if !is_overlay_xattr(k.as_bytes()) {
            let r = if follow {
                rustix::fs::setxattr(dest, k.as_str(), v, XattrFlags::empty())
            } else {
                rustix::fs::lsetxattr(dest, k.as_str(), v, XattrFlags::empty())
            };
            r.map_err(sys("setxattr", dest))?;
        }
    }
    set_times(dest, e.mtime, follow)
}

fn set_times(dest: &Path, mtime: i64, follow: bool) -> Result<()> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::utimensat(
        CWD,
        dest,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        flags,
    )
    .map_err(sys("utimensat", dest))
}

fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
}

fn strip_overlay_xattrs(path: &Path) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => return Err(give_up("too many xattrs", path)),
        Err(e) => return Err(sys("listxattr", path)(e)),
    };
    for name in buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // A metacopy upper file holds metadata only; its data is below.
        if is_overlay_xattr(name) && name.ends_with(b".metacopy") {
            return Err(give_up("a metacopy file has no data of its own", path));
        }
        if is_overlay_xattr(name) {
            let name = std::ffi::OsStr::from_bytes(name);
            rustix::fs::lremovexattr(path, name).map_err(sys("removexattr", path))?;
        }
    }
    Ok(())
}
