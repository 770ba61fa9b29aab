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
//!   and runs nothing;
//! - as a pod under the "restricted" policy (non-root, no capability, no
//!   new privileges, a seccomp profile refusing `unshare`): traced
//!   isolation, named by `kiln info` and on stderr, builds the same busybox
//!   build (owners included), keeps the secret out, and the escapes of
//!   `tests/data/traced_escape.c` and the shell leave the canaries alone;
//!   `apt-get install` gives the host build's files in both pods
//!   (`apt_in_pods`).
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

/// A test's own podman image, removed when the test ends, however it ends.
/// Each test names its own: the tests run in parallel, and one test's
/// removal must not pull the image from under another's `podman run`.
struct PodImage {
    name: String,
}

impl Drop for PodImage {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.name])
            .output();
    }
}

/// busybox + the shared libraries of the kiln binary, as a podman image
/// named for `test`.
fn make_image(work: &Path, test: &str) -> PodImage {
    let name = format!("localhost/kiln-test-pod:{test}-{}", std::process::id());
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
        .arg(&name)
        .output()
        .unwrap();
    assert_success(&out, "podman import");
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_file(&tar);
    PodImage { name }
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
fn podman_run(
    image: &PodImage,
    share: &Path,
    extra: &[&str],
    script: &str,
) -> std::process::Output {
    podman_run_on(image, share, "none", extra, script)
}

/// [`podman_run`] on the podman network `network`.
fn podman_run_on(
    image: &PodImage,
    share: &Path,
    network: &str,
    extra: &[&str],
    script: &str,
) -> std::process::Output {
    Command::new("podman")
        .args(["run", "--rm", "--runtime", "runc", "--network", network])
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
        .args([image.name.as_str(), "sh", "-c", script])
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
    let image = make_image(work.path(), "default");
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
    let out = podman_run(&image, &share, &[], script);
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
    let out = podman_run(&image, &share, JOB_PRIVILEGES, least);
    assert_success(&out, "podman run with the Job's privileges");
    let llog = read(&share.join("least.log"));
    assert_eq!(read(&share.join("least.rc")).trim(), "0", "{llog}");
    let least_tree = work.path().join("least-tree");
    extract_tar(&share.join("least.tar"), &least_tree);
    assert_eq!(tree_listing(&least_tree), h, "with the Job's privileges");

    restricted_pod_builds_traced(&image, work.path(), &share, &h, &host);
}

/// Escapes tried from a RUN under traced isolation, at canary directories
/// the pod's user can write (so that a way out would show): the
/// container's /tmp/canary and the host's (bind-mounted) /share/r/canary.
/// Also: owners given by chown reach the layer and are seen by the next
/// step.
const TRACED_ESCAPE: &str = r#"FROM kiln-test/busybox:1
COPY escape /escape
RUN mkdir -p /tmp/canary /share/r/canary && ln -s / /up && ln -s /tmp/canary /canlink \
 && touch /owned /mine && chown 1:2 /owned && mkdir /owned-dir && chown 3:4 /owned-dir
RUN stat -c '%u:%g' /owned /owned-dir /mine > /owners-seen \
 && /escape /tmp/canary && /escape /share/r/canary
RUN --mount=type=secret,id=tok,target=/up/tmp/canary/via-secret \
    --mount=type=cache,target=/up/share/r/canary/via-cache \
    sh -c 'for t in /tmp/canary/c /share/r/canary/c ../../../../tmp/canary/c \
      /up/tmp/canary/c /up/share/r/canary/c /canlink/c /proc/self/root/tmp/canary/c \
      /proc/1/root/tmp/canary/c /proc/self/cwd/../../tmp/canary/c; do \
        (echo pwned > "$t") 2>/dev/null; (echo pwned > "$t.new") 2>/dev/null; done; \
      (cd / && cd .. && cd .. && echo pwned > tmp/canary/c.up) 2>/dev/null; \
      if chroot / /bin/true 2>/dev/null; then echo chroot-allowed > /chroot-allowed; fi; true'
RUN sleep 1017 & sh -c 'sleep 1018 &' ; true
"#;

/// podman's default seccomp profile with `unshare` refused (EPERM) and
/// `clone` allowed only without namespace flags, `clone3` ENOSYS: what
/// Kubernetes' RuntimeDefault (containerd's profile) gives a pod without
/// CAP_SYS_ADMIN. podman's own default allows `unshare`.
fn restricted_seccomp(work: &Path) -> PathBuf {
    let default = Path::new("/usr/share/containers/seccomp.json");
    let text = fs::read_to_string(default)
        .unwrap_or_else(|e| panic!("{} (podman's default profile): {e}", default.display()));
    let mut profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for r in rules.iter_mut() {
        if let Some(names) = r["names"].as_array_mut() {
            names.retain(|n| !matches!(n.as_str(), Some("unshare" | "clone" | "clone3")));
        }
    }
    rules
        .push(serde_json::json!({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}));
    rules
        .push(serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    rules.push(serde_json::json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0x7E02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    }));
    let out = work.join("restricted-seccomp.json");
    fs::write(&out, serde_json::to_vec(&profile).unwrap()).unwrap();
    out
}

/// [`restricted_seccomp`] with `ptrace` refused as well (EPERM).
fn restricted_seccomp_without_ptrace(work: &Path) -> PathBuf {
    let with = restricted_seccomp(work);
    let mut profile: serde_json::Value = serde_json::from_slice(&fs::read(&with).unwrap()).unwrap();
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for r in rules.iter_mut() {
        if let Some(names) = r["names"].as_array_mut() {
            names.retain(|n| n.as_str() != Some("ptrace"));
        }
    }
    rules.push(serde_json::json!({"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}));
    let out = work.join("restricted-no-ptrace-seccomp.json");
    fs::write(&out, serde_json::to_vec(&profile).unwrap()).unwrap();
    out
}

/// A pod under the "restricted" policy whose runtime refuses `unshare`:
/// traced isolation builds the same image as the host, owners included;
/// escapes leave the canaries alone; the secret stays out.
fn restricted_pod_builds_traced(
    image: &PodImage,
    work: &Path,
    share: &Path,
    host_listing: &[String],
    host: &KilnBuild,
) {
    if !have("cc") {
        missing_prerequisite("cc (to build the static escape helper) is not installed");
        return;
    }
    let r = share.join("r");
    fs::create_dir_all(r.join("canary")).unwrap();
    fs::set_permissions(share, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(r.join("canary/c"), "canary\n").unwrap();
    fs::write(r.join("tok"), SECRET).unwrap();
    let esc = context(share, "traced-escape", TRACED_ESCAPE);
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traced_escape.c");
    let out = Command::new("cc")
        .args(["-static", "-O1", "-pthread", "-o"])
        .arg(esc.join("escape"))
        .arg(&helper)
        .output()
        .unwrap();
    assert_success(&out, "cc -static traced_escape.c");
    // The pod's user (1000) owns what it must write, and nothing else.
    for p in [
        r.clone(),
        r.join("canary"),
        r.join("canary/c"),
        r.join("tok"),
    ] {
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
    }
    fs::set_permissions(r.join("tok"), fs::Permissions::from_mode(0o600)).unwrap();
    let profile = restricted_seccomp(work);
    let mut args = RESTRICTED.to_vec();
    let seccomp = format!("--security-opt=seccomp={}", profile.display());
    args.push(&seccomp);
    let script = r#"
K="kiln --root /share/r/store"
mkdir -p /tmp/canary && echo canary > /tmp/canary/c
SOURCE_DATE_EPOCH=1700000000 $K import /share/busybox kiln-test/busybox:1 >/share/r/import.log 2>&1 || { cat /share/r/import.log; exit 10; }
$K info >/share/r/info.txt 2>&1
$K build -t traced-good --secret id=tok,src=/share/r/tok /share/good >/share/r/good.log 2>&1; echo $? >/share/r/good.rc
$K save traced-good -o /share/r/good.tar >/share/r/save.log 2>&1
$K build -t traced-escape --secret id=tok,src=/share/r/tok /share/traced-escape >/share/r/escape.log 2>&1; echo $? >/share/r/escape.rc
$K save traced-escape -o /share/r/escape.tar >>/share/r/save.log 2>&1
ps | grep -c '[s]leep 101[78]' >/share/r/leftovers.txt
ls -A /tmp/canary >/share/r/canary-ls.txt; cat /tmp/canary/c >/share/r/canary-c.txt
exit 0
"#;
    let started = std::time::Instant::now();
    let out = podman_run(image, share, &args, script);
    eprintln!("in the restricted container: {:?}", started.elapsed());
    assert_success(&out, "podman run as a restricted pod");

    let info = read(&r.join("info.txt"));
    assert!(info.contains("isolation (auto):    traced"), "{info}");
    assert!(info.contains("isolation traced:    yes ("), "{info}");
    assert!(info.contains("isolation chroot:    no ("), "{info}");

    let log = read(&r.join("good.log"));
    assert_eq!(read(&r.join("good.rc")).trim(), "0", "{log}");
    assert!(log.contains("using traced isolation"), "{log}");
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
    // The image, loaded on the host, equals the host build file for file,
    // owners and modes included.
    let out = host
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(r.join("good.tar"))
        .output()
        .unwrap();
    assert_success(&out, "kiln load (the restricted pod's image)");
    let tree = work.join("traced-tree");
    host.rootfs("traced-good", &tree);
    let t = tree_listing(&tree);
    let only = |a: &[String], b: &[String]| {
        a.iter()
            .filter(|l| !b.contains(l))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        host_listing,
        t.as_slice(),
        "host and traced builds differ:\nonly on the host: {:#?}\nonly traced: {:#?}",
        only(host_listing, &t),
        only(&t, host_listing)
    );

    // Escapes.
    let elog = read(&r.join("escape.log"));
    assert_eq!(read(&r.join("escape.rc")).trim(), "0", "{elog}");
    assert!(!elog.contains(SECRET), "the secret is in the log:\n{elog}");
    assert_eq!(read(&r.join("canary-c.txt")), "canary\n", "{elog}");
    assert_eq!(
        read(&r.join("canary-ls.txt")),
        "c\n",
        "new files in /tmp/canary:\n{elog}"
    );
    assert_eq!(read(&r.join("canary/c")), "canary\n", "{elog}");
    let names: Vec<_> = fs::read_dir(r.join("canary"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["c"], "new files in the host's canary dir:\n{elog}");
    for refused in [
        "inherited fds: 0",
        "ptrace attach tracer: Operation not permitted",
        "ptrace traceme: Operation not permitted",
        "process_vm_writev: Operation not permitted",
        "pidfd_getfd: Operation not permitted",
        "seccomp: Operation not permitted",
        "prctl seccomp: Operation not permitted",
        "io_uring_setup: Function not implemented",
        "name_to_handle_at: Operation not permitted",
        "open_by_handle_at: Operation not permitted",
        "chroot: Operation not permitted",
        "mount: Operation not permitted",
        "clone untraced: Operation not permitted",
        "open tracer mem: No such file or directory",
        "getcwd: /\n",
        "readlink root: /\n",
        "uid: 0 euid: 0",
        "race reached: 0 (",
    ] {
        assert!(elog.contains(refused), "{refused:?} not in:\n{elog}");
    }
    assert_eq!(
        read(&r.join("leftovers.txt")),
        "0\n",
        "a RUN's process is left"
    );
    let out = host
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(r.join("escape.tar"))
        .output()
        .unwrap();
    assert_success(&out, "kiln load (the escape image)");
    let esc_tree = work.join("traced-escape-tree");
    host.rootfs("traced-escape", &esc_tree);
    // The writes landed in the RUN's own rootfs; chroot was refused.
    assert_eq!(read(&esc_tree.join("tmp/canary/c")), "pwned\n");
    assert!(
        !esc_tree.join("chroot-allowed").exists(),
        "the RUN could chroot"
    );
    assert!(!esc_tree.join("tmp/canary/via-secret").exists());
    // Owners: what chown gave, seen by the next step and in the layer;
    // what the RUN made is root's.
    assert_eq!(read(&esc_tree.join("owners-seen")), "1:2\n3:4\n0:0\n");
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &str| {
        let m = fs::symlink_metadata(esc_tree.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("owned"), (1, 2));
    assert_eq!(owner("owned-dir"), (3, 4));
    assert_eq!(owner("mine"), (0, 0));
    assert_eq!(owner("escape"), (0, 0));

    // Where ptrace is refused as well, no isolation works: a RUN fails at
    // once naming why, and `--isolation traced` fails before any step.
    let no_ptrace = restricted_seccomp_without_ptrace(work);
    let mut args = RESTRICTED.to_vec();
    let seccomp = format!("--security-opt=seccomp={}", no_ptrace.display());
    args.push(&seccomp);
    let script = r#"
K="kiln --root /tmp/store"
SOURCE_DATE_EPOCH=1700000000 $K import /share/busybox kiln-test/busybox:1 >/tmp/import.log 2>&1 || { cat /tmp/import.log; exit 10; }
$K build -t r /share/rootless 2>&1; echo "rc=$?"
$K build --isolation traced -t r /share/rootless 2>&1; echo "rc=$?"
exit 0
"#;
    let out = podman_run(image, share, &args, script);
    assert_success(&out, "podman run as a restricted pod without ptrace");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chroot needs root with CAP_SYS_CHROOT")
            && text.contains("traced isolation is refused too (ptrace")
            && text.contains("isolation traced unavailable: ptrace")
            && !text.contains("rc=0"),
        "{text}"
    );
    assert!(!share.join("ran-rootless").exists());

    // The secret: in no file of the pod's store.
    for (path, bytes) in all_bytes(&r.join("store")) {
        assert!(
            !find_bytes(&bytes, SECRET.as_bytes()),
            "the secret is in {}",
            path.display()
        );
    }
}

/// An apt build in Debian: installs a package, which drops privileges to
/// `_apt` for its downloads and chowns its partial directories.
const APT: &str = r#"FROM kiln-test/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends hello && hello > /hello-ran \
 && rm -rf /var/lib/apt/lists/*
"#;

/// A line of [`tree_listing`] without the file's contents (apt's logs and
/// caches hold times), and nothing under the trees that hold them.
fn shape(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .filter(|l| !l.starts_with("var/log/") && !l.starts_with("var/cache/"))
        .map(|l| l.split(' ').take(4).collect::<Vec<_>>().join(" "))
        .collect()
}

/// `apt-get install` in a default pod (root, chroot isolation) and in a
/// restricted one (traced isolation), each on the pod's network: the
/// package is installed, and every path of each result has the kind, mode
/// and owner the host build gives it (apt's `_apt` dirs included).
#[test]
fn apt_in_pods() {
    if !podman_ok() {
        return;
    }
    if skip_debian() {
        missing_prerequisite("KILN_SKIP_DEBIAN=1: the Debian base");
        return;
    }
    let work = scratch("kiln-pod-apt-");
    let image = make_image(work.path(), "apt");
    let share = work.path().join("share");
    fs::create_dir_all(share.join("r")).unwrap();
    fs::create_dir_all(share.join("d")).unwrap();
    fs::set_permissions(&share, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(share.join("r"), Some(1000), Some(1000)).unwrap();
    context(&share, "apt", APT);
    let host = KilnBuild::new(&work.path().join("host-store"), Who::Caller);
    assert!(import_bases(&host, true), "the Debian base");
    let out = host
        .cmd()
        .args(["build", "-t", "apt"])
        .arg(share.join("apt"))
        .output()
        .unwrap();
    assert_success(&out, "kiln build (apt) on the host");
    let out = host
        .cmd()
        .args(["save", DEBIAN_IMAGE, "-o"])
        .arg(share.join("debian.tar"))
        .output()
        .unwrap();
    assert_success(&out, "kiln save (the Debian base)");
    fs::set_permissions(share.join("debian.tar"), fs::Permissions::from_mode(0o644)).unwrap();
    let ht = work.path().join("host-apt");
    host.rootfs("apt", &ht);
    let h = shape(&tree_listing(&ht));

    let profile = restricted_seccomp(work.path());
    let mut restricted = RESTRICTED.to_vec();
    let seccomp = format!("--security-opt=seccomp={}", profile.display());
    restricted.push(&seccomp);
    for (dir, args, says) in [
        ("d", &[][..], "falling back to chroot isolation"),
        ("r", &restricted[..], "using traced isolation"),
    ] {
        let script = format!(
            r#"
K="kiln --root /share/{dir}/store"
$K load -i /share/debian.tar >/share/{dir}/load.log 2>&1 || {{ cat /share/{dir}/load.log; exit 10; }}
$K build -t pod-apt /share/apt >/share/{dir}/apt.log 2>&1; echo $? >/share/{dir}/apt.rc
$K save pod-apt -o /share/{dir}/apt.tar >/share/{dir}/save.log 2>&1
exit 0
"#
        );
        let started = std::time::Instant::now();
        let out = podman_run_on(&image, &share, "host", args, &script);
        eprintln!("apt in the pod ({says}): {:?}", started.elapsed());
        assert_success(&out, &format!("podman run (apt, {says})"));
        let log = read(&share.join(dir).join("apt.log"));
        assert_eq!(read(&share.join(dir).join("apt.rc")).trim(), "0", "{log}");
        assert!(log.contains(says), "{log}");
        let host = KilnBuild::new(&work.path().join(format!("{dir}-store")), Who::Caller);
        let out = host
            .cmd()
            .arg("load")
            .arg("-i")
            .arg(share.join(dir).join("apt.tar"))
            .output()
            .unwrap();
        assert_success(&out, "kiln load (the pod's apt image)");
        let pt = work.path().join(format!("pod-apt-{dir}"));
        host.rootfs("pod-apt", &pt);
        assert_eq!(read(&pt.join("hello-ran")), "Hello, world!\n");
        let p = shape(&tree_listing(&pt));
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|l| !b.contains(l))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(
            h == p,
            "host and pod ({says}) apt builds differ:\nonly on the host: {:#?}\nonly in the pod: {:#?}",
            only(&h, &p),
            only(&p, &h)
        );
    }
}
