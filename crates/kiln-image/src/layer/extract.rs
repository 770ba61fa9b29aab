//! Safe extraction of a layer into a directory, applying whiteouts.
//!
//! Confinement (see `safe_path`): every entry's parent directory is opened
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from an fd of the
//! target, and the final component is created, replaced or changed with
//! `*at` syscalls that never follow a symlink (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `linkat` without `AT_SYMLINK_FOLLOW`). Names that
//! climb above the root with `..` or contain NUL are rejected; absolute
//! names are taken as relative to the target. Symlink targets may be any
//! text: they are created but never followed out of the target.
//!
//! Semantics (Docker's `UnpackLayer`, containerd's `applyNaive`):
//! - An existing path is replaced (recursively if it is a directory),
//!   except that a directory entry over an existing directory merges.
//!   Duplicate entries: the last one wins.
//! - `.wh.<name>` deletes `<name>` from lower layers (content that this
//!   layer created is kept); `.wh..wh..opq` empties its directory of
//!   lower-layer content but keeps what this layer put there, wherever the
//!   marker appears in the layer.
//! - Hard links must point at an existing non-directory inside the target.
//! - Directories get their mode and mtime after all entries (a read-only
//!   directory must still receive its children; children change the
//!   parent's mtime).
//! - Device nodes that cannot be created (EPERM, unprivileged) are skipped
//!   with a warning, like rootless Docker. Failed xattrs are warnings.
//! - Entry sizes above `max_entry_size` and data shorter than the header
//!   claims are errors naming the entry.
//!
//! With `overlay_whiteouts`, whiteouts are kept in overlayfs form (a 0/0
//! character device; the `opaque` xattr on the directory) instead of being
//! applied, for a snapshotter that stacks layer directories.
//!
//! Not done here: ownership remapping (user namespaces), PAX-format sparse
//! files (rejected; GNU `S` sparse entries are read and written densely).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fs::Timespec;
use tar::EntryType;

use super::entry::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::error::show;
use super::extract_nodes::replace_existing;
use super::read::open_layer;
use super::safe_path::{Root, clean_entry_name, split_parent};
use crate::digest::{Digest, HashingReader};
use crate::media::Compression;

/// Which xattr namespace overlayfs whiteouts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayFormat {
    /// `trusted.overlay.*` (overlayfs mounted by real root).
    Trusted,
    /// `user.overlay.*` (overlayfs with `userxattr`, rootless).
    User,
}

impl OverlayFormat {
    pub(crate) fn opaque_xattr(self) -> &'static str {
        match self {
            OverlayFormat::Trusted => super::overlay::TRUSTED_OPAQUE_XATTR,
            OverlayFormat::User => super::overlay::USER_OPAQUE_XATTR,
        }
    }
}

/// Options of [`extract`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Set owners from the tar (default: only when running as root).
    pub chown: bool,
    /// Behave as an unprivileged user for device nodes: skip them with a
    /// warning instead of trying `mknod`.
    pub skip_devices: bool,
    /// Keep whiteouts in overlayfs form instead of applying them.
    pub overlay_whiteouts: Option<OverlayFormat>,
    /// Restore extended attributes (best effort).
    pub xattrs: bool,
    /// Largest entry size accepted (default 1 TiB): bigger claims are
    /// rejected before any data is read.
    pub max_entry_size: u64,
    /// The diff ID the layer claims to have ([`extract`] only). The whole
    /// uncompressed stream is hashed while it is unpacked and a different
    /// digest is an error: an image config's diff IDs are the image's word,
    /// and a directory keyed by one must hold what it names.
    pub expect_diff_id: Option<Digest>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            chown: rustix::process::geteuid().is_root(),
            skip_devices: false,
            overlay_whiteouts: None,
            xattrs: true,
            max_entry_size: 1 << 40,
            expect_diff_id: None,
        }
    }
}

/// Something that was not applied but did not fail the extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractWarning {
    pub entry: String,
    pub message: String,
}

/// What [`extract`] did.
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    pub warnings: Vec<ExtractWarning>,
    /// The compression found by magic bytes (`None` for [`extract_tar`]).
    pub compression: Option<Compression>,
}

/// An extraction error. Everything caused by one entry names it.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("extraction target {path:?}: {cause}")]
    Target { path: PathBuf, cause: io::Error },
    #[error("layer entry {entry:?} rejected: {reason}")]
    Rejected { entry: String, reason: String },
    #[error("layer entry {entry:?}: archive truncated: {detail}")]
    Truncated { entry: String, detail: String },
    #[error("layer entry {entry:?}: {op}: {cause}")]
    Io {
        entry: String,
        op: &'static str,
        cause: io::Error,
    },
    #[error("layer archive truncated or corrupt after entry {after:?}: {cause}")]
    Archive { after: String, cause: io::Error },
    #[error("layer content is {actual}, not the diff ID {expected} the image config claims")]
    DiffIdMismatch { expected: Digest, actual: Digest },
}

impl ExtractError {
    /// The tar entry the error is about (for `Archive`, the last good one).
    pub fn entry(&self) -> Option<&str> {
        match self {
            ExtractError::Target { .. } | ExtractError::DiffIdMismatch { .. } => None,
            ExtractError::Rejected { entry, .. }
            | ExtractError::Truncated { entry, .. }
            | ExtractError::Io { entry, .. } => Some(entry),
            ExtractError::Archive { after, .. } => Some(after),
        }
    }
}

/// An error of one entry before its name is attached.
pub(super) enum Fail {
    Reject(String),
    Truncated(String),
    Io(&'static str, io::Error),
}

impl Fail {
    pub(super) fn named(self, entry: &str) -> ExtractError {
        let entry = entry.to_string();
        match self {
            Fail::Reject(reason) => ExtractError::Rejected { entry, reason },
            Fail::Truncated(detail) => ExtractError::Truncated { entry, detail },
            Fail::Io(op, cause) => ExtractError::Io { entry, op, cause },
        }
    }
}

pub(super) fn io_op<E: Into<io::Error>>(op: &'static str) -> impl FnOnce(E) -> Fail {
    move |e| Fail::Io(op, e.into())
}

/// Decompresses (gzip, zstd or plain, by magic bytes) and extracts.
pub fn extract<R: Read>(
    layer: R,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    let (c, rd) = open_layer(layer).map_err(|cause| ExtractError::Archive {
        after: "(start of archive)".into(),
        cause,
    })?;
    let mut rep = match &opts.expect_diff_id {
        None => extract_tar(rd, target, opts)?,
        Some(expected) => {
            let mut hashed = HashingReader::new(rd, expected.hasher());
            let rep = extract_tar(&mut hashed, target, opts)?;
            // tar stops at its end marker; the diff ID covers the padding too.
            io::copy(&mut hashed, &mut io::sink()).map_err(|cause| ExtractError::Archive {
                after: "(end of archive)".into(),
                cause,
            })?;
            let (_, actual, _) = hashed.finish();
            if actual != *expected {
                return Err(ExtractError::DiffIdMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            rep
        }
    };
    rep.compression = Some(c);
    Ok(rep)
}

/// Metadata of one entry, from its header and PAX records.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: Timespec,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
}

pub(super) struct DirMeta {
    pub(super) mode: u32,
    pub(super) mtime: Timespec,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

pub(super) struct State<'o> {
    pub(super) root: Root,
    pub(super) opts: &'o ExtractOptions,
    /// Paths this layer created, and all their ancestors: what opaque
    /// markers and whiteouts must keep.
    pub(super) layer_paths: HashSet<Vec<u8>>,
    pub(super) dirs: HashMap<Vec<u8>, DirMeta>,
    pub(super) report: ExtractReport,
    pub(super) buf: Vec<u8>,
}

/// Extracts an uncompressed tar stream.
pub fn extract_tar<R: Read>(
    tar: R,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    let root = Root::open(target).map_err(|cause| ExtractError::Target {
        path: target.to_path_buf(),
        cause,
    })?;
    let mut st = State {
        root,
        opts,
        layer_paths: HashSet::new(),
        dirs: HashMap::new(),
        report: ExtractReport::default(),
        buf: vec![0; 128 * 1024],
    };
    let mut ar = tar::Archive::new(tar);
    let mut last = String::from("(start of archive)");
    let entries = ar.entries().map_err(|cause| ExtractError::Archive {
        after: last.clone(),
        cause,
    })?;
    for ent in entries {
        let mut ent = ent.map_err(|cause| ExtractError::Archive {
            after: last.clone(),
            cause,
        })?;
        let raw = ent.path_bytes().into_owned();
        let shown = show(&raw);
        st.apply(&mut ent, &raw).map_err(|f| f.named(&shown))?;
        st.report.entries += 1;
        last = shown;
    }
    st.finish_dirs()?;
    Ok(st.report)
}

fn timespec(secs: i64, nanos: i64) -> Timespec {
    Timespec {
        tv_sec: secs.max(0),
        tv_nsec: nanos,
    }
}

/// Parses a PAX time (`123` or `123.456`); negative times become 0.
fn parse_pax_time(v: &str) -> Option<Timespec> {
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(timespec(secs, nanos))
}

impl State<'_> {
    pub(super) fn warn(&mut self, entry: &[u8], message: String) {
        self.report.warnings.push(ExtractWarning {
            entry: show(entry),
            message,
        });
    }

    pub(super) fn mark(&mut self, clean: &[u8]) {
        let mut p = clean;
        loop {
            if !self.layer_paths.insert(p.to_vec()) {
                break; // its ancestors are in already
            }
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }

    fn apply<R: Read>(&mut self, ent: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<(), Fail> {
        let mut ty = ent.header().entry_type();
        // Old (pre-POSIX) archives mark directories only by a trailing `/`
        // on a regular entry; Go's archive/tar reads them as directories.
        if matches!(ty, EntryType::Regular | EntryType::Continuous) && raw.ends_with(b"/") {
            ty = EntryType::Directory;
        }
        if matches!(ty, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let clean = clean_entry_name(raw).map_err(|r| Fail::Reject(r.into()))?;
        let size = ent.size();
        if size > self.opts.max_entry_size {
            return Err(Fail::Reject(format!(
                "claimed size {size} exceeds the limit of {} bytes",
                self.opts.max_entry_size
            )));
        }
        if clean.is_empty() {
            return Ok(()); // the root itself: layers do not change it
        }
        let (parent, base) = split_parent(&clean);
        if let Some(victim) = base.strip_prefix(WHITEOUT_PREFIX) {
            if base == OPAQUE_MARKER {
                return self.opaque(parent);
            }
            if victim.is_empty() || victim == b"." || victim == b".." {
                return Err(Fail::Reject("whiteout of an invalid name".into()));
            }
            return self.whiteout(parent, victim);
        }
        let meta = self.meta(ent)?;
        self.mark(&clean);
        let (pfd, _) = self
            .root
            .ensure_dir(parent)
            .map_err(io_op("opening the parent directory"))?;
        match ty {
            EntryType::Directory => self.make_dir(&pfd, base, &clean, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.make_file(&pfd, base, ent, size, &meta)
            }
            EntryType::Symlink => {
                let target = ent
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(Fail::Reject("empty symlink target or NUL in it".into()));
                }
                replace_existing(&pfd, base, false)?;
                rustix::fs::symlinkat(&target[..], &pfd, base).map_err(io_op("symlink"))?;
                self.finish_node(&pfd, base, &meta, false)
            }
            EntryType::Link => self.make_hardlink(&pfd, base, &clean, ent),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(&pfd, base, &clean, ent, &meta)
            }
            other => {
                self.warn(raw, format!("unsupported entry type {other:?}, skipped"));
                Ok(())
            }
        }
    }

    fn meta<R: Read>(&self, ent: &mut tar::Entry<'_, R>) -> Result<Meta, Fail> {
        let h = ent.header();
        let bad = |what: &str| Fail::Reject(format!("invalid {what} in header"));
        let mut m = Meta {
            mode: h.mode().map_err(|_| bad("mode"))? & 0o7777,
            uid: h.uid().map_err(|_| bad("uid"))?,
            gid: h.gid().map_err(|_| bad("gid"))?,
            mtime: timespec(h.mtime().map_err(|_| bad("mtime"))? as i64, 0),
            xattrs: Vec::new(),
        };
        let exts = ent.pax_extensions().map_err(io_op("PAX header"))?;
        for ext in exts.into_iter().flatten() {
            let ext = ext.map_err(io_op("PAX header"))?;
            let Ok(key) = ext.key() else { continue };
            let num = || -> Result<u64, Fail> {
                ext.value()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| Fail::Reject(format!("invalid PAX {key}")))
            };
            match key {
                "uid" => m.uid = num()?,
                "gid" => m.gid = num()?,
                "mtime" => {
                    m.mtime = ext
                        .value()
                        .ok()
                        .and_then(parse_pax_time)
                        .ok_or_else(|| Fail::Reject("invalid PAX mtime".into()))?
                }
                // PAX sparse files (GNU 0.x/1.0) would be written with
                // their sparse map as content: refuse instead.
                _ if key.starts_with("GNU.sparse.") => {
                    return Err(Fail::Reject("PAX sparse files are not supported".into()));
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        m.xattrs
                            .push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        assert_eq!(parse_pax_time("-5").unwrap().tv_sec, 0);
        assert!(parse_pax_time("x").is_none());
    }
}
