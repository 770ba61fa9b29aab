//! Support for the kiln.toml tests (`declarative*.rs`): the issue's
//! acceptance file, stores seeded from one download cache, the acceptance
//! project locked once per process, and project variants.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::build::*;
use super::is_root;

pub const ACCEPTANCE: &str = r#"[image]
base = "scratch"
user = "nonroot"
workdir = "/home/nonroot"
entrypoint = ["/usr/bin/python3"]
env = { LANG = "C.UTF-8" }

[debian]
suite = "bookworm"
packages = ["base-files", "netbase", "tzdata", "ca-certificates", "libc6", "libssl3", "python3-minimal"]

[[user]]
name = "nonroot"
uid = 65532
gid = 65532
home = "/home/nonroot"

[[file]]
src = "app/"
dest = "/app/"
"#;

/// The download cache every store is seeded from. One place for every
/// run (its files are named by their verified hash, so an old one is never
/// wrong), so runs neither fill the disk nor download twice.
pub fn cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from("/var/tmp/kiln-decl-download-cache");
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        d
    })
}

pub static CACHE_LOCK: Mutex<()> = Mutex::new(());

/// Hard-links every file of `from` into `to` that `to` lacks.
pub fn link_all(from: &Path, to: &Path) {
    let _g = CACHE_LOCK.lock().unwrap();
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).into_iter().flatten().flatten() {
        let dest = to.join(e.file_name());
        let name = e.file_name();
        if !dest.exists() && name.len() == 64 {
            let _ = fs::hard_link(e.path(), &dest);
        }
    }
}

/// A fresh store for `who`, its download cache seeded.
pub fn store(who: Who) -> (tempfile::TempDir, KilnBuild) {
    let d = scratch("kiln-decl-");
    let root = d.path().join("store");
    link_all(cache(), &root.join("debian/sha256"));
    (d, KilnBuild::new(&root, who))
}

pub fn harvest(k: &KilnBuild) {
    link_all(&k.root.join("debian/sha256"), cache());
}

/// The acceptance project (kiln.toml, app/, kiln.lock), locked once.
pub fn project() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch("kiln-decl-project-").keep();
        fs::write(d.join("kiln.toml"), ACCEPTANCE).unwrap();
        fs::create_dir_all(d.join("app")).unwrap();
        fs::write(d.join("app/main.py"), "print('hello from the app')\n").unwrap();
        let (_t, k) = store(Who::Caller);
        k.ok(&["lock", "-f", d.join("kiln.toml").to_str().unwrap()]);
        harvest(&k);
        d
    })
}

pub fn toml(dir: &Path) -> String {
    dir.join("kiln.toml").to_str().unwrap().to_string()
}

/// (name, version) of every package in a kiln.lock.
pub fn locked(dir: &Path) -> Vec<(String, String)> {
    let v: toml::Table = fs::read_to_string(dir.join("kiln.lock"))
        .unwrap()
        .parse()
        .unwrap();
    v["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn build_id(k: &KilnBuild, file: &str, tag: &str) -> String {
    let id = k.ok(&["build", "-f", file, "-t", tag]);
    id.trim().to_string()
}

pub fn skip_if_not_root_for(who: Who) -> bool {
    if who == Who::Kilntest && !is_root() {
        missing_prerequisite("the kilntest variant needs a root caller");
        return true;
    }
    false
}

/// A project copy whose kiln.toml is `text` (and whose lock is the
/// acceptance lock, edited by `edit`, or none).
pub fn variant(text: &str, lock: Option<&dyn Fn(String) -> String>) -> tempfile::TempDir {
    let d = scratch("kiln-decl-variant-");
    fs::write(d.path().join("kiln.toml"), text).unwrap();
    fs::create_dir_all(d.path().join("app")).unwrap();
    if let Some(edit) = lock {
        let l = fs::read_to_string(project().join("kiln.lock")).unwrap();
        fs::write(d.path().join("kiln.lock"), edit(l)).unwrap();
    }
    d
}

pub fn fails(k: &KilnBuild, args: &[&str]) -> String {
    let out = k.output(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kiln {args:?} succeeded:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn layer_digests(k: &KilnBuild, name: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
    v["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}
