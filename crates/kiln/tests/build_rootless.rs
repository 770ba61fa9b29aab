//! The fixtures marked `rootless` in their `expect` file, built by kiln as
//! the unprivileged `kilntest` (subuid/subgid 200000:65536, created if
//! missing, as kiln-sandbox's tests do) with a store that user owns. The
//! results must meet the same expectations as a root build: file owners
//! inside the image are the image's, not the host's.

mod common;

use std::fs;

use common::build::*;

/// Tests `kiln build` does not pass yet, with why: reported loudly, and a
/// listed test that passes fails, so the list only shrinks.
const KNOWN_GAPS: &[(&str, &str)] = &[];

#[test]
fn rootless_subset() {
    guarded(KNOWN_GAPS, "rootless_subset", rootless_subset_body);
}

fn rootless_subset_body() {
    if !kiln_build_available() {
        loud("build_rootless SKIPPED: no `kiln build`");
        return;
    }
    if !common::is_root() {
        loud("build_rootless SKIPPED: needs root to act as kilntest");
        return;
    }
    let tmp = scratch("kiln-bt-rootless-");
    let staged_root = tmp.path().join("cases");
    fs::create_dir_all(&staged_root).unwrap();
    let gaps = include_str!("build_e2e.rs");
    let cases: Vec<Case> = Case::all()
        .into_iter()
        .filter(|c| c.rootless)
        .filter(|c| !gaps.contains(&format!("(\"{}\"", c.name)))
        .map(|c| c.stage(&staged_root))
        .collect();
    assert!(
        cases.len() >= 6,
        "rootless subset too small: {}",
        cases.len()
    );
    let ctx = Ctx::start(&staged_root);
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Kilntest);
    let debian = import_bases(&k, cases.iter().any(|c| c.debian));
    let results = par_map(&cases, jobs(), |c| {
        if c.debian && !debian {
            return (
                c.name.clone(),
                vec!["skipped: no Debian base".to_string()],
                true,
            );
        }
        match kiln_build_case(&k, c, &ctx, &work) {
            Ok(b) => (c.name.clone(), b.check(&c.checks, true), false),
            Err(log) => (c.name.clone(), vec![format!("build failed:\n{log}")], false),
        }
    });
    let mut bad = Vec::new();
    for (name, problems, skipped) in results {
        eprintln!(
            "rootless {name}: {}",
            if problems.is_empty() {
                "ok".into()
            } else {
                problems.join("; ")
            }
        );
        if skipped {
            loud(&format!("rootless {name} SKIPPED: {}", problems.join("")));
        } else if !problems.is_empty() {
            bad.push(format!("[{name}] {}", problems.join("\n")));
        }
    }
    assert!(bad.is_empty(), "rootless failures:\n{}", bad.join("\n\n"));
}
