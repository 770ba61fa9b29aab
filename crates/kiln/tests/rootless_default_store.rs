//! An unprivileged user with neither `--root` nor `KILN_ROOT` gets one store,
//! `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`), from every command:
//! those that switch into a user namespace (run, build, export, prune) and
//! those that do not (import, images, ...). Inside the namespace the process
//! is uid 0, so a store chosen there would be root's `/var/lib/kiln`.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::build::*;

const USER: &str = "kilntest";

/// kiln as kilntest with `home` as HOME, and no store named anywhere.
fn kiln(bin: &Path, home: &Path, xdg: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new("runuser");
    c.args([
        "-u",
        USER,
        "--",
        "env",
        "-u",
        "KILN_ROOT",
        "-u",
        "XDG_DATA_HOME",
    ]);
    c.arg(format!("HOME={}", home.display()));
    if let Some(x) = xdg {
        c.arg(format!("XDG_DATA_HOME={}", x.display()));
    }
    c.arg(bin).args(args).current_dir(home);
    c.env_remove("KILN_ROOT").env_remove("SOURCE_DATE_EPOCH");
    c.output().expect("spawn kiln")
}

fn ok(bin: &Path, home: &Path, xdg: Option<&Path>, args: &[&str]) -> String {
    let out = kiln(bin, home, xdg, args);
    common::assert_success(&out, &format!("kilntest: kiln {}", args.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn every_command_uses_one_store(xdg: bool) {
    if !common::is_root() {
        missing_prerequisite("acting as kilntest needs root");
        return;
    }
    kilntest_ids();
    let tmp = scratch("kiln-default-store-");
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let bin = tmp.path().join("kiln-bin");
    fs::copy(kiln_bin(), &bin).unwrap();
    let xdg_dir = xdg.then(|| tmp.path().join("xdg"));
    if let Some(x) = &xdg_dir {
        fs::create_dir_all(x).unwrap();
    }
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\nRUN echo built > /built\n",
    )
    .unwrap();
    give_to_kilntest(tmp.path());
    let (x, h) = (xdg_dir.as_deref(), home.as_path());
    let bb = busybox_dir().to_str().unwrap().to_string();

    ok(&bin, h, x, &["import", &bb, "kiln-test/busybox:1"]);
    ok(
        &bin,
        h,
        x,
        &["tag", "kiln-test/busybox:1", "kiln-test/other:1"],
    );
    let out = ok(
        &bin,
        h,
        x,
        &["run", "--rm", "kiln-test/busybox:1", "echo", "ran"],
    );
    assert!(out.contains("ran"), "{out}");
    ok(
        &bin,
        h,
        x,
        &["build", "-t", "kiln-test/built:1", ctx.to_str().unwrap()],
    );
    let out = ok(&bin, h, x, &["images"]);
    for name in ["kiln-test/busybox", "kiln-test/other", "kiln-test/built"] {
        assert!(out.contains(name), "images lists {name}: {out}");
    }
    ok(&bin, h, x, &["inspect", "kiln-test/built:1"]);
    ok(&bin, h, x, &["history", "kiln-test/built:1"]);
    let rootfs = tmp.path().join("rootfs.tar");
    ok(
        &bin,
        h,
        x,
        &[
            "export",
            "kiln-test/built:1",
            "-o",
            rootfs.to_str().unwrap(),
        ],
    );
    assert!(fs::metadata(&rootfs).unwrap().len() > 0);
    let saved = tmp.path().join("saved.tar");
    ok(
        &bin,
        h,
        x,
        &["save", "kiln-test/built:1", "-o", saved.to_str().unwrap()],
    );
    ok(&bin, h, x, &["rmi", "kiln-test/other:1"]);
    ok(&bin, h, x, &["load", "-i", saved.to_str().unwrap()]);
    ok(&bin, h, x, &["prune"]);
    ok(&bin, h, x, &["check"]);
    let out = ok(&bin, h, x, &["images"]);
    assert!(out.contains("kiln-test/built"), "{out}");
    assert!(!out.contains("kiln-test/other"), "{out}");

    let store = match &xdg_dir {
        Some(x) => x.join("kiln"),
        None => home.join(".local/share/kiln"),
    };
    assert!(store.join("index.json").is_file(), "{}", store.display());
    assert!(
        store.join("snapshots/layers").is_dir(),
        "run and build unpacked into the same store: {}",
        store.display()
    );
    let index = fs::read_to_string(store.join("index.json")).unwrap();
    assert!(index.contains("kiln-test/built:1"), "{index}");
}

#[test]
fn every_command_uses_the_home_store() {
    every_command_uses_one_store(false);
}

#[test]
fn every_command_uses_the_xdg_store() {
    every_command_uses_one_store(true);
}
