//! Path confinement for extraction: cleaning tar member names, and opening
//! directories inside the target with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` so that no symlink or `..` can lead outside it.
//!
//! Rules:
//! - Names are rooted: a leading `/` is dropped, empty and `.` components
//!   are dropped, `..` removes the previous component (as `filepath.Clean`
//!   does for Docker), and a `..` that would climb above the root is an
//!   error — not silently clamped, so a hostile entry is reported by name.
//!   NUL bytes are an error.
//! - Parent directories are resolved by the kernel as if the target were
//!   `/`: symlinks among the parents are followed, but absolute targets and
//!   `..` stay inside the target (like a chroot). This keeps layers that
//!   write through a lower layer's `lib -> usr/lib` working.
//! - The final component is never resolved by a path lookup: the caller
//!   operates on it with `*at` syscalls relative to the parent fd and
//!   without following symlinks.
//!
//! Requires Linux ≥ 5.6 (openat2).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Cleans a tar member name into a relative path (components joined by
/// `/`; empty for the root itself). `Err` carries the reason.
pub fn clean_entry_name(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte");
    }
    match crate::clean_path::resolve(raw.split(|&b| b == b'/')) {
        (0, parts) => Ok(parts.join(&b'/')),
        _ => Err("name climbs above the root with .."),
    }
}

/// Splits a clean path into (parent, final component).
pub(crate) fn split_parent(clean: &[u8]) -> (&[u8], &[u8]) {
    match clean.iter().rposition(|&b| b == b'/') {
        Some(i) => (&clean[..i], &clean[i + 1..]),
        None => (&b""[..], clean),
    }
}

/// The extraction target, held open.
pub(crate) struct Root {
    fd: OwnedFd,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// Opens the directory `rel` inside the root. With `follow_last` false
    /// a symlink as the last component fails (ELOOP) instead of being
    /// followed.
    pub(crate) fn open_dir(&self, rel: &[u8], follow_last: bool) -> io::Result<OwnedFd> {
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !follow_last {
            flags |= OFlags::NOFOLLOW;
        }
        Ok(crate::in_root::openat2(
            &self.fd,
            path,
            flags,
            Mode::empty(),
            RESOLVE,
        )?)
    }

    /// Opens the directory `rel`, creating missing components (mode 0755,
    /// owned by the extracting user, as Docker does for implied parents).
    /// Returns the fd and the created paths.
    pub(crate) fn ensure_dir(&self, rel: &[u8]) -> io::Result<(OwnedFd, Vec<Vec<u8>>)> {
        match self.open_dir(rel, true) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            r => return r.map(|fd| (fd, Vec::new())),
        }
        let mut created = Vec::new();
        let mut cur = self.open_dir(b"", true)?;
        let mut prefix: Vec<u8> = Vec::new();
        for comp in rel.split(|&b| b == b'/') {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
            cur = match self.open_dir(&prefix, true) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) => created.push(prefix.clone()),
                        // A dangling symlink: the open below reports it.
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.open_dir(&prefix, true)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok((cur, created))
    }
}

/// What is at `name` in `dir`, without following a symlink; `None` if
/// nothing.
pub(crate) fn lstat_at(dir: impl AsFd, name: &[u8]) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn is_dir(st: &rustix::fs::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dir` and, if it is a directory, everything below it.
/// Never follows symlinks: subdirectories are opened with O_NOFOLLOW
/// relative to their parent's fd.
pub(crate) fn remove_all_at(dir: impl AsFd, name: &[u8]) -> io::Result<()> {
    let dir = dir.as_fd();
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(&sub)? {
        remove_all_at(&sub, &child)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The names in a directory, without `.` and `..`, collected first so the
/// caller can change the directory while going through them.
pub(crate) fn list_dir(dir: impl AsFd) -> io::Result<Vec<Vec<u8>>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let ok = |s: &str| String::from_utf8(clean_entry_name(s.as_bytes()).unwrap()).unwrap();
        assert_eq!(ok("/a/./b//c/"), "a/b/c");
        assert_eq!(ok("a/../b"), "b");
        assert_eq!(ok("./"), "");
        assert_eq!(ok("a/.wh.../../x"), "a/x");
        for bad in ["../x", "/../x", "a/../../b", "a/..\0/b"] {
            assert!(clean_entry_name(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
