//! COPY and ADD as build steps: where the sources come from (the context,
//! a stage, an image or a named context), who owns the copies, and the
//! layer they make through the cache. What gets copied, and how, is
//! [`crate::copy`]'s.

use std::path::Path;

use kiln_dockerfile::instructions::FromRef;
use kiln_image::Image;

use crate::BuildError;
use crate::context::Context;
use crate::copy::{CopyFrom, CopySpec};
use crate::fs::resolve_chown;
use crate::named::NamedContext;
use crate::solver::{Shared, fs_of, load_image, platform_of, wait_for};
use crate::step_layer::{Entries, MadeLayer, append, cached_layer};

/// `user:gid` for a user named or numbered in /etc/passwd, with the
/// user's primary group; the user alone if it is not listed.
pub(crate) fn primary_group(user: &str, passwd: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(passwd.unwrap_or_default());
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == user || f[2] == user))
        .map_or_else(|| user.to_string(), |f| format!("{}:{}", f[2], f[3]))
}

fn chown_ids(
    shared: &Shared<'_>,
    image: &Image,
    chown: Option<&str>,
) -> Result<Option<(u64, u64)>, BuildError> {
    let Some(spec) = chown else { return Ok(None) };
    let numeric = spec.split(':').all(|p| p.parse::<u64>().is_ok());
    if numeric {
        return resolve_chown(spec, None, None).map(Some);
    }
    let fs = fs_of(image);
    let passwd = fs.read_file(shared.store, &shared.snaps, "/etc/passwd")?;
    let group = fs.read_file(shared.store, &shared.snaps, "/etc/group")?;
    resolve_chown(spec, passwd.as_deref(), group.as_deref()).map(Some)
}

pub(crate) struct CopyArgs<'a> {
    pub(crate) instruction: &'a str,
    pub(crate) sources: &'a [kiln_dockerfile::instructions::Source],
    pub(crate) dest: &'a str,
    pub(crate) from: Option<&'a FromRef>,
    pub(crate) chown: Option<&'a str>,
    pub(crate) chmod: Option<&'a kiln_dockerfile::instructions::Chmod>,
    pub(crate) link: bool,
    pub(crate) parents: bool,
    pub(crate) exclude: &'a [String],
    pub(crate) unpack: bool,
    pub(crate) remote: bool,
    pub(crate) checksum: Option<&'a str>,
    pub(crate) keep_git_dir: bool,
}

/// COPY and ADD: one step that makes (or finds) the layer and records it.
pub(crate) fn copy_step(
    shared: &Shared<'_>,
    image: Image,
    name: &str,
    created_by: &str,
    no_cache: bool,
    a: CopyArgs<'_>,
) -> Result<Image, BuildError> {
    if let Some(FromRef::Stage { index, .. }) = a.from {
        // The step starts when its source stage is there, so its time (and
        // the TTY view) does not count the wait.
        wait_for(shared, *index)?;
    }
    let step = shared.progress.start(name);
    let owner = chown_ids(shared, &image, a.chown)?;
    let made = copy_layer(shared, &image, a, owner, no_cache, step)?;
    Ok(append(
        shared,
        image,
        made,
        format!("{created_by} # buildkit"),
    ))
}

fn copy_layer(
    shared: &Shared<'_>,
    image: &Image,
    a: CopyArgs<'_>,
    owner: Option<(u64, u64)>,
    no_cache: bool,
    step: crate::progress::Step<'_>,
) -> Result<MadeLayer, BuildError> {
    let base = fs_of(image);
    let existing_dir = |p: &Path| -> Option<std::fs::Metadata> {
        if a.link {
            return None;
        }
        base.stat(shared.store, &shared.snaps, p)
            .ok()
            .flatten()
            .filter(|m| m.is_dir())
    };
    let workdir = image
        .config
        .runtime()
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let spec = CopySpec {
        instruction: a.instruction,
        sources: a.sources,
        dest: a.dest,
        workdir: &workdir,
        owner,
        chmod: a.chmod,
        parents: a.parents,
        exclude: a.exclude,
        unpack_archives: a.unpack,
        remote: a.remote,
        checksum: a.checksum,
        keep_git_dir: a.keep_git_dir,
        host_network: shared.opts.entitlements.host_network(),
        now: shared.now,
        existing_dir: &existing_dir,
    };
    // A directory build context is read like the main context (digests
    // remembered, symlinks kept inside), with no .dockerignore.
    let mut named_dir = None;
    let from_fs = match a.from {
        None => None,
        Some(FromRef::Stage { index, .. }) => Some(wait_for(shared, *index)?.1),
        Some(FromRef::Image { reference }) => Some(fs_of(&load_image(
            shared.store,
            shared.opts,
            reference,
            &platform_of(image),
            shared.opts.platform_requested,
        )?)),
        Some(FromRef::Context { name }) => match shared.opts.named_contexts.get(name) {
            Some(NamedContext::Dir(dir)) => {
                let ignore = kiln_dockerfile::ignore::Matcher::new("")
                    .map_err(|e| BuildError::Context(e.to_string()))?;
                named_dir = Some(Context::new(
                    dir,
                    ignore,
                    Some(&shared.store.dir("context-index")?),
                )?);
                None
            }
            Some(other) => {
                let img = other.image(shared.store, shared.opts, &platform_of(image))?;
                Some(fs_of(&img.ok_or_else(|| {
                    BuildError::Instruction(format!("--from={name}: not an image"))
                })?))
            }
            None => {
                return Err(BuildError::Instruction(format!(
                    "--from={name}: no such build context"
                )));
            }
        },
    };
    let (plan, _view) = match (&from_fs, &named_dir) {
        (None, Some(ctx)) => {
            let plan = crate::copy::plan(&CopyFrom::Context(ctx), &spec)?;
            ctx.save();
            (plan, None)
        }
        (None, None) => (
            crate::copy::plan(&CopyFrom::Context(&shared.context), &spec)?,
            None,
        ),
        (Some(fs), _) => {
            let view = fs.view(shared.store, &shared.snaps, &shared.scratch)?;
            let plan = crate::copy::plan(
                &CopyFrom::Tree {
                    root: view.path(),
                    key: fs.key(),
                },
                &spec,
            )?;
            (plan, Some(view))
        }
    };
    let crate::copy::CopyPlan {
        entries,
        key,
        scratch,
    } = plan;
    let r = cached_layer(shared, &key, no_cache, step, |_| {
        Ok(Entries::shared(entries))
    });
    drop(scratch);
    r
}
