//! `kiln diff`: the paths two images' filesystems disagree on.

use serde::Serialize;

use super::{FileMeta, Tree};

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
