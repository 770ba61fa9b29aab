//! The solver: resolves the Dockerfile against the base images it names,
//! lowers it to the build graph, has the scheduler run the ops the target
//! needs (each as soon as its inputs are done, through the worker and the
//! cache), and assembles the target stage's image from its plan.

use std::sync::atomic::Ordering;

use kiln_dockerfile::stage::Stage;
use kiln_image::{Image, NewLayer, Store};
use kiln_sandbox::Sandbox;
use kiln_snapshot::Snapshots;

use crate::base::load_bases;
use crate::cache::Cache;
use crate::context::Context;
use crate::graph::lower::lower;
use crate::graph::{Node, StagePlan};
use crate::options::{BuildOptions, BuildResult};
use crate::precompress::Precompress;
use crate::progress::Progress;
use crate::source::ContextKind;
use crate::step_layer::stamp_times;
use crate::worker::{Output, Worker};
use crate::{BuildError, sched};

/// Builds the target stage and writes its image into `store` (untagged).
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    progress: &Progress,
) -> Result<BuildResult, BuildError> {
    let df = kiln_dockerfile::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut ropts = opts.resolve_options();
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
    let (bases, platform_warnings) = load_bases(store, opts, &first.stages, &mut ropts.images)?;
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
    let lowered = lower(&build, &bases, opts)?;
    let plan = lowered
        .stages
        .get(&lowered.target)
        .ok_or_else(|| BuildError::Instruction("the target stage was not lowered".into()))?;
    let session = opts.cache_session.as_deref();
    let (image, manifest, steps_run, steps_cached) = loop {
        let breaks = session.map_or(0, |s| s.breaks());
        match solve(store, opts, progress, &lowered.graph, plan) {
            // A cache failed under the build (a layer it named is gone or
            // lies): what this attempt took from it cannot be trusted, so
            // the build goes again without it (it is not asked again, so
            // this ends).
            Err(_) if session.is_some_and(|s| s.breaks() > breaks) => {
                progress.note("an imported cache failed; building again without it");
            }
            solved => break solved?,
        }
    };
    if let Some(s) = session {
        s.settle_bases(store);
    }
    Ok(BuildResult {
        image,
        manifest,
        steps_run,
        steps_cached,
        warnings,
        base: plan.base.clone(),
    })
}

/// One attempt at the build: runs the ops the target needs and writes its
/// image's config and manifest into the store (no name: the caller names
/// it). Its layers are made present when the outputs need their bytes.
fn solve(
    store: &Store,
    opts: &BuildOptions,
    progress: &Progress,
    graph: &crate::graph::Graph,
    plan: &StagePlan,
) -> Result<(Image, kiln_image::transport::RawManifest, usize, usize), BuildError> {
    let worker = new_worker(store, opts, progress)?;
    let outputs = std::thread::scope(|s| {
        let worker = &worker;
        s.spawn(move || worker.precompress.work(worker.store));
        let solved = sched::run(&graph.deps(), &[plan.last], |n, inputs, _| {
            let node = &graph.nodes[n];
            worker
                .run_op(node, inputs)
                .map_err(|e| step_failure(opts, node, e))
        });
        if solved.is_ok() && worker.precompress.busy() {
            let step = worker.progress.start("compressing layers");
            worker.precompress.wait();
            step.done();
        }
        if solved.is_err() {
            worker.precompress.abandon();
        }
        worker.precompress.close();
        solved
    });
    worker.context.save();
    worker.cache.settle();
    let outputs = outputs?;
    let mut image = assemble(plan, &outputs, opts.source_date_epoch)?;
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
    if let Some(s) = opts.cache_session.as_deref()
        && s.outputs_need_bytes()
    {
        for l in &image.layers {
            s.ensure(store, &l.digest).map_err(BuildError::Io)?;
        }
        worker.cache.settle();
    }
    let manifest = image.write(store)?;
    Ok((
        image,
        manifest,
        worker.run.load(Ordering::Relaxed),
        worker.cached.load(Ordering::Relaxed),
    ))
}

fn new_worker<'a>(
    store: &'a Store,
    opts: &'a BuildOptions,
    progress: &'a Progress,
) -> Result<Worker<'a>, BuildError> {
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
    // Every layer unpacked for the build comes through here: one still in
    // a registry is fetched then, once.
    let mut snaps = Snapshots::open(store)?;
    if let Some(session) = &opts.cache_session {
        let session = session.clone();
        snaps = snaps.with_ensure_blob(std::sync::Arc::new(move |store, blob| {
            session.ensure(store, &blob.digest)
        }));
    }
    Ok(Worker {
        store,
        opts,
        progress,
        snaps,
        cache: Cache::with_session(store, opts.cache_session.clone())?,
        precompress: Precompress::new(opts.compression),
        context,
        sandbox: Sandbox::new(opts.isolation)
            .map_err(|e| BuildError::Io(format!("sandbox: {e}")))?,
        scratch: store.dir("tmp")?,
        now,
        run: Default::default(),
        cached: Default::default(),
    })
}

/// An op's error as the step that failed: where in the Dockerfile, and
/// why (ops that come from no instruction report the error as it is).
fn step_failure(opts: &BuildOptions, node: &Node, cause: BuildError) -> BuildError {
    match &node.origin {
        None => cause,
        Some(o) => BuildError::Step(Box::new(crate::StepFailure {
            file: opts.dockerfile_name.clone(),
            line: o.line,
            instruction: o.instruction.clone(),
            name: node.name.clone(),
            excerpt: crate::excerpt(&opts.dockerfile, o.span.clone()),
            cause,
        })),
    }
}

/// A stage's image: its plan's config, with each of this build's history
/// entries given the layer (or none) and the time of the op behind it.
fn assemble(
    plan: &StagePlan,
    outputs: &[Option<Output>],
    source_date_epoch: Option<i64>,
) -> Result<Image, BuildError> {
    let mut image = plan.image.clone();
    let ours = image.config.history.split_off(plan.base_history);
    let mut steps = plan.layer_steps.iter().peekable();
    for (i, mut h) in ours.into_iter().enumerate() {
        let at = plan.base_history + i;
        let Some(&(_, node)) = steps.next_if(|(h_at, _)| *h_at == at) else {
            image = image.with_empty_history(h);
            continue;
        };
        let out = outputs[node].as_ref().ok_or_else(|| {
            BuildError::Instruction(format!("step {node} of the target stage did not run"))
        })?;
        if h.created.is_none() {
            h.created = source_date_epoch
                .or(out.made_at)
                .map(kiln_image::time::rfc3339);
        }
        image = match &out.layer {
            Some((blob, diff_id)) => image.with_layer(
                NewLayer {
                    blob: blob.clone(),
                    diff_id: diff_id.clone(),
                },
                h,
            ),
            None => image.with_empty_history(h),
        };
    }
    Ok(image)
}
