//! The stage model: global ARGs, each stage's base (scratch, image, earlier
//! stage or named context) and platform, the dependency graph between
//! stages (FROM, COPY --from, RUN --mount from=), the target and the
//! stages it needs, and cycle detection. [`resolve`] drives everything.
//!
//! Per-instruction work is in `instructions`; lint rules in `lint`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::convert;
use crate::diag::{Diag, Diagnostics, Source, Span};
use crate::expand;
use crate::instructions::{ArgValue, FromRef, Resolved, Var};
use crate::lint;
use crate::parse::{Args, Dockerfile, Instruction as Parsed, Keyword};
use crate::scope::{self, Platform, Scope};

/// What the caller knows about an image (from its config), so expansion
/// can see the base image's ENV and ONBUILD triggers can run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageInfo {
    /// `Config.Env` as key/value pairs.
    pub env: Vec<(String, String)>,
    /// `Config.OnBuild` trigger expressions.
    pub onbuild: Vec<String>,
    /// `Config.WorkingDir`.
    pub workdir: Option<String>,
    /// `Config.Shell`.
    pub shell: Option<Vec<String>>,
}

/// Inputs of [`resolve`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResolveOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Target stage name; `None` means the last stage.
    pub target: Option<String>,
    /// Platform the build runs on.
    pub build_platform: Platform,
    /// Platform the image is for.
    pub target_platform: Platform,
    /// Names of `--build-context` contexts.
    pub named_contexts: BTreeSet<String>,
    /// Image configs already known, keyed by the reference as written in
    /// FROM (after expansion). Resolve once without, fetch, resolve again.
    pub images: BTreeMap<String, ImageInfo>,
}

/// A stage's base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference (expanded).
    Image {
        /// The reference.
        reference: String,
    },
    /// An earlier stage.
    Stage {
        /// Its index.
        index: usize,
    },
    /// A named build context.
    Context {
        /// Its name.
        name: String,
    },
}

/// A resolved stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Index in the file (0-based).
    pub index: usize,
    /// Name (lower-cased), if any.
    pub name: Option<String>,
    /// Base.
    pub base: Base,
    /// Expanded `--platform`; `None` means the target platform.
    pub platform: Option<String>,
    /// Stages this one needs, by index, ascending.
    pub dependencies: Vec<usize>,
    /// Instructions, expanded, ONBUILD triggers of the base first.
    pub instructions: Vec<Resolved>,
    /// ENV at the end of the stage (base image ENV included when known).
    pub env: Vec<Var>,
    /// WORKDIR at the end of the stage.
    pub workdir: String,
    /// The FROM line.
    pub original: String,
    /// Span of the FROM instruction.
    pub span: Span,
    /// Line of FROM.
    pub line: usize,
}

/// Result of [`resolve`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedBuild {
    /// The stages the target needs, in an order they can be built (each
    /// after its dependencies), the target last.
    pub stages: Vec<Stage>,
    /// Index of the target stage.
    pub target: usize,
    /// Global (pre-FROM) ARGs and their values.
    pub global_args: Vec<ArgValue>,
    /// `SOURCE_DATE_EPOCH` build arg, parsed.
    pub source_date_epoch: Option<i64>,
    /// Build args no ARG consumed (BuildKit warns about these).
    pub unused_build_args: Vec<String>,
    /// Lint warnings.
    pub warnings: Vec<Diag>,
}

/// Per-stage state while converting instructions.
pub(crate) struct Ctx<'a> {
    pub src: &'a Source,
    pub escape: char,
    pub opts: &'a ResolveOptions,
    pub global: &'a [(String, Option<String>)],
    pub platform_args: &'a BTreeMap<String, String>,
    pub stage_names: &'a [Option<String>],
    pub index: usize,
    pub scope: Scope,
    pub shell: Vec<String>,
    pub workdir: String,
    pub workdir_set: bool,
    pub onbuild: Vec<String>,
    pub env_known: bool,
    pub ssh_count: usize,
    pub consumed: &'a mut BTreeSet<String>,
    pub diags: Vec<Diag>,
    pub deps: Vec<(usize, Span)>,
}

impl Ctx<'_> {
    /// Resolves a `--from` / `from=` value to a stage, context or image.
    pub(crate) fn resolve_from(&mut self, name: &str, span: &Span) -> Option<FromRef> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self
            .stage_names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            self.deps.push((i, span.clone()));
            return Some(FromRef::Stage {
                index: i,
                name: Some(lower),
            });
        }
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            return match name
                .parse::<usize>()
                .ok()
                .filter(|&i| i < self.stage_names.len())
            {
                Some(i) => {
                    self.deps.push((i, span.clone()));
                    Some(FromRef::Stage {
                        index: i,
                        name: self.stage_names[i].clone(),
                    })
                }
                None => {
                    let d = Diag::error(
                        "unknown-stage",
                        format!(
                            "stage index {name} out of range: the Dockerfile has {} stages",
                            self.stage_names.len()
                        ),
                        self.src,
                        span.clone(),
                    );
                    self.diags.push(d);
                    None
                }
            };
        }
        if self.opts.named_contexts.contains(name) {
            return Some(FromRef::Context {
                name: name.to_string(),
            });
        }
        if name.is_empty() {
            self.diags.push(Diag::error(
                "unknown-stage",
                "--from value is empty",
                self.src,
                span.clone(),
            ));
            return None;
        }
        if !looks_like_image(name) {
            let d = Diag::error(
                "unknown-stage",
                format!("{name:?} is not a stage, named context or valid image reference"),
                self.src,
                span.clone(),
            )
            .with_help(format!(
                "known stages: {}",
                self.stage_names
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            self.diags.push(d);
            return None;
        }
        if let Some(d) = lint::near_stage(self.src, name, self.stage_names, span) {
            self.diags.push(d);
        }
        Some(FromRef::Image {
            reference: name.to_string(),
        })
    }
}

/// Whether `r` is an image reference: the store's and the registry's own
/// grammar (`kiln_image::reference`), so that what FROM accepts is what
/// can be pulled.
fn looks_like_image(r: &str) -> bool {
    kiln_image::Reference::parse(r).is_ok()
}

struct StageOut {
    stage: Stage,
    diags: Vec<Diag>,
    deps: Vec<(usize, Span)>,
    shell: Vec<String>,
    onbuild: Vec<String>,
    scope_env: Vec<(String, String)>,
    scope_args: Vec<(String, Option<String>)>,
    workdir_set: bool,
    env_known: bool,
}

/// Resolves a parsed Dockerfile for a build: expands every instruction of
/// the stages the target needs, in build order. Errors (and the warnings
/// found so far) come back as `Err`.
pub fn resolve(df: &Dockerfile, opts: &ResolveOptions) -> Result<ResolvedBuild, Diagnostics> {
    let src = df.source();
    let escape = df.directives.escape;
    let mut diags: Vec<Diag> = df.warnings.clone();
    let platform_args = scope::platform_args(&opts.build_platform, &opts.target_platform);
    let mut consumed = BTreeSet::new();

    // Global ARGs: visible in FROM; a build arg overrides the default.
    let first_from = df
        .instructions
        .iter()
        .position(|i| i.keyword == Keyword::From)
        .unwrap_or(df.instructions.len());
    let mut global: Vec<(String, Option<String>)> = Vec::new();
    let mut global_args = Vec::new();
    for ins in &df.instructions[..first_from] {
        let Args::KeyValues { pairs, .. } = &ins.args else {
            continue;
        };
        for p in pairs {
            consumed.insert(p.key.clone());
            let value = if let Some(v) = opts.build_args.get(&p.key) {
                Some(v.clone())
            } else if let Some(d) = &p.value {
                let lookup = |n: &str| global_lookup(&global, &platform_args, n);
                match expand::expand(d, escape, &lookup) {
                    Ok(x) => Some(x.value),
                    Err(e) => {
                        diags.push(Diag::error(
                            "bad-substitution",
                            e.to_string(),
                            src,
                            p.span.clone(),
                        ));
                        None
                    }
                }
            } else {
                // `ARG TARGETPLATFORM` without a default keeps the
                // automatic value.
                platform_args.get(&p.key).cloned()
            };
            diags.extend(lint::secrets_in(src, "ARG", &p.key, &ins.span));
            global.retain(|(k, _)| *k != p.key);
            global.push((p.key.clone(), value.clone()));
            global_args.push(ArgValue {
                key: p.key.clone(),
                value,
            });
        }
    }

    // Stage boundaries and names (names first: COPY --from may point ahead).
    let froms: Vec<usize> = df
        .instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == Keyword::From)
        .map(|(i, _)| i)
        .collect();
    let mut stage_names: Vec<Option<String>> = Vec::new();
    for (si, &fi) in froms.iter().enumerate() {
        let ins = &df.instructions[fi];
        let name = from_parts(ins)
            .and_then(|(_, n)| n)
            .map(|n| n.text.to_ascii_lowercase());
        if let Some(n) = &name {
            let span = from_parts(ins)
                .and_then(|(_, n)| n)
                .map(|w| w.span.clone())
                .unwrap_or_default();
            if stage_names.iter().any(|s| s.as_deref() == Some(n.as_str())) {
                diags.push(
                    Diag::error(
                        "DuplicateStageName",
                        format!("Duplicate stage name {n:?}, stage names should be unique"),
                        src,
                        span,
                    )
                    .with_help("rename one of the stages"),
                );
            } else if !valid_stage_name(n) {
                diags.push(Diag::error(
                    "invalid-stage-name",
                    format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                    src,
                    span,
                ));
            }
        }
        let _ = si;
        stage_names.push(name);
    }

    let mut outs: Vec<StageOut> = Vec::new();
    for (si, &fi) in froms.iter().enumerate() {
        let end = froms.get(si + 1).copied().unwrap_or(df.instructions.len());
        let out = resolve_stage(
            df,
            opts,
            &df.instructions[fi],
            &df.instructions[fi + 1..end],
            si,
            &outs,
            &global,
            &platform_args,
            &stage_names,
            &mut consumed,
        );
        outs.push(out);
    }

    // Target.
    let n = outs.len();
    let target = match &opts.target {
        None => n.saturating_sub(1),
        Some(t) => match stage_names
            .iter()
            .position(|s| s.as_deref() == Some(t.to_ascii_lowercase().as_str()))
        {
            Some(i) => i,
            None => {
                let end = src.text.len();
                diags.push(
                    Diag::error(
                        "unknown-target",
                        format!("target stage {t:?} could not be found"),
                        src,
                        end..end,
                    )
                    .with_help(format!(
                        "stages: {}",
                        stage_names
                            .iter()
                            .flatten()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
                return Err(finish_err(diags));
            }
        },
    };

    // Cycles anywhere in the graph are errors, as in BuildKit.
    let graph: Vec<Vec<(usize, Span)>> = outs.iter().map(|o| o.deps.clone()).collect();
    if let Some((stage, span)) = find_cycle(&graph) {
        let name = stage_names[stage]
            .clone()
            .unwrap_or_else(|| stage.to_string());
        diags.push(
            Diag::error(
                "circular-dependency",
                format!("circular dependency detected on stage: {name}"),
                src,
                span,
            )
            .with_help("a stage cannot depend on itself through COPY --from or RUN --mount from="),
        );
    }

    // Needed stages in build order (dependencies first).
    let mut order = Vec::new();
    let mut state = vec![0u8; n];
    if n > 0 {
        visit(target, &graph, &mut state, &mut order);
    }
    let needed: BTreeSet<usize> = order.iter().copied().collect();
    for (i, o) in outs.iter().enumerate() {
        for d in &o.diags {
            // Errors only matter in stages the build runs; warnings always.
            if !d.is_error() || needed.contains(&i) {
                diags.push(d.clone());
            }
        }
    }
    diags.extend(lint::file_lints(df));
    let mut unused: Vec<String> = opts
        .build_args
        .keys()
        .filter(|k| {
            !consumed.contains(*k)
                && !scope::PROXY_ARGS.contains(&k.as_str())
                && k.as_str() != "SOURCE_DATE_EPOCH"
                && !k.starts_with("BUILDKIT_")
        })
        .cloned()
        .collect();
    unused.sort();
    let source_date_epoch = match opts.build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                diags.push(Diag::error(
                    "bad-build-arg",
                    format!("invalid SOURCE_DATE_EPOCH {v:?}: expected seconds since 1970"),
                    src,
                    0..0,
                ));
                None
            }
        },
        None => None,
    };
    let check = df
        .directives
        .check
        .clone()
        .or_else(|| opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK").cloned());
    let diags = lint::apply_check_config(diags, check.as_deref(), src);
    if diags.iter().any(Diag::is_error) {
        return Err(finish_err(diags));
    }
    let mut stages = Vec::new();
    let mut outs: Vec<Option<StageOut>> = outs.into_iter().map(Some).collect();
    for i in &order {
        if let Some(o) = outs[*i].take() {
            stages.push(o.stage);
        }
    }
    let mut warnings = diags;
    warnings.sort_by_key(|d| d.span.start);
    Ok(ResolvedBuild {
        stages,
        target,
        global_args,
        source_date_epoch,
        unused_build_args: unused,
        warnings,
    })
}

fn finish_err(diags: Vec<Diag>) -> Diagnostics {
    let mut d = Diagnostics { items: diags };
    d.sort();
    d
}

fn global_lookup(
    global: &[(String, Option<String>)],
    platform: &BTreeMap<String, String>,
    n: &str,
) -> Option<String> {
    match global.iter().rev().find(|(k, _)| k == n) {
        Some((_, v)) => v.clone(),
        None => platform.get(n).cloned(),
    }
}

fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "-_.".contains(ch))
}

/// FROM's image word and optional `AS name` word.
fn from_parts(
    ins: &Parsed,
) -> Option<(
    &crate::parse::SpannedWord,
    Option<&crate::parse::SpannedWord>,
)> {
    let Args::Words { words, .. } = &ins.args else {
        return None;
    };
    match words.as_slice() {
        [img] => Some((img, None)),
        [img, as_, name] if as_.text.eq_ignore_ascii_case("as") => Some((img, Some(name))),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve_stage(
    df: &Dockerfile,
    opts: &ResolveOptions,
    from: &Parsed,
    body: &[Parsed],
    index: usize,
    prev: &[StageOut],
    global: &[(String, Option<String>)],
    platform_args: &BTreeMap<String, String>,
    stage_names: &[Option<String>],
    consumed: &mut BTreeSet<String>,
) -> StageOut {
    let src = df.source();
    let escape = df.directives.escape;
    let mut diags = Vec::new();
    let lookup = |n: &str| global_lookup(global, platform_args, n);
    let mut base = Base::Scratch;
    let mut platform = None;
    if let Some((img, _)) = from_parts(from) {
        match expand::expand(&img.text, escape, &lookup) {
            Ok(x) => {
                for u in &x.unset {
                    if !global.iter().any(|(k, _)| k == u) {
                        diags.push(lint::undefined_arg_in_from(src, u, &img.span));
                    }
                }
                let name = x.value;
                let lower = name.to_ascii_lowercase();
                if name.is_empty() {
                    diags.push(
                        Diag::error(
                            "blank-base",
                            format!("base name ({}) should not be blank", img.text),
                            src,
                            img.span.clone(),
                        )
                        .with_help(
                            "declare the ARG before FROM with a default, or pass --build-arg",
                        ),
                    );
                } else if let Some(j) = stage_names[..index]
                    .iter()
                    .position(|s| s.as_deref() == Some(lower.as_str()))
                {
                    base = Base::Stage { index: j };
                } else if lower == "scratch" {
                    base = Base::Scratch;
                } else if opts.named_contexts.contains(&name) {
                    base = Base::Context { name };
                } else if !looks_like_image(&name) {
                    diags.push(
                        Diag::error(
                            "bad-image",
                            format!("invalid image reference {name:?}"),
                            src,
                            img.span.clone(),
                        )
                        .with_help("image references are lower-case, e.g. golang:1.22-alpine"),
                    );
                } else {
                    base = Base::Image { reference: name };
                }
            }
            Err(e) => diags.push(Diag::error(
                "bad-substitution",
                e.to_string(),
                src,
                img.span.clone(),
            )),
        }
        if let Some(f) = from.flag("platform") {
            match expand::expand(f.value.as_deref().unwrap_or_default(), escape, &lookup) {
                Ok(x) => match x.value.parse::<Platform>() {
                    Ok(_) => platform = Some(x.value),
                    Err(e) => diags.push(Diag::error("bad-platform", e, src, f.span.clone())),
                },
                Err(e) => diags.push(Diag::error(
                    "bad-substitution",
                    e.to_string(),
                    src,
                    f.span.clone(),
                )),
            }
        }
    } else {
        diags.push(Diag::error(
            "bad-from",
            "FROM requires either one or three arguments: FROM <image> [AS <name>]",
            src,
            from.args_span.clone(),
        ));
    }

    // Inherit from the base.
    let mut scope = Scope::default();
    let mut shell = vec!["/bin/sh".to_string(), "-c".to_string()];
    let mut workdir = "/".to_string();
    let mut triggers: Vec<String> = Vec::new();
    let mut env_known = true;
    let mut workdir_set = false;
    let mut deps = Vec::new();
    match &base {
        Base::Stage { index: j } => {
            let p = &prev[*j];
            // BuildKit carries the parent's declared ARGs (and whether a
            // WORKDIR was set) into a stage built FROM it.
            scope.env = p.scope_env.clone();
            scope.args = p.scope_args.clone();
            workdir_set = p.workdir_set;
            shell = p.shell.clone();
            workdir = p.stage.workdir.clone();
            triggers = p.onbuild.clone();
            env_known = p.env_known;
            deps.push((*j, from.span.clone()));
        }
        Base::Image { reference } | Base::Context { name: reference } => {
            match opts.images.get(reference) {
                Some(info) => {
                    scope.env = info.env.clone();
                    if let Some(s) = &info.shell {
                        shell = s.clone();
                    }
                    if let Some(w) = info.workdir.as_deref().filter(|w| !w.is_empty()) {
                        workdir = w.to_string();
                    }
                    triggers = info.onbuild.clone();
                }
                None => env_known = false,
            }
        }
        Base::Scratch => {}
    }
    if !matches!(base, Base::Stage { .. }) && !scope.env.iter().any(|(k, _)| k == "PATH") {
        scope.env.push(("PATH".into(), scope::DEFAULT_PATH.into()));
    }

    let mut ctx = Ctx {
        src,
        escape,
        opts,
        global,
        platform_args,
        stage_names,
        index,
        scope,
        shell,
        workdir,
        workdir_set,
        onbuild: Vec::new(),
        env_known,
        ssh_count: 0,
        consumed,
        diags,
        deps,
    };
    let mut instructions = Vec::new();
    if !triggers.is_empty() {
        match crate::parse::parse_onbuild_triggers(&triggers) {
            Ok(list) => {
                for t in &list {
                    if let Some(instr) = convert::convert(t, &mut ctx) {
                        instructions.push(Resolved {
                            instr,
                            original: t.original.clone(),
                            span: from.span.clone(),
                            line: from.line,
                            from_onbuild: true,
                        });
                    }
                }
            }
            Err(e) => {
                for d in e.items {
                    ctx.diags.push(Diag::error(
                        "bad-onbuild",
                        format!("invalid ONBUILD trigger from the base image: {}", d.message),
                        src,
                        from.span.clone(),
                    ));
                }
            }
        }
    }
    for ins in body {
        if let Some(instr) = convert::convert(ins, &mut ctx) {
            instructions.push(Resolved {
                instr,
                original: ins.original.clone(),
                span: ins.span.clone(),
                line: ins.line,
                from_onbuild: false,
            });
        }
    }
    // Self references are cycles; the graph check reports them.
    let mut dependencies: Vec<usize> = ctx.deps.iter().map(|(i, _)| *i).collect();
    dependencies.sort_unstable();
    dependencies.dedup();
    let env: Vec<Var> = ctx.scope.env.iter().map(|(k, v)| Var::new(k, v)).collect();
    let _ = ctx.index;
    StageOut {
        stage: Stage {
            index,
            name: stage_names[index].clone(),
            base,
            platform,
            dependencies,
            instructions,
            env,
            workdir: ctx.workdir.clone(),
            original: from.original.clone(),
            span: from.span.clone(),
            line: from.line,
        },
        diags: ctx.diags,
        deps: ctx.deps,
        shell: ctx.shell,
        onbuild: ctx.onbuild,
        scope_env: ctx.scope.env,
        scope_args: ctx.scope.args,
        workdir_set: ctx.workdir_set,
        env_known: ctx.env_known,
    }
}

/// Post-order DFS from `i`; ignores back edges (cycles are reported apart).
fn visit(i: usize, graph: &[Vec<(usize, Span)>], state: &mut [u8], order: &mut Vec<usize>) {
    if state[i] != 0 {
        return;
    }
    state[i] = 1;
    let mut deps: Vec<usize> = graph[i].iter().map(|(d, _)| *d).collect();
    deps.sort_unstable();
    deps.dedup();
    for d in deps {
        visit(d, graph, state, order);
    }
    state[i] = 2;
    order.push(i);
}

/// Finds a cycle; returns the stage where it closes and the span of the
/// reference that closes it.
fn find_cycle(graph: &[Vec<(usize, Span)>]) -> Option<(usize, Span)> {
    let n = graph.len();
    let mut state = vec![0u8; n];
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS to avoid deep recursion on large files.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some((d, span)) = graph[node].get(*next) {
                *next += 1;
                match state[*d] {
                    1 => return Some((*d, span.clone())),
                    0 => {
                        state[*d] = 1;
                        stack.push((*d, 0));
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        for ok in [
            "alpine",
            "golang:1.22-alpine",
            "ghcr.io/a/b:v1",
            "localhost:5000/x",
            "a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "docker.io/library/node:20",
        ] {
            assert!(looks_like_image(ok), "{ok}");
        }
        // A digest too short to be one is refused, as docker's reference
        // grammar does.
        for bad in [
            "Alpine",
            "a:",
            "a b",
            "a//b",
            "x:tag with space",
            "$X",
            "a@sha256:abc",
        ] {
            assert!(!looks_like_image(bad), "{bad}");
        }
    }

    #[test]
    fn cycles() {
        let g = vec![vec![(1, 0..1)], vec![(0, 2..3)], vec![]];
        assert_eq!(find_cycle(&g).map(|c| c.0), Some(0));
        let g = vec![vec![], vec![(0, 0..1)], vec![(1, 0..1), (0, 0..1)]];
        assert!(find_cycle(&g).is_none());
        let g = vec![vec![(0, 5..6)]];
        assert_eq!(find_cycle(&g), Some((0, 5..6)));
    }
}
