//! `RUN --mount=type=bind`: what the sandbox is asked to mount, and what
//! of it enters the RUN's cache key; and the first contents of a cache
//! mount `from` a stage.
//!
//! The source is a path inside the context or a stage, and it stays
//! there: it is handed to the sandbox as a root and a path that the
//! sandbox resolves in that root when mounting
//! ([`kiln_sandbox::MountSpec::BindInRoot`]), so a symlink at the source
//! or in the middle of it (relative, absolute, or swapped in after kiln
//! looked) binds a path of the context or stage, never one of the host.
//!
//! `.dockerignore` holds: BuildKit never sends an ignored file, so a RUN
//! cannot see it. When something below a context source is ignored, the
//! bind shows a copy of the source without it instead, made in the store's
//! scratch on a cache miss only (see [`copy_tree`]); the key never
//! includes ignored files.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_sandbox::MountSpec;

use crate::BuildError;
use crate::context::{BindSource, Context, ContextEntry};
use crate::inroot::Root;
use crate::key::KeyHasher;

/// The context source of a bind, or a clear error when it is missing.
pub fn context_source(ctx: &Context, src: &str) -> Result<BindSource, BuildError> {
    let Some(b) = ctx.bind_source(src)? else {
        let why = ctx
            .tree()?
            .escaping_link(src)
            .map(|l| {
                format!(
                    " ({l:?} is a symlink that points outside it; symlinks are followed inside it)"
                )
            })
            .unwrap_or_default();
        return Err(BuildError::Instruction(format!(
            "RUN --mount=type=bind: source {:?} is not in the build context{why}",
            if src.is_empty() { "." } else { src }
        )));
    };
    Ok(b)
}

/// The real path of a stage's source, or a clear error when it is
/// missing (the sandbox resolves it again, in the same root, to mount it).
pub fn stage_source(
    kind: &str,
    view: &crate::fs::View,
    src: &str,
    from: Option<&kiln_dockerfile::instructions::FromRef>,
) -> Result<String, BuildError> {
    let tree = Root::open(view.path()).map_err(BuildError::file("a view of a stage"))?;
    let shown = format!("/{src}");
    let stage = match from {
        Some(kiln_dockerfile::instructions::FromRef::Stage {
            name: Some(name), ..
        }) => format!("stage {name:?}"),
        Some(kiln_dockerfile::instructions::FromRef::Stage { index, .. }) => {
            format!("stage {index}")
        }
        _ => String::from("the stage"),
    };
    tree.real(src)
        .map_err(|e| BuildError::Instruction(format!("RUN --mount=type={kind}: {shown}: {e}")))?
        .ok_or_else(|| {
            BuildError::Instruction(format!(
                "RUN --mount=type={kind}: source {shown:?} is not in {stage}"
            ))
        })
}

/// Adds what a bind of the context shows to a RUN's key: every visible
/// entry's path, mode, and content (a file's digest, a symlink's target).
pub fn key_context(k: &mut KeyHasher, ctx: &Context, b: &BindSource) -> Result<(), BuildError> {
    k.str("from-context", &b.real);
    let top = ContextEntry {
        rel: b.real.clone(),
        meta: b.meta.clone(),
    };
    for e in std::iter::once(&top).chain(&b.entries) {
        let content = if e.meta.is_file() {
            ctx.file_digest(&e.rel, &e.meta)?.to_string()
        } else if e.meta.file_type().is_symlink() {
            let target = ctx
                .tree()?
                .read_link(&e.rel)
                .map_err(|err| BuildError::Context(format!("{}: {err}", e.rel)))?;
            format!("link:{}", target.to_string_lossy())
        } else {
            String::new()
        };
        k.str(&e.rel, &content).json("mode", &e.meta.mode());
    }
    Ok(())
}

/// The mount of a context source. A filtered copy, when one is needed,
/// is made under `scratch` and must live until the RUN is done.
pub fn context_mount(
    ctx: &Context,
    b: &BindSource,
    target: PathBuf,
    readonly: bool,
    scratch: &Path,
) -> Result<(MountSpec, Option<tempfile::TempDir>), BuildError> {
    let tree = ctx.tree()?;
    if !b.filtered {
        let mount = MountSpec::BindInRoot {
            root: tree.path().to_path_buf(),
            source: PathBuf::from(&b.real),
            target,
            readonly,
        };
        return Ok((mount, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("bind-")
        .tempdir_in(scratch)
        .map_err(BuildError::file("bind mount scratch"))?;
    let top = dir.path().join("src");
    copy_tree(tree, &b.real, &b.meta, &b.entries, &top)?;
    let mount = MountSpec::Bind {
        source: top,
        target,
        readonly,
    };
    Ok((mount, Some(dir)))
}

/// The first contents of a cache mount `from` a stage: a copy of the
/// stage's directory `real` (a real path of `tree`), made beside `data`
/// and renamed into place, so a cache is never seen half made.
pub fn seed_cache(tree: &Root, real: &str, data: &Path) -> Result<(), BuildError> {
    let meta = tree
        .lstat(real)
        .map_err(|e| BuildError::Io(format!("cache mount source /{real}: {e}")))?;
    if !meta.is_dir() {
        return Err(BuildError::Instruction(format!(
            "RUN --mount=type=cache: source /{real} is not a directory"
        )));
    }
    let entries = crate::context::walk_sorted(tree, real, true, |_, m| (true, m.is_dir()))?;
    let parent = data.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix("seed-")
        .tempdir_in(parent)
        .map_err(BuildError::file("cache mount"))?;
    let top = tmp.path().join("data");
    copy_tree(tree, real, &meta, &entries, &top)?;
    if fs::rename(&top, data).is_err() && !data.is_dir() {
        return Err(BuildError::Io(format!(
            "cache mount: could not move {} into place",
            top.display()
        )));
    }
    Ok(())
}

/// Makes `top` a copy of the directory `real` of `tree` holding `entries`
/// (real paths below it, sorted; anything left out of them is left out):
/// directories made, regular files copied (`copy_file_range`, so a reflink
/// where the file system can), symlinks recreated, with modes, owners and
/// times kept; other kinds left out. Not hard links: a link would change
/// the context files' ctime (and so make the next build hash them again)
/// and a cache's files are written by the RUN.
fn copy_tree(
    tree: &Root,
    real: &str,
    meta: &fs::Metadata,
    entries: &[ContextEntry],
    top: &Path,
) -> Result<(), BuildError> {
    let io = |what: &str| BuildError::file(format!("copying {what}"));
    fs::create_dir(top).map_err(io(real))?;
    let prefix = if real.is_empty() {
        String::new()
    } else {
        format!("{real}/")
    };
    let mut dirs = vec![(top.to_path_buf(), meta.clone())];
    for e in entries {
        let under = e.rel.strip_prefix(&prefix).unwrap_or(&e.rel);
        let dest = top.join(under);
        // The ignored directories above a re-included entry are not
        // listed, yet hold it: made as they are in the context.
        let mut missing = Vec::new();
        for (a, d) in Path::new(&e.rel)
            .ancestors()
            .skip(1)
            .zip(dest.ancestors().skip(1))
        {
            if d == top || fs::symlink_metadata(d).is_ok() {
                break;
            }
            missing.push((a.to_string_lossy().into_owned(), d.to_path_buf()));
        }
        for (rel, d) in missing.into_iter().rev() {
            let meta = tree.lstat(&rel).map_err(io(&rel))?;
            fs::create_dir(&d).map_err(io(&rel))?;
            dirs.push((d, meta));
        }
        let ft = e.meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&dest).map_err(io(&e.rel))?;
            dirs.push((dest, e.meta.clone()));
        } else if ft.is_file() {
            let mut from = tree.open_file(&e.rel).map_err(io(&e.rel))?;
            let mut to = fs::File::create_new(&dest).map_err(io(&e.rel))?;
            std::io::copy(&mut from, &mut to).map_err(io(&e.rel))?;
            keep_meta(&to, &e.meta);
        } else if ft.is_symlink() {
            let target = tree.read_link(&e.rel).map_err(io(&e.rel))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(io(&e.rel))?;
            let _ = std::os::unix::fs::lchown(&dest, Some(e.meta.uid()), Some(e.meta.gid()));
        }
    }
    // Deepest first, so that setting a directory's time is not undone by
    // making its children.
    for (d, meta) in dirs.iter().rev() {
        if let Ok(f) = fs::File::open(d) {
            keep_meta(&f, meta);
        }
    }
    Ok(())
}

/// Best effort: the mode, owner and times of the original.
fn keep_meta(f: &fs::File, meta: &fs::Metadata) {
    // chown first: it clears set-user-ID bits that chmod then restores.
    let _ = std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid()));
    let _ = f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777));
    if let (Ok(a), Ok(m)) = (meta.accessed(), meta.modified()) {
        let _ = f.set_times(fs::FileTimes::new().set_accessed(a).set_modified(m));
    }
}
