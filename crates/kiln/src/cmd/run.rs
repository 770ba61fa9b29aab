//! `kiln run`: run one command in a root filesystem the caller prepared.
//! Image resolution is not wired yet (the store is being written), so the
//! rootfs is given as `--rootfs DIR` or as overlay layers
//! `--lower DIR... --upper DIR --work DIR` (lowers top first).

use std::path::PathBuf;

use anyhow::{Context, bail};
use kiln_sandbox::{Isolation, MountSpec, Network, Rootfs, RunSpec, Sandbox, exit_code};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Root filesystem directory (modified in place).
    #[arg(long, conflicts_with_all = ["lower", "upper", "work"])]
    rootfs: Option<PathBuf>,
    /// Overlay lower directory, top first; repeat for more layers.
    #[arg(long)]
    lower: Vec<PathBuf>,
    /// Overlay upper directory: receives the changes.
    #[arg(long, requires = "work")]
    upper: Option<PathBuf>,
    /// Overlay work directory (empty, same filesystem as --upper).
    #[arg(long, requires = "upper")]
    work: Option<PathBuf>,
    /// User: name, uid, name:group or uid:gid, resolved in the rootfs.
    #[arg(long, short)]
    user: Option<String>,
    /// Working directory inside the rootfs (created if missing).
    #[arg(long, short = 'w', default_value = "/")]
    workdir: PathBuf,
    /// Environment variable KEY=VALUE; repeatable.
    #[arg(long, short)]
    env: Vec<String>,
    #[arg(long, default_value = "kiln")]
    hostname: String,
    /// host or none.
    #[arg(long, default_value = "host")]
    network: String,
    /// type=bind|cache|tmpfs,source=..,target=..[,readonly]; repeatable.
    #[arg(long)]
    mount: Vec<String>,
    /// Give the command /dev/null as stdin.
    #[arg(long)]
    null_stdin: bool,
    /// auto, rootless, root or chroot.
    #[arg(long, default_value = "auto")]
    isolation: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_mount(s: &str) -> anyhow::Result<MountSpec> {
    let (mut ty, mut src, mut dst, mut ro) = ("bind", None, None, false);
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("type", v)) => ty = v,
            Some(("source" | "src" | "from", v)) => src = Some(PathBuf::from(v)),
            Some(("target" | "dst" | "destination", v)) => dst = Some(PathBuf::from(v)),
            Some(("readonly" | "ro", v)) => ro = v != "false",
            None if kv == "readonly" || kv == "ro" => ro = true,
            _ => bail!("--mount {s}: unknown option {kv}"),
        }
    }
    let target = dst.with_context(|| format!("--mount {s}: no target"))?;
    Ok(match ty {
        "bind" => MountSpec::Bind {
            source: src.with_context(|| format!("--mount {s}: no source"))?,
            target,
            readonly: ro,
        },
        "cache" => MountSpec::Cache {
            source: src.with_context(|| format!("--mount {s}: no source"))?,
            target,
        },
        "tmpfs" => MountSpec::Tmpfs {
            target,
            size: None,
            mode: None,
        },
        t => bail!("--mount {s}: unknown type {t}"),
    })
}

/// Run and return the exit code to exit with (128+N for a signal).
pub fn run(a: RunArgs) -> anyhow::Result<i32> {
    let rootfs = match (a.rootfs, a.upper, a.work) {
        (Some(d), None, None) => Rootfs::Dir(d),
        (None, Some(upper), Some(work)) => Rootfs::Overlay {
            lowers: a.lower,
            upper,
            work,
        },
        _ => bail!("give --rootfs DIR, or --lower DIR... --upper DIR --work DIR"),
    };
    let mut spec = RunSpec::new(rootfs, a.command);
    spec.user = a.user.unwrap_or_default();
    spec.cwd = a.workdir;
    spec.env = a.env;
    spec.hostname = a.hostname;
    spec.null_stdin = a.null_stdin;
    spec.network = match a.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        n => bail!("--network {n}: expected host or none"),
    };
    spec.mounts = a
        .mount
        .iter()
        .map(|m| parse_mount(m))
        .collect::<anyhow::Result<_>>()?;
    let isolation: Isolation = a.isolation.parse()?;
    let mut sandbox = Sandbox::new(isolation)?;
    sandbox.forward_signals(true);
    let status = sandbox.run(&spec)?;
    Ok(exit_code(&status))
}
