//! Image surgery without a rebuild: `kiln mutate`, `config`, `append` and
//! `flatten`, against a real docker-registry on 127.0.0.1 and read back by
//! skopeo and podman. Registry to registry, base layers are never
//! downloaded (the registry's own log says so); the flattened filesystem
//! is `kiln export`'s, file for file; bad input is refused by name and
//! leaves no tag behind.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

mod common;

use std::path::Path;
use std::process::Command;

use common::build::missing_prerequisite;
use common::{assert_success, busybox_rootfs, have, is_root, tree_listing};
use support::{Auth, Registry, TestImage, kiln, kiln_ok};

/// Imports the busybox root filesystem into the store at `h/store` as `name`.
fn busybox_base(h: &Path, name: &str) {
    let rootfs = h.join("rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    let out = Command::new(support::kiln_bin())
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
fn kiln_epoch(h: &Path, args: &[&str]) -> std::process::Output {
    Command::new(support::kiln_bin())
        .args(args)
        .env("HOME", h)
        .env("KILN_ROOT", h.join("store"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

fn ok_epoch(h: &Path, args: &[&str]) -> String {
    let out = kiln_epoch(h, args);
    assert_success(&out, &format!("kiln {args:?}"));
    String::from_utf8(out.stdout).unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// A ustar archive of `(name, type, mode, uid, body or link target)`,
/// written by hand so that a test can say what a hostile tar says.
fn tar_of(members: &[(&str, u8, u32, u32, &[u8])]) -> Vec<u8> {
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

fn layer_digests(h: &Path, reference: &str) -> Vec<String> {
    let m = json(&kiln_ok(h, &["manifest", reference]));
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The registry log lines after `from` that GET one of `blobs`.
fn blob_gets(reg: &Registry, from: usize, blobs: &[String]) -> Vec<String> {
    reg.log_text()[from..]
        .lines()
        .filter(|l| l.contains("GET /v2/") && blobs.iter().any(|b| l.contains(b.as_str())))
        .map(str::to_string)
        .collect()
}

#[test]
fn mutate_and_append_on_a_registry_move_no_base_layer() {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = format!("{}/surgery/base:1", reg.host());
    busybox_base(h, &base);
    kiln_ok(h, &["push", &base]);
    let base_layers = layer_digests(h, &base);
    let log_start = reg.log_text().len();

    // mutate, registry to registry (another repository: mounts).
    let mutated = format!("{}/surgery/mutated:1", reg.host());
    let out = kiln_ok(
        h,
        &[
            "mutate",
            &format!("docker://{base}"),
            "-t",
            &format!("docker://{mutated}"),
            "--entrypoint",
            r#"["/bin/sh", "-c", "echo $GREETING; cat hello.txt; cat /etc/motd"]"#,
            "--env",
            "GREETING=hi there",
            "--label",
            "org.example.team=kiln",
            "--annotation",
            "org.example.note=mutated",
            "--workdir",
            "/app",
            "--expose",
            "8080",
            "--stop-signal",
            "SIGINT",
            "--created",
            "2024-05-06T07:08:09Z",
        ],
    );
    let mutated_digest = out.trim().to_string();
    // append a directory and a file, in the same registry.
    let files = h.join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from append\n").unwrap();
    std::fs::write(files.join("sub/data"), "data\n").unwrap();
    std::fs::write(h.join("motd"), "motd from --file\n").unwrap();
    let appended = format!("{}/surgery/appended:1", reg.host());
    let append_args = |dest: &str| -> Vec<String> {
        [
            "append",
            &format!("docker://{mutated}"),
            "-t",
            dest,
            "--dir",
            files.to_str().unwrap(),
            "--prefix",
            "/app",
            "--chown",
            "1000:1000",
            "--file",
            &format!("{}:/etc/motd", h.join("motd").display()),
            "--chmod",
            "0600",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = append_args(&format!("docker://{appended}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let appended_digest = ok_epoch(h, &args).trim().to_string();

    let gets = blob_gets(&reg, log_start, &base_layers);
    assert!(gets.is_empty(), "base layers were downloaded: {gets:#?}");
    let log = reg.log_text()[log_start..].to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("POST /v2/surgery/mutated/blobs/uploads/?") && l.contains("mount=")),
        "no cross-repository mount: {log}"
    );

    // What skopeo reads back.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{appended}"))
        .output()
        .unwrap();
    assert_success(&out, "skopeo inspect --config");
    let cfg = json(&String::from_utf8_lossy(&out.stdout));
    let rt = &cfg["config"];
    assert_eq!(
        rt["Entrypoint"][2],
        "echo $GREETING; cat hello.txt; cat /etc/motd"
    );
    assert!(rt["Cmd"].is_null(), "ENTRYPOINT drops the base's CMD: {rt}");
    assert_eq!(
        rt["Env"],
        serde_json::json!(["PATH=/bin", "GREETING=hi there"])
    );
    assert_eq!(rt["Labels"]["org.example.team"], "kiln");
    assert_eq!(rt["WorkingDir"], "/app");
    assert_eq!(rt["StopSignal"], "SIGINT");
    assert!(rt["ExposedPorts"]["8080/tcp"].is_object(), "{rt}");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = cfg["history"].as_array().unwrap();
    assert!(
        history.last().unwrap()["created_by"]
            .as_str()
            .unwrap()
            .contains("--file"),
        "{history:?}"
    );
    let mutated_manifest = json(&kiln_ok(h, &["manifest", &mutated]));
    assert_eq!(
        mutated_manifest["annotations"]["org.example.note"],
        "mutated"
    );
    let mutated_cfg = json(&kiln_ok(h, &["config", &format!("docker://{mutated}")]));
    assert_eq!(mutated_cfg["created"], "2024-05-06T07:08:09Z");
    assert_eq!(support::skopeo_digest(&mutated), mutated_digest);
    assert_eq!(support::skopeo_digest(&appended), appended_digest);
    // The appended layers keep the base's below them.
    let layers = layer_digests(h, &appended);
    assert_eq!(&layers[..1], &base_layers[..]);

    // The same input with SOURCE_DATE_EPOCH gives the same image.
    let again = format!("{}/surgery/again:1", reg.host());
    let args = append_args(&format!("docker://{again}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(ok_epoch(h, &args).trim(), appended_digest);

    // In place (no -t): the tag moves, every blob is found where it is.
    let start = reg.log_text().len();
    let all_layers = layer_digests(h, &again);
    kiln_ok(
        h,
        &[
            "mutate",
            &format!("docker://{again}"),
            "--label",
            "in.place=1",
        ],
    );
    let gets = blob_gets(&reg, start, &all_layers);
    assert!(gets.is_empty(), "layers were downloaded: {gets:#?}");
    let cfg = json(&kiln_ok(h, &["config", &format!("docker://{again}")]));
    assert_eq!(cfg["config"]["Labels"]["in.place"], "1");
    assert_eq!(layer_digests(h, &again), all_layers);

    // podman runs the result and sees the new entrypoint, env and files.
    if !is_root() || !have("podman") || !have("runc") {
        missing_prerequisite("podman and runc, run as root, to run the appended image");
        return;
    }
    let proot = h.join("podman-root");
    let prun = h.join("podman-run");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root").arg(&proot).arg("--runroot").arg(&prun);
        c.arg("--storage-driver").arg("vfs");
        c.args(args);
        let out = c.output().unwrap();
        assert_success(&out, &format!("podman {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    podman(&["pull", "--tls-verify=false", &appended]);
    let ran = podman(&[
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
        &appended,
    ]);
    assert_eq!(ran, "hi there\nhello from append\nmotd from --file\n");
    let ls = podman(&[
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
        "--entrypoint",
        "/bin/ls",
        &appended,
        "-ln",
        "/app/sub/data",
        "/etc/motd",
    ]);
    assert!(
        ls.contains("-rw-------") && ls.contains("/etc/motd"),
        "{ls}"
    );
    assert!(
        ls.contains(" 1000 ") && ls.contains("/app/sub/data"),
        "{ls}"
    );
}

#[test]
fn mutate_in_the_store_and_config_of_every_kind() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/base:1");
    let before = json(&kiln_ok(h, &["config", "surgery/base:1"]));
    kiln_ok(
        h,
        &[
            "mutate",
            "surgery/base:1",
            "-t",
            "surgery/changed:1",
            "--env",
            "PATH-",
            "--env",
            "A=1",
            "--cmd",
            "echo hi",
            "--user",
            "1000:1000",
            "--volume",
            "/data",
        ],
    );
    let after = json(&kiln_ok(h, &["config", "kiln:surgery/changed:1"]));
    assert_eq!(after["config"]["Env"], serde_json::json!(["A=1"]));
    assert_eq!(
        after["config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo hi"])
    );
    assert_eq!(after["config"]["User"], "1000:1000");
    assert!(after["config"]["Volumes"]["/data"].is_object());
    assert_eq!(after["rootfs"], before["rootfs"]);
    assert_eq!(after["history"], before["history"]);
    // The source is untouched; an OCI layout reads the same config.
    assert_eq!(json(&kiln_ok(h, &["config", "surgery/base:1"])), before);
    let layout = h.join("layout");
    kiln_ok(
        h,
        &[
            "mutate",
            "surgery/changed:1",
            "-t",
            &format!("oci:{}:v1", layout.display()),
            "--workdir",
            "sub",
        ],
    );
    let from_layout = json(&kiln_ok(
        h,
        &["config", &format!("oci:{}:v1", layout.display())],
    ));
    assert_eq!(from_layout["config"]["WorkingDir"], "/sub");
    assert_eq!(from_layout["config"]["Env"], after["config"]["Env"]);
}

#[test]
fn bad_input_is_refused_and_nothing_is_tagged() {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/base:1");

    // A layer tar that climbs out of the image is refused, naming the member.
    let evil = h.join("evil.tar");
    std::fs::write(
        &evil,
        tar_of(&[
            ("fine.txt", b'0', 0o644, 0, b"ok\n"),
            ("app/../../etc/shadow", b'0', 0o644, 0, b"x\n"),
        ]),
    )
    .unwrap();
    let dests = [
        "surgery/evil:1".to_string(),
        format!("docker://{}/surgery/evil:1", reg.host()),
    ];
    for dest in &dests {
        let out = kiln(
            h,
            &[
                "append",
                "surgery/base:1",
                "-t",
                dest,
                "--tar",
                evil.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{dest}: {err}");
        assert!(err.contains("app/../../etc/shadow"), "{dest}: {err}");
    }
    let out = kiln(h, &["inspect", "surgery/evil:1"]);
    assert!(!out.status.success(), "a failed append left a tag");
    let out = kiln(h, &["digest", &format!("{}/surgery/evil:1", reg.host())]);
    assert!(!out.status.success(), "a failed append pushed a tag");
    // A hard link out of the image is refused too.
    std::fs::write(&evil, tar_of(&[("l", b'1', 0o644, 0, b"../../etc/passwd")])).unwrap();
    let out = kiln(
        h,
        &[
            "append",
            "surgery/base:1",
            "-t",
            "surgery/evil:1",
            "--tar",
            evil.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("../../etc/passwd"));

    // An index without --platform: the error says which platforms exist.
    let amd = TestImage::with_arch(&[1000], 41, "amd64");
    let arm = TestImage::with_arch(&[1200], 42, "arm64");
    support::index_to_store(
        &h.join("store"),
        "surgery/multi:1",
        &[(&amd, "linux/amd64"), (&arm, "linux/arm64")],
    );
    let out = kiln(
        h,
        &[
            "mutate",
            "surgery/multi:1",
            "-t",
            "surgery/m:1",
            "--env",
            "A=1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
    assert!(!kiln(h, &["inspect", "surgery/m:1"]).status.success());
    // With a platform, that image is edited; annotations alone edit the index.
    kiln_ok(
        h,
        &[
            "mutate",
            "surgery/multi:1",
            "-t",
            "surgery/m:1",
            "--platform",
            "linux/arm64",
            "--env",
            "A=1",
        ],
    );
    let cfg = json(&kiln_ok(h, &["config", "surgery/m:1"]));
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["SEED=42", "A=1"]));
    kiln_ok(
        h,
        &[
            "mutate",
            "surgery/multi:1",
            "-t",
            "surgery/idx:1",
            "--annotation",
            "k=v",
        ],
    );
    let store = kiln_image::Store::open(h.join("store")).unwrap();
    let top = store.resolve("surgery/idx:1").unwrap();
    let kiln_image::AnyManifest::Index(index) = store.manifest_doc(&top.digest).unwrap() else {
        panic!("the annotated index is not an index");
    };
    assert_eq!(index.annotations["k"], "v");
    assert_eq!(index.manifests.len(), 2);

    // An archive cannot be edited in place: writing it would start it anew.
    let archive = h.join("img.tar");
    let archive_loc = format!("oci-archive:{}:v1", archive.display());
    kiln_ok(h, &["copy", "kiln:surgery/base:1", &archive_loc]);
    let before = std::fs::read(&archive).unwrap();
    let out = kiln(h, &["mutate", &archive_loc, "--env", "A=1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read and written at once"));
    assert_eq!(std::fs::read(&archive).unwrap(), before);

    // Bad flags fail before anything is written.
    for args in [
        &[
            "mutate",
            "surgery/base:1",
            "-t",
            "surgery/bad:1",
            "--created",
            "yesterday",
        ][..],
        &[
            "mutate",
            "surgery/base:1",
            "-t",
            "surgery/bad:1",
            "--env",
            "NOEQUALS",
        ],
        &[
            "mutate",
            "surgery/base:1",
            "-t",
            "surgery/bad:1",
            "--entrypoint",
            "[broken",
        ],
        &[
            "append",
            "surgery/base:1",
            "-t",
            "surgery/bad:1",
            "--prefix",
            "/x",
            "--dir",
            "/tmp",
        ],
    ] {
        let out = kiln(h, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            !kiln(h, &["inspect", "surgery/bad:1"]).status.success(),
            "{args:?}"
        );
    }
}

/// Lists a tar (any compression) by extracting it with GNU tar.
fn listing_of_tar(tar: &Path, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    common::run(
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

#[test]
fn flatten_is_the_exported_filesystem() {
    if !is_root() {
        missing_prerequisite("root, to compare owners after extraction");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/base:1");
    // A second layer that deletes, replaces, adds and links.
    let layer = h.join("l2.tar");
    std::fs::write(
        &layer,
        tar_of(&[
            ("bin/.wh.vi", b'0', 0, 0, b""),
            ("etc/passwd", b'0', 0o600, 0, b"root:x:0:0::/root:/bin/sh\n"),
            ("srv/", b'5', 0o750, 33, b""),
            ("srv/data", b'0', 0o640, 33, b"payload\n"),
            ("srv/link", b'2', 0o777, 0, b"data"),
            ("srv/hard", b'1', 0o640, 33, b"srv/data"),
        ]),
    )
    .unwrap();
    kiln_ok(
        h,
        &[
            "append",
            "surgery/base:1",
            "-t",
            "surgery/two:1",
            "--tar",
            layer.to_str().unwrap(),
        ],
    );
    kiln_ok(h, &["flatten", "surgery/two:1", "-t", "surgery/flat:1"]);

    let store = kiln_image::Store::open(h.join("store")).unwrap();
    let top = store.resolve("surgery/flat:1").unwrap();
    let kiln_image::AnyManifest::Manifest(m) = store.manifest_doc(&top.digest).unwrap() else {
        panic!("not a manifest");
    };
    assert_eq!(m.layers.len(), 1);
    let flat_blob = store.blob_path(&m.layers[0].digest);

    let export = h.join("export.tar");
    kiln_ok(
        h,
        &["export", "surgery/two:1", "-o", export.to_str().unwrap()],
    );
    let want = listing_of_tar(&export, &h.join("x-export"));
    let got = listing_of_tar(&flat_blob, &h.join("x-flat"));
    assert_eq!(got, want);
    assert!(
        !h.join("x-flat/bin/vi").exists(),
        "a deleted file came back"
    );
    assert!(h.join("x-flat/bin/sh").exists());
    assert_eq!(
        std::fs::read_to_string(h.join("x-flat/etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\n"
    );

    // The config says one layer, and the history still tells the story.
    let before = json(&kiln_ok(h, &["config", "surgery/two:1"]));
    let after = json(&kiln_ok(h, &["config", "surgery/flat:1"]));
    assert_eq!(after["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    let hist = after["history"].as_array().unwrap();
    assert_eq!(hist.len(), before["history"].as_array().unwrap().len() + 1);
    let with_layer: Vec<_> = hist.iter().filter(|e| e["empty_layer"] != true).collect();
    assert_eq!(with_layer.len(), 1);
    assert_eq!(with_layer[0]["created_by"], "kiln flatten");
    assert_eq!(after["config"], before["config"]);
}

#[test]
fn append_and_flatten_as_kilntest() {
    use common::build::{BUSYBOX_IMAGE, KilnBuild, Who, give_to_kilntest, import_bases, scratch};
    if !is_root() {
        missing_prerequisite("root, to run kiln as the kilntest user");
        return;
    }
    let tmp = scratch("kiln-surgery-");
    let root = tmp.path().join("store");
    let k = KilnBuild::new(&root, Who::Kilntest);
    import_bases(&k, false);
    let files = tmp.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("sub/hello"), "hello\n").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    give_to_kilntest(&files);
    give_to_kilntest(&out);

    let appended = k.ok(&[
        "append",
        BUSYBOX_IMAGE,
        "-t",
        "surgery/app:1",
        "--dir",
        files.to_str().unwrap(),
        "--prefix",
        "/app",
    ]);
    k.ok(&["flatten", "surgery/app:1", "-t", "surgery/flat:1"]);
    let export = out.join("export.tar");
    k.ok(&["export", "surgery/app:1", "-o", export.to_str().unwrap()]);

    let inspect = json(&k.ok(&["inspect", "surgery/flat:1"]));
    let layers = inspect["Manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = root.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let want = listing_of_tar(&export, &tmp.path().join("x-export"));
    let got = listing_of_tar(&blob, &tmp.path().join("x-flat"));
    assert_eq!(got, want);
    // The appended files are root's in the image (as COPY makes them),
    // whoever ran kiln.
    let line = got
        .iter()
        .find(|l| l.starts_with("app/sub/hello "))
        .unwrap_or_else(|| panic!("no app/sub/hello in {got:#?}"));
    assert!(line.contains(" 0:0 "), "{line}");
    assert!(!appended.trim().is_empty());
}

#[test]
fn rebase_swaps_the_base_layers() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/base:1");
    std::fs::write(h.join("version"), "base 2\n").unwrap();
    std::fs::write(h.join("run"), "app\n").unwrap();
    let file = |src: &str, dest: &str| format!("{}:{dest}", h.join(src).display());
    ok_epoch(
        h,
        &[
            "append",
            "surgery/base:1",
            "-t",
            "surgery/base:2",
            "--file",
            &file("version", "/etc/version"),
        ],
    );
    kiln_ok(
        h,
        &[
            "mutate",
            "surgery/base:1",
            "-t",
            "surgery/pre:1",
            "--env",
            "APP=1",
        ],
    );
    ok_epoch(
        h,
        &[
            "append",
            "surgery/pre:1",
            "-t",
            "surgery/app:1",
            "--file",
            &file("run", "/app/run"),
        ],
    );
    kiln_ok(
        h,
        &[
            "rebase",
            "surgery/app:1",
            "--old-base",
            "surgery/base:1",
            "--new-base",
            "surgery/base:2",
            "-t",
            "surgery/app:2",
        ],
    );
    let cfg = |n: &str| json(&kiln_ok(h, &["config", n]));
    let (base2, app1, app2) = (
        cfg("surgery/base:2"),
        cfg("surgery/app:1"),
        cfg("surgery/app:2"),
    );
    let ids = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().unwrap().clone();
    let mut want = ids(&base2);
    want.push(ids(&app1).last().unwrap().clone());
    assert_eq!(ids(&app2), want);
    assert_eq!(app2["config"], app1["config"]);
    let hist = app2["history"].as_array().unwrap();
    assert_eq!(hist.len(), base2["history"].as_array().unwrap().len() + 1);
    assert!(
        hist.last().unwrap()["created_by"]
            .as_str()
            .unwrap()
            .contains("/app/run")
    );
    let export = h.join("app2.tar");
    kiln_ok(
        h,
        &["export", "surgery/app:2", "-o", export.to_str().unwrap()],
    );
    let listing = common::run("tar", &["-tf", export.to_str().unwrap()]);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "etc/version"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "app/run"),
        "{listing}"
    );

    // On a registry, each in its own repository: the new base's layers are
    // mounted from its repository, and no layer at all is downloaded.
    let reg = Registry::start(Auth::None);
    let at = |repo: &str| format!("docker://{}/{repo}", reg.host());
    for (name, repo) in [
        ("surgery/base:1", "os/base:1"),
        ("surgery/base:2", "os2/base:2"),
        ("surgery/app:1", "team/app:1"),
    ] {
        kiln_ok(h, &["copy", name, &at(repo)]);
    }
    let start = reg.log_text().len();
    let mut layers = layer_digests(h, &at("os2/base:2")[9..]);
    layers.extend(layer_digests(h, &at("team/app:1")[9..]));
    let pushed = kiln_ok(
        h,
        &[
            "rebase",
            &at("team/app:1"),
            "--old-base",
            &at("os/base:1"),
            "--new-base",
            &at("os2/base:2"),
            "-t",
            &at("team/app:2"),
        ],
    );
    let gets = blob_gets(&reg, start, &layers);
    assert!(gets.is_empty(), "layers were downloaded: {gets:#?}");
    assert!(
        reg.log_text()[start..]
            .lines()
            .any(|l| l.contains("mount=") && l.contains("from=os2") && l.contains("\" 201 ")),
        "the new base was not mounted"
    );
    assert_eq!(
        support::skopeo_digest(&at("team/app:2")[9..]),
        pushed.trim()
    );
    let remote = json(&kiln_ok(h, &["config", &at("team/app:2")]));
    assert_eq!(remote, app2);

    // An image not built on the old base is refused, and nothing tagged.
    let out = kiln(
        h,
        &[
            "rebase",
            "surgery/app:1",
            "--old-base",
            "surgery/base:2",
            "--new-base",
            "surgery/base:1",
            "-t",
            "surgery/bad:1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not built on the old base"), "{err}");
    assert!(!kiln(h, &["inspect", "surgery/bad:1"]).status.success());
}
