//! Pure, I/O-free Dockerfile frontend: parsing, word splitting, variable
//! expansion, ARG/ENV scoping, the stage model and `.dockerignore` matching.
//! It never touches the filesystem or runs anything.

pub mod diag;
pub mod expand;
pub mod parse;
pub mod words;

pub use diag::{Diag, Diagnostics, Severity, Span};
pub use parse::{Dockerfile, parse, parse_onbuild_triggers};
