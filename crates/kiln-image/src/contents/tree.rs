//! The filesystem a stack of layers makes, as metadata only: a sorted map
//! from path to [`FileMeta`], built by applying one layer tar at a time.

use std::collections::{BTreeMap, HashSet};
use std::io;

use super::scan::{Added, Node, Op, Scan, scan_layer};
use super::{FileKind, FileMeta};
use crate::layer::open_layer;
use crate::manifest::Descriptor;
use crate::mutate::Image;
use crate::rewrite::LazyBlob;
use crate::transport::{ImageSource, Result, TransportError};

/// The filesystem of the layers applied so far.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
}

/// The key range of everything strictly below the directory `dir`.
fn below(dir: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = dir.to_vec();
    lo.push(b'/');
    let mut hi = dir.to_vec();
    hi.push(b'/' + 1);
    (lo, hi)
}

/// Scans layer `index` of an image, its blob read from `src` and checked
/// against its digest.
pub(crate) fn read_layer(src: &dyn ImageSource, index: usize, desc: &Descriptor) -> Result<Scan> {
    let fail =
        |e: io::Error| TransportError::Invalid(format!("layer {index} ({}): {e}", desc.digest));
    let (_, mut rd) = open_layer(LazyBlob::new(src, desc.clone())).map_err(fail)?;
    let scan = scan_layer(&mut rd).map_err(fail)?;
    // To its end, so that the digest is checked: a tar ends before its
    // blob does (padding, a second gzip member).
    io::copy(&mut rd, &mut io::sink()).map_err(fail)?;
    Ok(scan)
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// The filesystem of `image`, its layers read from `src`.
    pub fn of_image(src: &dyn ImageSource, image: &Image) -> Result<Tree> {
        let mut tree = Tree::new();
        for (i, desc) in image.layers.iter().enumerate() {
            tree.apply(read_layer(src, i, desc)?);
        }
        Ok(tree)
    }

    /// Every path (relative, no leading `/`) and its metadata, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &FileMeta)> {
        self.nodes.iter().map(|(p, n)| (&p[..], &n.meta))
    }

    /// The metadata at `path` (relative, no leading `/`).
    pub fn get(&self, path: &[u8]) -> Option<&FileMeta> {
        self.nodes.get(path).map(|n| &n.meta)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Removes everything below `dir` (not `dir`); returns the bytes
    /// removed that this layer did not add.
    fn remove_below(&mut self, dir: &[u8], own: &HashSet<Vec<u8>>) -> u64 {
        let victims: Vec<Vec<u8>> = if dir.is_empty() {
            self.nodes.keys().cloned().collect()
        } else {
            let (lo, hi) = below(dir);
            self.nodes.range(lo..hi).map(|(p, _)| p.clone()).collect()
        };
        victims.into_iter().map(|p| self.take(&p, own)).sum::<u64>()
    }

    /// Removes `path` and everything below it.
    fn remove_all(&mut self, path: &[u8], own: &HashSet<Vec<u8>>) -> u64 {
        self.remove_below(path, own) + self.take(path, own)
    }

    fn take(&mut self, path: &[u8], own: &HashSet<Vec<u8>>) -> u64 {
        match self.nodes.remove(path) {
            Some(n) if !own.contains(path) => n.stored,
            _ => 0,
        }
    }

    /// Applies one layer; returns the bytes of the layers below that it
    /// hides (overwritten, deleted, or under a replaced directory).
    pub(crate) fn apply(&mut self, scan: Scan) -> u64 {
        let own = HashSet::new();
        let mut hidden = 0;
        let mut adds = Vec::new();
        // Whiteouts apply to the layers below only: first, whatever their
        // place in the tar.
        for op in scan.ops {
            match op {
                Op::Remove(p) => hidden += self.remove_all(&p, &own),
                Op::Opaque(d) => hidden += self.remove_below(&d, &own),
                Op::Add(p, a) => adds.push((p, a)),
            }
        }
        let mut own = own;
        for (path, added) in adds {
            let node = match added {
                Added::Node(n) => n,
                Added::HardLink(target, fallback) => match self.nodes.get(&target) {
                    Some(t) if t.meta.kind != FileKind::Dir => Node {
                        meta: t.meta.clone(),
                        stored: 0,
                    },
                    _ => Node {
                        meta: fallback,
                        stored: 0,
                    },
                },
            };
            // A non-directory on the way down is replaced by a directory.
            let mut at = 0;
            while let Some(i) = path[at..].iter().position(|&b| b == b'/') {
                let ancestor = &path[..at + i];
                if self
                    .nodes
                    .get(ancestor)
                    .is_some_and(|n| n.meta.kind != FileKind::Dir)
                {
                    hidden += self.take(ancestor, &own);
                }
                at += i + 1;
            }
            match self.nodes.get(&path).map(|n| n.meta.kind) {
                Some(FileKind::Dir) if node.meta.kind == FileKind::Dir => {}
                Some(FileKind::Dir) => hidden += self.remove_all(&path, &own),
                Some(_) => hidden += self.take(&path, &own),
                None => {}
            }
            self.nodes.insert(path.clone(), node);
            own.insert(path);
        }
        hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType;

    fn tar(members: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, body) in members {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*ty);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_mode(if *ty == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            match ty {
                EntryType::Symlink | EntryType::Link => {
                    h.set_size(0);
                    h.set_link_name(std::str::from_utf8(body).unwrap()).unwrap();
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
                _ => {
                    h.set_size(body.len() as u64);
                    b.append_data(&mut h, name, *body).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn paths(t: &Tree) -> Vec<String> {
        t.iter()
            .map(|(p, m)| {
                format!(
                    "{} {} {}",
                    String::from_utf8_lossy(p),
                    m.kind.as_str(),
                    m.size
                )
            })
            .collect()
    }

    #[test]
    fn whiteouts_opaque_and_replacements_hide_lower_bytes_only() {
        use EntryType::*;
        let mut t = Tree::new();
        let l0 = tar(&[
            ("a/", Directory, b""),
            ("a/one", Regular, b"1111"),
            ("a/two", Regular, b"22"),
            ("b/", Directory, b""),
            ("b/x", Regular, b"xxxxxxxx"),
            ("c", Regular, b"ccc"),
            ("d/", Directory, b""),
            ("d/e", Regular, b"eeeee"),
        ]);
        let s = scan_layer(&l0[..]).unwrap();
        assert_eq!((s.files, s.content), (5, 22));
        assert_eq!(t.apply(s), 0);
        let l1 = tar(&[
            ("a/.wh.one", Regular, b""),
            ("b/.wh..wh..opq", Regular, b""),
            ("b/y", Regular, b"y"),
            // Added in this layer then whited out in it: the whiteout
            // applies below only, so b/y and this stay.
            ("b/.wh.y", Regular, b""),
            ("c", Regular, b"C"),
            ("d", Regular, b"now a file"),
            ("h", Link, b"a/two"),
        ]);
        let s = scan_layer(&l1[..]).unwrap();
        assert_eq!((s.files, s.content), (4, 12));
        // a/one 4 + b/x 8 + c 3 + d/e 5 = 20
        assert_eq!(t.apply(s), 20);
        assert_eq!(
            paths(&t),
            [
                "a dir 0",
                "a/two file 2",
                "b dir 0",
                "b/y file 1",
                "c file 1",
                "d file 10",
                "h file 2",
            ]
        );
        // Overwriting the hard link hides nothing: its bytes are a/two's.
        let l2 = tar(&[("h", Regular, b"hh")]);
        assert_eq!(t.apply(scan_layer(&l2[..]).unwrap()), 0);
        // Whiting out the root's child directory takes its subtree.
        let l3 = tar(&[(".wh.a", Regular, b"")]);
        assert_eq!(t.apply(scan_layer(&l3[..]).unwrap()), 2);
    }

    #[test]
    fn escaping_names_are_refused_by_name() {
        let l = tar(&[("ok", EntryType::Regular, b"")]);
        let mut l = l;
        // Rewrite the name in place to climb out (tar::Builder refuses).
        l[..5].copy_from_slice(b"../x\0");
        let sum: u32 = l[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        l[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let e = scan_layer(&l[..]).err().unwrap().to_string();
        assert!(e.contains("\"../x\""), "{e}");
    }
}
