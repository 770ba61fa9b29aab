//! Indexes: `kiln build --platform linux/amd64,linux/arm64` of a
//! cross-compiling multi-stage Dockerfile pushes one index with both
//! platforms (read back by skopeo); `kiln manifest` makes and edits lists
//! with podman's verbs; mutating an index without `--platform` names the
//! platforms it has and writes nothing.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

mod common;
mod surgery_support;

use std::process::Command;

use common::assert_success;
use common::build::missing_prerequisite;
use common::{have, is_root};
use support::{Auth, Registry, kiln, kiln_ok};
use surgery_support::*;

/// The build stage runs on the build platform and writes what it was
/// asked for; the image stage only copies (no RUN for a foreign
/// architecture).
const DOCKERFILE: &str = "FROM --platform=$BUILDPLATFORM surgery/busybox:1 AS build\n\
ARG TARGETARCH\n\
RUN echo \"built for $TARGETARCH\" > /out\n\
FROM scratch\n\
COPY --from=build /out /out\n";

fn skopeo_json(args: &[&str], reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(args)
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert_success(&out, &format!("skopeo inspect {args:?} {reference}"));
    json(&String::from_utf8_lossy(&out.stdout))
}

fn platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn multi_platform_build_pushes_one_index() {
    if !is_root() || !have("skopeo") {
        missing_prerequisite("root (kiln build runs RUN) and skopeo");
        return;
    }
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/busybox:1");
    let ctx = h.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let app = format!("{}/idx/app:1", reg.host());
    ok_epoch(
        h,
        &[
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &app,
            "--push",
            ctx.to_str().unwrap(),
        ],
    );

    let index = skopeo_json(&["--raw"], &app);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64"]);
    for arch in ["amd64", "arm64"] {
        let config = skopeo_json(&["--config", "--override-arch", arch], &app);
        assert_eq!(config["architecture"], arch, "{config}");
        assert_eq!(config["os"], "linux");
        // Each platform's image holds what its build stage wrote for it.
        let name = format!("idx/{arch}:1");
        kiln_ok(
            h,
            &[
                "copy",
                "--platform",
                &format!("linux/{arch}"),
                &format!("docker://{app}"),
                &format!("kiln:{name}"),
            ],
        );
        let tar = h.join(format!("{arch}.tar"));
        kiln_ok(h, &["export", &name, "-o", tar.to_str().unwrap()]);
        let dir = h.join(format!("x-{arch}"));
        listing_of_tar(&tar, &dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("out")).unwrap(),
            format!("built for {arch}\n")
        );
    }
    // `kiln layers` reads a registry index's image for a platform.
    let arm = json(&kiln_ok(
        h,
        &[
            "layers",
            &format!("docker://{app}"),
            "--platform",
            "linux/arm64",
            "--format",
            "json",
        ],
    ));
    assert_eq!(arm.as_array().unwrap().len(), 1, "{arm}");
    assert_eq!(arm[0]["files"], 1);
    assert_eq!(arm[0]["content_size"], "built for arm64\n".len());
    // The store has the index under the tag too.
    let stored = json(&kiln_ok(h, &["manifest", "inspect", &app]));
    assert_eq!(platforms(&stored), ["linux/amd64", "linux/arm64"]);

    // Mutating the index needs a platform, and the error names them.
    let out = kiln(
        h,
        &[
            "mutate",
            &format!("docker://{app}"),
            "-t",
            &format!("docker://{}/idx/app:2", reg.host()),
            "--env",
            "A=1",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64") && err.contains("--platform"),
        "{err}"
    );
    let tags = kiln(h, &["tags", &format!("{}/idx/app", reg.host())]);
    assert_eq!(String::from_utf8_lossy(&tags.stdout).trim(), "1");

    // Several platforms and an archive output: refused before building.
    let out = kiln(
        h,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=oci,dest={}", h.join("o.tar").display()),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(!h.join("o.tar").exists());
}

#[test]
fn manifest_verbs_make_and_edit_a_list() {
    if !have("skopeo") {
        missing_prerequisite("skopeo, to read the pushed list back");
        return;
    }
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    busybox_base(h, "surgery/busybox:1");
    // A second image, relabelled as arm64 (its files do not matter here).
    kiln_ok(
        h,
        &[
            "mutate",
            "surgery/busybox:1",
            "-t",
            "surgery/other:1",
            "--env",
            "X=1",
        ],
    );
    let amd = json(&kiln_ok(h, &["inspect", "surgery/busybox:1"]))["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let other = json(&kiln_ok(h, &["inspect", "surgery/other:1"]))["Digest"]
        .as_str()
        .unwrap()
        .to_string();

    kiln_ok(
        h,
        &["manifest", "create", "lists/app:1", "surgery/busybox:1"],
    );
    // create again: refused, the list stays.
    let out = kiln(h, &["manifest", "create", "lists/app:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--amend"));
    kiln_ok(
        h,
        &[
            "manifest",
            "add",
            "lists/app:1",
            "surgery/other:1",
            "--arch",
            "arm64",
            "--variant",
            "v8",
            "--annotation",
            "org.example.role=second",
        ],
    );
    kiln_ok(
        h,
        &[
            "manifest",
            "annotate",
            "lists/app:1",
            &amd,
            "--annotation",
            "org.example.role=first",
        ],
    );
    kiln_ok(
        h,
        &[
            "manifest",
            "annotate",
            "lists/app:1",
            "--index",
            "--annotation",
            "org.example.list=yes",
        ],
    );
    let list = json(&kiln_ok(h, &["manifest", "inspect", "lists/app:1"]));
    assert_eq!(platforms(&list), ["linux/amd64", "linux/arm64"]);
    assert_eq!(list["manifests"][0]["digest"], amd.as_str());
    assert_eq!(list["manifests"][1]["digest"], other.as_str());
    assert_eq!(list["manifests"][1]["platform"]["variant"], "v8");
    assert_eq!(
        list["manifests"][0]["annotations"]["org.example.role"],
        "first"
    );
    assert_eq!(
        list["manifests"][1]["annotations"]["org.example.role"],
        "second"
    );
    assert_eq!(list["annotations"]["org.example.list"], "yes");

    // An entry that is not there: an error listing what is.
    let missing = format!("sha256:{}", "0".repeat(64));
    let out = kiln(h, &["manifest", "remove", "lists/app:1", &missing]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("linux/arm64/v8"));

    // Push, and skopeo reads the list with both entries.
    let dest = format!("{}/lists/app:1", reg.host());
    kiln_ok(
        h,
        &[
            "manifest",
            "push",
            "lists/app:1",
            &format!("docker://{dest}"),
        ],
    );
    let pushed = skopeo_json(&["--raw"], &dest);
    assert_eq!(platforms(&pushed), ["linux/amd64", "linux/arm64"]);
    assert_eq!(pushed["annotations"]["org.example.list"], "yes");
    let config = skopeo_json(&["--config", "--override-arch", "amd64"], &dest);
    assert_eq!(config["architecture"], "amd64");

    // Remove an entry, then the list; the images stay.
    kiln_ok(h, &["manifest", "remove", "lists/app:1", &other]);
    let list = json(&kiln_ok(h, &["manifest", "inspect", "lists/app:1"]));
    assert_eq!(platforms(&list), ["linux/amd64"]);
    // A list made from a registry index, every platform of it.
    kiln_ok(
        h,
        &[
            "manifest",
            "create",
            "lists/copy:1",
            &format!("docker://{dest}"),
            "--all",
        ],
    );
    let copy = json(&kiln_ok(h, &["manifest", "inspect", "lists/copy:1"]));
    assert_eq!(platforms(&copy), ["linux/amd64", "linux/arm64"]);
    kiln_ok(h, &["manifest", "rm", "lists/app:1", "lists/copy:1"]);
    let out = kiln(h, &["manifest", "inspect", "lists/app:1"]);
    assert!(!out.status.success());
    kiln_ok(h, &["inspect", "surgery/other:1"]);
    // The crane form still prints a registry's manifest.
    let raw = json(&kiln_ok(h, &["manifest", &dest]));
    assert_eq!(platforms(&raw), ["linux/amd64", "linux/arm64"]);
}

#[test]
fn multi_platform_build_and_lists_as_kilntest() {
    use common::build::{BUSYBOX_IMAGE, KilnBuild, Who, give_to_kilntest, import_bases, scratch};
    if !is_root() {
        missing_prerequisite("root, to run kiln as the kilntest user");
        return;
    }
    let tmp = scratch("kiln-index-");
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Kilntest);
    import_bases(&k, false);
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        DOCKERFILE.replace("surgery/busybox:1", BUSYBOX_IMAGE),
    )
    .unwrap();
    give_to_kilntest(&ctx);
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "idx/app:1",
        ctx.to_str().unwrap(),
    ]);
    let index = json(&k.ok(&["manifest", "inspect", "idx/app:1"]));
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64"]);
    k.ok(&["manifest", "create", "idx/list:1", BUSYBOX_IMAGE]);
    let list = json(&k.ok(&["manifest", "inspect", "idx/list:1"]));
    assert_eq!(platforms(&list), ["linux/amd64"]);
    k.ok(&["manifest", "rm", "idx/list:1"]);
    assert!(
        !k.output(&["manifest", "inspect", "idx/list:1"])
            .status
            .success()
    );
}
