//! `kiln build --cache-to type=inline` against a real `docker-registry` on
//! 127.0.0.1: the pushed image carries its own cache in its config, and a
//! fresh store (another context path, another user) that names the image
//! with `--cache-from` runs no step and gets the same image; the field is
//! the only difference from an image built without it, survives `kiln
//! push` of a store image, is not inherited by a child image, and an image
//! without it is warned about once.

#[macro_use]
mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;

use common::build::*;
use kiln_image::{Image, Platform, Store};

const FIELD: &str = "dev.kiln.cache.inline.v1";

/// A registry and a scratch directory, or None (loudly; a failure under
/// CI=true) when `kiln build`, docker-registry or skopeo is missing.
fn setup(name: &str) -> Option<(tempfile::TempDir, support::Registry)> {
    if !kiln_build_available() {
        missing_prerequisite(&format!("build_inline_cache::{name}: no `kiln build`"));
        return None;
    }
    for tool in ["docker-registry", "skopeo"] {
        if !have(tool) {
            missing_prerequisite(&format!("build_inline_cache::{name}: no {tool}"));
            return None;
        }
    }
    Some((
        scratch("kiln-bt-inline-"),
        support::Registry::start(support::Auth::None),
    ))
}

/// One stage (inline cache is the final image's layers only): a COPY of
/// the context, RUNs on top, and steps that change only the config or
/// nothing at all.
fn project(dir: &Path) {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("src/a.txt"), "alpha\n").unwrap();
    fs::write(dir.join("src/b.txt"), "beta\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         ENV MODE=release\n\
         WORKDIR /app\n\
         COPY src/ /app/src/\n\
         RUN cat src/a.txt src/b.txt > joined.txt && echo $MODE >> joined.txt\n\
         RUN true\n\
         RUN wc -c joined.txt > size\n",
    )
    .unwrap();
}

/// The stored image's config, as JSON.
fn stored_config(k: &KilnBuild, name: &str) -> serde_json::Value {
    let store = Store::open(&k.root).unwrap();
    let (image, _) = Image::load(&store, name, &Platform::host()).unwrap();
    serde_json::to_value(&image.config).unwrap()
}

/// A pushed image's config as skopeo (not kiln) reads it from the registry.
fn pushed_config(reference: &str) -> serde_json::Value {
    let out = sh(&format!(
        "skopeo inspect --tls-verify=false --config --raw docker://{reference}"
    ));
    serde_json::from_str(&out).unwrap()
}

fn assert_store_sound(k: &KilnBuild) {
    let store = Store::open(&k.root).unwrap();
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

both!(an_inline_cache_moves_with_the_image, |who: Who| {
    let Some((tmp, reg)) = setup("an_inline_cache_moves_with_the_image") else {
        return;
    };
    let t = tmp.path();
    let ctx_a = t.join("a/ctx");
    project(&ctx_a);
    let image = format!("{}/app/inline:1", reg.host());

    // Store A builds and pushes with inline cache: the registry gets the
    // image and nothing else (no cache manifest, no extra blob).
    let a = store_with_bases(t, "a", Who::Caller);
    let (log, id_a) = build_ok(
        &a,
        &ctx_a,
        &["-t", &image, "--push", "--cache-to", "type=inline"],
    );
    // The layers of WORKDIR, COPY and the two RUNs that wrote something,
    // and the RUN that changed nothing; WORKDIR and the COPY (into the
    // directory WORKDIR made) also under their definition keys, which a
    // store that has not fetched the layers below looks up first.
    assert!(
        log.contains("cache: 7 entries inline in the image"),
        "{log}"
    );
    assert_eq!(ran(&log).len(), 4, "{log}");
    let pushed = pushed_config(&image);
    let entries = pushed[FIELD]["entries"]
        .as_object()
        .expect("inline entries");
    assert_eq!(entries.len(), 7, "{pushed}");
    let layers = pushed["rootfs"]["diff_ids"].as_array().unwrap().len();
    for e in entries.values() {
        assert_eq!(e["created"], 1700000000, "{e}");
        if let Some(i) = e.get("layer") {
            assert!((i.as_u64().unwrap() as usize) < layers, "{e}");
        }
    }
    let pushed_repos: Vec<String> = reg
        .log_text()
        .lines()
        .filter(|l| l.contains("PUT /v2/"))
        .map(|l| l.to_string())
        .collect();
    assert!(
        pushed_repos.iter().all(|l| l.contains("/v2/app/inline/")),
        "{pushed_repos:?}"
    );

    // podman pulls and runs it: the field means nothing to it.
    if who == Who::Caller {
        if have("podman") && have("runc") {
            let h = t.join("podman");
            common::podman(&h, &["pull", "-q", "--tls-verify=false", &image]);
            let mut run = common::PODMAN_RUN.to_vec();
            run.extend([image.as_str(), "cat", "/app/size"]);
            let size = common::podman(&h, &run);
            assert_eq!(size.split_whitespace().next(), Some("19"), "{size}");
        } else {
            missing_prerequisite("build_inline_cache: podman and runc, to run the image");
        }
    }

    // The same build without inline cache: only the field differs.
    let (_, id_plain) = build_ok(&a, &ctx_a, &["-t", "plain:1"]);
    assert_ne!(id_plain, id_a);
    let mut with = stored_config(&a, &image);
    with.as_object_mut().unwrap().remove(FIELD);
    assert_eq!(with, stored_config(&a, "plain:1"));

    // Store B, empty, another user, the context elsewhere, names the image:
    // every step hits, nothing runs, and (inline again) the same image.
    let ctx_b = t.join("elsewhere/deeper/ctx");
    sh(&format!(
        "mkdir -p '{0}' && cp -a '{1}/.' '{0}/'",
        ctx_b.display(),
        ctx_a.display()
    ));
    let b = store_with_bases(t, "b", who);
    let (log, id_b) = build_ok(
        &b,
        &ctx_b,
        &[
            "-t",
            "p:b",
            "--cache-from",
            &image,
            "--cache-to",
            "type=inline",
        ],
    );
    assert!(log.contains("cache: 7 entries in"), "{log}");
    assert_eq!(ran(&log), Vec::<String>::new(), "{log}");
    assert!(warnings(&log).is_empty(), "{log}");
    assert_eq!(id_a, id_b, "{log}");
    assert_store_sound(&b);
    let size = b.ok(&["run", "--rm", "p:b", "cat", "/app/size"]);
    assert_eq!(size.split_whitespace().next(), Some("19"), "{size}");

    // Without --push, the store's image carries the field, and a later
    // `kiln push` takes it along; `type=registry,ref=` reads it as well.
    let later = format!("{}/app/later:1", reg.host());
    let (log, id_later) = build_ok(&b, &ctx_b, &["-t", &later, "--cache-to", "type=inline"]);
    assert_eq!(
        id_later,
        id_a,
        "{log}\nlater: {}\na: {}",
        stored_config(&b, &later),
        stored_config(&a, &image)
    );
    assert!(stored_config(&b, &later)[FIELD]["entries"].is_object());
    b.ok(&["push", &later]);
    assert_eq!(pushed_config(&later)[FIELD], pushed[FIELD]);
    let c = store_with_bases(t, "c", who);
    let (log, id_c) = build_ok(
        &c,
        &ctx_b,
        &["--cache-from", &format!("type=registry,ref={later}")],
    );
    assert_eq!(ran(&log), Vec::<String>::new(), "{log}");
    // Built without --cache-to type=inline: the image without the field.
    assert_eq!(id_c, id_plain, "{log}");

    // A child of the inline image does not inherit its cache.
    let child = t.join("child");
    fs::create_dir_all(&child).unwrap();
    fs::write(
        child.join("Dockerfile"),
        "FROM p:b\nRUN echo child > /child\n",
    )
    .unwrap();
    build_ok(&b, &child, &["-t", "child:1"]);
    assert!(stored_config(&b, "child:1").get(FIELD).is_none());
});

#[test]
fn an_image_without_inline_cache_is_warned_about_once() {
    let Some((tmp, reg)) = setup("an_image_without_inline_cache_is_warned_about_once") else {
        return;
    };
    let t = tmp.path();
    let ctx = t.join("ctx");
    project(&ctx);
    let image = format!("{}/app/plain:1", reg.host());
    let a = store_with_bases(t, "a", Who::Caller);
    build_ok(&a, &ctx, &["-t", &image, "--push"]);
    assert!(pushed_config(&image).get(FIELD).is_none());

    let b = store_with_bases(t, "b", Who::Caller);
    let (log, _) = build_ok(&b, &ctx, &["-t", "fallback:1", "--cache-from", &image]);
    let w = warnings(&log);
    assert_eq!(w.len(), 1, "one warning expected:\n{log}");
    assert!(w[0].contains("holds no kiln cache"), "{log}");
    assert!(w[0].contains("building without this cache"), "{log}");
    assert_eq!(ran(&log).len(), 4, "{log}");
    assert_store_sound(&b);

    // type=inline is for --cache-to; mode=max cannot be inline: refused
    // before anything is built.
    for (flag, spec) in [
        ("--cache-from", "type=inline"),
        ("--cache-to", "type=inline,mode=max"),
    ] {
        let (out, _, log) = kiln_build(&b, &ctx, &[flag, spec]);
        assert!(!out.status.success(), "{flag} {spec}:\n{log}");
        assert!(log.contains("type=inline"), "{log}");
        assert!(
            !log.contains("#1 "),
            "{flag} {spec} built something:\n{log}"
        );
    }
}
