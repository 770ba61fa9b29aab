//! kiln's own image: the repository's `Containerfile`, built by kiln with
//! this build's kiln binary (stripped) as `KILN_BIN`, then run: the binary
//! in the image starts, as the image's non-root user, who has a subuid
//! range; `newuidmap`, `newgidmap` and the CA bundle are there.
//!
//! Fast on purpose (no apt): the base is the busybox test base plus the
//! host's `newuidmap`/`newgidmap`, the C libraries they and kiln link, and
//! the host's CA bundle, so the Containerfile's package step finds what it
//! would install and skips the network. The apt path is Debian's own.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::build::*;
use common::{assert_success, busybox_rootfs};

const BASE: &str = "kiln-test/own-image-base:1";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Copies `bin` to the same path under `root`, with the libraries it links.
fn copy_with_libs(bin: &Path, to: &Path, root: &Path) {
    let dest = root.join(to.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::copy(bin, &dest).unwrap();
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    assert_success(&ldd, &format!("ldd {}", bin.display()));
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            let lib = Path::new(word);
            let dest = root.join(lib.strip_prefix("/").unwrap());
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(lib, &dest).unwrap();
        }
    }
}

both!(containerfile_builds_with_kiln_and_its_binary_runs, |who| {
    own_image(who)
});

fn own_image(who: Who) {
    for tool in ["strip", "ldd", "newuidmap", "newgidmap"] {
        if !have(tool) {
            missing_prerequisite(&format!("{tool} is not installed: kiln's own image"));
            return;
        }
    }
    if !Path::new(CA_BUNDLE).exists() {
        missing_prerequisite("no CA bundle (ca-certificates): kiln's own image");
        return;
    }
    let work = scratch("kiln-own-image-");
    let base = work.path().join("base");
    busybox_rootfs(&base);
    // Without busybox_rootfs's `app` (uid 1000): the image's user is 1000.
    fs::write(
        base.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(base.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    fs::remove_dir_all(base.join("home/app")).unwrap();
    for tool in ["newuidmap", "newgidmap"] {
        let host = Path::new("/usr/bin").join(tool);
        copy_with_libs(&host, &host, &base);
    }
    // kiln's own libraries (the binary comes from the context).
    copy_with_libs(&kiln_bin(), Path::new("/tmp/kiln-libs-probe"), &base);
    fs::remove_file(base.join("tmp/kiln-libs-probe")).unwrap();
    fs::create_dir_all(base.join("etc/ssl/certs")).unwrap();
    fs::copy(CA_BUNDLE, base.join(&CA_BUNDLE[1..])).unwrap();

    let ctx = work.path().join("ctx");
    fs::create_dir_all(ctx.join("target/release")).unwrap();
    fs::copy(repo_dir().join("Containerfile"), ctx.join("Containerfile")).unwrap();
    fs::copy(repo_dir().join(".dockerignore"), ctx.join(".dockerignore")).unwrap();
    // As the release profile does: no debug info. Where the
    // .dockerignore lets it through.
    let out = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(ctx.join("target/release/kiln"))
        .arg(kiln_bin())
        .output()
        .unwrap();
    assert_success(&out, "strip kiln");
    if who == Who::Kilntest {
        give_to_kilntest(work.path());
    }
    let k = KilnBuild::new(&work.path().join("store"), who);
    k.ok(&["import", base.to_str().unwrap(), BASE]);

    let started = std::time::Instant::now();
    let out = k
        .cmd()
        .args(["build", "-f"])
        .arg(ctx.join("Containerfile"))
        .args(["--build-arg", &format!("BASE={BASE}"), "-t", "kiln"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "kiln build of the Containerfile");
    eprintln!("kiln's own image built in {:?}", started.elapsed());

    // The binary in the image runs, as the image's user.
    let run = |args: &[&str]| {
        let out = k
            .cmd()
            .args(["run", "--rm", "--network", "none", "--entrypoint"])
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, &format!("kiln run {args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version = run(&["/usr/local/bin/kiln", "kiln", "--version"]);
    assert!(version.starts_with("kiln "), "{version}");
    let who = run(&[
        "/bin/sh",
        "kiln",
        "-c",
        "id -u; id -un; grep '^kiln:' /etc/subuid /etc/subgid; echo $KILN_ROOT",
    ]);
    assert_eq!(
        who,
        "1000\nkiln\n/etc/subuid:kiln:100000:65536\n/etc/subgid:kiln:100000:65536\n\
         /home/kiln/.local/share/kiln\n"
    );
    let tools = run(&[
        "/bin/sh",
        "kiln",
        "-c",
        "command -v newuidmap; command -v newgidmap; test -s /etc/ssl/certs/ca-certificates.crt && echo cas",
    ]);
    assert_eq!(tools, "/usr/bin/newuidmap\n/usr/bin/newgidmap\ncas\n");
    // Its own default command: `kiln info`, as the non-root user.
    let info = run(&["/usr/local/bin/kiln", "kiln", "info"]);
    assert!(info.contains("effective uid:       1000"), "{info}");
}
