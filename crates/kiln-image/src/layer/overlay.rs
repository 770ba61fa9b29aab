//! The overlayfs form of a layer on disk, the one owner of its facts: a
//! deleted path is a whiteout (a character device 0/0), a directory that
//! hides everything below it carries the `opaque` xattr (`user.` as kiln
//! mounts overlays, with `userxattr`; `trusted.` as real root's overlays
//! and other tools write it). The extractor writes this form, the
//! snapshotter reads it back (lookups, diffs, copies).

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The opaque xattr kiln writes (overlays mounted with `userxattr`).
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The one real root's overlays write.
pub const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Both, as a reader accepts them.
pub const OPAQUE_XATTRS: [&str; 2] = [USER_OPAQUE_XATTR, TRUSTED_OPAQUE_XATTR];

/// Whether `m` (from `lstat`) is an overlay whiteout.
pub fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether the directory at `path` (not followed) is marked opaque.
pub fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

/// [`is_opaque`] of an open directory.
pub fn is_opaque_fd(dir: impl AsFd) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::fgetxattr(&dir, *name, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

/// Marks the directory at `path` opaque, as kiln's overlays read it.
pub fn mark_opaque(path: &Path) -> rustix::io::Result<()> {
    rustix::fs::setxattr(
        path,
        USER_OPAQUE_XATTR,
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
}
