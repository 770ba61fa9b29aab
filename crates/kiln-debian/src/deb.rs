//! A `.deb`: an `ar` archive holding `debian-binary`, `control.tar.*` and
//! `data.tar.*` (gzip, xz, zstd or plain). The data tar becomes layer
//! entries; the control tar gives the dpkg database records.
//!
//! The data tar is hostile until proven otherwise: a member with a `..`
//! component, a hard link to anything but an earlier member, a symlink
//! whose relative target climbs above the root, a member written through
//! a symlink the package itself made (the `evil -> /`, `evil/etc/passwd`
//! trick), and device nodes are refused by name. Absolute symlink targets
//! are kept: inside a container they resolve inside its root, and
//! extraction (kiln_image::layer) never follows them out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use kiln_image::layer::{Entry, EntryKind, FileSource};

use crate::DebianError;
use crate::control::{self, Paragraph};

/// What a `.deb` holds, ready for a layer.
#[derive(Debug)]
pub struct Unpacked {
    /// The `control` paragraph.
    pub control: Paragraph,
    /// `md5sums` and `conffiles` from the control tar, when present.
    pub md5sums: Option<Vec<u8>>,
    pub conffiles: Option<Vec<u8>>,
    /// Maintainer scripts the package has (`preinst`, `postinst`, …):
    /// kiln does not run them.
    pub scripts: Vec<String>,
    /// The data tar's members (the root `./` left out).
    pub entries: Vec<Entry>,
}

/// The members of an `ar` archive: name → bytes.
fn ar_members<'a>(deb: &'a [u8], what: &str) -> Result<BTreeMap<String, &'a [u8]>, DebianError> {
    let bad = |msg: &str| DebianError::Invalid(format!("{what}: not a .deb: {msg}"));
    let mut rest = deb
        .strip_prefix(b"!<arch>\n")
        .ok_or_else(|| bad("no ar magic"))?;
    let mut out = BTreeMap::new();
    while rest.len() >= 60 {
        let (head, body) = rest.split_at(60);
        let name = String::from_utf8_lossy(&head[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&head[48..58])
            .trim()
            .parse()
            .map_err(|_| bad("a member size is not a number"))?;
        if &head[58..60] != b"`\n" || size > body.len() {
            return Err(bad("a truncated or broken member header"));
        }
        out.insert(name, &body[..size]);
        rest = &body[(size + size % 2).min(body.len())..];
    }
    Ok(out)
}

/// A decompressing reader for `member` by its name's suffix.
fn tar_reader<'a>(name: &str, bytes: &'a [u8]) -> Result<Box<dyn Read + 'a>, DebianError> {
    Ok(match name.rsplit_once('.').map(|x| x.1) {
        Some("tar") => Box::new(bytes),
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Some("xz") => Box::new(lzma_rust2::XzReader::new(bytes, true)),
        Some("zst") => Box::new(
            zstd::stream::read::Decoder::new(bytes)
                .map_err(|e| DebianError::Invalid(format!("{name}: {e}")))?,
        ),
        _ => {
            return Err(DebianError::Invalid(format!("{name}: unknown compression")));
        }
    })
}

fn member<'a>(
    members: &BTreeMap<String, &'a [u8]>,
    prefix: &str,
    what: &str,
) -> Result<(String, &'a [u8]), DebianError> {
    members
        .iter()
        .find(|(n, _)| n.starts_with(prefix))
        .map(|(n, b)| (n.clone(), *b))
        .ok_or_else(|| DebianError::Invalid(format!("{what}: no {prefix}* member")))
}

/// Cleans a member name: `.` and empty parts dropped; `..` refused.
fn clean(raw: &[u8], what: &str) -> Result<String, DebianError> {
    let s = String::from_utf8_lossy(raw);
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(hostile(
                    what,
                    &s,
                    "a `..` component: it would leave the image",
                ));
            }
            _ => parts.push(c),
        }
    }
    if s.contains('\0') {
        return Err(hostile(what, &s, "a NUL byte in the name"));
    }
    Ok(parts.join("/"))
}

fn hostile(what: &str, name: &str, reason: &str) -> DebianError {
    DebianError::Hostile {
        package: what.to_string(),
        member: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Whether the relative symlink target `target` of `path` climbs above the
/// root.
fn climbs_out(path: &str, target: &str) -> bool {
    let mut depth: Vec<&str> = path.split('/').collect();
    depth.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return true;
                }
            }
            c => depth.push(c),
        }
    }
    false
}

/// Unpacks `deb` (named `what` in errors) into entries and its control data.
pub fn unpack(deb: &[u8], what: &str) -> Result<Unpacked, DebianError> {
    let members = ar_members(deb, what)?;
    let (cname, cbytes) = member(&members, "control.tar", what)?;
    let (dname, dbytes) = member(&members, "data.tar", what)?;
    let tar_err = |e: io::Error| DebianError::Invalid(format!("{what}: {e}"));

    let mut control_text = None;
    let mut md5sums = None;
    let mut conffiles = None;
    let mut scripts = Vec::new();
    let mut ctar = tar::Archive::new(tar_reader(&cname, cbytes)?);
    for e in ctar.entries().map_err(tar_err)? {
        let mut e = e.map_err(tar_err)?;
        let name = clean(&e.path_bytes(), what)?;
        let mut body = Vec::new();
        if e.header().entry_type().is_file() {
            e.read_to_end(&mut body).map_err(tar_err)?;
        }
        match name.as_str() {
            "control" => control_text = Some(String::from_utf8_lossy(&body).into_owned()),
            "md5sums" => md5sums = Some(body),
            "conffiles" => conffiles = Some(body),
            "preinst" | "postinst" | "prerm" | "postrm" | "config" => scripts.push(name),
            _ => {}
        }
    }
    let control = control::parse(
        &control_text
            .ok_or_else(|| DebianError::Invalid(format!("{what}: no control file in {cname}")))?,
    )
    .map_err(|e| DebianError::Invalid(format!("{what}: control: {e}")))?
    .into_iter()
    .next()
    .ok_or_else(|| DebianError::Invalid(format!("{what}: empty control file")))?;

    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    let mut symlinks = BTreeSet::new();
    let mut dtar = tar::Archive::new(tar_reader(&dname, dbytes)?);
    for e in dtar.entries().map_err(tar_err)? {
        let mut e = e.map_err(tar_err)?;
        let raw = e.path_bytes().into_owned();
        let path = clean(&raw, what)?;
        let shown = String::from_utf8_lossy(&raw).into_owned();
        if path.is_empty() {
            continue;
        }
        // A member below a symlink this package made would be written
        // through it.
        let mut prefix = String::new();
        for c in path.split('/') {
            if !prefix.is_empty() && symlinks.contains(&prefix) {
                return Err(hostile(
                    what,
                    &shown,
                    &format!("it is written through the package's own symlink /{prefix}"),
                ));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
        }
        let h = e.header();
        let mode = h.mode().map_err(tar_err)? & 0o7777;
        let uid = h.uid().map_err(tar_err)?;
        let gid = h.gid().map_err(tar_err)?;
        let mtime = h.mtime().map_err(tar_err)? as i64;
        let ty = h.entry_type();
        let kind = if ty.is_dir() {
            EntryKind::Dir
        } else if ty.is_symlink() {
            let target = e
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            if !target.starts_with('/') && climbs_out(&path, &target) {
                return Err(hostile(
                    what,
                    &shown,
                    &format!("a symlink to {target:?}, which climbs above the root"),
                ));
            }
            symlinks.insert(path.clone());
            EntryKind::Symlink {
                target: target.into(),
            }
        } else if ty.is_hard_link() {
            let target = clean(&e.link_name_bytes().unwrap_or_default(), what)?;
            if !seen.contains(&target) {
                return Err(hostile(
                    what,
                    &shown,
                    &format!("a hard link to {target:?}, which is not an earlier member"),
                ));
            }
            EntryKind::Hardlink {
                target: target.into(),
            }
        } else if ty.is_file() || ty == tar::EntryType::Continuous {
            let mut body = Vec::new();
            e.read_to_end(&mut body).map_err(tar_err)?;
            EntryKind::File {
                size: body.len() as u64,
                source: FileSource::Bytes(body),
            }
        } else if ty.is_fifo() {
            EntryKind::Fifo
        } else {
            return Err(hostile(
                what,
                &shown,
                &format!("a {ty:?} member: packages hold files, directories and links"),
            ));
        };
        if !seen.insert(path.clone()) {
            // dpkg keeps the last; so does a layer.
            entries.retain(|x: &Entry| x.path.as_os_str() != path.as_str());
        }
        entries.push(Entry {
            path: path.into(),
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs: Default::default(),
        });
    }
    Ok(Unpacked {
        control,
        md5sums,
        conffiles,
        scripts,
        entries,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A .deb with `control` and data members written by `data`.
    pub(crate) fn make_deb(data: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        make_deb_with("Package: t\nVersion: 1\nArchitecture: all\n", data)
    }

    /// A .deb with the control file `ctl`.
    pub(crate) fn make_deb_with(
        ctl: &str,
        data: impl FnOnce(&mut tar::Builder<Vec<u8>>),
    ) -> Vec<u8> {
        let ctl = ctl.as_bytes();
        let mut c = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(ctl.len() as u64);
        h.set_mode(0o644);
        c.append_data(&mut h, "./control", ctl).unwrap();
        let control = c.into_inner().unwrap();
        let mut d = tar::Builder::new(Vec::new());
        data(&mut d);
        let data = d.into_inner().unwrap();
        let mut ar = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", control),
            ("data.tar", data),
        ] {
            ar.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .bytes(),
            );
            ar.extend(&body);
            if body.len() % 2 == 1 {
                ar.push(b'\n');
            }
        }
        ar
    }

    /// Appends a member with a raw name (tar::Builder refuses `..`).
    pub(crate) fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        ty: tar::EntryType,
        link: &str,
        body: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        if !link.is_empty() {
            h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, body).unwrap();
    }

    #[test]
    fn unpacks_members_and_control() {
        let deb = make_deb(|b| {
            raw(b, "./", tar::EntryType::Directory, "", b"");
            raw(b, "./usr/bin/", tar::EntryType::Directory, "", b"");
            raw(b, "./usr/bin/hi", tar::EntryType::Regular, "", b"hi\n");
            raw(
                b,
                "./usr/bin/hey",
                tar::EntryType::Link,
                "./usr/bin/hi",
                b"",
            );
            raw(b, "./lib64", tar::EntryType::Symlink, "usr/lib", b"");
            raw(b, "./etc/alt", tar::EntryType::Symlink, "/usr/bin/hi", b"");
        });
        let u = unpack(&deb, "t").unwrap();
        assert_eq!(u.control.get("Package"), Some("t"));
        let paths: Vec<_> = u
            .entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            ["usr/bin", "usr/bin/hi", "usr/bin/hey", "lib64", "etc/alt"]
        );
    }

    #[test]
    fn refuses_hostile_members_by_name() {
        for (name, ty, link, want) in [
            ("./../../etc/passwd", tar::EntryType::Regular, "", "`..`"),
            ("./usr/../../x", tar::EntryType::Regular, "", "`..`"),
            (
                "./a",
                tar::EntryType::Symlink,
                "../../../etc",
                "climbs above",
            ),
            (
                "./h",
                tar::EntryType::Link,
                "./not-there",
                "not an earlier member",
            ),
            ("./dev/x", tar::EntryType::Char, "", "Char"),
        ] {
            let deb = make_deb(|b| raw(b, name, ty, link, b""));
            let err = unpack(&deb, "evil").unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("evil"), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
        }
        let deb = make_deb(|b| {
            raw(b, "./escape", tar::EntryType::Symlink, "/", b"");
            raw(b, "./escape/etc/passwd", tar::EntryType::Regular, "", b"x");
        });
        let err = unpack(&deb, "evil").unwrap_err().to_string();
        assert!(
            err.contains("through the package's own symlink /escape"),
            "{err}"
        );
    }
}
