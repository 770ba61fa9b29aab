//! uid 0 emulation of traced isolation, as fakeroot does it: each traced
//! thread has emulated credentials (the RUN's user at start, inherited on
//! fork) that `get*id` report and `set*id`/`setgroups` change, always
//! successfully; `chown` and friends do not change the file but record the
//! owner, and `stat` results show the recorded owner.
//!
//! The record is the extended attribute [`OWNER_XATTR`] (`uid:gid`) on the
//! file itself, so that it follows the file through renames and hard links,
//! outlives the step in the rootfs, and reaches the layer: the copy
//! snapshotter's differ (kiln-snapshot `diff_copy`) takes a file's owner
//! from it, and files without it that the unprivileged kiln owns are
//! root's there (kiln's own IDs stand for 0, as in a user namespace).
//! Symlinks cannot carry `user.` xattrs: their recorded owner lives in
//! memory for the step only (said once). Files owned by another ID than
//! ours show as they are.
//!
//! Not emulated: permission checks (the kernel still checks kiln's real
//! IDs: files of the rootfs are all kiln's, so a step's "root" can do what
//! the owner can, not more: a mode 000 file stays unreadable), setuid
//! execution, capabilities.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use rustix::io::Errno;

pub use kiln_image::layer::OWNER_XATTR;
use kiln_image::layer::parse_owner_xattr as parse_owner;

/// Emulated credentials of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creds {
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
}

impl Creds {
    pub(crate) fn new(uid: u32, gid: u32, groups: Vec<u32>) -> Creds {
        Creds {
            uid: [uid; 4],
            gid: [gid; 4],
            groups,
        }
    }
}

/// Index of real, effective, saved and filesystem IDs in [`Creds`].
pub(crate) const REAL: usize = 0;
pub(crate) const EFFECTIVE: usize = 1;
pub(crate) const SAVED: usize = 2;
pub(crate) const FS: usize = 3;

/// `set*id(2)` on emulated IDs: `-1` (as u32) leaves one unchanged.
pub(crate) fn set_ids(ids: &mut [u32; 4], r: u32, e: u32, s: u32) {
    for (i, v) in [(REAL, r), (EFFECTIVE, e), (SAVED, s)] {
        if v != u32::MAX {
            ids[i] = v;
        }
    }
    ids[FS] = ids[EFFECTIVE];
}

/// The owners recorded and shown during one traced run.
pub(crate) struct Owners {
    /// kiln's real IDs: files owned by them are root's unless recorded.
    pub real: (u32, u32),
    /// Owners of nodes that cannot hold the xattr (symlinks), by (dev, ino).
    in_memory: HashMap<(u64, u64), (u32, u32)>,
    warned: bool,
}

impl Owners {
    pub(crate) fn new(real: (u32, u32)) -> Owners {
        Owners {
            real,
            in_memory: HashMap::new(),
            warned: false,
        }
    }

    /// The owner `stat` shows for the node at `host` (a magic link of
    /// /proc followed when `through`, else not followed), with its real
    /// owner and identity.
    pub(crate) fn shown(
        &self,
        host: Option<&[u8]>,
        through: bool,
        dev: u64,
        ino: u64,
        real: (u32, u32),
    ) -> (u32, u32) {
        if let Some(o) = self.in_memory.get(&(dev, ino)) {
            return *o;
        }
        if let Some(h) = host
            && let Some(o) = read_xattr(h, through)
        {
            return o;
        }
        self.default_of(real)
    }

    fn default_of(&self, real: (u32, u32)) -> (u32, u32) {
        (
            if real.0 == self.real.0 { 0 } else { real.0 },
            if real.1 == self.real.1 { 0 } else { real.1 },
        )
    }

    /// `chown` of the node `host` (followed when `follow`) to `uid:gid`
    /// (`u32::MAX` keeps one).
    pub(crate) fn chown(
        &mut self,
        host: &[u8],
        follow: bool,
        uid: u32,
        gid: u32,
    ) -> Result<(), Errno> {
        let p = OsStr::from_bytes(host);
        let md = if follow {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        }
        .map_err(super::paths::errno)?;
        let now = self.shown(
            Some(host).filter(|_| !md.file_type().is_symlink()),
            follow,
            md.dev(),
            md.ino(),
            (md.uid(), md.gid()),
        );
        let new = (
            if uid == u32::MAX { now.0 } else { uid },
            if gid == u32::MAX { now.1 } else { gid },
        );
        if md.file_type().is_symlink() {
            if !self.warned {
                self.warned = true;
                super::tracer::say(
                    "traced isolation: the owner of a symlink changed by chown is not kept in the layer",
                );
            }
            self.in_memory.insert((md.dev(), md.ino()), new);
            return Ok(());
        }
        let value = format!("{}:{}", new.0, new.1);
        let set = if follow {
            rustix::fs::setxattr(
                p,
                OWNER_XATTR,
                value.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
        } else {
            rustix::fs::lsetxattr(
                p,
                OWNER_XATTR,
                value.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
        };
        if let Err(e) = set {
            // No xattrs here (or not ours): the step still sees it.
            self.in_memory.insert((md.dev(), md.ino()), new);
            if !self.warned {
                self.warned = true;
                super::tracer::say(&format!(
                    "traced isolation: owners set by chown cannot be recorded on this filesystem ({e}); \
                     the layer shows them as root"
                ));
            }
        }
        Ok(())
    }
}

/// The recorded owner of `host` (followed when `follow`), if any.
pub(crate) fn read_xattr(host: &[u8], follow: bool) -> Option<(u32, u32)> {
    let mut buf = [0u8; 32];
    let p = OsStr::from_bytes(host);
    let n = if follow {
        rustix::fs::getxattr(p, OWNER_XATTR, &mut buf)
    } else {
        rustix::fs::lgetxattr(p, OWNER_XATTR, &mut buf)
    }
    .ok()?;
    parse_owner(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ids_keeps_minus_one() {
        let mut ids = [0; 4];
        set_ids(&mut ids, u32::MAX, 42, u32::MAX);
        assert_eq!(ids, [0, 42, 0, 42]);
        set_ids(&mut ids, 7, 7, 7);
        assert_eq!(ids, [7; 4]);
    }

    #[test]
    fn owners_are_recorded_and_shown() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let md = std::fs::metadata(&f).unwrap();
        let real = (md.uid(), md.gid());
        let mut o = Owners::new(real);
        let h = f.as_os_str().as_bytes();
        assert_eq!(o.shown(Some(h), false, md.dev(), md.ino(), real), (0, 0));
        o.chown(h, true, 1, u32::MAX).unwrap();
        assert_eq!(o.shown(Some(h), false, md.dev(), md.ino(), real), (1, 0));
        assert_eq!(o.chown(b"/nonexistent/x", true, 1, 1), Err(Errno::NOENT));
        assert_eq!(parse_owner(b"12:34"), Some((12, 34)));
        assert_eq!(parse_owner(b"12"), None);
        assert_eq!(parse_owner(b"-1:0"), None);
    }
}
