//! Issue #13's leftovers, from the user's side: `--ulimit` on `kiln build`
//! (every RUN, part of the RUN's cache key) and `kiln run`, at most kiln's
//! own hard limit with a clear error above it; `kiln build --annotation`
//! in the stored manifest and in an OCI archive, buildx's `index:` refused
//! for one platform; and `kiln run`'s docker habits: `-it` on a stdin that
//! is not a terminal refused with docker's words, `-h` is `--hostname`
//! (docker run's), `-d` says kiln has no daemon. Each runs as root and as
//! the unprivileged `kilntest` (subuid 200000:65536).

#[macro_use]
mod common;

use std::fs;
use std::process::Output;

use common::build::*;
use common::is_root;

/// A store for `who` with the busybox bases (`kiln-test/busybox:1`) and a
/// build context whose RUN records its limits.
fn setup(who: Who) -> Option<(tempfile::TempDir, std::path::PathBuf, KilnBuild)> {
    if who == Who::Kilntest && !is_root() {
        missing_prerequisite("the kilntest variant needs a root caller");
        return None;
    }
    if !kiln_build_available() {
        return None;
    }
    let tmp = scratch("kiln-habits-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         RUN echo \"$(ulimit -Sn) $(ulimit -Hn) $(ulimit -Su)\" > /limits\n",
    )
    .unwrap();
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    Some((tmp, ctx, k))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} -> {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// kiln's own hard limit of open files, as a command it runs sees it.
fn hard_nofile(k: &KilnBuild) -> u64 {
    let out = k.output(&["run", "kiln-test/busybox:1", "sh", "-c", "ulimit -Hn"]);
    assert!(out.status.success(), "{}", show("ulimit -Hn", &out));
    text(&out.stdout).trim().parse().unwrap()
}

both!(build_ulimit_reaches_every_run_and_keys_it, |who| {
    let Some((tmp, ctx, k)) = setup(who) else {
        return;
    };
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "limits:1",
            "--ulimit",
            "nofile=100:200",
            "--ulimit",
            "nproc=300",
        ],
    );
    assert!(out.status.success(), "{log}");
    let dir = tmp.path().join("rootfs");
    k.rootfs("limits:1", &dir);
    assert_eq!(
        fs::read_to_string(dir.join("limits")).unwrap(),
        "100 200 300\n"
    );
    // As BuildKit's: the limits are part of the RUN's key.
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &["--ulimit", "nofile=100:200", "--ulimit", "nproc=300"],
    );
    assert!(out.status.success(), "{log}");
    assert!(exec_steps(&log).iter().all(|s| s.cached), "{log}");
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &["--ulimit", "nofile=101:200", "--ulimit", "nproc=300"],
    );
    assert!(out.status.success(), "{log}");
    assert!(exec_steps(&log).iter().any(|s| !s.cached), "{log}");

    // Above kiln's own hard limit: refused before anything is built,
    // naming the limit; so are unknown names and malformed values.
    let above = format!("nofile=100:{}", hard_nofile(&k) + 1);
    for (bad, says) in [
        (above.as_str(), "above kiln's own"),
        ("nofiles=1", "unknown limit \"nofiles\""),
        ("nofile=10:5", "above the hard limit 5"),
        ("nofile=lots", "not a number"),
        ("nofile", "NAME=SOFT[:HARD]"),
    ] {
        let (out, _, log) = kiln_build(&k, &ctx, &["--ulimit", bad]);
        assert!(!out.status.success(), "{bad}: {log}");
        assert!(log.contains(says), "{bad}: {log}");
        assert!(!log.contains("RUN"), "{bad}: built before refusing: {log}");
    }
});

both!(run_ulimit_is_dockers, |who| {
    let Some((_tmp, _ctx, k)) = setup(who) else {
        return;
    };
    let out = k.output(&[
        "run",
        "--ulimit",
        "nofile=64:128",
        "--ulimit",
        "core=0",
        "kiln-test/busybox:1",
        "sh",
        "-c",
        "echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -c)",
    ]);
    assert!(out.status.success(), "{}", show("run --ulimit", &out));
    assert_eq!(text(&out.stdout), "64 128 0\n");
    let above = format!("nofile={}", hard_nofile(&k) + 1);
    let out = k.output(&["run", "--ulimit", &above, "kiln-test/busybox:1", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CAP_SYS_RESOURCE"),
        "{}",
        show("run --ulimit above", &out)
    );
});

both!(build_annotations_reach_the_manifest, |who| {
    let Some((tmp, ctx, k)) = setup(who) else {
        return;
    };
    // Written by `who`: a directory anyone may write to.
    let outdir = tmp.path().join("out");
    fs::create_dir(&outdir).unwrap();
    fs::set_permissions(
        &outdir,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let oci = outdir.join("out.oci.tar");
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "annotated:1",
            "--annotation",
            "org.opencontainers.image.title=app",
            "--annotation",
            "manifest:com.example.build=42",
            "--annotation",
            "manifest[linux/s390x]:other.platform=no",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
        ],
    );
    assert!(out.status.success(), "{log}");
    // Beside the user's, the base image's name and digest, as BuildKit
    // writes them (what `kiln rebase` without flags follows).
    let base: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "kiln-test/busybox:1"])).unwrap();
    let want = serde_json::json!({
        "org.opencontainers.image.title": "app",
        "com.example.build": "42",
        "org.opencontainers.image.base.name": "docker.io/kiln-test/busybox:1",
        "org.opencontainers.image.base.digest": base["Digest"],
    });
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "annotated:1"])).unwrap();
    assert_eq!(v["Manifest"]["annotations"], want, "{v}");
    // The archive's manifest carries them too.
    let dir = tmp.path().join("oci");
    extract_tar(&oci, &dir);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            dir.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["annotations"], want, "{manifest}");
    // One platform has no index: buildx's own refusal.
    for bad in ["index:a=1", "index-descriptor:a=1"] {
        let (out, _, log) = kiln_build(&k, &ctx, &["--annotation", bad]);
        assert!(!out.status.success(), "{bad}: {log}");
        assert!(
            log.contains("index annotations not supported for single platform export"),
            "{bad}: {log}"
        );
    }
});

both!(run_refuses_what_docker_refuses, |who| {
    let Some((tmp, _ctx, k)) = setup(who) else {
        return;
    };
    // -it with a pipe for stdin: docker's words, and nothing runs.
    let marker = tmp.path().join("ran");
    let out = k.output(&[
        "run",
        "-it",
        "-v",
        &format!("{}:/out", tmp.path().display()),
        "kiln-test/busybox:1",
        "touch",
        "/out/ran",
    ]);
    assert!(!out.status.success(), "{}", show("run -it", &out));
    assert!(
        text(&out.stderr).contains("the input device is not a TTY"),
        "{}",
        show("run -it", &out)
    );
    assert!(!marker.exists());
    // -t alone (no stdin) needs no terminal on stdin, as with docker.
    let out = k.output(&["run", "-t", "kiln-test/busybox:1", "true"]);
    assert!(out.status.success(), "{}", show("run -t", &out));
    // -d: no daemon to keep it.
    let out = k.output(&["run", "-d", "kiln-test/busybox:1", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("kiln has no daemon: detached containers are not supported"),
        "{}",
        show("run -d", &out)
    );
});

both!(run_h_is_hostname_as_docker, |who| {
    let Some((_tmp, _ctx, k)) = setup(who) else {
        return;
    };
    let out = k.output(&["run", "-h", "box1", "kiln-test/busybox:1", "hostname"]);
    assert!(out.status.success(), "{}", show("run -h", &out));
    assert_eq!(text(&out.stdout), "box1\n");
    let out = k.output(&["run", "--help"]);
    assert!(out.status.success(), "{}", show("run --help", &out));
    let help = text(&out.stdout);
    assert!(help.contains("-h, --hostname"), "{help}");
    assert!(help.contains("--ulimit"), "{help}");
});

/// `kiln run -it` is refused before the image is looked at: nothing is
/// pulled for a run that cannot happen.
#[test]
fn run_it_is_refused_before_pulling() {
    let d = scratch("kiln-habits-nopull-");
    let k = KilnBuild::new(&d.path().join("store"), Who::Caller);
    let out = k.output(&["run", "-it", "localhost:1/never/pulled:1", "true"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("the input device is not a TTY"), "{err}");
    assert!(!err.contains("Unable to find image"), "{err}");
}
