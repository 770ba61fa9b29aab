//! Paths inside a directory tree kiln does not trust: the build context, a
//! stage's filesystem (a mounted view), a named context. A symlink in such
//! a tree is followed inside the tree, never out of it, as BuildKit does:
//! `..` stops at the top and an absolute target is re-rooted (`/etc` in a
//! stage means the stage's `/etc`).
//!
//! Every lookup is `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! against an fd of the tree's top, so the kernel does the resolving and no
//! check can be raced by swapping a component afterwards. What a source
//! names is reduced to its *real* relative path (no symlink in it), read
//! back from the fd; later reads of a real path are made with
//! `RESOLVE_NO_SYMLINKS` (a symlink swapped in since is refused), and
//! directories are listed and their entries stat'ed through an fd of the
//! directory (`/proc/self/fd/N/name`), never through a path that could
//! have changed.
//!
//! It does not decide what is visible (`.dockerignore` is the context's
//! business) or what is copied.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The top of a tree, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// Where the tree is in kiln's mount namespace, as the kernel names it.
    path: PathBuf,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The path of an open fd, through procfs (the fd itself, not a lookup).
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Splits a cleaned relative path into its parent and last name.
fn split(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    }
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

impl Root {
    /// Opens the tree at `path` (a directory kiln chose, trusted itself).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let path = fs::read_link(fd_path(fd.as_fd()))?;
        Ok(Root { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn openat2(&self, rel: &str, flags: OFlags, resolve: ResolveFlags) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        kiln_image::in_root::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve | ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(errno)
    }

    /// The real relative path of an fd opened in this tree.
    fn rel_of(&self, fd: BorrowedFd<'_>, shown: &str) -> io::Result<String> {
        let real = fs::read_link(fd_path(fd))?;
        let rel = real.strip_prefix(&self.path).map_err(|_| {
            // Cannot happen with RESOLVE_IN_ROOT; refuse rather than trust.
            io::Error::other(format!(
                "{shown:?} resolves outside {}",
                self.path.display()
            ))
        })?;
        std::str::from_utf8(rel.as_os_str().as_bytes())
            .map(str::to_string)
            .map_err(|_| {
                io::Error::other(format!("{shown:?} resolves to a path that is not UTF-8"))
            })
    }

    /// The real path `rel` (cleaned, relative) names, following every
    /// symlink in it, the last one too, inside the tree; `None` when
    /// nothing is there.
    pub fn real(&self, rel: &str) -> io::Result<Option<String>> {
        match self.openat2(rel, OFlags::PATH, ResolveFlags::empty()) {
            Ok(fd) => self.rel_of(fd.as_fd(), rel).map(Some),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// As [`Root::real`], but a symlink as the last component is not
    /// followed: the real path of its directory, and its name.
    pub fn real_nofollow(&self, rel: &str) -> io::Result<Option<String>> {
        let (parent, name) = split(rel);
        if name.is_empty() {
            return Ok(Some(String::new()));
        }
        let Some(parent) = self.real(parent)? else {
            return Ok(None);
        };
        let rel = join(&parent, name);
        match self.lstat(&rel) {
            Ok(_) => Ok(Some(rel)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An fd of the real directory `rel`; a symlink anywhere in it is
    /// refused (`ELOOP`), not followed.
    fn dir(&self, rel: &str) -> io::Result<OwnedFd> {
        self.openat2(
            rel,
            OFlags::PATH | OFlags::DIRECTORY,
            ResolveFlags::NO_SYMLINKS,
        )
    }

    /// The metadata of the real path `rel`, not following a last symlink.
    pub fn lstat(&self, rel: &str) -> io::Result<fs::Metadata> {
        let (parent, name) = split(rel);
        if name.is_empty() {
            return fs::metadata(fd_path(self.fd.as_fd()));
        }
        let dir = self.dir(parent)?;
        fs::symlink_metadata(fd_path(dir.as_fd()).join(name))
    }

    /// Opens the regular file at the real path `rel` for reading.
    pub fn open_file(&self, rel: &str) -> io::Result<fs::File> {
        let fd = self.openat2(
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            ResolveFlags::NO_SYMLINKS,
        )?;
        let f = fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::other(format!("{rel:?} is not a regular file")));
        }
        Ok(f)
    }

    /// The target of the symlink at the real path `rel`.
    pub fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        fs::read_link(fd_path(dir.as_fd()).join(name))
    }

    /// The entries of the real directory `rel`: names (UTF-8 only, sorted)
    /// with their metadata, stat'ed through the directory's fd. Entries gone
    /// before their stat are left out.
    pub fn list(&self, rel: &str) -> io::Result<Vec<(String, fs::Metadata)>> {
        let dir = self.dir(rel)?;
        let at = fd_path(dir.as_fd());
        let mut out = Vec::new();
        for e in fs::read_dir(&at)?.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            // fstatat on the listing's own fd, not following symlinks.
            let Ok(meta) = e.metadata() else {
                continue;
            };
            out.push((name, meta));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl Root {
    /// For an error message: the first symlink along the path `clean`
    /// names (no wildcards) whose target would leave the tree on the host
    /// (absolute, or climbing above the top), as it is named.
    pub fn escaping_link(&self, clean: &str) -> Option<String> {
        let comps: Vec<&str> = clean.split('/').filter(|c| !c.is_empty()).collect();
        for i in 1..=comps.len() {
            let named = comps[..i].join("/");
            let real = self.real_nofollow(&named).ok()??;
            if !self.lstat(&real).ok()?.file_type().is_symlink() {
                continue;
            }
            let target = self.read_link(&real).ok()?;
            let mut depth = real.matches('/').count() as i64;
            let mut climbs = target.is_absolute();
            for c in target.components() {
                match c {
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::Normal(_) => depth += 1,
                    _ => {}
                }
                climbs |= depth < 0;
            }
            if climbs {
                return Some(named);
            }
        }
        None
    }
}

/// A regular file of a tree, opened in the tree (see [`Root::open_file`])
/// only when first read: a layer of a COPY names thousands of files, and
/// reading through the tree means a directory swapped for a symlink after
/// the COPY was planned is refused, not followed.
pub struct LazyFile {
    tree: Arc<Root>,
    rel: String,
    file: Option<fs::File>,
    done: bool,
}

impl LazyFile {
    pub fn new(tree: Arc<Root>, rel: String) -> LazyFile {
        LazyFile {
            tree,
            rel,
            file: None,
            done: false,
        }
    }
}

impl io::Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = self
                    .tree
                    .open_file(&self.rel)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.rel)))?;
                self.file.insert(f)
            }
        };
        let n = file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // Closed at the end: a layer's entries may outlive their reads.
            self.file = None;
            self.done = true;
        }
        Ok(n)
    }
}

/// Whether a lookup failed because the path is not there (a component
/// missing, or a file where a directory was needed).
pub fn missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// What [`expand`] may skip: `(path, is_last_component)` says whether a
/// path is hidden (e.g. excluded by `.dockerignore`).
pub type Hidden<'a> = &'a dyn Fn(&str, bool) -> bool;

/// The real paths a COPY source names in `root` (see [`expand_named`]).
pub fn expand(
    root: &Root,
    clean: &str,
    follow_last: bool,
    hidden: Hidden<'_>,
) -> io::Result<Vec<String>> {
    Ok(expand_named(root, clean, follow_last, hidden)?
        .into_iter()
        .map(|(_, real)| real)
        .collect())
}

/// The paths a COPY source names in `root`, each as named (what a copy
/// calls it: a symlink keeps its own name, as BuildKit's COPY does) and
/// as it really is (where its content is): `clean` is a cleaned
/// relative path whose components may hold wildcards (Go's
/// `filepath.Match`, see [`crate::context::glob_match`]). Symlinks in the
/// middle are followed inside the tree; the last one too when
/// `follow_last`. `hidden` paths (as named, and as resolved) are left out.
pub fn expand_named(
    root: &Root,
    clean: &str,
    follow_last: bool,
    hidden: Hidden<'_>,
) -> io::Result<Vec<(String, String)>> {
    let resolve_last = |rel: &str| -> io::Result<Option<String>> {
        let real = if follow_last {
            root.real(rel)?
        } else {
            root.real_nofollow(rel)?
        };
        Ok(real.filter(|r| !hidden(r, true)))
    };
    if clean.is_empty() {
        return Ok(vec![(String::new(), String::new())]);
    }
    if !clean.contains(['*', '?', '[']) {
        if hidden(clean, true) {
            return Ok(Vec::new());
        }
        return Ok(resolve_last(clean)?
            .map(|real| (clean.to_string(), real))
            .into_iter()
            .collect());
    }
    // Directories walked so far, as real paths (the names of the middle
    // components do not reach the copy), then the matches, as named.
    let mut found: Vec<(String, String)> = Vec::new();
    let comps: Vec<&str> = clean.split('/').collect();
    let mut frontier = vec![String::new()];
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for base in &frontier {
            let names: Vec<String> = if comp.contains(['*', '?', '[']) {
                match root.list(base) {
                    Ok(list) => list
                        .into_iter()
                        .map(|(n, _)| n)
                        .filter(|n| crate::context::glob_match(comp, n))
                        .collect(),
                    Err(e) if missing(&e) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                vec![comp.to_string()]
            };
            for name in names {
                let rel = join(base, &name);
                if hidden(&rel, last) {
                    continue;
                }
                if last {
                    if let Some(real) = resolve_last(&rel)? {
                        found.push((rel, real));
                    }
                } else if let Some(real) = root.real(&rel)?
                    && !hidden(&real, false)
                    && root.lstat(&real).is_ok_and(|m| m.is_dir())
                {
                    next.push(real);
                }
            }
        }
        frontier = next;
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|(_, real)| seen.insert(real.clone()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        fs::create_dir_all(p.join("etc")).unwrap();
        fs::write(p.join("etc/shadow"), "inside").unwrap();
        fs::create_dir_all(p.join("d/sub")).unwrap();
        fs::write(p.join("d/sub/f"), "f").unwrap();
        symlink("/etc", p.join("abs")).unwrap();
        symlink("../../../../etc", p.join("d/up")).unwrap();
        symlink("/etc/shadow", p.join("d/shadow")).unwrap();
        symlink("sub", p.join("d/rel")).unwrap();
        symlink("/proc/self/root/etc", p.join("magic")).unwrap();
        let r = Root::open(p).unwrap();
        (t, r)
    }

    #[test]
    fn symlinks_are_rerooted() {
        let (_t, r) = tree();
        assert_eq!(r.real("abs/shadow").unwrap().as_deref(), Some("etc/shadow"));
        assert_eq!(
            r.real("d/up/shadow").unwrap().as_deref(),
            Some("etc/shadow")
        );
        assert_eq!(r.real("d/shadow").unwrap().as_deref(), Some("etc/shadow"));
        assert_eq!(r.real("d/rel/f").unwrap().as_deref(), Some("d/sub/f"));
        assert_eq!(r.real("abs/passwd").unwrap(), None);
        assert_eq!(r.real("d/sub/f/x").unwrap(), None);
        // /proc/self/root re-rooted is a path in the tree, which is missing.
        assert_eq!(r.real("magic/shadow").unwrap(), None);
        assert_eq!(
            r.real_nofollow("abs/../d/shadow").unwrap().as_deref(),
            Some("d/shadow")
        );
        assert_eq!(r.real_nofollow("d/rel").unwrap().as_deref(), Some("d/rel"));
    }

    #[test]
    fn real_paths_refuse_symlinks() {
        let (_t, r) = tree();
        assert!(r.open_file("abs/shadow").is_err());
        assert!(r.open_file("d/shadow").is_err());
        assert!(r.list("abs").is_err());
        assert!(r.lstat("abs/shadow").is_err());
        assert!(r.lstat("abs").unwrap().file_type().is_symlink());
        let mut s = String::new();
        io::Read::read_to_string(&mut r.open_file("etc/shadow").unwrap(), &mut s).unwrap();
        assert_eq!(s, "inside");
    }

    #[test]
    fn links_out_of_the_tree_are_named() {
        let (_t, r) = tree();
        assert_eq!(r.escaping_link("abs/shadow").as_deref(), Some("abs"));
        assert_eq!(r.escaping_link("d/up/x").as_deref(), Some("d/up"));
        assert_eq!(r.escaping_link("d/shadow").as_deref(), Some("d/shadow"));
        assert_eq!(r.escaping_link("d/rel/f"), None);
        assert_eq!(r.escaping_link("etc/shadow"), None);
    }

    #[test]
    fn patterns_expand_in_the_tree() {
        let (_t, r) = tree();
        let none: Hidden<'_> = &|_, _| false;
        assert_eq!(expand(&r, "abs/sha*", false, none).unwrap(), ["etc/shadow"]);
        assert_eq!(expand(&r, "d/*/f", false, none).unwrap(), ["d/sub/f"]);
        assert_eq!(expand(&r, "d/shadow", true, none).unwrap(), ["etc/shadow"]);
        assert_eq!(expand(&r, "d/shadow", false, none).unwrap(), ["d/shadow"]);
        let no_etc: Hidden<'_> = &|p, _| p.starts_with("etc");
        assert!(expand(&r, "d/shadow", true, no_etc).unwrap().is_empty());
    }
}
