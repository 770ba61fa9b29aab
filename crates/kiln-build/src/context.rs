//! The build context: a directory, filtered by `.dockerignore`, whose files
//! are hashed once and remembered by (size, mtime, inode, ctime), so an
//! unchanged context costs a stat per file and no reads.
//!
//! Source paths are cleaned and confined: `..` cannot climb out, and a
//! symlink inside the context is followed inside it, never out of it
//! (see [`crate::inroot`]). An ignored path is not in the context at all,
//! as BuildKit never sends it: COPY does not find it, and a RUN's bind
//! mount of the context does not show it (see [`Context::bind_source`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_dockerfile::ignore::Matcher;
use kiln_image::{Digest, Hasher};
use serde::{Deserialize, Serialize};

use crate::BuildError;
use crate::inroot::Root;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        }
    }
}

/// One file or directory of the context that a COPY selected.
#[derive(Debug, Clone)]
pub struct ContextEntry {
    /// Relative to the context root, `/`-separated, no leading `/`.
    pub rel: String,
    pub meta: fs::Metadata,
}

pub struct Context {
    root: PathBuf,
    /// The context held open; an error if it could not be opened.
    tree: Result<Arc<Root>, std::io::Error>,
    ignore: Matcher,
    index_path: Option<PathBuf>,
    known: Mutex<BTreeMap<String, (Stamp, Digest)>>,
    dirty: Mutex<bool>,
    /// Set when the build has no context: why, for every attempt to read it.
    absent: Option<String>,
}

impl Context {
    /// A context rooted at `root`. `index_dir` is where the hash index of
    /// this context persists between builds.
    pub fn new(
        root: &Path,
        ignore: Matcher,
        index_dir: Option<&Path>,
    ) -> Result<Context, BuildError> {
        let root = fs::canonicalize(root)
            .map_err(|e| BuildError::Context(format!("{}: {e}", root.display())))?;
        let index_path =
            index_dir.map(|d| d.join(Digest::sha256_of(root.as_os_str().as_encoded_bytes()).hex()));
        let known = index_path
            .as_ref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let tree = Root::open(&root).map(Arc::new);
        Ok(Context {
            root,
            tree,
            ignore,
            index_path,
            known: Mutex::new(known),
            dirty: Mutex::new(false),
            absent: None,
        })
    }

    /// Marks the context as missing: reading any path fails with `why`.
    pub fn absent(mut self, why: &str) -> Context {
        self.absent = Some(why.to_string());
        self
    }

    fn check_present(&self, rel: &str) -> Result<(), BuildError> {
        match &self.absent {
            Some(why) => Err(BuildError::Context(format!("cannot read {rel:?}: {why}"))),
            None => Ok(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the hash index back if it learned anything.
    pub fn save(&self) {
        if let (Some(p), true) = (&self.index_path, *self.dirty.lock().expect("lock")) {
            let known = self.known.lock().expect("lock");
            if let Ok(bytes) = serde_json::to_vec(&*known) {
                let _ = kiln_image::store::write_atomic(p, &bytes);
            }
        }
    }

    /// The tree of the context, for lookups that stay inside it.
    pub fn tree(&self) -> Result<&Arc<Root>, BuildError> {
        self.tree
            .as_ref()
            .map_err(|e| BuildError::Context(format!("{}: {e}", self.root.display())))
    }

    pub fn is_ignored(&self, rel: &str) -> bool {
        !rel.is_empty() && self.ignore.matches(rel)
    }

    /// The content digest of a regular file, from the index when its stamp
    /// is unchanged.
    pub fn file_digest(&self, rel: &str, meta: &fs::Metadata) -> Result<Digest, BuildError> {
        let stamp = Stamp::of(meta);
        if let Some((s, d)) = self.known.lock().expect("lock").get(rel)
            && *s == stamp
        {
            return Ok(d.clone());
        }
        let mut f = self
            .tree()?
            .open_file(rel)
            .map_err(|e| BuildError::Context(format!("{rel}: {e}")))?;
        let mut h = Hasher::sha256();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| BuildError::Context(format!("{rel}: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let d = h.finish();
        self.known
            .lock()
            .expect("lock")
            .insert(rel.to_string(), (stamp, d.clone()));
        *self.dirty.lock().expect("lock") = true;
        Ok(d)
    }

    /// The context paths a COPY source names: a path or a wildcard
    /// pattern (`*`, `?`, `[...]` per path component), minus ignored ones.
    /// Symlinks are followed inside the context (the last one too, as
    /// BuildKit copies what a named symlink points to); the entries name
    /// real paths.
    /// Each comes with the path as named (a symlink's own name, which the
    /// copy keeps) beside its real entry.
    pub fn resolve_source(&self, pattern: &str) -> Result<Vec<(String, ContextEntry)>, BuildError> {
        self.check_present(pattern)?;
        let clean = clean_rel(pattern)?;
        let tree = self.tree()?;
        let hidden = |rel: &str, last: bool| {
            self.is_ignored(rel) && (last || !self.ignore.may_reinclude_under(rel))
        };
        let found = crate::inroot::expand_named(tree, &clean, true, &hidden)
            .map_err(|e| BuildError::Context(format!("{pattern}: {e}")))?;
        named_entries(tree, found)
    }

    /// What a bind mount of the context path `rel` shows: its real path
    /// and metadata, everything below it that is not ignored, and whether
    /// something below it is (then the bind must not expose the directory
    /// as it is on disk). `None` when nothing (visible) is there.
    pub fn bind_source(&self, rel: &str) -> Result<Option<BindSource>, BuildError> {
        self.check_present(rel)?;
        let clean = clean_rel(rel)?;
        let tree = self.tree()?;
        // An ignored directory is still there when something below it is
        // re-included (`!dir/keep`), holding just that.
        let hidden = |r: &str, _: bool| self.is_ignored(r) && !self.ignore.may_reinclude_under(r);
        let Some(real) = crate::inroot::expand(tree, &clean, true, &hidden)
            .map_err(|e| BuildError::Context(format!("{rel}: {e}")))?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let meta = tree
            .lstat(&real)
            .map_err(|e| BuildError::Context(format!("{real}: {e}")))?;
        let ignored = self.is_ignored(&real) || self.is_ignored(&clean);
        if ignored && !meta.is_dir() {
            return Ok(None);
        }
        let mut filtered = ignored;
        let entries = if meta.is_dir() {
            walk_sorted(tree, &real, true, |r, m| {
                let ignored = self.is_ignored(r);
                filtered |= ignored;
                let descend = m.is_dir() && (!ignored || self.ignore.may_reinclude_under(r));
                (!ignored, descend)
            })?
        } else {
            Vec::new()
        };
        Ok(Some(BindSource {
            real,
            meta,
            entries,
            filtered,
        }))
    }

    /// Everything under a context directory (a real path), sorted, ignored
    /// paths left out.
    pub fn walk(&self, dir_rel: &str) -> Result<Vec<ContextEntry>, BuildError> {
        self.check_present(dir_rel)?;
        walk_sorted(self.tree()?, dir_rel, true, |rel, meta| {
            let ignored = self.is_ignored(rel);
            let descend = meta.is_dir() && (!ignored || self.ignore.may_reinclude_under(rel));
            (!ignored, descend)
        })
    }
}

/// What [`Context::bind_source`] found.
pub struct BindSource {
    /// The real path (no symlink in it), relative to the context.
    pub real: String,
    pub meta: fs::Metadata,
    /// Below `real`, ignored paths left out.
    pub entries: Vec<ContextEntry>,
    /// Something below `real` is ignored.
    pub filtered: bool,
}

/// Every entry below the real directory `start` of a tree, sorted by
/// relative path, listed through directory fds (see [`Root::list`]).
/// `visit` says of each entry whether to list it and whether to descend
/// into it. A directory that cannot be listed is an error when `strict`,
/// else skipped.
pub(crate) fn walk_sorted(
    tree: &Root,
    start: &str,
    strict: bool,
    mut visit: impl FnMut(&str, &fs::Metadata) -> (bool, bool),
) -> Result<Vec<ContextEntry>, BuildError> {
    let mut out = Vec::new();
    let mut todo = vec![start.to_string()];
    while let Some(d) = todo.pop() {
        let list = match tree.list(&d) {
            Ok(l) => l,
            Err(e) if strict => return Err(BuildError::Context(format!("{d}: {e}"))),
            Err(_) => continue,
        };
        for (name, meta) in list {
            let rel = if d.is_empty() {
                name
            } else {
                format!("{d}/{name}")
            };
            let (list, descend) = visit(&rel, &meta);
            if descend {
                todo.push(rel.clone());
            }
            if list {
                out.push(ContextEntry { rel, meta });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Matches of a source (as named, as real) with the real path's metadata.
pub(crate) fn named_entries(
    tree: &Root,
    found: Vec<(String, String)>,
) -> Result<Vec<(String, ContextEntry)>, BuildError> {
    found
        .into_iter()
        .map(|(named, rel)| {
            let meta = tree
                .lstat(&rel)
                .map_err(|e| BuildError::Context(format!("{rel}: {e}")))?;
            Ok((named, ContextEntry { rel, meta }))
        })
        .collect()
}

/// Cleans a context path: no leading `/`, no `.`, and `..` may not climb
/// above the root (Docker clamps it there; so do we).
pub fn clean_rel(p: &str) -> Result<String, BuildError> {
    Ok(kiln_image::clean_path::in_root(p))
}

/// Go's `filepath.Match` for one path component.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let start = i;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        if p[i] <= *c && *c <= p[i + 2] {
                            matched = true;
                        }
                        i += 3;
                    } else {
                        if p[i] == *c {
                            matched = true;
                        }
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false;
                }
                matched != negate && go(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_go() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txtx"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
    }

    #[test]
    fn clean_paths_stay_inside() {
        assert_eq!(clean_rel("../../etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(clean_rel("/a/./b/../c").unwrap(), "a/c");
        assert_eq!(clean_rel(".").unwrap(), "");
    }
}
