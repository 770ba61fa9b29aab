//! Path resolution inside a root that may be hostile: every lookup is
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to an fd of
//! the root, so `..` and absolute symlinks stay inside it and
//! `/proc/self/fd/N`-style magic links are refused. Missing directories are
//! created with `mkdirat` relative to an fd resolved the same way; a dangling
//! symlink is followed by hand, still inside the root (as Docker's securejoin
//! does). It never resolves a path against the host's root.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, at};

/// What a mount target must be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Lexically clean a container path: drop `.`, `..` never climbs above `/`.
/// (openat2 IN_ROOT would also contain `..`; cleaning makes the components
/// usable as names for `mkdirat`.)
pub(crate) fn clean(path: &Path) -> Vec<String> {
    let bytes = path.as_os_str().as_bytes();
    let (_, kept) = kiln_image::clean_path::resolve(bytes.split(|&b| b == b'/'));
    kept.iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn in_root_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `openat2(root, path, O_PATH, RESOLVE_IN_ROOT)`: follows symlinks, but
/// only ever inside `root`.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, path: &str) -> rustix::io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    kiln_image::in_root::openat2(
        root,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        in_root_flags(),
    )
}

/// Resolve `path` inside `root`, creating missing directories (0755) and, for
/// `Kind::File`, an empty final file (0644). Returns an `O_PATH` fd of the
/// target, suitable as a `move_mount` destination.
pub(crate) fn ensure_in_root(root: BorrowedFd<'_>, path: &Path, kind: Kind) -> Result<OwnedFd> {
    let mut comps = clean(path);
    if comps.is_empty() {
        if kind == Kind::File {
            return Err(Error::InvalidSpec(format!(
                "{} is the root, not a file",
                path.display()
            )));
        }
        return open_in_root(root, ".").map_err(at("openat2", path));
    }
    let mut hops = 0;
    let mut i = 0;
    while i < comps.len() {
        let prefix = comps[..=i].join("/");
        let last = i + 1 == comps.len();
        match open_in_root(root, &prefix) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => {
                i += 1;
                continue;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::path("openat2 (in root)", &prefix, e)),
        }
        let parent_path = comps[..i].join("/");
        let parent =
            open_in_root(root, &parent_path).map_err(at("openat2 (in root)", &parent_path))?;
        let name = comps[i].clone();
        // A dangling symlink: follow it by hand (still inside the root) and
        // create what it points to, as Docker's securejoin does.
        if let Ok(target) = rfs::readlinkat(&parent, name.as_str(), Vec::new()) {
            hops += 1;
            if hops > 40 {
                return Err(Error::path("resolve (in root)", path, Errno::LOOP));
            }
            let target = PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes()));
            let mut next = PathBuf::from("/");
            if !target.is_absolute() {
                next.push(&parent_path);
            }
            next.push(target);
            for c in &comps[i + 1..] {
                next.push(c);
            }
            comps = clean(&next);
            if comps.is_empty() {
                return open_in_root(root, ".").map_err(at("openat2", path));
            }
            i = 0;
            continue;
        }
        if last && kind == Kind::File {
            // O_EXCL|O_NOFOLLOW: never follows anything at the final name.
            rfs::openat(
                &parent,
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(at("create mount point", &prefix))?;
        } else {
            match rfs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::path("mkdirat (in root)", &prefix, e)),
            }
        }
        if last {
            return open_in_root(root, &prefix).map_err(at("openat2 (in root)", &prefix));
        }
        i += 1;
    }
    // Not reached: the last component always returns above.
    Err(Error::path("resolve (in root)", path, Errno::NOENT))
}
