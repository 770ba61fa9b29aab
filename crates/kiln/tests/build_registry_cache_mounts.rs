//! `--cache-to …,mounts=true` / `--cache-from` of `RUN --mount=type=cache`
//! contents, against a real `docker-registry` on 127.0.0.1: a fresh store
//! (another user, root or rootless) finds the previous store's cache mount
//! before its RUN, with the owners the sandbox saw; the mount's files never
//! enter the image; a mount over `mounts-max-size` is left out with one
//! warning; a local cache is never overwritten; and apt, the real tool,
//! downloads nothing the second time.

#[macro_use]
mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;

use common::build::*;

fn setup(name: &str) -> Option<(tempfile::TempDir, support::Registry)> {
    if !kiln_build_available() {
        missing_prerequisite(&format!(
            "build_registry_cache_mounts::{name}: no `kiln build`"
        ));
        return None;
    }
    if !have("docker-registry") {
        missing_prerequisite(&format!(
            "build_registry_cache_mounts::{name}: no docker-registry"
        ));
        return None;
    }
    Some((
        scratch("kiln-bt-cachemounts-"),
        support::Registry::start(support::Auth::None),
    ))
}

fn build_ok(k: &KilnBuild, ctx: &Path, flags: &[&str]) -> String {
    let (out, _, log) = kiln_build(k, ctx, flags);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    log
}

/// Whether the RUN printed `line` (the step's title holds the script too).
fn said(log: &str, line: &str) -> bool {
    log.lines().any(|l| l.ends_with(&format!(" {line}")))
}

/// A RUN whose cache mount (owned by 1000, with a subdirectory of user
/// 1001) is filled the first time and found afterwards.
const DOCKERFILE: &str = "FROM kiln-test/busybox:1\n\
ARG ROUND\n\
RUN --mount=type=cache,id=dl,target=/cache,uid=1000,gid=1000 \
    echo round $ROUND; \
    if [ -f /cache/fetched ]; then echo \"found $(cat /cache/fetched)\"; \
    else echo fetching; echo payload-$ROUND > /cache/fetched; \
      mkdir -p /cache/sub && head -c 4096 /dev/zero > /cache/sub/blob && chown -R 1001:1001 /cache/sub; fi; \
    echo \"owners $(stat -c %u /cache) $(stat -c %u /cache/sub)\"; echo round $ROUND > /round\n";

both!(
    a_cache_mount_moves_to_a_fresh_store_of_another_user,
    |who: Who| {
        let Some((tmp, reg)) = setup("a_cache_mount_moves_to_a_fresh_store_of_another_user") else {
            return;
        };
        let t = tmp.path();
        let ctx = t.join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        let cache = format!("{}/cache/mounts:main", reg.host());
        // The other user exports: root to rootless, and rootless to root.
        let exporter = match who {
            Who::Caller => Who::Kilntest,
            Who::Kilntest => Who::Caller,
        };
        let a = KilnBuild::new(&t.join("a/store"), exporter);
        import_bases(&a, false);
        let to = format!("type=registry,ref={cache},mounts=true");
        let log = build_ok(&a, &ctx, &["--build-arg", "ROUND=1", "--cache-to", &to]);
        assert!(said(&log, "fetching"), "{log}");
        assert!(said(&log, "owners 1000 1001"), "{log}");
        assert!(log.contains("(1 layers) and 1 cache mounts to"), "{log}");
        assert!(warnings(&log).is_empty(), "{log}");

        // A fresh store: the RUN (another ROUND: it runs) finds the cache,
        // restored before it with its owners, and says so.
        let b = KilnBuild::new(&t.join("b/store"), who);
        import_bases(&b, false);
        let from = format!("type=registry,ref={cache}");
        let log = build_ok(
            &b,
            &ctx,
            &["--build-arg", "ROUND=2", "--cache-from", &from, "-t", "m:b"],
        );
        assert!(
            log.contains("restored cache mount dl (/cache): 4.1 kB"),
            "{log}"
        );
        assert!(said(&log, "found payload-1"), "{log}");
        assert!(!said(&log, "fetching"), "{log}");
        assert!(said(&log, "owners 1000 1001"), "{log}");
        assert!(
            log.contains("cache: restored 1 cache mounts (4.1 kB)"),
            "{log}"
        );
        assert!(warnings(&log).is_empty(), "{log}");
        // The mount's contents are not in the image.
        let rootfs = t.join("b/rootfs");
        b.rootfs("m:b", &rootfs);
        assert_eq!(
            fs::read_to_string(rootfs.join("round")).unwrap(),
            "round 2\n"
        );
        assert!(!rootfs.join("cache/fetched").exists());
        assert!(!rootfs.join("cache/sub").exists());

        // A store with its own cache keeps it: nothing is restored over it.
        let log = build_ok(&b, &ctx, &["--build-arg", "ROUND=3", "--cache-from", &from]);
        assert!(
            log.contains("cache mount dl (/cache): the store has its own; not restored"),
            "{log}"
        );
        assert!(said(&log, "found payload-1"), "{log}");

        // Over the bound: one warning naming the mount and its size, and the
        // cache goes without it.
        let small = format!("type=registry,ref={cache}-small,mounts=true,mounts-max-size=1k");
        let log = build_ok(&b, &ctx, &["--build-arg", "ROUND=4", "--cache-to", &small]);
        let w = warnings(&log);
        assert_eq!(w.len(), 1, "{log}");
        assert!(
            w[0].contains("cache mount dl (/cache): 4.1 kB")
                && w[0].contains("over mounts-max-size"),
            "{log}"
        );
        assert!(log.contains("and 0 cache mounts to"), "{log}");
        // A fully cached build in a fresh store never fills the mount; its
        // export passes the mount on as the imported cache carries it, and a
        // later build's RUN finds it from there.
        let d = KilnBuild::new(&t.join("d/store"), who);
        import_bases(&d, false);
        let carried = format!("{cache}-carried");
        let log = build_ok(
            &d,
            &ctx,
            &[
                "--build-arg",
                "ROUND=1",
                "--cache-from",
                &from,
                "--cache-to",
                &format!("type=registry,ref={carried},mounts=true"),
            ],
        );
        assert!(log.contains("(0 steps run, 1 cached)"), "{log}");
        assert!(!log.contains("restored cache mount"), "{log}");
        assert!(log.contains("(1 layers) and 1 cache mounts to"), "{log}");
        fs::remove_dir_all(&d.root).unwrap();
        let d = KilnBuild::new(&t.join("d/store"), who);
        import_bases(&d, false);
        let log = build_ok(
            &d,
            &ctx,
            &[
                "--build-arg",
                "ROUND=6",
                "--cache-from",
                &format!("type=registry,ref={carried}"),
            ],
        );
        assert!(said(&log, "found payload-1"), "{log}");

        // mounts=false on --cache-from: nothing restored.
        let c = KilnBuild::new(&t.join("c/store"), who);
        import_bases(&c, false);
        let log = build_ok(
            &c,
            &ctx,
            &[
                "--build-arg",
                "ROUND=5",
                "--cache-from",
                &format!("{from},mounts=false"),
            ],
        );
        assert!(said(&log, "fetching"), "{log}");
    }
);

/// apt, the real tool, with its archives in a cache mount: a fresh
/// rootless store after `--cache-from` downloads nothing. Needs the
/// Debian mirror: skipped with `KILN_SKIP_DEBIAN=1`, as the other apt
/// tests.
#[test]
fn apt_finds_its_downloads_in_a_fresh_rootless_store() {
    if skip_debian() {
        loud("build_registry_cache_mounts::apt SKIPPED (KILN_SKIP_DEBIAN=1)");
        return;
    }
    let Some((tmp, reg)) = setup("apt_finds_its_downloads_in_a_fresh_rootless_store") else {
        return;
    };
    let t = tmp.path();
    let a = KilnBuild::new(&t.join("a/store"), Who::Caller);
    if !import_bases(&a, true) {
        missing_prerequisite("build_registry_cache_mounts::apt: no Debian base image");
        return;
    }
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/debian:bookworm\n\
         RUN apt-get update\n\
         ARG ROUND\n\
         RUN --mount=type=cache,id=apt,target=/var/cache/apt/archives,sharing=locked \
             echo round $ROUND && apt-get install -y --download-only --no-install-recommends hello\n",
    )
    .unwrap();
    let cache = format!("{}/cache/apt:main", reg.host());
    let to = format!("type=registry,ref={cache},mode=max,mounts=true");
    let log = build_ok(&a, &ctx, &["--build-arg", "ROUND=1", "--cache-to", &to]);
    assert!(!log.contains("Need to get 0 B"), "{log}");
    assert!(log.contains("and 1 cache mounts to"), "{log}");

    let b = KilnBuild::new(&t.join("b/store"), Who::Kilntest);
    import_bases(&b, true);
    let from = format!("type=registry,ref={cache}");
    let log = build_ok(
        &b,
        &ctx,
        &[
            "--build-arg",
            "ROUND=2",
            "--cache-from",
            &from,
            "-t",
            "apt:b",
        ],
    );
    assert!(
        log.contains("restored cache mount apt (/var/cache/apt/archives): "),
        "{log}"
    );
    // apt's own word: everything it needs is already there.
    assert!(log.contains("Need to get 0 B/"), "{log}");
    assert!(warnings(&log).is_empty(), "{log}");
    // (The base image has debootstrap's own .debs there; hello's is only
    // in the mount.) `kiln run` mounts no cache.
    let listing = b.ok(&["run", "--rm", "apt:b", "ls", "/var/cache/apt/archives"]);
    assert!(listing.contains("dpkg_"), "{listing}");
    assert!(!listing.contains("hello_"), "{listing}");
}

/// One raw ustar entry with whatever name and link the test wants (tar
/// writers refuse hostile names; an attacker's does not).
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut octal = |at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(100, 8, 0o755);
    octal(108, 8, 0);
    octal(116, 8, 0);
    octal(124, 12, data.len() as u64);
    octal(136, 12, 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Writes `bytes` as a blob of the OCI layout `dir`; its descriptor.
fn put_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let d = kiln_image::Digest::sha256_of(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(d.hex()), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()})
}

/// An OCI layout at `layout` (as `type=local` writes) holding a kiln cache
/// with no steps and one cache mount, `dl` at /cache, whose layer is
/// the plain tar `layer`.
fn cache_with_mount_layer(layout: &Path, layer: &[u8]) {
    let layer_desc = put_blob(layout, "application/vnd.oci.image.layer.v1.tar", layer);
    let config = serde_json::json!({
        "entries": {},
        "cache_mounts": {"version": 1, "mounts": [{
            "name": "dl", "id": "dl", "target": "/cache", "layer": 0,
            "diff_id": layer_desc["digest"], "size": layer.len(), "bytes": 2,
            "mode": 0o755, "uid": 0, "gid": 0
        }]}
    });
    let config_desc = put_blob(
        layout,
        "application/vnd.kiln.cache.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut manifest_desc = put_blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    manifest_desc["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

both!(a_hostile_cache_mount_layer_is_refused, |who: Who| {
    if !kiln_build_available() {
        missing_prerequisite("build_registry_cache_mounts::hostile: no `kiln build`");
        return;
    }
    let tmp = scratch("kiln-bt-cachemounts-hostile-");
    let t = tmp.path();
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let k = KilnBuild::new(&t.join("store"), who);
    import_bases(&k, false);
    let end = [0u8; 1024].to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "by-name",
            [
                tar_entry("../../../../../../../../../escape", b'0', "", b"x"),
                end.clone(),
            ]
            .concat(),
            "climbs above the root",
        ),
        (
            "abs-symlink",
            [
                tar_entry("abs", b'2', outside.to_str().unwrap(), b""),
                tar_entry("abs/escape", b'0', "", b"x"),
                end.clone(),
            ]
            .concat(),
            "abs/escape",
        ),
        (
            "hardlink",
            [tar_entry("passwd", b'1', "/etc/passwd", b""), end.clone()].concat(),
            "passwd",
        ),
    ];
    for (round, (name, layer, why)) in cases.into_iter().enumerate() {
        let layout = t.join(format!("cache-{name}"));
        cache_with_mount_layer(&layout, &layer);
        if who == Who::Kilntest {
            give_to_kilntest(&layout);
        }
        let from = format!("type=local,src={}", layout.display());
        let round = format!("ROUND={round}");
        let log = build_ok(&k, &ctx, &["--build-arg", &round, "--cache-from", &from]);
        // Warned about once, naming the entry; the RUN goes on without
        // the mount's contents; nothing lands outside.
        let w = warnings(&log);
        assert_eq!(w.len(), 1, "{name}: {log}");
        assert!(
            w[0].contains("cache mount dl (/cache): unpacking it: ") && w[0].contains(why),
            "{name}: {log}"
        );
        assert!(said(&log, "fetching"), "{name}: {log}");
        assert!(!log.contains("restored cache mount"), "{name}: {log}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{name}");
        assert!(!Path::new("/escape").exists(), "{name}");
        // The RUN filled the mount itself: empty it for the next case.
        let mounts = k.root.join("cache-mounts");
        for e in fs::read_dir(&mounts).unwrap().flatten() {
            let _ = fs::remove_dir_all(e.path().join("data"));
        }
    }
});
