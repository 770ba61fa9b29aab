//! `kiln diff` and `kiln layers` on images made from hand-written tars, so
//! that every path, size and byte count they print is known: a base layer,
//! and a layer on it that deletes a file and a directory, overwrites a
//! file, changes a mode and adds files of another owner. Both read layers
//! as streams: a layer holding a 256 MiB file does not make kiln hold it.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

mod common;
mod surgery_support;

use std::path::Path;
use std::process::Command;

use common::assert_success;
use common::build::missing_prerequisite;
use support::{kiln, kiln_ok};
use surgery_support::*;

/// `a:1` (one layer) and `b:1` (a second layer on it) in the store at `h`.
fn two_images(h: &Path) {
    let big = vec![b'x'; 1000];
    std::fs::write(
        h.join("l0.tar"),
        tar_of(&[
            ("bin/", b'5', 0o755, 0, b""),
            ("bin/tool", b'0', 0o755, 0, b"#!tool\n"),
            ("etc/", b'5', 0o755, 0, b""),
            ("etc/motd", b'0', 0o644, 0, b"hello\n"),
            ("etc/passwd", b'0', 0o644, 0, b"root:x:0:0\n"),
            ("var/", b'5', 0o755, 0, b""),
            ("var/cache/", b'5', 0o755, 0, b""),
            ("var/cache/big", b'0', 0o644, 0, &big),
        ]),
    )
    .unwrap();
    std::fs::write(
        h.join("l1.tar"),
        tar_of(&[
            ("bin/tool", b'0', 0o700, 0, b"#!tool\n"),
            ("etc/.wh.motd", b'0', 0, 0, b""),
            ("etc/passwd", b'0', 0o600, 0, b"root:x:0:0::/root:/bin/sh\n"),
            ("srv/", b'5', 0o750, 33, b""),
            ("srv/data", b'0', 0o640, 33, b"payload\n"),
            ("srv/link", b'2', 0o777, 0, b"data"),
            ("var/.wh.cache", b'0', 0, 0, b""),
        ]),
    )
    .unwrap();
    ok_epoch(
        h,
        &[
            "import",
            h.join("l0.tar").to_str().unwrap(),
            "contents/a:1",
            "--compression",
            "none",
        ],
    );
    ok_epoch(
        h,
        &[
            "append",
            "contents/a:1",
            "-t",
            "contents/b:1",
            "--tar",
            h.join("l1.tar").to_str().unwrap(),
        ],
    );
}

#[test]
fn diff_lists_every_change_with_its_metadata() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    two_images(h);
    let table = kiln_ok(h, &["diff", "contents/a:1", "contents/b:1"]);
    assert_eq!(
        table,
        "   PATH            TYPE     SIZE  MODE  OWNER\n\
         C  /bin/tool       file     7B    0700  0:0\n\
         D  /etc/motd       file     6B    0644  0:0\n\
         C  /etc/passwd     file     26B   0600  0:0\n\
         A  /srv            dir      0B    0750  33:33\n\
         A  /srv/data       file     8B    0640  33:33\n\
         A  /srv/link       symlink  0B    0777  0:0\n\
         D  /var/cache      dir      0B    0755  0:0\n\
         D  /var/cache/big  file     1kB   0644  0:0\n"
    );
    let v = json(&kiln_ok(
        h,
        &["diff", "contents/a:1", "contents/b:1", "--format", "json"],
    ));
    let rows: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "changed /bin/tool",
            "removed /etc/motd",
            "changed /etc/passwd",
            "added /srv",
            "added /srv/data",
            "added /srv/link",
            "removed /var/cache",
            "removed /var/cache/big",
        ]
    );
    // A change carries both sides; content is compared by digest.
    let passwd = &v[2];
    assert_eq!(passwd["before"]["size"], 11);
    assert_eq!(passwd["before"]["mode"], 0o644);
    assert_eq!(passwd["after"]["size"], 26);
    assert_eq!(passwd["after"]["mode"], 0o600);
    assert_eq!(
        passwd["after"]["digest"],
        format!("sha256:{}", sha256_hex(b"root:x:0:0::/root:/bin/sh\n"))
    );
    let tool = &v[0];
    assert_eq!(tool["before"]["digest"], tool["after"]["digest"]);
    assert_eq!(tool["after"]["mode"], 0o700);
    assert_eq!(v[5]["after"]["link"], "data");
    assert_eq!(v[3]["after"]["uid"], 33);
    assert!(v[1]["after"].is_null());
    // An image has no differences from itself.
    assert_eq!(
        kiln_ok(h, &["diff", "contents/b:1", "contents/b:1"]),
        "   PATH  TYPE  SIZE  MODE  OWNER\n"
    );
}

#[test]
fn layers_count_files_and_the_bytes_each_hides() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    two_images(h);
    let v = json(&kiln_ok(h, &["layers", "contents/b:1", "--format", "json"]));
    let layers = v.as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let manifest = json(&kiln_ok(h, &["inspect", "contents/b:1"]))["Manifest"].clone();
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["digest"], manifest["layers"][i]["digest"]);
        assert_eq!(l["size"], manifest["layers"][i]["size"]);
    }
    // The base: 4 files, 7 + 6 + 11 + 1000 bytes, nothing below to hide.
    assert_eq!(layers[0]["files"], 4);
    assert_eq!(layers[0]["content_size"], 1024);
    assert_eq!(layers[0]["hidden"], 0);
    // On it: tool, passwd, data, link (whiteouts are not files); it hides
    // the old tool (7), motd (6), passwd (11) and all of var/cache (1000).
    assert_eq!(layers[1]["files"], 4);
    assert_eq!(layers[1]["content_size"], 7 + 26 + 8);
    assert_eq!(layers[1]["hidden"], 7 + 6 + 11 + 1000);
    // The steps are the history's, in order: import names its source in
    // a comment, append its layer in created_by.
    let history: Vec<serde_json::Value> = json(&kiln_ok(h, &["config", "contents/b:1"]))["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["empty_layer"] != true)
        .cloned()
        .collect();
    assert_eq!(history.len(), 2);
    for (l, e) in layers.iter().zip(&history) {
        assert_eq!(l["created_by"], e["created_by"]);
        assert_eq!(l["comment"], e["comment"]);
    }
    assert!(
        layers[0]["comment"].as_str().unwrap().contains("l0.tar"),
        "{v}"
    );
    assert!(
        layers[1]["created_by"].as_str().unwrap().contains("l1.tar"),
        "{v}"
    );

    let table = kiln_ok(h, &["layers", "contents/b:1"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[0]),
        [
            "LAYER", "SIZE", "CONTENT", "FILES", "HIDDEN", "CREATED", "BY"
        ],
        "{table}"
    );
    let l1 = cells(lines[2]);
    assert_eq!(l1[0], "1");
    assert_eq!(l1[2..5], ["41B", "4", "1.024kB"], "{table}");
    assert_eq!(lines[3], "hidden by upper layers: 1.024kB");
}

#[test]
fn layers_and_diff_stream_a_big_layer() {
    if !std::path::Path::new("/usr/bin/time").exists() {
        missing_prerequisite("/usr/bin/time, to measure kiln's memory");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let rootfs = h.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    // 256 MiB of one byte: gzip makes it small, unpacked it is not.
    let f = std::fs::File::create(rootfs.join("big")).unwrap();
    f.set_len(256 << 20).unwrap();
    ok_epoch(h, &["import", rootfs.to_str().unwrap(), "contents/big:1"]);
    std::fs::remove_dir_all(&rootfs).unwrap();
    std::fs::write(h.join("note"), "note\n").unwrap();
    let note = format!("{}:/note", h.join("note").display());
    ok_epoch(
        h,
        &[
            "append",
            "contents/big:1",
            "-t",
            "contents/big:2",
            "--file",
            &note,
        ],
    );
    // kiln's peak memory (KiB) and standard output for `args`.
    let measured = |args: &[&str]| -> (u64, String) {
        let out = Command::new("/usr/bin/time")
            .args(["-f", "maxrss %M"])
            .arg(support::kiln_bin())
            .args(args)
            .env("KILN_ROOT", h.join("store"))
            .output()
            .unwrap();
        assert_success(&out, &format!("kiln {args:?}"));
        let err = String::from_utf8_lossy(&out.stderr);
        let kib = err
            .lines()
            .find_map(|l| l.strip_prefix("maxrss "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no maxrss in {err}"));
        (kib, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (kib, out) = measured(&["layers", "contents/big:2", "--format", "json"]);
    let v = json(&out);
    assert_eq!(v[0]["content_size"], 256u64 << 20);
    assert!(
        kib < 64 * 1024,
        "kiln layers used {kib} KiB for a 256 MiB file"
    );
    let (kib, out) = measured(&[
        "diff",
        "contents/big:1",
        "contents/big:2",
        "--format",
        "json",
    ]);
    let v = json(&out);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["path"], "/note");
    assert_eq!(v[0]["change"], "added");
    assert!(
        kib < 64 * 1024,
        "kiln diff used {kib} KiB for a 256 MiB file"
    );
}

#[test]
fn bad_input_is_named() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    two_images(h);
    let out = kiln(h, &["diff", "contents/a:1", "contents/nope:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("contents/nope:1"), "{err}");
    let out = kiln(h, &["layers", "contents/a:1", "--format", "yaml"]);
    assert!(!out.status.success());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An OCI layout whose one layer holds `members`, written by hand (kiln
/// itself refuses to make such a layer).
fn hostile_layout(dir: &Path, members: &[(&str, u8, u32, u32, &[u8])]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer, layer_size) = put(&tar_of(members));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (config, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_size}],
    });
    let (manifest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn a_layer_climbing_out_is_refused_by_name() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    two_images(h);
    let layout = h.join("evil");
    hostile_layout(
        &layout,
        &[
            ("ok", b'0', 0o644, 0, b"fine\n"),
            ("app/../../etc/shadow", b'0', 0o644, 0, b"x\n"),
        ],
    );
    let evil = format!("oci:{}:1", layout.display());
    for args in [
        vec!["layers", evil.as_str()],
        vec!["diff", "contents/a:1", evil.as_str()],
    ] {
        let out = kiln(h, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("app/../../etc/shadow"), "{args:?}: {err}");
        assert!(err.contains("layer 0"), "{args:?}: {err}");
    }
    // A well-formed layout reads fine: the refusal is the entry's.
    let fine = h.join("fine");
    hostile_layout(&fine, &[("ok", b'0', 0o644, 0, b"fine\n")]);
    let v = json(&kiln_ok(
        h,
        &[
            "layers",
            &format!("oci:{}:1", fine.display()),
            "--format",
            "json",
        ],
    ));
    assert_eq!(v[0]["files"], 1);
}
