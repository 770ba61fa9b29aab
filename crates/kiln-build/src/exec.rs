//! RUN: one process in a container over the stage's layers, its mounts,
//! and the diff of what it changed, as a layer.
//!
//! Secrets reach the process as a read-only file or an environment
//! variable only: their bytes never enter the cache key (only the secret's
//! id does), the history, the config or the log (they are masked in the
//! RUN's output, see [`crate::output`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::{FromRef, Network, Run};
use kiln_dockerfile::mount::{MountType, Sharing};
use kiln_image::layer::Entry;
use kiln_image::{Digest, Store};
use kiln_sandbox::{MountSpec, Rootfs, RunIo, RunSpec, Sandbox, exit_code};
use kiln_snapshot::{Mode, Snapshots};

use crate::cache_mount::CacheMount;

use crate::fs::{StageFs, View};
use crate::key::KeyHasher;
use crate::output::Capture;
use crate::progress::Step;
use crate::{BuildError, SecretSource};

/// What a RUN reads besides its own text.
pub struct RunInputs<'a> {
    pub store: &'a Store,
    pub snaps: &'a Snapshots,
    pub mode: Mode,
    pub sandbox: &'a Sandbox,
    pub base: &'a StageFs,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub secrets: &'a std::collections::BTreeMap<String, SecretSource>,
    pub ssh: &'a std::collections::BTreeMap<String, PathBuf>,
    /// Filesystems of the stages (by index) and the context, for bind and
    /// cache mounts with `from`.
    pub stage_fs: &'a dyn Fn(usize) -> Option<StageFs>,
    pub context: &'a crate::context::Context,
    pub scratch: &'a Path,
    /// The platform the RUN executes for: the same command on the same
    /// layers makes another layer on another architecture.
    pub platform: String,
    /// `--add-host` lines for `/etc/hosts` (part of the key, as BuildKit's).
    pub add_hosts: &'a [(String, std::net::IpAddr)],
    /// `--shm-size`.
    pub shm_size: Option<u64>,
    /// `--ulimit`s of every RUN (part of the key, as BuildKit's).
    pub ulimits: &'a [kiln_sandbox::Ulimit],
}

/// The cache key of a RUN: its command, environment, user, working
/// directory, mounts, and the content of the filesystem it runs on.
pub fn run_key(run: &Run, inputs: &RunInputs<'_>) -> Result<Digest, BuildError> {
    let mut k = KeyHasher::new("run");
    k.str("fs", &inputs.base.key().to_string())
        .str("platform", &inputs.platform);
    if !inputs.add_hosts.is_empty() {
        let hosts: Vec<String> = inputs
            .add_hosts
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        k.json("add-hosts", &hosts);
    }
    if !inputs.ulimits.is_empty() {
        let limits: Vec<String> = inputs.ulimits.iter().map(|u| u.to_string()).collect();
        k.json("ulimits", &limits);
    }
    k.json("argv", &run.argv)
        .json("env", &inputs.env)
        .str("user", &inputs.user);
    k.str("workdir", &inputs.workdir)
        .json("network", &run.network)
        .json("security", &run.security);
    if let Some(s) = &run.script_file {
        k.str("script", &s.path).str("script-content", &s.content);
    }
    for m in &run.mounts {
        let mm = &m.mount;
        k.json(
            "mount",
            &(
                mm.kind,
                &mm.target,
                &mm.id,
                &mm.readonly,
                &mm.mode,
                &mm.uid,
                &mm.gid,
            ),
        );
        k.json("mount-more", &(mm.sharing, &mm.env, &mm.required, &mm.size));
        if let (MountType::Cache, Some(FromRef::Stage { index, .. })) = (&mm.kind, &m.from_ref) {
            let fs = (inputs.stage_fs)(*index).ok_or_else(|| {
                BuildError::Instruction(format!("RUN --mount: stage {index} is not built"))
            })?;
            k.str("cache-from-stage", &fs.key().to_string())
                .json("source", &mm.source);
        }
        if matches!(mm.kind, MountType::Bind) {
            match &m.from_ref {
                Some(FromRef::Stage { index, .. }) => {
                    let fs = (inputs.stage_fs)(*index).ok_or_else(|| {
                        BuildError::Instruction(format!("RUN --mount: stage {index} is not built"))
                    })?;
                    k.str("from-stage", &fs.key().to_string());
                }
                Some(other) => {
                    return Err(BuildError::Instruction(format!(
                        "RUN --mount from {other:?} is not supported yet"
                    )));
                }
                None => {
                    // The context subtree the bind exposes.
                    let src = crate::context::clean_rel(mm.source.as_deref().unwrap_or(""))?;
                    let b = crate::bind::context_source(inputs.context, &src)?;
                    crate::bind::key_context(&mut k, inputs.context, &b)?;
                }
            }
            k.json("source", &mm.source);
        }
    }
    Ok(k.finish())
}

pub use crate::commit::ContainerGuard;

/// Runs `run`, its output going to `step` line by line, and returns the
/// entries of its diff, and the container they live in.
pub fn execute(
    run: &Run,
    inputs: &RunInputs<'_>,
    step: &Step<'_>,
) -> Result<(Vec<Entry>, ContainerGuard), BuildError> {
    let ran = crate::commit::run_and_diff(
        inputs.store,
        inputs.snaps,
        &inputs.base.layers,
        inputs.mode,
        &mut |_| {},
        |rootfs| Ok::<_, BuildError>(((), Some(run_in(run, inputs, rootfs, step)?))),
    )?;
    Ok((ran.entries.unwrap_or_default(), ran.container))
}

fn run_in(
    run: &Run,
    inputs: &RunInputs<'_>,
    rootfs: Rootfs,
    step: &Step<'_>,
) -> Result<Vec<PathBuf>, BuildError> {
    let mut spec = RunSpec::new(rootfs, run.argv.clone());
    spec.env = inputs.env.clone();
    spec.user = inputs.user.clone();
    spec.cwd = PathBuf::from(if inputs.workdir.is_empty() {
        "/"
    } else {
        &inputs.workdir
    });
    // As `docker build`: a RUN reads nothing from kiln's own stdin.
    spec.null_stdin = true;
    spec.extra_hosts = inputs.add_hosts.to_vec();
    spec.shm_size = inputs.shm_size;
    spec.ulimits = inputs.ulimits.to_vec();
    // The default is a network namespace of the build's own, as BuildKit's:
    // the host's loopback services are not the RUN's. Where the host
    // refuses network namespaces (chroot isolation in a pod) the sandbox
    // says so once and gives the container's own network.
    spec.network = match run.network {
        Network::Default => inputs.sandbox.default_network(),
        Network::None => kiln_sandbox::Network::None,
        Network::Host => kiln_sandbox::Network::Host,
    };
    // Keeps views, secret files and locks alive until the process is done.
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    // Secrets and scripts live outside the store, in a directory a killed
    // build's successor removes (see `run_private`).
    let private = crate::run_private::RunPrivate::create(inputs.store)?;
    let mut targets = Vec::new();
    // The values to mask in the RUN's output.
    let mut secret_values = Vec::new();
    for (i, m) in run.mounts.iter().enumerate() {
        let mm = &m.mount;
        let target = mm.target.as_ref().map(PathBuf::from);
        match mm.kind {
            MountType::Bind => {
                let target = target.ok_or_else(|| {
                    BuildError::Instruction("RUN --mount=type=bind needs a target".into())
                })?;
                let src = crate::context::clean_rel(mm.source.as_deref().unwrap_or(""))?;
                // Resolved inside the stage or context by the sandbox, when
                // mounting (see crate::bind).
                let mount = match &m.from_ref {
                    Some(FromRef::Stage { index, .. }) => {
                        let fs = (inputs.stage_fs)(*index).ok_or_else(|| {
                            BuildError::Instruction(format!(
                                "RUN --mount: stage {index} is not built"
                            ))
                        })?;
                        let view: View = fs.view(inputs.store, inputs.snaps, inputs.scratch)?;
                        let real =
                            crate::bind::stage_source("bind", &view, &src, m.from_ref.as_ref())?;
                        let mount = MountSpec::BindInRoot {
                            root: view.path().to_path_buf(),
                            source: PathBuf::from(real),
                            target: target.clone(),
                            readonly: mm.readonly,
                        };
                        keep.push(Box::new(view));
                        mount
                    }
                    _ => {
                        let b = crate::bind::context_source(inputs.context, &src)?;
                        let (mount, copy) = crate::bind::context_mount(
                            inputs.context,
                            &b,
                            target.clone(),
                            mm.readonly,
                            inputs.scratch,
                        )?;
                        if let Some(copy) = copy {
                            keep.push(Box::new(copy));
                        }
                        mount
                    }
                };
                spec.mounts.push(mount);
                targets.push(target);
            }
            MountType::Cache => {
                let target = target.ok_or_else(|| {
                    BuildError::Instruction("RUN --mount=type=cache needs a target".into())
                })?;
                let id = mm
                    .id
                    .clone()
                    .unwrap_or_else(|| target.display().to_string());
                // `from`: the cache starts as a copy of the stage's
                // `source`, one cache per (id, stage, source) as BuildKit
                // keeps one per id and base.
                let seed = match &m.from_ref {
                    None => None,
                    Some(FromRef::Stage { index, .. }) => {
                        let fs = (inputs.stage_fs)(*index).ok_or_else(|| {
                            BuildError::Instruction(format!(
                                "RUN --mount: stage {index} is not built"
                            ))
                        })?;
                        let src = crate::context::clean_rel(mm.source.as_deref().unwrap_or(""))?;
                        Some((fs, src))
                    }
                    Some(other) => {
                        return Err(BuildError::Instruction(format!(
                            "RUN --mount=type=cache from {other:?} is not supported yet"
                        )));
                    }
                };
                let seed_key = seed.as_ref().map(|(fs, src)| (fs.key(), src.as_str()));
                let name =
                    crate::cache_mount::cache_name(&id, seed_key.as_ref().map(|(k, s)| (k, *s)));
                let cache = CacheMount::open(inputs.store, &name)?;
                let data = cache.data();
                if let Some((fs, src)) = &seed
                    && !data.exists()
                {
                    let view: View = fs.view(inputs.store, inputs.snaps, inputs.scratch)?;
                    let real = crate::bind::stage_source("cache", &view, src, m.from_ref.as_ref())?;
                    let tree = crate::inroot::Root::open(view.path())
                        .map_err(BuildError::file("a view of a stage"))?;
                    crate::bind::seed_cache(&tree, &real, &data)?;
                    // Mode and owner only when asked: else the stage's.
                    if let Some(mode) = mm.mode {
                        let _ = fs::set_permissions(&data, fs::Permissions::from_mode(mode));
                    }
                    if mm.uid.is_some() || mm.gid.is_some() {
                        let _ = std::os::unix::fs::chown(&data, mm.uid, mm.gid);
                    }
                }
                cache.create_data(
                    mm.mode.unwrap_or(0o755),
                    mm.uid.unwrap_or(0),
                    mm.gid.unwrap_or(0),
                )?;
                let lock = cache.lock_file()?;
                let source = match mm.sharing.unwrap_or(Sharing::Shared) {
                    Sharing::Shared => data,
                    Sharing::Locked => {
                        lock.lock().map_err(|e| BuildError::File {
                            what: format!("locking cache mount {id}"),
                            cause: e,
                        })?;
                        data
                    }
                    Sharing::Private => {
                        if lock.try_lock().is_ok() {
                            data
                        } else {
                            let p = private.path().join(format!("cache-{i}"));
                            fs::create_dir(&p).map_err(|e| BuildError::File {
                                what: format!("creating {}", p.display()),
                                cause: e,
                            })?;
                            p
                        }
                    }
                };
                keep.push(Box::new(lock));
                spec.mounts.push(MountSpec::Cache {
                    source,
                    target: target.clone(),
                });
                targets.push(target);
            }
            MountType::Tmpfs => {
                let target = target.ok_or_else(|| {
                    BuildError::Instruction("RUN --mount=type=tmpfs needs a target".into())
                })?;
                spec.mounts.push(MountSpec::Tmpfs {
                    target: target.clone(),
                    size: mm.size,
                    mode: None,
                });
                targets.push(target);
            }
            MountType::Secret => {
                let id = mm.id.clone().unwrap_or_default();
                let Some(secret) = inputs.secrets.get(&id) else {
                    if mm.required {
                        return Err(BuildError::Instruction(format!(
                            "secret {id:?} is required but was not given (--secret id={id},...)"
                        )));
                    }
                    continue;
                };
                let value = secret.read()?;
                secret_values.push(value.clone());
                if let Some(var) = &mm.env {
                    spec.env
                        .push(format!("{var}={}", String::from_utf8_lossy(&value)));
                }
                if mm.env.is_none() || mm.target.is_some() {
                    let target =
                        target.unwrap_or_else(|| PathBuf::from(format!("/run/secrets/{id}")));
                    let file = private.write_file(
                        &format!("secret-{i}"),
                        &value,
                        mm.mode.unwrap_or(0o400),
                    )?;
                    let _ = std::os::unix::fs::chown(
                        &file,
                        Some(mm.uid.unwrap_or(0)),
                        Some(mm.gid.unwrap_or(0)),
                    );
                    spec.mounts.push(MountSpec::Bind {
                        source: file,
                        target: target.clone(),
                        readonly: true,
                    });
                    targets.push(target);
                }
            }
            MountType::Ssh => {
                let id = mm.id.clone().unwrap_or_else(|| "default".into());
                let Some(sock) = inputs.ssh.get(&id) else {
                    if mm.required {
                        return Err(BuildError::Instruction(format!(
                            "ssh agent {id:?} is required but was not given (--ssh {id}=SOCKET)"
                        )));
                    }
                    continue;
                };
                let target =
                    target.unwrap_or_else(|| PathBuf::from(format!("/run/buildkit/ssh_agent.{i}")));
                // Read-only still lets the process connect(); a writable
                // bind of a socket would be a copy.
                spec.mounts.push(MountSpec::Bind {
                    source: sock.clone(),
                    target: target.clone(),
                    readonly: true,
                });
                spec.env.push(format!("SSH_AUTH_SOCK={}", target.display()));
                targets.push(target);
            }
        }
    }
    if let Some(script) = &run.script_file {
        let file = private.write_file("script", script.content.as_bytes(), 0o755)?;
        spec.mounts.push(MountSpec::Bind {
            source: file,
            target: PathBuf::from(&script.path),
            readonly: true,
        });
        targets.push(PathBuf::from(&script.path));
    }
    let emit = |line: &str| step.output(line);
    let (status, tail) = std::thread::scope(|scope| {
        let capture = Capture::start(scope, secret_values, &emit)
            .map_err(BuildError::file("a pipe for the RUN's output"))?;
        let io = RunIo {
            stdout: Some(capture.writer()),
            stderr: Some(capture.writer()),
            ..RunIo::default()
        };
        let status = inputs.sandbox.run_with_io(&spec, io);
        let tail = capture.finish();
        let status = status.map_err(|e| BuildError::Io(format!("starting RUN: {e}")))?;
        Ok::<_, BuildError>((status, tail))
    })?;
    drop(keep);
    let code = exit_code(&status);
    if code != 0 {
        return Err(BuildError::RunFailed {
            command: run.argv.join(" "),
            code,
            tail: tail.into(),
        });
    }
    Ok(targets)
}
