//! Layer entries: what one tar member of a layer describes, independent of
//! where it came from (a directory walk, a COPY, the overlay differ), and the
//! one ordering rule every layer kiln writes follows.
//!
//! Ordering rule (documented because digests depend on it): entries are
//! sorted component by component, each component compared as raw bytes —
//! which is the byte order of the path with `/` sorting before every other
//! byte. Parents therefore come before their children and a directory's
//! subtree is contiguous (depth-first, like `filepath.Walk`). One exception:
//! an opaque-whiteout marker (`dir/.wh..wh..opq`) sorts first among the
//! children of its directory, so even a naive extractor that applies entries
//! in order never deletes content of the same layer.
//!
//! This module does not do I/O; host files are only named here.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{LayerError, show};

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Where the bytes of a regular file come from.
pub enum FileSource {
    /// A host file, opened (without following a final symlink) and read
    /// when the entry is written. Its size must still be `size` then.
    Host(PathBuf),
    /// Bytes held by the caller (small generated files).
    Bytes(Vec<u8>),
    /// A reader that yields exactly `size` bytes.
    Reader(Box<dyn Read + Send>),
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Host(p) => f.debug_tuple("Host").field(p).finish(),
            FileSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            FileSource::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// The kind of one entry.
#[derive(Debug)]
pub enum EntryKind {
    File {
        source: FileSource,
        size: u64,
    },
    Dir,
    Symlink {
        target: PathBuf,
    },
    /// A hard link to another entry of the layer (or of a lower layer),
    /// named by its layer path.
    Hardlink {
        target: PathBuf,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `path` was deleted: written as `parent/.wh.<name>`.
    Whiteout,
    /// The directory `path` hides everything from lower layers: written as
    /// `path/.wh..wh..opq`.
    OpaqueWhiteout,
}

/// One entry of a layer. `path` is relative to the layer root, without `.`
/// or `..` components (a leading `/` is tolerated and dropped).
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (sub-second parts are not written).
    pub mtime: i64,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    pub fn new(path: impl Into<PathBuf>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }
    pub fn file_bytes(path: impl Into<PathBuf>, bytes: impl Into<Vec<u8>>) -> Entry {
        let bytes = bytes.into();
        let size = bytes.len() as u64;
        let source = FileSource::Bytes(bytes);
        Entry::new(path, EntryKind::File { source, size }, 0o644)
    }
    pub fn file_host(path: impl Into<PathBuf>, host: impl Into<PathBuf>, size: u64) -> Entry {
        let source = FileSource::Host(host.into());
        Entry::new(path, EntryKind::File { source, size }, 0o644)
    }
    pub fn dir(path: impl Into<PathBuf>) -> Entry {
        Entry::new(path, EntryKind::Dir, 0o755)
    }
    pub fn symlink(path: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Entry {
        let target = target.into();
        Entry::new(path, EntryKind::Symlink { target }, 0o777)
    }
    pub fn hardlink(path: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Entry {
        let target = target.into();
        Entry::new(path, EntryKind::Hardlink { target }, 0o644)
    }
    /// A whiteout deleting `path` (Docker writes whiteouts with mode 0).
    pub fn whiteout(path: impl Into<PathBuf>) -> Entry {
        Entry::new(path, EntryKind::Whiteout, 0)
    }
    pub fn opaque_whiteout(dir: impl Into<PathBuf>) -> Entry {
        Entry::new(dir, EntryKind::OpaqueWhiteout, 0)
    }
    pub fn with_mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn with_owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn with_mtime(mut self, mtime: i64) -> Entry {
        self.mtime = mtime;
        self
    }
    pub fn with_xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Entry {
        self.xattrs.insert(name.into(), value.into());
        self
    }

    /// The validated path bytes, without a leading `/`.
    pub(crate) fn clean_path(&self) -> Result<&[u8], LayerError> {
        validate_path(self.path.as_os_str().as_bytes())
    }

    /// The member name in the tar: directories end in `/`, whiteouts get
    /// their `.wh.` forms.
    pub fn tar_name(&self) -> Result<Vec<u8>, LayerError> {
        let path = self.clean_path()?;
        let mut name = Vec::with_capacity(path.len() + 16);
        match self.kind {
            EntryKind::Dir => {
                name.extend_from_slice(path);
                name.push(b'/');
            }
            EntryKind::Whiteout => {
                let (parent, base) = split_last(path);
                if let Some(p) = parent {
                    name.extend_from_slice(p);
                    name.push(b'/');
                }
                name.extend_from_slice(WHITEOUT_PREFIX);
                name.extend_from_slice(base);
            }
            EntryKind::OpaqueWhiteout => {
                name.extend_from_slice(path);
                name.push(b'/');
                name.extend_from_slice(OPAQUE_MARKER);
            }
            _ => {
                let (_, base) = split_last(path);
                if base.starts_with(WHITEOUT_PREFIX) {
                    return Err(LayerError::InvalidPath {
                        path: show(path),
                        reason: "names starting with .wh. are reserved for whiteouts",
                    });
                }
                name.extend_from_slice(path);
            }
        }
        Ok(name)
    }
}

fn split_last(path: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (Some(&path[..i]), &path[i + 1..]),
        None => (None, path),
    }
}

/// Checks a layer path: relative (a leading `/` is dropped), no empty, `.`
/// or `..` components, no NUL.
pub(crate) fn validate_path(raw: &[u8]) -> Result<&[u8], LayerError> {
    let mut p = raw;
    while let Some(rest) = p.strip_prefix(b"/") {
        p = rest;
    }
    let bad = |reason| {
        Err(LayerError::InvalidPath {
            path: show(raw),
            reason,
        })
    };
    if p.is_empty() {
        return bad("empty path (the layer root is not an entry)");
    }
    if p.contains(&0) {
        return bad("contains NUL");
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return bad("empty component or trailing /"),
            b"." | b".." => return bad(". and .. components are not allowed"),
            _ => {}
        }
    }
    Ok(p)
}

/// Compares two tar member names by the layer ordering rule (see the module
/// doc). A trailing `/` is ignored.
pub fn compare_tar_names(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |s: &[u8]| -> usize { s.len() - usize::from(s.last() == Some(&b'/')) };
    let (a, b) = (&a[..trim(a)], &b[..trim(b)]);
    let mut ai = a.split(|&c| c == b'/');
    let mut bi = b.split(|&c| c == b'/');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x == OPAQUE_MARKER, y == OPAQUE_MARKER) {
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Sorts entries by the layer ordering rule and rejects invalid or
/// duplicate names (two entries with the same tar name would make the
/// result depend on the input order).
pub fn sort_entries(entries: Vec<Entry>) -> Result<Vec<Entry>, LayerError> {
    let mut keyed = entries
        .into_iter()
        .map(|e| Ok((e.tar_name()?, e)))
        .collect::<Result<Vec<_>, LayerError>>()?;
    keyed.sort_by(|a, b| compare_tar_names(&a.0, &b.0));
    for w in keyed.windows(2) {
        if compare_tar_names(&w[0].0, &w[1].0) == Ordering::Equal {
            return Err(LayerError::Duplicate {
                path: show(&w[1].0),
            });
        }
    }
    let mut entries: Vec<Entry> = keyed.into_iter().map(|(_, e)| e).collect();
    hardlink_targets_first(&mut entries)?;
    Ok(entries)
}

/// Makes every hard link come after the entry carrying its content: when a
/// link sorts before its target file, the earliest path of the group takes
/// the content and metadata and the others (the old target included) link
/// to it. Targets not in the list (lower layers) are left alone.
fn hardlink_targets_first(entries: &mut [Entry]) -> Result<(), LayerError> {
    use std::collections::HashMap;
    let index: HashMap<Vec<u8>, usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }))
        .filter_map(|(i, e)| Some((e.clean_path().ok()?.to_vec(), i)))
        .collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let EntryKind::Hardlink { target } = &e.kind {
            let t = validate_path(path_bytes(target))?;
            if let Some(&j) = index.get(t) {
                groups.entry(j).or_default().push(i);
            }
        }
    }
    for (j, links) in groups {
        let Some(&carrier) = links.iter().min() else {
            continue;
        };
        if carrier > j {
            continue; // already in order
        }
        let carrier_path = entries[carrier].path.clone();
        let (lo, hi) = entries.split_at_mut(j);
        let (c, t) = (&mut lo[carrier], &mut hi[0]);
        std::mem::swap(&mut c.kind, &mut t.kind);
        std::mem::swap(&mut c.mode, &mut t.mode);
        std::mem::swap(&mut c.uid, &mut t.uid);
        std::mem::swap(&mut c.gid, &mut t.gid);
        std::mem::swap(&mut c.mtime, &mut t.mtime);
        std::mem::swap(&mut c.xattrs, &mut t.xattrs);
        t.kind = EntryKind::Hardlink {
            target: carrier_path.clone(),
        };
        for &l in &links {
            if l != carrier {
                entries[l].kind = EntryKind::Hardlink {
                    target: carrier_path.clone(),
                };
            }
        }
    }
    Ok(())
}

/// `path` as bytes, for callers holding a `Path`.
pub(crate) fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_componentwise_with_opaque_first() {
        let mut names: Vec<&[u8]> = vec![
            b"a-b",
            b"a/c",
            b"a/",
            b"a/.wh..wh..opq",
            b"a/.a",
            b"b",
            b"a/c/d",
        ];
        names.sort_by(|a, b| compare_tar_names(a, b));
        let want: Vec<&[u8]> = vec![
            b"a/",
            b"a/.wh..wh..opq",
            b"a/.a",
            b"a/c",
            b"a/c/d",
            b"a-b",
            b"b",
        ];
        assert_eq!(names, want);
    }

    #[test]
    fn rejects_bad_paths_and_duplicates() {
        for bad in ["", "/", "a/../b", "./a", "a//b", "a/"] {
            assert!(Entry::dir(bad).tar_name().is_err(), "{bad}");
        }
        assert!(Entry::file_bytes(".wh.x", "").tar_name().is_err());
        let dup = vec![Entry::dir("a"), Entry::dir("/a")];
        assert!(matches!(
            sort_entries(dup),
            Err(LayerError::Duplicate { .. })
        ));
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(Entry::whiteout("a/b").tar_name().unwrap(), b"a/.wh.b");
        assert_eq!(Entry::whiteout("b").tar_name().unwrap(), b".wh.b");
        assert_eq!(
            Entry::opaque_whiteout("d").tar_name().unwrap(),
            b"d/.wh..wh..opq"
        );
    }
}
