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
        let d = process_scratch("kiln-decl-project-");
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

/// CRC-32 (IEEE), for the ZIP files the tests write.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A stored (uncompressed) ZIP of `(name, bytes)` members, written by
/// hand: the tests need no zip tool, and can make any archive.
pub fn zip_stored(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in members {
        let off = out.len() as u32;
        let mut common = Vec::new();
        common.extend_from_slice(&20u16.to_le_bytes()); // version needed
        common.extend_from_slice(&[0; 8]); // flags, method (stored), time, date
        common.extend_from_slice(&crc32(data).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes()); // extra
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        cd.extend_from_slice(b"PK\x01\x02");
        cd.extend_from_slice(&0x0314u16.to_le_bytes()); // made on Unix
        cd.extend_from_slice(&common);
        cd.extend_from_slice(&[0; 6]); // comment, disk, internal attrs
        cd.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        cd.extend_from_slice(&off.to_le_bytes());
        cd.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&cd);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n = (members.len() as u16).to_le_bytes();
    out.extend_from_slice(&n);
    out.extend_from_slice(&n);
    out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// Writes the pure-Python wheel `NAME-VERSION-py3-none-any.whl` into
/// `dir` with `files` (path, text) and the `.dist-info` a wheel carries
/// (METADATA with `requires` as `Requires-Dist`, WHEEL, RECORD); returns
/// its SHA-256.
pub fn write_wheel(
    dir: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &str)],
    requires: &[&str],
) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let info = format!("{name}-{version}.dist-info");
    let mut m: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
        .collect();
    m.push((
        format!("{info}/METADATA"),
        format!(
            "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{}",
            requires
                .iter()
                .map(|r| format!("Requires-Dist: {r}\n"))
                .collect::<String>()
        )
        .into_bytes(),
    ));
    m.push((
        format!("{info}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: kiln-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            .to_vec(),
    ));
    let mut record = String::new();
    for (p, d) in &m {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(d));
        record.push_str(&format!("{p},sha256={h},{}\n", d.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    m.push((format!("{info}/RECORD"), record.into_bytes()));
    let bytes = zip_stored(&m);
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join(format!("{name}-{version}-py3-none-any.whl")),
        &bytes,
    )
    .unwrap();
    hex::encode(sha2::Sha256::digest(&bytes))
}
