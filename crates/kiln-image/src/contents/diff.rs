//! `kiln diff`: the paths two images' filesystems disagree on.

use serde::Serialize;

use super::tree::read_layer;
use super::{FileMeta, Tree};
use crate::mutate::Image;
use crate::transport::{ImageSource, Result};

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Removed => 'D',
            ChangeKind::Changed => 'C',
        }
    }
}

/// One path that differs: `before` is the first image's, `after` the
/// second's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Absolute, as it is in a container.
    pub path: String,
    pub change: ChangeKind,
    pub before: Option<FileMeta>,
    pub after: Option<FileMeta>,
}

/// [`diff`] of two images (layers read from `a_src` and `b_src`). The
/// bottom layers they share (by diff ID) are read once.
pub fn diff_images(
    a_src: &dyn ImageSource,
    a: &Image,
    b_src: &dyn ImageSource,
    b: &Image,
) -> Result<Vec<Change>> {
    let (ids_a, ids_b) = (&a.config.rootfs.diff_ids, &b.config.rootfs.diff_ids);
    let shared = ids_a
        .iter()
        .zip(ids_b)
        .zip(a.layers.iter().zip(&b.layers))
        .take_while(|((x, y), _)| x == y)
        .count();
    let mut base = Tree::new();
    for (i, d) in a.layers[..shared].iter().enumerate() {
        base.apply(read_layer(a_src, i, d)?);
    }
    let mut ta = base.clone();
    for (i, d) in a.layers.iter().enumerate().skip(shared) {
        ta.apply(read_layer(a_src, i, d)?);
    }
    let mut tb = base;
    for (i, d) in b.layers.iter().enumerate().skip(shared) {
        tb.apply(read_layer(b_src, i, d)?);
    }
    Ok(diff(&ta, &tb))
}

/// The paths added, removed and changed from `a` to `b`, sorted by path.
/// A path changes when its type, size, mode, owner, content, link target
/// or device differ (not its modification time); a directory whose
/// contents changed but not itself is not listed.
pub fn diff(a: &Tree, b: &Tree) -> Vec<Change> {
    let mut out = Vec::new();
    let mut xs = a.iter().peekable();
    let mut ys = b.iter().peekable();
    let path = |p: &[u8]| format!("/{}", String::from_utf8_lossy(p));
    loop {
        let order = match (xs.peek(), ys.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (p, m) = xs.next().expect("peeked");
                out.push(Change {
                    path: path(p),
                    change: ChangeKind::Removed,
                    before: Some(m.clone()),
                    after: None,
                });
            }
            std::cmp::Ordering::Greater => {
                let (p, m) = ys.next().expect("peeked");
                out.push(Change {
                    path: path(p),
                    change: ChangeKind::Added,
                    before: None,
                    after: Some(m.clone()),
                });
            }
            std::cmp::Ordering::Equal => {
                let (p, x) = xs.next().expect("peeked");
                let (_, y) = ys.next().expect("peeked");
                if x != y {
                    out.push(Change {
                        path: path(p),
                        change: ChangeKind::Changed,
                        before: Some(x.clone()),
                        after: Some(y.clone()),
                    });
                }
            }
        }
    }
    out
}
