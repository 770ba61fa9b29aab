//! `kiln diff A B` and `kiln layers IMAGE`: what images hold, read layer by
//! layer from any location without unpacking (`kiln_image::contents`).
//! A table by default, JSON with `--format json`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kiln_image::Image;
use kiln_image::Platform;
use kiln_image::contents::{Change, FileMeta, LayerSummary, diff_images, layer_summaries};
use kiln_image::rewrite::Rewrite;
use kiln_image::transport::ImageSource;

use super::image::human_size;
use super::registry::NetOpts;
use super::transport::{Env, Location, open_source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, sizes for humans
    Table,
    /// One JSON document, sizes in bytes
    Json,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first image: a store NAME or any location (docker://REF,
    /// oci:DIR:TAG, oci-archive:FILE:TAG, docker-archive:FILE:REF; the tag
    /// or reference may be left out)
    pub a: String,
    /// The second image
    pub b: String,
    /// With an index, the platform's image (default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct LayersArgs {
    /// The image: a store NAME or any location (see `kiln diff`)
    pub image: String,
    /// With an index, the platform's image (default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub net: NetOpts,
}

fn platform(p: &Option<String>) -> Result<Platform> {
    Ok(match p {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    })
}

pub fn diff_cmd(a: DiffArgs) -> Result<()> {
    let client = a.net.client()?;
    let env = Env::new(&client, kiln_image::store::default_root());
    let platform = platform(&a.platform)?;
    let open = |name: &str| -> Result<Box<dyn ImageSource + '_>> {
        open_source(&Location::parse(name)?, &env).with_context(|| format!("reading {name}"))
    };
    let (src_a, src_b) = (open(&a.a)?, open(&a.b)?);
    let load = |src: &dyn ImageSource, name: &str| -> Result<Image> {
        Ok(Rewrite::load(src, Some(&platform))
            .with_context(|| format!("reading {name}"))?
            .image)
    };
    let (img_a, img_b) = (load(src_a.as_ref(), &a.a)?, load(src_b.as_ref(), &a.b)?);
    let changes = diff_images(src_a.as_ref(), &img_a, src_b.as_ref(), &img_b)
        .with_context(|| format!("diff {} {}", a.a, a.b))?;
    match a.format {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&changes)?),
        OutputFormat::Table => print_diff(&changes),
    }
    Ok(())
}

fn owner(m: &FileMeta) -> String {
    format!("{}:{}", m.uid, m.gid)
}

/// One line per path: the letter `docker diff` prints, the path, and the
/// second image's type, size, mode and owner (the first's for a removal).
fn print_diff(changes: &[Change]) {
    let rows: Vec<[String; 6]> = changes
        .iter()
        .map(|c| {
            let m = c.after.as_ref().or(c.before.as_ref()).expect("one side");
            [
                c.change.letter().to_string(),
                c.path.clone(),
                m.kind.as_str().to_string(),
                human_size(m.size),
                format!("{:04o}", m.mode),
                owner(m),
            ]
        })
        .collect();
    print_table(["", "PATH", "TYPE", "SIZE", "MODE", "OWNER"], &rows);
}

pub fn layers_cmd(a: LayersArgs) -> Result<()> {
    let client = a.net.client()?;
    let env = Env::new(&client, kiln_image::store::default_root());
    let platform = platform(&a.platform)?;
    let run = || -> Result<Vec<LayerSummary>> {
        let src = open_source(&Location::parse(&a.image)?, &env)?;
        let rw = Rewrite::load(src.as_ref(), Some(&platform))?;
        Ok(layer_summaries(src.as_ref(), &rw.image)?)
    };
    let layers = run().with_context(|| format!("layers {}", a.image))?;
    match a.format {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&layers)?),
        OutputFormat::Table => {
            let rows: Vec<[String; 6]> = layers
                .iter()
                .map(|l| {
                    [
                        l.index.to_string(),
                        human_size(l.size),
                        human_size(l.content_size),
                        l.files.to_string(),
                        human_size(l.hidden),
                        l.created_by
                            .clone()
                            .or_else(|| l.comment.clone())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                ["LAYER", "SIZE", "CONTENT", "FILES", "HIDDEN", "CREATED BY"],
                &rows,
            );
            let hidden: u64 = layers.iter().map(|l| l.hidden).sum();
            outln!("hidden by upper layers: {}", human_size(hidden));
        }
    }
    Ok(())
}

/// Columns padded to their widest cell; the last one is not padded.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut width = header.map(|h| h.len().max(1));
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    outln!("{}", line(header.to_vec()));
    for r in rows {
        outln!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
