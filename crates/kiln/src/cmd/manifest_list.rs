//! `kiln manifest create/add/annotate/remove/inspect/push/rm`: indexes
//! (manifest lists) in the store, with podman's verbs. An index is a blob
//! in the store tagged with the list's name; the images it lists are
//! brought into the store first (from any location), so the index is
//! written and tagged last and a failure leaves nothing half-made. The
//! edits themselves are `kiln_image::index_edit`. `kiln manifest REF`
//! without a verb is crane's (the registry's manifest, in `registry.rs`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kiln_image::index_edit::{self, EntryEdit};
use kiln_image::store_io::StoreSink;
use kiln_image::transport::{CopyOptions, RawManifest, copy};
use kiln_image::{AnyManifest, Descriptor, Digest, ImageConfig, Index, Platform, Reference, Store};

use super::registry::NetOpts;
use super::transport::{Env, Location, open_sink, open_source, open_source_to};

#[derive(Debug, Subcommand)]
pub enum ManifestVerb {
    /// Make a list of the given images (an index) in the store
    Create(CreateArgs),
    /// Add an image to a list
    Add(AddArgs),
    /// Set an entry's platform or annotations (or, with --index, the list's)
    Annotate(AnnotateArgs),
    /// Take an entry out of a list
    Remove(RemoveArgs),
    /// Print a list (or any image's top manifest) as JSON
    Inspect(InspectListArgs),
    /// Push a list and every image it lists
    Push(PushListArgs),
    /// Remove lists from the store (the images stay)
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct Pick {
    /// With an index, add every image in it (default: the --platform one)
    #[arg(long)]
    pub all: bool,
    /// With an index, the image to add (default: the host's platform)
    #[arg(long)]
    pub platform: Option<String>,
    /// An annotation on the new entries, KEY=VALUE
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The list's name in the store
    pub list: String,
    /// Images to list: store NAMEs or any location
    pub images: Vec<String>,
    /// Replace a list of that name if there is one
    #[arg(long)]
    pub amend: bool,
    #[command(flatten)]
    pub pick: Pick,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub list: String,
    /// The image: a store NAME or any location
    pub image: String,
    /// The entry's OS, instead of the image config's
    #[arg(long)]
    pub os: Option<String>,
    /// The entry's architecture
    #[arg(long)]
    pub arch: Option<String>,
    /// The entry's architecture variant
    #[arg(long)]
    pub variant: Option<String>,
    #[command(flatten)]
    pub pick: Pick,
}

#[derive(Debug, Args)]
pub struct AnnotateArgs {
    pub list: String,
    /// The entry: its digest, or an image in the store
    pub entry: Option<String>,
    #[arg(long)]
    pub os: Option<String>,
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long)]
    pub variant: Option<String>,
    /// KEY=VALUE sets, KEY- removes
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Annotate the list itself, not an entry
    #[arg(long)]
    pub index: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub list: String,
    /// The entry's digest
    pub digest: String,
}

#[derive(Debug, Args)]
pub struct InspectListArgs {
    /// A list in the store, or any location
    pub list: String,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct PushListArgs {
    pub list: String,
    /// Where: docker://REF (or a bare registry reference), oci:DIR, ...
    pub dest: String,
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub lists: Vec<String>,
}

pub fn run(verb: ManifestVerb) -> Result<()> {
    let root = kiln_image::store::default_root();
    let store = super::open_store(&root)?;
    match verb {
        ManifestVerb::Create(a) => create(&store, a),
        ManifestVerb::Add(a) => add(&store, a),
        ManifestVerb::Annotate(a) => annotate(&store, a),
        ManifestVerb::Remove(a) => {
            let (name, index) = load_list(&store, &a.list)?;
            let digest: Digest = a.digest.parse().context("the entry's digest")?;
            let index = index_edit::remove(index, &digest)?;
            save_list(&store, &name, &index)
        }
        ManifestVerb::Inspect(a) => inspect(&store, a),
        ManifestVerb::Push(a) => push(a),
        ManifestVerb::Rm(a) => {
            for l in &a.lists {
                let (name, _) = load_list(&store, l)?;
                store.untag(&name)?;
                outln!("{l}");
            }
            Ok(())
        }
    }
}

/// The list `name` in the store and its index; an image is refused.
fn load_list(store: &Store, name: &str) -> Result<(Reference, Index)> {
    let desc = store
        .resolve(name)
        .with_context(|| format!("no list {name} in the store"))?;
    let raw = RawManifest {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        bytes: store.read_blob(&desc.digest)?,
    };
    let index = index_edit::parse(&raw).with_context(|| name.to_string())?;
    Ok((Reference::parse(name)?, index))
}

/// Writes the index and then tags it: the name moves last.
fn save_list(store: &Store, name: &Reference, index: &Index) -> Result<()> {
    let raw = index_edit::encode(index)?;
    store.put_blob(&raw.bytes)?;
    store.tag(name, &raw.descriptor())?;
    outln!("{}", raw.digest);
    Ok(())
}

fn key_values(flags: &[String]) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for f in flags {
        match f.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                set.insert(k.to_string(), v.to_string());
            }
            _ => match f.strip_suffix('-') {
                Some(k) if !k.is_empty() => remove.push(k.to_string()),
                _ => bail!("--annotation {f:?}: expected KEY=VALUE, or KEY- to remove KEY"),
            },
        }
    }
    Ok((set, remove))
}

/// The entries `image` makes: brought into the store (untagged) unless
/// it is there, then its manifest with its config's platform, or the
/// entries of an index (all, or the one for the platform).
fn entries_of(store: &Store, env: &Env, image: &str, pick: &Pick) -> Result<Vec<Descriptor>> {
    let platform = match &pick.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let loc = Location::parse(image)?;
    let top = match &loc {
        Location::Store(name) => {
            let d = store.resolve(name)?;
            RawManifest {
                media_type: d.media_type.clone(),
                bytes: store.read_blob(&d.digest)?,
                digest: d.digest,
            }
        }
        _ => {
            let src = open_source(&loc, env)?;
            let opts = CopyOptions {
                platform: (!pick.all).then(|| platform.clone()),
                ..CopyOptions::default()
            };
            copy(src.as_ref(), &StoreSink::new(store, None), &opts)?
        }
    };
    let (set, _) = key_values(&pick.annotation)?;
    let mut entries = match top.parse()? {
        AnyManifest::Manifest(m) => {
            let config: ImageConfig = store.get_json(&m.config.digest)?;
            vec![index_edit::entry(&top, &config)]
        }
        AnyManifest::Index(index) if pick.all => index.manifests,
        AnyManifest::Index(index) => vec![index.select(&platform).cloned().with_context(|| {
            format!(
                "{image} has no image for {platform}; it has {} (or add them all with --all)",
                kiln_image::manifest::platforms_of(&index)
            )
        })?],
    };
    for e in &mut entries {
        e.annotations.extend(set.clone());
    }
    Ok(entries)
}

fn create(store: &Store, a: CreateArgs) -> Result<()> {
    let name = Reference::parse(&a.list).with_context(|| format!("list name {:?}", a.list))?;
    if !a.amend && store.resolve(&a.list).is_ok() {
        bail!(
            "{} exists already: use --amend to replace it, or `kiln manifest add`",
            a.list
        );
    }
    let client = a.pick.net.client()?;
    let env = Env::new(&client, store.root().to_path_buf());
    let mut index = index_edit::empty();
    for image in &a.images {
        for e in entries_of(store, &env, image, &a.pick).with_context(|| image.clone())? {
            index = index_edit::add(index, e);
        }
    }
    save_list(store, &name, &index)
}

fn platform_flags(
    base: Option<&Platform>,
    os: &Option<String>,
    arch: &Option<String>,
    variant: &Option<String>,
) -> Option<Platform> {
    if os.is_none() && arch.is_none() && variant.is_none() {
        return None;
    }
    let mut p = base.cloned().unwrap_or_else(Platform::host);
    if let Some(o) = os {
        p.os = o.clone();
    }
    if let Some(a) = arch {
        p.architecture = a.clone();
    }
    if let Some(v) = variant {
        p.variant = Some(v.clone());
    }
    Some(p)
}

fn add(store: &Store, a: AddArgs) -> Result<()> {
    let (name, mut index) = load_list(store, &a.list)?;
    let client = a.pick.net.client()?;
    let env = Env::new(&client, store.root().to_path_buf());
    let entries = entries_of(store, &env, &a.image, &a.pick).with_context(|| a.image.clone())?;
    for mut e in entries {
        if let Some(p) = platform_flags(e.platform.as_ref(), &a.os, &a.arch, &a.variant) {
            e.platform = Some(p);
        }
        index = index_edit::add(index, e);
    }
    save_list(store, &name, &index)
}

fn annotate(store: &Store, a: AnnotateArgs) -> Result<()> {
    let (name, mut index) = load_list(store, &a.list)?;
    let (set, remove) = key_values(&a.annotation)?;
    if a.index {
        for k in &remove {
            index.annotations.remove(k);
        }
        index.annotations.extend(set);
        return save_list(store, &name, &index);
    }
    let Some(entry) = &a.entry else {
        bail!("say which entry (its digest), or --index for the list itself");
    };
    let digest: Digest = match entry.parse() {
        Ok(d) => d,
        Err(_) => {
            store
                .resolve(entry)
                .with_context(|| format!("{entry}: not a digest nor an image in the store"))?
                .digest
        }
    };
    let current = index
        .manifests
        .iter()
        .find(|d| d.digest == digest)
        .and_then(|d| d.platform.clone());
    let edit = EntryEdit {
        platform: platform_flags(current.as_ref(), &a.os, &a.arch, &a.variant),
        set,
        remove,
    };
    let index = index_edit::annotate(index, &digest, &edit)?;
    save_list(store, &name, &index)
}

fn inspect(store: &Store, a: InspectListArgs) -> Result<()> {
    let bytes = match store.resolve(&a.list) {
        Ok(d) => store.read_blob(&d.digest)?,
        Err(_) => {
            let client = a.net.client()?;
            let env = Env::new(&client, store.root().to_path_buf());
            let loc = Location::parse_for_copy(&a.list)?;
            open_source(&loc, &env)
                .and_then(|s| Ok(s.top()?))
                .with_context(|| format!("inspect {}", a.list))?
                .bytes
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).context("the manifest")?;
    outln!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn push(a: PushListArgs) -> Result<()> {
    let client = a.net.client()?;
    let env = Env::new(&client, kiln_image::store::default_root());
    let src_loc = Location::Store(a.list.clone());
    let dst = Location::parse_for_copy(&a.dest)?;
    let run = || -> Result<Digest> {
        let src = open_source_to(&src_loc, &env, &dst)?;
        let sink = open_sink(&dst, &env, Some(&src_loc))?;
        let opts = CopyOptions {
            jobs: a.jobs.max(1),
            ..CopyOptions::default()
        };
        Ok(copy(src.as_ref(), sink.as_ref(), &opts)?.digest)
    };
    let digest = run().with_context(|| format!("push {} to {}", a.list, a.dest))?;
    outln!("{digest}");
    Ok(())
}
