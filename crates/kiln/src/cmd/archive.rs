//! Commands that move images between the store and files: import, save,
//! load, export.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_image::archive::{ArchiveKind, ArchiveSink, DockerArchiveSource, OciArchiveSource};
use kiln_image::layer::{self, LayerOptions, LayerWriter};
use kiln_image::layout::{LayoutSink, LayoutSource};
use kiln_image::media::Compression;
use kiln_image::store_io::{StoreSink, StoreSource};
use kiln_image::transport::{self, CopyOptions, ImageSource};
use kiln_image::{Descriptor, History, Image, NewLayer, Platform, Reference, Store};

use super::{created_now, open_store, source_date_epoch};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayerCompression {
    Gzip,
    Zstd,
    None,
}

impl From<LayerCompression> for Compression {
    fn from(c: LayerCompression) -> Compression {
        match c {
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
            LayerCompression::None => Compression::None,
        }
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// A root filesystem: a tar (plain, gzip or zstd), a directory, or `-`
    /// for a tar on standard input.
    source: String,
    /// The name to give the image.
    name: String,
    /// A Dockerfile instruction to apply to the config (CMD, ENV, ...).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// A comment for the history entry.
    #[arg(short, long)]
    message: Option<String>,
    /// The platform to record (default: this host's).
    #[arg(long)]
    platform: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: LayerCompression,
    /// Write Docker media types instead of OCI ones.
    #[arg(long)]
    docker_format: bool,
}

pub fn import(root: &Path, a: ImportArgs) -> anyhow::Result<()> {
    let name = Reference::parse(&a.name)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let epoch = source_date_epoch()?;
    let store = open_store(root)?;
    let opts = LayerOptions {
        compression: a.compression.into(),
        source_date_epoch: epoch,
        ..LayerOptions::default()
    };
    let blob = store.blob_writer()?;
    let src_path = Path::new(&a.source);
    let (blob, info) = if a.source != "-" && src_path.is_dir() {
        layer::write_dir_layer(src_path, &opts, blob)
            .with_context(|| format!("import {}", a.source))?
    } else {
        let input: Box<dyn Read + Send> = if a.source == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(src_path).with_context(|| format!("open {}", a.source))?)
        };
        let mut input = BufReader::with_capacity(1 << 20, input);
        let magic = input
            .fill_buf()?
            .get(..4)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut tar = layer::decompress(input, layer::detect_compression(&magic))?;
        let mut lw = LayerWriter::new(blob, opts.compression, opts.level, opts.threads);
        io::copy(&mut tar, &mut lw).with_context(|| format!("import {}", a.source))?;
        lw.finish()?
    };
    blob.commit(Some(&info.digest))?;
    let media_type = kiln_image::media::Format::Oci.layer(info.compression);
    let created = created_now(epoch);
    let mut image = Image::scratch(&platform);
    if a.docker_format {
        image.format = kiln_image::media::Format::Docker;
    }
    let mut image = image
        .with_layer(
            NewLayer {
                blob: Descriptor::new(media_type, info.digest.clone(), info.size),
                diff_id: info.diff_id,
            },
            History {
                created: Some(created.clone()),
                comment: Some(
                    a.message
                        .unwrap_or_else(|| format!("Imported from {}", a.source)),
                ),
                ..History::default()
            },
        )
        .created_at(created);
    super::change::apply(&mut image.config, &a.changes)?;
    let raw = image.write(&store)?;
    store.tag(&name, &raw.descriptor())?;
    outln!("{}", image.id());
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

#[derive(Args)]
pub struct SaveArgs {
    /// The image to save.
    name: String,
    /// Where to write it.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "docker-archive")]
    format: SaveFormat,
    /// For an image with several platforms, the one to save in a
    /// docker-archive (default: this host's).
    #[arg(long)]
    platform: Option<String>,
}

pub fn save(root: &Path, a: SaveArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let src = StoreSource::new(&store, &a.name)?;
    let name = Reference::parse(&a.name).ok();
    let tag = name.as_ref().and_then(|n| n.tag().map(str::to_string));
    let full_name = name.as_ref().map(|n| n.to_string());
    let mut opts = CopyOptions::default();
    let ctx = || format!("save {} to {}", a.name, a.output.display());
    match a.format {
        SaveFormat::DockerArchive => {
            opts.platform = Some(match &a.platform {
                Some(p) => Platform::parse(p)?,
                None => Platform::host(),
            });
            let tags = name.iter().map(|n| n.familiar()).collect();
            let sink = ArchiveSink::create(&a.output, ArchiveKind::Docker { repo_tags: tags })?;
            transport::copy(&src, &sink, &opts).with_context(ctx)?;
        }
        SaveFormat::OciArchive => {
            let sink = ArchiveSink::create(
                &a.output,
                ArchiveKind::Oci {
                    tag,
                    image_name: full_name,
                },
            )?;
            transport::copy(&src, &sink, &opts).with_context(ctx)?;
        }
        SaveFormat::OciDir => {
            let sink = LayoutSink::create(&a.output, tag.as_deref())?.with_image_name(full_name);
            transport::copy(&src, &sink, &opts).with_context(ctx)?;
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LoadArgs {
    /// A docker-archive, OCI archive or OCI layout directory.
    #[arg(short, long)]
    input: PathBuf,
}

pub fn load(root: &Path, a: LoadArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let ctx = || format!("load {}", a.input.display());
    if a.input.is_dir() {
        for (desc, name) in LayoutSource::entries(&a.input).with_context(ctx)? {
            let src = LayoutSource::from_descriptor(&a.input, desc);
            load_one(&store, &src, name, &[])?;
        }
        return Ok(());
    }
    match DockerArchiveSource::list(&a.input) {
        Ok(entries) => {
            for i in 0..entries.len() {
                let src = DockerArchiveSource::open(&a.input, Some(&format!("@{i}")))
                    .with_context(ctx)?;
                let tags: Vec<Reference> = src
                    .repo_tags()
                    .iter()
                    .filter_map(|t| Reference::parse(t).ok())
                    .collect();
                load_one(&store, &src, tags.first().cloned(), &tags)?;
            }
        }
        Err(_) => {
            for (desc, name) in OciArchiveSource::entries(&a.input).with_context(ctx)? {
                let src = OciArchiveSource::open_descriptor(&a.input, desc).with_context(ctx)?;
                load_one(&store, &src, name, &[])?;
            }
        }
    }
    Ok(())
}

fn load_one(
    store: &Store,
    src: &dyn ImageSource,
    name: Option<Reference>,
    more: &[Reference],
) -> anyhow::Result<()> {
    let sink = StoreSink::new(store, name.clone());
    let top = transport::copy(src, &sink, &CopyOptions::default())?;
    for extra in more.iter().skip(1) {
        store.tag(extra, &top.descriptor())?;
    }
    match name {
        Some(n) => outln!("Loaded image: {}", n.familiar()),
        None => outln!("Loaded image: {}", top.digest),
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    name: String,
    /// The tar to write (`-` for standard output).
    #[arg(short, long)]
    output: PathBuf,
}

/// Writes the image's filesystem, with every layer applied, as one tar.
pub fn export(root: &Path, a: ExportArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let (img, _) = Image::load(&store, &a.name, &Platform::host())?;
    let layers = img
        .layers
        .iter()
        .map(|l| store.open_blob(&l.digest))
        .collect::<Result<Vec<_>, _>>()?;
    let scratch = store.dir("tmp")?;
    let opts = LayerOptions {
        compression: Compression::None,
        source_date_epoch: source_date_epoch()?,
        ..LayerOptions::default()
    };
    let ctx = || format!("export {}", a.name);
    if a.output.as_os_str() == "-" {
        let out = io::BufWriter::new(io::stdout().lock());
        layer::flatten(layers, &scratch, &opts, out).with_context(ctx)?;
        return Ok(());
    }
    let tmp = a.output.with_extension("tmp-export");
    let out = io::BufWriter::new(File::create(&tmp).with_context(ctx)?);
    match layer::flatten(layers, &scratch, &opts, out) {
        Ok((out, _, warnings)) => {
            out.into_inner()
                .map_err(|e| e.into_error())
                .with_context(ctx)?
                .sync_all()?;
            for w in warnings {
                eprintln!("warning: {}: {}", w.entry, w.message);
            }
            std::fs::rename(&tmp, &a.output).with_context(ctx)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e).with_context(ctx)
        }
    }
}
