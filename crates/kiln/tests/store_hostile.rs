//! What a hostile image or a killed build can leave in the store, and who
//! can reach it (issue 11, items 6 to 8), as root and as kilntest:
//! - a config that claims another image's diff ID for its own layer is
//!   refused when the layer is unpacked, and the real image stays intact;
//! - the store and every directory holding unpacked files (layers,
//!   containers, cache mounts, temp) is 0700, so no other local user reaches
//!   an image's device nodes or set-id files;
//! - a build killed while a RUN holds a secret leaves it only in a 0700
//!   directory of its own, which `kiln check` reports and the next build or
//!   `kiln prune` removes.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::build::*;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn who_name(who: Who) -> &'static str {
    match who {
        Who::Caller => "root",
        Who::Kilntest => "kilntest",
    }
}

// ------------------------------------------------------------ diff IDs

/// Writes an OCI layout holding `name`: one plain-tar layer with `files`,
/// whose config claims `diff_id` for it.
fn layout_claiming(dir: &Path, name: &str, files: &[(&str, &str)], diff_id: &str) {
    let root = dir.join("rootfs");
    for (p, content) in files {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let tar = dir.join("layer.tar");
    sh(&format!(
        "tar -C '{}' --owner=0 --group=0 -cf '{}' .",
        root.display(),
        tar.display()
    ));
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer, layer_size) = put(&fs::read(&tar).unwrap());
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let (config, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_size}],
    });
    let (manifest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

fn diff_ids(k: &KilnBuild, image: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn poisoned_diff_id_is_refused(who: Who) {
    let tmp = scratch("kiln-hostile-diffid-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let real = diff_ids(&k, BUSYBOX_IMAGE);
    assert_eq!(real.len(), 1);
    let canary = common::canary::marker("store");
    let evil = tmp.path().join("evil");
    layout_claiming(
        &evil,
        "kiln-test/evil:1",
        &[("bin/sh", &canary), (&format!("{canary}.txt"), &canary)],
        &real[0],
    );
    if who == Who::Kilntest {
        give_to_kilntest(&evil);
    }
    k.ok(&["load", "-i", evil.join("layout").to_str().unwrap()]);

    // The attacker's image runs first, so its layer would be unpacked under
    // the real layer's name.
    let out = k.output(&["run", "--rm", "kiln-test/evil:1", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "[{}] a layer whose content is not its diff ID ran",
        who_name(who)
    );
    assert!(
        err.contains(&real[0]) && err.contains("diff ID"),
        "[{}] the error names the layer and says why: {err}",
        who_name(who)
    );
    assert!(!err.contains(&canary), "{err}");

    // The real image is untouched: its shell is busybox, the canary absent.
    let out = k.ok(&[
        "run",
        "--rm",
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        &format!("ls / ; test ! -e /{canary}.txt && echo clean"),
    ]);
    assert!(out.contains("clean"), "[{}] {out}", who_name(who));
    assert!(!out.contains(&canary), "[{}] {out}", who_name(who));
    // And a build on it sees the same.
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX_IMAGE}\nRUN test ! -e /{canary}.txt && busybox --help >/dev/null\n"),
    )
    .unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&ctx);
    }
    k.ok(&["build", "-t", "after:1", ctx.to_str().unwrap()]);
}

#[test]
fn poisoned_diff_id_is_refused_as_root() {
    poisoned_diff_id_is_refused(Who::Caller);
}

#[test]
fn poisoned_diff_id_is_refused_as_kilntest() {
    poisoned_diff_id_is_refused(Who::Kilntest);
}

// ------------------------------------------------------------ privacy

/// A base image with a world-usable block device, a setuid-root shell and
/// a world-writable setuid file: what another local user would love to find.
fn hostile_rootfs(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    sh(&format!(
        "cp -a '{bb}/.' '{d}/' && mknod '{d}/dev/evil-disk' b 7 0 && chmod 0666 '{d}/dev/evil-disk' \
         && cp '{d}/bin/busybox' '{d}/bin/suid-sh' && chmod 4755 '{d}/bin/suid-sh'",
        bb = busybox_dir().display(),
        d = dir.display()
    ));
}

/// `path` as the `nobody` user: what a stranger on the machine gets.
fn stranger_can_reach(path: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "test", "-e"])
        .arg(path)
        .status()
        .unwrap()
        .success()
}

fn private_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.to_path_buf()];
    for d in ["snapshots", "cache-mounts", "tmp", "build-cache"] {
        let p = root.join(d);
        if p.exists() {
            v.push(p);
        }
    }
    v
}

fn unpacked_files_are_private(who: Who) {
    let tmp = scratch("kiln-hostile-private-");
    let store = tmp.path().join("store");
    let k = KilnBuild::new(&store, who);
    import_bases(&k, false);
    let rootfs = tmp.path().join("hostile");
    hostile_rootfs(&rootfs);
    let tar = tmp.path().join("hostile.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        rootfs.display(),
        tar.display()
    ));
    if who == Who::Kilntest {
        give_to_kilntest(&tar);
    }
    k.ok(&["import", tar.to_str().unwrap(), "hostile:1"]);
    // Unpack it, and leave a set-id file in a cache mount too.
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM hostile:1\nRUN --mount=type=cache,target=/cache cp /bin/busybox /cache/suid && chmod 4755 /cache/suid\n",
    )
    .unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&ctx);
    }
    k.ok(&["build", "-t", "hostile:2", ctx.to_str().unwrap()]);

    let layers = store.join("snapshots/layers");
    let found: Vec<PathBuf> = walkdir::WalkDir::new(&layers)
        .into_iter()
        .flatten()
        .map(|e| e.path().to_path_buf())
        .filter(|p| p.ends_with("dev/evil-disk") || p.ends_with("bin/suid-sh"))
        .collect();
    if who == Who::Caller {
        // Real root keeps them (they belong to the image), behind 0700.
        assert_eq!(found.len(), 2, "unpacked: {found:?}");
    }
    for d in private_dirs(&store) {
        let mode = fs::metadata(&d).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
    let suid_cache: Vec<PathBuf> = walkdir::WalkDir::new(store.join("cache-mounts"))
        .into_iter()
        .flatten()
        .map(|e| e.path().to_path_buf())
        .filter(|p| p.ends_with("suid"))
        .collect();
    assert_eq!(suid_cache.len(), 1, "{suid_cache:?}");
    for p in found.iter().chain(&suid_cache) {
        assert!(
            !stranger_can_reach(p),
            "[{}] another user reaches {}",
            who_name(who),
            p.display()
        );
    }
    assert!(!stranger_can_reach(&layers), "{}", layers.display());
    // The scratch dir itself stays open to everyone: only kiln's modes guard.
    assert!(stranger_can_reach(tmp.path()));
}

#[test]
fn unpacked_files_are_private_as_root() {
    unpacked_files_are_private(Who::Caller);
}

#[test]
fn unpacked_files_are_private_as_kilntest() {
    unpacked_files_are_private(Who::Kilntest);
}

#[test]
fn an_existing_open_store_is_made_private() {
    let tmp = scratch("kiln-hostile-open-");
    let store = tmp.path().join("store");
    fs::create_dir_all(store.join("snapshots")).unwrap();
    for d in [&store, &store.join("snapshots")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let k = KilnBuild::new(&store, Who::Caller);
    import_bases(&k, false);
    k.ok(&["run", "--rm", BUSYBOX_IMAGE, "true"]);
    for d in private_dirs(&store) {
        let mode = fs::metadata(&d).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
}

// ------------------------------------------------------------ secrets

/// Where `store`'s RUN secrets go (see kiln_build::run_private).
fn secrets_parent(store: &Path) -> PathBuf {
    let canon = fs::canonicalize(store).unwrap();
    let hash = sha256_hex(canon.as_os_str().as_encoded_bytes());
    Path::new("/dev/shm").join(format!("kiln-{}", &hash[..16]))
}

/// The private RUN directories of `store` (see kiln_build::run_private).
fn run_dirs(store: &Path) -> (PathBuf, Vec<PathBuf>) {
    let parent = secrets_parent(store);
    let mut dirs: Vec<PathBuf> = fs::read_dir(&parent)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    (parent, dirs)
}

fn killed_build_secret_is_swept(who: Who) {
    let tmp = scratch("kiln-hostile-secret-");
    let store = tmp.path().join("store");
    let k = KilnBuild::new(&store, who);
    import_bases(&k, false);
    let secret = common::canary::marker("store");
    let src = tmp.path().join("tok");
    fs::write(&src, &secret).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BUSYBOX_IMAGE}\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && sleep 60\n"
        ),
    )
    .unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(tmp.path());
    }
    let mut child = k
        .cmd()
        .args(["build", "--progress", "plain", "--secret"])
        .arg(format!("id=tok,src={}", src.display()))
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the RUN holds its secret file, then kill kiln outright.
    let deadline = Instant::now() + Duration::from_secs(60);
    let secret_file = loop {
        let (_, dirs) = run_dirs(&store);
        if let Some(f) = dirs.iter().map(|d| d.join("secret-0")).find(|f| f.exists()) {
            break f;
        }
        assert!(Instant::now() < deadline, "the RUN never got its secret");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    // Kill kiln itself (as kilntest it runs under runuser, and rootless it
    // re-executes itself in a user namespace): every process of this store.
    let _ = Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(format!("kiln(-bin)? --root {}", store.display()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));

    let (parent, dirs) = run_dirs(&store);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir_mode = fs::metadata(&dirs[0]).unwrap().mode() & 0o7777;
    let parent_mode = fs::metadata(&parent).unwrap().mode() & 0o7777;
    let file_mode = fs::metadata(&secret_file).unwrap().mode() & 0o7777;
    assert_eq!((parent_mode, dir_mode), (0o700, 0o700));
    assert_eq!(file_mode & 0o077, 0, "secret file mode {file_mode:o}");
    assert!(!stranger_can_reach(&secret_file));

    // `kiln check` reports it, without printing it.
    let out = k.output(&["check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("secrets of a killed build") && text.contains(&*dirs[0].to_string_lossy()),
        "{text}"
    );
    assert!(!text.contains(&secret), "{text}");

    // The next build removes it.
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX_IMAGE}\nRUN true\n"),
    )
    .unwrap();
    k.ok(&["build", ctx.to_str().unwrap()]);
    let (_, dirs) = run_dirs(&store);
    assert!(dirs.is_empty(), "{dirs:?}");
    assert!(!secret_file.exists());
    k.ok(&["check"]);
    let _ = fs::remove_dir(&parent);
}

#[test]
fn killed_build_secret_is_swept_as_root() {
    killed_build_secret_is_swept(Who::Caller);
}

#[test]
fn killed_build_secret_is_swept_as_kilntest() {
    killed_build_secret_is_swept(Who::Kilntest);
}

#[test]
fn prune_removes_a_killed_builds_secret() {
    let tmp = scratch("kiln-hostile-prune-");
    let store = tmp.path().join("store");
    let k = KilnBuild::new(&store, Who::Caller);
    k.ok(&["images"]);
    // What a killed RUN leaves: its directory and an unheld lock.
    let parent = secrets_parent(&store);
    fs::create_dir_all(parent.join("run-1-0-0")).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        parent.join("run-1-0-0/secret-0"),
        common::canary::marker("store"),
    )
    .unwrap();
    fs::write(parent.join("run-1-0-0.lock"), "").unwrap();
    assert!(!k.output(&["check"]).status.success());
    let out = k.ok(&["prune"]);
    assert!(out.contains("1 secret directories"), "{out}");
    assert!(!parent.join("run-1-0-0").exists());
    k.ok(&["check"]);
    let _ = fs::remove_dir(&parent);
}

#[test]
fn a_planted_secret_parent_is_refused() {
    // Another user made the predictable directory first: kiln must not put
    // a secret in it.
    let tmp = scratch("kiln-hostile-planted-");
    let store = tmp.path().join("store");
    let k = KilnBuild::new(&store, Who::Caller);
    import_bases(&k, false);
    let parent = secrets_parent(&store);
    fs::create_dir_all(&parent).unwrap();
    let (uid, gid) = kilntest_ids();
    std::os::unix::fs::chown(&parent, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o777)).unwrap();
    let secret = common::canary::marker("store");
    let src = tmp.path().join("tok");
    fs::write(&src, &secret).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX_IMAGE}\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok\n"),
    )
    .unwrap();
    let out = k
        .cmd()
        .args(["build", "--secret"])
        .arg(format!("id=tok,src={}", src.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = fs::remove_dir_all(&parent);
    assert!(!out.status.success(), "the build used a planted directory");
    assert!(
        err.contains("refusing") && err.contains(&*parent.to_string_lossy()),
        "{err}"
    );
    assert!(!err.contains(&secret));
}
