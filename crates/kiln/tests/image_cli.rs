//! The foundation's acceptance tests: import, save, load, export, and what
//! other tools (skopeo, umoci, podman) make of kiln's output.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{Kiln, busybox_rootfs, have, is_root, run, tree_listing};

fn busybox_image(tmp: &Path) -> Kiln {
    let rootfs = tmp.join("rootfs");
    busybox_rootfs(&rootfs);
    let kiln = Kiln::new(&tmp.join("store"));
    kiln.ok(&[
        "import",
        rootfs.to_str().unwrap(),
        "kiln-test/busybox:1",
        "--change",
        r#"CMD ["/bin/sh"]"#,
        "--change",
        "ENV PATH=/bin",
    ]);
    kiln
}

#[test]
fn import_then_inspect_history_tag_and_rmi() {
    let tmp = tempfile::tempdir().unwrap();
    let kiln = busybox_image(tmp.path());
    let images = kiln.ok(&["images"]);
    assert!(images.contains("kiln-test/busybox"), "{images}");
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln.ok(&["inspect", "kiln-test/busybox:1"])).unwrap();
    assert_eq!(inspect["Config"]["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(inspect["Config"]["config"]["Env"][0], "PATH=/bin");
    assert_eq!(
        inspect["Config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        inspect["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let history = kiln.ok(&["history", "kiln-test/busybox:1"]);
    assert!(history.contains("Imported from"), "{history}");

    kiln.ok(&["tag", "kiln-test/busybox:1", "other:2"]);
    let id = inspect["Id"].as_str().unwrap();
    let by_id: serde_json::Value =
        serde_json::from_str(&kiln.ok(&["inspect", &id[7..19]])).unwrap();
    assert_eq!(by_id["Id"], inspect["Id"]);
    kiln.ok(&["rmi", "other:2"]);
    let out = kiln.cmd().args(["inspect", "other:2"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other:2"));
    kiln.ok(&["check"]);
}

#[test]
fn import_from_tarball_and_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let tarball = tmp.path().join("rootfs.tar.gz");
    run(
        "tar",
        &[
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            rootfs.to_str().unwrap(),
            ".",
        ],
    );
    let kiln = Kiln::new(&tmp.path().join("store"));
    kiln.ok(&["import", tarball.to_str().unwrap(), "from-file"]);
    let out = kiln
        .cmd()
        .args(["import", "-", "from-stdin"])
        .stdin(fs::File::open(&tarball).unwrap())
        .output()
        .unwrap();
    common::assert_success(&out, "import -");
    // The same tar in gives the same layer out.
    let a: serde_json::Value = serde_json::from_str(&kiln.ok(&["inspect", "from-file"])).unwrap();
    let b: serde_json::Value = serde_json::from_str(&kiln.ok(&["inspect", "from-stdin"])).unwrap();
    assert_eq!(a["Manifest"]["layers"], b["Manifest"]["layers"]);
}

#[test]
fn saves_are_reproducible_with_source_date_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let mut outputs = Vec::new();
    for i in 0..2 {
        // Separate stores: nothing may be shared between the two runs.
        let kiln = Kiln::new(&tmp.path().join(format!("store{i}")));
        for (format, ext) in [("docker-archive", "tar"), ("oci-archive", "oci.tar")] {
            let out = kiln
                .cmd()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["import", rootfs.to_str().unwrap(), "repro:1"])
                .output()
                .unwrap();
            common::assert_success(&out, "import");
            let file = tmp.path().join(format!("save{i}.{ext}"));
            kiln.ok(&[
                "save",
                "repro:1",
                "-o",
                file.to_str().unwrap(),
                "--format",
                format,
            ]);
            outputs.push(fs::read(&file).unwrap());
        }
    }
    assert!(outputs[0] == outputs[2], "docker-archive saves differ");
    assert!(outputs[1] == outputs[3], "oci-archive saves differ");
}

#[test]
fn skopeo_reads_both_archives_and_umoci_agrees_with_export() {
    let tmp = tempfile::tempdir().unwrap();
    let kiln = busybox_image(tmp.path());
    let docker = tmp.path().join("busybox.tar");
    let oci = tmp.path().join("busybox.oci.tar");
    let layout = tmp.path().join("layout");
    kiln.ok(&[
        "save",
        "kiln-test/busybox:1",
        "-o",
        docker.to_str().unwrap(),
    ]);
    kiln.ok(&[
        "save",
        "kiln-test/busybox:1",
        "-o",
        oci.to_str().unwrap(),
        "--format",
        "oci-archive",
    ]);
    kiln.ok(&[
        "save",
        "kiln-test/busybox:1",
        "-o",
        layout.to_str().unwrap(),
        "--format",
        "oci-dir",
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln.ok(&["inspect", "kiln-test/busybox:1"])).unwrap();
    let diff_id = inspect["Config"]["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    if !have("skopeo") {
        panic!("skopeo is missing: .ci/run installs it");
    }
    for transport in [
        format!("docker-archive:{}", docker.display()),
        format!("oci-archive:{}", oci.display()),
        format!("oci:{}:1", layout.display()),
    ] {
        let out = run("skopeo", &["inspect", "--config", &transport]);
        let cfg: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            diff_id.as_str(),
            "{transport}"
        );
        assert_eq!(cfg["config"]["Cmd"][0], "/bin/sh", "{transport}");
    }

    // umoci's unpacked tree equals kiln export's tar, extracted.
    let bundle = tmp.path().join("bundle");
    let mut umoci = vec!["unpack", "--image"];
    let image_arg = format!("{}:1", layout.display());
    umoci.push(&image_arg);
    if !is_root() {
        umoci.push("--rootless");
    }
    umoci.push(bundle.to_str().unwrap());
    run("umoci", &umoci);
    let export = tmp.path().join("export.tar");
    kiln.ok(&[
        "export",
        "kiln-test/busybox:1",
        "-o",
        export.to_str().unwrap(),
    ]);
    let extracted = tmp.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    run(
        "tar",
        &[
            "--numeric-owner",
            "-xpf",
            export.to_str().unwrap(),
            "-C",
            extracted.to_str().unwrap(),
        ],
    );
    assert_eq!(
        tree_listing(&bundle.join("rootfs")),
        tree_listing(&extracted)
    );
    // And both equal the directory the image was made from.
    assert_eq!(
        tree_listing(&tmp.path().join("rootfs")),
        tree_listing(&extracted)
    );
}

#[test]
fn load_reads_what_save_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let kiln = busybox_image(tmp.path());
    let want: serde_json::Value =
        serde_json::from_str(&kiln.ok(&["inspect", "kiln-test/busybox:1"])).unwrap();
    for format in ["docker-archive", "oci-archive", "oci-dir"] {
        let file = tmp.path().join(format!("out-{format}"));
        kiln.ok(&[
            "save",
            "kiln-test/busybox:1",
            "-o",
            file.to_str().unwrap(),
            "--format",
            format,
        ]);
        let other = Kiln::new(&tmp.path().join(format!("store-{format}")));
        let out = other.ok(&["load", "-i", file.to_str().unwrap()]);
        assert!(
            out.contains("Loaded image: kiln-test/busybox:1"),
            "{format}: {out}"
        );
        let got: serde_json::Value =
            serde_json::from_str(&other.ok(&["inspect", "kiln-test/busybox:1"])).unwrap();
        assert_eq!(got["Id"], want["Id"], "{format}");
        other.ok(&["check"]);
    }
}

#[test]
fn podman_loads_and_runs_the_docker_archive() {
    if !is_root() || !have("podman") || !have("runc") {
        panic!("this test needs root, podman and runc (.ci/run installs them)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let kiln = busybox_image(tmp.path());
    let docker = tmp.path().join("busybox.tar");
    kiln.ok(&[
        "save",
        "kiln-test/busybox:1",
        "-o",
        docker.to_str().unwrap(),
    ]);
    // A private podman store, so the test leaves the host's alone.
    let podman = |args: &[&str]| common::podman(tmp.path(), args);
    let loaded = podman(&["load", "-i", docker.to_str().unwrap()]);
    assert!(loaded.contains("kiln-test/busybox:1"), "{loaded}");
    podman(&[common::PODMAN_RUN, &["kiln-test/busybox:1", "true"]].concat());
}

/// `kiln images | head -1`: the reader closes the pipe early, and kiln must
/// end quietly (as docker does, with SIGPIPE's status), never panic. The
/// reader here is gone before kiln starts, so every write meets the closed
/// pipe, whatever the timing.
#[test]
fn a_closed_pipe_ends_listings_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let kiln = busybox_image(tmp.path());
    for args in [
        &["images"][..],
        &["history", "kiln-test/busybox:1"],
        &["inspect", "kiln-test/busybox:1"],
        &["images", "--digests"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(&kiln.bin)
            .arg("--root")
            .arg(&kiln.root)
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "kiln {args:?}: {err}");
        assert_eq!(
            out.status.code(),
            Some(141),
            "kiln {args:?}: {:?} (signal {:?}), stderr {err}",
            out.status,
            out.status.signal()
        );
    }
}
