//! A tiny CLI over the kiln-sandbox API, used by the integration tests (also
//! as an unprivileged user) and handy for trying the sandbox by hand:
//!
//! ```text
//! sandbox_run [--isolation auto|rootless|root|chroot] (--rootfs DIR |
//!     --lower DIR... --upper DIR --work DIR) [--user U] [--hostname H]
//!     [--network private|host|none] [--cwd DIR] [--env K=V]... [--bind SRC:DST[:ro]]...
//!     [--cache SRC:DST]... [--tmpfs DST]... [--null-stdin] [--time] -- ARGV...
//! sandbox_run --unshare -- ARGV...   # run ARGV on the host as userns root
//! sandbox_run --no-userns-reexec ...  # no re-exec: each run makes its own userns
//! sandbox_run --info
//! ```
//! Exits with the command's exit code (128+N for a signal).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Instant;

use kiln_sandbox::{Isolation, MountSpec, Network, Rootfs, RunSpec, Sandbox, exit_code, userns};

fn main() {
    // Probe from the caller's own view, before any re-exec.
    if std::env::args().nth(1).as_deref() == Some("--info") {
        println!("{}", kiln_sandbox::info::probe());
        return;
    }
    // `--no-userns-reexec`: stay as we are, so that an unprivileged caller
    // gets the sandbox's own single-ID user namespace per run (what a
    // library user that never calls ensure_root_in_userns gets).
    let reexec = !std::env::args()
        .take_while(|a| a != "--")
        .any(|a| a == "--no-userns-reexec");
    if reexec && let Err(e) = userns::ensure_root_in_userns() {
        eprintln!("sandbox_run: {e}");
        std::process::exit(125);
    }
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("sandbox_run: {e}");
            std::process::exit(125);
        }
    }
}

fn real_main() -> Result<i32, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut isolation = Isolation::Auto;
    let (mut dir, mut lowers, mut upper, mut work) = (None, Vec::new(), None, None);
    let mut spec = RunSpec::new(Rootfs::Dir(PathBuf::new()), Vec::<String>::new());
    let (mut unshare, mut time) = (false, false);
    let need = |a: &mut dyn Iterator<Item = String>, f: &str| {
        a.next().ok_or_else(|| format!("{f} needs a value"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--unshare" => unshare = true,
            "--no-userns-reexec" => {}
            "--time" => time = true,
            "--null-stdin" => spec.null_stdin = true,
            "--isolation" => isolation = need(&mut args, &a)?.parse()?,
            "--rootfs" => dir = Some(PathBuf::from(need(&mut args, &a)?)),
            "--lower" => lowers.push(PathBuf::from(need(&mut args, &a)?)),
            "--upper" => upper = Some(PathBuf::from(need(&mut args, &a)?)),
            "--work" => work = Some(PathBuf::from(need(&mut args, &a)?)),
            "--user" => spec.user = need(&mut args, &a)?,
            "--hostname" => spec.hostname = need(&mut args, &a)?,
            "--cwd" => spec.cwd = need(&mut args, &a)?.into(),
            "--env" => spec.env.push(need(&mut args, &a)?),
            "--network" => {
                spec.network = match need(&mut args, &a)?.as_str() {
                    "none" => Network::None,
                    "private" => Network::Private,
                    "host" => Network::Host,
                    n => return Err(format!("unknown network {n}").into()),
                }
            }
            "--bind" => {
                let v = need(&mut args, &a)?;
                let p: Vec<&str> = v.split(':').collect();
                if p.len() < 2 {
                    return Err(format!("--bind {v}: expected SRC:DST[:ro]").into());
                }
                spec.mounts.push(MountSpec::Bind {
                    source: p[0].into(),
                    target: p[1].into(),
                    readonly: p.get(2) == Some(&"ro"),
                });
            }
            "--cache" => {
                let v = need(&mut args, &a)?;
                let (s, t) = v.split_once(':').ok_or("--cache SRC:DST")?;
                spec.mounts.push(MountSpec::Cache {
                    source: s.into(),
                    target: t.into(),
                });
            }
            "--tmpfs" => spec.mounts.push(MountSpec::Tmpfs {
                target: need(&mut args, &a)?.into(),
                size: None,
                mode: None,
            }),
            "--" => break,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    spec.argv = args.collect();
    if unshare {
        let e = std::process::Command::new(spec.argv.first().ok_or("no command")?)
            .args(&spec.argv[1..])
            .exec();
        return Err(e.into());
    }
    spec.rootfs = match (dir, upper, work) {
        (Some(d), None, None) if lowers.is_empty() => Rootfs::Dir(d),
        (None, Some(upper), Some(work)) => Rootfs::Overlay {
            lowers,
            upper,
            work,
        },
        _ => return Err("give --rootfs DIR, or --lower... --upper --work".into()),
    };
    let start = Instant::now();
    let mut sandbox = Sandbox::new(isolation)?;
    sandbox.forward_signals(true);
    let status = sandbox.run(&spec)?;
    if time {
        eprintln!(
            "sandbox_run: {} run took {:.1} ms",
            sandbox.isolation(),
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(exit_code(&status))
}
