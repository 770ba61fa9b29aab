//! The build graph: what a frontend lowers a build to and the solver runs.
//! A node is one filesystem op (a source image, a RUN, a copy, a missing
//! WORKDIR, a merge of two filesystems) with explicit inputs; each node's
//! output is a filesystem (an ordered list of layers). Image metadata is
//! not in the graph: the frontend computes each stage's config while it
//! lowers (as BuildKit's dockerfile2llb does), and the stage's image is
//! its config over the layers of its last node (see [`StagePlan`]).
//!
//! An op's cache key is computed when it runs, from its definition and
//! the content addresses of its inputs (their layers' diff IDs) and of
//! the context files it reads; `docs/cache-keys.md` documents what enters.
//! The definition (`Graph::definition`) is a stable JSON value: no host
//! path, store path or time is in it.
//!
//! It does not execute anything (the worker does) nor decide order (the
//! scheduler does).

pub mod lower;

use kiln_dockerfile::instructions::{Chmod, FromRef, Run, Source as CopySource};
use kiln_image::{Image, Platform};
use serde::Serialize;

/// A node's index in [`Graph::nodes`].
pub type NodeId = usize;

#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

#[derive(Debug)]
pub struct Node {
    pub op: Op,
    /// The nodes whose outputs this op reads (see [`Op`] for their order).
    pub inputs: Vec<NodeId>,
    /// The step as progress and errors name it (`[build 2/5] RUN make`).
    pub name: String,
    /// The instruction it came from, for errors that point at it.
    pub origin: Option<Origin>,
    /// `--no-cache` (or `--no-cache-filter`) covers this op.
    pub no_cache: bool,
}

/// Where in the build file a node comes from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub line: usize,
    pub span: std::ops::Range<usize>,
    /// The instruction as written (continuations joined).
    pub instruction: String,
}

/// One op. Inputs, in [`Node::inputs`] order:
/// - `Source`: none (an image's layers are its own).
/// - `Exec`: the root filesystem, then the stages its mounts read.
/// - `Copy`: the destination filesystem (absent for `--link` without a
///   named owner), then the stage it copies from, if any.
/// - `Mkdir`: the filesystem to create the directory in.
/// - `Merge`: the filesystems to stack, bottom first.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    Source(SourceOp),
    Exec(Box<ExecOp>),
    Copy(Box<CopyOp>),
    Mkdir(MkdirOp),
    Merge,
}

#[derive(Debug, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum SourceOp {
    Scratch,
    /// A base image, resolved before lowering (its config shaped the
    /// stage's), by reference and platform.
    Image {
        reference: String,
        platform: String,
        /// The image's manifest digest: what the source is, whatever the
        /// reference points at later.
        digest: String,
        #[serde(skip)]
        image: Box<Image>,
    },
}

/// A RUN: a command over the root filesystem, its diff a layer.
#[derive(Debug, Serialize)]
pub struct ExecOp {
    /// The command, its mounts, network and security, fully expanded.
    pub run: Run,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    /// What the command executes as: the same command on the same layers
    /// makes another layer on another architecture.
    #[serde(serialize_with = "display")]
    pub platform: Platform,
    /// Stage index → the node whose output is that stage's filesystem,
    /// for the mounts that read other stages.
    pub stages: Vec<(usize, NodeId)>,
}

/// COPY and ADD.
#[derive(Debug, Serialize)]
pub struct CopyOp {
    /// `COPY` or `ADD`: ADD unpacks archives and fetches URLs.
    pub instruction: &'static str,
    pub sources: Vec<CopySource>,
    pub dest: String,
    pub from: Option<FromRef>,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub unpack: bool,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// The stage's working directory, against which `dest` is resolved.
    pub workdir: String,
    /// The platform an image named by `--from` is loaded for.
    #[serde(serialize_with = "display")]
    pub platform: Platform,
    /// `--from` a stage: the node of that stage's filesystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_node: Option<NodeId>,
    /// The destination filesystem is an input (see [`Op`]).
    pub onto: bool,
}

/// A WORKDIR that does not exist yet, made (with its missing parents) for
/// the user the stage runs as.
#[derive(Debug, Serialize)]
pub struct MkdirOp {
    pub path: String,
    pub user: String,
}

/// A stage as the frontend lowered it: the config it ends with, and which
/// nodes its history entries take their layers from.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// The stage's image with its final config; its layers are those of
    /// its base only, and its history has a placeholder for each layer op.
    pub image: Image,
    /// History index → the node that makes the layer (or nothing) of that
    /// history entry.
    pub layer_steps: Vec<(usize, NodeId)>,
    /// The node whose output is the stage's filesystem.
    pub last: NodeId,
    /// How many history entries the image the stage (or the stage it
    /// builds on) started from had: the entries after those are this
    /// build's.
    pub base_history: usize,
    /// The image the stage's filesystem starts from, through the stages it
    /// builds on: its reference as FROM names it and its manifest digest
    /// (`None` from scratch or a build context).
    pub base: Option<(String, String)>,
}

impl Graph {
    pub fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Each node's inputs, as the scheduler takes them.
    pub fn deps(&self) -> Vec<Vec<usize>> {
        self.nodes.iter().map(|n| n.inputs.clone()).collect()
    }

    /// The graph as a stable JSON value: each node's op and inputs.
    pub fn definition(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Def<'a> {
            #[serde(flatten)]
            op: &'a Op,
            inputs: &'a [NodeId],
        }
        let defs: Vec<Def<'_>> = self
            .nodes
            .iter()
            .map(|n| Def {
                op: &n.op,
                inputs: &n.inputs,
            })
            .collect();
        // Ops hold strings, numbers and lists of them: they always serialize.
        serde_json::to_value(defs).expect("ops serialize")
    }
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}
