//! [`Rewrite::squash`]: the layers above a base made into one, as `docker
//! build --squash` does: the base's layers stay, and one new layer holds
//! the difference between the base's filesystem and the image's.
//!
//! The image is unpacked once into scratch space (whiteouts applied); the
//! base's filesystem is read as metadata only ([`crate::contents::Tree`]).
//! The new layer holds every path of the image that the base lacks or has
//! otherwise (type, mode, owner, size, content, link target), and a
//! whiteout for each topmost path of the base the image no longer has, so
//! the base plus the new layer is the image's filesystem, file for file.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{LazyBlob, Rewrite};
use crate::History;
use crate::contents::{FileKind, FileMeta, Tree, read_layer};
use crate::layer::{
    Entry, EntryKind, ExtractOptions, ExtractWarning, LayerOptions, WalkOptions, clean_entry_name,
    extract, walk_dir, write_entries_layer,
};
use crate::transport::{Result, TransportError};

impl Rewrite<'_> {
    /// Replaces the layers above the bottom `keep` (the base's) with one
    /// layer, written under `scratch` to `file`; `history` records it, and
    /// the history entries of the squashed layers stay, marked as adding no
    /// layer. With fewer than two layers above the base, nothing changes.
    /// Returns the extraction warnings (device nodes an unprivileged user
    /// cannot make: their paths are never whited out).
    pub fn squash(
        &mut self,
        keep: usize,
        scratch: &Path,
        file: PathBuf,
        opts: &LayerOptions,
        history: History,
    ) -> Result<Vec<ExtractWarning>> {
        let n = self.image.layers.len();
        if keep > n {
            return Err(TransportError::Invalid(format!(
                "squash: the base has {keep} layers, the image only {n}"
            )));
        }
        if n - keep < 2 {
            return Ok(Vec::new());
        }
        let mut base = Tree::new();
        for (i, d) in self.image.layers[..keep].iter().enumerate() {
            base.apply(read_layer(self.src, i, d)?);
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-squash-")
            .tempdir_in(scratch)
            .map_err(TransportError::io(format!(
                "scratch in {}",
                scratch.display()
            )))?;
        let mut warnings = Vec::new();
        for (i, d) in self.image.layers.iter().enumerate() {
            let rep = extract(
                LazyBlob::new(self.src, d.clone()),
                dir.path(),
                &ExtractOptions::default(),
            )
            .map_err(|e| TransportError::Invalid(format!("squash: layer {i}: {e}")))?;
            warnings.extend(rep.warnings);
        }
        let skipped: HashSet<Vec<u8>> = warnings
            .iter()
            .filter_map(|w| clean_entry_name(w.entry.as_bytes()).ok())
            .collect();
        let entries = changed_entries(dir.path(), &base, &skipped)?;
        let out = std::fs::File::create(&file)
            .map_err(TransportError::io(format!("create {}", file.display())))?;
        let (out, info) = write_entries_layer(entries, opts, io::BufWriter::new(out))
            .map_err(|e| TransportError::Invalid(format!("squash: {e}")))?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(TransportError::io(format!("write {}", file.display())))?;
        dir.close()
            .map_err(TransportError::io("remove the squash scratch"))?;
        self.image.layers.truncate(keep);
        self.image.config.rootfs.diff_ids.truncate(keep);
        let mut made = 0;
        for h in &mut self.image.config.history {
            if !h.empty_layer {
                if made >= keep {
                    h.empty_layer = true;
                }
                made += 1;
            }
        }
        self.append_layer(file, &info, history);
        Ok(warnings)
    }
}

/// The entries of the tree at `root` that `base` lacks or has otherwise,
/// and whiteouts for the topmost paths of `base` that `root` lacks.
fn changed_entries(root: &Path, base: &Tree, skipped: &HashSet<Vec<u8>>) -> Result<Vec<Entry>> {
    let walked = walk_dir(root, &WalkOptions::default())
        .map_err(|e| TransportError::Invalid(format!("squash: {e}")))?;
    let mut present: HashSet<Vec<u8>> = HashSet::new();
    let mut dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut keep: HashSet<Vec<u8>> = HashSet::new();
    for e in &walked {
        let p = e.path.as_os_str().as_bytes().to_vec();
        if matches!(e.kind, EntryKind::Dir) {
            dirs.insert(p.clone());
        }
        let same = match base.get(&p) {
            Some(b) => same_as_base(root, e, b)?,
            None => false,
        };
        if !same {
            keep.insert(p.clone());
        }
        present.insert(p);
    }
    // A hard link's target goes with it: the layer must hold what it names.
    for e in &walked {
        if let EntryKind::Hardlink { target } = &e.kind
            && keep.contains(e.path.as_os_str().as_bytes())
        {
            keep.insert(target.as_os_str().as_bytes().to_vec());
        }
    }
    let mut out: Vec<Entry> = walked
        .into_iter()
        .filter(|e| keep.contains(e.path.as_os_str().as_bytes()))
        .collect();
    for (p, _) in base.iter() {
        if present.contains(p) || skipped.contains(p) {
            continue;
        }
        let topmost = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => dirs.contains(&p[..i]),
            None => true,
        };
        if topmost {
            out.push(Entry::whiteout(PathBuf::from(std::ffi::OsStr::from_bytes(
                p,
            ))));
        }
    }
    Ok(out)
}

/// Whether the walked entry `e` is what the base has at its path.
fn same_as_base(root: &Path, e: &Entry, b: &FileMeta) -> Result<bool> {
    if (e.mode, e.uid, e.gid) != (b.mode, b.uid, b.gid) {
        return Ok(false);
    }
    let host = root.join(&e.path);
    Ok(match &e.kind {
        EntryKind::Dir => b.kind == FileKind::Dir,
        EntryKind::Symlink { target } => {
            b.kind == FileKind::Symlink
                && b.link.as_deref().map(str::as_bytes) == Some(target.as_os_str().as_bytes())
        }
        EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
            let size = std::fs::symlink_metadata(&host)
                .map_err(TransportError::io(format!("stat {}", host.display())))?
                .size();
            b.kind == FileKind::File
                && b.size == size
                && b.digest.as_ref() == Some(&content_digest(&host)?)
        }
        EntryKind::CharDevice { major, minor } => {
            b.kind == FileKind::Char && b.device == Some((*major, *minor))
        }
        EntryKind::BlockDevice { major, minor } => {
            b.kind == FileKind::Block && b.device == Some((*major, *minor))
        }
        EntryKind::Fifo => b.kind == FileKind::Fifo,
        EntryKind::Whiteout | EntryKind::OpaqueWhiteout => false,
    })
}

fn content_digest(path: &Path) -> Result<crate::Digest> {
    let mut f = std::fs::File::open(path)
        .map_err(TransportError::io(format!("open {}", path.display())))?;
    let mut h = crate::Hasher::sha256();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = f
            .read(&mut buf)
            .map_err(TransportError::io(format!("read {}", path.display())))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finish())
}
