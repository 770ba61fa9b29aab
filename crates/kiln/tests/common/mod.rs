//! Test support shared by the CLI's integration tests: a busybox root
//! filesystem made from Debian's busybox-static, a throwaway store, and a
//! way to run the kiln binary against it.
#![allow(dead_code)]

/// `both!(name, |who| { ... })`: the test `name::as_root` and
/// `name::as_kilntest`, one body run as each user (`#[macro_use] mod common;`).
#[allow(unused_macros)]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn as_root() {
                ($body)(Who::Caller)
            }
            #[test]
            fn as_kilntest() {
                ($body)(Who::Kilntest)
            }
        }
    };
}

/// `kiln build` test support (fixtures, buildah peer, conformance).
pub mod build;
/// BuildKit (Debian's dockerd) as a builder of the fixtures.
pub mod buildkit;
/// Host canaries for the remote-source safety tests.
pub mod canary;
/// kiln.toml test support (acceptance file, seeded stores).
pub mod declarative;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BUSYBOX: &str = "/bin/busybox";

/// A minimal busybox root filesystem in `dir`: the static binary, one
/// symlink per applet, and the /etc files a container expects.
pub fn busybox_rootfs(dir: &Path) {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );
    for d in [
        "bin", "etc", "tmp", "root", "home/app", "var", "dev", "proc", "sys",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", link).unwrap();
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n",
    )
    .unwrap();
    fs::write(dir.join("etc/os-release"), "NAME=busybox\nID=busybox\n").unwrap();
}

/// A kiln invocation against a private store.
pub struct Kiln {
    pub root: PathBuf,
    pub bin: PathBuf,
}

impl Kiln {
    pub fn new(root: &Path) -> Kiln {
        Kiln {
            root: root.to_path_buf(),
            bin: PathBuf::from(env!("CARGO_BIN_EXE_kiln")),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c.env_remove("SOURCE_DATE_EPOCH");
        c
    }

    /// Runs kiln with `args`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert_success(&out, &format!("kiln {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an external tool, asserting success; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert_success(&out, &format!("{program} {}", args.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// One line per file: path, type, mode, uid, gid, size, content hash or
/// link target. Two trees with equal listings are equal for an image.
pub fn tree_listing(root: &Path) -> Vec<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = m.file_type();
        let detail = if ft.is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            let bytes = fs::read(e.path()).unwrap();
            format!("{} {}", m.len(), hex::encode(sha2::Sha256::digest(&bytes)))
        } else {
            String::new()
        };
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_file() {
            "f"
        } else {
            "o"
        };
        // Symlink permission bits are meaningless on Linux.
        let mode = if ft.is_symlink() {
            0o777
        } else {
            m.mode() & 0o7777
        };
        out.push(format!(
            "{rel} {kind} {mode:o} {}:{} {detail}",
            m.uid(),
            m.gid()
        ));
    }
    out
}

/// podman with its own storage under `h` (vfs, so it needs nothing from
/// the host's), checked to succeed; its standard output.
pub fn podman(h: &Path, args: &[&str]) -> String {
    let mut c = std::process::Command::new("podman");
    c.arg("--root").arg(h.join("podman-root"));
    c.arg("--runroot").arg(h.join("podman-run"));
    c.arg("--storage-driver").arg("vfs");
    c.args(args);
    let out = c.output().unwrap();
    assert_success(&out, &format!("podman {}", args.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `podman run` as this machine allows it (runc, rlimits at or below the
/// current ones, no network).
pub const PODMAN_RUN: &[&str] = &[
    "run",
    "--rm",
    "--runtime",
    "runc",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
