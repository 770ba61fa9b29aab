//! `kiln build` inside a container as Kubernetes runs one: podman with
//! runc, the default seccomp profile and capabilities, not privileged (no
//! `unshare`, no `mount`, no `mknod` for root in there). kiln picks chroot
//! isolation without a mount namespace on the copy snapshotter, and:
//! - a busybox build with RUN (secret, cache, bind and tmpfs mounts, a user
//!   switch, a deletion) and a second stage (`COPY --from`, a bind mount
//!   from it) gives the same files as the same build on the host (compared
//!   through `kiln export`);
//! - the secret is in no file of the store and not in the log;
//! - a RUN's writes through absolute paths, `..`, symlinks to `/` planted in
//!   its rootfs, `/proc/self/root` and `/proc/1/root`, and mount targets
//!   behind such symlinks, leave the canary files outside its rootfs (in the
//!   container, and on the host through a bind) untouched; `chroot` is
//!   refused to it (the classic chroot escape needs it);
//! - `--isolation rootless` fails at once naming what the host refused,
//!   and runs nothing.
//!
//! The container image is busybox-static plus the C libraries the kiln
//! binary links, imported with `podman import` (no registry, no network);
//! the binary is bind-mounted read-only.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::build::*;
use common::{assert_success, busybox_rootfs, is_root, tree_listing};

const IMAGE: &str = "localhost/kiln-test-pod:busybox";
const SECRET: &str = "pod-secret-7f3a9c1e5b2d8046";

/// A RUN-heavy busybox build whose result does not depend on the isolation.
const GOOD: &str = r#"FROM kiln-test/busybox:1 AS tools
RUN echo tool > /tool && rm /etc/os-release

FROM kiln-test/busybox:1
WORKDIR /work
COPY --from=tools /tool /work/tool
RUN --mount=type=bind,from=tools,source=/tool,target=/mnt/tool cp /mnt/tool /work/tool2
RUN --mount=type=secret,id=tok grep -q '^pod-secret-' /run/secrets/tok \
 && echo used-the-secret > /secret-used \
 && echo hello > hello && mkdir -p a/b && echo deep > a/b/c && chmod 0750 a \
 && ln -s hello hello.link && rm /etc/os-release \
 && grep -q localhost /etc/hosts && echo hosts-ok > /hosts-ok \
 && cat /etc/hostname > /hostname-seen \
 && ls /dev/null > /dev/null && echo devnull-ok > /devnull-ok
RUN --mount=type=cache,target=/var/cache/pod sh -c 'echo one >> /var/cache/pod/log; cp /var/cache/pod/log /cachelog'
RUN --mount=type=bind,source=data,target=/mnt/data cp /mnt/data/file /work/from-bind \
 && (echo dropped > /mnt/data/written 2>/dev/null; true)
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo t > /scratch/t && ls /scratch > /work/tmpfs-seen' \
 && chown app:app /home/app
USER app
RUN id -u > /home/app/uid && touch /home/app/mine
"#;

/// Escapes tried from a RUN. Every write either lands in the rootfs or
/// fails; nothing outside it may change.
const ESCAPE: &str = r#"FROM kiln-test/busybox:1
RUN mkdir -p /canary /share/canary && ln -s / /escape && ln -s /canary /canlink
RUN --mount=type=secret,id=tok,target=/escape/canary/via-secret \
    --mount=type=cache,target=/escape/share/canary/via-cache \
    sh -c 'for t in /canary/c /share/canary/c ../../../../canary/c ../../../share/canary/c \
      /escape/canary/c /escape/share/canary/c /canlink/c /proc/self/root/canary/c \
      /proc/1/root/canary/c /proc/1/root/share/canary/c /proc/self/cwd/../../canary/c; do \
        (echo pwned > "$t") 2>/dev/null; (echo pwned > "$t.new") 2>/dev/null; done; \
      (cd / && cd .. && cd .. && echo pwned > canary/c.up) 2>/dev/null; \
      if chroot / /bin/true 2>/dev/null; then echo chroot-allowed > /chroot-allowed; fi; true'
RUN sleep 1017 & sh -c 'sleep 1018 &' ; true
"#;

fn podman_ok() -> bool {
    if !is_root() {
        missing_prerequisite("podman containers as root: needs root");
        return false;
    }
    for tool in ["podman", "runc", "ldd"] {
        if !have(tool) {
            missing_prerequisite(&format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

/// Removes the test's podman image when the test ends, however it ends.
struct ImageGuard;

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", IMAGE]).output();
    }
}

/// busybox + the shared libraries of the kiln binary, as a podman image.
fn make_image(work: &Path) -> ImageGuard {
    let root = work.join("image-rootfs");
    busybox_rootfs(&root);
    let ldd = Command::new("ldd").arg(kiln_bin()).output().unwrap();
    assert_success(&ldd, "ldd kiln");
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if !word.starts_with('/') {
            continue;
        }
        let lib = Path::new(word);
        let dest = root.join(lib.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, &dest).unwrap();
    }
    fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    fs::write(root.join("usr/local/bin/kiln"), b"").unwrap();
    let tar = work.join("image.tar");
    let out = Command::new("tar")
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .output()
        .unwrap();
    assert_success(&out, "tar the image rootfs");
    let out = Command::new("podman")
        .args(["import", "-q"])
        .arg(&tar)
        .arg(IMAGE)
        .output()
        .unwrap();
    assert_success(&out, "podman import");
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_file(&tar);
    ImageGuard
}

/// The capabilities `examples/kubernetes/job.yaml` gives kiln (podman's
/// defaults but NET_BIND_SERVICE), with `allowPrivilegeEscalation: false`.
const JOB_PRIVILEGES: &[&str] = &[
    "--cap-drop=ALL",
    "--cap-add=CHOWN,DAC_OVERRIDE,FOWNER,FSETID,KILL,SETGID,SETUID,SETPCAP,SETFCAP,SYS_CHROOT",
    "--security-opt=no-new-privileges",
];

/// A pod under the "restricted" policy: non-root, no capabilities.
const RESTRICTED: &[&str] = &[
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--user=1000:1000",
    "--env=HOME=/tmp",
];

/// `podman run` as a default pod runs a container: runc, default seccomp
/// and capabilities, no privileges; rlimits at or below ours. `extra`
/// narrows the privileges further.
fn podman_run(share: &Path, extra: &[&str], script: &str) -> std::process::Output {
    Command::new("podman")
        .args(["run", "--rm", "--runtime", "runc", "--network", "none"])
        .args(extra)
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg("-v")
        .arg(format!("{}:/usr/local/bin/kiln:ro", kiln_bin().display()))
        .arg("-v")
        .arg(format!("{}:/share", share.display()))
        .args([IMAGE, "sh", "-c", script])
        .output()
        .expect("spawn podman")
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))
}

fn context(share: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let dir = share.join(name);
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.join("data/file"), "from the context\n").unwrap();
    dir
}

#[test]
fn build_in_default_podman_container() {
    if !podman_ok() {
        return;
    }
    let work = scratch("kiln-pod-");
    let _image = make_image(work.path());
    let share = work.path().join("share");
    fs::create_dir_all(share.join("canary")).unwrap();
    fs::write(share.join("canary/c"), "canary\n").unwrap();
    fs::write(share.join("tok"), SECRET).unwrap();
    fs::set_permissions(share.join("tok"), fs::Permissions::from_mode(0o600)).unwrap();
    context(&share, "good", GOOD);
    context(&share, "escape", ESCAPE);
    context(
        &share,
        "rootless",
        "FROM kiln-test/busybox:1\nRUN --network=none touch /share/ran-rootless\n",
    );
    // The very base the host build uses (same tree, same import time).
    let bb = share.join("busybox");
    let out = Command::new("cp")
        .arg("-a")
        .arg(busybox_dir())
        .arg(&bb)
        .output()
        .unwrap();
    assert_success(&out, "cp busybox rootfs");

    let script = r#"
set -u
K="kiln --root /share/store"
mkdir -p /canary && echo canary > /canary/c
SOURCE_DATE_EPOCH=1700000000 $K import /share/busybox kiln-test/busybox:1 >/share/import.log 2>&1 || { cat /share/import.log >&2; exit 10; }
$K info >/share/info.txt 2>&1
$K build -t good --secret id=tok,src=/share/tok /share/good >/share/good.log 2>&1; echo $? >/share/good.rc
$K export good -o /share/good.tar >/share/export.log 2>&1
$K run --rm good cat /work/hello /home/app/uid >/share/run.txt 2>/share/run.err; echo $? >>/share/run.txt
$K build -t escape --secret id=tok,src=/share/tok /share/escape >/share/escape.log 2>&1; echo $? >/share/escape.rc
$K export escape -o /share/escape.tar >>/share/export.log 2>&1
ps | grep -c '[s]leep 101[78]' >/share/leftovers.txt;
ls -A /canary >/share/canary-ls.txt; cat /canary/c >/share/canary-c.txt; ls -A / >/share/root-ls.txt
$K build --isolation rootless --no-cache -t r /share/rootless >/share/rootless.log 2>&1; echo $? >/share/rootless.rc
exit 0
"#;
    let started = std::time::Instant::now();
    let out = podman_run(&share, &[], script);
    let took = started.elapsed();
    assert_success(&out, "podman run (the in-container script)");
    eprintln!("in the container: {took:?}");

    // kiln saw the host as a pod shows it, and said what it picked.
    let info = read(&share.join("info.txt"));
    assert!(info.contains("isolation (auto):    chroot"), "{info}");
    assert!(
        info.contains("isolation chroot:    yes (chroot without a mount namespace"),
        "{info}"
    );
    assert!(info.contains("isolation rootless:  no ("), "{info}");

    let log = read(&share.join("good.log"));
    assert_eq!(read(&share.join("good.rc")).trim(), "0", "{log}");
    assert!(log.contains("falling back to chroot isolation"), "{log}");
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");

    // The same Dockerfile built on the host, with namespaces and overlay.
    let host = KilnBuild::new(&work.path().join("host-store"), Who::Caller);
    import_bases(&host, false);
    let out = host
        .cmd()
        .args(["build", "-t", "good", "--secret"])
        .arg(format!("id=tok,src={}", share.join("tok").display()))
        .arg(share.join("good"))
        .output()
        .unwrap();
    assert_success(&out, "kiln build on the host");
    let host_tree = work.path().join("host-tree");
    host.rootfs("good", &host_tree);
    let pod_tree = work.path().join("pod-tree");
    extract_tar(&share.join("good.tar"), &pod_tree);
    let (h, p) = (tree_listing(&host_tree), tree_listing(&pod_tree));
    assert!(!h.is_empty());
    let only = |a: &[String], b: &[String]| {
        a.iter()
            .filter(|l| !b.contains(l))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        h,
        p,
        "host and pod builds differ:\nonly on the host: {:#?}\nonly in the pod: {:#?}",
        only(&h, &p),
        only(&p, &h)
    );
    // `kiln run` of the result works in the container too.
    assert_eq!(
        read(&share.join("run.txt")),
        "hello\n1000\n0\n",
        "{}",
        read(&share.join("run.err"))
    );
    // What the RUNs did, and what they must not have left.
    let uid = fs::read_to_string(pod_tree.join("home/app/uid")).unwrap();
    assert_eq!(uid.trim(), "1000");
    for f in [
        "secret-used",
        "hosts-ok",
        "devnull-ok",
        "cachelog",
        "work/tool",
        "work/tool2",
    ] {
        assert!(pod_tree.join(f).exists(), "{f} missing");
    }
    assert_eq!(read(&pod_tree.join("hostname-seen")), "kiln\n");
    for gone in [
        "etc/os-release",
        "run/secrets/tok",
        "mnt/data/file",
        "mnt/data/written",
        "scratch/t",
        "var/cache/pod/log",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "dev/null",
    ] {
        assert!(
            fs::symlink_metadata(pod_tree.join(gone)).is_err(),
            "{gone} is in the image"
        );
    }

    // The secret: in no file of the store (layers, cache, snapshots).
    for (path, bytes) in all_bytes(&share.join("store")) {
        assert!(
            !find_bytes(&bytes, SECRET.as_bytes()),
            "the secret is in {}",
            path.display()
        );
    }

    // Escapes: everything outside the rootfs is as it was.
    let elog = read(&share.join("escape.log"));
    assert_eq!(read(&share.join("escape.rc")).trim(), "0", "{elog}");
    assert!(!elog.contains(SECRET), "the secret is in the log:\n{elog}");
    assert_eq!(read(&share.join("canary-c.txt")), "canary\n");
    assert_eq!(
        read(&share.join("canary-ls.txt")),
        "c\n",
        "new files in /canary"
    );
    assert_eq!(read(&share.join("canary/c")), "canary\n");
    let host_canaries: Vec<_> = fs::read_dir(share.join("canary"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(host_canaries, ["c"], "new files in the host's canary dir");
    let root_ls = read(&share.join("root-ls.txt"));
    assert!(
        !root_ls.contains("chroot-allowed") && !root_ls.contains("escape"),
        "{root_ls}"
    );
    // Nothing the RUN started outlives it (there is no pid namespace).
    assert_eq!(
        read(&share.join("leftovers.txt")),
        "0\n",
        "a RUN's process is left"
    );
    // The writes landed in the RUN's own rootfs, and chroot was refused.
    let esc_tree = work.path().join("escape-tree");
    extract_tar(&share.join("escape.tar"), &esc_tree);
    assert_eq!(read(&esc_tree.join("canary/c")), "pwned\n");
    assert!(
        !esc_tree.join("chroot-allowed").exists(),
        "the RUN could chroot"
    );
    assert!(
        !esc_tree.join("canary/via-secret").exists(),
        "a secret mount target stayed in the layer"
    );

    // Named isolation the host refuses: fails before anything runs.
    let rlog = read(&share.join("rootless.log"));
    assert_ne!(read(&share.join("rootless.rc")).trim(), "0", "{rlog}");
    assert!(
        rlog.contains("isolation rootless unavailable: this host refuses"),
        "{rlog}"
    );
    assert!(!share.join("ran-rootless").exists());
    assert!(!rlog.contains("#2 "), "a step started:\n{rlog}");

    // The Kubernetes Job's privileges are enough for the same build.
    let least = r#"
K="kiln --root /share/store-least"
SOURCE_DATE_EPOCH=1700000000 $K import /share/busybox kiln-test/busybox:1 >/share/least.log 2>&1
$K build -t good --secret id=tok,src=/share/tok /share/good >>/share/least.log 2>&1; echo $? >/share/least.rc
$K export good -o /share/least.tar >>/share/least.log 2>&1
exit 0
"#;
    let out = podman_run(&share, JOB_PRIVILEGES, least);
    assert_success(&out, "podman run with the Job's privileges");
    let llog = read(&share.join("least.log"));
    assert_eq!(read(&share.join("least.rc")).trim(), "0", "{llog}");
    let least_tree = work.path().join("least-tree");
    extract_tar(&share.join("least.tar"), &least_tree);
    assert_eq!(tree_listing(&least_tree), h, "with the Job's privileges");

    // Restricted: no isolation works; RUN fails naming why, before it runs.
    let restricted = r#"
K="kiln --root /tmp/store"
SOURCE_DATE_EPOCH=1700000000 $K import /share/busybox kiln-test/busybox:1 >/tmp/import.log 2>&1 || { cat /tmp/import.log; exit 10; }
$K build -t r /share/rootless 2>&1; echo "rc=$?"
exit 0
"#;
    let out = podman_run(&share, RESTRICTED, restricted);
    assert_success(&out, "podman run as a restricted pod");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chroot needs root with CAP_SYS_CHROOT") && text.contains("rc=1"),
        "{text}"
    );
    assert!(!share.join("ran-rootless").exists());
}
