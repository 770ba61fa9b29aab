//! `kiln build`: docker build's command line over `kiln-build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use kiln_build::export::{self, Output, Push};
use kiln_build::{BuildOptions, Progress, ProgressMode, SecretSource};
use kiln_image::media::Compression;
use kiln_image::{Platform, Reference};

use super::open_store;

#[derive(Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard
    /// input). For a tar or git context, a path inside the context. A
    /// `kiln.toml` (a `.toml` name, or TOML with an `[image]` table) is a
    /// declarative build instead (see the README).
    #[arg(short, long)]
    pub(super) file: Option<String>,
    /// Name the image (repeatable).
    #[arg(short, long = "tag")]
    pub(super) tags: Vec<String>,
    /// Set a build-time variable that an ARG declares (K alone takes K's
    /// value from the environment). Repeatable.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub(super) build_args: Vec<String>,
    /// Build this stage (by name) and what it needs, not the last stage.
    #[arg(long)]
    pub(super) target: Option<String>,
    /// The platform to build for (os/arch[/variant]; default: the host's).
    /// Base images are picked for it; a RUN for a foreign architecture
    /// needs a binfmt_misc handler (kiln does not emulate).
    #[arg(long)]
    pub(super) platform: Option<String>,
    /// id=ID,src=PATH or id=ID,env=VAR
    #[arg(long = "secret")]
    pub(super) secrets: Vec<String>,
    /// default or ID=SOCKET
    #[arg(long)]
    pub(super) ssh: Vec<String>,
    /// Run every step again instead of taking it from the cache.
    #[arg(long)]
    pub(super) no_cache: bool,
    /// Run the steps of these stages again (repeatable).
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub(super) no_cache_filter: Vec<String>,
    /// Pull base images from their registry even when the store has them
    /// (without it, only those the store lacks for the platform).
    #[arg(long)]
    pub(super) pull: bool,
    /// Default network for RUN (default, none or host).
    #[arg(long)]
    pub(super) network: Option<String>,
    /// Add NAME:IP to every RUN's /etc/hosts (repeatable; also NAME=IP).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub(super) add_hosts: Vec<String>,
    /// The size of every RUN's /dev/shm: bytes, or with a unit (k, m, g;
    /// default 64m, as docker).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub(super) shm_size: Option<String>,
    /// A resource limit of every RUN, as docker's: `NAME=SOFT[:HARD]` with
    /// NAME one of core, cpu, data, fsize, locks, memlock, msgqueue, nice,
    /// nofile, nproc, rss, rtprio, rttime, sigpending, stack; -1 is
    /// unlimited. At most kiln's own hard limit (repeatable).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub(super) ulimits: Vec<String>,
    /// Add an annotation to the image's manifest: KEY=VALUE, or buildx's
    /// `manifest:KEY=VALUE` (`index:` and `index-descriptor:` are refused, as
    /// buildx does for one platform). Repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub(super) annotations: Vec<String>,
    /// Let the Dockerfile use an entitlement: network.host (RUN
    /// --network=host, ADD from this host's own network) or
    /// security.insecure (RUN --security=insecure). Repeatable, or
    /// comma-separated.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub(super) allow: Vec<String>,
    /// Set a label on the image (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub(super) labels: Vec<String>,
    /// NAME=PATH, NAME=docker-image://REF (an image in the store) or
    /// NAME=oci-layout://DIR[:TAG][@sha256:…].
    #[arg(long = "build-context")]
    pub(super) build_contexts: Vec<String>,
    /// auto, tty, plain or quiet
    #[arg(long, default_value = "auto")]
    pub(super) progress: String,
    /// Print only the image ID on success (progress is suppressed).
    #[arg(short, long)]
    pub(super) quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub(super) iidfile: Option<PathBuf>,
    /// Write buildx's build metadata (digests, names) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(super) metadata_file: Option<PathBuf>,
    /// type=image|oci|docker|tar|local|registry,dest=…,name=…,push=true,compression=gzip|zstd,rewrite-timestamp=true
    #[arg(short, long)]
    pub(super) output: Vec<String>,
    /// Push the image to its registry (-t names): `-o type=registry`.
    #[arg(long)]
    pub(super) push: bool,
    /// Squash the target stage's new layers into one, as `docker build
    /// --squash` (the base image's layers are kept)
    #[arg(long)]
    pub(super) squash: bool,
    /// How RUN is isolated: auto (the strongest the host allows), rootless
    /// (a user namespace of the caller's subordinate IDs), root
    /// (namespaces as real root), chroot (root in a pod that refuses
    /// namespaces: mounts are copied in) or traced (no privilege at all,
    /// e.g. a "restricted" pod: ptrace + seccomp, uid 0 emulated, x86_64
    /// only; see `kiln info`).
    #[arg(long, default_value = "auto")]
    pub(super) isolation: String,
    /// Accepted for buildx scripts: the image is in the store either way.
    #[arg(long)]
    pub(super) load: bool,
    /// Accepted for docker build scripts: kiln leaves no intermediate
    /// containers either way.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) rm: Option<bool>,
    /// Accepted for docker build scripts, as --rm.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) force_rm: Option<bool>,
    /// Provenance attestations: kiln writes none yet; anything but false
    /// says so.
    #[arg(long, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) provenance: Option<String>,
    /// SBOM attestations: kiln writes none yet; anything but false says so.
    #[arg(long, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) sbom: Option<String>,
    /// A build cache to import when the store's misses (buildx's syntax:
    /// type=registry,ref=REF or type=local,src=DIR); repeatable, tried in
    /// order.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub(super) cache_from: Vec<String>,
    /// `stages`: print the build as jobs (one per named stage, each with
    /// the `kiln build` command that builds it alone and exports its
    /// cache next to the one `--cache-to` names) as JSON, and build
    /// nothing. For a CI matrix or Kubernetes Jobs; see the README.
    #[arg(long, value_name = "WHAT")]
    pub(super) print: Option<String>,
    /// Where to export the build cache (buildx's syntax:
    /// type=registry,ref=REF or type=local,dest=DIR; mode=min|max).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub(super) cache_to: Vec<String>,
    /// overlay or copy (default: overlay where the kernel allows it).
    #[arg(long)]
    pub(super) snapshotter: Option<String>,
    /// The build context: a directory, `-` (a tar, or a bare Dockerfile,
    /// on standard input), a git URL (`https://…/repo.git#ref:subdir`,
    /// `git@host:…`, `git://…`) or a tarball URL. A `kiln.toml` build
    /// reads `[[file]]` sources from here (default: the file's directory).
    pub(super) context: Option<String>,
}

fn kv(list: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in list {
        match item.split_once('=') {
            Some((k, v)) => out.insert(k.to_string(), v.to_string()),
            None => match std::env::var(item) {
                Ok(v) => out.insert(item.clone(), v),
                Err(_) if what == "--build-arg" => continue,
                Err(_) => bail!("{what} {item:?}: expected KEY=VALUE"),
            },
        };
    }
    Ok(out)
}

pub fn build(root: &Path, a: BuildArgs) -> anyhow::Result<()> {
    // Names are checked before the build: a typo must not cost a build.
    for t in &a.tags {
        Reference::parse(t).with_context(|| format!("-t {t:?}"))?;
    }
    for w in accepted_but_unsupported(&a) {
        eprintln!("warning: {w}");
    }
    let caches = super::build_cache::CacheFlags::parse(&a.cache_from, &a.cache_to)?;
    let store = open_store(root)?;
    let mut outputs = a
        .output
        .iter()
        .map(|o| Output::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    if a.push {
        outputs.push(Output::parse("type=registry")?);
    }
    // Checked before building: a push without a name fails at once.
    let pushes = outputs
        .iter()
        .filter(|o| o.push)
        .map(|o| Push::plan(o, &a.tags).map(|p| p.mount_from(&caches.registry_refs())))
        .collect::<Result<Vec<_>, _>>()?;
    let toml = a.file.as_deref().map(Path::new);
    if let Some(file) = toml.filter(|f| kiln_build::declarative::is_build_file(f)) {
        let (results, mode) = super::build_toml::build(&store, &a, file, &outputs)?;
        let quiet = mode == ProgressMode::Quiet;
        return deliver(&store, &a, &outputs, &pushes, &results, quiet, None);
    }
    let network = match a.network.as_deref() {
        None | Some("default") => kiln_dockerfile::instructions::Network::Default,
        Some("none") => kiln_dockerfile::instructions::Network::None,
        Some("host") => kiln_dockerfile::instructions::Network::Host,
        Some(n) => bail!("--network {n}: expected default, none or host"),
    };
    let entitlements = kiln_build::Entitlements::parse(&a.allow)?;
    // The context (and the Dockerfile in it) may come from standard
    // input, a git repository or a URL; it lives until the build is done.
    let Some(context) = a.context.as_deref() else {
        bail!(
            "kiln build: a context is required (a directory, a git or http URL, or - for a tar on standard input)"
        );
    };
    let inputs = kiln_build::source::load(
        &kiln_build::source::ContextArg::parse(context),
        a.file.as_deref(),
        &mut std::io::stdin().lock(),
        &store.dir("tmp")?,
        entitlements.host_network(),
    )?;
    let mut build_args = kv(&a.build_args, "--build-arg")?;
    let env_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .filter(|v| !v.is_empty());
    if let Some(e) = &env_epoch {
        build_args
            .entry("SOURCE_DATE_EPOCH".into())
            .or_insert_with(|| e.clone());
    }
    let source_date_epoch = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
        ),
        None => None,
    };
    let mut secrets = BTreeMap::new();
    for s in &a.secrets {
        let (id, src) = SecretSource::parse(s)?;
        secrets.insert(id, src);
    }
    let mut ssh = BTreeMap::new();
    for s in &a.ssh {
        let (id, sock) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => (
                s.clone(),
                PathBuf::from(
                    std::env::var("SSH_AUTH_SOCK").context("--ssh default needs SSH_AUTH_SOCK")?,
                ),
            ),
        };
        ssh.insert(id, sock);
    }
    let mut named_contexts = BTreeMap::new();
    for c in &a.build_contexts {
        let (name, value) = c.split_once('=').with_context(|| {
            format!("--build-context {c:?}: expected NAME=PATH, NAME=docker-image://REF or NAME=oci-layout://DIR")
        })?;
        named_contexts.insert(name.to_string(), kiln_build::NamedContext::parse(value)?);
    }
    let platforms = match &a.platform {
        Some(p) => platform_list(p)?,
        None => vec![Platform::host()],
    };
    if platforms.len() > 1
        && let Some(o) = outputs
            .iter()
            .find(|o| o.kind != kiln_build::export::OutputKind::Image)
    {
        bail!(
            "--platform {}: an index of several platforms goes to the store and registries \
             (-t, --push); {:?} outputs take one platform at a time",
            a.platform.as_deref().unwrap_or_default(),
            o.kind
        );
    }
    let platform = platforms[0].clone();
    // Checked before building, one set per platform (`manifest[os/arch]:`).
    let annotations = platforms
        .iter()
        .map(|p| kiln_build::annotate::manifest_annotations(&a.annotations, p))
        .collect::<Result<Vec<_>, _>>()?;
    // The store keeps plain layers (see kiln_image::compressed); outputs
    // that leave the machine compress, and the build does that for them
    // in the background as layers are made.
    let compression = outputs
        .iter()
        .find(|o| o.leaves())
        .map(Output::compression)
        .or_else(|| caches.compression())
        .unwrap_or(Compression::None);
    let rewrite_timestamp = outputs.iter().any(|o| o.rewrite_timestamp);
    let mut opts = BuildOptions {
        dockerfile_name: inputs.dockerfile_name.clone(),
        dockerfile: inputs.dockerfile.clone(),
        context_dir: inputs.context_dir.clone(),
        context_kind: inputs.kind,
        network,
        platform_requested: a.platform.is_some(),
        add_hosts: a
            .add_hosts
            .iter()
            .map(|h| parse_add_host(h))
            .collect::<anyhow::Result<_>>()?,
        shm_size: a.shm_size.as_deref().map(parse_size).transpose()?,
        ulimits: parse_ulimits(&a.ulimits)?,
        entitlements,
        fetch_base: Some(export::base_fetcher(None)?),
        pull: a.pull,
        dockerignore: inputs.dockerignore.clone(),
        build_args,
        target: a.target.clone(),
        platform,
        secrets,
        ssh,
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        labels: kv(&a.labels, "--label")?,
        isolation: a.isolation.parse()?,
        snapshotter: super::container::pick_mode(&store, a.snapshotter.as_deref())?,
        source_date_epoch,
        rewrite_timestamp,
        compression,
        named_contexts,
        cache_session: None,
    };
    match a.print.as_deref() {
        None => {}
        Some("stages") => {
            let args: Vec<_> = std::env::args_os().collect();
            return super::build_plan::print(&opts, &args, &a.cache_to);
        }
        Some(other) => bail!("--print={other}: kiln prints `stages` only"),
    }
    let mode = progress_mode(a.quiet, &a.progress)?;
    let quiet = mode == ProgressMode::Quiet;
    // Imported caches are read (or warned about) before the progress view
    // starts.
    let session = caches.session(quiet)?;
    opts.cache_session = Some(session.clone());
    // Registry bases load their manifest and config; their layers, and
    // those of cache hits, are fetched when a step or an output needs them.
    opts.fetch_base = Some(export::base_fetcher(Some(session.clone()))?);
    session.set_outputs_need_bytes(!push_only(&a, &outputs));
    session.set_exporting(!a.cache_to.is_empty());
    // Several platforms: one build each (the solver builds one), then one
    // index of their images, written and named as one image is.
    let mut results = Vec::new();
    for (p, annotations) in platforms.iter().zip(&annotations) {
        opts.platform = p.clone();
        let progress = Progress::new(mode, Box::new(std::io::stderr()));
        let result = kiln_build::build(&store, &opts, &progress);
        // The TTY view's last frame stays; anything printed from here is below it.
        progress.finish();
        let mut result = result?;
        if a.squash {
            // After the build, as the exporters: the context is still there
            // for a base stage built again (all cache hits).
            let base = kiln_build::squash::base_diff_ids(&store, &mut opts)?;
            result = kiln_build::squash::squash(&store, result, &base, source_date_epoch)?;
        }
        if caches.inline() {
            // Into the config before anything names, exports or pushes it.
            let n = kiln_build::export::inline::embed(
                &store,
                &mut result,
                &session,
                source_date_epoch,
            )?;
            if !quiet {
                eprintln!("cache: {n} entries inline in the image");
            }
        }
        let annotations = kiln_build::annotate::with_base(annotations, result.base.as_ref());
        kiln_build::annotate::annotate(&store, &mut result, &annotations)?;
        results.push(result);
    }
    drop(inputs);
    deliver(
        &store,
        &a,
        &outputs,
        &pushes,
        &results,
        quiet,
        Some((&caches, &session)),
    )
}

/// After the build: warnings, names, outputs, the cache export, pushes,
/// and what docker prints. Several results (platforms) become one index.
fn deliver(
    store: &kiln_image::Store,
    a: &BuildArgs,
    outputs: &[Output],
    pushes: &[Push],
    results: &[kiln_build::BuildResult],
    quiet: bool,
    cache: Option<(
        &super::build_cache::CacheFlags,
        &kiln_build::cache_session::CacheSession,
    )>,
) -> anyhow::Result<()> {
    for w in results.iter().flat_map(|r| &r.warnings).filter(|_| !quiet) {
        eprintln!("warning: {w}");
    }
    let (id, desc) = if let [result] = results {
        (result.image.id(), result.manifest.descriptor())
    } else {
        let mut index = kiln_image::index_edit::empty();
        for r in results {
            index = kiln_image::index_edit::add(
                index,
                kiln_image::index_edit::entry(&r.manifest, &r.image.config),
            );
        }
        let raw = kiln_image::index_edit::encode(&index)?;
        store.put_blob(&raw.bytes)?;
        (raw.digest.clone(), raw.descriptor())
    };
    let mut names: Vec<Reference> = a
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<_, _>>()?;
    for o in outputs {
        for n in &o.names {
            names.push(Reference::parse(n)?);
        }
    }
    // A build that only pushes keeps no image in the store (as buildx
    // without --load): its layers may never have come here.
    let stored: &[Reference] = if push_only(a, outputs) { &[] } else { &names };
    for n in stored {
        store.tag(n, &desc)?;
    }
    if let [result] = results {
        for o in outputs {
            export::export(store, result, o, &names)?;
        }
    }
    // The cache's mode=min follows the last platform's image; mode=max
    // has every step of every platform anyway.
    if let (Some(last), Some((caches, session))) = (results.last(), cache) {
        caches.finish(store, session, &last.image, quiet)?;
    }
    // What a registry gets has compressed layers, so a different manifest
    // digest than the store's (as after `docker push`); buildx reports it.
    let mut pushed = None;
    for p in pushes {
        let top = p.run(store, &desc, cache.map(|(_, s)| s))?;
        for n in stored {
            store.set_registry_digest(n, &top.digest)?;
        }
        pushed.get_or_insert(top);
    }
    if let Some((_, session)) = cache.filter(|_| !quiet) {
        let counts = session.layers().counts(store);
        if counts.fetched > 0 || counts.remote > 0 {
            eprintln!(
                "layers: {} fetched ({} bytes), {} stayed remote",
                counts.fetched, counts.fetched_bytes, counts.remote
            );
        }
    }
    if let Some(p) = &a.iidfile {
        std::fs::write(p, id.to_string()).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.metadata_file {
        let meta = serde_json::json!({
            "containerimage.digest": pushed.as_ref().unwrap_or(&desc).digest.to_string(),
            "containerimage.config.digest": id.to_string(),
            "image.name": names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        });
        std::fs::write(p, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if quiet {
        outln!("{id}");
    } else {
        // The image ID, as docker prints it; a push printed the digest the
        // registry knows (the stored manifest's is neither).
        eprintln!(
            "built {} ({} steps run, {} cached){}",
            id,
            results.iter().map(|r| r.steps_run).sum::<usize>(),
            results.iter().map(|r| r.steps_cached).sum::<usize>(),
            names
                .iter()
                .map(|n| format!(" {}", n.familiar()))
                .collect::<String>()
        );
        outln!("{id}");
    }
    Ok(())
}

/// Whether every output is a push and nothing names a store image (no
/// `-t`, no `--squash`): then the built image's layers need not be here.
fn push_only(a: &BuildArgs, outputs: &[Output]) -> bool {
    a.tags.is_empty() && !a.squash && !outputs.is_empty() && outputs.iter().all(|o| o.push)
}

/// `--progress`: auto is the TTY view when standard error is a terminal.
pub(super) fn progress_mode(quiet: bool, progress: &str) -> anyhow::Result<ProgressMode> {
    use std::io::IsTerminal;
    Ok(match progress {
        _ if quiet => ProgressMode::Quiet,
        "quiet" => ProgressMode::Quiet,
        "plain" => ProgressMode::Plain,
        "tty" => ProgressMode::Tty,
        "auto" if std::io::stderr().is_terminal() => ProgressMode::Tty,
        "auto" => ProgressMode::Plain,
        other => bail!("--progress {other:?}: expected auto, tty, plain or quiet"),
    })
}

/// `--platform`: buildx's list (`linux/amd64,linux/arm64`), each platform
/// once, in order.
pub(super) fn platform_list(spec: &str) -> anyhow::Result<Vec<Platform>> {
    let mut list: Vec<Platform> = Vec::new();
    for p in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p = Platform::parse(p)?;
        if !list.contains(&p) {
            list.push(p);
        }
    }
    if list.is_empty() {
        bail!("--platform {spec:?}: expected os/arch[/variant]");
    }
    Ok(list)
}

fn accepted_but_unsupported(a: &BuildArgs) -> Vec<String> {
    let mut out = Vec::new();
    let wants = |v: &Option<String>| v.as_deref().is_some_and(|v| !matches!(v, "false" | "0"));
    if wants(&a.provenance) {
        out.push("--provenance: kiln writes no provenance attestations yet".to_string());
    }
    if wants(&a.sbom) {
        out.push("--sbom: kiln writes no SBOM attestations yet".to_string());
    }
    out
}

/// `--ulimit`s, checked before anything is built: a limit above kiln's
/// own hard limit would only fail at the first RUN.
pub fn parse_ulimits(specs: &[String]) -> anyhow::Result<Vec<kiln_sandbox::Ulimit>> {
    specs
        .iter()
        .map(|s| {
            let u = kiln_sandbox::Ulimit::parse(s)?;
            u.check()?;
            Ok(u)
        })
        .collect()
}

/// `--add-host NAME:IP` (or `NAME=IP`; an IPv6 address may be bracketed),
/// as docker.
fn parse_add_host(spec: &str) -> anyhow::Result<(String, std::net::IpAddr)> {
    let (name, addr) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .with_context(|| format!("--add-host {spec:?}: expected NAME:IP"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip = addr
        .parse()
        .with_context(|| format!("--add-host {spec:?}: {addr:?} is not an IP address"))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("--add-host {spec:?}: expected NAME:IP");
    }
    Ok((name.to_string(), ip))
}

/// docker's sizes: bytes, or a number with b, k, m or g (powers of 1024).
fn parse_size(spec: &str) -> anyhow::Result<u64> {
    let s = spec.trim().to_ascii_lowercase();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s.as_str(), ""),
    };
    let mult: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => bail!("--shm-size {spec:?}: expected a size such as 64m"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--shm-size {spec:?}: expected a size such as 64m"))?;
    match n.checked_mul(mult) {
        Some(0) | None => bail!("--shm-size {spec:?}: expected a size above zero"),
        Some(b) => Ok(b),
    }
}
