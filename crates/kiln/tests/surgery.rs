//! Image surgery without a rebuild: `kiln mutate`, `config` and `append`,
//! against a real docker-registry on 127.0.0.1 and read back by skopeo and
//! podman. Registry to registry, base layers are never downloaded (the
//! registry's own log says so); bad input is refused by name and leaves no
//! tag behind. Flatten and rebase are in `surgery_layers.rs`.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

mod common;
mod surgery_support;

use common::{PODMAN_RUN, podman};

use std::process::Command;

use common::build::missing_prerequisite;
use common::{assert_success, have, is_root};
use support::{Auth, Registry, TestImage, kiln, kiln_ok};
use surgery_support::*;

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
    let podman = |args: &[&str]| podman(h, args);
    podman(&["pull", "--tls-verify=false", &appended]);
    let ran = podman(&[PODMAN_RUN, &[&appended]].concat());
    assert_eq!(ran, "hi there\nhello from append\nmotd from --file\n");
    let ls = podman(
        &[
            PODMAN_RUN,
            &[
                "--entrypoint",
                "/bin/ls",
                &appended,
                "-ln",
                "/app/sub/data",
                "/etc/motd",
            ],
        ]
        .concat(),
    );
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

    // A platform asked for is never silently another one.
    let out = kiln(
        h,
        &[
            "mutate",
            "surgery/base:1",
            "-t",
            "surgery/p:1",
            "--platform",
            "linux/s390x",
            "--env",
            "A=1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not linux/s390x"), "{err}");

    // Without -t the tag moves; an image named by ID has no tag to move.
    let id = json(&kiln_ok(h, &["inspect", "surgery/base:1"]))["Id"]
        .as_str()
        .unwrap()[7..19]
        .to_string();
    let out = kiln(h, &["mutate", &id, "--env", "A=1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a tag to move"));

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
            // (`[broken` is not bad: docker reads it as the shell form.)
            "--entrypoint",
            "",
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
