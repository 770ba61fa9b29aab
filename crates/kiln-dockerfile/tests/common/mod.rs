//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kiln_dockerfile::instructions::Instr;
use kiln_dockerfile::stage::Stage;
use kiln_dockerfile::{Diag, ResolveOptions, ResolvedBuild, parse, resolve};

pub fn opts(args: &[(&str, &str)]) -> ResolveOptions {
    let mut o = ResolveOptions::default();
    for (k, v) in args {
        o.build_args.insert(k.to_string(), v.to_string());
    }
    o
}

pub fn build_with(text: &str, o: &ResolveOptions) -> ResolvedBuild {
    let df = parse("Dockerfile", text).unwrap_or_else(|e| panic!("parse failed: {e}"));
    resolve(&df, o).unwrap_or_else(|e| panic!("resolve failed: {e}"))
}

pub fn build(text: &str) -> ResolvedBuild {
    build_with(text, &ResolveOptions::default())
}

/// The target stage.
pub fn target(text: &str) -> Stage {
    build(text).stages.pop().expect("a stage")
}

/// Instructions of the target stage.
pub fn instrs(text: &str) -> Vec<Instr> {
    target(text)
        .instructions
        .into_iter()
        .map(|r| r.instr)
        .collect()
}

/// The single instruction of a one-instruction target stage.
pub fn one(text: &str) -> Instr {
    let mut v = instrs(text);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

/// All diagnostics (parse or resolve), errors and warnings.
pub fn diags_with(text: &str, o: &ResolveOptions) -> Vec<Diag> {
    match parse("Dockerfile", text) {
        Err(e) => e.items,
        Ok(df) => match resolve(&df, o) {
            Ok(r) => r.warnings,
            Err(e) => e.items,
        },
    }
}

pub fn diags(text: &str) -> Vec<Diag> {
    diags_with(text, &ResolveOptions::default())
}

/// The first error, which must exist.
pub fn error(text: &str) -> Diag {
    diags(text)
        .into_iter()
        .find(Diag::is_error)
        .unwrap_or_else(|| panic!("expected an error for {text:?}"))
}

/// Codes of the warnings.
pub fn warnings(text: &str) -> Vec<String> {
    diags(text)
        .into_iter()
        .filter(|d| !d.is_error())
        .map(|d| d.code)
        .collect()
}
