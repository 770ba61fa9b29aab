//! `kiln build --squash`: the target stage's new layers become one on top
//! of the base image's layers, as `docker build --squash` makes them. The
//! squashed image's filesystem is the unsquashed one's (`kiln export`),
//! file for file; files the build deleted from the base stay deleted; as
//! root and as the unprivileged kilntest.

mod common;

use std::fs;

use common::build::*;
use common::tree_listing;

/// Deletes from the base, adds, changes, links, deletes what an earlier
/// step of its own added; the last stage starts from an earlier stage.
const DOCKERFILE: &str = "FROM kiln-test/busybox:1 AS base\n\
RUN mkdir -p /srv && echo base > /srv/base\n\
FROM base\n\
RUN rm /bin/vi && echo one > /srv/a && echo two > /srv/b\n\
COPY file.txt /srv/c\n\
RUN chmod 600 /srv/a && ln -s a /srv/link && ln /srv/c /srv/hard && rm /srv/b && rm /srv/base\n\
ENV SQUASHED=yes\n";

fn squash_equals_export(who: Who) {
    if !kiln_build_available() {
        missing_prerequisite("`kiln build`");
        return;
    }
    let tmp = scratch("kiln-squash-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(ctx.join("file.txt"), "copied\n").unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&ctx);
    }
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let c = ctx.to_str().unwrap();
    k.ok(&["build", "-q", "-t", "squash/plain:1", c]);
    k.ok(&["build", "-q", "--squash", "-t", "squash/squashed:1", c]);

    let base_layers = k.config_blob(BUSYBOX_IMAGE)["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .len();
    let stage_base = k.config_blob("squash/plain:1")["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .clone();
    let plain = k.config_blob("squash/plain:1");
    let squashed = k.config_blob("squash/squashed:1");
    let ids = |v: &serde_json::Value| v["rootfs"]["diff_ids"].as_array().unwrap().clone();
    // The final stage starts from the `base` stage (busybox + one RUN):
    // those layers stay, and the three of the final stage are one.
    let keep = base_layers + 1;
    assert_eq!(ids(&plain).len(), keep + 3);
    assert_eq!(ids(&squashed).len(), keep + 1);
    assert_eq!(ids(&squashed)[..keep], stage_base[..keep]);
    assert_eq!(squashed["config"]["Env"], plain["config"]["Env"]);
    let hist = squashed["history"].as_array().unwrap();
    let made: Vec<&serde_json::Value> = hist.iter().filter(|h| h["empty_layer"] != true).collect();
    assert_eq!(made.len(), keep + 1);
    assert_eq!(made.last().unwrap()["created_by"], "kiln build --squash");
    // Every step is still in the history.
    assert_eq!(hist.len(), plain["history"].as_array().unwrap().len() + 1);

    let want = tmp.path().join("x-plain");
    let got = tmp.path().join("x-squashed");
    k.rootfs("squash/plain:1", &want);
    k.rootfs("squash/squashed:1", &got);
    assert_eq!(tree_listing(&got), tree_listing(&want));
    assert!(
        !got.join("bin/vi").exists(),
        "a deleted base file came back"
    );
    assert!(
        !got.join("srv/base").exists(),
        "a deleted stage file came back"
    );
    assert!(!got.join("srv/b").exists());
    assert_eq!(
        fs::read_to_string(got.join("srv/hard")).unwrap(),
        "copied\n"
    );
    assert!(got.join("bin/sh").exists());

    // The squashed layer holds only what changed: `kiln diff` of the two
    // images is empty, and `kiln layers` shows the one new layer hiding
    // /srv/base from below.
    let diff = k.ok(&["diff", "squash/plain:1", "squash/squashed:1"]);
    assert_eq!(diff.lines().count(), 1, "{diff}");
    let layers: serde_json::Value =
        serde_json::from_str(&k.ok(&["layers", "squash/squashed:1", "--format", "json"])).unwrap();
    let top = &layers.as_array().unwrap()[keep];
    assert_eq!(top["created_by"], "kiln build --squash");
    // /srv/a, /srv/c, /srv/hard, /srv/link (not /srv/b, made and deleted
    // in between).
    assert_eq!(top["files"], 4, "{top}");
    assert_eq!(top["content_size"], 4 + 7, "{top}");
}

#[test]
fn squash_is_the_exported_filesystem_as_root() {
    squash_equals_export(Who::Caller);
}

/// The target stage starts FROM an image: its layers are the base.
#[test]
fn squash_keeps_a_base_image_layers() {
    if !kiln_build_available() {
        missing_prerequisite("`kiln build`");
        return;
    }
    let tmp = scratch("kiln-squash-img-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\nRUN echo a > /a\nRUN rm /a && echo b > /b\n",
    )
    .unwrap();
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    k.ok(&[
        "build",
        "-q",
        "--squash",
        "-t",
        "squash/img:1",
        ctx.to_str().unwrap(),
    ]);
    let base = k.config_blob(BUSYBOX_IMAGE)["rootfs"]["diff_ids"].clone();
    let ids = k.config_blob("squash/img:1")["rootfs"]["diff_ids"].clone();
    let (base, ids) = (base.as_array().unwrap(), ids.as_array().unwrap());
    assert_eq!(ids.len(), base.len() + 1);
    assert_eq!(ids[..base.len()], base[..]);
    let got = tmp.path().join("x");
    k.rootfs("squash/img:1", &got);
    assert!(!got.join("a").exists());
    assert_eq!(fs::read_to_string(got.join("b")).unwrap(), "b\n");
}

#[test]
fn squash_is_the_exported_filesystem_rootless() {
    if !common::is_root() {
        missing_prerequisite("root, to run kiln as the kilntest user");
        return;
    }
    squash_equals_export(Who::Kilntest);
}
