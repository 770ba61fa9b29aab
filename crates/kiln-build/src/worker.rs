//! The worker: runs one op of the build graph over the outputs of its
//! inputs, with what every op shares (the store, snapshots, the sandbox,
//! the cache, the build context). Each layer-making op goes through the
//! cache (see `step_layer::cached_layer`). It does not decide what runs
//! when (the scheduler does) nor what an image's config is (the
//! frontend's lowering did).

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

use kiln_image::layer::Entry;
use kiln_image::{Descriptor, Digest, Store};
use kiln_sandbox::Sandbox;
use kiln_snapshot::Snapshots;

use crate::BuildError;
use crate::cache::Cache;
use crate::context::Context;
use crate::copy_step::{copy_step, primary_group};
use crate::exec::{RunInputs, execute, run_key};
use crate::fs::{StageFs, resolve_chown};
use crate::graph::{ExecOp, MkdirOp, Node, Op, SourceOp};
use crate::key::KeyHasher;
use crate::options::BuildOptions;
use crate::platform::check_can_run;
use crate::precompress::Precompress;
use crate::progress::Progress;
use crate::step_layer::{Entries, MadeLayer, cached_layer, definition_hit, record_definition};

pub(crate) struct Worker<'a> {
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
    pub(crate) run: AtomicUsize,
    pub(crate) cached: AtomicUsize,
}

/// What an op leaves: a filesystem, and the layer the op itself made (or
/// found in the cache) with when it was first made. An op that makes no
/// layer (a source, a merge, a WORKDIR that exists) has no time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Output {
    pub(crate) fs: StageFs,
    pub(crate) layer: Option<(Descriptor, Digest)>,
    pub(crate) made_at: Option<i64>,
}

impl Output {
    /// `made` on top of `below` (or alone).
    fn layered(below: Option<&Output>, made: MadeLayer) -> Output {
        let mut fs = below.map(|o| o.fs.clone()).unwrap_or_default();
        fs.layers.extend(made.layer.clone());
        Output {
            fs,
            layer: made.layer,
            made_at: Some(made.made_at),
        }
    }
}

impl Worker<'_> {
    /// Runs `node` over its inputs' outputs (in `node.inputs` order).
    pub(crate) fn run_op(&self, node: &Node, inputs: &[&Output]) -> Result<Output, BuildError> {
        match &node.op {
            Op::Source(source) => {
                let step = self.progress.start(&node.name);
                let fs = match source {
                    SourceOp::Scratch => StageFs::default(),
                    SourceOp::Image { image, .. } => StageFs::of(image),
                };
                step.done();
                Ok(Output {
                    fs,
                    ..Output::default()
                })
            }
            Op::Merge => {
                let step = (!node.name.is_empty()).then(|| self.progress.start(&node.name));
                let mut fs = StageFs::default();
                for i in inputs {
                    fs.layers.extend(i.fs.layers.iter().cloned());
                }
                if let Some(step) = step {
                    step.done();
                }
                Ok(Output {
                    fs,
                    ..Output::default()
                })
            }
            Op::Exec(exec) => self.exec(node, exec, inputs),
            Op::Copy(copy) => {
                let (onto, rest) = match copy.onto {
                    true => (inputs.first().copied(), inputs.get(1..).unwrap_or_default()),
                    false => (None, inputs),
                };
                let from = copy.from_node.and(rest.first()).map(|o| &o.fs);
                let made = copy_step(self, copy, onto.map(|o| &o.fs), from, node)?;
                // A --link copy's output is its layer alone: the merge after
                // it stacks it on the stage.
                Ok(Output::layered(onto.filter(|_| !copy.link), made))
            }
            Op::Mkdir(mkdir) => self.mkdir(node, mkdir, inputs[0]),
        }
    }

    fn exec(&self, node: &Node, op: &ExecOp, inputs: &[&Output]) -> Result<Output, BuildError> {
        let step = self.progress.start(&node.name);
        let base = &inputs[0].fs;
        let stage_fs = |index: usize| {
            op.stages
                .iter()
                .zip(&inputs[1..])
                .find(|((s, _), _)| *s == index)
                .map(|(_, out)| out.fs.clone())
        };
        let inputs_of_run = RunInputs {
            store: self.store,
            snaps: &self.snaps,
            mode: self.opts.snapshotter,
            sandbox: &self.sandbox,
            base,
            env: op.env.clone(),
            user: op.user.clone(),
            workdir: op.workdir.clone(),
            secrets: &self.opts.secrets,
            ssh: &self.opts.ssh,
            stage_fs: &stage_fs,
            context: &self.context,
            scratch: &self.scratch,
            platform: op.platform.to_string(),
            add_hosts: &self.opts.add_hosts,
            shm_size: self.opts.shm_size,
            ulimits: &self.opts.ulimits,
        };
        let key = run_key(&op.run, &inputs_of_run)?;
        // Cache mounts: noted for `--cache-to …,mounts=true`, restored from
        // `--cache-from` when the RUN runs (see cache_mount_transfer).
        let cache_mounts = crate::cache_mount::run_cache_mounts(&op.run, &stage_fs);
        let transfer = self.opts.cache_session.as_deref().map(|s| &s.mounts);
        transfer.inspect(|t| t.note_used(&cache_mounts));
        let made = cached_layer(self, &key, node.no_cache, step, |step| {
            check_can_run(&op.platform)?;
            transfer.inspect(|t| t.restore(self.store, &cache_mounts, step));
            let (entries, container) = execute(&op.run, &inputs_of_run, step)?;
            Ok(Entries {
                entries,
                keep_alive: container,
                private: true,
            })
        })?;
        Ok(Output::layered(Some(inputs[0]), made))
    }

    /// A WORKDIR: nothing if the directory exists, else a layer with it
    /// and its missing parents (BuildKit makes one too).
    fn mkdir(&self, node: &Node, op: &MkdirOp, below: &Output) -> Result<Output, BuildError> {
        let fs = &below.fs;
        let path = PathBuf::from(&op.path);
        let exists = || Output {
            fs: fs.clone(),
            ..Output::default()
        };
        // Known by its definition over the layers below, it needs none of
        // their files: an existing directory is recorded as no layer.
        let mut definition = KeyHasher::new("workdir-definition-v1");
        definition
            .json("op", op)
            .str("below", &fs.key().to_string());
        let definition = definition.finish();
        if !node.no_cache
            && let Some(hit) = definition_hit(self, &definition)
        {
            if hit.layer.is_none() {
                return Ok(exists());
            }
            self.cached
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.progress.start(&node.name).cached();
            return Ok(Output::layered(Some(below), hit));
        }
        if fs.stat(self.store, &self.snaps, &path)?.is_some() {
            let none = MadeLayer {
                layer: None,
                made_at: crate::step_layer::unix_now(),
            };
            record_definition(self, &definition, &none)?;
            return Ok(exists());
        }
        let step = self.progress.start(&node.name);
        let owner = match op.user.as_str() {
            "" => (0, 0),
            u => {
                // A user without a group means that user's primary
                // group here, as for a process, not --chown's rule.
                let passwd = fs.read_file(self.store, &self.snaps, "/etc/passwd")?;
                let group = fs.read_file(self.store, &self.snaps, "/etc/group")?;
                let spec = if u.contains(':') {
                    u.to_string()
                } else {
                    primary_group(u, passwd.as_deref())
                };
                resolve_chown(&spec, passwd.as_deref(), group.as_deref())?
            }
        };
        let mut key = KeyHasher::new("workdir");
        key.str("path", &op.path).json("owner", &owner);
        let mut entries = Vec::new();
        for a in path.ancestors() {
            let rel = a.strip_prefix("/").unwrap_or(a);
            if rel.as_os_str().is_empty() {
                break;
            }
            // Existing ancestors are written as they are, so this
            // layer's copy of them does not hide their mode and owner.
            match fs.stat_owned(self.store, &self.snaps, a)? {
                Some((m, (ou, og))) => {
                    use std::os::unix::fs::MetadataExt;
                    key.str("exists", &rel.to_string_lossy());
                    key.json("meta", &(m.mode(), ou, og, m.mtime()));
                    entries.push(
                        Entry::dir(rel)
                            .with_mode(m.mode() & 0o7777)
                            .with_owner(u64::from(ou), u64::from(og))
                            .with_mtime(m.mtime()),
                    );
                }
                // Made for the current USER, as BuildKit and buildah do.
                None => entries.push(
                    Entry::dir(rel)
                        .with_mode(0o755)
                        .with_owner(owner.0, owner.1)
                        .with_mtime(self.now),
                ),
            }
        }
        let made = cached_layer(self, &key.finish(), node.no_cache, step, |_| {
            Ok(Entries::shared(entries))
        })?;
        record_definition(self, &definition, &made)?;
        Ok(Output::layered(Some(below), made))
    }
}
