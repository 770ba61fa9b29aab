//! The Dockerfile frontend's lowering: resolved stages (see
//! `kiln_dockerfile::resolve`) and their loaded base images become a
//! [`Graph`] of filesystem ops and a [`StagePlan`] per stage. Metadata
//! instructions (ENV, CMD, LABEL, USER, ...) end here, in the stage's
//! config, through the one config edit `kiln mutate` also uses; COPY, ADD,
//! RUN and a missing WORKDIR become ops that read the config they need
//! (environment, user, working directory) from their definition.

use std::collections::BTreeMap;

use kiln_dockerfile::change::config_edits;
use kiln_dockerfile::instructions::{FromRef, Instr, Network, Resolved};
use kiln_dockerfile::mount::MountType;
use kiln_dockerfile::stage::{Base, Stage};
use kiln_dockerfile::{ResolvedBuild, instructions};
use kiln_image::config_edit::{self, ConfigEdit};
use kiln_image::{History, Image, Platform};

use super::{CopyOp, ExecOp, Graph, MkdirOp, Node, NodeId, Op, Origin, SourceOp, StagePlan};
use crate::BuildError;
use crate::base::{BaseImages, context_name, key, platform_asked};
use crate::options::BuildOptions;
use crate::platform::stage_platform;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A lowered build: the graph, each stage's plan (by stage index) and the
/// target stage.
pub struct Lowered {
    pub graph: Graph,
    pub stages: BTreeMap<usize, StagePlan>,
    pub target: usize,
}

/// Lowers every stage of `build` (they come in an order where each stage
/// follows those it depends on).
pub fn lower(
    build: &ResolvedBuild,
    bases: &BaseImages,
    opts: &BuildOptions,
) -> Result<Lowered, BuildError> {
    let mut lowered = Lowered {
        graph: Graph::default(),
        stages: BTreeMap::new(),
        target: build.target,
    };
    for stage in &build.stages {
        let plan = lower_stage(&mut lowered, build, stage, bases, opts)?;
        lowered.stages.insert(stage.index, plan);
    }
    Ok(lowered)
}

/// A history entry of this build. With SOURCE_DATE_EPOCH its time is
/// that; otherwise it is filled in when the op behind it has run (see
/// `solver::assemble`).
fn history(opts: &BuildOptions, created_by: String) -> History {
    History {
        created: opts.source_date_epoch.map(kiln_image::time::rfc3339),
        created_by: Some(created_by),
        comment: Some("buildkit.dockerfile.v0".into()),
        ..History::default()
    }
}

struct StageLowering<'a> {
    graph: &'a mut Graph,
    opts: &'a BuildOptions,
    stages: &'a BTreeMap<usize, StagePlan>,
    label: String,
    total: usize,
    no_cache: bool,
    image: Image,
    layer_steps: Vec<(usize, NodeId)>,
    last: NodeId,
}

fn lower_stage(
    lowered: &mut Lowered,
    build: &ResolvedBuild,
    stage: &Stage,
    bases: &BaseImages,
    opts: &BuildOptions,
) -> Result<StagePlan, BuildError> {
    let label = stage_label(stage);
    let total = stage.instructions.len() + 1;
    let from_name = format!("[{label} 1/{total}] {}", from_line(build, stage));
    let platform = stage_platform(stage, &opts.platform)?;
    let graph = &mut lowered.graph;
    let source = |graph: &mut Graph, op: Op, inputs: Vec<NodeId>| {
        graph.add(Node {
            op,
            inputs,
            name: from_name.clone(),
            origin: None,
            no_cache: false,
        })
    };
    let image_source = |graph: &mut Graph, name: &str| {
        let base = bases
            .get(&key(name, &platform))
            .ok_or_else(|| BuildError::Instruction(format!("base image {name} was not loaded")))?;
        let op = Op::Source(SourceOp::Image {
            reference: name.to_string(),
            platform: platform.to_string(),
            digest: base.digest.to_string(),
            image: Box::new(base.image.clone()),
        });
        let node = source(graph, op, Vec::new());
        Ok::<_, BuildError>((base.image.clone(), base.digest.to_string(), node))
    };
    let (mut image, layer_steps, last, base_history, base) = match &stage.base {
        Base::Scratch => {
            let node = source(graph, Op::Source(SourceOp::Scratch), Vec::new());
            (Image::scratch(&platform), Vec::new(), node, 0, None)
        }
        Base::Image { reference } => {
            let (image, digest, node) = image_source(graph, reference)?;
            let n = image.config.history.len();
            (
                image,
                Vec::new(),
                node,
                n,
                Some((reference.clone(), digest)),
            )
        }
        Base::Context { name } => {
            let (image, _, node) = image_source(graph, &context_name(name))?;
            let n = image.config.history.len();
            (image, Vec::new(), node, n, None)
        }
        Base::Stage { index } => {
            let plan = lowered.stages.get(index).ok_or_else(|| {
                BuildError::Instruction(format!("FROM stage {index}: it was not lowered first"))
            })?;
            // The stage's own FROM line still shows, once its base is done.
            let node = source(graph, Op::Merge, vec![plan.last]);
            (
                plan.image.clone(),
                plan.layer_steps.clone(),
                node,
                plan.base_history,
                plan.base.clone(),
            )
        }
    };
    // As BuildKit: the stage's image is for the stage's platform, which
    // is also what a RUN in it must be able to execute. A base image for
    // another platform, where none was asked for, keeps its own: labelling
    // its files with the host's would be a lie (the build warned).
    let foreign_base = matches!(stage.base, Base::Image { .. } | Base::Context { .. })
        && !platform_asked(opts, stage)
        && (image.config.os != platform.os || image.config.architecture != platform.architecture);
    if !foreign_base {
        image.config.os = platform.os.clone();
        image.config.architecture = platform.architecture.clone();
        image.config.variant = platform.variant.clone();
    }
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
    let mut s = StageLowering {
        graph,
        opts,
        stages: &lowered.stages,
        no_cache: opts.no_cache
            || stage
                .name
                .as_ref()
                .is_some_and(|n| opts.no_cache_filter.contains(n)),
        label,
        total,
        image,
        layer_steps,
        last,
    };
    let mut cmd_set = false;
    for (i, r) in stage.instructions.iter().enumerate() {
        s.instruction(i, r, &mut cmd_set)?;
    }
    Ok(StagePlan {
        image: s.image,
        layer_steps: s.layer_steps,
        last: s.last,
        base_history,
        base,
    })
}

impl StageLowering<'_> {
    fn node(&mut self, i: usize, r: &Resolved, op: Op, inputs: Vec<NodeId>) -> NodeId {
        self.graph.add(Node {
            op,
            inputs,
            name: format!(
                "[{} {}/{}] {}",
                self.label,
                i + 2,
                self.total,
                r.original.trim()
            ),
            origin: Some(Origin {
                line: r.line,
                span: r.span.clone(),
                instruction: r.original.trim().to_string(),
            }),
            no_cache: self.no_cache,
        })
    }

    /// A history entry whose layer (or none) `node` makes.
    fn layer_step(&mut self, created_by: String, node: NodeId) {
        self.push_history(created_by);
        self.layer_steps
            .push((self.image.config.history.len() - 1, node));
    }

    fn edit(&mut self, created_by: String, edits: &[ConfigEdit]) {
        for e in edits {
            config_edit::apply(&mut self.image.config, e);
        }
        self.push_history(created_by);
    }

    /// An entry without a layer (a layer op's is set when it has run).
    fn push_history(&mut self, created_by: String) {
        self.image.config.history.push(History {
            empty_layer: true,
            ..history(self.opts, created_by)
        });
    }

    fn platform(&self) -> Platform {
        let c = &self.image.config;
        Platform {
            os: c.os.clone(),
            architecture: c.architecture.clone(),
            variant: c.variant.clone(),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    fn workdir(&self) -> String {
        let rt = self.image.config.runtime();
        rt.working_dir.clone().unwrap_or_else(|| "/".into())
    }

    fn stage_last(&self, index: usize) -> Result<NodeId, BuildError> {
        self.stages.get(&index).map(|p| p.last).ok_or_else(|| {
            BuildError::Instruction(format!("stage {index} is used before it is built"))
        })
    }

    fn instruction(
        &mut self,
        i: usize,
        r: &Resolved,
        cmd_set: &mut bool,
    ) -> Result<(), BuildError> {
        let created_by = r.original.trim().to_string();
        match &r.instr {
            Instr::Shell { shell } => {
                self.image.config.runtime_mut().shell = Some(shell.clone());
                self.edit(created_by, &[]);
            }
            Instr::Healthcheck(h) => {
                self.image.config.runtime_mut().healthcheck =
                    Some(kiln_image::config::Healthcheck {
                        test: Some(h.test.clone()),
                        interval: h.interval_ns.map(|n| n as i64),
                        timeout: h.timeout_ns.map(|n| n as i64),
                        start_period: h.start_period_ns.map(|n| n as i64),
                        start_interval: h.start_interval_ns.map(|n| n as i64),
                        retries: h.retries.map(i64::from),
                        ..Default::default()
                    });
                self.edit(created_by, &[]);
            }
            Instr::Maintainer { name: who } => {
                self.image.config.author = Some(who.clone());
                self.edit(created_by, &[]);
            }
            Instr::Arg { .. } => {}
            Instr::Workdir { resolved, .. } => {
                config_edit::apply(
                    &mut self.image.config,
                    &ConfigEdit::Workdir(resolved.clone()),
                );
                let user = self.image.config.runtime().user.clone().unwrap_or_default();
                let op = Op::Mkdir(MkdirOp {
                    path: resolved.clone(),
                    user,
                });
                let last = self.last;
                let node = self.node(i, r, op, vec![last]);
                self.last = node;
                self.layer_step(created_by, node);
            }
            Instr::Copy(c) => {
                let op = CopyOp {
                    instruction: "COPY",
                    sources: c.sources.clone(),
                    dest: c.dest.clone(),
                    from: c.from.clone(),
                    chown: c.chown.clone(),
                    chmod: c.chmod.clone(),
                    link: c.link,
                    parents: c.parents,
                    exclude: c.exclude.clone(),
                    unpack: false,
                    checksum: None,
                    keep_git_dir: false,
                    workdir: self.workdir(),
                    platform: self.platform(),
                    from_node: None,
                    onto: true,
                };
                self.copy(i, r, op, created_by)?;
            }
            Instr::Add(a) => {
                let op = CopyOp {
                    instruction: "ADD",
                    sources: a.sources.clone(),
                    dest: a.dest.clone(),
                    from: None,
                    chown: a.chown.clone(),
                    chmod: a.chmod.clone(),
                    link: a.link,
                    parents: false,
                    exclude: a.exclude.clone(),
                    unpack: a.unpack.unwrap_or(true),
                    checksum: a.checksum.clone(),
                    keep_git_dir: a.keep_git_dir,
                    workdir: self.workdir(),
                    platform: self.platform(),
                    from_node: None,
                    onto: true,
                };
                self.copy(i, r, op, created_by)?;
            }
            Instr::Run(run) => self.run(i, r, run)?,
            instr => {
                // The rest edit the config as `--change` and `kiln mutate`
                // do: one mapping, one pure apply.
                let edits = config_edits(instr).ok_or_else(|| {
                    BuildError::Instruction(format!("{created_by}: not a config instruction"))
                })?;
                let kept = self.image.config.runtime().cmd.clone();
                self.edit(created_by, &edits);
                match instr {
                    Instr::Cmd { .. } => *cmd_set = true,
                    // As Docker: an ENTRYPOINT drops a CMD inherited from
                    // the base (the edit does that), not one this stage set.
                    Instr::Entrypoint { .. } if *cmd_set => {
                        self.image.config.runtime_mut().cmd = kept;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn copy(
        &mut self,
        i: usize,
        r: &Resolved,
        mut op: CopyOp,
        created_by: String,
    ) -> Result<(), BuildError> {
        // A --link copy does not read the filesystem it lands on (BuildKit
        // makes it on scratch and merges it), so it can run while earlier
        // steps still do; unless a named --chown needs its /etc/passwd.
        let named_owner = op
            .chown
            .as_deref()
            .is_some_and(|c| !c.split(':').all(|p| p.parse::<u64>().is_ok()));
        op.onto = !op.link || named_owner;
        let mut inputs = Vec::new();
        if op.onto {
            inputs.push(self.last);
        }
        if let Some(FromRef::Stage { index, .. }) = &op.from {
            let from = self.stage_last(*index)?;
            op.from_node = Some(from);
            inputs.push(from);
        }
        let link = op.link;
        let node = self.node(i, r, Op::Copy(Box::new(op)), inputs);
        self.layer_step(format!("{created_by} # buildkit"), node);
        self.last = if link {
            self.graph.add(Node {
                op: Op::Merge,
                inputs: vec![self.last, node],
                name: String::new(),
                origin: None,
                no_cache: false,
            })
        } else {
            node
        };
        Ok(())
    }

    fn run(&mut self, i: usize, r: &Resolved, run: &instructions::Run) -> Result<(), BuildError> {
        let rt = self.image.config.runtime();
        let mut env = rt.env.clone().unwrap_or_default();
        for v in &run.env {
            if !env
                .iter()
                .any(|e| e.split('=').next() == Some(v.key.as_str()))
            {
                env.push(format!("{}={}", v.key, v.value));
            }
        }
        let user = rt.user.clone().unwrap_or_default();
        // `kiln build --network` is the default of a RUN without its own.
        let mut run = run.clone();
        if run.network == Network::Default {
            run.network = self.opts.network;
        }
        let mut inputs = vec![self.last];
        let mut stages = Vec::new();
        for m in &run.mounts {
            let reads_stage = matches!(m.mount.kind, MountType::Bind | MountType::Cache);
            if let (true, Some(FromRef::Stage { index, .. })) = (reads_stage, &m.from_ref)
                && !stages.iter().any(|(s, _)| s == index)
            {
                let node = self.stage_last(*index)?;
                stages.push((*index, node));
                inputs.push(node);
            }
        }
        let created_by = run.created_by.clone();
        let op = ExecOp {
            run,
            env,
            user,
            workdir: self.workdir(),
            platform: self.platform(),
            stages,
        };
        let node = self.node(i, r, Op::Exec(Box::new(op)), inputs);
        self.last = node;
        self.layer_step(created_by, node);
        Ok(())
    }
}

/// A stage's FROM as progress shows it: what it builds on, its arguments
/// expanded (BuildKit prints the resolved reference, not `FROM $BASE`).
fn from_line(build: &ResolvedBuild, stage: &Stage) -> String {
    let base = match &stage.base {
        Base::Scratch => "scratch".to_string(),
        Base::Image { reference } => reference.clone(),
        Base::Stage { index } => build
            .stages
            .iter()
            .find(|s| s.index == *index)
            .map_or_else(|| format!("stage-{index}"), stage_label),
        Base::Context { name } => name.clone(),
    };
    match stage.platform.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => format!("FROM --platform={p} {base}"),
        None => format!("FROM {base}"),
    }
}

fn stage_label(stage: &Stage) -> String {
    stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.index))
}
