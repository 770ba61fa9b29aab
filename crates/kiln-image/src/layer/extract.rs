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
//! Not done here: ownership remapping (user namespaces) and sparse output.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::entry::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::error::show;
use super::read::open_layer;
use super::safe_path::{
    Root, clean_entry_name, is_dir, list_dir, lstat_at, remove_all_at, split_parent,
};
use super::walk::is_overlay_xattr;
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
    fn opaque_xattr(self) -> &'static str {
        match self {
            OverlayFormat::Trusted => "trusted.overlay.opaque",
            OverlayFormat::User => "user.overlay.opaque",
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
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            chown: rustix::process::geteuid().is_root(),
            skip_devices: false,
            overlay_whiteouts: None,
            xattrs: true,
            max_entry_size: 1 << 40,
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
    #[error("extraction target {path:?}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?} rejected: {reason}")]
    Rejected { entry: String, reason: String },
    #[error("layer entry {entry:?}: archive truncated: {detail}")]
    Truncated { entry: String, detail: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer archive truncated or corrupt after entry {after:?}: {source}")]
    Archive {
        after: String,
        #[source]
        source: io::Error,
    },
}

impl ExtractError {
    /// The tar entry the error is about (for `Archive`, the last good one).
    pub fn entry(&self) -> Option<&str> {
        match self {
            ExtractError::Target { .. } => None,
            ExtractError::Rejected { entry, .. }
            | ExtractError::Truncated { entry, .. }
            | ExtractError::Io { entry, .. } => Some(entry),
            ExtractError::Archive { after, .. } => Some(after),
        }
    }
}

/// An error of one entry before its name is attached.
enum Fail {
    Reject(String),
    Truncated(String),
    Io(&'static str, io::Error),
}

impl Fail {
    fn named(self, entry: &str) -> ExtractError {
        let entry = entry.to_string();
        match self {
            Fail::Reject(reason) => ExtractError::Rejected { entry, reason },
            Fail::Truncated(detail) => ExtractError::Truncated { entry, detail },
            Fail::Io(op, source) => ExtractError::Io { entry, op, source },
        }
    }
}

fn io_op<E: Into<io::Error>>(op: &'static str) -> impl FnOnce(E) -> Fail {
    move |e| Fail::Io(op, e.into())
}

/// Decompresses (gzip, zstd or plain, by magic bytes) and extracts.
pub fn extract<R: Read>(
    layer: R,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    let (c, rd) = open_layer(layer).map_err(|source| ExtractError::Archive {
        after: "(start of archive)".into(),
        source,
    })?;
    let mut rep = extract_tar(rd, target, opts)?;
    rep.compression = Some(c);
    Ok(rep)
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct DirMeta {
    mode: u32,
    mtime: Timespec,
    dev: u64,
    ino: u64,
}

struct State<'o> {
    root: Root,
    opts: &'o ExtractOptions,
    /// Paths this layer created, and all their ancestors: what opaque
    /// markers and whiteouts must keep.
    layer_paths: HashSet<Vec<u8>>,
    dirs: HashMap<Vec<u8>, DirMeta>,
    report: ExtractReport,
    buf: Vec<u8>,
}

/// Extracts an uncompressed tar stream.
pub fn extract_tar<R: Read>(
    tar: R,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    let root = Root::open(target).map_err(|source| ExtractError::Target {
        path: target.to_path_buf(),
        source,
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
    let entries = ar.entries().map_err(|source| ExtractError::Archive {
        after: last.clone(),
        source,
    })?;
    for ent in entries {
        let mut ent = ent.map_err(|source| ExtractError::Archive {
            after: last.clone(),
            source,
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
    fn warn(&mut self, entry: &[u8], message: String) {
        self.report.warnings.push(ExtractWarning {
            entry: show(entry),
            message,
        });
    }

    fn mark(&mut self, clean: &[u8]) {
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
        let ty = ent.header().entry_type();
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

    fn make_dir(&mut self, pfd: &OwnedFd, base: &[u8], clean: &[u8], m: &Meta) -> Result<(), Fail> {
        if !replace_existing(pfd, base, true)? {
            // Owner-only until the end, when the real mode is set.
            rustix::fs::mkdirat(pfd, base, Mode::from_raw_mode(0o700)).map_err(io_op("mkdir"))?;
        }
        let dfd = rustix::fs::openat(
            pfd,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_op("opening the directory"))?;
        self.chown_fd(&dfd, m)?;
        self.set_xattrs_fd(&dfd, clean, m);
        let st = rustix::fs::fstat(&dfd).map_err(io_op("stat"))?;
        self.dirs.insert(
            clean.to_vec(),
            DirMeta {
                mode: m.mode,
                mtime: m.mtime,
                dev: st.st_dev,
                ino: st.st_ino,
            },
        );
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        ent: &mut tar::Entry<'_, R>,
        size: u64,
        m: &Meta,
    ) -> Result<(), Fail> {
        replace_existing(pfd, base, false)?;
        let fd = rustix::fs::openat(
            pfd,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_op("creating the file"))?;
        let mut f = File::from(fd);
        let mut copied = 0u64;
        loop {
            let n = match ent.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(Fail::Io("reading entry data", e)),
            };
            f.write_all(&self.buf[..n]).map_err(io_op("writing"))?;
            copied += n as u64;
        }
        if copied != size {
            return Err(Fail::Truncated(format!(
                "header claims {size} bytes, archive has {copied}"
            )));
        }
        self.report.bytes += size;
        self.chown_fd(&f, m)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(m.mode)).map_err(io_op("chmod"))?;
        // After chown/chmod, which clear security.capability.
        let name = ent.path_bytes().into_owned();
        self.set_xattrs_fd(&f, &name, m);
        let ts = Timestamps {
            last_access: m.mtime,
            last_modification: m.mtime,
        };
        rustix::fs::futimens(&f, &ts).map_err(io_op("setting mtime"))?;
        Ok(())
    }

    fn make_hardlink<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        clean: &[u8],
        ent: &mut tar::Entry<'_, R>,
    ) -> Result<(), Fail> {
        let raw = ent
            .link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let target = clean_entry_name(&raw)
            .map_err(|r| Fail::Reject(format!("hard link target {:?}: {r}", show(&raw))))?;
        if target.is_empty() || target == clean {
            return Err(Fail::Reject("hard link to the root or to itself".into()));
        }
        let (tparent, tbase) = split_parent(&target);
        let tfd = self
            .root
            .open_dir(tparent, true)
            .map_err(io_op("opening the hard link target's directory"))?;
        match lstat_at(&tfd, tbase).map_err(io_op("hard link target"))? {
            None => {
                return Err(Fail::Reject(format!(
                    "hard link target {:?} does not exist",
                    show(&target)
                )));
            }
            Some(st) if is_dir(&st) => {
                return Err(Fail::Reject("hard link to a directory".into()));
            }
            Some(_) => {}
        }
        replace_existing(pfd, base, false)?;
        // Flags 0: a symlink target is linked itself, never followed.
        rustix::fs::linkat(&tfd, tbase, pfd, base, AtFlags::empty()).map_err(io_op("link"))?;
        Ok(())
    }

    fn make_node<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        clean: &[u8],
        ent: &mut tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), Fail> {
        let h = ent.header();
        let ty = h.entry_type();
        let (kind, dev) = match ty {
            EntryType::Fifo => (FileType::Fifo, 0),
            _ => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let kind = if ty == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (kind, rustix::fs::makedev(major, minor))
            }
        };
        if kind != FileType::Fifo && self.opts.skip_devices {
            self.warn(clean, "device node skipped (unprivileged)".into());
            return Ok(());
        }
        replace_existing(pfd, base, false)?;
        match rustix::fs::mknodat(pfd, base, kind, Mode::from_raw_mode(m.mode), dev) {
            Ok(()) => {}
            Err(Errno::PERM) if kind != FileType::Fifo => {
                self.warn(clean, "device node skipped: mknod not permitted".into());
                return Ok(());
            }
            Err(e) => return Err(Fail::Io("mknod", e.into())),
        }
        self.finish_node(pfd, base, m, true)
    }

    /// Owner, mode, xattrs and mtime of a node that has no fd of its own
    /// (symlink, device, fifo), all without following a symlink.
    fn finish_node(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        m: &Meta,
        chmod: bool,
    ) -> Result<(), Fail> {
        if self.opts.chown {
            let (u, g) = ids(m)?;
            rustix::fs::chownat(pfd, base, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io_op("lchown"))?;
        }
        if chmod {
            // chmodat follows symlinks; the node was just made by mknodat
            // and checked not to be one.
            let st = lstat_at(pfd, base).map_err(io_op("stat"))?;
            if let Some(st) = st
                && st.st_mode & libc::S_IFMT != libc::S_IFLNK
                && st.st_mode & 0o7777 != m.mode
            {
                rustix::fs::chmodat(pfd, base, Mode::from_raw_mode(m.mode), AtFlags::empty())
                    .map_err(io_op("chmod"))?;
            }
        }
        if self.opts.xattrs && !m.xattrs.is_empty() {
            let mut path = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            path.extend_from_slice(base);
            for (k, v) in &m.xattrs {
                if is_overlay_xattr(k.as_bytes()) {
                    continue;
                }
                if let Err(e) = rustix::fs::lsetxattr(&path[..], k.as_str(), v, XattrFlags::empty())
                {
                    self.warn(base, format!("xattr {k} not set: {e}"));
                }
            }
        }
        let ts = Timestamps {
            last_access: m.mtime,
            last_modification: m.mtime,
        };
        rustix::fs::utimensat(pfd, base, &ts, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_op("setting mtime"))?;
        Ok(())
    }

    fn chown_fd(&self, fd: impl AsFd, m: &Meta) -> Result<(), Fail> {
        if self.opts.chown {
            let (u, g) = ids(m)?;
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(io_op("chown"))?;
        }
        Ok(())
    }

    fn set_xattrs_fd(&mut self, fd: impl AsFd, entry: &[u8], m: &Meta) {
        if !self.opts.xattrs {
            return;
        }
        for (k, v) in &m.xattrs {
            if is_overlay_xattr(k.as_bytes()) {
                self.warn(entry, format!("overlayfs xattr {k} in a layer, ignored"));
                continue;
            }
            if let Err(e) = rustix::fs::fsetxattr(&fd, k.as_str(), v, XattrFlags::empty()) {
                self.warn(entry, format!("xattr {k} not set: {e}"));
            }
        }
    }

    fn whiteout(&mut self, parent: &[u8], victim: &[u8]) -> Result<(), Fail> {
        let mut vpath = parent.to_vec();
        if !vpath.is_empty() {
            vpath.push(b'/');
        }
        vpath.extend_from_slice(victim);
        if self.layer_paths.contains(&vpath) {
            return Ok(()); // whiteouts only hide lower layers
        }
        if self.opts.overlay_whiteouts.is_some() {
            self.mark(&vpath);
            let (pfd, _) = self
                .root
                .ensure_dir(parent)
                .map_err(io_op("opening the parent directory"))?;
            replace_existing(&pfd, victim, false)?;
            rustix::fs::mknodat(&pfd, victim, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(io_op("creating the overlay whiteout"))?;
            return Ok(());
        }
        let pfd = match self.root.open_dir(parent, true) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(()); // nothing there to delete
            }
            Err(e) => return Err(Fail::Io("opening the parent directory", e)),
        };
        remove_all_at(&pfd, victim).map_err(io_op("applying the whiteout"))
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<(), Fail> {
        if let Some(fmt) = self.opts.overlay_whiteouts {
            if !dir.is_empty() {
                self.mark(dir);
            }
            let (fd, _) = self
                .root
                .ensure_dir(dir)
                .map_err(io_op("opening the opaque directory"))?;
            rustix::fs::fsetxattr(&fd, fmt.opaque_xattr(), b"y", XattrFlags::empty())
                .map_err(io_op("setting the opaque xattr"))?;
            return Ok(());
        }
        let fd = match self.root.open_dir(dir, true) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(Fail::Io("opening the opaque directory", e)),
        };
        self.clear_lower(&fd, dir)
            .map_err(io_op("applying the opaque whiteout"))
    }

    /// Removes everything under `fd` that this layer did not create.
    fn clear_lower(&self, fd: &OwnedFd, path: &[u8]) -> io::Result<()> {
        for name in list_dir(fd)? {
            let mut child = path.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if !self.layer_paths.contains(&child) {
                remove_all_at(fd, &name)?;
            } else if lstat_at(fd, &name)?.is_some_and(|st| is_dir(&st)) {
                let sub = rustix::fs::openat(
                    fd,
                    &name[..],
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.clear_lower(&sub, &child)?;
            }
        }
        Ok(())
    }

    /// Directory modes and mtimes, deepest first, after all contents.
    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        let mut dirs: Vec<_> = self.dirs.drain().collect();
        dirs.sort_by(|a, b| {
            let depth = |p: &[u8]| p.iter().filter(|&&c| c == b'/').count();
            depth(&b.0).cmp(&depth(&a.0)).then_with(|| a.0.cmp(&b.0))
        });
        for (path, d) in dirs {
            let fd = match self.root.open_dir(&path, false) {
                Ok(fd) => fd,
                // Replaced later in the layer by a non-directory or removed.
                Err(_) => continue,
            };
            let named = |op, e: Errno| Fail::Io(op, e.into()).named(&show(&path));
            let st = rustix::fs::fstat(&fd).map_err(|e| named("stat", e))?;
            if st.st_dev != d.dev || st.st_ino != d.ino {
                continue; // not the directory this entry made
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(|e| named("chmod", e))?;
            let ts = Timestamps {
                last_access: d.mtime,
                last_modification: d.mtime,
            };
            rustix::fs::futimens(&fd, &ts).map_err(|e| named("setting mtime", e))?;
        }
        Ok(())
    }
}

fn ids(m: &Meta) -> Result<(rustix::fs::Uid, rustix::fs::Gid), Fail> {
    let u = u32::try_from(m.uid).map_err(|_| Fail::Reject(format!("uid {} too large", m.uid)))?;
    let g = u32::try_from(m.gid).map_err(|_| Fail::Reject(format!("gid {} too large", m.gid)))?;
    Ok((rustix::fs::Uid::from_raw(u), rustix::fs::Gid::from_raw(g)))
}

/// Clears the way for a new entry at `name`: returns true when an existing
/// directory is kept (directory over directory), otherwise removes what is
/// there (recursively for a directory).
fn replace_existing(pfd: &OwnedFd, name: &[u8], new_is_dir: bool) -> Result<bool, Fail> {
    match lstat_at(pfd, name).map_err(io_op("stat"))? {
        None => Ok(false),
        Some(st) if is_dir(&st) && new_is_dir => Ok(true),
        Some(_) => {
            remove_all_at(pfd, name).map_err(io_op("replacing the existing path"))?;
            Ok(false)
        }
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
