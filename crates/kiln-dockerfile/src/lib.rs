//! Pure, I/O-free Dockerfile frontend: parsing, word splitting, variable
//! expansion, ARG/ENV scoping, the stage model and `.dockerignore` matching.
//! It never touches the filesystem, the network or runs anything: callers
//! pass text in and get typed values and diagnostics out.
//!
//! # Using it
//!
//! ```
//! use kiln_dockerfile::{parse, resolve, ResolveOptions};
//! use kiln_dockerfile::instructions::Instr;
//!
//! let text = "ARG V=3.19\nFROM alpine:${V} AS base\nRUN --mount=type=cache,target=/var/cache/apk apk add git\n";
//! let df = parse("Dockerfile", text).expect("valid Dockerfile");
//! let mut opts = ResolveOptions::default();
//! opts.build_args.insert("V".into(), "3.20".into());
//! let build = resolve(&df, &opts).expect("resolves");
//! let stage = &build.stages[0];
//! assert_eq!(stage.name.as_deref(), Some("base"));
//! let Instr::Run(run) = &stage.instructions[0].instr else { panic!() };
//! assert_eq!(run.argv, ["/bin/sh", "-c", "apk add git"]);
//! assert_eq!(run.mounts[0].mount.target.as_deref(), Some("/var/cache/apk"));
//! ```
//!
//! # Public API
//!
//! * [`parse()`]`(name, text) -> Result<Dockerfile, Diagnostics>`: the file
//!   as written: [`parse::Directives`] (`syntax`, `escape`, `check`) and
//!   [`parse::Instruction`]s with keyword, flags, arguments split per
//!   instruction syntax ([`parse::Args`]), heredocs and byte spans. No
//!   expansion. [`parse_partial`] never fails and returns the good
//!   instructions beside the errors (what `kiln dockerfile check` uses).
//! * [`resolve`]`(&Dockerfile, &ResolveOptions) -> Result<ResolvedBuild,
//!   Diagnostics>`: options are build args, target, build/target
//!   [`scope::Platform`], named build contexts and known image configs
//!   ([`stage::ImageInfo`]: ENV, ONBUILD, WORKDIR, SHELL). The result holds
//!   the stages the target needs in build order ([`stage::Stage`]: base
//!   `Scratch | Image | Stage | Context`, platform, dependencies, final
//!   ENV/WORKDIR) each with fully expanded, typed
//!   [`instructions::Resolved`] instructions ([`instructions::Instr`]:
//!   `Run` with argv, heredocs, mounts, network, security, the ARG env RUN
//!   sees and the history `created_by`; `Copy`/`Add` with every flag;
//!   `Env`, `Label`, `Expose`, `Volume`, `User`, `Workdir`, `Cmd`,
//!   `Entrypoint`, `Shell`, `Healthcheck`, `Stopsignal`, `Onbuild`, `Arg`,
//!   `Maintainer`), each with its span, line and original text, plus the
//!   lint warnings.
//! * [`change::parse_change`]`(line, &ImageInfo)`: one config instruction
//!   on its own (`--change`), parsed and resolved as a Dockerfile line, as
//!   `kiln_image::config_edit::ConfigEdit`s; [`change::config_edits`] is
//!   the one mapping of a resolved config instruction to edits.
//! * [`parse_onbuild_triggers`]: parses a base image's ONBUILD list;
//!   [`resolve`] injects them after FROM when [`stage::ImageInfo`] gives them.
//! * [`ignore::Matcher`]: `.dockerignore` with moby semantics —
//!   `Matcher::new(text)`, `matches(path)`, `may_reinclude_under(dir)`, and
//!   [`ignore::ignore_file_candidates`] for which file to read.
//! * [`expand::expand`]: BuildKit word expansion on its own.
//! * [`Diag`]/[`Diagnostics`]: every finding names file, line and column
//!   and renders with miette (source line and caret). Errors have
//!   kebab-case codes; warnings use BuildKit rule names.
//!
//! # Where this differs from BuildKit on purpose
//!
//! * Text that is clearly meant as a JSON array but is not valid JSON
//!   (`["a", b]`, `['a', 'b']`) is an error; BuildKit would silently run it
//!   as a shell command.
//! * Expansion errors are only reported for stages the target needs;
//!   syntax errors are reported everywhere.
//! * Without an [`stage::ImageInfo`] for a base image, its ENV is unknown:
//!   references resolve to empty and `UndefinedVar` is not reported.

pub mod change;
mod convert;
pub mod diag;
pub mod expand;
pub mod ignore;
pub mod instructions;
pub mod lint;
pub mod mount;
pub mod parse;
pub mod scope;
pub mod stage;
mod syntax;
pub mod words;

pub use diag::{Diag, Diagnostics, Severity, Span};
pub use parse::{Dockerfile, parse, parse_onbuild_triggers, parse_partial};
pub use stage::{ResolveOptions, ResolvedBuild, resolve};
