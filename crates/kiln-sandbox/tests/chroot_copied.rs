//! Chroot isolation without a mount namespace (what root gets in a default
//! container or pod), simulated on the host by dropping `CAP_SYS_ADMIN`
//! from the bounding set: the mounts are copied into the `Dir` rootfs for
//! the run and taken out after, what was at their targets comes back, a
//! cache's changes reach its host directory, a bind's do not, targets
//! behind a symlink to `/` planted in the rootfs stay inside it, and the
//! command may not chroot. kiln's own test in a real podman container is
//! `crates/kiln/tests/build_in_pod.rs`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn mounts_are_copied_in_and_taken_out() {
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        missing_prerequisite("dropping CAP_SYS_ADMIN with setpriv needs root and setpriv");
        return;
    }
    let env = Env::new(Who::Caller).unwrap();
    let root = env.busybox_rootfs("root");
    fs::create_dir_all(root.join("cache")).unwrap();
    fs::write(root.join("cache/from-image"), "image\n").unwrap();
    fs::write(root.join("etc/hosts"), "image's hosts\n").unwrap();
    std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
    let bind = env.mkdir("bind");
    fs::write(bind.join("f"), "bound\n").unwrap();
    let cache = env.mkdir("cache");
    fs::write(cache.join("log"), "one\n").unwrap();
    // Outside the rootfs, where a target through /escape would land if it
    // were resolved against the host's root.
    let canary = env.path("canary-dir");

    let script = "grep -q localhost /etc/hosts && echo hosts; cat /b/f; ls /cache; \
                  echo two >> /cache/log; echo dropped > /b/written; ls /t; \
                  cat /via-link/f; \
                  if chroot / /bin/true 2>/dev/null; then echo chroot-allowed; fi; \
                  test -e /dev/null && echo devnull";
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .arg(&env.bin)
        .args(["--isolation", "chroot", "--network", "host", "--rootfs"])
        .arg(&root)
        .arg("--bind")
        .arg(format!("{}:/b", bind.display()))
        .arg("--bind")
        .arg(format!("{}:/escape{}", bind.display(), canary.display()))
        .arg("--bind")
        .arg(format!("{}:/via-link", bind.display()))
        .arg("--cache")
        .arg(format!("{}:/cache", cache.display()))
        .args(["--tmpfs", "/t", "--", "sh", "-c", script])
        .current_dir("/")
        .env("TMPDIR", env.dir.path())
        .output()
        .unwrap();
    let (so, se) = (stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{so}\n{se}");
    assert_eq!(so, "hosts\nbound\nlog\nbound\ndevnull\n", "{se}");

    // Back as it was: the image's /etc/hosts and /cache, no targets left.
    assert_eq!(
        fs::read_to_string(root.join("etc/hosts")).unwrap(),
        "image's hosts\n"
    );
    assert_eq!(names(&root.join("cache")), ["from-image"]);
    for gone in ["b", "t", "via-link", "etc/hostname", "etc/resolv.conf"] {
        assert!(
            fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} left in the rootfs"
        );
    }
    assert!(
        fs::symlink_metadata(&canary).is_err(),
        "a target left the rootfs"
    );
    // The target behind /escape was made inside the rootfs (its parents
    // stay, as mount points' parents do).
    assert!(
        root.join(canary.strip_prefix("/").unwrap())
            .parent()
            .unwrap()
            .is_dir()
    );
    // The cache was written back; the bind's write was dropped.
    assert_eq!(fs::read_to_string(cache.join("log")).unwrap(), "one\ntwo\n");
    assert_eq!(names(&bind), ["f"]);
    // Nothing set aside is left next to the rootfs.
    assert!(
        !names(env.dir.path())
            .iter()
            .any(|n| n.starts_with(".kiln-aside-")),
        "{:?}",
        names(env.dir.path())
    );
}
