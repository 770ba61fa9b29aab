//! `kiln images`: the named images, as docker lists them, filtered by
//! repository and formatted by a Go template.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use kiln_image::{Image, Platform, Reference};

use super::format::Template;
use super::image::human_size;
use super::open_store;

#[derive(Args)]
pub struct ImagesArgs {
    /// Only images of this repository (`busybox`), or of this name
    /// (`busybox:1.36`).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Print image IDs only.
    #[arg(short, long)]
    quiet: bool,
    /// Show manifest digests.
    #[arg(long)]
    digests: bool,
    /// Print JSON, one object per image.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// A Go template per image, as docker's: `{{.Repository}}:{{.Tag}}`,
    /// `{{json .}}`, `table {{.ID}}\t{{.Size}}` (fields: Containers,
    /// CreatedAt, CreatedSince, Digest, ID, Repository, SharedSize, Size,
    /// Tag, UniqueSize, VirtualSize).
    #[arg(long)]
    format: Option<String>,
}

/// The fields of `images --format`, docker's.
const IMAGE_FIELDS: &[&str] = &[
    "Containers",
    "CreatedAt",
    "CreatedSince",
    "Digest",
    "ID",
    "Repository",
    "SharedSize",
    "Size",
    "Tag",
    "UniqueSize",
    "VirtualSize",
];

/// Whether `name` is one `images FILTER` lists: a filter with a tag or
/// digest names one image, one without names a repository.
fn matches_filter(name: &Reference, filter: &Reference, filter_text: &str) -> bool {
    let last = filter_text.rsplit('/').next().unwrap_or(filter_text);
    if last.contains(':') || last.contains('@') {
        name == filter
    } else {
        name.name() == filter.name()
    }
}

pub fn images(root: &Path, a: ImagesArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let template = match &a.format {
        Some(f) => Some(Template::parse(f, IMAGE_FIELDS)?),
        None => None,
    };
    let filter = match &a.reference {
        Some(f) => Some(
            Reference::parse(f).with_context(|| format!("images {f}: not a repository name"))?,
        ),
        None => None,
    };
    let mut rows = Vec::new();
    for (name, desc) in store.images()? {
        if let (Some(f), Some(text)) = (&filter, &a.reference)
            && !matches_filter(&name, f, text)
        {
            continue;
        }
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
    if let Some(t) = template {
        if let Some(h) = t.header(image_header) {
            outln!("{h}");
        }
        let now = now_secs();
        for (name, desc, id, size, created) in &rows {
            let familiar = name.familiar();
            let repo = familiar
                .rsplit_once(':')
                .map_or(familiar.as_str(), |(r, _)| r);
            let at = kiln_image::time::parse_rfc3339(created);
            let row = serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": at.map_or_else(String::new, docker_time),
                "CreatedSince": at.map_or_else(|| "N/A".to_string(), |t| since(now - t)),
                "Digest": desc.annotations.get(kiln_image::store::REGISTRY_DIGEST).map_or("<none>", String::as_str),
                "ID": id.short(),
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(*size),
                "Tag": name.tag().unwrap_or("<none>"),
                "UniqueSize": "N/A",
                "VirtualSize": human_size(*size),
            });
            outln!("{}", t.render(&row)?);
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

/// docker's column names for `images --format 'table ...'`.
fn image_header(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".into(),
        "CreatedAt" => "CREATED AT".into(),
        "CreatedSince" => "CREATED".into(),
        "SharedSize" => "SHARED SIZE".into(),
        "UniqueSize" => "UNIQUE SIZE".into(),
        f => f.to_uppercase(),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A time as docker's `CreatedAt` prints it: `2023-11-14 22:13:20 +0000 UTC`.
fn docker_time(secs: i64) -> String {
    let t = kiln_image::time::rfc3339(secs);
    format!(
        "{} +0000 UTC",
        t.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// How long ago, as docker's `CreatedSince` says it (`3 weeks ago`).
fn since(secs: i64) -> String {
    const MIN: i64 = 60;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    let s = secs.max(0);
    let text = match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < MIN => format!("{s} seconds"),
        s if s < 2 * MIN => "About a minute".to_string(),
        s if s < HOUR => format!("{} minutes", s / MIN),
        s if s < 2 * HOUR => "About an hour".to_string(),
        s if s < 2 * DAY => format!("{} hours", s / HOUR),
        s if s < 14 * DAY => format!("{} days", s / DAY),
        s if s < 60 * DAY => format!("{} weeks", s / (7 * DAY)),
        s if s < 730 * DAY => format!("{} months", s / (30 * DAY)),
        s => format!("{} years", s / (365 * DAY)),
    };
    format!("{text} ago")
}
