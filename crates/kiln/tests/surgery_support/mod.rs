//! Helpers shared by the surgery tests (`surgery.rs`, `surgery_layers.rs`):
//! a busybox base in the store, kiln with `SOURCE_DATE_EPOCH`, hand-made
//! tars, and reading the registry's log.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use crate::common::{assert_success, busybox_rootfs, tree_listing};
use crate::support::{Registry, kiln_ok};

/// Imports the busybox root filesystem into the store at `h/store` as `name`.
pub fn busybox_base(h: &Path, name: &str) {
    let rootfs = h.join("rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    let out = Command::new(crate::support::kiln_bin())
        .env("KILN_ROOT", h.join("store"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["import", rootfs.to_str().unwrap(), name])
        .args([
            "--change",
            r#"CMD ["/bin/sh"]"#,
            "--change",
            "ENV PATH=/bin",
        ])
        .output()
        .unwrap();
    assert_success(&out, "kiln import");
}

/// kiln with SOURCE_DATE_EPOCH set, so that new layers are reproducible.
pub fn kiln_epoch(h: &Path, args: &[&str]) -> std::process::Output {
    Command::new(crate::support::kiln_bin())
        .args(args)
        .env("HOME", h)
        .env("KILN_ROOT", h.join("store"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

pub fn ok_epoch(h: &Path, args: &[&str]) -> String {
    let out = kiln_epoch(h, args);
    assert_success(&out, &format!("kiln {args:?}"));
    String::from_utf8(out.stdout).unwrap()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// A ustar archive of `(name, type, mode, uid, body or link target)`,
/// written by hand so that a test can say what a hostile tar says.
pub fn tar_of(members: &[(&str, u8, u32, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, mode, uid, body) in members {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        let size = if *kind == b'0' { body.len() } else { 0 };
        octal(&mut h, 100, 8, u64::from(*mode));
        octal(&mut h, 108, 8, u64::from(*uid));
        octal(&mut h, 116, 8, u64::from(*uid));
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 1_700_000_000);
        h[156] = *kind;
        if *kind == b'1' || *kind == b'2' {
            h[157..157 + body.len()].copy_from_slice(body);
        }
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        if size > 0 {
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub fn layer_digests(h: &Path, reference: &str) -> Vec<String> {
    let m = json(&kiln_ok(h, &["manifest", reference]));
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The registry log lines after `from` that GET one of `blobs`.
pub fn blob_gets(reg: &Registry, from: usize, blobs: &[String]) -> Vec<String> {
    reg.log_text()[from..]
        .lines()
        .filter(|l| l.contains("GET /v2/") && blobs.iter().any(|b| l.contains(b.as_str())))
        .map(str::to_string)
        .collect()
}

/// Lists a tar (any compression) by extracting it with GNU tar.
pub fn listing_of_tar(tar: &Path, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    crate::common::run(
        "tar",
        &[
            "--numeric-owner",
            "-xpf",
            tar.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
        ],
    );
    tree_listing(dir)
}
