//! `kiln build -f kiln.toml`: the declarative frontend
//! (kiln_build::declarative) behind `kiln build`'s flags; tagging and
//! outputs are `build`'s own.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln_build::ProgressMode;
use kiln_build::export;
use kiln_image::Platform;

use super::build::{BuildArgs, platform_list, progress_mode};

/// A `kiln.toml` build (kiln_build::declarative): no context upload, no
/// sandbox; the context defaults to the build file's directory. One
/// result per platform (`--platform`, else the file's `platforms`, else
/// the host's); several make an index, as a Dockerfile build's do.
pub(super) fn build(
    store: &kiln_image::Store,
    a: &BuildArgs,
    file: &Path,
    outputs: &[export::Output],
) -> anyhow::Result<(Vec<kiln_build::BuildResult>, ProgressMode)> {
    let mode = progress_mode(a.quiet, &a.progress)?;
    // Flags that shape a Dockerfile build mean nothing here: said, not
    // silently dropped.
    let ignored = [
        ("--build-arg", !a.build_args.is_empty()),
        ("--target", a.target.is_some()),
        ("--secret", !a.secrets.is_empty()),
        ("--ssh", !a.ssh.is_empty()),
        ("--network", a.network.is_some()),
        ("--add-host", !a.add_hosts.is_empty()),
        ("--build-context", !a.build_contexts.is_empty()),
        ("--no-cache", a.no_cache),
        ("--label (use [image] labels)", !a.labels.is_empty()),
    ];
    for (flag, _) in ignored.iter().filter(|(_, set)| *set) {
        if mode != ProgressMode::Quiet {
            eprintln!("warning: {flag}: ignored for a kiln.toml build");
        }
    }
    let context = match &a.context {
        Some(c) => PathBuf::from(c),
        None => file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let platforms = match &a.platform {
        Some(p) => platform_list(p)?,
        None => {
            let parsed = kiln_build::declarative::load(file)?;
            match kiln_build::declarative::listed_platforms(&parsed)? {
                listed if listed.is_empty() => vec![Platform::host()],
                listed => listed,
            }
        }
    };
    if platforms.len() > 1
        && let Some(o) = outputs.iter().find(|o| o.kind != export::OutputKind::Image)
    {
        anyhow::bail!(
            "{} platforms: an index of several platforms goes to the store and registries \
             (-t, --push); {:?} outputs take one platform at a time (--platform)",
            platforms.len(),
            o.kind
        );
    }
    let mut results = Vec::new();
    for platform in platforms {
        let annotations = kiln_build::annotate::manifest_annotations(&a.annotations, &platform)?;
        let opts = kiln_build::declarative::DeclarativeOptions {
            file: file.to_path_buf(),
            context: context.clone(),
            platform,
            source_date_epoch: super::source_date_epoch()?,
            fetch_base: Some(export::base_fetcher(None)?),
        };
        let mut result = kiln_build::declarative::build(store, &opts)
            .with_context(|| format!("building {} for {}", file.display(), opts.platform))?;
        // As a Dockerfile build's: the user's annotations, and the base
        // image named unless the base is scratch.
        let annotations = kiln_build::annotate::with_base(&annotations, result.base.as_ref());
        kiln_build::annotate::annotate(store, &mut result, &annotations)?;
        results.push(result);
    }
    Ok((results, mode))
}
