//! Image surgery that rewrites layers: `kiln flatten` (the flattened
//! filesystem is `kiln export`'s, file for file, as root and as the
//! unprivileged kilntest) and `kiln rebase` (in the store, and on a
//! registry without downloading a layer).

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

mod common;
mod surgery_support;

use common::{PODMAN_RUN, podman};

use common::build::missing_prerequisite;
use common::is_root;
use support::{Auth, Registry, kiln, kiln_ok};
use surgery_support::*;

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
    // podman runs the rebased image and sees the new base and the app.
    if !is_root() || !support::have("podman") {
        missing_prerequisite("podman, run as root, to run the rebased image");
        return;
    }
    let rebased = &at("team/app:2")[9..];
    podman(h, &["pull", "--tls-verify=false", rebased]);
    let ran = podman(
        h,
        &[PODMAN_RUN, &[rebased, "cat", "/etc/version", "/app/run"]].concat(),
    );
    assert_eq!(ran, "base 2\napp\n");

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

#[test]
fn a_built_image_names_its_base_and_rebases_without_flags() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/base:1");
    let ctx = h.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("app"), "app\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM surgery/base:1\nCOPY app /app\n",
    )
    .unwrap();
    ok_epoch(
        h,
        &[
            "build",
            "-q",
            "-t",
            "surgery/built:1",
            ctx.to_str().unwrap(),
        ],
    );
    let store = kiln_image::Store::open(h.join("store")).unwrap();
    let annotations = |name: &str| {
        let top = store.resolve(name).unwrap();
        let kiln_image::AnyManifest::Manifest(m) = store.manifest_doc(&top.digest).unwrap() else {
            panic!("{name} is not a manifest");
        };
        m.annotations
    };
    // As BuildKit: the base's full name and the manifest it resolved to.
    let base1 = store.resolve("surgery/base:1").unwrap().digest.to_string();
    let a = annotations("surgery/built:1");
    assert_eq!(
        a.get("org.opencontainers.image.base.name")
            .map(String::as_str),
        Some("docker.io/surgery/base:1")
    );
    assert_eq!(a.get("org.opencontainers.image.base.digest"), Some(&base1));

    // The base is updated under the same name; the app follows it.
    std::fs::write(h.join("version"), "base 2\n").unwrap();
    let file = format!("{}:/etc/version", h.join("version").display());
    kiln_ok(
        h,
        &[
            "append",
            "surgery/base:1",
            "-t",
            "surgery/base:1",
            "--file",
            &file,
        ],
    );
    let base2 = store.resolve("surgery/base:1").unwrap().digest.to_string();
    assert_ne!(base1, base2);
    kiln_ok(h, &["rebase", "surgery/built:1", "-t", "surgery/built:2"]);
    let cfg = |n: &str| json(&kiln_ok(h, &["config", n]));
    let ids = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().unwrap().clone();
    let mut want = ids(&cfg("surgery/base:1"));
    want.push(ids(&cfg("surgery/built:1")).last().unwrap().clone());
    assert_eq!(ids(&cfg("surgery/built:2")), want);
    assert_eq!(
        annotations("surgery/built:2").get("org.opencontainers.image.base.digest"),
        Some(&base2),
        "the rebased image names its new base"
    );
    // The same app built from scratch on the new base, at the same
    // SOURCE_DATE_EPOCH, is the same image to the manifest's digest: the
    // COPY's layer does not depend on the layers below it, and history,
    // times and annotations come out alike.
    ok_epoch(
        h,
        &[
            "build",
            "-q",
            "-t",
            "surgery/rebuilt:1",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(
        store.resolve("surgery/built:2").unwrap().digest,
        store.resolve("surgery/rebuilt:1").unwrap().digest,
        "rebased {:#?}\nrebuilt {:#?}",
        cfg("surgery/built:2"),
        cfg("surgery/rebuilt:1")
    );

    // An image that names no base needs the flags, and says so.
    let out = kiln(h, &["rebase", "surgery/base:1", "-t", "surgery/bad:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--old-base and --new-base"), "{err}");
    assert!(!kiln(h, &["inspect", "surgery/bad:1"]).status.success());
}
