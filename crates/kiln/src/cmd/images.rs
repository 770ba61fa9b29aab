//! `kiln images`: the named images, as docker lists them, filtered by
//! repository or docker's `--filter`s (see `images_filter`), in a table
//! whose columns fit their cells, or formatted by a Go template.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use kiln_image::{Image, Platform, Reference};

use super::format::Template;
use super::image::human_size;
use super::open_store;

#[derive(Args)]
pub struct ImagesArgs {
    /// Only images of this repository (`busybox`), of this name
    /// (`busybox:1.36`), or matching a pattern (`'busy*'`, `'*:1.*'`).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Print image IDs only.
    #[arg(short, long)]
    quiet: bool,
    /// Show manifest digests.
    #[arg(long)]
    digests: bool,
    /// Only images that pass this filter, as docker's (repeatable; all
    /// must pass): reference=PATTERN (`*` and `?` within a path part),
    /// dangling=true|false, label=KEY or label=KEY=VALUE, before=IMAGE,
    /// since=IMAGE (created before or after it).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
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

/// One listed name and what its image says.
struct Row {
    name: Reference,
    desc: kiln_image::Descriptor,
    id: kiln_image::Digest,
    size: u64,
    created: String,
    labels: std::collections::BTreeMap<String, String>,
}

impl Row {
    fn created_secs(&self) -> Option<i64> {
        kiln_image::time::parse_rfc3339(&self.created)
    }
}

pub fn images(root: &Path, a: ImagesArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let template = match &a.format {
        Some(f) => Some(Template::parse(f, IMAGE_FIELDS)?),
        None => None,
    };
    // A pattern is docker's reference filter; a plain name keeps its
    // meaning (a repository, or one name), full names included.
    let (filter, mut filters) = match &a.reference {
        Some(f) if f.contains(['*', '?', '[']) => (None, vec![format!("reference={f}")]),
        Some(f) => (
            Some(
                Reference::parse(f)
                    .with_context(|| format!("images {f}: not a repository name"))?,
            ),
            Vec::new(),
        ),
        None => (None, Vec::new()),
    };
    filters.extend(a.filters.iter().cloned());
    let mut rows = Vec::new();
    for (name, desc) in store.images()? {
        if let (Some(f), Some(text)) = (&filter, &a.reference)
            && !matches_filter(&name, f, text)
        {
            continue;
        }
        let (id, size, created, labels) =
            match Image::load_manifest(&store, &desc.digest, &Platform::host()) {
                Ok((img, _)) => (
                    img.id(),
                    img.layers.iter().map(|l| l.size).sum::<u64>(),
                    img.config.created.clone().unwrap_or_default(),
                    img.config.runtime().labels.clone().unwrap_or_default(),
                ),
                Err(_) => (
                    desc.digest.clone(),
                    desc.size,
                    String::new(),
                    Default::default(),
                ),
            };
        rows.push(Row {
            name,
            desc,
            id,
            size,
            created,
            labels,
        });
    }
    let filters = super::images_filter::Filters::parse(&filters, &store)?;
    rows.retain(|r| filters.keep(&r.name, &r.labels, r.created_secs()));
    if a.quiet {
        for r in &rows {
            outln!("{}", r.id.short());
        }
        return Ok(());
    }
    if a.json {
        for r in &rows {
            let v = serde_json::json!({
                "name": r.name.to_string(), "id": r.id.to_string(), "digest": r.desc.digest.to_string(),
                "size": r.size, "created": r.created,
            });
            outln!("{v}");
        }
        return Ok(());
    }
    if let Some(t) = template {
        let mut lines: Vec<String> = t.header(image_header).into_iter().collect();
        let now = now_secs();
        for r in &rows {
            let familiar = r.name.familiar();
            let repo = familiar
                .rsplit_once(':')
                .map_or(familiar.as_str(), |(r, _)| r);
            let at = r.created_secs();
            let row = serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": at.map_or_else(String::new, docker_time),
                "CreatedSince": at.map_or_else(|| "N/A".to_string(), |t| since(now - t)),
                "Digest": r.desc.annotations.get(kiln_image::store::REGISTRY_DIGEST).map_or("<none>", String::as_str),
                "ID": r.id.short(),
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(r.size),
                "Tag": r.name.tag().unwrap_or("<none>"),
                "UniqueSize": "N/A",
                "VirtualSize": human_size(r.size),
            });
            lines.push(t.render(&row)?);
        }
        if t.is_table() {
            // A cell may hold a newline (`\n` in the template): align
            // what is printed, line by line.
            let split: Vec<String> = lines
                .iter()
                .flat_map(|l| l.lines())
                .map(String::from)
                .collect();
            lines = super::format::align(&split);
        }
        for l in &lines {
            outln!("{l}");
        }
        return Ok(());
    }
    let mut lines = vec![if a.digests {
        "REPOSITORY\tTAG\tDIGEST\tIMAGE ID\tCREATED\tSIZE".to_string()
    } else {
        "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE".to_string()
    }];
    for r in &rows {
        let familiar = r.name.familiar();
        let repo = familiar
            .rsplit_once(':')
            .map_or(familiar.as_str(), |(r, _)| r);
        let tag = r.name.tag().unwrap_or("<none>");
        let (id, created, size) = (r.id.short(), &r.created, human_size(r.size));
        if a.digests {
            // As docker: the digest a registry knows, once pulled or pushed.
            let digest = r
                .desc
                .annotations
                .get(kiln_image::store::REGISTRY_DIGEST)
                .map_or("<none>", String::as_str);
            lines.push(format!("{repo}\t{tag}\t{digest}\t{id}\t{created}\t{size}"));
        } else {
            lines.push(format!("{repo}\t{tag}\t{id}\t{created}\t{size}"));
        }
    }
    for l in super::format::align(&lines) {
        outln!("{l}");
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
