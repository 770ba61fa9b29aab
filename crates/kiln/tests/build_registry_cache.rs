//! `kiln build --cache-to/--cache-from` against a real `docker-registry` on
//! 127.0.0.1: a cache exported from one store gives every step to another
//! store, another context path and another (rootless) user; a changed
//! file re-runs only what reads it; a cache that cannot be used is warned
//! about once and the build goes on without it; concurrent exporters to
//! one ref never leave a cache with missing blobs.

#[macro_use]
mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};

use common::build::*;

/// A registry and a scratch directory, or None (loudly; a failure under
/// CI=true) when `kiln build` or docker-registry is missing.
fn setup(name: &str) -> Option<(tempfile::TempDir, support::Registry)> {
    if !kiln_build_available() {
        missing_prerequisite(&format!("build_registry_cache::{name}: no `kiln build`"));
        return None;
    }
    if !have("docker-registry") {
        missing_prerequisite(&format!("build_registry_cache::{name}: no docker-registry"));
        return None;
    }
    Some((
        scratch("kiln-bt-regcache-"),
        support::Registry::start(support::Auth::None),
    ))
}

/// Two stages feeding a third: a COPY of the context and RUNs in each,
/// with what could make a key depend on the machine or the user (ARG, ENV,
/// WORKDIR, --chown, USER, a bind mount of the context).
fn project(dir: &Path, tool: &str) {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("src/a.txt"), "alpha\n").unwrap();
    fs::write(dir.join("src/b.txt"), "beta\n").unwrap();
    fs::write(dir.join("static.txt"), "static\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM kiln-test/busybox:1 AS builder\n\
             ARG GREETING=hi\n\
             ENV MODE=release\n\
             WORKDIR /work\n\
             COPY --chown=1000:1000 src/ /work/src/\n\
             RUN --mount=type=bind,source=src/a.txt,target=/mnt/a.txt \
                 cat /mnt/a.txt src/b.txt > joined.txt && echo $GREETING $MODE >> joined.txt\n\
             FROM kiln-test/busybox:1 AS tools\n\
             USER 1000:1000\n\
             RUN echo {tool} > /tmp/tool\n\
             FROM kiln-test/busybox:1\n\
             COPY --from=builder /work/joined.txt /app/joined.txt\n\
             COPY --from=tools /tmp/tool /app/tool\n\
             COPY static.txt /app/static.txt\n\
             RUN wc -c /app/joined.txt > /app/size\n"
        ),
    )
    .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    sh(&format!(
        "mkdir -p '{0}' && cp -a '{1}/.' '{0}/'",
        to.display(),
        from.display()
    ));
}

fn assert_store_sound(k: &KilnBuild) {
    let store = kiln_image::Store::open(&k.root).unwrap();
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

both!(cache_moves_between_stores_paths_and_users, |who: Who| {
    let Some((tmp, reg)) = setup("cache_moves_between_stores_paths_and_users") else {
        return;
    };
    let t = tmp.path();
    let cache = format!("{}/cache/project:main", reg.host());
    let ctx_a = t.join("a/ctx");
    project(&ctx_a, "tool");
    // Store A, as root, exports every step of every stage to the registry,
    // and the output's steps to a directory.
    let a = store_with_bases(t, "a", Who::Caller);
    let min = t.join("min-layout");
    let (log, id_a) = build_ok(
        &a,
        &ctx_a,
        &[
            "-t",
            "p:a",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
        ],
    );
    // mode=max: the 8 layer steps of the three stages (WORKDIR makes one);
    // mode=min (the default):
    // the 4 of the output image. Each also under its definition key where
    // it has one (the WORKDIR, each COPY --from, each COPY from the context
    // into a directory below it: looked up first when those layers are
    // still in a registry, so a hit reads none of their files), which adds
    // entries, no layers: 5 with mode=max, 3 in the output stage.
    assert!(
        log.contains("cache: exported 13 entries (8 layers)"),
        "{log}"
    );
    assert!(
        log.contains("cache: exported 7 entries (4 layers)"),
        "{log}"
    );
    // Ordinary OCI content: an image manifest, gzip layers, kiln's config.
    let m: serde_json::Value = serde_json::from_str(&a.ok(&["manifest", &cache])).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    assert_eq!(ran(&log).len(), 7, "{log}");

    // Store B, empty, another user, the context elsewhere: every step from
    // the cache, nothing run, the same image; pushed to the cache's
    // registry, its cached layers are mounted from the cache, not uploaded.
    let ctx_b = t.join("elsewhere/deeper/ctx");
    copy_dir(&ctx_a, &ctx_b);
    let b = store_with_bases(t, "b", who);
    let from = format!("type=registry,ref={cache}");
    let pushed = format!("{}/built/b:1", reg.host());
    let (log, id_b) = build_ok(
        &b,
        &ctx_b,
        &[
            "-t",
            "p:b",
            "--cache-from",
            &from,
            "-o",
            &format!("type=registry,name={pushed}"),
        ],
    );
    assert_eq!(ran(&log), Vec::<String>::new(), "{log}");
    assert!(log.contains("(0 steps run, 8 cached)"), "{log}");
    assert!(warnings(&log).is_empty(), "{log}");
    assert_eq!(id_a, id_b, "{log}");
    assert_store_sound(&b);
    let mounted = reg
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("POST /v2/built/b/blobs/uploads/?")
                && l.contains("mount=")
                && l.contains("\" 201 ")
        })
        .count();
    // The output stage's four layers (the base layer is not in the cache).
    assert_eq!(mounted, 4, "{}", reg.log_text());
    let size = b.ok(&["run", "--rm", "p:b", "cat", "/app/size"]);
    assert_eq!(size.split_whitespace().next(), Some("22"), "{size}");

    // One source file changed, in another fresh store: the steps that read
    // it (and those on top of what they made) run again; the rest hit.
    fs::write(ctx_b.join("src/b.txt"), "beta, changed\n").unwrap();
    let c = store_with_bases(t, "c", who);
    let (log, _) = build_ok(&c, &ctx_b, &["--cache-from", &from]);
    let ran = ran(&log);
    let ran_text = ran.join("\n");
    for dependent in [
        "src/ /work/src/",
        "RUN --mount",
        "COPY --from=builder",
        "RUN wc",
    ] {
        assert!(
            ran_text.contains(dependent),
            "{dependent} did not run:\n{log}"
        );
    }
    assert_eq!(ran.len(), 4, "only the dependent steps run:\n{log}");
    assert_store_sound(&c);
});

/// Exports a mode=max cache of `project` to `to` from a fresh store.
fn export_from_fresh(t: &Path, name: &str, ctx: &Path, to: &str) {
    let k = store_with_bases(t, name, Who::Caller);
    let (log, _) = build_ok(&k, ctx, &["--cache-to", to]);
    assert!(log.contains("cache: exported"), "{log}");
}

/// Builds with `cache_from` in a fresh store: the build succeeds without
/// the cache, says why once, and the store holds nothing broken.
fn builds_without(t: &Path, name: &str, ctx: &Path, cache_from: &str, why: &str) {
    let k = store_with_bases(t, name, Who::Caller);
    let (log, _) = build_ok(&k, ctx, &["-t", "fallback:1", "--cache-from", cache_from]);
    let w = warnings(&log);
    assert_eq!(w.len(), 1, "one warning expected:\n{log}");
    assert!(w[0].contains(why), "warning does not say {why:?}:\n{log}");
    assert!(w[0].contains("building without this cache"), "{log}");
    assert_eq!(ran(&log).len(), 7, "{log}");
    assert_store_sound(&k);
    let size = k.ok(&["run", "--rm", "fallback:1", "cat", "/app/size"]);
    assert_eq!(size.split_whitespace().next(), Some("22"), "{size}");
}

/// The layout's index → manifest → config, to edit by hand.
fn layout_manifest(dir: &Path) -> (PathBuf, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let manifest = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    (path, manifest)
}

/// Writes `bytes` as a blob of the layout; returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Points the layout's index at a new manifest.
fn set_manifest(dir: &Path, manifest: &serde_json::Value) {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let digest = put_blob(dir, &bytes);
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn bad_caches_warn_once_and_build_without_them() {
    let Some((tmp, reg)) = setup("bad_caches_warn_once_and_build_without_them") else {
        return;
    };
    let t = tmp.path();
    let ctx = t.join("ctx");
    project(&ctx, "tool");

    // Nothing listens there.
    let nowhere = format!("127.0.0.1:{}/cache:1", support::free_port());
    builds_without(
        t,
        "unreachable",
        &ctx,
        &format!("type=registry,ref={nowhere}"),
        &nowhere,
    );
    // Unless the user said a missing cache is an error.
    let k = store_with_bases(t, "required", Who::Caller);
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "--cache-from",
            &format!("type=registry,ref={nowhere},ignore-error=false"),
        ],
    );
    assert!(!out.status.success(), "{log}");
    assert!(log.contains(&nowhere), "{log}");

    // A ref that holds an ordinary image.
    let image_ref = format!("{}/plain/image:1", reg.host());
    let k = store_with_bases(t, "pusher", Who::Caller);
    build_ok(&k, &ctx, &["-t", &image_ref, "--push"]);
    builds_without(t, "ordinary", &ctx, &image_ref, "holds no kiln cache");

    // A cache config that is not one (valid JSON of the wrong shape).
    let good = t.join("good-layout");
    export_from_fresh(
        t,
        "exporter",
        &ctx,
        &format!(
            "type=local,dest={},mode=max,compression=uncompressed",
            good.display()
        ),
    );
    let corrupt = t.join("corrupt-layout");
    copy_dir(&good, &corrupt);
    let (_, mut m) = layout_manifest(&corrupt);
    let config = br#"{"entries":{"sha256:not-a-key":{"created":"yesterday"}}}"#;
    m["config"]["digest"] = put_blob(&corrupt, config).into();
    m["config"]["size"] = config.len().into();
    set_manifest(&corrupt, &m);
    builds_without(
        t,
        "corrupt",
        &ctx,
        &format!("type=local,src={}", corrupt.display()),
        "cache config is corrupt",
    );

    // A layer whose bytes are not what the cache says: fetched, refused,
    // never in the store.
    let lying = t.join("lying-layout");
    copy_dir(&good, &lying);
    let (_, m) = layout_manifest(&lying);
    for l in m["layers"].as_array().unwrap() {
        let hex = &l["digest"].as_str().unwrap()["sha256:".len()..];
        let path = lying.join("blobs/sha256").join(hex);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, bytes).unwrap();
    }
    builds_without(
        t,
        "lying",
        &ctx,
        &format!("type=local,src={}", lying.display()),
        "layer sha256:",
    );

    // A registry cache whose layer blobs are gone.
    let gone = format!("{}/cache/gone:1", reg.host());
    export_from_fresh(
        t,
        "exporter2",
        &ctx,
        &format!("type=registry,ref={gone},mode=max"),
    );
    let m: serde_json::Value = serde_json::from_str(
        &store_with_bases(t, "inspector", Who::Caller).ok(&["manifest", &gone]),
    )
    .unwrap();
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    for l in m["layers"].as_array().unwrap() {
        let hex = &l["digest"].as_str().unwrap()["sha256:".len()..];
        let _ = fs::remove_dir_all(blobs.join(&hex[..2]).join(hex));
    }
    builds_without(t, "gone", &ctx, &gone, "layer sha256:");
}

#[test]
fn concurrent_exporters_never_leave_missing_blobs() {
    let Some((tmp, reg)) = setup("concurrent_exporters_never_leave_missing_blobs") else {
        return;
    };
    let t = tmp.path();
    let cache = format!("{}/cache/shared:1", reg.host());
    let to = format!("type=registry,ref={cache},mode=max");
    let writers: Vec<(KilnBuild, PathBuf)> = (0..4)
        .map(|i| {
            let ctx = t.join(format!("ctx{i}"));
            project(&ctx, &format!("tool-{i}"));
            (store_with_bases(t, &format!("w{i}"), Who::Caller), ctx)
        })
        .collect();
    for round in 0..3 {
        // Each round changes every writer's layers, so each export has
        // blobs the registry has not seen.
        for (i, (_, ctx)) in writers.iter().enumerate() {
            fs::write(
                ctx.join("static.txt"),
                format!("round {round} writer {i}\n"),
            )
            .unwrap();
        }
        std::thread::scope(|s| {
            for (k, ctx) in &writers {
                let to = &to;
                s.spawn(move || build_ok(k, ctx, &["--cache-to", to]));
            }
        });
        // A fresh store reads whichever export won, whole.
        let reader = store_with_bases(t, &format!("r{round}"), Who::Caller);
        let (log, _) = build_ok(&reader, &writers[0].1, &["--cache-from", &cache]);
        // Whichever writer won, its cache is whole: no blob is missing, and
        // the builder stage (the same in every writer's project) hits.
        assert!(warnings(&log).is_empty(), "round {round}:\n{log}");
        // 8 layer steps, 5 of them under their definition keys too.
        assert!(
            log.contains("cache: 13 entries in"),
            "round {round}:\n{log}"
        );
        let ran = ran(&log).join("\n");
        assert!(
            !ran.contains("src/ /work/src/") && !ran.contains("RUN --mount"),
            "round {round}:\n{log}"
        );
        assert_store_sound(&reader);
        fs::remove_dir_all(t.join(format!("r{round}"))).unwrap();
    }
}
