//! Test helpers: real namespaces, real mounts. Every scenario runs twice:
//! as the caller (root in CI: `Isolation::Root`) and, when the caller is
//! root, as the unprivileged user `kilntest` (subuid 200000+65536) through
//! `runuser`, which exercises the rootless re-exec. Both go through the
//! `sandbox_run` example binary, so each run is a fresh process.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const TEST_USER: &str = "kilntest";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Whoever runs the tests (root in CI).
    Caller,
    /// `kilntest`, unprivileged, via runuser (needs the caller to be root).
    Kilntest,
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `sandbox_run` example, built by `cargo test` next to the test binary.
pub fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let mut bin = dir.join("examples/sandbox_run");
    if !bin.exists() {
        bin = build_example_aside(dir);
    }
    // `cargo test --test sandbox` does not rebuild examples; say so.
    let age = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(t)) = (age(&bin), age(&exe))
        && t.duration_since(b)
            .map(|d| d.as_secs() > 120)
            .unwrap_or(false)
    {
        eprintln!(
            "warning: {} is older than the test binary; run `cargo test -p kiln-sandbox` \
                 (it rebuilds examples) or `cargo build -p kiln-sandbox --examples`",
            bin.display()
        );
    }
    bin
}

/// Runners that do not build examples (e.g. nextest): build it once into a
/// separate target dir (the main one is locked by the running cargo).
fn build_example_aside(target_profile_dir: &Path) -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = target_profile_dir
            .parent()
            .expect("target dir")
            .join("kiln-sandbox-example");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building the sandbox_run example into {}", target.display());
        let st = Command::new(cargo)
            .args(["build", "-p", "kiln-sandbox", "--example", "sandbox_run"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(st.success(), "building the sandbox_run example failed");
        target.join("debug/examples/sandbox_run")
    })
    .clone()
}

/// uid/gid of kilntest, creating the user and its subuid/subgid entries once.
pub fn kilntest_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let lookup = || {
            let out = Command::new("id").args(["-u", TEST_USER]).output().ok()?;
            let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            let out = Command::new("id").args(["-g", TEST_USER]).output().ok()?;
            let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            Some((uid, gid))
        };
        if lookup().is_none() {
            // -K SUB_*_COUNT=0: we write the ranges ourselves, at a fixed place.
            let st = Command::new("useradd")
                .args([
                    "-M",
                    "-K",
                    "SUB_UID_COUNT=0",
                    "-K",
                    "SUB_GID_COUNT=0",
                    TEST_USER,
                ])
                .status()
                .expect("useradd");
            assert!(st.success(), "useradd {TEST_USER} failed");
        }
        for f in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let line = format!("{TEST_USER}:200000:65536");
            if !text.lines().any(|l| l == line) {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{TEST_USER}:")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(f, format!("{kept}{line}\n")).expect("write subid");
            }
        }
        lookup().expect("kilntest exists now")
    })
}

/// A per-test directory under /tmp (0755) that `who` can use, with a copy of
/// the example binary readable by kilntest.
pub struct Env {
    pub who: Who,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

impl Env {
    /// `None` when `who` cannot be served (kilntest needs a root caller).
    pub fn new(who: Who) -> Option<Env> {
        if who == Who::Kilntest && !is_root() {
            missing_prerequisite("the kilntest variant needs a root caller");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-sbx-test-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("sandbox_run");
        std::fs::copy(example_bin(), &bin).expect("copy example");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = Env { who, dir, bin };
        env.give(env.dir.path());
        Some(env)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Make `path` (recursively) owned by the user the sandbox runs as.
    pub fn give(&self, path: &Path) {
        if self.who != Who::Kilntest {
            return;
        }
        let (uid, gid) = kilntest_ids();
        for e in walk(path) {
            std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).expect("lchown");
        }
    }

    /// An empty directory owned by the sandbox user.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        self.give(&p);
        p
    }

    /// A busybox rootfs: busybox-static + applet symlinks, /etc/passwd with
    /// root, nobody and app (1000:1000, supplementary group extra=2000).
    pub fn busybox_rootfs(&self, name: &str) -> PathBuf {
        let r = self.path(name);
        make_busybox_rootfs(&r);
        self.give(&r);
        r
    }

    /// Run the example with `args` as `who`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = match self.who {
            Who::Caller => Command::new(&self.bin),
            Who::Kilntest => {
                kilntest_ids();
                let mut c = Command::new("runuser");
                c.args(["-u", TEST_USER, "--"]).arg(&self.bin);
                c
            }
        };
        // TMPDIR: the sandbox's scratch mount point lands in our dir, so even
        // a SIGKILLed run leaves nothing in /tmp.
        cmd.args(args)
            .current_dir("/")
            .env("TMPDIR", self.dir.path());
        let out = cmd.output().expect("spawn sandbox_run");
        eprintln!(
            "[{:?}] sandbox_run {:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
            self.who,
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run in a `Dir` rootfs: `run(["--rootfs", root, extra.., "--", argv..])`.
    pub fn run_in(&self, root: &Path, extra: &[&str], argv: &[&str]) -> Output {
        let mut a = vec!["--rootfs", root.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.push("--");
        a.extend_from_slice(argv);
        self.run(&a)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // An unprivileged caller cannot delete files owned by its subuids
        // (e.g. a Debian rootfs): remove them as root of the namespace.
        if !is_root() {
            let _ = Command::new(&self.bin)
                .args(["--unshare", "--", "rm", "-rf"])
                .arg(self.dir.path())
                .current_dir("/")
                .output();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if std::fs::symlink_metadata(p)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        for e in std::fs::read_dir(p).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

pub fn make_busybox_rootfs(r: &Path) {
    for d in ["bin", "etc", "tmp", "root", "home/app"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).expect("busybox-static installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(applet));
        }
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
}

/// Generate `mod $name { as_caller, as_kilntest }` from one closure.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn as_caller() {
                if let Some(env) = Env::new(Who::Caller) {
                    ($body)(&env)
                }
            }
            #[test]
            fn as_kilntest() {
                if let Some(env) = Env::new(Who::Kilntest) {
                    ($body)(&env)
                }
            }
        }
    };
}

/// A prerequisite of a test (root, a peer tool, a package) is missing. Under
/// `CI=true` that fails the test: CI installs everything the suite needs, so
/// a skip there would be a pass that tested nothing. Elsewhere the part is
/// skipped and says so.
pub fn missing_prerequisite(why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{why}: a prerequisite is missing, and under CI=true that fails"
    );
    eprintln!("SKIPPED: {why}");
}
