//! One layer's tar reduced to what [`super::Tree`] needs: each entry's
//! metadata and content digest, whiteouts and opaque markers as removals.
//! Content streams through a hash and is never held.

use std::io::{self, Read};

use serde::Serialize;
use tar::EntryType;

use crate::Digest;
use crate::layer::clean_entry_name;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// What kind of node a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Char => "char",
            FileKind::Block => "block",
            FileKind::Fifo => "fifo",
        }
    }
}

/// One path's metadata in an image's filesystem: what `kiln diff`
/// compares. Modification times are left out on purpose: two builds of
/// the same files differ in them and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMeta {
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Content bytes (a regular file's; 0 for anything else).
    pub size: u64,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A regular file's content digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// A device's major and minor numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<(u32, u32)>,
}

/// A path in the tree, with the bytes it takes in the layer that holds it
/// (a hard link takes none: its content is its target's).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub meta: FileMeta,
    pub stored: u64,
}

/// One thing a layer does to the paths below it.
pub(crate) enum Op {
    /// A whiteout: the path and everything under it go.
    Remove(Vec<u8>),
    /// An opaque marker: everything under the directory goes.
    Opaque(Vec<u8>),
    Add(Vec<u8>, Added),
}

pub(crate) enum Added {
    Node(Node),
    /// A hard link to a path, with the link entry's own metadata as the
    /// fallback when the target is missing.
    HardLink(Vec<u8>, FileMeta),
}

/// What one layer's tar holds, reduced to metadata.
pub(crate) struct Scan {
    pub ops: Vec<Op>,
    /// Entries that are neither directories nor whiteouts.
    pub files: u64,
    /// Bytes of regular-file content in the tar.
    pub content: u64,
}

fn bad(entry: &[u8], what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("entry {:?}: {what}", String::from_utf8_lossy(entry)),
    )
}

/// Reads a layer tar (already decompressed), keeping only metadata and
/// content digests.
pub(crate) fn scan_layer(tar: impl Read) -> io::Result<Scan> {
    let mut ar = tar::Archive::new(tar);
    let mut scan = Scan {
        ops: Vec::new(),
        files: 0,
        content: 0,
    };
    let mut buf = vec![0u8; 64 * 1024];
    for ent in ar.entries()? {
        let mut ent = ent?;
        let raw = ent.path_bytes().into_owned();
        let mut ty = ent.header().entry_type();
        // Old archives mark directories by a trailing `/` alone.
        if matches!(ty, EntryType::Regular | EntryType::Continuous) && raw.ends_with(b"/") {
            ty = EntryType::Directory;
        }
        if matches!(ty, EntryType::XGlobalHeader) {
            continue;
        }
        let clean = clean_entry_name(&raw).map_err(|why| bad(&raw, why))?;
        if clean.is_empty() {
            continue; // the root itself
        }
        let (parent, base) = match clean.iter().rposition(|&b| b == b'/') {
            Some(i) => (&clean[..i], &clean[i + 1..]),
            None => (&b""[..], &clean[..]),
        };
        if base == OPAQUE_MARKER {
            scan.ops.push(Op::Opaque(parent.to_vec()));
            continue;
        }
        if let Some(victim) = base.strip_prefix(WHITEOUT_PREFIX) {
            if victim.is_empty() || victim == b"." || victim == b".." {
                return Err(bad(&raw, "whiteout of an invalid name"));
            }
            let mut path = parent.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(victim);
            scan.ops.push(Op::Remove(path));
            continue;
        }
        let meta = header_meta(&mut ent, &raw)?;
        let mut meta = FileMeta {
            kind: FileKind::File,
            size: 0,
            link: None,
            digest: None,
            device: None,
            ..meta
        };
        let added = match ty {
            EntryType::Directory => {
                meta.kind = FileKind::Dir;
                Added::Node(Node { meta, stored: 0 })
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = ent.size();
                let mut h = crate::Hasher::sha256();
                let mut n = 0u64;
                loop {
                    let k = ent.read(&mut buf)?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                if n != size {
                    return Err(bad(&raw, format!("{n} bytes of content, {size} claimed")));
                }
                scan.content += size;
                meta.size = size;
                meta.digest = Some(h.finish());
                Added::Node(Node { meta, stored: size })
            }
            EntryType::Symlink => {
                let target = ent.link_name_bytes().unwrap_or_default();
                meta.kind = FileKind::Symlink;
                meta.link = Some(String::from_utf8_lossy(&target).into_owned());
                Added::Node(Node { meta, stored: 0 })
            }
            EntryType::Link => {
                let target = ent.link_name_bytes().unwrap_or_default().into_owned();
                let target = clean_entry_name(&target).map_err(|why| bad(&raw, why))?;
                Added::HardLink(target, meta)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                meta.kind = match ty {
                    EntryType::Char => FileKind::Char,
                    EntryType::Block => FileKind::Block,
                    _ => FileKind::Fifo,
                };
                let h = ent.header();
                if meta.kind != FileKind::Fifo {
                    let major = h.device_major().ok().flatten().unwrap_or(0);
                    let minor = h.device_minor().ok().flatten().unwrap_or(0);
                    meta.device = Some((major, minor));
                }
                Added::Node(Node { meta, stored: 0 })
            }
            // What extraction skips, this skips too.
            _ => continue,
        };
        scan.files += u64::from(!matches!(ty, EntryType::Directory));
        scan.ops.push(Op::Add(clean, added));
    }
    Ok(scan)
}

/// Mode and owner from the header, PAX `uid`/`gid` over the ustar fields.
fn header_meta<R: Read>(ent: &mut tar::Entry<'_, R>, raw: &[u8]) -> io::Result<FileMeta> {
    let h = ent.header();
    let mut meta = FileMeta {
        kind: FileKind::File,
        size: 0,
        mode: h.mode().map_err(|_| bad(raw, "invalid mode"))? & 0o7777,
        uid: h.uid().map_err(|_| bad(raw, "invalid uid"))?,
        gid: h.gid().map_err(|_| bad(raw, "invalid gid"))?,
        link: None,
        digest: None,
        device: None,
    };
    if let Some(exts) = ent.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let num = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| bad(raw, "invalid PAX owner"))
            };
            match ext.key() {
                Ok("uid") => meta.uid = num()?,
                Ok("gid") => meta.gid = num()?,
                _ => {}
            }
        }
    }
    Ok(meta)
}
