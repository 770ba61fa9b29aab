//! COPY and ADD as build steps: where the sources come from (the context,
//! a stage, an image or a named context), who owns the copies, and the
//! layer they make through the cache. What gets copied, and how, is
//! [`crate::copy`]'s.

use std::path::Path;

use kiln_dockerfile::instructions::FromRef;

use crate::BuildError;
use crate::base::load_image;
use crate::context::Context;
use crate::copy::{CopyFrom, CopySpec};
use crate::fs::{StageFs, resolve_chown};
use crate::graph::{CopyOp, Node};
use crate::key::KeyHasher;
use crate::named::NamedContext;
use crate::step_layer::{Entries, MadeLayer, cached_layer, definition_hit, record_definition};
use crate::worker::Worker;

/// `user:gid` for a user named or numbered in /etc/passwd, with the
/// user's primary group; the user alone if it is not listed.
pub(crate) fn primary_group(user: &str, passwd: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(passwd.unwrap_or_default());
    kiln_sandbox::user::find_user(&text, user)
        .map_or_else(|| user.to_string(), |(uid, gid)| format!("{uid}:{gid}"))
}

fn chown_ids(
    worker: &Worker<'_>,
    onto: Option<&StageFs>,
    chown: Option<&str>,
) -> Result<Option<(u64, u64)>, BuildError> {
    let Some(spec) = chown else { return Ok(None) };
    let numeric = spec.split(':').all(|p| p.parse::<u64>().is_ok());
    if numeric {
        return resolve_chown(spec, None, None).map(Some);
    }
    // The lowering makes the destination an input whenever a name is given.
    let fs = onto.ok_or_else(|| {
        BuildError::Instruction(format!(
            "--chown={spec}: no filesystem to look the name up in"
        ))
    })?;
    let passwd = fs.read_file(worker.store, &worker.snaps, "/etc/passwd")?;
    let group = fs.read_file(worker.store, &worker.snaps, "/etc/group")?;
    resolve_chown(spec, passwd.as_deref(), group.as_deref()).map(Some)
}

/// COPY and ADD: makes (or finds) the layer of `op` over `onto` (the
/// destination filesystem; none for `--link`), copying from `from` (a
/// stage's filesystem) or whatever else `op.from` names.
pub(crate) fn copy_step(
    worker: &Worker<'_>,
    op: &CopyOp,
    onto: Option<&StageFs>,
    from: Option<&StageFs>,
    node: &Node,
) -> Result<MadeLayer, BuildError> {
    let step = worker.progress.start(&node.name);
    // A directory build context is read like the main context (digests
    // remembered, symlinks kept inside), with no .dockerignore.
    let mut named_dir = None;
    let from_fs = match &op.from {
        None => None,
        Some(FromRef::Stage { .. }) => Some(from.cloned().ok_or_else(|| {
            BuildError::Instruction("--from: the stage's filesystem is not an input".into())
        })?),
        Some(FromRef::Image { reference }) => Some(StageFs::of(&load_image(
            worker.store,
            worker.opts,
            reference,
            &op.platform,
            worker.opts.platform_requested,
        )?)),
        Some(FromRef::Context { name }) => match worker.opts.named_contexts.get(name) {
            Some(NamedContext::Dir(dir)) => {
                let ignore = kiln_dockerfile::ignore::Matcher::new("")
                    .map_err(|e| BuildError::Context(e.to_string()))?;
                named_dir = Some(Context::new(
                    dir,
                    ignore,
                    Some(&worker.store.dir("context-index")?),
                )?);
                None
            }
            Some(other) => {
                let img = other.image(worker.store, worker.opts, &op.platform)?;
                Some(StageFs::of(&img.ok_or_else(|| {
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
    // From a filesystem (a stage, an image), the copy is known by its
    // definition and its inputs' layers: a hit reads no file of theirs.
    let definition = from_fs
        .as_ref()
        .map(|from| definition_key(op, from, onto))
        .transpose()?;
    // A step known by its definition, unless --no-cache: counted as cached.
    let hit_of = |d: &Option<kiln_image::Digest>| {
        let hit = d
            .as_ref()
            .filter(|_| !node.no_cache)
            .and_then(|d| definition_hit(worker, d))?;
        worker
            .cached
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(hit)
    };
    if let Some(hit) = hit_of(&definition) {
        step.cached();
        return Ok(hit);
    }
    let existing_dir = |p: &Path| -> Option<crate::fs::OwnedMeta> {
        if op.link {
            return None;
        }
        onto?
            .stat_owned(worker.store, &worker.snaps, p)
            .ok()
            .flatten()
            .filter(|(m, _)| m.is_dir())
    };
    let owner = chown_ids(worker, onto, op.chown.as_deref())?;
    let spec = CopySpec {
        instruction: op.instruction,
        sources: &op.sources,
        dest: &op.dest,
        workdir: &op.workdir,
        owner,
        chmod: op.chmod.as_ref(),
        parents: op.parents,
        exclude: &op.exclude,
        unpack_archives: op.unpack,
        remote: op.instruction == "ADD",
        checksum: op.checksum.as_deref(),
        keep_git_dir: op.keep_git_dir,
        host_network: worker.opts.entitlements.host_network(),
        now: worker.now,
        existing_dir: &existing_dir,
    };
    // From the context onto layers still in a registry: known by what
    // it copies and those layers' diff IDs, a hit reads none of them.
    let context_definition = match (&from_fs, &named_dir, onto) {
        (None, None, Some(onto)) if op.instruction == "COPY" && !op.link => {
            context_definition(worker, op, &spec, onto)?
        }
        _ => None,
    };
    if let Some(hit) = hit_of(&context_definition) {
        step.cached();
        return Ok(hit);
    }
    let (plan, _view) = match (&from_fs, &named_dir) {
        (None, Some(ctx)) => {
            let plan = crate::copy::plan(&CopyFrom::Context(ctx), &spec)?;
            ctx.save();
            (plan, None)
        }
        (None, None) => (
            crate::copy::plan(&CopyFrom::Context(&worker.context), &spec)?,
            None,
        ),
        (Some(fs), _) => {
            let view = fs.view(worker.store, &worker.snaps, &worker.scratch)?;
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
    let r = cached_layer(worker, &key, node.no_cache, step, |_| {
        Ok(Entries::shared(entries))
    });
    drop(scratch);
    let made = r?;
    for d in definition.iter().chain(&context_definition) {
        record_definition(worker, d, &made)?;
    }
    Ok(made)
}

/// The definition key of a COPY from the context onto `onto`, when the
/// build exports its cache (to record it) or `onto` has layers still in a
/// registry (to look it up): the copy's key as if nothing existed below
/// it, and `onto`'s diff IDs, which decide what does. `None` when the
/// copy's own key reads nothing below (it is as lazy already) or needs
/// to (a user name for --chown).
fn context_definition(
    worker: &Worker<'_>,
    op: &CopyOp,
    spec: &CopySpec<'_>,
    onto: &StageFs,
) -> Result<Option<kiln_image::Digest>, BuildError> {
    let Some(session) = worker.opts.cache_session.as_deref() else {
        return Ok(None);
    };
    let remote = onto
        .layers
        .iter()
        .any(|(blob, _)| session.layers().is_remote(worker.store, &blob.digest));
    let named_owner = op
        .chown
        .as_deref()
        .is_some_and(|c| !c.split(':').all(|p| p.parse::<u64>().is_ok()));
    if !(session.exporting() || remote) || named_owner {
        return Ok(None);
    }
    let probed = std::cell::Cell::new(false);
    let blind = |_: &Path| {
        probed.set(true);
        None
    };
    let spec = CopySpec {
        existing_dir: &blind,
        ..*spec
    };
    let plan = crate::copy::plan(&CopyFrom::Context(&worker.context), &spec)?;
    if !probed.get() {
        return Ok(None);
    }
    let mut k = KeyHasher::new("copy-context-definition-v1");
    k.str("blind", &plan.key.to_string())
        .str("onto", &onto.key().to_string());
    Ok(Some(k.finish()))
}

/// The definition key of a copy from the filesystem `from` onto `onto`:
/// the op as the Dockerfile says it (not where it sits in this build's
/// graph) and the diff IDs of both.
fn definition_key(
    op: &CopyOp,
    from: &StageFs,
    onto: Option<&StageFs>,
) -> Result<kiln_image::Digest, BuildError> {
    let mut def = serde_json::to_value(op)
        .map_err(|e| BuildError::Instruction(format!("COPY does not serialize: {e}")))?;
    if let Some(m) = def.as_object_mut() {
        m.remove("from_node");
    }
    let mut k = KeyHasher::new("copy-definition-v1");
    k.json("op", &def).str("from", &from.key().to_string());
    if let Some(onto) = onto {
        k.str("onto", &onto.key().to_string());
    }
    Ok(k.finish())
}
