//! Pure, I/O-free Dockerfile frontend: parsing, word splitting, variable
//! expansion, ARG/ENV scoping, the stage model and `.dockerignore` matching.
//! It never touches the filesystem or runs anything.

pub mod diag;
pub mod expand;
pub mod ignore;
pub mod instructions;
pub mod lint;
pub mod mount;
pub mod parse;
pub mod scope;
pub mod stage;
pub mod words;

pub use diag::{Diag, Diagnostics, Severity, Span};
pub use parse::{Dockerfile, parse, parse_onbuild_triggers, parse_partial};
pub use stage::{ResolveOptions, ResolvedBuild, resolve};
