//! The layer codec: deterministic tar writing, streaming compression with the
//! diff ID and blob digest computed in the same pass, and safe extraction.
//!
//! Writing: [`write_entries_layer`] and [`write_dir_layer`] turn an entry list
//! or a directory into one layer blob in a single streaming pass
//! (entries → tar → sha256 = diff ID → compressor → sha256 + size = blob
//! digest → sink). [`LayerWriter`] is the lower-level `Write` side of that
//! pipeline for callers that produce tar bytes themselves.
//!
//! Reading: [`open_layer`] detects gzip/zstd/plain by magic bytes;
//! [`extract`] applies a layer to a directory without letting any entry reach
//! outside it; [`flatten`] squashes a list of layers into one tar.
//!
//! The module does not know about the store, manifests or registries.

mod checked_tar;
mod compress;
mod entry;
mod error;
mod extract;
mod extract_nodes;
mod flatten;
mod gzip_parallel;
pub mod overlay;
mod read;
mod safe_path;
mod tar_writer;
mod walk;

pub use checked_tar::write_tar_layer;

/// The extended attribute in which an unprivileged kiln without a user
/// namespace records the owner (`uid:gid`, decimal) a RUN gave a file it
/// could not really chown (kiln-sandbox's traced isolation); the copy
/// snapshotter's differ writes it into the layer as the entry's owner, and
/// never as an xattr.
pub const OWNER_XATTR: &str = "user.kiln.owner";

/// The owner a layer gives the node at `host` (not followed) whose
/// metadata is `md`: the one recorded in [`OWNER_XATTR`], else, when kiln
/// runs unprivileged without a user namespace (so it owns every file it
/// made or unpacked), its own IDs stand for root, as in a user namespace;
/// else the node's own.
pub fn owner_on_disk(host: &std::path::Path, md: &std::fs::Metadata) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let mut buf = [0u8; 32];
    if let Ok(n) = rustix::fs::lgetxattr(host, OWNER_XATTR, &mut buf)
        && let Some(o) = parse_owner_xattr(&buf[..n])
    {
        return o;
    }
    let (uid, gid) = (md.uid(), md.gid());
    let (me, my_group) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if me == 0 {
        return (uid, gid);
    }
    (
        if uid == me { 0 } else { uid },
        if gid == my_group { 0 } else { gid },
    )
}

/// Parses an [`OWNER_XATTR`] value.
pub fn parse_owner_xattr(v: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (u, g) = s.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}
pub use compress::{LayerInfo, LayerWriter, write_dir_layer, write_entries_layer};
pub use entry::{Entry, EntryKind, FileSource, compare_tar_names, sort_entries};
pub use error::LayerError;
pub use extract::{
    ExtractError, ExtractOptions, ExtractReport, ExtractWarning, OverlayFormat, extract,
    extract_tar,
};
pub use flatten::{FlattenError, flatten};
pub use gzip_parallel::{GZIP_BLOCK_SIZE, ParallelGzEncoder};
pub use read::{decompress, detect_compression, layer_archive, open_layer, open_layer_buffered};
pub use safe_path::clean_entry_name;
pub use tar_writer::{TarWriter, pax_record};
pub use walk::{WalkOptions, host_entry, walk_dir};

use crate::media::Compression;

/// How a layer is written.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// Blob compression.
    pub compression: Compression,
    /// Compression level; `None` means the default (gzip 6, zstd 3).
    pub level: Option<u32>,
    /// Compression threads for gzip (0 = the machine's cores). The output
    /// bytes do not depend on it. zstd always uses one compression thread.
    pub threads: usize,
    /// `SOURCE_DATE_EPOCH`: mtimes later than this are clamped to it. The
    /// library never reads the environment; callers pass it in.
    pub source_date_epoch: Option<i64>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            level: None,
            threads: 0,
            source_date_epoch: None,
        }
    }
}

/// The number of threads to use when the caller said 0.
pub(crate) fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}
