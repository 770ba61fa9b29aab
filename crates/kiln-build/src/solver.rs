//! The solver: resolves the Dockerfile against the base images it names,
//! then builds the stages the target needs, each on its own thread as soon
//! as the stages it depends on are done, and every layer-making step
//! through the cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use kiln_dockerfile::instructions::{Instr, Network, Resolved};
use kiln_dockerfile::stage::{Base, ImageInfo, Stage};
use kiln_dockerfile::{ResolveOptions, ResolvedBuild};
use kiln_image::config_edit::{self, ConfigEdit};
use kiln_image::layer::Entry;
use kiln_image::media::Compression;
use kiln_image::transport::RawManifest;
use kiln_image::{Image, Platform, Store};
use kiln_sandbox::{Isolation, Sandbox};
use kiln_snapshot::{Mode, Snapshots};

use crate::cache::Cache;
use crate::context::Context;
use crate::copy_step::{CopyArgs, copy_step, primary_group};
use crate::exec::{RunInputs, execute, run_key};
use crate::fs::{StageFs, resolve_chown};
use crate::key::KeyHasher;
use crate::named::NamedContext;
use crate::platform::{arg_platform, check_can_run, stage_platform};
use crate::precompress::Precompress;
use crate::progress::Progress;
use crate::source::ContextKind;
use crate::step_layer::{Entries, append, cached_layer, history, stamp_times};
use crate::{BuildError, SecretSource, Vars};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct BuildOptions {
    /// The Dockerfile's name (for messages) and text.
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub context_dir: PathBuf,
    /// `.dockerignore` text, if the context has one.
    pub dockerignore: Option<String>,
    pub build_args: Vars,
    pub target: Option<String>,
    pub platform: Platform,
    pub secrets: BTreeMap<String, SecretSource>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub labels: Vars,
    pub isolation: Isolation,
    pub snapshotter: Mode,
    pub source_date_epoch: Option<i64>,
    /// Clamp file times in new layers to `source_date_epoch` too.
    pub rewrite_timestamp: bool,
    /// The compression the outputs will need: layers are compressed for
    /// them in the background as they are made (`None`: the image stays
    /// in the store, whose layers are plain tars either way).
    pub compression: Compression,
    /// `--build-context NAME=…`.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Where `context_dir` came from (see [`crate::source`]).
    pub context_kind: ContextKind,
    /// `--platform` was given: a base image for another platform is then an
    /// error, where the host's platform, assumed, only gets a warning.
    pub platform_requested: bool,
    /// `--add-host NAME:IP`: lines every RUN's `/etc/hosts` gets.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--shm-size`: the size of every RUN's `/dev/shm`, in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`: the resource limits of every RUN.
    pub ulimits: Vec<kiln_sandbox::Ulimit>,
    /// `--network`: the network of a RUN without its own `--network`.
    pub network: Network,
    /// `--allow`: what the Dockerfile may ask for beyond the sandbox.
    pub entitlements: crate::Entitlements,
    /// Brings a base image for a platform into the store when the store
    /// lacks it (or always, with `pull`): the CLI's registry client.
    pub fetch_base: Option<FetchBase>,
    pub pull: bool,
}

/// Fetches `reference` for a platform into the store, tagged with that
/// name. kiln-build does not talk to registries; its caller does.
pub type FetchBase = Box<dyn Fn(&Store, &str, &Platform) -> Result<(), String> + Send + Sync>;

pub struct BuildResult {
    pub image: Image,
    pub manifest: RawManifest,
    pub steps_run: usize,
    pub steps_cached: usize,
    pub warnings: Vec<String>,
}

pub(crate) struct Shared<'a> {
    pub(crate) store: &'a Store,
    pub(crate) opts: &'a BuildOptions,
    pub(crate) progress: &'a Progress,
    pub(crate) snaps: Snapshots,
    pub(crate) cache: Cache<'a>,
    /// Layers compressed for the export while the build goes on.
    pub(crate) precompress: Precompress,
    pub(crate) context: Context,
    pub(crate) sandbox: Sandbox,
    pub(crate) scratch: PathBuf,
    /// The build's start: file times in new layers where nothing else
    /// gives one (clamped to SOURCE_DATE_EPOCH).
    pub(crate) now: i64,
    pub(crate) build: ResolvedBuild,
    /// Each stage's result; a failed stage's error is in `errors`.
    pub(crate) results: Mutex<BTreeMap<usize, Option<(Image, StageFs)>>>,
    /// Errors of failed steps, first first (not the stages that failed
    /// because a stage they wait for did).
    pub(crate) errors: Mutex<Vec<BuildError>>,
    /// Set at the first error: the other stages stop at their next step.
    pub(crate) failed: AtomicBool,
    pub(crate) done: Condvar,
    pub(crate) run: AtomicUsize,
    pub(crate) cached: AtomicUsize,
}

fn image_info(img: &Image) -> ImageInfo {
    let rt = img.config.runtime();
    ImageInfo {
        env: rt
            .env
            .iter()
            .flatten()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        onbuild: rt.on_build.clone().unwrap_or_default(),
        workdir: rt.working_dir.clone(),
        shell: rt.shell.clone(),
    }
}

/// A base image for `platform`, from the store, fetched first when the
/// store has none for that platform (or always, with `--pull`).
pub(crate) fn load_image(
    store: &Store,
    opts: &BuildOptions,
    reference: &str,
    platform: &Platform,
    asked: bool,
) -> Result<Image, BuildError> {
    if let Some(fetch) = &opts.fetch_base {
        let stored = Image::load(store, reference, platform).ok();
        let fits = stored.as_ref().is_some_and(|(img, _)| {
            img.config.os == platform.os && img.config.architecture == platform.architecture
        });
        if opts.pull || !fits {
            let fetched = fetch(store, reference, platform);
            // A stored image for another platform, where none was asked for
            // and none could be pulled, is used as it is (the caller warns),
            // as docker does with a local one.
            let fallback = !asked && stored.is_some();
            if let Err(e) = fetched
                && !fallback
            {
                let have = match &stored {
                    Some((img, _)) => format!(
                        "the store has it for {}/{} only",
                        img.config.os, img.config.architecture
                    ),
                    None => "the store does not have it".to_string(),
                };
                return Err(BuildError::Instruction(format!(
                    "base image {reference} for {platform}: {have}, and pulling it failed: {e}"
                )));
            }
        }
    }
    Image::load(store, reference, platform).map(|(img, _)| img).map_err(|e| {
        BuildError::Instruction(format!(
            "base image {reference}: {e} (kiln builds from images in its store: `kiln pull {reference}` or `kiln import`)"
        ))
    })
}

/// Builds the target stage and writes its image into `store` (untagged).
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    progress: &Progress,
) -> Result<BuildResult, BuildError> {
    let df = kiln_dockerfile::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut ropts = ResolveOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        build_platform: arg_platform(&Platform::host()),
        target_platform: arg_platform(&opts.platform),
        named_contexts: opts.named_contexts.keys().cloned().collect(),
        ..ResolveOptions::default()
    };
    // Resolve once to learn the base images, then again with their configs
    // so that their ENV is in scope and their ONBUILD triggers run.
    let first = kiln_dockerfile::resolve(&df, &ropts)?;
    // What the Dockerfile asks for is checked before anything is pulled
    // or run, and again with the base images' ONBUILD triggers.
    let check = |stages: &[Stage]| {
        opts.entitlements
            .check(stages, &opts.dockerfile_name, &opts.dockerfile)
    };
    check(&first.stages)?;
    // Base images, keyed by reference and platform (stages may differ in
    // `FROM --platform`).
    let mut images = BTreeMap::new();
    let mut platform_warnings = Vec::new();
    for stage in &first.stages {
        let platform = stage_platform(stage, &opts.platform)?;
        let (key, img) = match &stage.base {
            Base::Image { reference } => {
                let img = load_image(
                    store,
                    opts,
                    reference,
                    &platform,
                    platform_asked(opts, stage),
                )?;
                ropts.images.insert(reference.clone(), image_info(&img));
                (reference.clone(), img)
            }
            Base::Context { name } => {
                let img = match opts.named_contexts.get(name) {
                    Some(c) => c.image(store, opts, &platform)?,
                    None => None,
                };
                let img = img.ok_or_else(|| {
                    BuildError::Instruction(format!(
                        "FROM {name}: a directory build context cannot be a base image"
                    ))
                })?;
                (format!("context:{name}"), img)
            }
            _ => continue,
        };
        let c = &img.config;
        if c.os != platform.os || c.architecture != platform.architecture {
            let what = format!(
                "{}: the base image is for {}/{} only, not {platform}",
                stage.original.trim(),
                c.os,
                c.architecture
            );
            if platform_asked(opts, stage) {
                return Err(BuildError::Instruction(what));
            }
            // As BuildKit's InvalidBaseImagePlatform: the stage keeps the
            // image's own platform (see `build_stage`), and says so.
            platform_warnings.push(format!("{what} (no --platform was asked for)"));
        }
        images.insert(format!("{key}|{platform}"), img);
    }
    let build = kiln_dockerfile::resolve(&df, &ropts)?;
    check(&build.stages)?;
    let mut warnings: Vec<String> = build.warnings.iter().map(|w| w.to_string()).collect();
    if !build.unused_build_args.is_empty() {
        // docker's words.
        warnings.push(format!(
            "One or more build-args [{}] were not consumed",
            build.unused_build_args.join(" ")
        ));
    }
    warnings.extend(platform_warnings);
    let ignore = kiln_dockerfile::ignore::Matcher::new(opts.dockerignore.as_deref().unwrap_or(""))
        .map_err(|e| BuildError::Context(format!(".dockerignore: {e}")))?;
    // A context unpacked for this build only keeps no hash index.
    let index_dir = match opts.context_kind {
        ContextKind::Local => Some(store.dir("context-index")?),
        ContextKind::Temporary | ContextKind::Absent => None,
    };
    let mut context = Context::new(&opts.context_dir, ignore, index_dir.as_deref())?;
    if opts.context_kind == ContextKind::Absent {
        context = context.absent(
            "there is no build context: the Dockerfile came alone on standard input \
             (send a tar on standard input to give it one)",
        );
    }
    // What killed builds of this store left in shared memory (their secrets)
    // goes now; a problem with the directory itself is reported by the
    // first RUN that needs it.
    let _ = crate::run_private::sweep(store);
    let now = opts.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let shared = Shared {
        store,
        opts,
        progress,
        snaps: Snapshots::open(store)?,
        cache: Cache::open(store)?,
        precompress: Precompress::new(opts.compression),
        context,
        sandbox: Sandbox::new(opts.isolation)
            .map_err(|e| BuildError::Io(format!("sandbox: {e}")))?,
        scratch: store.dir("tmp")?,
        now,
        build,
        results: Mutex::new(BTreeMap::new()),
        errors: Mutex::new(Vec::new()),
        failed: AtomicBool::new(false),
        done: Condvar::new(),
        run: AtomicUsize::new(0),
        cached: AtomicUsize::new(0),
    };
    let images = &images;
    std::thread::scope(|s| {
        let shared = &shared;
        s.spawn(move || shared.precompress.work(shared.store));
        let stages: Vec<_> = shared
            .build
            .stages
            .iter()
            .map(|stage| {
                s.spawn(move || {
                    let r = match build_stage(shared, stage, images) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            shared.failed.store(true, Ordering::Relaxed);
                            if !matches!(e, BuildError::DependencyFailed(_) | BuildError::Canceled)
                            {
                                shared.errors.lock().expect("lock").push(e);
                            }
                            None
                        }
                    };
                    shared.results.lock().expect("lock").insert(stage.index, r);
                    shared.done.notify_all();
                })
            })
            .collect();
        let panicked = stages.into_iter().find_map(|h| h.join().err());
        let failed = panicked.is_some() || shared.failed.load(Ordering::Relaxed);
        if shared.precompress.busy() && !failed {
            let step = shared.progress.start("compressing layers");
            shared.precompress.wait();
            step.done();
        }
        if failed {
            shared.precompress.abandon();
        }
        shared.precompress.close();
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
    });
    shared.context.save();
    if let Some(first) = shared.errors.lock().expect("lock").drain(..).next() {
        return Err(first);
    }
    let target = shared.build.target;
    let (mut image, _) = shared
        .results
        .lock()
        .expect("lock")
        .remove(&target)
        .flatten()
        .ok_or_else(|| BuildError::Instruction("the target stage was not built".into()))?;
    if !opts.labels.is_empty() {
        let labels = image
            .config
            .runtime_mut()
            .labels
            .get_or_insert_with(Default::default);
        for (k, v) in &opts.labels {
            labels.insert(k.clone(), v.clone());
        }
    }
    image = stamp_times(image, opts.source_date_epoch);
    let manifest = image.write(store)?;
    Ok(BuildResult {
        image,
        manifest,
        steps_run: shared.run.load(Ordering::Relaxed),
        steps_cached: shared.cached.load(Ordering::Relaxed),
        warnings,
    })
}

/// Waits until stage `index` is built and returns its image.
pub(crate) fn wait_for(shared: &Shared<'_>, index: usize) -> Result<(Image, StageFs), BuildError> {
    let mut results = shared.results.lock().expect("lock");
    loop {
        if let Some(r) = results.get(&index) {
            return r.clone().ok_or(BuildError::DependencyFailed(index));
        }
        results = shared.done.wait(results).expect("lock");
    }
}

pub(crate) fn fs_of(image: &Image) -> StageFs {
    StageFs {
        layers: image
            .layers
            .iter()
            .cloned()
            .zip(image.config.rootfs.diff_ids.iter().cloned())
            .collect(),
    }
}

/// The platform a stage's image is for (set when the stage starts).
pub(crate) fn platform_of(image: &Image) -> Platform {
    Platform {
        os: image.config.os.clone(),
        architecture: image.config.architecture.clone(),
        variant: image.config.variant.clone(),
        os_version: None,
        os_features: Vec::new(),
    }
}

/// A stage's FROM as progress shows it: what it builds on, its arguments
/// expanded (BuildKit prints the resolved reference, not `FROM $BASE`).
fn from_line(shared: &Shared<'_>, stage: &Stage) -> String {
    let base = match &stage.base {
        Base::Scratch => "scratch".to_string(),
        Base::Image { reference } => reference.clone(),
        Base::Stage { index } => shared
            .build
            .stages
            .get(*index)
            .map_or_else(|| format!("stage-{index}"), stage_label),
        Base::Context { name } => name.clone(),
    };
    match stage.platform.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => format!("FROM --platform={p} {base}"),
        None => format!("FROM {base}"),
    }
}

/// Whether the stage's platform was asked for (`--platform`, or the
/// stage's own `FROM --platform`) rather than assumed to be the host's.
fn platform_asked(opts: &BuildOptions, stage: &Stage) -> bool {
    opts.platform_requested || stage.platform.as_deref().is_some_and(|p| !p.is_empty())
}

fn stage_label(stage: &Stage) -> String {
    stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.index))
}

fn build_stage(
    shared: &Shared<'_>,
    stage: &Stage,
    images: &BTreeMap<String, Image>,
) -> Result<(Image, StageFs), BuildError> {
    // Dependencies are awaited where they are used (FROM, COPY --from, a
    // mount), so a stage gets as far as it can while others still build.
    let label = stage_label(stage);
    let total = stage.instructions.len() + 1;
    let step = shared
        .progress
        .start(&format!("[{label} 1/{total}] {}", from_line(shared, stage)));
    let platform = stage_platform(stage, &shared.opts.platform)?;
    let mut image = match &stage.base {
        Base::Scratch => Image::scratch(&platform),
        Base::Image { reference } => images
            .get(&format!("{reference}|{platform}"))
            .cloned()
            .ok_or_else(|| {
                BuildError::Instruction(format!("base image {reference} was not loaded"))
            })?,
        Base::Stage { index } => wait_for(shared, *index)?.0,
        Base::Context { name } => images
            .get(&format!("context:{name}|{platform}"))
            .cloned()
            .ok_or_else(|| {
                BuildError::Instruction(format!("build context {name} was not loaded"))
            })?,
    };
    // As BuildKit: the stage's image is for the stage's platform, which
    // is also what a RUN in it must be able to execute. A base image for
    // another platform, where none was asked for, keeps its own: labelling
    // its files with the host's would be a lie (the build warned).
    let foreign_base = matches!(stage.base, Base::Image { .. } | Base::Context { .. })
        && !platform_asked(shared.opts, stage)
        && (image.config.os != platform.os || image.config.architecture != platform.architecture);
    if !foreign_base {
        image.config.os = platform.os.clone();
        image.config.architecture = platform.architecture.clone();
        image.config.variant = platform.variant.clone();
    }
    step.done();
    // BuildKit gives every Linux image a PATH when its base has none.
    if image.config.runtime().env_var("PATH").is_none() {
        let rt = image.config.runtime_mut();
        let env = rt.env.get_or_insert_with(Vec::new);
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if stage.instructions.iter().any(|i| i.from_onbuild) {
        // Triggers run once, in the first build that uses the image.
        image.config.runtime_mut().on_build = None;
    }
    let no_cache = shared.opts.no_cache
        || stage
            .name
            .as_ref()
            .is_some_and(|n| shared.opts.no_cache_filter.contains(n));
    let mut cmd_set = false;
    for (i, r) in stage.instructions.iter().enumerate() {
        if shared.failed.load(Ordering::Relaxed) {
            return Err(BuildError::Canceled);
        }
        let name = format!("[{label} {}/{total}] {}", i + 2, r.original.trim());
        image = step_one(shared, r, image, &name, no_cache, &mut cmd_set).map_err(|e| match e {
            BuildError::DependencyFailed(_) | BuildError::Canceled => e,
            cause => BuildError::Step(Box::new(crate::StepFailure {
                file: shared.opts.dockerfile_name.clone(),
                line: r.line,
                instruction: r.original.trim().to_string(),
                name,
                excerpt: crate::excerpt(&shared.opts.dockerfile, r.span.clone()),
                cause,
            })),
        })?;
    }
    let fs = fs_of(&image);
    Ok((image, fs))
}

fn step_one(
    shared: &Shared<'_>,
    r: &Resolved,
    mut image: Image,
    name: &str,
    no_cache: bool,
    cmd_set: &mut bool,
) -> Result<Image, BuildError> {
    let created_by = r.original.trim().to_string();
    let meta = |image: Image, f: &dyn Fn(&mut kiln_image::RuntimeConfig)| -> Image {
        let mut image = image;
        f(image.config.runtime_mut());
        image.with_empty_history(history(shared, created_by.clone(), None))
    };
    // The instructions `kiln mutate` and `import --change` share go
    // through the one pure config edit.
    let edit = |image: Image, edits: Vec<ConfigEdit>| -> Image {
        let mut image = image;
        for e in &edits {
            config_edit::apply(&mut image.config, e);
        }
        image.with_empty_history(history(shared, created_by.clone(), None))
    };
    let image = match &r.instr {
        Instr::Env { vars } => edit(
            image,
            vars.iter()
                .map(|v| ConfigEdit::Env(v.key.clone(), v.value.clone()))
                .collect(),
        ),
        Instr::Label { labels } => edit(
            image,
            labels
                .iter()
                .map(|v| ConfigEdit::Label(v.key.clone(), v.value.clone()))
                .collect(),
        ),
        Instr::Expose { ports } => edit(
            image,
            ports.iter().cloned().map(ConfigEdit::Expose).collect(),
        ),
        Instr::Volume { paths } => edit(
            image,
            paths.iter().cloned().map(ConfigEdit::Volume).collect(),
        ),
        Instr::User { user } => edit(image, vec![ConfigEdit::User(user.clone())]),
        Instr::Cmd { argv, .. } => {
            *cmd_set = true;
            edit(image, vec![ConfigEdit::Cmd(argv.clone())])
        }
        Instr::Entrypoint { argv, .. } => {
            // As Docker: an ENTRYPOINT drops a CMD inherited from the base
            // (the edit does that), not one this stage set.
            let kept = image.config.runtime().cmd.clone();
            let mut image = edit(image, vec![ConfigEdit::Entrypoint(argv.clone())]);
            if *cmd_set {
                image.config.runtime_mut().cmd = kept;
            }
            image
        }
        Instr::Shell { shell } => meta(image, &|rt| rt.shell = Some(shell.clone())),
        Instr::Stopsignal { signal } => edit(image, vec![ConfigEdit::StopSignal(signal.clone())]),
        Instr::Onbuild { expression } => edit(image, vec![ConfigEdit::OnBuild(expression.clone())]),
        Instr::Healthcheck(h) => meta(image, &|rt| {
            rt.healthcheck = Some(kiln_image::config::Healthcheck {
                test: Some(h.test.clone()),
                interval: h.interval_ns.map(|n| n as i64),
                timeout: h.timeout_ns.map(|n| n as i64),
                start_period: h.start_period_ns.map(|n| n as i64),
                start_interval: h.start_interval_ns.map(|n| n as i64),
                retries: h.retries.map(i64::from),
                ..Default::default()
            })
        }),
        Instr::Maintainer { name: who } => {
            image.config.author = Some(who.clone());
            image.with_empty_history(history(shared, created_by, None))
        }
        Instr::Arg { .. } => image,
        Instr::Workdir { resolved, .. } => {
            image.config.runtime_mut().working_dir = Some(resolved.clone());
            let fs = fs_of(&image);
            let path = PathBuf::from(resolved);
            if fs.stat(shared.store, &shared.snaps, &path)?.is_some() {
                image.with_empty_history(history(shared, created_by, None))
            } else {
                // BuildKit creates a missing WORKDIR as a layer of its own.
                let step = shared.progress.start(name);
                let user = image.config.runtime().user.clone().unwrap_or_default();
                let owner = match user.as_str() {
                    "" => (0, 0),
                    u => {
                        // A user without a group means that user's primary
                        // group here, as for a process, not --chown's rule.
                        let fs = fs_of(&image);
                        let passwd = fs.read_file(shared.store, &shared.snaps, "/etc/passwd")?;
                        let group = fs.read_file(shared.store, &shared.snaps, "/etc/group")?;
                        let spec = if u.contains(':') {
                            u.to_string()
                        } else {
                            primary_group(u, passwd.as_deref())
                        };
                        resolve_chown(&spec, passwd.as_deref(), group.as_deref())?
                    }
                };
                let mut key = KeyHasher::new("workdir");
                key.str("path", resolved).json("owner", &owner);
                let mut entries = Vec::new();
                for a in path.ancestors() {
                    let rel = a.strip_prefix("/").unwrap_or(a);
                    if rel.as_os_str().is_empty() {
                        break;
                    }
                    // Existing ancestors are written as they are, so this
                    // layer's copy of them does not hide their mode and owner.
                    match fs.stat(shared.store, &shared.snaps, a)? {
                        Some(m) => {
                            use std::os::unix::fs::MetadataExt;
                            key.str("exists", &rel.to_string_lossy());
                            key.json("meta", &(m.mode(), m.uid(), m.gid(), m.mtime()));
                            entries.push(
                                Entry::dir(rel)
                                    .with_mode(m.mode() & 0o7777)
                                    .with_owner(u64::from(m.uid()), u64::from(m.gid()))
                                    .with_mtime(m.mtime()),
                            );
                        }
                        // Made for the current USER, as BuildKit and buildah do.
                        None => entries.push(
                            Entry::dir(rel)
                                .with_mode(0o755)
                                .with_owner(owner.0, owner.1)
                                .with_mtime(shared.now),
                        ),
                    }
                }
                let made = cached_layer(shared, &key.finish(), no_cache, step, |_| {
                    Ok(Entries::shared(entries))
                })?;
                append(shared, image, made, created_by)
            }
        }
        Instr::Copy(c) => copy_step(
            shared,
            image,
            name,
            &created_by,
            no_cache,
            CopyArgs {
                instruction: "COPY",
                sources: &c.sources,
                dest: &c.dest,
                from: c.from.as_ref(),
                chown: c.chown.as_deref(),
                chmod: c.chmod.as_ref(),
                link: c.link,
                parents: c.parents,
                exclude: &c.exclude,
                unpack: false,
                remote: false,
                checksum: None,
                keep_git_dir: false,
            },
        )?,
        Instr::Add(a) => copy_step(
            shared,
            image,
            name,
            &created_by,
            no_cache,
            CopyArgs {
                instruction: "ADD",
                sources: &a.sources,
                dest: &a.dest,
                from: None,
                chown: a.chown.as_deref(),
                chmod: a.chmod.as_ref(),
                link: a.link,
                parents: false,
                exclude: &a.exclude,
                unpack: a.unpack.unwrap_or(true),
                remote: true,
                checksum: a.checksum.as_deref(),
                keep_git_dir: a.keep_git_dir,
            },
        )?,
        Instr::Run(run) => {
            let step = shared.progress.start(name);
            let rt = image.config.runtime();
            let mut env = rt.env.clone().unwrap_or_default();
            for v in &run.env {
                if !env
                    .iter()
                    .any(|e| e.split('=').next() == Some(v.key.as_str()))
                {
                    env.push(format!("{}={}", v.key, v.value));
                }
            }
            let base = fs_of(&image);
            let stage_fs = |i: usize| wait_for(shared, i).ok().map(|(_, fs)| fs);
            let inputs = RunInputs {
                store: shared.store,
                snaps: &shared.snaps,
                mode: shared.opts.snapshotter,
                sandbox: &shared.sandbox,
                base: &base,
                env,
                user: rt.user.clone().unwrap_or_default(),
                workdir: rt.working_dir.clone().unwrap_or_else(|| "/".into()),
                secrets: &shared.opts.secrets,
                ssh: &shared.opts.ssh,
                stage_fs: &stage_fs,
                context: &shared.context,
                scratch: &shared.scratch,
                platform: platform_of(&image).to_string(),
                add_hosts: &shared.opts.add_hosts,
                shm_size: shared.opts.shm_size,
                ulimits: &shared.opts.ulimits,
            };
            // `kiln build --network` is the default of a RUN without its own.
            let run = &if run.network == Network::Default {
                kiln_dockerfile::instructions::Run {
                    network: shared.opts.network,
                    ..run.clone()
                }
            } else {
                run.clone()
            };
            let platform = platform_of(&image);
            let key = run_key(run, &inputs)?;
            let made = cached_layer(shared, &key, no_cache, step, |step| {
                check_can_run(&platform)?;
                let (entries, container) = execute(run, &inputs, step)?;
                Ok(Entries {
                    entries,
                    keep_alive: container,
                    private: true,
                })
            })?;
            append(shared, image, made, run.created_by.clone())
        }
    };
    Ok(image)
}
