//! Commands over named images: images, inspect, history, tag, rmi, prune, check.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Args;
use kiln_image::{AnyManifest, Image, Platform, Reference};

use super::open_store;

#[derive(Args)]
pub struct ImagesArgs {
    /// Print image IDs only.
    #[arg(short, long)]
    quiet: bool,
    /// Show manifest digests.
    #[arg(long)]
    digests: bool,
    /// Print JSON, one object per image.
    #[arg(long)]
    json: bool,
}

pub fn images(root: &Path, a: ImagesArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let mut rows = Vec::new();
    for (name, desc) in store.images()? {
        let (id, size, created) =
            match Image::load_manifest(&store, &desc.digest, &Platform::host()) {
                Ok((img, _)) => (
                    img.id(),
                    img.layers.iter().map(|l| l.size).sum::<u64>(),
                    img.config.created.clone().unwrap_or_default(),
                ),
                Err(_) => (desc.digest.clone(), desc.size, String::new()),
            };
        rows.push((name, desc, id, size, created));
    }
    if a.quiet {
        for (_, _, id, _, _) in &rows {
            outln!("{}", id.short());
        }
        return Ok(());
    }
    if a.json {
        for (name, desc, id, size, created) in &rows {
            let v = serde_json::json!({
                "name": name.to_string(), "id": id.to_string(), "digest": desc.digest.to_string(),
                "size": size, "created": created,
            });
            outln!("{v}");
        }
        return Ok(());
    }
    if a.digests {
        outln!(
            "{:<40} {:<16} {:<71} {:<12} {:<20} {:>10}",
            "REPOSITORY",
            "TAG",
            "DIGEST",
            "IMAGE ID",
            "CREATED",
            "SIZE"
        );
    } else {
        outln!(
            "{:<40} {:<16} {:<12} {:<20} {:>10}",
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE"
        );
    }
    for (name, desc, id, size, created) in rows {
        let familiar = name.familiar();
        let repo = familiar
            .rsplit_once(':')
            .map_or(familiar.as_str(), |(r, _)| r);
        let tag = name.tag().unwrap_or("<none>");
        if a.digests {
            // As docker: the digest a registry knows, once pulled or pushed.
            let digest = desc
                .annotations
                .get(kiln_image::store::REGISTRY_DIGEST)
                .map_or("<none>", String::as_str);
            outln!(
                "{repo:<40} {tag:<16} {digest:<71} {:<12} {created:<20} {:>10}",
                id.short(),
                human_size(size)
            );
        } else {
            outln!(
                "{repo:<40} {tag:<16} {:<12} {created:<20} {:>10}",
                id.short(),
                human_size(size)
            );
        }
    }
    Ok(())
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replace(".000", "")
    }
}

#[derive(Args)]
pub struct InspectArgs {
    /// An image name, ID or digest.
    name: String,
}

pub fn inspect(root: &Path, a: InspectArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let desc = store.resolve(&a.name)?;
    let top = store.manifest_doc(&desc.digest)?;
    let (img, raw) = Image::load_manifest(&store, &desc.digest, &Platform::host())?;
    let names: Vec<String> = store
        .images()?
        .into_iter()
        .filter(|(_, d)| d.digest == desc.digest)
        .map(|(n, _)| n.to_string())
        .collect();
    let manifest: serde_json::Value = serde_json::from_slice(&raw.bytes)?;
    let mut out = serde_json::json!({
        "Id": img.id().to_string(),
        "Digest": desc.digest.to_string(),
        "RepoTags": names,
        "Manifest": manifest,
        "Config": img.config,
    });
    if let AnyManifest::Index(index) = top {
        out["Index"] = serde_json::to_value(index)?;
    }
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[derive(Args)]
pub struct HistoryArgs {
    name: String,
    /// Do not truncate CREATED BY.
    #[arg(long)]
    no_trunc: bool,
}

pub fn history(root: &Path, a: HistoryArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let (img, _) = Image::load(&store, &a.name, &Platform::host())?;
    outln!(
        "{:<20} {:<48} {:>10}  COMMENT",
        "CREATED",
        "CREATED BY",
        "SIZE"
    );
    let mut layers = img.layers.iter();
    // Sizes pair with non-empty history entries in order; print newest first.
    let mut rows = Vec::new();
    for h in &img.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        let mut by = h.created_by.clone().unwrap_or_default();
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        rows.push(format!(
            "{:<20} {:<48} {:>10}  {}",
            h.created.as_deref().unwrap_or(""),
            by,
            human_size(size),
            h.comment.as_deref().unwrap_or("")
        ));
    }
    for r in rows.iter().rev() {
        outln!("{r}");
    }
    Ok(())
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub fn tag(root: &Path, a: TagArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let desc = store.resolve(&a.source)?;
    let target = Reference::parse(&a.target)?;
    store.tag(&target, &desc)?;
    Ok(())
}

#[derive(Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn rmi(root: &Path, a: RmiArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    for name in &a.names {
        let r = Reference::parse(name).with_context(|| format!("rmi {name}"))?;
        store.untag(&r)?;
        outln!("Untagged: {}", r.familiar());
    }
    Ok(())
}

#[derive(Args)]
pub struct PruneArgs {
    /// Also forget the build cache (as `docker builder prune -a`): every
    /// cache entry, RUN cache mount, compressed copy of a built layer and
    /// the context hash index. The next build runs every step.
    #[arg(long)]
    build_cache: bool,
}

/// What `--build-cache` forgets: the store directories (and GC roots) that
/// only make builds faster.
const BUILD_CACHE: &[&str] = &[
    "build-cache",
    "cache-mounts",
    "compressed-layers",
    "context-index",
];

pub fn prune(root: &Path, a: PruneArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let snaps = kiln_snapshot::Snapshots::open(&store)?;
    let forget = if a.build_cache { BUILD_CACHE } else { &[] };
    let mut dirs = Ok(0);
    let mut secrets = Ok(Vec::new());
    let r = store.prune_with(forget, |store, keep| {
        // A layer directory stays while its layer does: as a blob (plain
        // layers are their own diff ID) or in a config that stays.
        let mut diff_ids = keep.clone();
        for d in keep {
            diff_ids.extend(config_diff_ids(store, d));
        }
        dirs = snaps.prune(&diff_ids);
        secrets = kiln_build::run_private::sweep(store);
        Ok(())
    })?;
    let dirs = dirs.context("removing unpacked layers")?;
    let secrets = secrets.context("removing secrets of killed builds")?;
    outln!(
        "Removed {} blobs ({} bytes), {} unpacked layers, {} temp files and {} secret directories of killed builds",
        r.blobs,
        r.bytes,
        dirs,
        r.temp_files,
        secrets.len()
    );
    Ok(())
}

/// The diff IDs of blob `d`, if it is an image config.
fn config_diff_ids(store: &kiln_image::Store, d: &kiln_image::Digest) -> Vec<kiln_image::Digest> {
    #[derive(serde::Deserialize)]
    struct Rootfs {
        diff_ids: Vec<kiln_image::Digest>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: Rootfs,
    }
    // Configs are small; a layer is not worth reading to find it is not one.
    let small = store.blob_size(d).is_ok_and(|n| n < 4 << 20);
    if !small {
        return Vec::new();
    }
    store
        .read_blob(d)
        .ok()
        .and_then(|b| serde_json::from_slice::<Config>(&b).ok())
        .map(|c| c.rootfs.diff_ids)
        .unwrap_or_default()
}

pub fn check(root: &Path) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let mut r = store.check()?;
    for dir in kiln_build::run_private::leftovers(&store)? {
        r.problems.push(format!(
            "{}: secrets of a killed build (the next build or `kiln prune` removes them)",
            dir.display()
        ));
    }
    for p in &r.problems {
        eprintln!("problem: {p}");
    }
    outln!(
        "{} blobs, {} images, {} temp files, {} problems",
        r.blobs,
        r.images,
        r.temp_files,
        r.problems.len()
    );
    if !r.problems.is_empty() {
        bail!("the store has {} problems", r.problems.len());
    }
    Ok(())
}
