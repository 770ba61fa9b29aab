//! Builds from a declaration instead of shell commands: a `kiln.toml`
//! ([`schema`]) names a base, Debian packages (installed by kiln-debian,
//! never by running apt), users, files and config. No sandbox, no RUN: the
//! result is minimal and the same bytes on every run (times come from
//! `SOURCE_DATE_EPOCH`, 0 without it).
//!
//! Layers, in order: the base's; one per Debian package and one with the
//! dpkg `status` file; users and groups; one per wheel of `[python]`
//! ([`python`]); then one per `[[file]]`, so an app's dependencies change
//! apart from its code. Several `platforms` build one image each (the
//! caller makes the index).
//! With a `kiln.lock` next to the build file the packages are exactly the
//! locked ones; without, they are resolved afresh from the mirror.

pub mod layers;
pub mod lockfile;
pub mod python;
pub mod schema;

use std::path::{Path, PathBuf};

use kiln_debian::{Fetcher, Request};
use kiln_image::config::History;
use kiln_image::layer::{Entry, LayerOptions, write_entries_layer};
use kiln_image::media::Compression;
use kiln_image::mutate::NewLayer;
use kiln_image::{Descriptor, Image, Platform, Store};

use crate::{BuildError, BuildResult, FetchBase};
pub use lockfile::LockFile;
pub use schema::BuildFile;

/// Whether `path` (the `-f` argument) names a declarative build file: a
/// `.toml` name, or TOML text with an `[image]` table.
pub fn is_build_file(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "toml") {
        return true;
    }
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.parse::<toml::Table>()
            .is_ok_and(|t| t.get("image").is_some_and(toml::Value::is_table))
    })
}

/// What a declarative build needs besides the file.
pub struct DeclarativeOptions {
    pub file: PathBuf,
    /// `[[file]]` sources are read from here (default: the file's directory).
    pub context: PathBuf,
    pub platform: Platform,
    pub source_date_epoch: Option<i64>,
    /// Pulls a base image missing from the store.
    pub fetch_base: Option<FetchBase>,
}

/// The lock file next to a build file.
pub fn lock_path(file: &Path) -> PathBuf {
    file.with_file_name("kiln.lock")
}

pub fn load(path: &Path) -> Result<BuildFile, BuildError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BuildError::Usage(format!("{}: {e}", path.display())))?;
    BuildFile::parse(&text).map_err(|e| BuildError::Usage(format!("{}: {e}", path.display())))
}

fn debian_error(e: kiln_debian::DebianError) -> BuildError {
    BuildError::Instruction(format!("[debian] {e}"))
}

/// The Debian request the file makes for `platform`.
pub fn request(file: &BuildFile, platform: &Platform) -> Result<Option<Request>, BuildError> {
    let Some(d) = &file.debian else {
        return Ok(None);
    };
    Ok(Some(Request {
        mirror: d.mirror.clone(),
        suite: d.suite.clone(),
        components: d.components.clone(),
        arch: kiln_debian::debian_arch(&platform.architecture, platform.variant.as_deref())
            .map_err(debian_error)?,
        keyring: d.keyring.clone(),
        packages: d.packages.clone(),
        essential: d.essential,
        exclude: d.exclude.clone(),
        check_valid_until: d.check_valid_until,
    }))
}

pub fn fetcher(store: &Store) -> Result<Fetcher, BuildError> {
    Fetcher::new(&store.dir("debian/sha256")?).map_err(debian_error)
}

/// The platforms `[image] platforms` lists (empty when it lists none).
pub fn listed_platforms(file: &BuildFile) -> Result<Vec<Platform>, BuildError> {
    let mut out: Vec<Platform> = Vec::new();
    for p in &file.image.platforms {
        let p = Platform::parse(p).map_err(|e| BuildError::Usage(format!("kiln.toml: {e}")))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Resolves the file's Debian packages for each of `platforms` (one lock
/// covering them all) and chooses its wheels (read from `context`): what
/// `kiln lock` writes. `None` when there is nothing to lock.
pub fn lock(
    store: &Store,
    file: &BuildFile,
    context: &Path,
    platforms: &[Platform],
) -> Result<Option<LockFile>, BuildError> {
    let mut out = LockFile::default();
    let mut per_arch = Vec::new();
    for platform in platforms {
        if let Some(req) = request(file, platform)? {
            let lock = kiln_debian::resolve_lock(&fetcher(store)?, &req).map_err(debian_error)?;
            per_arch.push(lock);
        }
    }
    if !per_arch.is_empty() {
        out.debian = Some(kiln_debian::Lock::merge(per_arch.clone()).map_err(debian_error)?);
    }
    if let Some(section) = &file.python {
        let mut chosen: Option<(Vec<String>, Vec<python::LockedWheel>)> = None;
        for (i, platform) in platforms.iter().enumerate() {
            let names = per_arch
                .get(i)
                .into_iter()
                .flat_map(|l| l.packages.iter().map(|p| p.name.as_str()));
            let py = python::load(section, context, names, &platform.architecture)?;
            let wheels: Vec<_> = python::choose(&py, None)?
                .into_iter()
                .map(|c| c.locked)
                .collect();
            match &chosen {
                Some((_, w)) if *w != wheels => {
                    return Err(BuildError::Usage(format!(
                        "[python]: {platform} needs other wheels than {}: a lock of platform wheels for several platforms is not supported (use pure-Python wheels, or one platform)",
                        platforms[0]
                    )));
                }
                Some(_) => {}
                None => chosen = Some((py.requested(), wheels)),
            }
        }
        if let Some((requested, wheels)) = chosen {
            out.python = Some(lockfile::PythonPart {
                python: python::PythonLock { requested },
                wheels,
            });
        }
    }
    Ok((out.debian.is_some() || out.python.is_some()).then_some(out))
}

/// Builds `opts.file` into an image in `store` (untagged: the caller tags
/// and exports it as for a Dockerfile build).
pub fn build(store: &Store, opts: &DeclarativeOptions) -> Result<BuildResult, BuildError> {
    let file = load(&opts.file)?;
    let platform = &opts.platform;
    let listed = listed_platforms(&file)?;
    if !listed.is_empty()
        && !listed
            .iter()
            .any(|p| p.architecture == platform.architecture)
    {
        return Err(BuildError::Usage(format!(
            "kiln.toml lists platforms {:?}; {platform} is not one of them",
            file.image.platforms
        )));
    }
    let epoch = opts.source_date_epoch;
    let mtime = epoch.unwrap_or(0);
    let created = kiln_image::time::rfc3339(mtime);
    let (mut image, base) = base_image(store, &file.image.base, platform, opts)?;
    let base_layers = image.layers.len();
    let mut warnings = Vec::new();
    let mut steps = 0;
    let mut cached = 0;

    let lock_file = lock_path(&opts.file);
    let existing = match std::fs::read_to_string(&lock_file) {
        Ok(text) => Some(LockFile::parse(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(BuildError::Io(format!("{}: {e}", lock_file.display()))),
    };
    let stale = |what: &str| {
        BuildError::Usage(format!(
            "{} {what} in {}: run `kiln lock -f {}`",
            lock_file.display(),
            opts.file.display(),
            opts.file.display()
        ))
    };
    let debian = match request(&file, platform)? {
        Some(req) => Some(debian_lock(store, &req, existing.as_ref(), &stale)?),
        None => None,
    };
    let debian_names = debian
        .iter()
        .flat_map(|(_, l)| l.packages.iter().map(|p| p.name.as_str()));
    // Every input is checked before anything is installed: a stale lock
    // or a missing wheel fails at once.
    let python = match &file.python {
        Some(section) => {
            let py = python::load(section, &opts.context, debian_names, &platform.architecture)?;
            let locked = match existing.as_ref().map(|l| l.python.as_ref()) {
                Some(Some(p)) if p.python.requested == py.requested() => Some(&p.wheels[..]),
                Some(Some(_)) => return Err(stale("does not match [python]'s requirements")),
                Some(None) => return Err(stale("pins no wheels for [python]")),
                None => None,
            };
            let chosen = python::choose(&py, locked)?;
            Some((py, chosen))
        }
        None => None,
    };
    if let Some((fetcher, lock)) = debian {
        let installed = kiln_debian::install(store, &fetcher, &lock, epoch, image.format)
            .map_err(debian_error)?;
        warnings.extend(installed.warnings);
        cached = installed.cached;
        steps = installed.layers.len() - cached;
        for (layer, history) in installed.layers {
            image = image.with_layer(layer, history);
        }
    }

    let opts_layer = LayerOptions {
        compression: Compression::None,
        source_date_epoch: epoch,
        ..LayerOptions::default()
    };
    let history = |by: String| History {
        created: Some(created.clone()),
        created_by: Some(by),
        ..History::default()
    };
    if let Some(entries) = layers::users_entries(&file, mtime)? {
        let l = write_layer(store, entries, &opts_layer, &image)?;
        image = image.with_layer(l, history("kiln: users and groups".into()));
        steps += 1;
    }
    // The app's dependencies, one layer per wheel, before its own files:
    // a code change leaves them be, a requirements change leaves the code.
    if let Some((py, chosen)) = &python {
        let mut required = Vec::new();
        for c in chosen {
            let (entries, requires) = python::wheel_entries(py, c, mtime)?;
            required.push((format!("{} {}", c.locked.name, c.locked.version), requires));
            let l = write_layer(store, entries, &opts_layer, &image)?;
            image = image.with_layer(
                l,
                history(format!(
                    "kiln: python {} {} ({})",
                    c.locked.name, c.locked.version, c.locked.file
                )),
            );
            steps += 1;
        }
        warnings.extend(python::unpinned(py, &required));
    }
    for f in &file.files {
        let entries = layers::file_entries(&file, f, &opts.context, mtime)?;
        let l = write_layer(store, entries, &opts_layer, &image)?;
        image = image.with_layer(l, history(format!("kiln: file {} {}", f.src, f.dest)));
        steps += 1;
    }

    let img = &file.image;
    let user = layers::config_user(&file);
    {
        let rc = image.config.runtime_mut();
        let mut env: Vec<String> = rc.env.take().unwrap_or_default();
        if file.image.base == "scratch" && !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        for (k, v) in &img.env {
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |x| x.0) != k);
            env.push(format!("{k}={v}"));
        }
        rc.env = Some(env);
        if let Some(u) = user {
            rc.user = Some(u);
        }
        if let Some(w) = &img.workdir {
            rc.working_dir = Some(w.clone());
        }
        if let Some(e) = &img.entrypoint {
            rc.entrypoint = Some(e.clone());
            // As docker: a new entrypoint drops the base's cmd.
            rc.cmd = None;
        }
        if let Some(c) = &img.cmd {
            rc.cmd = Some(c.clone());
        }
        if !img.labels.is_empty() {
            let labels = rc.labels.get_or_insert_with(Default::default);
            labels.extend(img.labels.clone());
        }
        if !img.exposed_ports.is_empty() {
            let ports = rc.exposed_ports.get_or_insert_with(Default::default);
            for p in &img.exposed_ports {
                let p = if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, serde_json::json!({}));
            }
        }
        if let Some(s) = &img.stop_signal {
            rc.stop_signal = Some(s.clone());
        }
    }
    // Built here, so stored plain: marked for compression on the way out
    // (kiln_image::compressed), as the solver marks its layers.
    for l in &image.layers[base_layers..] {
        kiln_image::compressed::mark_built(store, &l.digest)?;
    }
    let image = image.created_at(created);
    let manifest = image.write(store)?;
    Ok(BuildResult {
        image,
        manifest,
        steps_run: steps,
        steps_cached: cached,
        warnings,
        base,
    })
}

/// The Debian packages to install: the lock's (checked against the
/// request), or resolved afresh without a lock file.
fn debian_lock(
    store: &Store,
    req: &Request,
    existing: Option<&LockFile>,
    stale: &dyn Fn(&str) -> BuildError,
) -> Result<(Fetcher, kiln_debian::Lock), BuildError> {
    let fetcher = fetcher(store)?;
    let lock = match existing.map(|l| l.debian.as_ref()) {
        Some(Some(lock)) => {
            if !lock.answers(req) {
                return Err(stale(
                    "does not match [debian] (suite, packages or exclude changed)",
                ));
            }
            lock.for_arch(&req.arch).map_err(debian_error)?
        }
        Some(None) => return Err(stale("pins no packages for [debian]")),
        None => kiln_debian::resolve_lock(&fetcher, req).map_err(debian_error)?,
    };
    Ok((fetcher, lock))
}

fn write_layer(
    store: &Store,
    entries: Vec<Entry>,
    opts: &LayerOptions,
    image: &Image,
) -> Result<NewLayer, BuildError> {
    let (blob, info) = write_entries_layer(entries, opts, store.blob_writer()?)?;
    blob.commit(Some(&info.digest))?;
    Ok(NewLayer {
        blob: Descriptor::new(image.format.layer(info.compression), info.digest, info.size),
        diff_id: info.diff_id,
    })
}

/// The base image, and (unless scratch) its reference and the digest of
/// the manifest it resolved to: what the `org.opencontainers.image.base.*`
/// annotations name, as for a Dockerfile's `FROM`.
fn base_image(
    store: &Store,
    base: &str,
    platform: &Platform,
    opts: &DeclarativeOptions,
) -> Result<(Image, Option<(String, String)>), BuildError> {
    if base == "scratch" {
        return Ok((Image::scratch(platform), None));
    }
    let (image, raw) = match Image::load(store, base, platform) {
        Ok(loaded) => loaded,
        Err(first) => {
            let Some(fetch) = &opts.fetch_base else {
                return Err(first.into());
            };
            fetch(store, base, platform)
                .map_err(|e| BuildError::Io(format!("base {base}: {e}")))?;
            Image::load(store, base, platform)?
        }
    };
    Ok((image, Some((base.to_string(), raw.digest.to_string()))))
}
