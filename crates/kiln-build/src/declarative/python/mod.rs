//! `[python]`: an app's Python dependencies as their own layers, apart
//! from its code (as Jib keeps dependencies apart from classes). The
//! requirements file pins every distribution (`name==version`, optional
//! `--hash=sha256:`); each is a wheel from a local directory in the
//! context (pip's `--no-index --find-links`), installed without pip or
//! RUN into a directory on the image's `sys.path`, one layer per wheel in
//! name order. `kiln lock` records each wheel's file and SHA-256 in
//! `kiln.lock`; a build with that lock installs exactly those files.

pub mod requirements;
pub mod wheel;
pub mod zip;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use kiln_image::layer::Entry;
use requirements::{Pin, normalize};
use wheel::WheelName;

use super::schema::PythonSection;
use crate::BuildError;

fn usage(msg: String) -> BuildError {
    BuildError::Usage(format!("kiln.toml: [python] {msg}"))
}

/// What `kiln.lock` records for `[python]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonLock {
    /// The pins the lock answers (`name==version`, normalized, sorted).
    pub requested: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedWheel {
    pub name: String,
    pub version: String,
    /// The file name in the wheel directory.
    pub file: String,
    pub sha256: String,
}

/// A wheel chosen for a build.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub locked: LockedWheel,
    pub path: PathBuf,
}

/// What the build file asks for, resolved against the image.
pub struct Python {
    pub pins: Vec<Pin>,
    pub wheel_dir: PathBuf,
    /// site-packages, relative to the image root.
    pub site: PathBuf,
    pub prefix: PathBuf,
    pub interpreter: String,
    /// CPython's minor version (`11` for 3.11), when known.
    pub minor: Option<u32>,
    /// uname's name for the image's architecture.
    pub arch: String,
}

impl Python {
    /// The lock's `requested` for these pins.
    pub fn requested(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .pins
            .iter()
            .map(|p| format!("{}=={}", p.key(), p.version))
            .collect();
        v.sort();
        v
    }
}

/// A path in the context that must stay in it (symlinks resolved).
fn in_context(ctx: &Path, rel: &str, what: &str) -> Result<PathBuf, BuildError> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(usage(format!(
            "{what} {rel:?} must be relative to the context, without `..`"
        )));
    }
    let ctx = ctx
        .canonicalize()
        .map_err(|e| usage(format!("context {}: {e}", ctx.display())))?;
    let real = ctx
        .join(p)
        .canonicalize()
        .map_err(|e| usage(format!("{what} {rel:?}: {e}")))?;
    if !real.starts_with(&ctx) {
        return Err(usage(format!(
            "{what} {rel:?} resolves to {}, outside the context",
            real.display()
        )));
    }
    Ok(real)
}

fn image_dir(p: &str, what: &str) -> Result<PathBuf, BuildError> {
    let path = Path::new(p);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(usage(format!(
            "{what} {p:?} must be an absolute path without `..`"
        )));
    }
    Ok(path.components().skip(1).collect())
}

/// The CPython minor version a list of Debian package names installs
/// (`python3.11-minimal` → 11).
pub fn minor_from_packages<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    names.into_iter().find_map(|n| {
        let n = n.strip_prefix("lib").unwrap_or(n);
        let rest = n.strip_prefix("python3.")?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[digits.len()..];
        (matches!(tail, "" | "-minimal" | "-stdlib")).then(|| digits.parse().ok())?
    })
}

/// uname's machine name for an OCI architecture (wheel platform tags use it).
pub fn uname_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i686",
        "arm" => "armv7l",
        other => other,
    }
}

/// Reads the section: its requirements and where things go. `debian`
/// names the Debian packages the image gets (for the python version).
pub fn load<'a>(
    s: &PythonSection,
    context: &Path,
    debian: impl IntoIterator<Item = &'a str>,
    arch: &str,
) -> Result<Python, BuildError> {
    let req_path = in_context(context, &s.requirements, "requirements")?;
    let text = std::fs::read_to_string(&req_path)
        .map_err(|e| usage(format!("requirements {:?}: {e}", s.requirements)))?;
    let pins = requirements::parse(&text, &s.requirements).map_err(usage)?;
    let wheel_dir = in_context(context, &s.wheels, "wheels")?;
    let minor = match &s.version {
        Some(v) => Some(
            v.strip_prefix("3.")
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| usage(format!("version {v:?}: expected 3.N")))?,
        ),
        None => minor_from_packages(debian),
    };
    let site = match (&s.target, minor) {
        (Some(t), _) => image_dir(t, "target")?,
        (None, Some(m)) => PathBuf::from(format!("usr/local/lib/python3.{m}/dist-packages")),
        (None, None) => {
            return Err(usage(
                "cannot tell the image's Python version (no python3.N package in [debian]): set `version = \"3.N\"` or `target`".into(),
            ));
        }
    };
    Ok(Python {
        pins,
        wheel_dir,
        site,
        prefix: image_dir(&s.prefix, "prefix")?,
        interpreter: s.interpreter.clone(),
        minor,
        arch: uname_arch(arch).to_string(),
    })
}

fn sha256_file(path: &Path) -> Result<String, BuildError> {
    let bytes =
        std::fs::read(path).map_err(|e| BuildError::Io(format!("{}: {e}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Picks the wheel for each pin: with a lock, the locked file (its hash
/// checked); without, the best-fitting file in the wheel directory whose
/// hash the pin allows. Sorted by normalized name.
pub fn choose(py: &Python, lock: Option<&[LockedWheel]>) -> Result<Vec<Chosen>, BuildError> {
    let mut files: Vec<(String, WheelName)> = Vec::new();
    let dir = std::fs::read_dir(&py.wheel_dir)
        .map_err(|e| usage(format!("wheels {}: {e}", py.wheel_dir.display())))?;
    for e in dir {
        let e = e.map_err(|e| BuildError::Io(e.to_string()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(w) = WheelName::parse(&name) {
            files.push((name, w));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for pin in &py.pins {
        let locked = lock.map(|l| l.iter().find(|w| normalize(&w.name) == pin.key()));
        let chosen = match locked {
            Some(Some(l)) => {
                let path = wheel_path(py, &l.file)?;
                let got = sha256_file(&path)?;
                if got != l.sha256 {
                    return Err(BuildError::Instruction(format!(
                        "[python] {}: SHA-256 {got} is not the locked {}; refused (run `kiln lock` if the wheel was meant to change)",
                        l.file, l.sha256
                    )));
                }
                check_pin_hash(pin, &l.file, &got)?;
                let fits = WheelName::parse(&l.file).and_then(|w| w.fit(py.minor, &py.arch));
                if fits.is_none() {
                    return Err(usage(format!(
                        "locked wheel {} does not run on Python 3.{} on {}: run `kiln lock` for this platform",
                        l.file,
                        py.minor.map_or("?".into(), |m| m.to_string()),
                        py.arch
                    )));
                }
                Chosen {
                    locked: l.clone(),
                    path,
                }
            }
            Some(None) => {
                return Err(usage(format!(
                    "{}=={} is not in kiln.lock: run `kiln lock`",
                    pin.name, pin.version
                )));
            }
            None => pick(py, pin, &files)?,
        };
        out.push(chosen);
    }
    out.sort_by_key(|c| normalize(&c.locked.name));
    Ok(out)
}

fn wheel_path(py: &Python, file: &str) -> Result<PathBuf, BuildError> {
    if file.contains('/') || file.starts_with('.') {
        return Err(usage(format!("locked wheel {file:?} is not a file name")));
    }
    let p = py.wheel_dir.join(file);
    let real = p.canonicalize().map_err(|e| {
        usage(format!(
            "locked wheel {file}: {e} (the lock names a file the wheel directory no longer has)"
        ))
    })?;
    if !real.starts_with(&py.wheel_dir) {
        return Err(usage(format!(
            "wheel {file} is a symlink out of the wheel directory"
        )));
    }
    Ok(real)
}

fn check_pin_hash(pin: &Pin, file: &str, got: &str) -> Result<(), BuildError> {
    if !pin.hashes.is_empty() && !pin.hashes.contains(got) {
        return Err(BuildError::Instruction(format!(
            "[python] {file}: SHA-256 {got} is none of the --hash values for {}=={}; refused",
            pin.name, pin.version
        )));
    }
    Ok(())
}

fn pick(py: &Python, pin: &Pin, files: &[(String, WheelName)]) -> Result<Chosen, BuildError> {
    let named: Vec<&(String, WheelName)> = files
        .iter()
        .filter(|(_, w)| normalize(&w.name) == pin.key() && w.version == pin.version)
        .collect();
    let mut fitting: Vec<(u8, &String)> = named
        .iter()
        .filter_map(|(f, w)| w.fit(py.minor, &py.arch).map(|s| (s, f)))
        .collect();
    // Most specific first; then by name, so the choice is stable.
    fitting.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut refused = Vec::new();
    for (_, f) in &fitting {
        let path = wheel_path(py, f)?;
        let sha = sha256_file(&path)?;
        if pin.hashes.is_empty() || pin.hashes.contains(&sha) {
            return Ok(Chosen {
                locked: LockedWheel {
                    name: pin.name.clone(),
                    version: pin.version.clone(),
                    file: f.to_string(),
                    sha256: sha,
                },
                path,
            });
        }
        refused.push(format!("{f} (sha256 {sha})"));
    }
    let why = if !refused.is_empty() {
        format!("no --hash matches: {}", refused.join(", "))
    } else if !named.is_empty() {
        format!(
            "none fits Python 3.{} on {}: {}",
            py.minor.map_or("?".into(), |m| m.to_string()),
            py.arch,
            named
                .iter()
                .map(|x| x.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        let others: Vec<&str> = files
            .iter()
            .filter(|(_, w)| normalize(&w.name) == pin.key())
            .map(|(f, _)| f.as_str())
            .collect();
        if others.is_empty() {
            "the directory has no wheel of that name".into()
        } else {
            format!("the directory has only {}", others.join(", "))
        }
    };
    Err(BuildError::Instruction(format!(
        "[python] {}=={}: no wheel in {}: {why}",
        pin.name,
        pin.version,
        py.wheel_dir.display()
    )))
}

/// The unconditional `Requires-Dist` names (normalized) of a wheel's
/// `METADATA`. Ones with an environment marker (`; python_version < …`,
/// `; extra == …`) are left out: kiln evaluates no markers.
pub fn requires(metadata: &str) -> Vec<String> {
    metadata
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .filter(|v| !v.contains(';'))
        .map(|v| {
            let v = v.trim();
            let end = v
                .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .unwrap_or(v.len());
            normalize(&v[..end])
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// What the chosen wheels require that the requirements file does not
/// pin: a warning each (kiln installs no dependency on its own, so the
/// import would fail at run time).
pub fn unpinned(py: &Python, required: &[(String, Vec<String>)]) -> Vec<String> {
    let pinned: Vec<String> = py.pins.iter().map(Pin::key).collect();
    let mut out = Vec::new();
    for (by, names) in required {
        for n in names.iter().filter(|n| !pinned.contains(n)) {
            out.push(format!(
                "[python] {by} requires {n}, which the requirements file does not pin: kiln installs only what it pins"
            ));
        }
    }
    out
}

/// The entries of one wheel's layer, and what its metadata requires.
pub fn wheel_entries(
    py: &Python,
    c: &Chosen,
    mtime: i64,
) -> Result<(Vec<Entry>, Vec<String>), BuildError> {
    let bytes =
        std::fs::read(&c.path).map_err(|e| BuildError::Io(format!("{}: {e}", c.path.display())))?;
    // The bytes installed are the bytes hashed (the file could change
    // between choosing and reading).
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != c.locked.sha256 {
        return Err(BuildError::Instruction(format!(
            "[python] {} changed while the build read it; refused",
            c.locked.file
        )));
    }
    let refuse = |e: String| BuildError::Instruction(format!("[python] {}: {e}", c.locked.file));
    let members = zip::read(&bytes).map_err(refuse)?;
    let required = members
        .iter()
        .find(|m| m.name.ends_with(".dist-info/METADATA") && m.name.matches('/').count() == 1)
        .map(|m| requires(&String::from_utf8_lossy(&m.data)))
        .unwrap_or_default();
    let name =
        WheelName::parse(&c.locked.file).ok_or_else(|| refuse("not a wheel file name".into()))?;
    let layout = wheel::Layout {
        site: &py.site,
        prefix: &py.prefix,
        interpreter: &py.interpreter,
    };
    let entries = wheel::install(&c.locked.file, &name, members, &layout, mtime)
        .map_err(|e| BuildError::Instruction(format!("[python] {e}")))?;
    Ok((entries, required))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(req: &str, wheels: &str) -> PythonSection {
        PythonSection {
            requirements: req.into(),
            wheels: wheels.into(),
            version: None,
            target: None,
            prefix: "/usr/local".into(),
            interpreter: "/usr/bin/python3".into(),
        }
    }

    #[test]
    fn inputs_stay_in_the_context_and_the_version_is_known() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("req.txt"), "a==1\n").unwrap();
        std::fs::create_dir(ctx.path().join("w")).unwrap();
        std::os::unix::fs::symlink("/etc", ctx.path().join("out")).unwrap();
        let deb = ["python3.11-minimal"];
        let py = load(&section("req.txt", "w"), ctx.path(), deb, "arm64").unwrap();
        assert_eq!(py.site, Path::new("usr/local/lib/python3.11/dist-packages"));
        assert_eq!(py.arch, "aarch64");
        for (r, w) in [
            ("../req.txt", "w"),
            ("/etc/passwd", "w"),
            ("req.txt", "out"),
            ("out/passwd", "w"),
        ] {
            let err = load(&section(r, w), ctx.path(), deb, "amd64")
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("context"), "{r} {w}: {err}");
        }
        let err = load(&section("req.txt", "w"), ctx.path(), ["libc6"], "amd64")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("version = \"3.N\""), "{err}");
        // A pin with no wheel says what the directory has.
        let err = choose(&py, None).unwrap_err().to_string();
        assert!(
            err.contains("a==1") && err.contains("no wheel of that name"),
            "{err}"
        );
    }

    #[test]
    fn requires_dist_without_markers() {
        let m = "Metadata-Version: 2.1\nName: app\nRequires-Dist: Charset_Normalizer (<4,>=2)\nRequires-Dist: idna>=2.5\nRequires-Dist: PySocks!=1.5.7; extra == 'socks'\nRequires-Dist: tomli; python_version < '3.11'\n\nRequires-Dist: in the body\n";
        assert_eq!(requires(m), ["charset-normalizer", "idna"]);
    }

    #[test]
    fn python_version_from_debian_names() {
        assert_eq!(
            minor_from_packages(["libc6", "python3.11-minimal"]),
            Some(11)
        );
        assert_eq!(minor_from_packages(["libpython3.12-stdlib"]), Some(12));
        assert_eq!(
            minor_from_packages(["python3-minimal", "python3.11-venv"]),
            None
        );
    }
}
