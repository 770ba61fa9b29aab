//! The build context: a directory, filtered by `.dockerignore`, whose files
//! are hashed once and remembered by (size, mtime, inode, ctime), so an
//! unchanged context costs a stat per file and no reads.
//!
//! Source paths are cleaned and confined: `..` cannot climb out, and a
//! symlink inside the context is never followed out of it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_dockerfile::ignore::Matcher;
use kiln_image::{Digest, Hasher};
use serde::{Deserialize, Serialize};

use crate::BuildError;

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
        Ok(Context {
            root,
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

    /// The host path of a cleaned relative path, refusing any whose parent
    /// resolves outside the context (through `..` or a symlink).
    pub fn host_path(&self, rel: &str) -> Result<PathBuf, BuildError> {
        self.check_present(rel)?;
        let clean = clean_rel(rel)?;
        if clean.is_empty() {
            return Ok(self.root.clone());
        }
        let p = self.root.join(&clean);
        if let Some(parent) = p.parent()
            && let Ok(real) = fs::canonicalize(parent)
            && !real.starts_with(&self.root)
        {
            return Err(BuildError::Context(format!(
                "{rel:?} points outside the build context"
            )));
        }
        Ok(p)
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
        let p = self.host_path(rel)?;
        let mut f = fs::File::open(&p).map_err(|e| BuildError::Context(format!("{rel}: {e}")))?;
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
    pub fn resolve_source(&self, pattern: &str) -> Result<Vec<ContextEntry>, BuildError> {
        self.check_present(pattern)?;
        let clean = clean_rel(pattern)?;
        let has_glob = clean.contains(['*', '?', '[']);
        let mut out = Vec::new();
        if !has_glob {
            let p = self.host_path(&clean)?;
            if let Ok(meta) = fs::symlink_metadata(&p)
                && !self.is_ignored(&clean)
            {
                out.push(self.follow(ContextEntry { rel: clean, meta })?);
            }
            return Ok(out);
        }
        let comps: Vec<&str> = clean.split('/').collect();
        let mut frontier = vec![String::new()];
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let mut next = Vec::new();
            for base in &frontier {
                let dir = if base.is_empty() {
                    self.root.clone()
                } else {
                    self.host_path(base)?
                };
                let Ok(rd) = fs::read_dir(&dir) else { continue };
                let mut names: Vec<String> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                names.sort();
                for name in names {
                    if !glob_match(comp, &name) {
                        continue;
                    }
                    let rel = if base.is_empty() {
                        name
                    } else {
                        format!("{base}/{name}")
                    };
                    if self.is_ignored(&rel) && !self.ignore.may_reinclude_under(&rel) {
                        continue;
                    }
                    let is_dir =
                        fs::symlink_metadata(self.root.join(&rel)).is_ok_and(|m| m.is_dir());
                    if last || is_dir {
                        next.push(rel);
                    }
                }
            }
            frontier = next;
        }
        for rel in frontier {
            if self.is_ignored(&rel) {
                continue;
            }
            let meta = fs::symlink_metadata(self.host_path(&rel)?)
                .map_err(|e| BuildError::Context(format!("{rel}: {e}")))?;
            out.push(self.follow(ContextEntry { rel, meta })?);
        }
        Ok(out)
    }

    /// A source named directly that is a symlink is copied as what it
    /// points to, as BuildKit does, provided that stays in the context.
    fn follow(&self, e: ContextEntry) -> Result<ContextEntry, BuildError> {
        if !e.meta.file_type().is_symlink() {
            return Ok(e);
        }
        let real = fs::canonicalize(self.root.join(&e.rel))
            .map_err(|err| BuildError::Context(format!("{}: {err}", e.rel)))?;
        let rel = real
            .strip_prefix(&self.root)
            .map_err(|_| {
                BuildError::Context(format!("{:?} points outside the build context", e.rel))
            })?
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&real)
            .map_err(|err| BuildError::Context(format!("{rel}: {err}")))?;
        Ok(ContextEntry { rel, meta })
    }

    /// Everything under a context directory, sorted, ignored paths left out.
    pub fn walk(&self, dir_rel: &str) -> Result<Vec<ContextEntry>, BuildError> {
        self.check_present(dir_rel)?;
        walk_sorted(
            dir_rel,
            |d| {
                let host = if d.is_empty() {
                    self.root.clone()
                } else {
                    self.host_path(d)?
                };
                fs::read_dir(&host)
                    .map(Some)
                    .map_err(|e| BuildError::Context(format!("{d}: {e}")))
            },
            |rel, meta| {
                let ignored = self.is_ignored(rel);
                let descend = meta.is_dir() && (!ignored || self.ignore.may_reinclude_under(rel));
                (!ignored, descend)
            },
        )
    }
}

/// Every entry below `start` in a tree, sorted by relative path. `read_dir`
/// opens a directory by its relative path (`None` skips it); `visit` says
/// of each entry whether to list it and whether to descend into it. Names
/// that are not UTF-8 and entries gone before their stat are left out.
pub(crate) fn walk_sorted(
    start: &str,
    mut read_dir: impl FnMut(&str) -> Result<Option<fs::ReadDir>, BuildError>,
    mut visit: impl FnMut(&str, &fs::Metadata) -> (bool, bool),
) -> Result<Vec<ContextEntry>, BuildError> {
    let mut out = Vec::new();
    let mut todo = vec![start.to_string()];
    while let Some(d) = todo.pop() {
        let Some(rd) = read_dir(&d)? else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let rel = if d.is_empty() {
                name
            } else {
                format!("{d}/{name}")
            };
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
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

/// Cleans a context path: no leading `/`, no `.`, and `..` may not climb
/// above the root (Docker clamps it there; so do we).
pub fn clean_rel(p: &str) -> Result<String, BuildError> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
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
