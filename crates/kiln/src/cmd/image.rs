//! Commands over named images: inspect, history, tag, rmi, prune, check
//! (`images` has a file of its own).

use std::path::Path;

use anyhow::{Context, bail};
use clap::Args;
use kiln_image::{AnyManifest, Image, Platform, Reference};

use super::format::Template;
use super::open_store;

pub fn human_size(n: u64) -> String {
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
    /// Image names, IDs or digests: one prints an object, several a JSON
    /// array of them (as docker; one line each with --format).
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    /// A Go template over docker's fields (`{{.Id}}`, `{{.Config.Env}}`,
    /// `{{json .RootFS}}`, `{{json .}}`); see docs/cli.md.
    #[arg(short, long)]
    format: Option<String>,
}

/// The fields of `inspect --format`: docker's, and kiln's Digest and Manifest.
const INSPECT_FIELDS: &[&str] = &[
    "Id",
    "RepoTags",
    "RepoDigests",
    "Parent",
    "Comment",
    "Created",
    "Author",
    "Config",
    "Architecture",
    "Variant",
    "Os",
    "Size",
    "RootFS",
    "Metadata",
    "Digest",
    "Manifest",
];

/// The image as docker's `inspect` shows it, for `--format`: the runtime
/// config under `Config`, the platform and rootfs at the top.
fn docker_view(
    img: &Image,
    desc: &kiln_image::Descriptor,
    names: &[(Reference, kiln_image::Descriptor)],
    manifest: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let blob = serde_json::to_value(&img.config)?;
    let text = |k: &str| {
        blob.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut config = serde_json::Map::new();
    let runtime = blob.get("config").and_then(|c| c.as_object());
    for (key, empty) in [
        ("User", serde_json::json!("")),
        ("ExposedPorts", serde_json::json!({})),
        ("Env", serde_json::json!([])),
        ("Entrypoint", serde_json::json!([])),
        ("Cmd", serde_json::json!([])),
        ("Volumes", serde_json::json!({})),
        ("WorkingDir", serde_json::json!("")),
        ("Labels", serde_json::json!({})),
        ("StopSignal", serde_json::json!("")),
        ("OnBuild", serde_json::json!([])),
        ("Shell", serde_json::json!([])),
    ] {
        let v = runtime.and_then(|r| r.get(key)).filter(|v| !v.is_null());
        config.insert(key.into(), v.cloned().unwrap_or(empty));
    }
    if let Some(h) = runtime.and_then(|r| r.get("Healthcheck")) {
        config.insert("Healthcheck".into(), h.clone());
    }
    let repo_tags: Vec<String> = names.iter().map(|(n, _)| n.familiar()).collect();
    let repo_digests: Vec<String> = names
        .iter()
        .filter_map(|(n, d)| {
            let r = d.annotations.get(kiln_image::store::REGISTRY_DIGEST)?;
            Some(format!(
                "{}@{r}",
                Reference::parse(&n.name())
                    .ok()?
                    .familiar()
                    .trim_end_matches(":latest")
            ))
        })
        .collect();
    let tagged = names
        .iter()
        .filter_map(|(_, d)| d.annotations.get(kiln_image::store::TAGGED_AT))
        .max()
        .cloned()
        .unwrap_or_default();
    let layers = blob["rootfs"]["diff_ids"].clone();
    Ok(serde_json::json!({
        "Id": img.id().to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": img.config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": text("created"),
        "Author": text("author"),
        "Config": config,
        "Architecture": text("architecture"),
        "Variant": text("variant"),
        "Os": text("os"),
        "Size": img.layers.iter().map(|l| l.size).sum::<u64>(),
        "RootFS": {"Type": "layers", "Layers": if layers.is_null() { serde_json::json!([]) } else { layers }},
        "Metadata": {"LastTagTime": tagged},
        "Digest": desc.digest.to_string(),
        "Manifest": manifest,
    }))
}

pub fn inspect(root: &Path, a: InspectArgs) -> anyhow::Result<()> {
    let template = match &a.format {
        Some(f) => Some(Template::parse(f, INSPECT_FIELDS)?),
        None => None,
    };
    let store = open_store(root)?;
    // As docker: every image that is there is printed, then each that is
    // not is an error, and the status is 1.
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for name in &a.names {
        match inspect_one(&store, name, template.as_ref()) {
            Ok(v) => found.push(v),
            Err(e) => failed.push(e),
        }
    }
    match (&template, a.names.len()) {
        (Some(_), _) => {
            for line in &found {
                outln!("{}", line.as_str().unwrap_or_default());
            }
        }
        (None, 1) => {
            if let Some(v) = found.first() {
                outln!("{}", serde_json::to_string_pretty(v)?);
            }
        }
        (None, _) => outln!("{}", serde_json::to_string_pretty(&found)?),
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        _ => {
            for e in &failed[..failed.len() - 1] {
                eprintln!("kiln: {e:#}");
            }
            Err(failed.pop().expect("several"))
        }
    }
}

/// One image: the rendered template as a JSON string, or kiln's object.
fn inspect_one(
    store: &kiln_image::Store,
    name: &str,
    template: Option<&Template>,
) -> anyhow::Result<serde_json::Value> {
    let desc = store.resolve(name)?;
    let top = store.manifest_doc(&desc.digest)?;
    let (img, raw) = Image::load_manifest(store, &desc.digest, &Platform::host())?;
    let named: Vec<(Reference, kiln_image::Descriptor)> = store
        .images()?
        .into_iter()
        .filter(|(_, d)| d.digest == desc.digest)
        .collect();
    let names: Vec<String> = named.iter().map(|(n, _)| n.to_string()).collect();
    let manifest: serde_json::Value = serde_json::from_slice(&raw.bytes)?;
    if let Some(t) = template {
        let view = docker_view(&img, &desc, &named, &manifest)?;
        return Ok(serde_json::Value::String(t.render(&view)?));
    }
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
    Ok(out)
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
    /// An image ID with several names loses them all, and a name that is
    /// not there is no error (docker's `rmi -f`).
    #[arg(short, long)]
    force: bool,
}

pub fn rmi(root: &Path, a: RmiArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let mut failed = 0;
    for name in &a.names {
        if let Err(e) = rmi_one(&store, name, a.force) {
            eprintln!("kiln: rmi {name}: {}", crate::error_text(&e));
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be removed", a.names.len());
    }
    Ok(())
}

/// Removes one name, or every name of one image ID.
fn rmi_one(store: &kiln_image::Store, name: &str, force: bool) -> anyhow::Result<()> {
    let images = store.images()?;
    // A name in the store is removed as such, even if it looks like an ID.
    if let Ok(r) = Reference::parse(name)
        && images.iter().any(|(n, _)| *n == r)
    {
        store.untag(&r)?;
        outln!("Untagged: {}", r.familiar());
        return Ok(());
    }
    let desc = match store.resolve(name) {
        Ok(d) => d,
        Err(kiln_image::store::StoreError::ImageNotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let names: Vec<&Reference> = images
        .iter()
        .filter(|(_, d)| d.digest == desc.digest)
        .map(|(n, _)| n)
        .collect();
    if names.len() > 1 && !force {
        let list: Vec<String> = names.iter().map(|n| n.familiar()).collect();
        bail!(
            "image {name} has {} names ({}): remove them one by one, or all with -f",
            names.len(),
            list.join(", ")
        );
    }
    for n in names {
        store.untag(n)?;
        outln!("Untagged: {}", n.familiar());
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
    /// List what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What `--build-cache` forgets: the store directories (and GC roots) that
/// only make builds faster.
pub const BUILD_CACHE: &[&str] = &[
    "build-cache",
    "cache-mounts",
    "compressed-layers",
    "context-index",
];

pub fn prune(root: &Path, a: PruneArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let snaps = kiln_snapshot::Snapshots::open(&store)?;
    let forget = if a.build_cache { BUILD_CACHE } else { &[] };
    if a.dry_run {
        return prune_dry_run(&store, &snaps, forget);
    }
    let mut dirs = Ok(0);
    let mut secrets = Ok(Vec::new());
    let r = store.prune_with(forget, |store, keep| {
        // A layer directory stays while its layer does: as a blob (plain
        // layers are their own diff ID) or in a config that stays.
        dirs = snaps.prune(&kept_diff_ids(store, keep));
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

/// What `prune` would remove, listed: each blob, each unpacked layer.
fn prune_dry_run(
    store: &kiln_image::Store,
    snaps: &kiln_snapshot::Snapshots,
    forget: &[&str],
) -> anyhow::Result<()> {
    let (report, keep) = store.garbage(forget)?;
    for (d, size) in store.blobs()? {
        if !keep.contains(&d) {
            outln!("would remove blob {d} ({})", human_size(size));
        }
    }
    let diff_ids = kept_diff_ids(store, &keep);
    let dirs = snaps.unused_layers(&diff_ids)?;
    for d in &dirs {
        outln!("would remove unpacked layer {}", d.display());
    }
    for name in forget {
        let dir = store.root().join(name);
        if dir.exists() {
            outln!("would forget {}", dir.display());
        }
    }
    outln!(
        "Would remove {} blobs ({} bytes), {} unpacked layers and {} temp files",
        report.blobs,
        report.bytes,
        dirs.len(),
        report.temp_files
    );
    Ok(())
}

/// The diff IDs whose unpacked layers stay: plain layers are their own
/// diff ID, and configs that stay name theirs.
pub fn kept_diff_ids(
    store: &kiln_image::Store,
    keep: &std::collections::BTreeSet<kiln_image::Digest>,
) -> std::collections::BTreeSet<kiln_image::Digest> {
    let mut diff_ids = keep.clone();
    for d in keep {
        diff_ids.extend(config_diff_ids(store, d));
    }
    diff_ids
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
