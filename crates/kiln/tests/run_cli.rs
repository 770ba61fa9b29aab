//! Acceptance of `kiln run` at the command line (issue #5): basic runs on
//! busybox and Debian, exit codes, `--commit` layer contents, apt inside a
//! rootless container, overlay/copy snapshotter equivalence, escapes
//! through `-w` and `--mount`, and `--network none`. Every scenario runs
//! as the caller (root in CI) and as the unprivileged `kilntest` (subuid
//! 200000:65536) through `runuser`. `KILN_SKIP_DEBIAN=1` skips Debian.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::build::*;
use common::{busybox_rootfs, is_root};
use serde_json::Value;

/// A store for `who` with the busybox base (plus `extra` applied to a copy
/// of the rootfs first, imported as `base`). Returns the scratch dir too.
fn store(who: Who, extra: impl FnOnce(&Path)) -> Option<(tempfile::TempDir, KilnBuild)> {
    if who == Who::Kilntest && !is_root() {
        missing_prerequisite("the kilntest variant needs a root caller");
        return None;
    }
    let d = scratch("kiln-run-test-");
    let rootfs = d.path().join("rootfs");
    busybox_rootfs(&rootfs);
    extra(&rootfs);
    let k = KilnBuild::new(&d.path().join("store"), who);
    k.ok(&["import", rootfs.to_str().unwrap(), "base"]);
    Some((d, k))
}

/// One Debian store per user, shared by the Debian tests of this process.
fn debian_store(who: Who) -> Option<KilnBuild> {
    static STORES: [OnceLock<Option<KilnBuild>>; 2] = [OnceLock::new(), OnceLock::new()];
    if skip_debian() {
        eprintln!("KILN_SKIP_DEBIAN=1: skipping");
        return None;
    }
    if who == Who::Kilntest && !is_root() {
        missing_prerequisite("the kilntest variant needs a root caller");
        return None;
    }
    STORES[who as usize]
        .get_or_init(|| {
            let tar = debian_tar()?;
            // One directory per user: `process_scratch` empties its path,
            // so a shared prefix would wipe the other user's store.
            let d = process_scratch(&format!("kiln-run-debian-{who:?}-").to_lowercase());
            let k = KilnBuild::new(&d.join("store"), who);
            k.ok(&["import", tar.to_str().unwrap(), DEBIAN_IMAGE]);
            Some(k)
        })
        .clone()
}

fn run(k: &KilnBuild, args: &[&str]) -> Output {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    let out = k.output(&a);
    eprintln!(
        "[{:?}] kiln {:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        k.who,
        a,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_ok(k: &KilnBuild, args: &[&str]) -> String {
    let out = run(k, args);
    assert!(
        out.status.success(),
        "kiln run {args:?} failed: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn last_layer_digest(k: &KilnBuild, image: &str) -> String {
    let v: Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v["Manifest"]["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .unwrap_or_else(|| panic!("no layers in {v}"))
        .to_string()
}

/// Entries of the image's last layer, normalised (no `./`, no trailing `/`).
fn last_layer_entries(k: &KilnBuild, image: &str) -> BTreeSet<String> {
    let digest = last_layer_digest(k, image);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = k.root.join("blobs/sha256").join(hex);
    let out = Command::new("tar").arg("-tzf").arg(&blob).output().unwrap();
    assert!(out.status.success(), "tar -tzf {}", blob.display());
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("last layer of {image}:\n{listing}");
    listing
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn basics(k: &KilnBuild, image: &str) {
    let id = run_ok(k, &[image, "id"]);
    assert!(id.starts_with("uid=0(root) gid=0(root)"), "{id}");
    let host = run_ok(k, &[image, "cat", "/etc/hostname"]);
    assert_eq!(host.trim(), "kiln");
    let out = run(k, &[image, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "kiln run of `exit 3`");
}

both!(basics_busybox, |who| {
    let Some((_d, k)) = store(who, |_| {}) else {
        return;
    };
    basics(&k, "base");
});

both!(basics_debian, |who| {
    let Some(k) = debian_store(who) else { return };
    basics(&k, DEBIAN_IMAGE);
});

/// Lower content for the diff tests.
fn lower_files(r: &Path) {
    fs::create_dir_all(r.join("data/sub")).unwrap();
    fs::write(r.join("data/keep"), "keep\n").unwrap();
    fs::write(r.join("data/del"), "del\n").unwrap();
    fs::write(r.join("data/mod"), "old\n").unwrap();
    fs::write(r.join("data/sub/a"), "a\n").unwrap();
    fs::create_dir_all(r.join("opt/gone/deep")).unwrap();
    fs::write(r.join("opt/gone/x"), "x\n").unwrap();
    fs::write(r.join("opt/gone/deep/z"), "z\n").unwrap();
    fs::write(r.join("opt/other"), "o\n").unwrap();
}

both!(commit_lists_exactly_the_changes, |who| {
    let Some((_d, k)) = store(who, lower_files) else {
        return;
    };
    run_ok(
        &k,
        &[
            "--mount",
            "type=tmpfs,target=/mnt/t",
            "--mount",
            "type=cache,target=/var/cache/c",
            "--commit",
            "changed",
            "base",
            "sh",
            "-c",
            "set -e; echo new > /data/new; rm /data/del; \
             rm -rf /opt/gone && mkdir /opt/gone && echo y > /opt/gone/y; \
             echo t > /mnt/t/f; echo c > /var/cache/c/f; cat /etc/hosts /etc/resolv.conf >/dev/null",
        ],
    );
    let got = last_layer_entries(&k, "changed");
    let want = set(&[
        "data",
        "data/new",
        "data/.wh.del",
        "opt",
        "opt/gone",
        "opt/gone/.wh..wh..opq",
        "opt/gone/y",
    ]);
    assert_eq!(
        got, want,
        "the committed layer lists more or less than the changes"
    );
    // The committed image runs and shows the changes.
    let ls = run_ok(&k, &["changed", "sh", "-c", "ls /data /opt/gone"]);
    assert!(
        ls.contains("new") && !ls.contains("del") && ls.contains('y') && !ls.contains("deep"),
        "{ls}"
    );
});

// A build's RUN and `kiln run` keep cache mounts in one layout, so the
// same id is the same cache for both, in either direction.
both!(a_cache_mount_is_shared_by_build_and_run, |who| {
    let Some((d, k)) = store(who, |_| {}) else {
        return;
    };
    let build = |name: &str, run: &str| {
        let ctx = d.path().join(name);
        fs::create_dir(&ctx).unwrap();
        let dockerfile = format!("FROM base\nRUN --mount=type=cache,id=shared,target=/c {run}\n");
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let (out, _, log) = kiln_build(&k, &ctx, &["--no-cache"]);
        assert!(out.status.success(), "kiln build failed:\n{log}");
    };
    build("fill", "echo from-build > /c/built");
    let seen = run_ok(
        &k,
        &[
            "--mount",
            "type=cache,id=shared,target=/x",
            "base",
            "cat",
            "/x/built",
        ],
    );
    assert_eq!(seen.trim(), "from-build", "kiln run sees the build's cache");
    run_ok(
        &k,
        &[
            "--mount",
            "type=cache,id=shared,target=/x",
            "base",
            "sh",
            "-c",
            "echo from-run > /x/ran",
        ],
    );
    // The RUN fails unless it reads what `kiln run` wrote.
    build("read", "test \"$(cat /c/ran)\" = from-run");
});

both!(apt_install_hello_debian, |who| {
    let Some(k) = debian_store(who) else { return };
    let tag = format!("hello-{:?}", who).to_lowercase();
    run_ok(
        &k,
        &[
            "--commit",
            &tag,
            DEBIAN_IMAGE,
            "sh",
            "-c",
            "set -e; apt-get update -q && apt-get install -y -q --no-install-recommends hello && rm -rf /var/lib/apt/lists/*",
        ],
    );
    let entries = last_layer_entries(&k, &tag);
    assert!(
        entries.contains("usr/bin/hello"),
        "usr/bin/hello not in the layer"
    );
    let hi = run_ok(&k, &[&tag, "hello"]);
    assert_eq!(hi.trim(), "Hello, world!");
});

const SAME_CHANGES: &str = "set -e; \
    echo new > /data/new; mkdir -p /data/newdir/n; echo n > /data/newdir/n/f; \
    echo changed > /data/mod; \
    rm /data/del; \
    chmod 600 /data/keep; \
    ln -s ../data/keep /data/link; \
    ln /data/new /data/hard; \
    rm -rf /opt/gone && mkdir /opt/gone && echo y > /opt/gone/y; \
    rm /opt/other";

/// `kiln run --rm --commit TAG` of [`SAME_CHANGES`] on `base` with the
/// snapshotter `mode`, at a fixed time.
fn commit_same_changes(k: &KilnBuild, mode: &str, tag: &str) -> std::process::Output {
    k.cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "run",
            "--rm",
            "--snapshotter",
            mode,
            "--commit",
            tag,
            "base",
            "sh",
            "-c",
            SAME_CHANGES,
        ])
        .output()
        .unwrap()
}

both!(overlay_and_copy_give_equal_layers, |who| {
    let Some((_d, k)) = store(who, lower_files) else {
        return;
    };
    let mut digests = Vec::new();
    for mode in ["overlay", "copy"] {
        let tag = format!("snap-{mode}");
        let out = commit_same_changes(&k, mode, &tag);
        eprintln!("[{mode}] {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{mode} run failed: {}", out.status);
        let entries = last_layer_entries(&k, &tag);
        for e in [
            "data/new",
            "data/hard",
            "data/link",
            "data/.wh.del",
            "opt/.wh.other",
            "opt/gone/.wh..wh..opq",
            "data/newdir/n/f",
        ] {
            assert!(entries.contains(e), "{mode}: {e} missing from the layer");
        }
        let v = Command::new("tar")
            .arg("-tvzf")
            .arg(
                k.root
                    .join("blobs/sha256")
                    .join(last_layer_digest(&k, &tag).trim_start_matches("sha256:")),
            )
            .output()
            .unwrap();
        eprintln!("[{mode}] verbose:\n{}", String::from_utf8_lossy(&v.stdout));
        digests.push(last_layer_digest(&k, &tag));
    }
    assert_eq!(digests[0], digests[1], "overlay and copy layers differ");
});

// The copy snapshotter keeps a container's tree for the next container
// over the same layers, with the run's changes undone: a second run sees
// exactly what the first saw (overlay's view is the reference), makes the
// same layer, and the store holds one kept tree, not one per run.
both!(
    copy_snapshotter_reuses_its_tree_as_the_layers_show_it,
    |who| {
        let Some((_d, k)) = store(who, lower_files) else {
            return;
        };
        // `/` itself is left out: under overlay its times are the upper
        // directory's, made for each run.
        const STATE: &str = "find / -xdev -mindepth 1 \\( -path /proc -o -path /dev -o -path /sys -o -path /etc \\) -prune \
        -o -exec stat -c '%n %a %u:%g %s %Y %F' {} + | sort; cat /data/mod";
        let view_of = |image: &str, mode: &str| -> String {
            k.ok(&[
                "run",
                "--rm",
                "--snapshotter",
                mode,
                image,
                "sh",
                "-c",
                STATE,
            ])
        };
        let view = |mode: &str| view_of("base", mode);
        let want = view("overlay");
        let mut digests = Vec::new();
        for round in 0..2 {
            let tag = format!("pooled-{round}");
            let out = commit_same_changes(&k, "copy", &tag);
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            digests.push(last_layer_digest(&k, &tag));
            assert_eq!(
                view("copy"),
                want,
                "round {round}: the kept tree is not the image's"
            );
        }
        assert_eq!(digests[0], digests[1], "a kept tree gave another layer");
        let trees = fs::read_dir(k.root.join("snapshots/trees"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(trees, 1, "one tree per chain of layers is kept");
        // The kept tree of `base` switched up to the committed image's
        // layers (its whiteouts, opaque directory and new files put on),
        // and back down again.
        assert_eq!(view_of("pooled-0", "copy"), view_of("pooled-0", "overlay"));
        assert_eq!(view("copy"), want, "switched back down to the base");
    }
);

both!(workdir_proc_self_fd_reaches_nothing, |who| {
    let Some((d, k)) = store(who, |_| {}) else {
        return;
    };
    let canary = d.path().join("kiln-host-canary");
    fs::write(&canary, "host secret\n").unwrap();
    let before = fs::metadata(&canary).unwrap().modified().unwrap();
    for n in 0..10 {
        let w = format!("/proc/self/fd/{n}");
        let out = k
            .cmd()
            .current_dir(d.path())
            .args([
                "run", "--rm", "-w", &w, "base", "sh", "-c",
                "ls -a . .. ../.. 2>&1; cat kiln-host-canary 2>&1; echo x > kiln-escape 2>&1; ls -a /proc/self/cwd/ 2>&1",
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("[{who:?}] -w {w} -> {}\n{text}", out.status);
        assert!(
            !text.contains("host secret"),
            "-w {w} read the host canary:\n{text}"
        );
        assert!(
            !text.contains("kiln-host-canary"),
            "-w {w} lists the host dir:\n{text}"
        );
        assert!(
            !text.contains("kiln-bin") && !text.contains("rootfs\n"),
            "-w {w} sees the scratch dir:\n{text}"
        );
    }
    assert_eq!(fs::read_to_string(&canary).unwrap(), "host secret\n");
    assert_eq!(fs::metadata(&canary).unwrap().modified().unwrap(), before);
    let leaked: Vec<PathBuf> = [d.path().join("kiln-escape"), PathBuf::from("/kiln-escape")]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    assert!(leaked.is_empty(), "files written on the host: {leaked:?}");
});

both!(mount_through_symlink_stays_inside, |who| {
    let name = format!("kiln-run-escape-{}-{:?}", std::process::id(), who);
    let Some((_d, k)) = store(who, |r| {
        fs::remove_dir_all(r.join("mnt")).ok();
        symlink("/", r.join("mnt")).unwrap();
    }) else {
        return;
    };
    let host_target = Path::new("/").join(&name);
    assert!(!host_target.exists());
    let target = format!("type=tmpfs,target=/mnt/{name}");
    let out = run(
        &k,
        &[
            "--mount",
            &target,
            "base",
            "sh",
            "-c",
            &format!("touch /mnt/{name}/f; ls -la /"),
        ],
    );
    let _ = out;
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&name),
        "a mount landed on the host:\n{mounts}"
    );
    let exists = host_target.exists();
    let _ = fs::remove_dir_all(&host_target);
    assert!(!exists, "{} was created on the host", host_target.display());
});

both!(network_none_has_only_lo, |who| {
    let Some((_d, k)) = store(who, |_| {}) else {
        return;
    };
    let dev = run_ok(&k, &["--network", "none", "base", "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{dev}");
});

// As `docker run -v`: a bind is the host's path itself, so what the
// container writes there stays on the host; read-only refuses writes.
both!(bind_writes_reach_the_host, |who| {
    let Some((d, k)) = store(who, |_| {}) else {
        return;
    };
    let data = d.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("in.txt"), "from the host\n").unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&data);
    }
    let spec = format!("type=bind,source={},target=/data", data.display());
    let out = run_ok(
        &k,
        &[
            "--mount",
            &spec,
            "base",
            "sh",
            "-c",
            "cat /data/in.txt; echo mount > /data/out.txt",
        ],
    );
    assert_eq!(out, "from the host\n");
    assert_eq!(fs::read_to_string(data.join("out.txt")).unwrap(), "mount\n");
    let vol = format!("{}:/v", data.display());
    run_ok(
        &k,
        &["-v", &vol, "base", "sh", "-c", "echo volume > /v/vol.txt"],
    );
    assert_eq!(
        fs::read_to_string(data.join("vol.txt")).unwrap(),
        "volume\n"
    );
    // Read-only, both spellings: the write fails, the host file is intact.
    let ro_mount = format!("{spec},readonly");
    let ro_vol = format!("{vol}:ro");
    for flags in [["--mount", ro_mount.as_str()], ["-v", ro_vol.as_str()]] {
        let mut args = flags.to_vec();
        args.extend([
            "base",
            "sh",
            "-c",
            "echo no > /data/out.txt || echo no > /v/vol.txt",
        ]);
        let out = run(&k, &args);
        assert!(
            !out.status.success(),
            "{flags:?}: a read-only bind took a write"
        );
    }
    assert_eq!(fs::read_to_string(data.join("out.txt")).unwrap(), "mount\n");
    assert_eq!(
        fs::read_to_string(data.join("vol.txt")).unwrap(),
        "volume\n"
    );
    // What is not absolute is refused, not taken for a named volume.
    assert!(!run(&k, &["-v", "data:/v", "base", "true"]).status.success());
});
