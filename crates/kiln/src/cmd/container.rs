//! `kiln run`: a throwaway container of a stored image, and with `--commit`
//! its changes saved as a new image (buildah's `run` and `commit` in one).
//! An image the store lacks is pulled first, as `docker run` does. kiln
//! keeps no containers (there is no daemon to own them): every container
//! goes when its command ends, so `--rm` is the default and `--name` only
//! names the run (in errors, and as the default hostname).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use kiln_build::cache_mount::CacheMount;
use kiln_image::layer::{Entry, LayerOptions};
use kiln_image::{Descriptor, History, Image, Platform, Reference, Store};
use kiln_sandbox::{Isolation, MountSpec, Network, Rootfs, RunSpec, Sandbox, exit_code};
use kiln_snapshot::{Mode, Snapshots};

use super::{created_now, open_store, source_date_epoch};

#[derive(Args)]
#[command(
    // -h is --hostname, as docker run's; --help stays.
    disable_help_flag = true,
    after_help = "Differences from docker run: the container is always removed \
when its command ends (kiln keeps no containers; --rm is accepted and changes nothing), \
--name names the run in errors and is the default hostname (docker's is the container \
ID), and there is no -d (no daemon). A command that is not found exits 127, one that \
cannot be executed 126, as with docker."
)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Not supported: kiln has no daemon to keep a detached container
    /// running (an error says so).
    #[arg(short, long)]
    detach: bool,
    /// Remove the container afterwards: always done (kiln keeps no
    /// containers); accepted for docker's sake.
    #[arg(long)]
    rm: bool,
    /// Keep standard input open for the command (without it the command
    /// reads /dev/null, as with docker run).
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a pseudo-terminal as stdin, stdout and stderr (with
    /// -i, kiln's terminal is relayed to it in raw mode); its exit code is
    /// kiln's.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (`K=V`, or `K` to pass the caller's
    /// value; left out when the caller has none).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines (docker's
    /// rules: `#` comments, `KEY` alone takes the caller's value); -e wins.
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Replace the image's entrypoint with this executable (its CMD is
    /// dropped too, as docker does); "" clears it.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// A name for the run: shown in errors and the default hostname.
    #[arg(long)]
    name: Option<String>,
    /// missing (pull the image if the store lacks it), always or never.
    #[arg(long, default_value = "missing", value_name = "POLICY")]
    pull: String,
    /// The user to run as: name, uid, name:group or uid:gid.
    #[arg(short, long)]
    user: Option<String>,
    /// The working directory (created if missing).
    #[arg(short, long)]
    workdir: Option<String>,
    /// default (a network namespace of the container's own that reaches
    /// the outside but not the host's loopback, like docker run's bridge),
    /// host (the host's network itself) or none (only `lo`).
    #[arg(long, default_value = "default")]
    network: String,
    /// type=bind|cache|tmpfs,target=PATH[,source=PATH][,readonly][,id=ID].
    /// A bind is the host's path itself, as with docker run: writes reach
    /// it unless it is readonly (a build's RUN --mount=type=bind discards
    /// them, as BuildKit's)
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// HOST:CONTAINER[:ro|rw], as docker run -v: a host path bound as it is
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volumes: Vec<String>,
    /// Save the changes as a new image with this name.
    #[arg(long, value_name = "NAME")]
    commit: Option<String>,
    /// auto, rootless, root, chroot or traced.
    #[arg(long, default_value = "auto")]
    isolation: String,
    /// overlay or copy (default: overlay where the kernel allows it).
    #[arg(long)]
    snapshotter: Option<String>,
    /// The hostname inside (default: --name, else kiln).
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// A resource limit, as docker's: `NAME=SOFT[:HARD]` (nofile, nproc,
    /// core, …; -1 is unlimited), at most kiln's own hard limit.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimits: Vec<String>,
    image: String,
    /// The command (default: the image's entrypoint and command).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Overlay unless told otherwise or the kernel refuses it. The probe
/// mounts a real overlay, so its verdict is remembered per kernel release
/// in the store rather than paid on every run.
pub fn pick_mode(store: &Store, asked: Option<&str>) -> anyhow::Result<Mode> {
    match asked {
        Some("overlay") => return Ok(Mode::Overlay),
        Some("copy") => return Ok(Mode::Copy),
        Some(other) => bail!("unknown snapshotter {other:?}: expected overlay or copy"),
        None => {}
    }
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let memo = store.dir("snapshots")?.join("overlay-probe");
    let verdict = match std::fs::read_to_string(&memo) {
        Ok(text) if text.split_once(' ').is_some_and(|(k, _)| k == kernel) => text.ends_with("ok"),
        _ => {
            let ok = kiln_sandbox::info::probe_overlay_in_userns().is_ok();
            let body = format!("{kernel} {}", if ok { "ok" } else { "refused" });
            kiln_image::store::write_atomic(&memo, body.as_bytes())?;
            ok
        }
    };
    if !verdict {
        eprintln!("kiln: overlay is not available here; using the (slower) copy snapshotter");
    }
    Ok(if verdict { Mode::Overlay } else { Mode::Copy })
}

/// `-v HOST:CONTAINER[:ro|rw]`. A host path must be absolute, as docker
/// requires of a bind (a bare name would be a named volume there).
fn parse_volume(spec: &str) -> anyhow::Result<MountSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => bail!("-v {spec:?}: expected HOST:CONTAINER[:ro|rw]"),
    };
    if !source.starts_with('/') || !target.starts_with('/') {
        bail!("-v {spec:?}: both paths must be absolute (named volumes are not supported)");
    }
    Ok(MountSpec::Volume {
        source: PathBuf::from(source),
        target: PathBuf::from(target),
        readonly,
    })
}

fn parse_mount(store: &Store, spec: &str) -> anyhow::Result<MountSpec> {
    let mut kind = "bind";
    let (mut source, mut target, mut readonly, mut id) = (None, None, false, None);
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => source = Some(PathBuf::from(v)),
            "target" | "dst" | "destination" => target = Some(PathBuf::from(v)),
            "readonly" | "ro" => readonly = v.is_empty() || v == "true",
            "rw" => readonly = !(v.is_empty() || v == "true"),
            "id" => id = Some(v.to_string()),
            _ => bail!("--mount {spec:?}: unknown option {k:?}"),
        }
    }
    let target = target.with_context(|| format!("--mount {spec:?}: target is required"))?;
    Ok(match kind {
        // As docker run: the container's writes reach the host directory.
        "bind" => MountSpec::Volume {
            source: source.with_context(|| format!("--mount {spec:?}: source is required"))?,
            target,
            readonly,
        },
        "tmpfs" => MountSpec::Tmpfs {
            target,
            size: None,
            mode: None,
        },
        "cache" => {
            // The build's layout and defaults, so that a cache a build's
            // RUN filled is this one under the same id.
            let id = id.unwrap_or_else(|| target.display().to_string());
            let cache = CacheMount::open(store, &id)?;
            cache.create_data(0o755, 0, 0)?;
            MountSpec::Cache {
                source: cache.data(),
                target,
            }
        }
        other => bail!("--mount {spec:?}: unknown type {other:?}"),
    })
}

/// Phase times of one `kiln run`, printed to stderr when `KILN_TIMINGS=1`
/// (the run bench reads them to report the diff on its own).
struct Timings {
    on: bool,
    last: std::time::Instant,
}

impl Timings {
    fn new() -> Timings {
        Timings {
            on: std::env::var_os("KILN_TIMINGS").is_some_and(|v| v == "1"),
            last: std::time::Instant::now(),
        }
    }

    /// Prints the time since the previous mark as `phase`.
    fn mark(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        if self.on {
            let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
            eprintln!("kiln-timing: {phase} {ms:.3} ms");
        }
        self.last = now;
    }
}

pub fn run(root: &Path, a: RunArgs) -> anyhow::Result<()> {
    let mut t = Timings::new();
    let store = open_store(root)?;
    // Secrets a killed build of this store left in shared memory go now.
    let _ = kiln_build::run_private::sweep(&store);
    if let Some(name) = &a.name {
        super::run_opts::check_name(name)?;
    }
    if a.detach {
        bail!(
            "kiln has no daemon: detached containers are not supported (run it in the background with your shell, e.g. `kiln run IMAGE … &`)"
        );
    }
    // As docker: a terminal for the command needs one to read from.
    if a.tty && a.interactive && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("the input device is not a TTY");
    }
    super::build::parse_ulimits(&a.ulimits)?;
    // Only a reference can be pulled: a missing image ID or digest is
    // Image::load's "not found" below.
    let missing = matches!(
        store.resolve(&a.image),
        Err(kiln_image::store::StoreError::ImageNotFound(_))
    ) && Reference::parse(&a.image).is_ok();
    match a.pull.as_str() {
        "missing" if missing => pull(&a.image, true)?,
        "always" => pull(&a.image, missing)?,
        "missing" | "never" => {}
        other => bail!("--pull {other:?}: expected missing, always or never"),
    }
    let platform = Platform::host();
    let (image, _) = Image::load(&store, &a.image, &platform)?;
    let mode = pick_mode(&store, a.snapshotter.as_deref())?;
    let isolation: Isolation = a.isolation.parse()?;
    let layers: Vec<(Descriptor, kiln_image::Digest)> = image
        .layers
        .iter()
        .cloned()
        .zip(image.config.rootfs.diff_ids.iter().cloned())
        .collect();
    let snapshots = Snapshots::open(&store)?;
    t.mark("setup");
    let ran = kiln_build::commit::run_and_diff(
        &store,
        &snapshots,
        &layers,
        mode,
        &mut |phase| t.mark(phase),
        |rootfs| run_in(&store, &image, rootfs, isolation, &a),
    )?;
    if let (Some(name), Some(entries)) = (&a.commit, ran.entries) {
        commit(&store, image, entries, name, &ran.output.1)?;
        t.mark("commit");
    }
    ran.container.remove()?;
    t.mark("remove");
    std::process::exit(ran.output.0);
}

/// Pulls `image` into the store (the global `--root` is `KILN_ROOT` by
/// now), saying so on stderr as docker run does.
fn pull(image: &str, missing: bool) -> anyhow::Result<()> {
    let r = Reference::parse(image).with_context(|| format!("pull {image}"))?;
    if missing {
        eprintln!("Unable to find image '{}' locally", r.familiar());
    }
    let opts = super::registry::CopyOpts::default();
    let d = super::registry::pull_to_store(&r, &opts, &super::registry::NetOpts::default())?;
    eprintln!("Pulled {} ({d})", r.familiar());
    Ok(())
}

/// Runs the command on `rootfs` and returns its exit code and argv, and
/// with `--commit` the targets of its mounts (left out of the diff).
#[allow(clippy::type_complexity)]
fn run_in(
    store: &Store,
    image: &Image,
    rootfs: Rootfs,
    isolation: Isolation,
    a: &RunArgs,
) -> anyhow::Result<((i32, Vec<String>), Option<Vec<PathBuf>>)> {
    let rt = image.config.runtime();
    let argv = super::run_opts::argv(rt, a.entrypoint.as_deref(), &a.command);
    if argv.is_empty() {
        bail!("{} has no command; give one after the image name", a.image);
    }
    let mut spec = RunSpec::new(rootfs, argv);
    spec.env = rt.env.clone().unwrap_or_default();
    if a.tty {
        // As docker run -t: programs ask TERM what the terminal can do.
        super::run_opts::set_env(&mut spec.env, "TERM=xterm".into());
    }
    for f in &a.env_files {
        for kv in super::run_opts::read_env_file(f)? {
            super::run_opts::set_env(&mut spec.env, kv);
        }
    }
    for kv in a.env.iter().filter_map(|e| super::run_opts::env_flag(e)) {
        super::run_opts::set_env(&mut spec.env, kv);
    }
    spec.null_stdin = !a.interactive;
    spec.ulimits = super::build::parse_ulimits(&a.ulimits)?;
    if let Some(w) = a
        .workdir
        .as_deref()
        .or(rt.working_dir.as_deref())
        .filter(|w| !w.is_empty())
    {
        spec.cwd = PathBuf::from(w);
    }
    spec.user = a
        .user
        .clone()
        .or_else(|| rt.user.clone())
        .unwrap_or_default();
    spec.hostname = a
        .hostname
        .clone()
        .or_else(|| a.name.clone())
        .unwrap_or_else(|| "kiln".into());
    let mut sandbox = Sandbox::new(isolation)?;
    spec.network = match a.network.as_str() {
        // Private, or the container's own network in a pod that refuses
        // network namespaces (said once); "private" insists.
        "default" => sandbox.default_network(),
        "private" => Network::Private,
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("--network {other:?}: expected default, host or none"),
    };
    spec.mounts = a
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .chain(a.mounts.iter().map(|m| parse_mount(store, m)))
        .collect::<anyhow::Result<_>>()?;
    // SIGTERM or Ctrl-C to kiln reaches the command, as with docker run.
    sandbox.forward_signals(true);
    let status = if a.tty {
        super::tty::run_on_pty(&sandbox, &spec, a.interactive)?
    } else {
        super::tty::run_off_terminal(&sandbox, &spec, a.interactive)?
    };
    let status = match status {
        Ok(status) => status,
        // As docker: the message, and 127 (not found) or 126 (not executable).
        Err(kiln_sandbox::Error::Exec { argv0, cause }) => {
            let (code, message) = super::run_opts::exec_failure(&argv0, &cause);
            eprintln!("kiln: {message}");
            return Ok(((code, spec.argv), None));
        }
        Err(e) => {
            let what = match &a.name {
                Some(n) => format!("run {n} ({})", a.image),
                None => format!("run in {}", a.image),
            };
            return Err(e).context(what);
        }
    };
    let code = exit_code(&status);
    let targets = a
        .commit
        .as_ref()
        .map(|_| spec.mounts.iter().map(mount_target).collect());
    Ok(((code, spec.argv), targets))
}

fn mount_target(m: &MountSpec) -> PathBuf {
    match m {
        MountSpec::Bind { target, .. }
        | MountSpec::BindInRoot { target, .. }
        | MountSpec::Cache { target, .. }
        | MountSpec::Volume { target, .. }
        | MountSpec::Tmpfs { target, .. } => target.clone(),
    }
}

/// Saves the run's changes as a layer on `image`, tagged `name`.
fn commit(
    store: &Store,
    image: Image,
    entries: Vec<Entry>,
    name: &str,
    argv: &[String],
) -> anyhow::Result<()> {
    let name = Reference::parse(name)?;
    let epoch = source_date_epoch()?;
    let opts = LayerOptions {
        source_date_epoch: epoch,
        ..LayerOptions::default()
    };
    let format = image.format;
    let layer = kiln_build::commit::write_layer(store, entries, &opts, format)?;
    let created = created_now(epoch);
    let history = History {
        created: Some(created.clone()),
        created_by: Some(format!("kiln run {}", argv.join(" "))),
        ..History::default()
    };
    let image = kiln_build::commit::append_layer(image, Some(layer), history).created_at(created);
    let raw = image.write(store)?;
    store.tag(&name, &raw.descriptor())?;
    eprintln!("committed {} as {}", image.id(), name.familiar());
    Ok(())
}
