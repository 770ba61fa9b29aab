//! The non-package layers of a declarative build: users and groups
//! (`/etc/passwd`, `/etc/group`, home directories), and each `[[file]]`
//! entry as a layer of its own, so dependencies listed apart from the
//! app's code change apart from it.

use std::path::{Component, Path, PathBuf};

use kiln_image::layer::{Entry, EntryKind, WalkOptions, host_entry, walk_dir};

use super::schema::{BuildFile, FileEntry};
use crate::BuildError;

fn usage(msg: String) -> BuildError {
    BuildError::Usage(format!("kiln.toml: {msg}"))
}

/// `/etc/passwd`, `/etc/group` and home directories; `None` when the file
/// declares no users or groups.
pub fn users_entries(file: &BuildFile, mtime: i64) -> Result<Option<Vec<Entry>>, BuildError> {
    if file.users.is_empty() && file.groups.is_empty() {
        return Ok(None);
    }
    let mut passwd = String::from("root:x:0:0:root:/root:/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    let mut groups: Vec<(String, u32, Vec<String>)> = file
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.gid, g.members.clone()))
        .collect();
    let mut entries = vec![
        Entry::dir("etc").with_mtime(mtime),
        Entry::dir("root").with_mode(0o700).with_mtime(mtime),
    ];
    let mut homes = std::collections::BTreeSet::new();
    for u in &file.users {
        check_name(&u.name)?;
        let gid = u.gid.unwrap_or(u.uid);
        let home = u.home.clone().unwrap_or_else(|| "/nonexistent".into());
        if u.uid == 0 || u.name == "root" {
            return Err(usage(format!(
                "[[user]] {:?}: root is always there (uid 0)",
                u.name
            )));
        }
        passwd.push_str(&format!(
            "{}:x:{}:{gid}::{home}:{}\n",
            u.name, u.uid, u.shell
        ));
        if !groups.iter().any(|g| g.1 == gid) && gid != 0 {
            groups.push((u.name.clone(), gid, Vec::new()));
        }
        if home != "/nonexistent" {
            let rel = rel_path(&home, "home")?;
            for a in rel.ancestors().skip(1) {
                if !a.as_os_str().is_empty() && homes.insert(a.to_path_buf()) {
                    entries.push(Entry::dir(a).with_mtime(mtime));
                }
            }
            if homes.insert(rel.clone()) {
                entries.push(
                    Entry::dir(rel)
                        .with_mode(0o700)
                        .with_owner(u.uid.into(), gid.into())
                        .with_mtime(mtime),
                );
            }
        }
    }
    groups.sort_by_key(|g| g.1);
    for (name, gid, members) in &groups {
        check_name(name)?;
        group.push_str(&format!("{name}:x:{gid}:{}\n", members.join(",")));
    }
    entries.push(Entry::file_bytes("etc/passwd", passwd).with_mtime(mtime));
    entries.push(Entry::file_bytes("etc/group", group).with_mtime(mtime));
    Ok(Some(entries))
}

fn check_name(name: &str) -> Result<(), BuildError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(usage(format!(
            "{name:?} is not a user or group name (letters, digits, ., _, -)"
        )));
    }
    Ok(())
}

/// An absolute image path as a relative one without `.` or `..`.
fn rel_path(p: &str, what: &str) -> Result<PathBuf, BuildError> {
    if !p.starts_with('/') {
        return Err(usage(format!("{what} {p:?} must be an absolute path")));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(usage(format!("{what} {p:?}: `..` is not allowed"))),
        }
    }
    Ok(out)
}

/// A `[[file]]` owner: `uid:gid`, `uid`, or names from `[[user]]` /
/// `[[group]]`.
fn owner(file: &BuildFile, spec: Option<&str>) -> Result<(u64, u64), BuildError> {
    let Some(spec) = spec else {
        return Ok((0, 0));
    };
    let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
    let user = |u: &str| -> Result<(u32, u32), BuildError> {
        if let Ok(n) = u.parse::<u32>() {
            return Ok((n, n));
        }
        file.users
            .iter()
            .find(|x| x.name == u)
            .map(|x| (x.uid, x.gid.unwrap_or(x.uid)))
            .ok_or_else(|| usage(format!("owner {spec:?}: no [[user]] {u:?}")))
    };
    let (uid, default_gid) = user(u)?;
    let gid = if g.is_empty() {
        default_gid
    } else if let Ok(n) = g.parse::<u32>() {
        n
    } else {
        file.groups
            .iter()
            .find(|x| x.name == g)
            .map(|x| x.gid)
            .or_else(|| {
                file.users
                    .iter()
                    .find(|x| x.name == g)
                    .map(|x| x.gid.unwrap_or(x.uid))
            })
            .ok_or_else(|| usage(format!("owner {spec:?}: no [[group]] {g:?}")))?
    };
    Ok((uid.into(), gid.into()))
}

/// The config's `User` for `[image] user`: a `[[user]]` name becomes its
/// numeric `uid:gid` (an image without a shell has no `id` to look names
/// up with, and runtimes need not read `/etc/passwd`).
pub fn config_user(file: &BuildFile) -> Option<String> {
    let u = file.image.user.as_deref()?;
    Some(match file.users.iter().find(|x| x.name == u) {
        Some(x) => format!("{}:{}", x.uid, x.gid.unwrap_or(x.uid)),
        None => u.to_string(),
    })
}

/// The entries of one `[[file]]`, read from under `context`. `src` must
/// stay inside the context: `..` and absolute paths are refused, and so is
/// a `src` whose real path (symlinks resolved) leaves it.
pub fn file_entries(
    file: &BuildFile,
    f: &FileEntry,
    context: &Path,
    mtime: i64,
) -> Result<Vec<Entry>, BuildError> {
    let src_rel = Path::new(&f.src);
    if src_rel.is_absolute() || src_rel.components().any(|c| c == Component::ParentDir) {
        return Err(usage(format!(
            "[[file]] src {:?} must be relative to the context, without `..`",
            f.src
        )));
    }
    let ctx = context
        .canonicalize()
        .map_err(|e| usage(format!("context {}: {e}", context.display())))?;
    let src = ctx.join(src_rel);
    let real = src
        .canonicalize()
        .map_err(|e| usage(format!("[[file]] src {:?}: {e}", f.src)))?;
    if !real.starts_with(&ctx) {
        return Err(usage(format!(
            "[[file]] src {:?} resolves to {}, outside the context",
            f.src,
            real.display()
        )));
    }
    let dest = rel_path(&f.dest, "[[file]] dest")?;
    let (uid, gid) = owner(file, f.owner.as_deref())?;
    let mode = match &f.mode {
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8).map_err(|_| {
                usage(format!(
                    "[[file]] mode {m:?} is not an octal number like \"0644\""
                ))
            })?,
        ),
        None => None,
    };
    let meta = std::fs::metadata(&real).map_err(|e| usage(format!("{}: {e}", real.display())))?;
    let mut entries = Vec::new();
    for a in dest.ancestors().skip(1) {
        if !a.as_os_str().is_empty() {
            entries.push(Entry::dir(a));
        }
    }
    if meta.is_dir() {
        if !dest.as_os_str().is_empty() {
            entries.push(Entry::dir(&dest).with_owner(uid, gid));
        }
        let walked = walk_dir(
            &real,
            &WalkOptions {
                xattrs: false,
                overlay: None,
            },
        )?;
        for mut e in walked {
            e.path = dest.join(&e.path);
            if let EntryKind::Hardlink { target } = &mut e.kind {
                *target = dest.join(&*target);
            }
            e.uid = uid;
            e.gid = gid;
            if let (Some(m), EntryKind::File { .. }) = (mode, &e.kind) {
                e.mode = m;
            }
            entries.push(e);
        }
    } else {
        let target = if f.dest.ends_with('/') {
            entries.push(Entry::dir(&dest));
            dest.join(real.file_name().unwrap_or_default())
        } else {
            dest.clone()
        };
        let md = std::fs::symlink_metadata(&real)
            .map_err(|e| usage(format!("{}: {e}", real.display())))?;
        let Some(mut e) = host_entry(&real, target, &md, None, false)? else {
            return Err(usage(format!(
                "[[file]] src {:?}: not a file or directory",
                f.src
            )));
        };
        e.uid = uid;
        e.gid = gid;
        if let Some(m) = mode {
            e.mode = m;
        }
        entries.push(e);
    }
    // The same bytes on any day: times are the build's epoch.
    for e in &mut entries {
        e.mtime = mtime;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_the_context() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir(ctx.path().join("app")).unwrap();
        std::fs::write(ctx.path().join("app/a.py"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", ctx.path().join("out")).unwrap();
        let file = BuildFile::parse("[image]\n").unwrap();
        let entry = |src: &str| FileEntry {
            src: src.into(),
            dest: "/app/".into(),
            mode: None,
            owner: None,
        };
        let ok = file_entries(&file, &entry("app/"), ctx.path(), 0).unwrap();
        assert!(ok.iter().any(|e| e.path == Path::new("app/a.py")));
        for bad in ["../x", "/etc/passwd", "out/", "out/passwd"] {
            let err = file_entries(&file, &entry(bad), ctx.path(), 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains("context"), "{bad}: {err}");
        }
    }
}
