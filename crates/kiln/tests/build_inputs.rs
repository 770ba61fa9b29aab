//! Where `kiln build` takes its inputs from, and where it sends its result,
//! end to end: a context tar (plain and compressed) or a bare Dockerfile
//! on standard input, hostile context tars, a git repository served on
//! 127.0.0.1, an OCI layout as a named context, `--platform` against a
//! hand-made multi-arch index, `--network`, and `--push` to a real
//! `docker-registry` checked with skopeo.

mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::build::*;
use serde_json::Value;
use sha2::Digest as _;

/// A store with the busybox base, or None (loudly) without `kiln build`.
fn setup(name: &str) -> Option<(tempfile::TempDir, KilnBuild)> {
    if !kiln_build_available() {
        missing_prerequisite(&format!("build_inputs::{name}: no `kiln build`"));
        return None;
    }
    let tmp = scratch("kiln-bt-inputs-");
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    Some((tmp, k))
}

/// `kiln build --progress=plain ARGS...` with `stdin` on standard input.
fn build_with_stdin(k: &KilnBuild, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = k
        .cmd()
        .arg("build")
        .arg("--progress=plain")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln build");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn log_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", log_of(out));
}

/// One file of an image's filesystem.
fn file_of(k: &KilnBuild, image: &str, path: &str, work: &Path) -> Option<String> {
    let dir = work.join(format!("rootfs-{}", image.replace(['/', ':'], "_")));
    let _ = fs::remove_dir_all(&dir);
    k.rootfs(image, &dir);
    fs::read_to_string(dir.join(path.trim_start_matches('/'))).ok()
}

/// Temporary contexts left in the store (there must be none after a build).
fn leftover_contexts(store: &Path) -> Vec<String> {
    fs::read_dir(store.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("context-"))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------ tar writer

/// A ustar header and body; `kind` is the typeflag (`b'0'` file, `b'2'`
/// symlink, `b'5'` directory). Written by hand so that hostile names
/// (`../x`) go in exactly as given.
fn tar_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode: &[u8] = if kind == b'5' { b"0000755" } else { b"0000644" };
    h[100..107].copy_from_slice(mode);
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"14531000000");
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn tar_end(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `tool -c` of `data` (gzip, bzip2, xz, zstd).
fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || input.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success(), "{tool} failed");
    out.stdout
}

// ------------------------------------------------------------ stdin

#[test]
fn context_tar_on_stdin_in_every_compression() {
    let Some((tmp, k)) = setup("context_tar_on_stdin_in_every_compression") else {
        return;
    };
    let mut t = Vec::new();
    tar_entry(&mut t, "sub/", b'5', "", b"");
    tar_entry(
        &mut t,
        "sub/Dockerfile.alt",
        b'0',
        "",
        b"FROM kiln-test/busybox:1\nCOPY hello.txt /hello.txt\nCOPY sub/ /sub/\n",
    );
    tar_entry(&mut t, "hello.txt", b'0', "", b"hello from a tar\n");
    tar_entry(&mut t, "skipped.txt", b'0', "", b"ignored\n");
    tar_entry(&mut t, ".dockerignore", b'0', "", b"skipped.txt\n");
    tar_entry(
        &mut t,
        "Dockerfile",
        b'0',
        "",
        b"FROM kiln-test/busybox:1\nCOPY . /ctx/\n",
    );
    let plain = tar_end(t);

    // The default Dockerfile at the root of the tar; .dockerignore applies.
    let out = build_with_stdin(&k, &["-t", "stdin:plain", "-"], &plain);
    ok(&out, "build from a plain tar on stdin");
    let work = tmp.path();
    assert_eq!(
        file_of(&k, "stdin:plain", "/ctx/hello.txt", work).as_deref(),
        Some("hello from a tar\n")
    );
    assert_eq!(file_of(&k, "stdin:plain", "/ctx/skipped.txt", work), None);

    // -f names a file inside the tar; each compression is detected.
    for tool in ["gzip", "bzip2", "xz", "zstd"] {
        if !have(tool) {
            missing_prerequisite(&format!("{tool} missing: its stdin context case"));
            continue;
        }
        let tag = format!("stdin:{tool}");
        let out = build_with_stdin(
            &k,
            &["-t", &tag, "-f", "sub/Dockerfile.alt", "-"],
            &compress(tool, &plain),
        );
        ok(&out, &format!("build from a {tool} tar on stdin"));
        assert_eq!(
            file_of(&k, &tag, "/hello.txt", work).as_deref(),
            Some("hello from a tar\n"),
            "{tool}"
        );
        assert!(
            file_of(&k, &tag, "/sub/Dockerfile.alt", work).is_some(),
            "{tool}"
        );
    }
    assert_eq!(leftover_contexts(&k.root), Vec::<String>::new());
}

#[test]
fn bare_dockerfile_on_stdin_has_no_context() {
    let Some((tmp, k)) = setup("bare_dockerfile_on_stdin_has_no_context") else {
        return;
    };
    let out = build_with_stdin(
        &k,
        &["-t", "bare:1", "-"],
        b"FROM kiln-test/busybox:1\nRUN echo made > /made.txt\n",
    );
    ok(&out, "build of a bare Dockerfile on stdin");
    assert_eq!(
        file_of(&k, "bare:1", "/made.txt", tmp.path()).as_deref(),
        Some("made\n")
    );
    // A COPY from the (missing) context fails and says why.
    let out = build_with_stdin(
        &k,
        &["-t", "bare:2", "-"],
        b"FROM kiln-test/busybox:1\nCOPY app.txt /app.txt\n",
    );
    let log = log_of(&out);
    assert!(
        !out.status.success(),
        "COPY without a context built:\n{log}"
    );
    assert!(
        log.contains("no build context") && log.contains("app.txt"),
        "unclear error:\n{log}"
    );
    // Standard input cannot be both.
    let out = build_with_stdin(&k, &["-f", "-", "-"], b"FROM scratch\n");
    assert!(!out.status.success());
    assert!(log_of(&out).contains("standard input"), "{}", log_of(&out));
    assert_eq!(leftover_contexts(&k.root), Vec::<String>::new());
}

#[test]
fn hostile_context_tars_stay_inside() {
    let Some((tmp, k)) = setup("hostile_context_tars_stay_inside") else {
        return;
    };
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let df = b"FROM kiln-test/busybox:1\nCOPY . /ctx/\n";

    // A `..` entry deep enough to reach the outside directory.
    let mut t = Vec::new();
    tar_entry(&mut t, "Dockerfile", b'0', "", df);
    let climb = format!(
        "{}{}/climbed.txt",
        "../".repeat(30),
        outside.display().to_string().trim_start_matches('/')
    );
    tar_entry(&mut t, &climb, b'0', "", b"escaped\n");
    let out = build_with_stdin(&k, &["-t", "hostile:1", "-"], &tar_end(t));
    assert!(
        !outside.join("climbed.txt").exists(),
        "a `..` entry escaped:\n{}",
        log_of(&out)
    );

    // An absolute symlink, then a file through it.
    let mut t = Vec::new();
    tar_entry(&mut t, "Dockerfile", b'0', "", df);
    tar_entry(&mut t, "evil", b'2', &outside.display().to_string(), b"");
    tar_entry(&mut t, "evil/pwned.txt", b'0', "", b"escaped\n");
    let out = build_with_stdin(&k, &["-t", "hostile:2", "-"], &tar_end(t));
    assert!(
        !outside.join("pwned.txt").exists(),
        "a file went through an absolute symlink:\n{}",
        log_of(&out)
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // COPY through that symlink is refused: it points outside the context.
    let mut t = Vec::new();
    tar_entry(
        &mut t,
        "Dockerfile",
        b'0',
        "",
        b"FROM kiln-test/busybox:1\nCOPY evil/secret.txt /s\n",
    );
    tar_entry(&mut t, "evil", b'2', &outside.display().to_string(), b"");
    fs::write(outside.join("secret.txt"), "host file\n").unwrap();
    let out = build_with_stdin(&k, &["-t", "hostile:3", "-"], &tar_end(t));
    let log = log_of(&out);
    assert!(!out.status.success(), "COPY read a host file:\n{log}");
    assert!(log.contains("outside the build context"), "{log}");

    // A Dockerfile that is a symlink to a host file is not read.
    let mut t = Vec::new();
    tar_entry(&mut t, "Dockerfile", b'2', "/etc/hostname", b"");
    let out = build_with_stdin(&k, &["-t", "hostile:4", "-"], &tar_end(t));
    let log = log_of(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("outside the build context"), "{log}");
    assert_eq!(leftover_contexts(&k.root), Vec::<String>::new());
}

// ------------------------------------------------------------ git

#[test]
fn git_repository_as_the_context() {
    let Some((tmp, k)) = setup("git_repository_as_the_context") else {
        return;
    };
    if !have("git") {
        missing_prerequisite("git missing: build_inputs::git_repository_as_the_context");
        return;
    }
    // A repository served over git's dumb HTTP, as the ADD git case does.
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    sh(&format!(
        "set -eu; cd '{}'; \
         export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com; \
         git -c init.defaultBranch=main init -q src; cd src; \
         mkdir app; printf 'FROM kiln-test/busybox:1\\nCOPY . /app/\\n' > app/Dockerfile; \
         echo 'v1 app' > app/file.txt; \
         printf 'FROM kiln-test/busybox:1\\nCOPY app/file.txt /root-file.txt\\n' > Dockerfile; \
         git add -A; git commit -qm v1; git tag v1; \
         echo 'main app' > app/file.txt; git commit -qam main; cd ..; \
         git clone -q --bare src repo.git; git -C repo.git update-server-info; rm -rf src",
        served.display()
    ));
    let http = serve_http(&served);

    // #ref:subdir: the tag, and the subdirectory as the context root.
    let url = format!("{http}/repo.git#v1:app");
    let (out, _, log) = kiln_build(&k, Path::new(&url), &["-t", "git:sub"]);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        file_of(&k, "git:sub", "/app/file.txt", tmp.path()).as_deref(),
        Some("v1 app\n")
    );
    assert_eq!(file_of(&k, "git:sub", "/app/.git/HEAD", tmp.path()), None);

    // The default branch, the whole repository, its root Dockerfile.
    let url = format!("{http}/repo.git");
    let (out, _, log) = kiln_build(&k, Path::new(&url), &["-t", "git:root"]);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        file_of(&k, "git:root", "/root-file.txt", tmp.path()).as_deref(),
        Some("main app\n")
    );

    // A subdirectory that is not there is a clear error.
    let url = format!("{http}/repo.git#main:nope");
    let (out, _, log) = kiln_build(&k, Path::new(&url), &["-t", "git:bad"]);
    assert!(!out.status.success());
    assert!(log.contains("nope"), "{log}");
    assert_eq!(leftover_contexts(&k.root), Vec::<String>::new());
}

// ------------------------------------------------------------ OCI layouts and platforms

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// An OCI layout at `dir` whose entry `multi` is an index of the busybox
/// image for the host (amd64) and a copy of it whose config says
/// linux/arm64/v8 and carries `MARK=arm64`. Returns the arm64 manifest's
/// digest.
fn multi_arch_layout(k: &KilnBuild, dir: &Path) -> String {
    k.ok(&["copy", BUSYBOX_IMAGE, &format!("oci:{}:amd", dir.display())]);
    let index = read_json(&dir.join("index.json"));
    let amd = index["manifests"][0].clone();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest = read_json(&blob(amd["digest"].as_str().unwrap()));
    let mut config = read_json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(
        config["architecture"], "amd64",
        "the test expects an amd64 host"
    );
    config["architecture"] = "arm64".into();
    config["variant"] = "v8".into();
    if !config["config"]["Env"].is_array() {
        config["config"]["Env"] = serde_json::json!([]);
    }
    config["config"]["Env"]
        .as_array_mut()
        .unwrap()
        .push("MARK=arm64".into());
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let mut arm_manifest = manifest.clone();
    arm_manifest["config"]["digest"] = put_blob(dir, &config_bytes).into();
    arm_manifest["config"]["size"] = config_bytes.len().into();
    let arm_bytes = serde_json::to_vec(&arm_manifest).unwrap();
    let arm_digest = put_blob(dir, &arm_bytes);
    let mut amd_entry = amd.clone();
    amd_entry.as_object_mut().unwrap().remove("annotations");
    amd_entry["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            amd_entry,
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": arm_digest,
                "size": arm_bytes.len(),
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
        ],
    });
    let nested_bytes = serde_json::to_vec(&nested).unwrap();
    let nested_digest = put_blob(dir, &nested_bytes);
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nested_digest,
            "size": nested_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    arm_digest
}

fn host_is_amd64() -> bool {
    std::env::consts::ARCH == "x86_64"
}

/// Whether the kernel runs arm64 executables already (qemu-user).
fn binfmt_runs_arm64() -> bool {
    fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|rd| {
            rd.flatten().any(|e| {
                fs::read_to_string(e.path())
                    .is_ok_and(|t| t.starts_with("enabled") && t.contains("0200b700"))
            })
        })
        .unwrap_or(false)
}

#[test]
fn oci_layout_as_a_named_context() {
    let Some((tmp, k)) = setup("oci_layout_as_a_named_context") else {
        return;
    };
    let layout = tmp.path().join("layout");
    k.ok(&[
        "copy",
        BUSYBOX_IMAGE,
        &format!("oci:{}:v1", layout.display()),
    ]);
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nCOPY --from=tools /etc/os-release /from-tools\nLABEL from=layout\n",
    )
    .unwrap();
    for (tag, value) in [
        (
            "layout:tag",
            format!("oci-layout://{}:v1", layout.display()),
        ),
        (
            "layout:digest",
            format!("oci-layout://{}@{digest}", layout.display()),
        ),
    ] {
        let (out, _, log) = kiln_build(
            &k,
            &ctx,
            &[
                "-t",
                tag,
                "--build-context",
                &format!("base={value}"),
                "--build-context",
                &format!("tools={value}"),
            ],
        );
        assert!(out.status.success(), "{log}");
        assert_eq!(
            file_of(&k, tag, "/from-tools", tmp.path()).as_deref(),
            Some("NAME=busybox\nID=busybox\n")
        );
        assert!(
            file_of(&k, tag, "/etc/passwd", tmp.path()).is_some_and(|p| p.starts_with("root:")),
            "FROM the layout did not give busybox's filesystem"
        );
    }
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "--build-context",
            &format!("base=oci-layout://{}:nosuchtag", layout.display()),
            "--build-context",
            "tools=docker-image://kiln-test/busybox:1",
        ],
    );
    assert!(!out.status.success());
    assert!(log.contains("nosuchtag"), "{log}");
}

/// Platforms that do not fit are errors that name what there is, or, where
/// no platform was asked for, an honest warning; a list of platforms is not
/// read as one.
#[test]
fn platform_mismatches_are_named() {
    let Some((tmp, k)) = setup("platform_mismatches_are_named") else {
        return;
    };
    if !host_is_amd64() {
        loud("not an amd64 host: build_inputs platform mismatch test SKIPPED");
        return;
    }
    let layout = tmp.path().join("multi");
    multi_arch_layout(&k, &layout);
    let multi = format!("oci:{}:multi", layout.display());
    // Only the arm64 image into the store.
    k.ok(&[
        "copy",
        "--platform",
        "linux/arm64",
        &multi,
        "kiln-test/arm:1",
    ]);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f.txt"), "data\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/arm:1\nCOPY f.txt /f.txt\n",
    )
    .unwrap();

    // A list of platforms, one of them the base lacks: that build fails
    // naming both, and nothing (no index, no image) is tagged.
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &["-t", "plat:list", "--platform", "linux/arm64,linux/amd64"],
    );
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("linux/arm64") && log.contains("linux/amd64"),
        "{log}"
    );
    assert!(!k.ok(&["images"]).contains("plat"), "a failed build tagged");

    // Asked for amd64, the base has arm64 only: an error naming both.
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "plat:amd", "--platform", "linux/amd64"]);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("linux/arm64") && log.contains("linux/amd64"),
        "{log}"
    );

    // Nothing asked for: a warning, and the result says what it is.
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "plat:implicit"]);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("no --platform was asked for"), "{log}");
    let config = k.config_blob("plat:implicit");
    assert_eq!(config["architecture"], "arm64", "{config}");

    // Copying (as pulling) one image for a platform it is not for fails,
    // naming its platform; an index without the platform lists its own.
    let out = k.output(&[
        "copy",
        "--platform",
        "linux/arm64",
        BUSYBOX_IMAGE,
        &format!("oci:{}:x", tmp.path().join("x").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("linux/amd64 only, not the requested linux/arm64"),
        "{err}"
    );
    let out = k.output(&[
        "copy",
        "--platform",
        "linux/s390x",
        &multi,
        "kiln-test/s390x:1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("linux/amd64, linux/arm64/v8"), "{err}");
    // Without --platform the host's is assumed, and a copy still works.
    k.ok(&[
        "copy",
        BUSYBOX_IMAGE,
        &format!("oci:{}:y", tmp.path().join("y").display()),
    ]);
}

#[test]
fn foreign_platform_picks_its_manifest_and_refuses_to_run() {
    let Some((tmp, k)) = setup("foreign_platform_picks_its_manifest_and_refuses_to_run") else {
        return;
    };
    if !host_is_amd64() {
        loud("not an amd64 host: build_inputs foreign platform test SKIPPED");
        return;
    }
    let layout = tmp.path().join("multi");
    let arm_digest = multi_arch_layout(&k, &layout);
    // The index into the store, every platform of it.
    k.ok(&[
        "copy",
        "--all",
        &format!("oci:{}:multi", layout.display()),
        "kiln-test/multi:1",
    ]);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f.txt"), "data\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE=kiln-test/multi:1\n\
         FROM $BASE\n\
         ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDARCH\n\
         LABEL target=$TARGETPLATFORM os=$TARGETOS arch=$TARGETARCH variant=\"$TARGETVARIANT\" build=$BUILDPLATFORM buildarch=$BUILDARCH\n\
         COPY f.txt /f.txt\n",
    )
    .unwrap();
    for (tag, extra) in [
        ("plat:store", vec![]),
        (
            "plat:layout",
            vec![
                "--build-arg=BASE=multi".to_string(),
                format!(
                    "--build-context=multi=oci-layout://{}:multi",
                    layout.display()
                ),
            ],
        ),
    ] {
        let mut flags = vec!["-t", tag, "--platform", "linux/arm64"];
        flags.extend(extra.iter().map(String::as_str));
        let (out, _, log) = kiln_build(&k, &ctx, &flags);
        assert!(out.status.success(), "{log}");
        let config = k.config_blob(tag);
        assert_eq!(config["architecture"], "arm64", "{config}");
        assert_eq!(config["os"], "linux");
        let rt = runtime_config(&config);
        let env = rt["Env"].to_string();
        assert!(env.contains("MARK=arm64"), "not the arm64 manifest: {env}");
        let labels = &rt["Labels"];
        assert_eq!(labels["target"], "linux/arm64", "{labels}");
        assert_eq!(labels["arch"], "arm64");
        assert_eq!(labels["os"], "linux");
        assert_eq!(labels["variant"], "");
        assert_eq!(labels["build"], "linux/amd64");
        assert_eq!(labels["buildarch"], "amd64");
        assert_eq!(
            file_of(&k, tag, "/f.txt", tmp.path()).as_deref(),
            Some("data\n")
        );
    }
    // A base named by the digest of the arm64 manifest is that image.
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "plat:digest",
            "--platform",
            "linux/arm64",
            "--build-arg",
            "BASE=multi",
            &format!(
                "--build-context=multi=oci-layout://{}@{arm_digest}",
                layout.display()
            ),
        ],
    );
    assert!(out.status.success(), "{log}");
    assert!(
        runtime_config(&k.config_blob("plat:digest"))["Env"]
            .to_string()
            .contains("MARK=arm64")
    );

    // The host platform still gets the amd64 image.
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "plat:host"]);
    assert!(out.status.success(), "{log}");
    let config = k.config_blob("plat:host");
    assert_eq!(config["architecture"], "amd64");
    assert!(
        !runtime_config(&config)["Env"]
            .to_string()
            .contains("MARK=arm64")
    );

    // A RUN for arm64 fails before it starts, naming step and platform.
    if binfmt_runs_arm64() {
        loud("binfmt_misc runs arm64 here: the no-emulation RUN case SKIPPED");
        return;
    }
    fs::write(
        ctx.join("Dockerfile.run"),
        "FROM kiln-test/multi:1\nRUN echo hi > /hi\n",
    )
    .unwrap();
    let df = ctx.join("Dockerfile.run");
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &["-f", df.to_str().unwrap(), "--platform", "linux/arm64"],
    );
    assert!(
        !out.status.success(),
        "an arm64 RUN ran without emulation:\n{log}"
    );
    assert!(
        log.contains("RUN echo hi") && log.contains("linux/arm64") && log.contains("binfmt_misc"),
        "unclear error:\n{log}"
    );
}

// ------------------------------------------------------------ network

#[test]
fn network_flag_is_the_run_default() {
    let Some((tmp, k)) = setup("network_flag_is_the_run_default") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /net.txt\n\
         RUN --network=host tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /host.txt\n",
    )
    .unwrap();
    // RUN --network=host is the Dockerfile's to ask, the user's to allow.
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "net:none",
            "--network",
            "none",
            "--allow",
            "network.host",
        ],
    );
    assert!(out.status.success(), "{log}");
    assert_eq!(
        file_of(&k, "net:none", "/net.txt", tmp.path()).as_deref(),
        Some("lo\n")
    );
    // RUN --network=host overrides the build's default.
    let host = file_of(&k, "net:none", "/host.txt", tmp.path()).unwrap();
    assert_ne!(host, "lo\n", "RUN --network=host was isolated");

    // The network is part of the RUN's cache key: without --network none
    // the first RUN runs again, on the build's private network (lo and
    // slirp4netns's tap0, not the host's interfaces).
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "net:default", "--allow", "network.host"]);
    assert!(out.status.success(), "{log}");
    let steps = exec_steps(&log);
    let first = steps
        .iter()
        .find(|s| s.title.contains("net.txt"))
        .unwrap_or_else(|| panic!("no RUN step in:\n{log}"));
    assert!(
        !first.cached,
        "the RUN was a cache hit across networks:\n{log}"
    );
    assert_eq!(
        file_of(&k, "net:default", "/net.txt", tmp.path()).as_deref(),
        Some("lo\ntap0\n")
    );
    let (out, _, _) = kiln_build(
        &k,
        &ctx,
        &["--network", "bridge", "--allow", "network.host"],
    );
    assert!(!out.status.success());
}

// ------------------------------------------------------------ push

#[test]
fn push_sends_the_built_manifest() {
    let Some((tmp, k)) = setup("push_sends_the_built_manifest") else {
        return;
    };
    if !have("docker-registry") || !have("skopeo") {
        missing_prerequisite("docker-registry or skopeo missing: build_inputs push test");
        return;
    }
    let reg = support::Registry::start(support::Auth::None);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f.txt"), "pushed\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\nCOPY f.txt /f.txt\n",
    )
    .unwrap();
    let meta = tmp.path().join("meta.json");
    let one = format!("{}/built/app:1", reg.host());
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            &one,
            "--push",
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{log}");
    let m = read_json(&meta);
    let digest = m["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(m["image.name"], one.as_str());
    assert_eq!(support::skopeo_digest(&one), digest);
    assert!(log.contains(&format!("{one}@{digest}")), "{log}");
    // One image, one digest: the build names the image by its ID, the
    // store remembers the digest the registry knows, and it pulls.
    let id = m["containerimage.config.digest"].as_str().unwrap();
    assert!(log.contains(&format!("built {id}")), "{log}");
    let listing = k.ok(&["images", "--digests"]);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("built/app") && l.contains(&digest)),
        "{listing}"
    );
    k.ok(&["pull", &format!("{}/built/app@{digest}", reg.host())]);
    // The store keeps the built layer plain; the registry gets it gzipped.
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{one}"))
        .output()
        .expect("skopeo");
    let pushed: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    for l in pushed["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "a pushed layer is not gzip: {pushed}"
        );
    }

    // -o type=registry,name=… and -o type=image,name=…,push=true: this
    // build's manifest (its created time differs) under both names.
    let two = format!("{}/built/app:2", reg.host());
    let three = format!("{}/other/app:3", reg.host());
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-o",
            &format!("type=registry,name={two}"),
            "-o",
            &format!("type=image,name={three},push=true"),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{log}");
    let digest = read_json(&meta)["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(support::skopeo_digest(&two), digest);
    assert_eq!(support::skopeo_digest(&three), digest);

    // Pushing needs a name.
    let (out, _, log) = kiln_build(&k, &ctx, &["--push"]);
    assert!(!out.status.success());
    assert!(log.contains("name"), "{log}");
}

#[test]
fn foreign_platform_base_is_pulled_for_that_platform() {
    let Some((tmp, k)) = setup("foreign_platform_base_is_pulled_for_that_platform") else {
        return;
    };
    if !host_is_amd64() || !have("docker-registry") {
        loud("not amd64 or no docker-registry: build_inputs registry platform test SKIPPED");
        return;
    }
    let reg = support::Registry::start(support::Auth::None);
    let layout = tmp.path().join("multi");
    let arm_digest = multi_arch_layout(&k, &layout);
    let remote = format!("{}/multi:1", reg.host());
    k.ok(&[
        "copy",
        "--all",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{remote}"),
    ]);
    // A store that has never seen the image.
    let k2 = KilnBuild::new(&tmp.path().join("store2"), Who::Caller);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f.txt"), "data\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {remote}\nCOPY f.txt /f.txt\n"),
    )
    .unwrap();
    let (out, _, log) = kiln_build(
        &k2,
        &ctx,
        &["-t", "pulled:arm", "--platform", "linux/arm64"],
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("pulled {remote} for linux/arm64")),
        "{log}"
    );
    let config = k2.config_blob("pulled:arm");
    assert_eq!(config["architecture"], "arm64");
    assert!(
        runtime_config(&config)["Env"]
            .to_string()
            .contains("MARK=arm64")
    );
    // Only that platform's manifest came down.
    let stored = k2.ok(&["inspect", &remote]);
    assert!(stored.contains(arm_digest.as_str()), "{stored}");

    // The host platform: the store holds arm64 only, so amd64 is pulled.
    let (out, _, log) = kiln_build(&k2, &ctx, &["-t", "pulled:host"]);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("pulled"), "{log}");
    let config = k2.config_blob("pulled:host");
    assert_eq!(config["architecture"], "amd64");
    assert!(
        !runtime_config(&config)["Env"]
            .to_string()
            .contains("MARK=arm64")
    );

    // Nothing to pull from: a clear error naming the image and platform.
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/absent:1\n", reg.host()),
    )
    .unwrap();
    let (out, _, log) = kiln_build(&k2, &ctx, &["--platform", "linux/arm64"]);
    assert!(!out.status.success());
    assert!(
        log.contains("absent:1")
            && log.contains("linux/arm64")
            && log.contains("pulling it failed"),
        "{log}"
    );
}
