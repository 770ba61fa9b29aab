//! Helpers shared by the layer tests (included with `#[path]`); this file
//! has no tests of its own.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use kiln_image::Digest;

/// One node of a tree as the round-trip tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) sharing this node's inode.
    pub link_group: String,
}

/// Every node under `root` (not `root` itself), by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false)
    {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_file() {
            (
                "file",
                Digest::sha256_of(&std::fs::read(e.path()).unwrap()).to_string(),
            )
        } else if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            ("symlink", t.to_string_lossy().into_owned())
        } else if ft.is_char_device() {
            ("char", format!("{:x}", md.rdev()))
        } else if ft.is_block_device() {
            ("block", format!("{:x}", md.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", String::new())
        };
        let link_group = if !ft.is_dir() && md.nlink() > 1 {
            inodes
                .entry(md.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        } else {
            rel.clone()
        };
        let mut xattrs = BTreeMap::new();
        if !ft.is_symlink() {
            for name in xattr_list(e.path()) {
                let v = xattr_get(e.path(), &name);
                xattrs.insert(name, v);
            }
        }
        out.insert(
            rel,
            Node {
                kind: kind.into(),
                mode: if ft.is_symlink() {
                    0
                } else {
                    md.mode() & 0o7777
                },
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                content,
                xattrs,
                link_group,
            },
        );
    }
    out
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn xattr_list(p: &Path) -> Vec<String> {
    let c = cpath(p);
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Vec::new();
    }
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

pub fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "getxattr {name} on {}", p.display());
    buf.truncate(r as usize);
    buf
}

pub fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

pub fn set_mtime(p: &Path, secs: i64) {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let c = cpath(p);
    let r = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

/// A prerequisite (root, a peer tool) is missing: under `CI=true`, which
/// installs them all, that fails the test; elsewhere it is skipped, saying so.
pub fn missing_prerequisite(why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{why}: a prerequisite is missing, and under CI=true that fails"
    );
    eprintln!("SKIPPED: {why}");
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Whether a command exists on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a shell pipeline; returns stdout, panics with stderr on failure.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw ustar header block with the given fields (for archives the tar
/// crate refuses to build). `size` is written in octal as given.
pub fn raw_header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    let s = format!("{size:011o}\0");
    h[124..136].copy_from_slice(&s.as_bytes()[..12]);
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_cksum(&mut h);
    h
}

pub fn set_cksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let c = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(c.as_bytes());
}

/// Builds raw tars entry by entry.
#[derive(Default)]
pub struct RawTar(pub Vec<u8>);

impl RawTar {
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(512) {
            self.0.push(0);
        }
    }
    pub fn entry(mut self, name: &[u8], typeflag: u8, link: &[u8], data: &[u8]) -> Self {
        self.0
            .extend_from_slice(&raw_header(name, typeflag, data.len() as u64, link));
        self.0.extend_from_slice(data);
        self.pad();
        self
    }
    /// A device node (`typeflag` b'3' char, b'4' block).
    pub fn device(mut self, name: &str, typeflag: u8, major: u32, minor: u32) -> Self {
        let mut h = raw_header(name.as_bytes(), typeflag, 0, b"");
        h[329..337].copy_from_slice(format!("{major:07o}\0").as_bytes());
        h[337..345].copy_from_slice(format!("{minor:07o}\0").as_bytes());
        set_cksum(&mut h);
        self.0.extend_from_slice(&h);
        self
    }
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), b'0', b"", data)
    }
    pub fn dir(self, name: &str) -> Self {
        self.entry(name.as_bytes(), b'5', b"", b"")
    }
    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name.as_bytes(), b'2', target.as_bytes(), b"")
    }
    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name.as_bytes(), b'1', target.as_bytes(), b"")
    }
    /// A PAX `x` header carrying `records` (key, value) for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend(kiln_image::layer::pax_record(k, v));
        }
        self.0
            .extend_from_slice(&raw_header(b"././@PaxHeader", b'x', body.len() as u64, b""));
        self.0.extend_from_slice(&body);
        self.pad();
        self
    }
    /// A GNU long name (`L`) for the next entry.
    pub fn gnu_long_name(mut self, name: &[u8]) -> Self {
        let mut body = name.to_vec();
        body.push(0);
        self.0
            .extend_from_slice(&raw_header(b"././@LongLink", b'L', body.len() as u64, b""));
        self.0.extend_from_slice(&body);
        self.pad();
        self
    }
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}
