//! The Dockerfile frontend's lowering to the build graph, without a store
//! or privileges: which instructions become ops, what each op reads, and
//! what each stage's config ends as.

use std::path::PathBuf;

use kiln_build::base::BaseImages;
use kiln_build::graph::lower::{Lowered, lower};
use kiln_build::graph::{Op, SourceOp};
use kiln_build::{BuildOptions, ContextKind};
use kiln_dockerfile::ResolveOptions;
use kiln_image::Platform;
use kiln_image::media::Compression;

/// The context lives at a path no definition may mention.
const HOST_CONTEXT: &str = "/home/someone/secret-project";

fn options(dockerfile: &str) -> BuildOptions {
    BuildOptions {
        dockerfile_name: "Dockerfile".into(),
        dockerfile: dockerfile.into(),
        context_dir: PathBuf::from(HOST_CONTEXT),
        dockerignore: None,
        build_args: Default::default(),
        target: None,
        platform: Platform::parse("linux/amd64").unwrap(),
        secrets: Default::default(),
        ssh: Default::default(),
        no_cache: false,
        no_cache_filter: Vec::new(),
        labels: Default::default(),
        isolation: Default::default(),
        snapshotter: kiln_snapshot::Mode::Copy,
        source_date_epoch: None,
        rewrite_timestamp: false,
        compression: Compression::None,
        named_contexts: Default::default(),
        context_kind: ContextKind::Local,
        platform_requested: false,
        add_hosts: Vec::new(),
        shm_size: None,
        ulimits: Vec::new(),
        network: kiln_dockerfile::instructions::Network::Default,
        entitlements: Default::default(),
        fetch_base: None,
        pull: false,
        cache_session: None,
    }
}

fn lowered(dockerfile: &str) -> (Lowered, BuildOptions) {
    let opts = options(dockerfile);
    let df = kiln_dockerfile::parse("Dockerfile", dockerfile).unwrap();
    let ropts = ResolveOptions::default();
    let build = kiln_dockerfile::resolve(&df, &ropts).unwrap();
    let lowered = lower(&build, &BaseImages::new(), &opts).unwrap();
    (lowered, opts)
}

const MULTI_STAGE: &str = "\
FROM scratch AS a
COPY one /one
FROM scratch AS b
COPY two /two
FROM a
ENV K=V
RUN --mount=type=bind,from=b,target=/b true
COPY --link --from=b /two /linked
WORKDIR /work
CMD [\"run\"]
";

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Source(SourceOp::Scratch) => "scratch",
        Op::Source(SourceOp::Image { .. }) => "image",
        Op::Exec(_) => "exec",
        Op::Copy(_) => "copy",
        Op::Mkdir(_) => "mkdir",
        Op::Merge => "merge",
    }
}

#[test]
fn metadata_instructions_make_no_ops_and_layer_instructions_do() {
    let (l, _) = lowered(MULTI_STAGE);
    let target = &l.stages[&l.target];
    let last = &l.graph.nodes[target.last];
    assert_eq!(op_name(&last.op), "mkdir", "WORKDIR is the stage's last op");
    // Target stage: FROM a (a merge that shows its FROM line), RUN, the
    // link copy and its merge, WORKDIR. ENV and CMD are not ops.
    let names: Vec<&str> = l.graph.nodes.iter().map(|n| op_name(&n.op)).collect();
    assert_eq!(
        names,
        [
            "scratch", "copy", "scratch", "copy", "merge", "exec", "copy", "merge", "mkdir"
        ]
    );
    let rt = target.image.config.runtime();
    assert_eq!(rt.env_var("K"), Some("V"));
    assert_eq!(rt.cmd.as_deref(), Some(&["run".to_string()][..]));
    assert_eq!(rt.working_dir.as_deref(), Some("/work"));
    // Every instruction after FROM has a history entry; four of them
    // (COPY of stage a, RUN, COPY --link, WORKDIR) take their layer from an op.
    assert_eq!(target.image.config.history.len(), 6);
    assert_eq!(target.layer_steps.len(), 4);
    assert!(target.image.layers.is_empty(), "layers come from the ops");
}

#[test]
fn ops_read_exactly_the_filesystems_they_need() {
    let (l, _) = lowered(MULTI_STAGE);
    let b_last = l.stages[&1].last;
    let node = |name: &str| {
        l.graph
            .nodes
            .iter()
            .position(|n| op_name(&n.op) == name && n.name.contains("[stage-2"))
            .unwrap()
    };
    let run = &l.graph.nodes[node("exec")];
    assert_eq!(run.inputs.len(), 2, "the root filesystem and stage b");
    assert_eq!(run.inputs[1], b_last);
    // The link copy reads stage b only, not the RUN before it: it can
    // run while the RUN does. The merge after it stacks it on the RUN.
    let copy_id = l
        .graph
        .nodes
        .iter()
        .position(|n| n.name.contains("COPY --link"))
        .unwrap();
    assert_eq!(l.graph.nodes[copy_id].inputs, vec![b_last]);
    let merge = &l.graph.nodes[copy_id + 1];
    assert_eq!(op_name(&merge.op), "merge");
    assert_eq!(merge.inputs, vec![node("exec"), copy_id]);
    // Stages a and b share nothing.
    let a_copy = &l.graph.nodes[1];
    let b_copy = &l.graph.nodes[3];
    assert_ne!(a_copy.inputs, b_copy.inputs);
}

#[test]
fn a_named_chown_makes_a_link_copy_read_the_stage_for_its_passwd() {
    let (l, _) = lowered("FROM scratch\nRUN true\nCOPY --link --chown=app one /one\n");
    let copy = l
        .graph
        .nodes
        .iter()
        .find(|n| n.name.contains("COPY"))
        .unwrap();
    assert_eq!(copy.inputs.len(), 1, "reads the RUN's filesystem");
    let (l, _) = lowered("FROM scratch\nRUN true\nCOPY --link --chown=1:2 one /one\n");
    let copy = l
        .graph
        .nodes
        .iter()
        .find(|n| n.name.contains("COPY"))
        .unwrap();
    assert!(copy.inputs.is_empty(), "a numeric owner needs no passwd");
}

#[test]
fn the_definition_is_stable_and_holds_no_host_path() {
    let (l, _) = lowered(MULTI_STAGE);
    let def = l.graph.definition();
    let text = serde_json::to_string(&def).unwrap();
    assert!(!text.contains(HOST_CONTEXT), "{text}");
    // The same Dockerfile lowers to the same definition.
    let (again, _) = lowered(MULTI_STAGE);
    assert_eq!(def, again.graph.definition());
    let ops: Vec<&str> = def
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "source", "copy", "source", "copy", "merge", "exec", "copy", "merge", "mkdir"
        ]
    );
    let exec = &def[5];
    assert_eq!(exec["platform"], "linux/amd64");
    assert_eq!(exec["workdir"], "/");
    assert_eq!(exec["inputs"], serde_json::json!([4, 3]));
}

#[test]
fn the_stage_plan_has_a_job_per_named_stage_the_target_needs() {
    let opts = options(
        "FROM scratch AS deps\nCOPY a /a\n\
         FROM deps\nCOPY b /b\n\
         FROM scratch AS build\nCOPY --from=1 /b /b\n\
         FROM scratch AS unused\nCOPY x /x\n\
         FROM scratch AS final\nCOPY --from=build /b /b\n",
    );
    let jobs = kiln_build::plan::stage_jobs(&opts).unwrap();
    let job = |target: Option<&str>, deps: &[&str]| kiln_build::plan::StageJob {
        target: target.map(str::to_string),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    };
    // The unnamed stage 1 cannot be a target: `build` builds it along,
    // and so depends on `deps` through it. `unused` is not needed.
    assert_eq!(
        jobs,
        vec![
            job(Some("deps"), &[]),
            job(Some("build"), &["deps"]),
            job(None, &["build"]),
        ]
    );
}
