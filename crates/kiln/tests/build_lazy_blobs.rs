//! Lazy blobs against a real `docker-registry` on 127.0.0.1: a build in
//! an empty store with `--cache-from` of a registry cache, FROM a base in
//! that registry, downloads a layer only when a step needs its files or an
//! output its bytes. A push-only build of a fully cached project moves no
//! layer bytes at all (every layer is mounted from the cache's or the
//! base's repository); a build that names a store image (`-t`) fetches
//! that image's layers, not the ones only its other stages had, and the
//! image is complete without the registry.

#[macro_use]
mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::build::*;

/// A registry and a scratch directory, or None (loudly; a failure under
/// CI=true) when a prerequisite is missing.
fn prerequisites(name: &str) -> Option<(tempfile::TempDir, support::Registry)> {
    for (ok, what) in [
        (kiln_build_available(), "`kiln build`"),
        (have("docker-registry"), "docker-registry"),
        (have("skopeo"), "skopeo"),
    ] {
        if !ok {
            missing_prerequisite(&format!("build_lazy_blobs::{name}: no {what}"));
            return None;
        }
    }
    Some((
        scratch("kiln-bt-lazy-"),
        support::Registry::start(support::Auth::None),
    ))
}

/// A builder stage with a big layer and a small one; the output stage
/// takes the small file only, and adds a WORKDIR, a context file and a RUN.
fn project(dir: &Path, base: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("app.txt"), "app\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {base} AS builder\n\
             RUN head -c 400000 /dev/urandom > /big.bin\n\
             RUN echo small > /small.txt\n\
             FROM {base}\n\
             WORKDIR /app\n\
             COPY --from=builder /small.txt /app/small.txt\n\
             COPY app.txt /app/app.txt\n\
             RUN cat /app/small.txt /app/app.txt > /app/both.txt\n"
        ),
    )
    .unwrap();
}

/// The `layers: N fetched (B bytes), M stayed remote` line, as (N, M).
fn layer_counts(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.starts_with("layers: "))
        .unwrap_or_else(|| panic!("no layers line:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let fetched = words[1].parse().unwrap();
    let remote = words[words.len() - 3].parse().unwrap();
    (fetched, remote)
}

/// The layer digests of a manifest, as JSON.
fn layer_digests(manifest: &serde_json::Value) -> BTreeSet<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The registry's access log lines from byte `from` on: `METHOD path status`.
fn requests(reg: &support::Registry, from: usize) -> Vec<String> {
    reg.log_text()[from..]
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("\"")?;
            let (request, rest) = rest.split_once("\" ")?;
            let status = rest.split_whitespace().next()?;
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next()?, parts.next()?);
            path.starts_with("/v2/")
                .then(|| format!("{method} {path} {status}"))
        })
        .collect()
}

both!(
    cached_layers_stay_in_the_registry_until_needed,
    |who: Who| {
        let Some((tmp, reg)) = prerequisites("cached_layers_stay_in_the_registry_until_needed")
        else {
            return;
        };
        let t = tmp.path();
        // The base lives in the registry: store A puts busybox there.
        let a = KilnBuild::new(&t.join("a/store"), Who::Caller);
        import_bases(&a, false);
        let base = format!("{}/base/busybox:1", reg.host());
        a.ok(&["tag", BUSYBOX_IMAGE, &base]);
        a.ok(&["push", &base]);
        let ctx = t.join("ctx");
        project(&ctx, &base);
        let cache = format!("{}/cache/app:max", reg.host());
        let (log, id_a) = build_ok(
            &a,
            &ctx,
            &[
                "-t",
                "app:a",
                "--cache-to",
                &format!("type=registry,ref={cache},mode=max"),
            ],
        );
        assert!(log.contains("cache: exported"), "{log}");
        let cache_manifest: serde_json::Value =
            serde_json::from_str(&a.ok(&["manifest", &cache])).unwrap();
        let base_manifest: serde_json::Value =
            serde_json::from_str(&a.ok(&["manifest", &base])).unwrap();
        let mut layers = layer_digests(&cache_manifest);
        layers.extend(layer_digests(&base_manifest));

        // Store B, empty: a push-only build (no store image) of the fully
        // cached project moves manifests, configs and mounts, never a layer.
        let b = KilnBuild::new(&t.join("b/store"), who);
        let pushed = format!("{}/built/app:1", reg.host());
        let mark = reg.log_text().len();
        let (log, _) = build_ok(
            &b,
            &ctx,
            &[
                "--cache-from",
                &format!("type=registry,ref={cache}"),
                "-o",
                &format!("type=registry,name={pushed}"),
            ],
        );
        assert!(log.contains("(0 steps run, "), "{log}");
        assert!(!log.lines().any(|l| l.starts_with("warning:")), "{log}");
        let (fetched, remote) = layer_counts(&log);
        assert_eq!(fetched, 0, "{log}");
        assert!(remote >= 5, "{log}");
        let seen = requests(&reg, mark);
        // The pushed manifest's config is the one blob uploaded.
        let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ]))
        .unwrap();
        assert_eq!(raw["config"]["digest"].as_str(), Some(id_a.as_str()));
        layers.extend(layer_digests(&raw));
        let moved: Vec<&String> = seen
            .iter()
            .filter(|r| {
                let layer_get = r.starts_with("GET ")
                    && layers.iter().any(|d| r.contains(&format!("/blobs/{d}")));
                let upload = (r.starts_with("PUT ") || r.starts_with("PATCH "))
                    && r.contains("/blobs/uploads/")
                    && !r.contains(&format!("digest={}", id_a.replace(':', "%3A")))
                    && !r.contains(&format!("digest={id_a}"));
                layer_get || upload
            })
            .collect();
        assert!(moved.is_empty(), "layer bytes moved: {moved:#?}\n{seen:#?}");
        let mounts = seen
            .iter()
            .filter(|r| r.starts_with("POST /v2/built/app/blobs/uploads/?") && r.contains("mount="))
            .filter(|r| r.ends_with(" 201"))
            .count();
        // The base layer and the output stage's four layers.
        assert_eq!(mounts, 5, "{seen:#?}");
        // Nothing named in store B: the push was the only output.
        let listing = b.ok(&["images"]);
        assert!(!listing.contains("built/app"), "{listing}");
        // The pushed image is complete and is A's image.
        let oci = t.join("pushed-oci");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{pushed}"),
            &format!("oci:{}:1", oci.display()),
        ]);
        let config: serde_json::Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--config",
            &format!("oci:{}:1", oci.display()),
        ]))
        .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 5);
        // Store C, empty, names a store image: the image's own five layers are
        // fetched; the builder stage's two (one of them big) stay remote, as
        // its COPY --from is a cache hit that reads no file of the stage.
        let c = KilnBuild::new(&t.join("c/store"), who);
        let mark = reg.log_text().len();
        let (log, id_c) = build_ok(
            &c,
            &ctx,
            &[
                "-t",
                "app:c",
                "--cache-from",
                &format!("type=registry,ref={cache}"),
            ],
        );
        assert_eq!(id_c, id_a, "{log}");
        assert_eq!(layer_counts(&log), (5, 2), "{log}");
        let big: Vec<String> = layer_digests(&cache_manifest)
            .into_iter()
            .filter(|d| {
                cache_manifest["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|l| l["digest"] == d.as_str() && l["size"].as_u64().unwrap() > 300_000)
            })
            .collect();
        assert_eq!(big.len(), 1, "{cache_manifest}");
        let got_big = requests(&reg, mark)
            .into_iter()
            .any(|r| r.starts_with("GET ") && r.contains(&big[0]));
        assert!(!got_big, "the builder's big layer was downloaded");

        // Store D, empty, a new output stage whose COPY --from misses: the
        // copy reads the builder stage, so that stage's three layers come (its
        // view is the whole stage); nothing else is needed for a push.
        let ctx_d = t.join("ctx-d");
        project(&ctx_d, &base);
        let df = fs::read_to_string(ctx_d.join("Dockerfile")).unwrap();
        let builder_only = df.split("FROM ").take(2).collect::<Vec<_>>().join("FROM ");
        fs::write(
            ctx_d.join("Dockerfile"),
            format!("{builder_only}FROM {base}\nCOPY --from=builder /small.txt /copied.txt\n"),
        )
        .unwrap();
        let d = KilnBuild::new(&t.join("d/store"), who);
        let (log, _) = build_ok(
            &d,
            &ctx_d,
            &[
                "--cache-from",
                &format!("type=registry,ref={cache}"),
                "-o",
                &format!("type=registry,name={}/built/d:1", reg.host()),
            ],
        );
        assert!(log.contains("(1 steps run, 2 cached)"), "{log}");
        assert_eq!(layer_counts(&log), (3, 0), "{log}");

        // The base came whole for the store image: the store names it now,
        // as a pull would have.
        let images = c.ok(&["images"]);
        assert!(images.contains("base/busybox"), "{images}");

        // A complete store image: it exports with the registry gone.
        drop(reg);
        let out = t.join("c/out");
        fs::create_dir_all(&out).unwrap();
        if who == Who::Kilntest {
            give_to_kilntest(&out);
        }
        let tar = out.join("c.tar");
        c.ok(&["export", "app:c", "-o", tar.to_str().unwrap()]);
        let listing = sh(&format!("tar -tf '{}'", tar.display()));
        for f in [
            "app/small.txt",
            "app/both.txt",
            "app/app.txt",
            "bin/busybox",
        ] {
            assert!(
                listing.lines().any(|l| l.trim_start_matches("./") == f),
                "{f} not in the export:\n{listing}"
            );
        }
        let store = kiln_image::Store::open(&c.root).unwrap();
        let report = store.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
);

/// A registry cache whose layers are there (HEAD says so) but whose bytes
/// lie: the hit is taken, the fetch an output needs fails its check, and
/// the build goes again without that cache, warned about once; nothing
/// from it enters the store.
#[test]
fn a_cache_whose_bytes_lie_is_dropped_and_the_build_goes_again() {
    let Some((tmp, reg)) =
        prerequisites("a_cache_whose_bytes_lie_is_dropped_and_the_build_goes_again")
    else {
        return;
    };
    let t = tmp.path();
    let ctx = t.join("ctx");
    project(&ctx, BUSYBOX_IMAGE);
    let a = KilnBuild::new(&t.join("a/store"), Who::Caller);
    import_bases(&a, false);
    let cache = format!("{}/cache/lying:1", reg.host());
    build_ok(
        &a,
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    let m: serde_json::Value = serde_json::from_str(&a.ok(&["manifest", &cache])).unwrap();
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    for d in layer_digests(&m) {
        let hex = &d["sha256:".len()..];
        let data = blobs.join(&hex[..2]).join(hex).join("data");
        let mut bytes = fs::read(&data).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&data, bytes).unwrap();
    }
    let b = KilnBuild::new(&t.join("b/store"), Who::Caller);
    import_bases(&b, false);
    let (log, _) = build_ok(
        &b,
        &ctx,
        &[
            "-t",
            "app:b",
            "--cache-from",
            &format!("type=registry,ref={cache}"),
        ],
    );
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("building without this cache"), "{log}");
    assert!(log.contains("building again without it"), "{log}");
    // Built without the cache: every layer step ran, and no layer of
    // that cache is left to count as remote.
    assert!(log.contains("(6 steps run, 0 cached)"), "{log}");
    assert!(!log.contains("stayed remote"), "{log}");
    let both = b.ok(&["run", "--rm", "app:b", "cat", "/app/both.txt"]);
    assert_eq!(both, "small\napp\n");
    let store = kiln_image::Store::open(&b.root).unwrap();
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
