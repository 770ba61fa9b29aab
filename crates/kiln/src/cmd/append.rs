//! `kiln append` (one new layer per `--tar`, `--dir` or `--file`) and
//! `kiln flatten` (every layer squashed into one). Both build their new
//! layer in the store's scratch space first, so that bad input fails
//! before anything is written to the destination.
//!
//! Options that shape a layer (`--prefix`, `--chown`, `--chmod`) apply to
//! the `--tar`/`--dir`/`--file` before them on the command line: clap
//! gives every value its position, and [`AppendArgs`] pairs them up.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{ArgMatches, Args, FromArgMatches};
use kiln_image::History;
use kiln_image::layer::{
    self, Entry, EntryKind, LayerInfo, LayerOptions, WalkOptions, walk_dir, write_entries_layer,
};
use kiln_image::rewrite::Rewrite;

use super::archive::LayerCompression;
use super::surgery::{Surgery, Target, platform_of, scratch};
use super::{created_now, source_date_epoch};

#[derive(Debug, Args)]
pub struct AppendFlags {
    /// The image: a store NAME or any location (see -t)
    pub image: String,
    /// Add this tar (plain, gzip or zstd) as a layer, its members as they
    /// are; a member named with `..` is refused
    #[arg(long, value_name = "FILE")]
    pub tar: Vec<PathBuf>,
    /// Add the contents of this directory as a layer (owned by 0:0 unless
    /// --chown follows)
    #[arg(long, value_name = "DIR")]
    pub dir: Vec<PathBuf>,
    /// Add one host file at DEST (a DEST ending in `/` keeps the name)
    #[arg(long, value_name = "SRC:DEST")]
    pub file: Vec<String>,
    /// For the --dir before it: where its contents go in the image
    #[arg(long, value_name = "PATH")]
    pub prefix: Vec<String>,
    /// For the --dir or --file before it: the owner (numeric UID:GID)
    #[arg(long, value_name = "UID:GID")]
    pub chown: Vec<String>,
    /// For the --dir or --file before it: the mode of every file and
    /// directory (octal)
    #[arg(long, value_name = "MODE")]
    pub chmod: Vec<String>,
    /// Compression of the new layers
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: LayerCompression,
    #[command(flatten)]
    pub target: Target,
}

/// What one new layer is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSource {
    Tar(PathBuf),
    Dir(PathBuf),
    File(PathBuf, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub source: LayerSource,
    pub prefix: Option<String>,
    pub owner: Option<(u64, u64)>,
    pub mode: Option<u32>,
}

pub struct AppendArgs {
    pub flags: AppendFlags,
    pub layers: Vec<LayerSpec>,
}

impl Args for AppendArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        AppendFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        AppendFlags::augment_args_for_update(cmd)
    }
}

impl FromArgMatches for AppendArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = AppendFlags::from_arg_matches(m)?;
        let layers = layer_specs(m, &flags)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, e))?;
        Ok(AppendArgs { flags, layers })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

fn indices(m: &ArgMatches, id: &str) -> Vec<usize> {
    m.indices_of(id).map(|i| i.collect()).unwrap_or_default()
}

/// The layer arguments in command-line order, each with the options that
/// follow it.
fn layer_specs(m: &ArgMatches, f: &AppendFlags) -> Result<Vec<LayerSpec>, String> {
    let mut at: Vec<(usize, LayerSpec)> = Vec::new();
    let spec = |source| LayerSpec {
        source,
        prefix: None,
        owner: None,
        mode: None,
    };
    for (i, p) in indices(m, "tar").into_iter().zip(&f.tar) {
        at.push((i, spec(LayerSource::Tar(p.clone()))));
    }
    for (i, p) in indices(m, "dir").into_iter().zip(&f.dir) {
        at.push((i, spec(LayerSource::Dir(p.clone()))));
    }
    for (i, s) in indices(m, "file").into_iter().zip(&f.file) {
        let (src, dest) = s
            .split_once(':')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| format!("--file {s:?}: expected SRC:DEST"))?;
        at.push((i, spec(LayerSource::File(src.into(), dest.into()))));
    }
    if at.is_empty() {
        return Err("give at least one --tar, --dir or --file".into());
    }
    at.sort_by_key(|(i, _)| *i);
    let owner_of = |flag: &str, i: usize| -> Result<usize, String> {
        at.iter()
            .rposition(|(j, _)| *j < i)
            .ok_or_else(|| format!("--{flag} must follow the --tar, --dir or --file it is for"))
    };
    let mut specs: Vec<LayerSpec> = at.iter().map(|(_, s)| s.clone()).collect();
    for (i, p) in indices(m, "prefix").into_iter().zip(&f.prefix) {
        let k = owner_of("prefix", i)?;
        if !matches!(specs[k].source, LayerSource::Dir(_)) {
            return Err("--prefix is for a --dir".into());
        }
        specs[k].prefix = Some(p.clone());
    }
    for (i, o) in indices(m, "chown").into_iter().zip(&f.chown) {
        let k = owner_of("chown", i)?;
        let bad = || format!("--chown {o:?}: expected numeric UID:GID");
        let (u, g) = o.split_once(':').ok_or_else(bad)?;
        specs[k].owner = Some((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?));
    }
    for (i, o) in indices(m, "chmod").into_iter().zip(&f.chmod) {
        let k = owner_of("chmod", i)?;
        let mode = u32::from_str_radix(o, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("--chmod {o:?}: expected an octal mode"))?;
        specs[k].mode = Some(mode);
    }
    for s in &specs {
        if matches!(s.source, LayerSource::Tar(_)) && (s.owner.is_some() || s.mode.is_some()) {
            return Err(
                "--chown and --chmod are for --dir and --file: a --tar is added as it is".into(),
            );
        }
    }
    Ok(specs)
}

fn describe(s: &LayerSpec) -> String {
    match &s.source {
        LayerSource::Tar(p) => format!("kiln append --tar {}", p.display()),
        LayerSource::Dir(p) => match &s.prefix {
            Some(x) => format!("kiln append --dir {} --prefix {x}", p.display()),
            None => format!("kiln append --dir {}", p.display()),
        },
        LayerSource::File(src, dest) => format!("kiln append --file {}:{dest}", src.display()),
    }
}

/// `/app/` → `app`; the layer root itself is empty.
fn rel_path(p: &str) -> Result<PathBuf> {
    let rel: PathBuf = Path::new(p)
        .components()
        .filter(|c| {
            !matches!(
                c,
                std::path::Component::RootDir | std::path::Component::CurDir
            )
        })
        .collect();
    if rel
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        bail!("{p:?}: a path in the image may not contain `..`");
    }
    Ok(rel)
}

/// The entries of a --dir or --file layer.
fn entries_of(s: &LayerSpec) -> Result<Vec<Entry>> {
    let (uid, gid) = s.owner.unwrap_or((0, 0));
    let shape = |mut e: Entry| -> Entry {
        e.uid = uid;
        e.gid = gid;
        if let (Some(m), EntryKind::File { .. } | EntryKind::Dir) = (s.mode, &e.kind) {
            e.mode = m;
        }
        e
    };
    match &s.source {
        LayerSource::Dir(dir) => {
            let md = std::fs::metadata(dir).with_context(|| format!("--dir {}", dir.display()))?;
            if !md.is_dir() {
                bail!("--dir {}: not a directory", dir.display());
            }
            let prefix = rel_path(s.prefix.as_deref().unwrap_or("/"))?;
            let mut out = Vec::new();
            if !prefix.as_os_str().is_empty() {
                use std::os::unix::fs::MetadataExt;
                let top = Entry::dir(&prefix)
                    .with_mode(md.mode() & 0o7777)
                    .with_mtime(md.mtime());
                out.push(shape(top));
            }
            for mut e in walk_dir(dir, &WalkOptions::default())? {
                e.path = prefix.join(&e.path);
                if let EntryKind::Hardlink { target } = &mut e.kind {
                    *target = prefix.join(&*target);
                }
                out.push(shape(e));
            }
            Ok(out)
        }
        LayerSource::File(src, dest) => {
            use std::os::unix::fs::MetadataExt;
            let ctx = || format!("--file {}:{dest}", src.display());
            let real = std::fs::canonicalize(src).with_context(ctx)?;
            let md = std::fs::metadata(&real).with_context(ctx)?;
            if !md.is_file() {
                bail!("{}: not a regular file", ctx());
            }
            let mut path = rel_path(dest).with_context(ctx)?;
            if dest.ends_with('/') || path.as_os_str().is_empty() {
                path = path.join(real.file_name().context("the file has no name")?);
            }
            let e = Entry::file_host(path, real, md.len())
                .with_mode(md.mode() & 0o7777)
                .with_mtime(md.mtime());
            Ok(vec![shape(e)])
        }
        LayerSource::Tar(_) => unreachable!("tars are copied, not listed"),
    }
}

/// Writes one layer to `out`.
fn write_layer(s: &LayerSpec, opts: &LayerOptions, out: &Path) -> Result<LayerInfo> {
    let file = std::fs::File::create(out)?;
    let sink = std::io::BufWriter::new(file);
    let (sink, info) = match &s.source {
        LayerSource::Tar(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("--tar {}", p.display()))?;
            let (_, tar) = layer::open_layer(std::io::BufReader::new(f))?;
            layer::write_tar_layer(tar, opts, sink)?
        }
        _ => write_entries_layer(entries_of(s)?, opts, sink)?,
    };
    sink.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(info)
}

pub fn append(a: AppendArgs) -> Result<()> {
    let f = &a.flags;
    let s = Surgery::new(&f.image, &f.target, true)?;
    let run = || -> Result<()> {
        let epoch = source_date_epoch()?;
        let opts = LayerOptions {
            compression: f.compression.into(),
            source_date_epoch: epoch,
            ..LayerOptions::default()
        };
        let env = s.env();
        let src = s.source(&env)?;
        let mut rw = Rewrite::load(src.as_ref(), platform_of(&f.target)?.as_ref())?;
        let tmp = scratch(&s.root)?;
        let created = created_now(epoch);
        for (n, spec) in a.layers.iter().enumerate() {
            let path = tmp.path().join(format!("layer-{n}"));
            let info = write_layer(spec, &opts, &path).with_context(|| describe(spec))?;
            let history = History {
                created: Some(created.clone()),
                created_by: Some(describe(spec)),
                ..History::default()
            };
            rw.append_layer(path, &info, history);
        }
        rw.image.config.created = Some(created);
        let result = rw.finish()?;
        s.write(&env, &result, &f.target)?;
        Ok(())
    };
    run().with_context(|| format!("append {}", f.image))
}

#[derive(Debug, Args)]
pub struct FlattenArgs {
    /// The image: a store NAME or any location (see -t)
    pub image: String,
    /// Compression of the flattened layer
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: LayerCompression,
    #[command(flatten)]
    pub target: Target,
}

pub fn flatten(a: FlattenArgs) -> Result<()> {
    let s = Surgery::new(&a.image, &a.target, true)?;
    let run = || -> Result<()> {
        let epoch = source_date_epoch()?;
        let opts = LayerOptions {
            compression: a.compression.into(),
            source_date_epoch: epoch,
            ..LayerOptions::default()
        };
        let env = s.env();
        let src = s.source(&env)?;
        let mut rw = Rewrite::load(src.as_ref(), platform_of(&a.target)?.as_ref())?;
        let tmp = scratch(&s.root)?;
        let n = rw.image.layers.len();
        let history = History {
            created: Some(created_now(epoch)),
            created_by: Some("kiln flatten".into()),
            comment: Some(format!("{n} layers flattened into one")),
            ..History::default()
        };
        let warnings = rw.flatten(tmp.path(), tmp.path().join("flat"), &opts, history)?;
        for w in warnings {
            eprintln!("warning: {}: {}", w.entry, w.message);
        }
        let result = rw.finish()?;
        s.write(&env, &result, &a.target)?;
        Ok(())
    };
    run().with_context(|| format!("flatten {}", a.image))
}
