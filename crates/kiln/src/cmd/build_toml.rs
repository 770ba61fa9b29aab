//! `kiln build -f kiln.toml`: the declarative frontend
//! (kiln_build::declarative) behind `kiln build`'s flags; tagging and
//! outputs are `build`'s own.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln_build::ProgressMode;
use kiln_build::export;
use kiln_image::Platform;

use super::build::{BuildArgs, one_platform, progress_mode};

/// A `kiln.toml` build (kiln_build::declarative): no context upload, no
/// sandbox; the context defaults to the build file's directory.
pub(super) fn build(
    store: &kiln_image::Store,
    a: &BuildArgs,
    file: &Path,
) -> anyhow::Result<(kiln_build::BuildResult, ProgressMode)> {
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
    let platform = match &a.platform {
        Some(p) => one_platform(p)?,
        None => Platform::host(),
    };
    let opts = kiln_build::declarative::DeclarativeOptions {
        file: file.to_path_buf(),
        context,
        platform,
        source_date_epoch: super::source_date_epoch()?,
        fetch_base: Some(export::base_fetcher()?),
    };
    let result = kiln_build::declarative::build(store, &opts)
        .with_context(|| format!("building {}", file.display()))?;
    Ok((result, mode))
}
