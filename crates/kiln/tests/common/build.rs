//! Support for the `kiln build` tests: the shared base images (busybox and
//! Debian, made once per test process), the fixture format under
//! `tests/build/<case>/`, running a case with kiln (as the caller or as the
//! unprivileged `kilntest`) and with buildah, reading back the filesystem
//! and config of either result, and the conformance diff with its
//! exception table (`docs/build-conformance.md`).
//!
//! Everything here is written against docker's `build` flags, so the tests
//! run unchanged once `kiln build` lands; until then [`kiln_build_available`]
//! is false and the tests say loudly what they could not run.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{assert_success, busybox_rootfs, is_root, tree_listing};

pub const BUSYBOX_IMAGE: &str = "kiln-test/busybox:1";
pub const DEBIAN_IMAGE: &str = "kiln-test/debian:bookworm";
/// Shared with kiln-sandbox's Debian test: a debootstrapped bookworm
/// (minbase) as `rootfs.tar`, host apt sources and CA bundle inside.
pub const DEBIAN_CACHE: &str = "/var/tmp/kiln-test-debian";
pub const TEST_USER: &str = "kilntest";

/// The config fields the conformance check compares (docker's names).
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build")
}

pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn skip_debian() -> bool {
    std::env::var("KILN_SKIP_DEBIAN").is_ok_and(|v| v == "1")
}

/// A scratch directory everyone can traverse (kilntest reads fixtures and
/// writes its store below it). On the same disk as /var/tmp, not tmpfs.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A scratch directory that lives as long as this test process: for the
/// bases a `OnceLock` makes once per process, which no destructor removes.
/// It is named after the process (`<prefix><pid>`), and directories of the
/// same prefix whose process is gone are removed first, so repeated test
/// runs do not fill the disk (a Debian store is 600 MB).
pub fn process_scratch(prefix: &str) -> PathBuf {
    sweep_dead_scratch(prefix);
    let d = Path::new("/var/tmp").join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("process scratch dir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Removes `/var/tmp/<prefix><pid>` of processes that have ended. A name
/// whose suffix is no pid comes from `scratch` (before `process_scratch`
/// existed); it goes once it is a day old, so a run in progress keeps it.
fn sweep_dead_scratch(prefix: &str) {
    let Ok(entries) = fs::read_dir("/var/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(suffix) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let dead = match suffix.parse::<u32>() {
            Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(24 * 3600)),
        };
        if dead {
            let _ = fs::remove_dir_all(e.path());
        }
    }
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
    loud(&format!("SKIPPED: {why}"));
}

/// Prints a banner that stands out in `cargo test` output: used for every
/// part of a test that could not run, with the reason.
pub fn loud(msg: &str) {
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    for l in msg.lines() {
        eprintln!("!!! {l}");
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
}

/// Whether this kiln has a `build` command at all. Until the lead's
/// `kiln build` lands the kiln side of every test is skipped, loudly.
pub fn kiln_build_available() -> bool {
    static AVAIL: OnceLock<bool> = OnceLock::new();
    *AVAIL.get_or_init(|| {
        let ok = Command::new(kiln_bin())
            .args(["build", "--help"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing_prerequisite("`kiln build` does not exist in this kiln binary: the kiln side of\nthe build tests (fixtures are still checked against buildah)");
        }
        ok
    })
}

pub fn have(program: &str) -> bool {
    super::have(program)
}

pub fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert_success(&out, script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------- users

/// uid/gid of kilntest, creating it (and its subuid/subgid range, as the
/// sandbox tests do: `kilntest:200000:65536`) when missing.
pub fn kilntest_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let lookup = || {
            let id = |f: &str| -> Option<u32> {
                let o = Command::new("id").args([f, TEST_USER]).output().ok()?;
                String::from_utf8_lossy(&o.stdout).trim().parse().ok()
            };
            Some((id("-u")?, id("-g")?))
        };
        if lookup().is_none() {
            let _ = Command::new("useradd")
                .args([
                    "-m",
                    "-K",
                    "SUB_UID_COUNT=0",
                    "-K",
                    "SUB_GID_COUNT=0",
                    TEST_USER,
                ])
                .status();
        }
        for f in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(f).unwrap_or_default();
            let line = format!("{TEST_USER}:200000:65536");
            if !text.lines().any(|l| l == line) {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{TEST_USER}:")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                fs::write(f, format!("{kept}{line}\n")).expect("write subid");
            }
        }
        lookup().expect("kilntest exists")
    })
}

/// chown -R to kilntest.
pub fn give_to_kilntest(p: &Path) {
    let (u, g) = kilntest_ids();
    sh(&format!("chown -R {u}:{g} '{}'", p.display()));
}

// ---------------------------------------------------------------- kiln

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Caller,
    Kilntest,
}

/// kiln against one store, run as the caller or as kilntest.
#[derive(Clone)]
pub struct KilnBuild {
    pub root: PathBuf,
    pub who: Who,
    pub bin: PathBuf,
}

impl KilnBuild {
    pub fn new(root: &Path, who: Who) -> KilnBuild {
        fs::create_dir_all(root).unwrap();
        let bin = match who {
            Who::Caller => kiln_bin(),
            Who::Kilntest => {
                // A copy kilntest can execute even if the target dir is private.
                let b = root.parent().unwrap().join("kiln-bin");
                if !b.exists() {
                    fs::copy(kiln_bin(), &b).unwrap();
                    fs::set_permissions(&b, fs::Permissions::from_mode(0o755)).unwrap();
                }
                give_to_kilntest(root);
                b
            }
        };
        KilnBuild {
            root: root.to_path_buf(),
            who,
            bin,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = match self.who {
            Who::Caller => Command::new(&self.bin),
            Who::Kilntest => {
                kilntest_ids();
                let mut c = Command::new("runuser");
                // -w keeps SOURCE_DATE_EPOCH if a test sets it.
                c.args(["-w", "SOURCE_DATE_EPOCH", "-u", TEST_USER, "--"])
                    .arg(&self.bin);
                c
            }
        };
        c.arg("--root").arg(&self.root);
        c.env_remove("SOURCE_DATE_EPOCH").env_remove("KILN_ROOT");
        c.current_dir("/");
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn kiln")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_success(&out, &format!("kiln {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kiln inspect NAME`'s `Config` blob.
    pub fn config_blob(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v.get("Config").cloned().unwrap_or(Value::Null)
    }

    /// The image's flattened filesystem, extracted (by the test process,
    /// which is root) into `dir` with numeric owners kept.
    pub fn rootfs(&self, name: &str, dir: &Path) {
        // A directory of its own for the tar: handing the shared parent to
        // kilntest (chown -R) would race with, and re-own, the trees other
        // cases are extracting there at the same time.
        let out = dir.with_extension("export");
        fs::create_dir_all(&out).unwrap();
        if self.who == Who::Kilntest {
            give_to_kilntest(&out);
        }
        let tar = out.join("rootfs.tar");
        self.ok(&["export", name, "-o", tar.to_str().unwrap()]);
        extract_tar(&tar, dir);
        let _ = fs::remove_dir_all(&out);
    }
}

pub fn extract_tar(tar: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&out, &format!("tar -x {}", tar.display()));
}

// ---------------------------------------------------------------- bases

/// A busybox rootfs directory, made once per process, readable by all.
pub fn busybox_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = process_scratch("kiln-bt-busybox-");
        let r = d.join("rootfs");
        busybox_rootfs(&r);
        r
    })
}

/// The host's apt mirror (deb822 `URIs:` or one-line `deb URL`).
pub fn apt_mirror() -> String {
    // apt's own reading of the sources (only `.list` and `.sources` files,
    // deb822 stanzas whole): a farm disables a third-party source by
    // renaming it, and a line-by-line scan of every file in the directory
    // took such a source's URI for the Debian mirror.
    let sources = kiln_debian::sources::host_sources(Path::new("/etc/apt"));
    kiln_debian::sources::mirror_for(&sources, "bookworm")
        .map(|s| s.uri.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The Debian rootfs tar, in kiln-sandbox's cache format (debootstrap
/// minbase bookworm, host apt sources + CAs inside, /dev emptied). Made
/// once per machine; `None` when it cannot be made (not root).
pub fn debian_tar() -> Option<PathBuf> {
    static TAR: OnceLock<Option<PathBuf>> = OnceLock::new();
    TAR.get_or_init(|| {
        let tar = Path::new(DEBIAN_CACHE).join("rootfs.tar");
        if tar.exists() {
            return Some(tar);
        }
        if !is_root() {
            missing_prerequisite("no Debian rootfs cache and not root: the Debian cases");
            return None;
        }
        fs::create_dir_all(DEBIAN_CACHE).unwrap();
        let build = Path::new(DEBIAN_CACHE).join(format!("build-{}", std::process::id()));
        let m = apt_mirror();
        let st = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&build)
            .arg(&m)
            .status()
            .expect("debootstrap installed");
        assert!(st.success(), "debootstrap failed");
        sh(&format!(
            "set -e; r={b}; rm -f $r/etc/apt/sources.list; mkdir -p $r/etc/apt/sources.list.d; \
             for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do \
               [ -f \"$f\" ] && cp \"$f\" \"$r$f\"; done; \
             mkdir -p $r/usr/local/share/ca-certificates $r/etc/ssl/certs; \
             cp -r /usr/local/share/ca-certificates/. $r/usr/local/share/ca-certificates/ 2>/dev/null || true; \
             cp /etc/ssl/certs/ca-certificates.crt $r/etc/ssl/certs/ 2>/dev/null || true; \
             tar --numeric-owner --xattrs -cpf {t}.tmp --exclude='./dev/*' -C $r . && mv {t}.tmp {t}; \
             rm -rf $r; chmod 755 {d}; chmod 644 {t}",
            b = build.display(),
            t = tar.display(),
            d = DEBIAN_CACHE
        ));
        Some(tar)
    })
    .clone()
}

/// Imports the base images a store needs: busybox always, Debian when
/// asked and available. Returns whether Debian is there.
pub fn import_bases(k: &KilnBuild, debian: bool) -> bool {
    // Base images are inputs of every build: import them with a fixed
    // time, so that two stores made at different moments hold the same
    // bases (what the reproducibility test compares builds on).
    let import = |src: &Path, name: &str| {
        let out = k
            .cmd()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["import", src.to_str().unwrap(), name])
            .output()
            .expect("spawn kiln");
        assert_success(&out, &format!("kiln import {name}"));
    };
    import(busybox_dir(), BUSYBOX_IMAGE);
    if !debian || skip_debian() {
        return false;
    }
    let Some(tar) = debian_tar() else {
        return false;
    };
    import(&tar, DEBIAN_IMAGE);
    true
}

// ---------------------------------------------------------------- buildah

/// A private buildah storage (root/runroot in a temp dir) with the same
/// base images as kiln's store, moved over as docker-archives.
pub struct Buildah {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub driver: String,
}

impl Buildah {
    pub fn new(dir: &Path) -> Buildah {
        let b = Buildah {
            root: dir.join("storage"),
            runroot: dir.join("run"),
            driver: std::env::var("KILN_TEST_BUILDAH_DRIVER").unwrap_or_else(|_| "overlay".into()),
        };
        fs::create_dir_all(&b.root).unwrap();
        fs::create_dir_all(&b.runroot).unwrap();
        b
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--storage-driver")
            .arg(&self.driver);
        c.env("BUILDAH_ISOLATION", "oci")
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("spawn buildah");
        assert_success(&out, &format!("buildah {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies `name` from kiln's store into this storage under the same name.
    pub fn take_from_kiln(&self, k: &KilnBuild, name: &str, tmp: &Path) {
        let tar = tmp.join(format!("{}.docker.tar", name.replace(['/', ':'], "_")));
        if k.who == Who::Kilntest {
            give_to_kilntest(tmp);
        }
        k.ok(&[
            "save",
            name,
            "-o",
            tar.to_str().unwrap(),
            "--format",
            "docker-archive",
        ]);
        let id = self.ok(&["pull", "-q", &format!("docker-archive:{}", tar.display())]);
        self.ok(&["tag", id.trim(), name]);
        let _ = fs::remove_file(&tar);
    }

    /// The standard flags of every buildah build here.
    pub fn build_cmd(&self) -> Command {
        let mut c = self.cmd();
        c.args([
            "build",
            "--runtime",
            "runc",
            "--layers",
            "--pull=never",
            // Docker format: OCI drops HEALTHCHECK, SHELL, ONBUILD.
            "--format",
            "docker",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        c
    }

    /// Copies an image's filesystem into `dir` (as root: owners kept);
    /// returns its docker image config.
    pub fn read_image(&self, name: &str, dir: &Path) -> Value {
        let _ = fs::remove_dir_all(dir);
        let v: Value =
            serde_json::from_str(&self.ok(&["inspect", "--type", "image", name])).unwrap();
        let image = v.get("Docker").cloned().unwrap_or(Value::Null);
        if image
            .pointer("/config/OnBuild")
            .and_then(|o| o.as_array())
            .is_some_and(|a| !a.is_empty())
        {
            // `buildah from` would run the ONBUILD triggers: go through an
            // OCI layout and umoci instead.
            let layout = dir.with_extension("oci");
            let _ = fs::remove_dir_all(&layout);
            self.ok(&["push", "-q", name, &format!("oci:{}:x", layout.display())]);
            let bundle = dir.with_extension("bundle");
            let _ = fs::remove_dir_all(&bundle);
            sh(&format!(
                "umoci unpack --image '{}:x' '{}' >/dev/null && mv '{}/rootfs' '{}' && rm -rf '{}' '{}'",
                layout.display(),
                bundle.display(),
                bundle.display(),
                dir.display(),
                bundle.display(),
                layout.display()
            ));
            return image;
        }
        let cid = self.ok(&["from", "--pull-never", name]).trim().to_string();
        let mnt = self.ok(&["mount", &cid]).trim().to_string();
        sh(&format!("cp -a '{mnt}' '{}'", dir.display()));
        let _ = self.cmd().args(["umount", &cid]).output();
        let _ = self.cmd().args(["rm", &cid]).output();
        image
    }
}

/// The part of a config blob the checks look at: docker's field names.
/// kiln's blob is an OCI image config (`config` holds the fields).
pub fn runtime_config(blob: &Value) -> Value {
    blob.get("config").cloned().unwrap_or(blob.clone())
}

// ---------------------------------------------------------------- fixtures

/// One `expect` line's check, evaluated against a built image.
#[derive(Debug, Clone)]
pub enum Check {
    /// `entry PATH KIND MODE UID:GID` (KIND f, d, l).
    Entry(String, String, String, String),
    /// `link PATH TARGET`
    Link(String, String),
    /// `content PATH TEXT` (TEXT with \n, \t escapes; whole file).
    Content(String, String),
    /// `contains PATH TEXT`
    Contains(String, String),
    /// `absent PATH`
    Absent(String),
    /// `config FIELD JSON` (missing field = null).
    Config(String, Value),
    /// `env NAME=VALUE`: an Env entry.
    Env(String),
    /// `label KEY VALUE`
    Label(String, String),
    /// `created RFC3339`
    Created(String),
    /// `image FIELD JSON`: a top-level field of the image config
    /// (author, architecture, os, ...).
    Image(String, Value),
}

#[derive(Debug, Clone)]
pub struct Check1 {
    pub check: Check,
    /// `kiln-only` prefix: docker semantics buildah 1.28 does not have.
    pub kiln_only: bool,
    pub line: String,
}

/// A fixture: `tests/build/<name>/` with `Dockerfile`, `context/`,
/// `expect` and optionally `setup.sh` (run as root in a copy of the case
/// dir before building, to make tars, git repos, host CA copies).
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The case directory (a scratch copy once [`Case::stage`] ran).
    pub dir: PathBuf,
    pub dockerfile: String,
    pub context: String,
    pub flags: Vec<String>,
    pub kiln_flags: Vec<String>,
    pub buildah_flags: Vec<String>,
    /// Flags only BuildKit (`docker build`) gets.
    pub buildkit_flags: Vec<String>,
    /// (tag, dockerfile) built first, in the same context.
    pub prebuild: Vec<(String, String)>,
    pub buildah_skip: Option<String>,
    /// Why BuildKit 0.8 (docker.io 20.10) cannot build the fixture.
    pub buildkit_skip: Option<String>,
    pub nondeterministic: Option<String>,
    pub debian: bool,
    pub checks: Vec<Check1>,
}

/// The cases `KILN_BUILD_CASES=a,b` picks, or all of them.
pub fn chosen_cases(all: &[Case]) -> Vec<&Case> {
    let only = std::env::var("KILN_BUILD_CASES").ok();
    all.iter()
        .filter(|c| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|n| n == c.name))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\s", " ")
}

impl Case {
    pub fn load(dir: &Path) -> Case {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(dir.join("expect"))
            .unwrap_or_else(|e| panic!("{}: expect: {e}", dir.display()));
        let mut c = Case {
            name: name.clone(),
            dir: dir.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            context: "context".into(),
            flags: vec![],
            kiln_flags: vec![],
            buildah_flags: vec![],
            buildkit_flags: vec![],
            prebuild: vec![],
            buildah_skip: None,
            buildkit_skip: None,
            nondeterministic: None,
            debian: false,
            checks: vec![],
        };
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kiln_only, line) = match line.strip_prefix("kiln-only ") {
                Some(l) => (true, l.trim()),
                None => (false, line),
            };
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            let two = || {
                let (a, b) = rest.split_once(' ').unwrap_or((rest, ""));
                (a.to_string(), unescape(b.trim_start()))
            };
            let words = || {
                rest.split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            let check = match word {
                "dockerfile" => {
                    c.dockerfile = rest.into();
                    None
                }
                "context" => {
                    c.context = rest.into();
                    None
                }
                "flags" => {
                    c.flags.extend(words());
                    None
                }
                "kiln-flags" => {
                    c.kiln_flags.extend(words());
                    None
                }
                "buildah-flags" => {
                    c.buildah_flags.extend(words());
                    None
                }
                "prebuild" => {
                    let w = words();
                    c.prebuild.push((w[0].clone(), w[1].clone()));
                    None
                }
                "buildah-skip" => {
                    c.buildah_skip = Some(rest.into());
                    None
                }
                "buildkit-flags" => {
                    c.buildkit_flags.extend(words());
                    None
                }
                "buildkit-skip" => {
                    c.buildkit_skip = Some(rest.into());
                    None
                }
                "nondeterministic" => {
                    c.nondeterministic = Some(rest.into());
                    None
                }
                "base" => {
                    c.debian |= rest.contains("debian");
                    None
                }
                "entry" => {
                    // The path may hold spaces: the last three words are fixed.
                    let w = words();
                    assert!(w.len() >= 4, "{name}: {raw}");
                    let n = w.len();
                    Some(Check::Entry(
                        w[..n - 3].join(" "),
                        w[n - 3].clone(),
                        w[n - 2].clone(),
                        w[n - 1].clone(),
                    ))
                }
                "link" => {
                    let (a, b) = two();
                    Some(Check::Link(a, b))
                }
                "content" => {
                    let (a, b) = two();
                    Some(Check::Content(a, b))
                }
                "contains" => {
                    let (a, b) = two();
                    Some(Check::Contains(a, b))
                }
                "absent" => Some(Check::Absent(rest.into())),
                "config" => {
                    let (a, b) = rest.split_once(' ').unwrap_or((rest, "null"));
                    let v = serde_json::from_str(b.trim())
                        .unwrap_or_else(|e| panic!("{name}: bad JSON in `{raw}`: {e}"));
                    Some(Check::Config(a.into(), v))
                }
                "env" => Some(Check::Env(rest.into())),
                "label" => {
                    let (a, b) = two();
                    Some(Check::Label(a, b))
                }
                "created" => Some(Check::Created(rest.into())),
                "image" => {
                    let (a, b) = rest.split_once(' ').unwrap_or((rest, "null"));
                    let v = serde_json::from_str(b.trim())
                        .unwrap_or_else(|e| panic!("{name}: bad JSON in `{raw}`: {e}"));
                    Some(Check::Image(a.into(), v))
                }
                other => panic!("{name}: unknown expect directive `{other}` in `{raw}`"),
            };
            if let Some(check) = check {
                c.checks.push(Check1 {
                    check,
                    kiln_only,
                    line: raw.to_string(),
                });
            }
        }
        c
    }

    /// Every case under tests/build, sorted by name.
    pub fn all() -> Vec<Case> {
        let mut v: Vec<Case> = fs::read_dir(fixtures_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("expect").exists())
            .map(|e| Case::load(&e.path()))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Copies the case into `under/<name>` (readable by all) and runs its
    /// setup.sh there; returns the staged case.
    pub fn stage(&self, under: &Path) -> Case {
        let dst = under.join(&self.name);
        let _ = fs::remove_dir_all(&dst);
        // Git keeps only the x bit and checkouts follow the umask: make
        // modes what the expectations assume (dirs 755, files 644 or 755).
        sh(&format!(
            "cp -a '{s}' '{d}' && cd '{d}' && find . -type d -exec chmod 755 {{}} + && \
             find . -type f -perm /111 -exec chmod 755 {{}} + && \
             find . -type f ! -perm /111 -exec chmod 644 {{}} +",
            s = self.dir.display(),
            d = dst.display(),
        ));
        if dst.join("setup.sh").exists() {
            let out = Command::new("sh")
                .arg("setup.sh")
                .current_dir(&dst)
                .output()
                .unwrap();
            assert_success(&out, &format!("{}/setup.sh", self.name));
            let _ = fs::remove_file(dst.join("setup.sh"));
        }
        Case {
            dir: dst,
            ..self.clone()
        }
    }

    /// Flags with `{case}`, `{http}` and `{ssh}` filled in.
    pub fn expand(&self, flags: &[String], ctx: &Ctx) -> Vec<String> {
        flags
            .iter()
            .map(|f| {
                f.replace("{case}", &self.dir.display().to_string())
                    .replace("{http}", &ctx.http)
                    .replace("{ssh}", &ctx.ssh.display().to_string())
            })
            .collect()
    }

    /// The builds of this case, in order: its prebuilds (tag, Dockerfile,
    /// no flags), then the case itself with its flags and `tool_flags`.
    pub fn builds(&self, ctx: &Ctx, tool_flags: &[String]) -> Vec<(String, String, Vec<String>)> {
        let mut builds: Vec<(String, String, Vec<String>)> = self
            .prebuild
            .iter()
            .map(|(t, d)| (t.clone(), d.clone(), vec![]))
            .collect();
        let mut flags = self.expand(&self.flags, ctx);
        flags.extend(self.expand(tool_flags, ctx));
        builds.push((self.tag(), self.dockerfile.clone(), flags));
        builds
    }

    pub fn tag(&self) -> String {
        format!("kiln-case/{}:latest", self.name)
    }
}

/// Per-process services the fixtures refer to.
pub struct Ctx {
    /// Base URL of a static HTTP server over the staged cases dir.
    pub http: String,
    /// A listening unix socket standing in for an ssh-agent.
    pub ssh: PathBuf,
}

impl Ctx {
    pub fn start(staged_root: &Path) -> Ctx {
        let http = serve_http(staged_root);
        let ssh = staged_root.join("agent.sock");
        let l = std::os::unix::net::UnixListener::bind(&ssh).unwrap();
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o777)).unwrap();
        std::thread::spawn(move || for _ in l.incoming() {});
        Ctx { http, ssh }
    }
}

/// A minimal GET-only HTTP/1.0 file server on 127.0.0.1 (for ADD URL and
/// git's dumb HTTP transport). Lives as long as the test process.
pub fn serve_http(root: &Path) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(&s);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h.trim().is_empty() {
                        break;
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap();
                let mut w = &s;
                let file = root.join(path.trim_start_matches('/'));
                match (path.contains(".."), fs::read(&file)) {
                    (false, Ok(body)) => {
                        let _ = write!(
                            w,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = w.write_all(&body);
                    }
                    _ => {
                        let _ = write!(
                            w,
                            "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------- checks

/// A `tree_listing` line split into (path, kind, mode, uid:gid, detail);
/// the path may contain spaces, so the fields are found after it.
pub fn split_listing(l: &str) -> (&str, &str, &str, &str, &str) {
    let is_field = |rest: &str| {
        let w: Vec<&str> = rest.splitn(4, ' ').collect();
        w.len() >= 3
            && ["d", "f", "l", "o"].contains(&w[0])
            && w[1].chars().all(|c| c.is_digit(8))
            && w[2].split_once(':').is_some_and(|(u, g)| {
                !u.is_empty()
                    && !g.is_empty()
                    && u.chars().chain(g.chars()).all(|c| c.is_ascii_digit())
            })
    };
    for (i, _) in l.match_indices(' ') {
        if is_field(&l[i + 1..]) {
            let w: Vec<&str> = l[i + 1..].splitn(4, ' ').collect();
            return (&l[..i], w[0], w[1], w[2], w.get(3).copied().unwrap_or(""));
        }
    }
    (l, "", "", "", "")
}

/// What a build produced, read back: listing lines by path, and the
/// runtime config (docker field names) plus the `created` time.
pub struct Built {
    pub files: BTreeMap<String, String>,
    /// The whole image config (docker's `container_config` etc. aside).
    pub image: Value,
    pub config: Value,
    pub created: Option<String>,
    pub root: PathBuf,
}

impl Built {
    pub fn from_listing(listing: Vec<String>, image: Value, root: &Path) -> Built {
        let config = runtime_config(&image);
        let created = image
            .get("created")
            .and_then(|v| v.as_str())
            .map(String::from);
        let files = listing
            .into_iter()
            .map(|l| (format!("/{}", split_listing(&l).0), l))
            .collect();
        Built {
            files,
            image,
            config,
            created,
            root: root.to_path_buf(),
        }
    }

    fn field(&self, f: &str) -> Value {
        self.config.get(f).cloned().unwrap_or(Value::Null)
    }

    /// Failed checks, as messages.
    pub fn check(&self, checks: &[Check1], is_kiln: bool) -> Vec<String> {
        let mut bad = Vec::new();
        for c in checks.iter().filter(|c| is_kiln || !c.kiln_only) {
            let fail = match &c.check {
                Check::Entry(p, kind, mode, owner) => match self.files.get(p.as_str()) {
                    None => Some("missing".to_string()),
                    Some(l) => {
                        let (_, k, m, o, _) = split_listing(l);
                        (k != kind || m != mode || o != owner).then(|| format!("got `{l}`"))
                    }
                },
                Check::Link(p, t) => match self.files.get(p.as_str()) {
                    Some(l) if l.ends_with(&format!(" -> {t}")) => None,
                    other => Some(format!("got {other:?}")),
                },
                Check::Content(p, t) | Check::Contains(p, t) => {
                    let got = self
                        .files
                        .get(p.as_str())
                        .filter(|l| split_listing(l).1 == "f")
                        .and_then(|_| fs::read(self.root.join(p.trim_start_matches('/'))).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    match got {
                        None => Some("no such regular file".into()),
                        Some(g) => {
                            let ok = match &c.check {
                                Check::Content(..) => &g == t,
                                _ => g.contains(t.as_str()),
                            };
                            (!ok).then(|| format!("content is {g:?}"))
                        }
                    }
                }
                Check::Absent(p) => self
                    .files
                    .get(p.as_str())
                    .map(|l| format!("present: `{l}`")),
                Check::Config(f, want) => {
                    let got = self.field(f);
                    // Docker leaves empty maps/lists out; buildah writes them.
                    let empty = |v: &Value| {
                        v.is_null()
                            || v.as_object().is_some_and(|o| o.is_empty())
                            || v.as_array().is_some_and(|a| a.is_empty())
                            || v.as_str() == Some("")
                    };
                    (got != *want && !(empty(&got) && empty(want))).then(|| format!("got {got}"))
                }
                Check::Env(e) => {
                    let env = self.field("Env");
                    (!env
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(e))))
                    .then(|| format!("Env is {env}"))
                }
                Check::Label(k, v) => {
                    let got = self.field("Labels").get(k).cloned();
                    (got.as_ref().and_then(|g| g.as_str()) != Some(v.as_str()))
                        .then(|| format!("got {got:?}"))
                }
                Check::Created(t) => (self.created.as_deref() != Some(t.as_str()))
                    .then(|| format!("created is {:?}", self.created)),
                Check::Image(f, want) => {
                    let got = self.image.get(f).cloned().unwrap_or(Value::Null);
                    (got != *want).then(|| format!("got {got}"))
                }
            };
            if let Some(f) = fail {
                bad.push(format!("`{}`: {f}", c.line.trim()));
            }
        }
        bad
    }
}

// ---------------------------------------------------------------- run a case

/// Runs `kiln build` for a staged case (prebuilds first); returns the
/// build's output (progress included) and the result read back into
/// `work/kiln-<name>`; Err(log) when a build failed.
pub fn kiln_build_case(
    k: &KilnBuild,
    case: &Case,
    ctx: &Ctx,
    work: &Path,
) -> Result<Built, String> {
    let mut log = String::new();
    let context = case.dir.join(&case.context);
    let builds = case.builds(ctx, &case.kiln_flags);
    for (tag, df, flags) in builds {
        let mut c = k.cmd();
        c.arg("build")
            .arg("--progress=plain")
            .arg("-f")
            .arg(case.dir.join(&df))
            .args(["-t", &tag])
            .args(&flags)
            .arg(&context);
        let t = Instant::now();
        let out = c.output().expect("spawn kiln build");
        log += &format!(
            "$ kiln build -f {df} -t {tag} {}\n{}{}({:.1}s, {})\n",
            flags.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            t.elapsed().as_secs_f64(),
            out.status
        );
        if !out.status.success() {
            return Err(log);
        }
    }
    let dir = work.join(format!("kiln-{}", case.name));
    let _ = fs::remove_dir_all(&dir);
    k.rootfs(&case.tag(), &dir);
    let blob = k.config_blob(&case.tag());
    Ok(Built::from_listing(tree_listing(&dir), blob, &dir))
}

/// The same with buildah.
pub fn buildah_build_case(
    b: &Buildah,
    case: &Case,
    ctx: &Ctx,
    work: &Path,
) -> Result<Built, String> {
    let mut log = String::new();
    let context = case.dir.join(&case.context);
    let builds = case.builds(ctx, &case.buildah_flags);
    for (tag, df, flags) in builds {
        let mut c = b.build_cmd();
        c.arg("-f")
            .arg(case.dir.join(&df))
            .args(["-t", &tag])
            .args(&flags)
            .arg(&context);
        let out = c.stdin(Stdio::null()).output().expect("spawn buildah");
        log += &format!(
            "$ buildah build -f {df} -t {tag} {}\n{}{}({})\n",
            flags.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        if !out.status.success() {
            return Err(log);
        }
    }
    let dir = work.join(format!("buildah-{}", case.name));
    let image = b.read_image(&case.tag(), &dir);
    Ok(Built::from_listing(tree_listing(&dir), image, &dir))
}

// ---------------------------------------------------------------- conformance

/// One row of docs/build-conformance.md's exception table.
#[derive(Debug, Clone)]
pub struct Exception {
    /// A case name or `*`.
    pub case: String,
    /// `/path`, `/dir/**` (the dir's whole subtree, not the dir), or
    /// `config:Field` / `config:Labels.key`.
    pub what: String,
    pub reason: String,
}

impl Exception {
    pub fn matches(&self, case: &str, what: &str) -> bool {
        if self.case != "*" && self.case != case {
            return false;
        }
        match self.what.strip_suffix("/**") {
            Some(dir) => what.starts_with(&format!("{dir}/")),
            None => self.what == what,
        }
    }
}

/// The kiln-vs-buildah exceptions: the table whose header starts `| case |`.
pub fn exceptions() -> Vec<Exception> {
    exception_table("case")
}

/// The kiln-vs-BuildKit exceptions: the table whose header starts
/// `| buildkit case |`.
pub fn buildkit_exceptions() -> Vec<Exception> {
    exception_table("buildkit case")
}

/// Parses the markdown tables of docs/build-conformance.md whose header's
/// first cell is `first`.
fn exception_table(first: &str) -> Vec<Exception> {
    let text = fs::read_to_string(repo_dir().join("docs/build-conformance.md"))
        .expect("docs/build-conformance.md");
    let mut rows = Vec::new();
    let mut in_table = false;
    for l in text.lines() {
        let l = l.trim();
        if !l.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<String> = l
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        if cells.first().is_some_and(|c| c == first) {
            in_table = true;
            continue;
        }
        if cells.first().is_some_and(|c| c.ends_with("case")) {
            in_table = false;
            continue;
        }
        if !in_table
            || cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        assert!(
            cells.len() >= 3 && !cells[2].is_empty(),
            "exception row without a reason: {l}"
        );
        rows.push(Exception {
            case: cells[0].clone(),
            what: cells[1].clone(),
            reason: cells[2].clone(),
        });
    }
    rows
}

/// Differences between kiln's and buildah's result of one case, less the
/// documented exceptions; `used` collects the exceptions that matched.
pub fn conformance_diff(
    case: &str,
    kiln: &Built,
    buildah: &Built,
    exc: &[Exception],
    used: &mut Vec<String>,
) -> Vec<String> {
    conformance_diff_with("buildah", case, kiln, buildah, exc, used)
}

/// The same against any `peer` builder's result (named in the messages).
pub fn conformance_diff_with(
    peer: &str,
    case: &str,
    kiln: &Built,
    buildah: &Built,
    exc: &[Exception],
    used: &mut Vec<String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut excused = |what: &str| {
        for e in exc {
            if e.matches(case, what) {
                used.push(format!("{} {}", e.case, e.what));
                return true;
            }
        }
        false
    };
    let paths: std::collections::BTreeSet<&String> =
        kiln.files.keys().chain(buildah.files.keys()).collect();
    for p in paths {
        let (a, b) = (kiln.files.get(p), buildah.files.get(p));
        if a != b && !excused(p) {
            diffs.push(format!(
                "{p}: kiln `{}` vs {peer} `{}`",
                a.map_or("(none)", |s| s),
                b.map_or("(none)", |s| s)
            ));
        }
    }
    for f in CONFIG_FIELDS {
        let norm = |v: Option<&Value>| -> Value {
            match v {
                None | Some(Value::Null) => Value::Null,
                Some(Value::Object(o)) if o.is_empty() => Value::Null,
                Some(Value::Array(a)) if a.is_empty() => Value::Null,
                Some(Value::String(s)) if s.is_empty() => Value::Null,
                Some(v) => v.clone(),
            }
        };
        let (a, b) = (norm(kiln.config.get(*f)), norm(buildah.config.get(*f)));
        if a == b {
            continue;
        }
        // A missing map is an empty one, so a single extra key is judged alone.
        let as_map = |v: &Value, other: &Value| match (v, other) {
            (Value::Null, Value::Object(_)) => Value::Object(Default::default()),
            _ => v.clone(),
        };
        let (a, b) = (as_map(&a, &b), as_map(&b, &a));
        if let (Value::Object(ao), Value::Object(bo)) = (&a, &b) {
            // Per key, so one extra label can be excused alone.
            let keys: std::collections::BTreeSet<&String> = ao.keys().chain(bo.keys()).collect();
            for key in keys {
                if ao.get(key) != bo.get(key) && !excused(&format!("config:{f}.{key}")) {
                    diffs.push(format!(
                        "config {f}.{key}: kiln {:?} vs {peer} {:?}",
                        ao.get(key),
                        bo.get(key)
                    ));
                }
            }
        } else if !excused(&format!("config:{f}")) {
            diffs.push(format!("config {f}: kiln {a} vs {peer} {b}"));
        }
    }
    diffs
}

// ---------------------------------------------------------------- progress

/// A step of `--progress=plain` output: `#N [stage i/n] INSTR ...`.
#[derive(Debug, Default, Clone)]
pub struct Step {
    pub id: String,
    pub title: String,
    pub cached: bool,
    pub done: bool,
}

/// The build steps (RUN/COPY/ADD/...) of a plain progress log, BuildKit's
/// format: a `#N [..]` header line, then `#N CACHED` or `#N DONE 0.1s`.
pub fn plain_steps(log: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for l in log.lines() {
        let Some(rest) = l.strip_prefix('#') else {
            continue;
        };
        let (id, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let rest = rest.trim();
        if rest.starts_with('[')
            && !rest.starts_with("[internal]")
            && !steps.iter().any(|s| s.id == id)
        {
            steps.push(Step {
                id: id.into(),
                title: rest.into(),
                ..Default::default()
            });
        } else if let Some(s) = steps.iter_mut().find(|s| s.id == id) {
            if rest == "CACHED" {
                s.cached = true;
            } else if rest.starts_with("DONE") {
                s.done = true;
            }
        }
    }
    steps
}

/// The steps that run something: RUN, COPY, ADD (not FROM, not metadata).
pub fn exec_steps(log: &str) -> Vec<Step> {
    plain_steps(log)
        .into_iter()
        .filter(|s| {
            let instr = s.title.split("] ").nth(1).unwrap_or("");
            ["RUN", "COPY", "ADD"].iter().any(|i| instr.starts_with(i))
        })
        .collect()
}
/// The SOURCE_DATE_EPOCH build arg of the tests that compare digests.
pub const EPOCH: &str = "SOURCE_DATE_EPOCH=1700000000";

/// Builds `ctx` with `flags` and [`EPOCH`]; fails the test unless the
/// build succeeds. Returns the log and the image ID.
pub fn build_ok(k: &KilnBuild, ctx: &Path, flags: &[&str]) -> (String, String) {
    let mut all = vec!["--build-arg", EPOCH];
    all.extend_from_slice(flags);
    let (out, _, log) = kiln_build(k, ctx, &all);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (log, id)
}

/// The titles of the RUN/COPY steps that ran (were not cached).
pub fn ran(log: &str) -> Vec<String> {
    exec_steps(log)
        .into_iter()
        .filter(|s| !s.cached)
        .map(|s| s.title)
        .collect()
}

/// The log's `warning:` lines.
pub fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("warning:")).collect()
}

/// A fresh store under `tmp/name` with the busybox base, for `who`.
pub fn store_with_bases(tmp: &Path, name: &str, who: Who) -> KilnBuild {
    let k = KilnBuild::new(&tmp.join(name).join("store"), who);
    import_bases(&k, false);
    k
}

/// kiln build for the cache/secret/repro tests: context dir, flags.
pub fn kiln_build(k: &KilnBuild, context: &Path, flags: &[&str]) -> (Output, Duration, String) {
    let t = Instant::now();
    let out = k
        .cmd()
        .arg("build")
        .arg("--progress=plain")
        .args(flags)
        .arg(context)
        .output()
        .expect("spawn kiln build");
    let took = t.elapsed();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took, log)
}

/// All bytes of every file under `dir`, with gzip and zstd streams also
/// decompressed (layers), as (path, bytes) pairs.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(mut f) = fs::File::open(e.path()) else {
            continue;
        };
        let mut b = Vec::new();
        let _ = f.read_to_end(&mut b);
        let tool = if b.starts_with(&[0x1f, 0x8b]) {
            Some("gzip")
        } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some("zstd")
        } else {
            None
        };
        if let Some(t) = tool {
            let o = Command::new(t).arg("-dc").arg(e.path()).output().unwrap();
            v.push((e.path().with_extension("decompressed"), o.stdout));
        }
        v.push((e.path().to_path_buf(), b));
    }
    v
}

pub fn find_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs `f` on every item with `jobs` threads; results in input order.
pub fn par_map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    *out[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect()
}

pub fn jobs() -> usize {
    std::env::var("KILN_BUILD_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3)
}

// ---------------------------------------------------------------- known gaps

/// Runs a test body that `kiln build` may not pass yet. When `name` is in
/// `gaps` a failure is reported loudly and swallowed, and a pass fails
/// ("remove it from KNOWN_GAPS"): the list only ever shrinks and cannot
/// hide a regression of something that passes.
pub fn guarded(gaps: &[(&str, &str)], name: &str, body: impl FnOnce() + std::panic::UnwindSafe) {
    let Some((_, why)) = gaps.iter().find(|(g, _)| *g == name) else {
        body();
        return;
    };
    match std::panic::catch_unwind(body) {
        Ok(()) => panic!("{name} passes now: remove it from KNOWN_GAPS"),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let short: String = msg.lines().take(6).collect::<Vec<_>>().join("\n");
            loud(&format!(
                "KNOWN GAP {name}: {why}\nfailed as expected with:\n{short}"
            ));
        }
    }
}

/// The busybox base as an OCI archive, made once per process: loading it
/// gives every store the very same image (an import stamps the time, so two
/// imports differ), which the reproducibility test needs.
pub fn busybox_archive() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let d = process_scratch("kiln-bt-seed-");
        let k = KilnBuild::new(&d.join("store"), Who::Caller);
        k.ok(&["import", busybox_dir().to_str().unwrap(), BUSYBOX_IMAGE]);
        let tar = d.join("busybox.oci.tar");
        k.ok(&[
            "save",
            BUSYBOX_IMAGE,
            "-o",
            tar.to_str().unwrap(),
            "--format",
            "oci-archive",
        ]);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        tar
    })
}
