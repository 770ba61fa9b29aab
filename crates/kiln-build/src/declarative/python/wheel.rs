//! Installing a wheel without pip: a wheel is a ZIP ([`super::zip`]) whose
//! files go into site-packages, with its `.dist-info` as pip leaves it
//! (`RECORD` rewritten with the installed paths, `INSTALLER`, `REQUESTED`).
//! Every member is checked against the wheel's own `RECORD` first (a file
//! it does not list, or whose hash differs, is refused).
//!
//! `NAME-VER.data/` is mapped as pip maps it: `purelib`/`platlib` into
//! site-packages, `scripts` into `PREFIX/bin` (`#!python` becomes the
//! image's interpreter), `data` under `PREFIX`; `headers` is refused.
//! Console-script launchers from `entry_points.txt` are not generated and
//! nothing is byte-compiled (run `python3 -m module`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use kiln_image::layer::Entry;
use sha2::{Digest as _, Sha256};

use super::requirements::normalize;
use super::zip::Member;

/// A wheel file name's parts (`name-version(-build)?-py-abi-platform.whl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    pub name: String,
    pub version: String,
    pub python: Vec<String>,
    pub abi: Vec<String>,
    pub platform: Vec<String>,
}

impl WheelName {
    pub fn parse(file: &str) -> Option<WheelName> {
        let stem = file.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, tags) = match parts.as_slice() {
            [n, v, _, p, a, pl] | [n, v, p, a, pl] if !n.is_empty() && !v.is_empty() => {
                (*n, *v, [*p, *a, *pl])
            }
            _ => return None,
        };
        let list = |s: &str| s.split('.').map(str::to_string).collect();
        Some(WheelName {
            name: name.into(),
            version: version.into(),
            python: list(tags[0]),
            abi: list(tags[1]),
            platform: list(tags[2]),
        })
    }

    /// How well it fits an image with CPython `3.minor` on `arch`
    /// (uname's name: `x86_64`, `aarch64`, …): `None` when it cannot run
    /// there; more is more specific (pip prefers a platform wheel).
    pub fn fit(&self, minor: Option<u32>, arch: &str) -> Option<u8> {
        let cp = minor.map(|m| format!("cp3{m}"));
        let py_ok = self.python.iter().any(|p| {
            p == "py3"
                || minor.is_some_and(|m| *p == format!("py3{m}"))
                || Some(p) == cp.as_ref()
                || (p.starts_with("cp3") && self.abi.iter().any(|a| a == "abi3") && {
                    // abi3 from cp3N runs on every later 3.x.
                    let n: Option<u32> = p[3..].parse().ok();
                    n.zip(minor).is_some_and(|(n, m)| n <= m)
                })
        });
        let abi_ok = self
            .abi
            .iter()
            .any(|a| a == "none" || a == "abi3" || Some(a) == cp.as_ref());
        if !py_ok || !abi_ok {
            return None;
        }
        if self.platform.iter().any(|p| p == "any") {
            return Some(1);
        }
        // glibc wheels only (Debian); the glibc version in the tag is not
        // compared with the image's.
        let native = self.platform.iter().any(|p| {
            (p.starts_with("manylinux") || p.starts_with("linux_"))
                && p.ends_with(&format!("_{arch}"))
        });
        native.then_some(2)
    }
}

/// Where a wheel's files go.
pub struct Layout<'a> {
    /// site-packages, relative to the image root (no leading `/`).
    pub site: &'a Path,
    /// The scheme's prefix (`usr/local`): `bin/` for scripts, data.
    pub prefix: &'a Path,
    /// What `#!python` in a script becomes.
    pub interpreter: &'a str,
}

fn record_hash(data: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data))
    )
}

/// The path of `to` relative to directory `from` (both image-relative).
fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let same = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in same..f.len() {
        out.push("..");
    }
    for c in &t[same..] {
        out.push(c);
    }
    out.to_string_lossy().into_owned()
}

/// The layer entries that install `members` (the wheel `file`, named
/// `wheel`) at `layout`, directories included, times `mtime`.
pub fn install(
    file: &str,
    wheel: &WheelName,
    members: Vec<Member>,
    layout: &Layout,
    mtime: i64,
) -> Result<Vec<Entry>, String> {
    let bad = |why: String| format!("{file}: {why}");
    // The one `.dist-info` directory, which must be this wheel's.
    let infos: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| m.name.split_once('/').map(|x| x.0))
        .filter(|d| d.ends_with(".dist-info"))
        .collect();
    let [info] = infos.iter().copied().collect::<Vec<_>>()[..] else {
        return Err(bad(format!(
            "holds {} .dist-info directories; a wheel has one",
            infos.len()
        )));
    };
    let stem = info.trim_end_matches(".dist-info");
    let matches = stem
        .rsplit_once('-')
        .is_some_and(|(n, v)| normalize(n) == normalize(&wheel.name) && v == wheel.version);
    if !matches {
        return Err(bad(format!(
            "its metadata directory {info} is not {}-{}'s",
            wheel.name, wheel.version
        )));
    }
    let info = info.to_string();
    let data_dir = format!("{stem}.data/");
    let record_name = format!("{info}/RECORD");
    let record = members
        .iter()
        .find(|m| m.name == record_name)
        .ok_or_else(|| bad(format!("has no {record_name}")))?;
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for line in String::from_utf8_lossy(&record.data).lines() {
        let mut cols = line.rsplitn(3, ',');
        let (_size, hash, path) = (cols.next(), cols.next(), cols.next());
        if let (Some(h), Some(p)) = (hash, path) {
            listed.insert(p.trim_matches('"').to_string(), h.to_string());
        }
    }
    let mut entries = Vec::new();
    let mut dirs = BTreeSet::new();
    let mut installed: Vec<(PathBuf, String, usize)> = Vec::new();
    let mut add_dirs = |p: &Path, entries: &mut Vec<Entry>| {
        for a in p.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev() {
            if !a.as_os_str().is_empty() && dirs.insert(a.to_path_buf()) {
                entries.push(Entry::dir(a).with_mtime(mtime));
            }
        }
    };
    for m in members {
        if m.name == record_name || m.name.starts_with(&format!("{info}/RECORD.")) {
            continue;
        }
        match listed.get(&m.name) {
            Some(h) if *h == record_hash(&m.data) => {}
            Some(h) => {
                return Err(bad(format!(
                    "{} does not match its RECORD hash {h}; refused",
                    m.name
                )));
            }
            None => return Err(bad(format!("{} is not listed in RECORD; refused", m.name))),
        }
        let mut data = m.data;
        let mut exec = m.unix_mode.is_some_and(|mode| mode & 0o111 != 0);
        let dest = match m.name.strip_prefix(&data_dir) {
            None => layout.site.join(&m.name),
            Some(rest) => {
                let (scheme, path) = rest
                    .split_once('/')
                    .ok_or_else(|| bad(format!("{}: a file directly in .data/", m.name)))?;
                match scheme {
                    "purelib" | "platlib" => layout.site.join(path),
                    "scripts" => {
                        if let Some(body) = data.strip_prefix(b"#!python") {
                            let mut d = format!("#!{}", layout.interpreter).into_bytes();
                            // `#!pythonw` and friends: the rest of the line goes.
                            let eol = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
                            d.extend_from_slice(&body[eol..]);
                            data = d;
                        }
                        exec = true;
                        layout.prefix.join("bin").join(path)
                    }
                    "data" => layout.prefix.join(path),
                    other => {
                        return Err(bad(format!(
                            "{}: .data/{other} is not supported (purelib, platlib, scripts, data are)",
                            m.name
                        )));
                    }
                }
            }
        };
        add_dirs(&dest, &mut entries);
        installed.push((dest.clone(), record_hash(&data), data.len()));
        let mode = if exec { 0o755 } else { 0o644 };
        entries.push(
            Entry::file_bytes(&dest, data)
                .with_mode(mode)
                .with_mtime(mtime),
        );
    }
    // The installed RECORD, as pip writes it: paths relative to
    // site-packages, itself without a hash.
    let info_dir = layout.site.join(&info);
    let mut extra = vec![
        (info_dir.join("INSTALLER"), b"kiln\n".to_vec()),
        (info_dir.join("REQUESTED"), Vec::new()),
    ];
    for (p, d) in &extra {
        installed.push((p.clone(), record_hash(d), d.len()));
    }
    installed.sort();
    let mut text = String::new();
    for (p, h, n) in &installed {
        text.push_str(&format!("{},{h},{n}\n", relative(layout.site, p)));
    }
    text.push_str(&format!("{info}/RECORD,,\n"));
    extra.push((info_dir.join("RECORD"), text.into_bytes()));
    add_dirs(&info_dir.join("RECORD"), &mut entries);
    for (p, d) in extra {
        entries.push(Entry::file_bytes(p, d).with_mtime(mtime));
    }
    Ok(entries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::declarative::python::zip;

    /// A wheel's members with a RECORD that lists them.
    pub fn wheel_members(
        name: &str,
        version: &str,
        files: &[(&str, &[u8])],
    ) -> Vec<(String, Vec<u8>)> {
        let info = format!("{name}-{version}.dist-info");
        let mut out: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect();
        out.push((
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes(),
        ));
        out.push((
            format!("{info}/WHEEL"),
            b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ));
        let mut record = String::new();
        for (n, d) in &out {
            record.push_str(&format!("{n},{},{}\n", record_hash(d), d.len()));
        }
        record.push_str(&format!("{info}/RECORD,,\n"));
        out.push((format!("{info}/RECORD"), record.into_bytes()));
        out
    }

    fn members(m: &[(String, Vec<u8>)]) -> Vec<Member> {
        let z: Vec<(&str, &[u8], u32)> = m
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice(), 0o100644))
            .collect();
        zip::read(&zip::tests::make(&z, true)).unwrap()
    }

    fn layout() -> Layout<'static> {
        Layout {
            site: Path::new("usr/local/lib/python3.11/dist-packages"),
            prefix: Path::new("usr/local"),
            interpreter: "/usr/bin/python3",
        }
    }

    #[test]
    fn names_and_tags() {
        let w = WheelName::parse("greeting-1.0-py3-none-any.whl").unwrap();
        assert_eq!((w.name.as_str(), w.version.as_str()), ("greeting", "1.0"));
        assert_eq!(w.fit(Some(11), "x86_64"), Some(1));
        let w = WheelName::parse(
            "cffi-1.16.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert_eq!(w.fit(Some(11), "x86_64"), Some(2));
        assert_eq!(w.fit(Some(11), "aarch64"), None);
        assert_eq!(w.fit(Some(12), "x86_64"), None);
        let w = WheelName::parse("c-1-cp38-abi3-manylinux2014_x86_64.whl").unwrap();
        assert_eq!(w.fit(Some(11), "x86_64"), Some(2));
        assert!(
            WheelName::parse("c-1-py2-none-any.whl")
                .unwrap()
                .fit(Some(11), "x86_64")
                .is_none()
        );
        assert!(WheelName::parse("nonsense.whl").is_none());
    }

    #[test]
    fn installs_with_dist_info_and_data_mapping() {
        let m = wheel_members(
            "greeting",
            "1.0",
            &[
                ("greeting/__init__.py", b"WORD = 'hi'\n"),
                (
                    "greeting-1.0.data/scripts/greet",
                    b"#!python\nimport greeting\n",
                ),
            ],
        );
        let w = WheelName::parse("greeting-1.0-py3-none-any.whl").unwrap();
        let entries = install("g.whl", &w, members(&m), &layout(), 0).unwrap();
        let get = |p: &str| entries.iter().find(|e| e.path == Path::new(p));
        assert!(get("usr/local/lib/python3.11/dist-packages/greeting/__init__.py").is_some());
        let script = get("usr/local/bin/greet").unwrap();
        assert_eq!(script.mode, 0o755);
        let kiln_image::layer::EntryKind::File {
            source: kiln_image::layer::FileSource::Bytes(b),
            ..
        } = &script.kind
        else {
            panic!()
        };
        assert!(b.starts_with(b"#!/usr/bin/python3\n"));
        let rec =
            get("usr/local/lib/python3.11/dist-packages/greeting-1.0.dist-info/RECORD").unwrap();
        let kiln_image::layer::EntryKind::File {
            source: kiln_image::layer::FileSource::Bytes(r),
            ..
        } = &rec.kind
        else {
            panic!()
        };
        let r = String::from_utf8_lossy(r);
        assert!(r.contains("greeting/__init__.py,sha256="), "{r}");
        assert!(r.contains("../../../bin/greet,sha256="), "{r}");
        assert!(r.contains("greeting-1.0.dist-info/INSTALLER,"), "{r}");
        // Every directory once: a layer refuses duplicate names.
        kiln_image::layer::sort_entries(entries).unwrap();
    }

    #[test]
    fn a_wheel_that_disagrees_with_its_record_is_refused() {
        let w = WheelName::parse("greeting-1.0-py3-none-any.whl").unwrap();
        let mut m = wheel_members("greeting", "1.0", &[("greeting/__init__.py", b"ok\n")]);
        m[0].1 = b"changed\n".to_vec();
        let err = install("g.whl", &w, members(&m), &layout(), 0).unwrap_err();
        assert!(err.contains("does not match its RECORD"), "{err}");
        let mut m = wheel_members("greeting", "1.0", &[]);
        m.push(("sneaky.pth".into(), b"import os".to_vec()));
        let err = install("g.whl", &w, members(&m), &layout(), 0).unwrap_err();
        assert!(err.contains("not listed in RECORD"), "{err}");
        let m = wheel_members("other", "1.0", &[]);
        let err = install("g.whl", &w, members(&m), &layout(), 0).unwrap_err();
        assert!(err.contains("not greeting-1.0's"), "{err}");
    }
}
