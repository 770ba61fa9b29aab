//! A real Debian userland: `apt-get install -y hello` in a debootstrapped
//! bookworm (minbase), rootless, with apt's privilege drop to `_apt` working
//! under the subuid map. The debootstrap result is cached as a tar in
//! `/var/tmp/kiln-test-debian` (made once, ~30 s-2 min, needs root and the
//! Debian mirror) and extracted per run inside the user namespace so that
//! ownership maps. Skip with `KILN_SKIP_DEBIAN=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const CACHE_DIR: &str = "/var/tmp/kiln-test-debian";

fn skip() -> bool {
    if std::env::var("KILN_SKIP_DEBIAN").is_ok_and(|v| v == "1") {
        eprintln!("KILN_SKIP_DEBIAN=1: skipping the Debian test");
        return true;
    }
    false
}

/// The mirror the host's apt uses (deb822 `URIs:` or one-line `deb URL`).
fn mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for t in &texts {
        for l in t.lines() {
            let l = l.trim();
            let url = l
                .strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or(""))
                .or_else(|| {
                    l.strip_prefix("deb ").map(|r| {
                        r.split_whitespace()
                            .find(|w| w.contains("://"))
                            .unwrap_or("")
                    })
                });
            if let Some(u) = url.filter(|u| u.contains("://") && !u.contains("security")) {
                return u.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Build (once) and return the cached rootfs tar.
fn debian_tar() -> Option<PathBuf> {
    let tar = Path::new(CACHE_DIR).join("rootfs.tar");
    if tar.exists() {
        return Some(tar);
    }
    if !is_root() {
        missing_prerequisite(&format!(
            "no {} and not root: cannot debootstrap",
            tar.display()
        ));
        return None;
    }
    std::fs::create_dir_all(CACHE_DIR).unwrap();
    let build = Path::new(CACHE_DIR).join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&build);
    let m = mirror();
    eprintln!(
        "debootstrap --variant=minbase bookworm {} {m}",
        build.display()
    );
    let st = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&build)
        .arg(&m)
        .status()
        .expect("debootstrap installed");
    assert!(st.success(), "debootstrap failed");
    // The host's apt sources and extra CAs, so apt in the rootfs reaches the
    // same mirror the same way.
    let sh = format!(
        "set -e; r={b}; rm -f $r/etc/apt/sources.list; mkdir -p $r/etc/apt/sources.list.d; \
         for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do \
           [ -f \"$f\" ] && cp \"$f\" \"$r$f\"; done; \
         mkdir -p $r/usr/local/share/ca-certificates $r/etc/ssl/certs; \
         cp -r /usr/local/share/ca-certificates/. $r/usr/local/share/ca-certificates/ 2>/dev/null || true; \
         cp /etc/ssl/certs/ca-certificates.crt $r/etc/ssl/certs/ 2>/dev/null || true",
        b = build.display()
    );
    assert!(
        Command::new("sh")
            .args(["-c", &sh])
            .status()
            .unwrap()
            .success()
    );
    // /dev nodes cannot be made rootless, and the sandbox provides /dev.
    let tmp = tar.with_extension("tar.tmp");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-cpf"])
        .arg(&tmp)
        .args(["--exclude=./dev/*", "-C"])
        .arg(&build)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
    std::fs::rename(&tmp, &tar).unwrap();
    let _ = std::fs::remove_dir_all(&build);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(CACHE_DIR, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).unwrap();
    Some(tar)
}

#[test]
fn apt_get_install_rootless() {
    if skip() {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    // Rootless: as kilntest when we are root, else as ourselves (which must
    // then have a subuid range).
    let who = if is_root() {
        Who::Kilntest
    } else {
        Who::Caller
    };
    let Some(env) = Env::new(who) else { return };
    let lower = env.mkdir("lower");
    let (upper, work) = (env.mkdir("upper"), env.mkdir("work"));
    // Extract inside the user namespace so file owners map through subuids.
    let o = env.run(&[
        "--unshare",
        "--",
        "tar",
        "--numeric-owner",
        "-xpf",
        tar.to_str().unwrap(),
        "-C",
        lower.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "extract failed");

    let o = env.run(&[
        "--lower",
        lower.to_str().unwrap(),
        "--upper",
        upper.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--env",
        "DEBIAN_FRONTEND=noninteractive",
        "--",
        "/bin/sh",
        "-c",
        "set -e; apt-get update -q; apt-get install -y -q --no-install-recommends hello; \
         hello; id _apt; cat /proc/self/uid_map",
    ]);
    let out = stdout(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "apt failed");
    assert!(out.contains("Hello, world!"), "{out}");
    // apt's sandbox user must work, not be skipped with a warning.
    assert!(
        !err.contains("_apt") && !out.contains("as root as file"),
        "apt privilege drop: {err}"
    );
    assert!(upper.join("usr/bin/hello").exists());
    assert!(!upper.join("etc/resolv.conf").exists() && !upper.join("etc/hosts").exists());
    // The lower layer is untouched.
    assert!(!lower.join("usr/bin/hello").exists());
}
