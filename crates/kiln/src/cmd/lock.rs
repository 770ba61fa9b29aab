//! `kiln lock`: resolves a kiln.toml's `[debian]` packages against the
//! mirror (signature and hashes verified) and writes `kiln.lock` next to
//! it; builds then install exactly what it pins.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use kiln_build::declarative;
use kiln_image::Platform;

use super::open_store;

#[derive(Args)]
pub struct LockArgs {
    /// The build file.
    #[arg(short, long, default_value = "kiln.toml")]
    file: PathBuf,
    /// The platform to resolve for (default: the host's).
    #[arg(long)]
    platform: Option<String>,
    /// Print the lock instead of writing it.
    #[arg(long)]
    dry_run: bool,
}

pub fn lock(root: &std::path::Path, a: LockArgs) -> anyhow::Result<()> {
    let file = declarative::load(&a.file)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).with_context(|| format!("--platform {p:?}"))?,
        None => Platform::host(),
    };
    let Some(req) = declarative::request(&file, &platform)? else {
        bail!("{}: no [debian] section: nothing to lock", a.file.display());
    };
    let store = open_store(root)?;
    let lock = declarative::resolve(&store, &req)?;
    let text = lock.to_toml();
    if a.dry_run {
        outln!("{}", text.trim_end());
        return Ok(());
    }
    let dest = declarative::lock_path(&std::path::absolute(&a.file)?);
    kiln_image::store::write_atomic(&dest, text.as_bytes())
        .with_context(|| format!("writing {}", dest.display()))?;
    eprintln!(
        "locked {} packages from {} ({}) into {}",
        lock.packages.len(),
        lock.release.url,
        lock.release.date,
        dest.display()
    );
    Ok(())
}
