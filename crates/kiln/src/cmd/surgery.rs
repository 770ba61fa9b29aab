//! Image surgery without a rebuild: `kiln mutate`, `rebase` and `config` here,
//! `kiln append` and `kiln flatten` in `append.rs`. Each reads an image
//! from any location (`transport.rs`), edits it with
//! `kiln_image::rewrite` (layers stay descriptors) and copies the result
//! to `-t DEST`: into the same registry, only the new config, new layers
//! and the manifest travel; base layers are found there or mounted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_build::annotate::{BASE_DIGEST, BASE_NAME};
use kiln_dockerfile::change::parse_command;
use kiln_dockerfile::stage::ImageInfo;
use kiln_image::config_edit::{ConfigEdit, apply_all};
use kiln_image::rewrite::{Rewrite, RewriteSource, Top, annotate_index, config_bytes};
use kiln_image::transport::{CopyOptions, ImageSource, copy};
use kiln_image::{Digest, Platform};
use kiln_registry::Client;

use super::registry::NetOpts;
use super::transport::{Env, Location, open_sink_mounting, open_source_to};

/// Where the edited image goes, and how it is read and written.
#[derive(Debug, Args)]
pub struct Target {
    /// Where to write the result: a store NAME or any location
    /// (docker://REF, oci:DIR:TAG, oci-archive:FILE:TAG,
    /// docker-archive:FILE:REF; the tag or reference may be left out)
    #[arg(short = 't', long = "tag", value_name = "DEST")]
    pub dest: Option<String>,
    /// With an index, edit this platform's image (os/arch[/variant]);
    /// the result is that image alone
    #[arg(long)]
    pub platform: Option<String>,
    /// Blobs transferred at once
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub net: NetOpts,
}

/// An open source and sink for one edit.
pub struct Surgery {
    pub client: Client,
    pub src_loc: Location,
    pub dst_loc: Location,
    pub root: PathBuf,
    /// More locations a registry destination may mount blobs from.
    pub also_mount: Vec<Location>,
    started: Instant,
}

impl Surgery {
    /// `dest` defaults to the image itself (as `crane mutate` overwrites
    /// the tag it read).
    pub fn new(image: &str, t: &Target, dest_required: bool) -> Result<Surgery> {
        let dest = match (&t.dest, dest_required) {
            (Some(d), _) => d.as_str(),
            (None, true) => bail!("say where the result goes with -t DEST"),
            (None, false) => {
                if names_no_tag(image) {
                    bail!("{image} is not a tag to move: say where the result goes with -t DEST");
                }
                image
            }
        };
        let src_loc = Location::parse(image)?;
        let dst_loc = Location::parse(dest)?;
        if let (Some(a), Some(b)) = (archive_file(&src_loc), archive_file(&dst_loc))
            && (a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok())
        {
            // Writing an archive starts it anew: it would be gone before
            // its layers were read.
            bail!(
                "{} is read and written at once: write the result to another file with -t",
                a.display()
            );
        }
        Ok(Surgery {
            client: t.net.client()?,
            src_loc,
            dst_loc,
            root: kiln_image::store::default_root(),
            also_mount: Vec::new(),
            started: Instant::now(),
        })
    }

    pub fn env(&self) -> Env<'_> {
        Env::new(&self.client, self.root.clone())
    }

    pub fn source<'e>(&self, env: &'e Env) -> Result<Box<dyn ImageSource + 'e>> {
        open_source_to(&self.src_loc, env, &self.dst_loc)
    }

    /// Copies the edited image to the destination; prints its digest.
    pub fn write(&self, env: &Env, result: &RewriteSource, t: &Target) -> Result<Digest> {
        let sink = open_sink_mounting(&self.dst_loc, env, Some(&self.src_loc), &self.also_mount)?;
        let opts = CopyOptions {
            jobs: t.jobs.max(1),
            ..CopyOptions::default()
        };
        let top = copy(result, sink.as_ref(), &opts)?;
        if t.net.verbose {
            let s = self.client.stats();
            eprintln!(
                "{:.2}s, {} B down, {} B up, {} mounts, {} blobs already there",
                self.started.elapsed().as_secs_f64(),
                s.bytes_downloaded,
                s.bytes_uploaded,
                s.mounts,
                s.blobs_skipped
            );
        }
        outln!("{}", top.digest);
        Ok(top.digest)
    }
}

/// Whether `image` names an image by ID or digest, so that writing the
/// result "back" to it cannot mean moving a tag.
fn names_no_tag(image: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    let is_id = hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let pinned = match Location::parse(image) {
        Ok(Location::Docker(r)) => r.digest().is_some(),
        _ => image.contains('@'),
    };
    is_id || pinned
}

/// The file of an archive location.
fn archive_file(loc: &Location) -> Option<&std::path::Path> {
    match loc {
        Location::OciArchive { file, .. } | Location::DockerArchive { file, .. } => Some(file),
        _ => None,
    }
}

pub fn platform_of(t: &Target) -> Result<Option<Platform>> {
    Ok(t.platform.as_deref().map(Platform::parse).transpose()?)
}

/// A scratch directory in the store's own `tmp` (same filesystem as the
/// blobs, and not a small tmpfs), removed when dropped.
pub fn scratch(root: &std::path::Path) -> Result<tempfile::TempDir> {
    let tmp = super::open_store(root)?.dir("tmp")?;
    Ok(tempfile::Builder::new()
        .prefix("kiln-surgery-")
        .tempdir_in(tmp)?)
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// The image: a store NAME or any location (see -t)
    pub image: String,
    /// ENTRYPOINT, exec form (a JSON array) or shell form; drops the
    /// image's CMD unless --cmd is given too
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// CMD, exec form (a JSON array) or shell form
    #[arg(long)]
    pub cmd: Option<String>,
    /// Set KEY=VALUE in the environment; KEY- removes KEY
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Set a config label KEY=VALUE; KEY- removes it
    #[arg(long, short = 'l', value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Set a manifest annotation KEY=VALUE (of the index itself when the
    /// image is an index and no --platform is given); KEY- removes it
    #[arg(long, short = 'a', value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// USER
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// WORKDIR (a relative path is taken from the current one)
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// EXPOSE a port (`80`, `53/udp`); PORT- removes it
    #[arg(long, value_name = "PORT")]
    pub expose: Vec<String>,
    /// VOLUME; PATH- removes it
    #[arg(long, value_name = "PATH")]
    pub volume: Vec<String>,
    /// STOPSIGNAL
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// The image's creation time: RFC 3339, seconds since the epoch, or `now`
    #[arg(long)]
    pub created: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// `KEY=VALUE` sets, `KEY-` removes.
enum KeyEdit {
    Set(String, String),
    Remove(String),
}

fn key_edit(flag: &str, s: &str) -> Result<KeyEdit> {
    if let Some((k, v)) = s.split_once('=') {
        if k.is_empty() {
            bail!("--{flag} {s:?}: the key is empty");
        }
        return Ok(KeyEdit::Set(k.to_string(), v.to_string()));
    }
    match s.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(KeyEdit::Remove(k.to_string())),
        _ => bail!("--{flag} {s:?}: expected KEY=VALUE, or KEY- to remove KEY"),
    }
}

fn created_time(s: &str) -> Result<String> {
    if s == "now" {
        return Ok(kiln_image::store::now_rfc3339());
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(kiln_image::time::rfc3339(secs));
    }
    match kiln_image::time::parse_rfc3339(s) {
        Some(_) => Ok(s.to_string()),
        None => bail!("--created {s:?}: not an RFC 3339 time, a number of seconds, or `now`"),
    }
}

/// The flags as config edits, in Dockerfile order (ENTRYPOINT before CMD,
/// so that both given keeps both).
fn config_edits(a: &MutateArgs, current_workdir: Option<&str>) -> Result<Vec<ConfigEdit>> {
    let mut edits = Vec::new();
    let ctx = |flag: &str| format!("--{flag}");
    // Shell form is `/bin/sh -c`, whatever SHELL the image has, as
    // buildah config's.
    let sh = ImageInfo::default();
    if let Some(e) = &a.entrypoint {
        edits.push(ConfigEdit::Entrypoint(
            parse_command(e, &sh).with_context(|| ctx("entrypoint"))?,
        ));
    }
    if let Some(c) = &a.cmd {
        edits.push(ConfigEdit::Cmd(
            parse_command(c, &sh).with_context(|| ctx("cmd"))?,
        ));
    }
    for e in &a.env {
        edits.push(match key_edit("env", e)? {
            KeyEdit::Set(k, v) => ConfigEdit::Env(k, v),
            KeyEdit::Remove(k) => ConfigEdit::UnsetEnv(k),
        });
    }
    for l in &a.label {
        edits.push(match key_edit("label", l)? {
            KeyEdit::Set(k, v) => ConfigEdit::Label(k, v),
            KeyEdit::Remove(k) => ConfigEdit::RemoveLabel(k),
        });
    }
    for p in &a.expose {
        edits.push(match p.strip_suffix('-') {
            Some(p) => ConfigEdit::RemoveExpose(p.to_string()),
            None => ConfigEdit::Expose(p.clone()),
        });
    }
    for v in &a.volume {
        edits.push(match v.strip_suffix('-') {
            Some(v) => ConfigEdit::RemoveVolume(v.to_string()),
            None => ConfigEdit::Volume(v.clone()),
        });
    }
    if let Some(u) = &a.user {
        edits.push(ConfigEdit::User(u.clone()));
    }
    if let Some(w) = &a.workdir {
        // As WORKDIR: relative to the one before.
        let dir = if w.starts_with('/') {
            w.clone()
        } else {
            let base = current_workdir.filter(|d| !d.is_empty()).unwrap_or("/");
            format!("{}/{w}", base.trim_end_matches('/'))
        };
        edits.push(ConfigEdit::Workdir(dir));
    }
    if let Some(s) = &a.stop_signal {
        edits.push(ConfigEdit::StopSignal(s.clone()));
    }
    if let Some(c) = &a.created {
        edits.push(ConfigEdit::Created(created_time(c)?));
    }
    Ok(edits)
}

fn annotation_edits(a: &MutateArgs) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for s in &a.annotation {
        match key_edit("annotation", s)? {
            KeyEdit::Set(k, v) => {
                set.insert(k, v);
            }
            KeyEdit::Remove(k) => remove.push(k),
        }
    }
    Ok((set, remove))
}

pub fn mutate(a: MutateArgs) -> Result<()> {
    let s = Surgery::new(&a.image, &a.target, false)?;
    let run = || -> Result<Digest> {
        let (set, remove) = annotation_edits(&a)?;
        // Flags are checked before anything is read or written.
        config_edits(&a, None)?;
        let env = s.env();
        let src = s.source(&env)?;
        let platform = platform_of(&a.target)?;
        let mut rw = match Rewrite::open(src.as_ref(), platform.as_ref())? {
            Top::Image(rw) => *rw,
            Top::Index(raw, index) => {
                let only_annotations = config_edits(&a, None)?.is_empty();
                if !only_annotations || (set.is_empty() && remove.is_empty()) {
                    bail!(
                        "{} is an index of several platforms ({}): choose one with --platform \
                         (only --annotation applies to the index itself)",
                        a.image,
                        kiln_image::manifest::platforms_of(&index)
                    );
                }
                let result = annotate_index(src.as_ref(), &raw, index, &set, &remove)?;
                return s.write(&env, &result, &a.target);
            }
        };
        let workdir = rw.image.config.runtime().working_dir.clone();
        let edits = config_edits(&a, workdir.as_deref())?;
        apply_all(&mut rw.image.config, &edits);
        for k in &remove {
            rw.annotations.remove(k);
        }
        rw.annotations.extend(set);
        let result = rw.finish()?;
        s.write(&env, &result, &a.target)
    };
    run().with_context(|| format!("mutate {}", a.image))?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The image: docker://REF, oci:DIR[:TAG], ..., or a NAME (the store's
    /// image of that name, else the registry's)
    pub image: String,
    /// With an index, the platform to pick (default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub net: NetOpts,
}

/// Prints an image's config blob exactly as stored, like `crane config`.
pub fn config(a: ConfigArgs) -> Result<()> {
    let client = a.net.client()?;
    let env = Env::new(&client, kiln_image::store::default_root());
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let mut loc = Location::parse(&a.image)?;
    if let Location::Store(name) = &loc {
        // A plain name is the store's when it has one, else a registry
        // reference, as `kiln config` read registries before.
        let in_store = env.store_root.exists()
            && kiln_image::Store::open(&env.store_root).is_ok_and(|s| s.resolve(name).is_ok());
        if !in_store && !a.image.starts_with("kiln:") {
            loc = Location::parse(&format!("docker://{name}"))?;
        }
    }
    let run = || -> Result<Vec<u8>> {
        let src = super::transport::open_source(&loc, &env)?;
        Ok(config_bytes(src.as_ref(), &platform)?)
    };
    let bytes = run().with_context(|| format!("config {}", a.image))?;
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The image: a store NAME or any location (see -t)
    pub image: String,
    /// The base the image was built on (its bottom layers). Without
    /// --old-base and --new-base, the image's
    /// org.opencontainers.image.base.digest and .base.name annotations
    /// (which kiln build writes, as BuildKit) name the old and new base.
    #[arg(long, value_name = "IMAGE", requires = "new_base")]
    pub old_base: Option<String>,
    /// The base to put it on instead
    #[arg(long, value_name = "IMAGE", requires = "old_base")]
    pub new_base: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// The old and new base an image's annotations name: the base as it was
/// (by digest) and the name it was built from, now. A base in a registry
/// is read from the registry when the image is.
fn bases_of(s: &Surgery, a: &RebaseArgs) -> Result<(String, String)> {
    let env = s.env();
    let platform = platform_of(&a.target)?;
    let src = s.source(&env)?;
    let rw = Rewrite::load(src.as_ref(), platform.as_ref())?;
    let (Some(name), Some(digest)) = (
        rw.annotations.get(BASE_NAME),
        rw.annotations.get(BASE_DIGEST),
    ) else {
        bail!(
            "the image has no {BASE_NAME} and {BASE_DIGEST} annotations (kiln build writes them \
             when the image starts from another image): give --old-base and --new-base"
        );
    };
    let r = kiln_image::Reference::parse(name).with_context(|| format!("{BASE_NAME}={name}"))?;
    let by_digest = format!("{}/{}@{digest}", r.registry(), r.repository());
    let registry = matches!(s.src_loc, Location::Docker(_));
    let prefix = if registry { "docker://" } else { "" };
    Ok((format!("{prefix}{by_digest}"), format!("{prefix}{name}")))
}

/// The digest of the image `src` names for `platform` (the host's when
/// none is given and `src` is an index): what a build's base digest is.
fn manifest_digest(src: &dyn ImageSource, platform: Option<&Platform>) -> Result<Digest> {
    let top = src.top()?;
    Ok(match top.parse()? {
        kiln_image::AnyManifest::Manifest(_) => top.digest,
        kiln_image::AnyManifest::Index(index) => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            index
                .select(&want)
                .with_context(|| format!("the new base has no image for {want}"))?
                .digest
                .clone()
        }
    })
}

/// Swaps an image's base layers for another base's, like `pack rebase`.
pub fn rebase(a: RebaseArgs) -> Result<()> {
    let mut s = Surgery::new(&a.image, &a.target, false)?;
    let (old_base, new_base) = match (&a.old_base, &a.new_base) {
        (Some(old), Some(new)) => (old.clone(), new.clone()),
        _ => bases_of(&s, &a).with_context(|| format!("rebase {}", a.image))?,
    };
    s.also_mount.push(Location::parse(&new_base)?);
    let run = || -> Result<Digest> {
        let env = s.env();
        let platform = platform_of(&a.target)?;
        let open = |what: &str, name: &str| -> Result<Box<dyn ImageSource + '_>> {
            let loc = Location::parse(name).with_context(|| format!("--{what}"))?;
            open_source_to(&loc, &env, &s.dst_loc).with_context(|| format!("--{what} {name}"))
        };
        let old_src = open("old-base", &old_base)?;
        let new_src = open("new-base", &new_base)?;
        let src = s.source(&env)?;
        let load = |src, what: &str| {
            Rewrite::load(src, platform.as_ref()).with_context(|| what.to_string())
        };
        let old = load(old_src.as_ref(), &format!("--old-base {old_base}"))?;
        let new = load(new_src.as_ref(), &format!("--new-base {new_base}"))?;
        let mut rw = load(src.as_ref(), &a.image)?;
        rw.rebase(&old, &new)?;
        // The result's base is the new one: a later rebase starts there.
        if rw.annotations.contains_key(BASE_DIGEST) {
            let top = manifest_digest(new_src.as_ref(), platform.as_ref())?;
            rw.annotations.insert(BASE_DIGEST.into(), top.to_string());
        }
        let result = rw.finish()?;
        s.write(&env, &result, &a.target)
    };
    run().with_context(|| format!("rebase {}", a.image))?;
    Ok(())
}
