//! `kiln lock`: resolves a kiln.toml's `[debian]` packages against the
//! mirror (signature and hashes verified) and chooses its `[python]`
//! wheels, and writes `kiln.lock` next to it; builds then install exactly
//! what it pins.

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
    /// The platforms to resolve for, comma-separated (default: the file's
    /// `[image] platforms`, else the host's).
    #[arg(long)]
    platform: Option<String>,
    /// Print the lock instead of writing it.
    #[arg(long)]
    dry_run: bool,
}

pub fn lock(root: &std::path::Path, a: LockArgs) -> anyhow::Result<()> {
    let file = declarative::load(&a.file)?;
    let platforms = match &a.platform {
        Some(p) => super::build::platform_list(p)?,
        None => match declarative::listed_platforms(&file)? {
            listed if listed.is_empty() => vec![Platform::host()],
            listed => listed,
        },
    };
    let path = std::path::absolute(&a.file)?;
    let context = path.parent().unwrap_or(std::path::Path::new("/"));
    let store = open_store(root)?;
    let Some(lock) = declarative::lock(&store, &file, context, &platforms)? else {
        bail!(
            "{}: no [debian] or [python] section: nothing to lock",
            a.file.display()
        );
    };
    let text = lock.to_toml();
    if a.dry_run {
        outln!("{}", text.trim_end());
        return Ok(());
    }
    let dest = declarative::lock_path(&path);
    kiln_image::store::write_atomic(&dest, text.as_bytes())
        .with_context(|| format!("writing {}", dest.display()))?;
    if let Some(d) = &lock.debian {
        eprintln!(
            "locked {} packages for {} from {} ({}) into {}",
            d.packages.len(),
            d.release.architectures.join(", "),
            d.release.url,
            d.release.date,
            dest.display()
        );
    }
    if let Some(p) = &lock.python {
        eprintln!("locked {} wheels into {}", p.wheels.len(), dest.display());
    }
    Ok(())
}
