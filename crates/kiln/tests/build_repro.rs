//! Reproducible builds: every deterministic fixture, built twice in two
//! clean stores with SOURCE_DATE_EPOCH and `rewrite-timestamp=true`, gives
//! the same manifest digest. (Cases marked `nondeterministic` in their
//! `expect` file, e.g. apt's logs, and the Debian ones are left out.)

mod common;

use std::fs;
use std::path::Path;

use common::build::*;

/// Tests `kiln build` does not pass yet, with why: reported loudly, and a
/// listed test that passes fails, so the list only shrinks.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// Cases kiln builds (they pass build_e2e) but not reproducibly yet, with
/// why. Reported loudly; one that becomes reproducible fails the test.
const REPRO_GAPS: &[(&str, &str)] = &[];

/// Builds `case` into an OCI layout in a fresh store; returns the digest
/// of the manifest index.json points at.
fn digest(case: &Case, ctx: &Ctx, dir: &Path) -> Result<String, String> {
    let k = KilnBuild::new(&dir.join("store"), Who::Caller);
    // The same base image in both stores (not two imports a second apart).
    k.ok(&["load", "-i", busybox_archive().to_str().unwrap()]);
    for (tag, df) in &case.prebuild {
        let (o, _, log) = kiln_build(&k, &case.dir.join(&case.context), &["-f", case.dir.join(df).to_str().unwrap(), "-t", tag, "--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
        if !o.status.success() {
            return Err(log);
        }
    }
    let dest = dir.join("oci.tar");
    let mut flags: Vec<String> = vec![
        "-f".into(),
        case.dir.join(&case.dockerfile).display().to_string(),
        "--build-arg".into(),
        "SOURCE_DATE_EPOCH=1700000000".into(),
        "-o".into(),
        format!("type=oci,dest={},rewrite-timestamp=true", dest.display()),
    ];
    flags.extend(case.expand(&case.flags, ctx));
    flags.extend(case.expand(&case.kiln_flags, ctx));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (o, _, log) = kiln_build(&k, &case.dir.join(&case.context), &refs);
    if !o.status.success() {
        return Err(log);
    }
    // type=oci writes a tar (docker semantics); unpack it to read index.json.
    let layout = if dest.is_file() {
        let x = dir.join("oci.x");
        extract_tar(&dest, &x);
        x
    } else {
        dest
    };
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).map_err(|e| e.to_string())?).unwrap();
    Ok(index["manifests"][0]["digest"].as_str().unwrap_or_default().to_string())
}

#[test]
fn same_inputs_same_digest() {
    guarded(KNOWN_GAPS, "same_inputs_same_digest", same_inputs_same_digest_body);
}

fn same_inputs_same_digest_body() {
    if !kiln_build_available() {
        loud("build_repro SKIPPED: no `kiln build`");
        return;
    }
    let tmp = scratch("kiln-bt-repro-");
    let staged_root = tmp.path().join("cases");
    fs::create_dir_all(&staged_root).unwrap();
    let gaps: Vec<&str> = known_gaps();
    let cases: Vec<Case> = Case::all()
        .into_iter()
        .filter(|c| c.nondeterministic.is_none() && !c.debian && !gaps.contains(&c.name.as_str()))
        .map(|c| c.stage(&staged_root))
        .collect();
    let ctx = Ctx::start(&staged_root);
    let results = par_map(&cases, jobs(), |c| {
        let a = digest(c, &ctx, &tmp.path().join(format!("{}-a", c.name)));
        let b = digest(c, &ctx, &tmp.path().join(format!("{}-b", c.name)));
        (c.name.clone(), a, b)
    });
    let mut bad = Vec::new();
    for (name, a, b) in results {
        let problem = match (a, b) {
            (Ok(a), Ok(b)) if a == b && !a.is_empty() => {
                eprintln!("{name}: {a}");
                None
            }
            (Ok(a), Ok(b)) => Some(format!("{name}: {a} vs {b}")),
            (Err(l), _) | (_, Err(l)) => Some(format!("{name}: build failed:\n{l}")),
        };
        match (REPRO_GAPS.iter().find(|(g, _)| *g == name), problem) {
            (Some((_, why)), Some(p)) => loud(&format!("KNOWN REPRO GAP {name} ({why}): {}", p.lines().next().unwrap_or(""))),
            (Some(_), None) => bad.push(format!("{name} is reproducible now: remove it from REPRO_GAPS")),
            (None, Some(p)) => bad.push(p),
            (None, None) => {}
        }
    }
    assert!(bad.is_empty(), "not reproducible:\n{}", bad.join("\n"));
}

/// build_e2e's KNOWN_GAPS, read from its source so there is one list.
fn known_gaps() -> Vec<&'static str> {
    let src = include_str!("build_e2e.rs");
    let start = src.find("const KNOWN_GAPS").unwrap();
    let end = start + src[start..].find("];").unwrap();
    src[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(\"")?.split('"').next())
        .filter(|c| *c != "*")
        .collect()
}
