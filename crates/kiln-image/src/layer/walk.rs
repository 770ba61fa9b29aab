//! Turns a directory tree into a list of layer entries (metadata only; file
//! contents are read later, while the tar is written).
//!
//! What it does: walks without following symlinks, in the layer ordering,
//! records mode (with setuid/setgid/sticky), uid, gid, mtime (seconds),
//! devices, fifos and symlink targets; finds hard links by (device, inode)
//! — the first path in layer order carries the content, later ones become
//! hard link entries pointing at it; reads xattrs (including
//! `security.capability`), skipping overlayfs' own `trusted.overlay.*` and
//! `user.overlay.*`. Sockets are skipped (they cannot be in a layer).
//!
//! With `overlay` set, the tree is read as an overlayfs upper directory:
//! a 0/0 character device becomes a whiteout entry and a directory whose
//! `<ns>.overlay.opaque` xattr is `y` gets an opaque-whiteout entry.
//!
//! What it does not do: the directory itself is not an entry (layers have
//! no root entry); overlayfs redirect/metacopy upper dirs are not
//! understood (kiln does not mount with those features).
//!
//! Memory: the entry list is held (a few hundred bytes per entry), the file
//! contents never are.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::OverlayFormat;
use super::entry::{Entry, EntryKind, FileSource};
use super::error::{LayerError, show};

/// Options of [`walk_dir`].
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Record extended attributes (default true).
    pub xattrs: bool,
    /// Read the tree as an overlayfs upper dir (see the module doc).
    pub overlay: Option<OverlayFormat>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            xattrs: true,
            overlay: None,
        }
    }
}

/// xattr namespaces that are overlayfs metadata, never layer content.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Lists the entries of the tree under `dir`, in layer order.
pub fn walk_dir(dir: &Path, opts: &WalkOptions) -> Result<Vec<Entry>, LayerError> {
    let mut out = Vec::new();
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for item in walker {
        let item = item.map_err(|e| {
            let p = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            LayerError::Io {
                path: p,
                cause: e.into(),
            }
        })?;
        let host = item.path();
        let rel = host
            .strip_prefix(dir)
            .map_err(|_| LayerError::Invalid {
                path: host.display().to_string(),
                reason: "walked outside the root".into(),
            })?
            .to_path_buf();
        let md = std::fs::symlink_metadata(host)
            .map_err(|e| LayerError::io(host.as_os_str().as_bytes(), e))?;
        let ft = md.file_type();
        if opts.overlay.is_some() && ft.is_char_device() && md.rdev() == 0 {
            out.push(Entry::whiteout(rel));
            continue;
        }
        if let (Some(fmt), true) = (opts.overlay, ft.is_dir())
            && get_xattr(host, fmt.opaque_xattr().as_bytes()).is_ok_and(|v| v == b"y")
        {
            out.push(Entry::opaque_whiteout(rel.clone()));
        }
        let key = (md.dev(), md.ino());
        let link_to = (!ft.is_dir() && md.nlink() > 1)
            .then(|| links.get(&key).cloned())
            .flatten();
        if !ft.is_dir() && md.nlink() > 1 && link_to.is_none() {
            links.insert(key, rel.clone());
        }
        if let Some(e) = host_entry(host, rel, &md, link_to, opts.xattrs)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// The layer entry of one host path whose (not followed) metadata is `md`,
/// named `rel` in the layer: what [`walk_dir`] yields for it, for callers
/// that pick the paths themselves (a diff that knows what changed).
/// `link_to` makes a file a hard link to that earlier layer path. `None`
/// for sockets, which cannot be in a layer.
pub fn host_entry(
    host: &Path,
    rel: std::path::PathBuf,
    md: &std::fs::Metadata,
    link_to: Option<std::path::PathBuf>,
    xattrs: bool,
) -> Result<Option<Entry>, LayerError> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if let Some(target) = link_to {
        EntryKind::Hardlink { target }
    } else if ft.is_file() {
        EntryKind::File {
            source: FileSource::Host(host.to_path_buf()),
            size: md.len(),
        }
    } else if ft.is_symlink() {
        let target =
            std::fs::read_link(host).map_err(|e| LayerError::io(host.as_os_str().as_bytes(), e))?;
        EntryKind::Symlink { target }
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        if ft.is_char_device() {
            EntryKind::CharDevice { major, minor }
        } else {
            EntryKind::BlockDevice { major, minor }
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        return Ok(None); // sockets
    };
    let mut e = Entry::new(rel, kind, md.mode() & 0o7777);
    e.uid = u64::from(md.uid());
    e.gid = u64::from(md.gid());
    e.mtime = md.mtime();
    if xattrs && !matches!(e.kind, EntryKind::Hardlink { .. }) {
        read_xattrs(host, &mut e)?;
    }
    Ok(Some(e))
}

fn read_xattrs(host: &Path, e: &mut Entry) -> Result<(), LayerError> {
    let shown = || host.as_os_str().as_bytes().to_vec();
    let names = match list_xattrs(host) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(err) if err == rustix::io::Errno::OPNOTSUPP => return Ok(()),
        Err(err) => return Err(LayerError::io(shown(), err.into())),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // kiln's own owner record is the entry's owner, never an xattr.
        if is_overlay_xattr(name) || name == super::OWNER_XATTR.as_bytes() {
            continue;
        }
        let Ok(key) = std::str::from_utf8(name) else {
            return Err(LayerError::Invalid {
                path: show(&shown()),
                reason: format!("xattr name {:?} is not UTF-8", show(name)),
            });
        };
        match get_xattr(host, name) {
            Ok(v) => {
                e.xattrs.insert(key.to_string(), v);
            }
            // Removed between list and get: not part of the snapshot.
            Err(err) if err == rustix::io::Errno::NODATA => {}
            Err(err) => return Err(LayerError::io(shown(), err.into())),
        }
    }
    Ok(())
}

fn list_xattrs(p: &Path) -> rustix::io::Result<Vec<u8>> {
    loop {
        let len = rustix::fs::llistxattr_query(p)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::llistxattr(p, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue, // grew meanwhile
            Err(e) => return Err(e),
        }
    }
}

fn get_xattr(p: &Path, name: &[u8]) -> rustix::io::Result<Vec<u8>> {
    loop {
        let len = rustix::fs::lgetxattr_query(p, name)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
