//! Reading one path of a layer stack without mounting it: the overlay
//! lookup rules (whiteouts hide, opaque directories stop the descent),
//! applied to layer directories top first. The build uses it to read
//! `/etc/passwd` for `--chown` and to see which directories already exist.

use std::fs;
use std::path::{Component, Path, PathBuf};

use kiln_image::layer::overlay::{is_opaque, is_whiteout};

/// The host path of the version of `path` (absolute or relative to the
/// image root) that the merged view would show, or `None`. Symlinks along
/// the way are not followed: a path through a symlink is `None`, which
/// keeps every lookup inside the layer directories.
pub fn lookup(layers_top_first: &[PathBuf], path: &Path) -> Option<PathBuf> {
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect();
    'layers: for layer in layers_top_first {
        let mut cur = layer.clone();
        // An opaque directory on the way hides every lower layer's version.
        let mut hidden_below = false;
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let Ok(m) = fs::symlink_metadata(&cur) else {
                if hidden_below {
                    return None;
                }
                continue 'layers;
            };
            if is_whiteout(&m) {
                return None;
            }
            let last = i + 1 == comps.len();
            if last {
                return Some(cur);
            }
            if !m.is_dir() {
                return None;
            }
            hidden_below |= is_opaque(&cur);
        }
        if comps.is_empty() {
            return Some(layer.clone());
        }
    }
    None
}
