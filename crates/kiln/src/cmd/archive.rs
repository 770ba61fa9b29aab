//! Commands that move images between the store and files: import, save,
//! load, export.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
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
    /// The images to save (names or IDs), all into one archive.
    #[arg(required = true, value_name = "IMAGE")]
    names: Vec<String>,
    /// Where to write it (default, or `-`: standard output, which must not
    /// be a terminal).
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "docker-archive")]
    format: SaveFormat,
    /// For an image with several platforms, the one to save in a
    /// docker-archive (default: this host's).
    #[arg(long)]
    platform: Option<String>,
}

/// Standard output for an archive, refused when it is a terminal (as
/// docker refuses): tar bytes there are no use and can upset the terminal.
pub fn stdout_for_archive(what: &str) -> anyhow::Result<Box<dyn Write + Send>> {
    if io::stdout().is_terminal() {
        bail!("refusing to write {what} to a terminal: use -o FILE or redirect standard output");
    }
    Ok(Box::new(crate::stdout::Stream))
}

/// The store's name for what the user typed, when it is one: an image ID
/// or digest names no tag to record in the archive.
fn stored_name(store: &Store, name: &str) -> anyhow::Result<Option<Reference>> {
    let Ok(r) = Reference::parse(name) else {
        return Ok(None);
    };
    Ok(store
        .images()?
        .into_iter()
        .any(|(n, _)| n == r)
        .then_some(r))
}

pub fn save(root: &Path, a: SaveArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let output = a.output.filter(|o| o.as_os_str() != "-");
    let dest = output.as_ref().map_or_else(
        || "standard output".to_string(),
        |o| o.display().to_string(),
    );
    let mut opts = CopyOptions::default();
    if a.format == SaveFormat::DockerArchive {
        opts.platform = Some(match &a.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        });
    }
    // Resolve every name first: a typo fails before anything is written.
    let mut images = Vec::new();
    for n in &a.names {
        let src = StoreSource::new(&store, n).with_context(|| format!("save {n}"))?;
        images.push((n, src, stored_name(&store, n)?));
    }
    let kind_of = |name: &Option<Reference>| match a.format {
        SaveFormat::DockerArchive => ArchiveKind::Docker {
            repo_tags: name.iter().map(|n| n.familiar()).collect(),
        },
        _ => ArchiveKind::Oci {
            tag: name.as_ref().and_then(|n| n.tag().map(str::to_string)),
            image_name: name.as_ref().map(|n| n.to_string()),
        },
    };
    if a.format == SaveFormat::OciDir {
        let Some(dir) = &output else {
            bail!("an OCI layout is a directory: --format oci-dir needs -o DIR");
        };
        for (n, src, name) in &images {
            let tag = name.as_ref().and_then(|r| r.tag());
            let sink =
                LayoutSink::create(dir, tag)?.with_image_name(name.as_ref().map(|r| r.to_string()));
            transport::copy(src, &sink, &opts).with_context(|| format!("save {n} to {dest}"))?;
        }
        return Ok(());
    }
    let first = kind_of(&images[0].2);
    let sink = match &output {
        Some(o) => ArchiveSink::create(o, first)?,
        None => ArchiveSink::to_writer(stdout_for_archive("an archive")?, first)?,
    }
    .several();
    let write = || -> anyhow::Result<()> {
        for (n, src, name) in &images {
            sink.name_next(kind_of(name));
            transport::copy(src, &sink, &opts).with_context(|| format!("save {n} to {dest}"))?;
        }
        sink.close().with_context(|| format!("save to {dest}"))
    };
    crate::stdout::pipe_closed(write())
}

#[derive(Args)]
pub struct LoadArgs {
    /// A docker-archive, OCI archive or OCI layout directory (default, or
    /// `-`: an archive on standard input).
    #[arg(short, long)]
    input: Option<PathBuf>,
}

/// A file in the store's temp directory, removed when dropped.
struct SpooledInput(PathBuf);

impl Drop for SpooledInput {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn load(root: &Path, a: LoadArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    // An archive is read by offset, member by member: one on standard
    // input is spooled to the store's temp directory first (prune cannot
    // remove it while this process holds the store).
    let mut _spool = None;
    let input = match a.input.filter(|i| i.as_os_str() != "-") {
        Some(i) => i,
        None => {
            if io::stdin().is_terminal() {
                bail!("load: no archive on standard input: use -i FILE or redirect standard input");
            }
            let path = store
                .dir("tmp")?
                .join(format!("load-{}", kiln_image::store::temp_name()));
            let spool = SpooledInput(path.clone());
            let mut f =
                File::create(&path).with_context(|| format!("create {}", path.display()))?;
            io::copy(&mut io::stdin().lock(), &mut f).context("load: reading standard input")?;
            _spool = Some(spool);
            path
        }
    };
    let shown = if _spool.is_some() {
        "standard input".to_string()
    } else {
        input.display().to_string()
    };
    let ctx = || format!("load {shown}");
    if input.is_dir() {
        for (desc, name) in LayoutSource::entries(&input).with_context(ctx)? {
            let src = LayoutSource::from_descriptor(&input, desc);
            load_one(&store, &src, name, &[])?;
        }
        return Ok(());
    }
    match DockerArchiveSource::list(&input) {
        Ok(entries) => {
            for i in 0..entries.len() {
                let src =
                    DockerArchiveSource::open(&input, Some(&format!("@{i}"))).with_context(ctx)?;
                let tags: Vec<Reference> = src
                    .repo_tags()
                    .iter()
                    .filter_map(|t| Reference::parse(t).ok())
                    .collect();
                load_one(&store, &src, tags.first().cloned(), &tags)?;
            }
        }
        Err(_) => {
            for (desc, name) in OciArchiveSource::entries(&input).with_context(ctx)? {
                let src = OciArchiveSource::open_descriptor(&input, desc).with_context(ctx)?;
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
    // One line per name, as docker prints them.
    match name {
        Some(n) => {
            outln!("Loaded image: {}", n.familiar());
            for extra in more.iter().skip(1) {
                outln!("Loaded image: {}", extra.familiar());
            }
        }
        None => outln!("Loaded image: {}", top.digest),
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    name: String,
    /// The tar to write (default, or `-`: standard output, which must not
    /// be a terminal).
    #[arg(short, long)]
    output: Option<PathBuf>,
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
    let Some(output) = a.output.filter(|o| o.as_os_str() != "-") else {
        let out = io::BufWriter::new(stdout_for_archive("a filesystem tar")?);
        let flattened = layer::flatten(layers, &scratch, &opts, out)
            .map_err(anyhow::Error::from)
            .and_then(|(mut out, _, warnings)| {
                out.flush()?;
                Ok(warnings)
            });
        let warnings = crate::stdout::pipe_closed(flattened.with_context(ctx))?;
        for w in warnings {
            eprintln!("warning: {}: {}", w.entry, w.message);
        }
        return Ok(());
    };
    let tmp = output.with_extension("tmp-export");
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
            std::fs::rename(&tmp, &output).with_context(ctx)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e).with_context(ctx)
        }
    }
}
