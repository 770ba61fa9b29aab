//! The whole `tests/build/` suite built by kiln as the unprivileged
//! `kilntest` (subuid/subgid 200000:65536, created if missing, as
//! kiln-sandbox's tests do) with a store that user owns. Each result must
//! meet its `expect` file, as the root run must (build_e2e.rs), and must be
//! the very image a root build of the same case gives: every file's path,
//! type, mode, owner, size, content and link target, and the config fields
//! the conformance check compares. File owners inside the image are the
//! image's, never the host's.
//!
//! Knobs: `KILN_BUILD_CASES=a,b` runs only those cases (the exception list
//! is then not checked for stale entries); `KILN_BUILD_TEST_JOBS=N`.

mod common;

use std::fs;

use common::build::*;

/// Cases that cannot pass rootless, with why. Empty: every fixture builds
/// the same as kilntest as as root. An entry is for a difference that is
/// inherent to an unprivileged build, never for a kiln bug. The one such
/// difference known, an owner outside the subuid range, has a test of its
/// own below ([`owner_outside_subuid_range`]). A listed case is built and
/// reported loudly; if it passes the test fails ("remove it"), so the list
/// only shrinks.
const ROOTLESS_EXCEPTIONS: &[(&str, &str)] = &[];

struct Outcome {
    name: String,
    problems: Vec<String>,
    skipped: bool,
}

#[test]
fn rootless_suite() {
    if !kiln_build_available() {
        loud("build_rootless SKIPPED: no `kiln build`");
        return;
    }
    if !common::is_root() {
        missing_prerequisite("build_rootless needs root to act as kilntest");
        return;
    }
    let all = Case::all();
    for (name, _) in ROOTLESS_EXCEPTIONS {
        assert!(
            all.iter().any(|c| &c.name == name),
            "ROOTLESS_EXCEPTIONS names no case `{name}`"
        );
    }
    // A case the root run itself lists as a known gap is not a rootless
    // problem: build_e2e reports it.
    let root_gaps = include_str!("build_e2e.rs");
    let only = std::env::var("KILN_BUILD_CASES").ok();
    let chosen: Vec<&Case> = chosen_cases(&all)
        .into_iter()
        .filter(|c| {
            let gap = root_gaps.contains(&format!("(\"{}\"", c.name));
            if gap {
                loud(&format!(
                    "rootless {} SKIPPED: a known gap of the root run (build_e2e.rs)",
                    c.name
                ));
            }
            !gap
        })
        .collect();
    if only.is_none() {
        assert!(
            chosen.len() >= 25,
            "rootless suite too small: {}",
            chosen.len()
        );
    }

    let tmp = scratch("kiln-bt-rootless-");
    let staged_root = tmp.path().join("cases");
    fs::create_dir_all(&staged_root).unwrap();
    let cases: Vec<Case> = chosen.iter().map(|c| c.stage(&staged_root)).collect();
    let ctx = Ctx::start(&staged_root);
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let want_debian = cases.iter().any(|c| c.debian);
    let user = KilnBuild::new(&tmp.path().join("store"), Who::Kilntest);
    let debian = import_bases(&user, want_debian);
    // The reference: the same cases built by root, from the same bases.
    let root = KilnBuild::new(&tmp.path().join("root-store"), Who::Caller);
    import_bases(&root, debian);

    let outcomes = par_map(&cases, jobs(), |c| {
        if c.debian && !debian {
            return Outcome {
                name: c.name.clone(),
                problems: vec!["skipped: no Debian base".into()],
                skipped: true,
            };
        }
        Outcome {
            name: c.name.clone(),
            problems: run_case(c, &user, &root, &ctx, &work),
            skipped: false,
        }
    });

    let mut bad = Vec::new();
    for o in outcomes {
        let verdict = if o.problems.is_empty() {
            "ok".to_string()
        } else {
            o.problems.join("; ")
        };
        eprintln!("rootless {}: {verdict}", o.name);
        let excepted = ROOTLESS_EXCEPTIONS.iter().find(|(n, _)| *n == o.name);
        if o.skipped {
            loud(&format!("rootless {} SKIPPED: {verdict}", o.name));
        } else if let Some((_, why)) = excepted {
            if o.problems.is_empty() {
                bad.push(format!(
                    "[{}] passes rootless now: remove it from ROOTLESS_EXCEPTIONS",
                    o.name
                ));
            } else {
                loud(&format!("rootless {} EXCEPTED ({why}): {verdict}", o.name));
            }
        } else if !o.problems.is_empty() {
            bad.push(format!("[{}] {}", o.name, o.problems.join("\n")));
        }
    }
    assert!(bad.is_empty(), "rootless failures:\n{}", bad.join("\n\n"));
}

/// Builds `c` as kilntest and as root; the rootless result's failed
/// expectations and its differences from the root result.
fn run_case(
    c: &Case,
    user: &KilnBuild,
    root: &KilnBuild,
    ctx: &Ctx,
    work: &std::path::Path,
) -> Vec<String> {
    let user_dir = work.join(format!("rootless-{}", c.name));
    let root_dir = work.join(format!("root-{}", c.name));
    fs::create_dir_all(&user_dir).unwrap();
    fs::create_dir_all(&root_dir).unwrap();
    let mut problems = Vec::new();
    let mine = match kiln_build_case(user, c, ctx, &user_dir) {
        Ok(b) => {
            problems.extend(b.check(&c.checks, true));
            Some(b)
        }
        Err(log) => {
            problems.push(format!("build failed:\n{log}"));
            None
        }
    };
    let reference = match kiln_build_case(root, c, ctx, &root_dir) {
        Ok(b) => Some(b),
        Err(log) => {
            problems.push(format!("the root reference build failed:\n{log}"));
            None
        }
    };
    if let (Some(mut mine), Some(mut reference)) = (mine, reference) {
        if c.nondeterministic.is_some() {
            // The case writes times into some files (its `nondeterministic`
            // line says which), so contents differ between any two builds;
            // what a user namespace could change (type, mode, owner, link
            // target) is still compared for every file.
            forget_file_contents(&mut mine);
            forget_file_contents(&mut reference);
        }
        let diffs = conformance_diff(&c.name, &mine, &reference, &[], &mut Vec::new());
        problems.extend(diffs.into_iter().map(|d| {
            format!("differs from root's build (kiln = kilntest's, buildah = root's): {d}")
        }));
    }
    let _ = fs::remove_dir_all(&user_dir);
    let _ = fs::remove_dir_all(&root_dir);
    problems
}

/// Drops the size and hash of every regular file of a listing.
fn forget_file_contents(b: &mut Built) {
    for line in b.files.values_mut() {
        let (path, kind, mode, owner, _) = split_listing(line);
        if kind == "f" {
            *line = format!("{path} {kind} {mode} {owner}");
        }
    }
}

/// The one inherent difference: kilntest's user namespace maps only its
/// 65,536 subordinate IDs, so no file in it can be owned by 70000. A
/// `COPY --chown=70000:70001` still builds (the layer is written as a tar,
/// with the owner recorded), but anything that must unpack that layer, a
/// later RUN for one, fails and says why. Root builds both.
#[test]
fn owner_outside_subuid_range() {
    if !kiln_build_available() || !common::is_root() {
        missing_prerequisite("owner_outside_subuid_range needs `kiln build` and root");
        return;
    }
    let tmp = scratch("kiln-bt-rootless-ids-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.txt"), "hi\n").unwrap();
    let copy = "FROM kiln-test/busybox:1\nCOPY --chown=70000:70001 a.txt /a.txt\n";
    fs::write(ctx.join("copy.Dockerfile"), copy).unwrap();
    fs::write(
        ctx.join("run.Dockerfile"),
        format!("{copy}RUN test -f /a.txt\n"),
    )
    .unwrap();
    sh(&format!("chmod -R a+rX '{}'", ctx.display()));
    let df = |name: &str| ctx.join(name).display().to_string();

    let user = KilnBuild::new(&tmp.path().join("store"), Who::Kilntest);
    import_bases(&user, false);
    let (out, _, log) = kiln_build(
        &user,
        &ctx,
        &["-f", &df("copy.Dockerfile"), "-t", "ids:copy"],
    );
    assert!(
        out.status.success(),
        "rootless COPY --chown=70000 failed:\n{log}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&user.ok(&["inspect", "ids:copy"])).unwrap();
    let digest = manifest["Manifest"]["layers"][1]["digest"]
        .as_str()
        .unwrap();
    let blob = user
        .root
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let listing = sh(&format!("tar --numeric-owner -tvf '{}'", blob.display()));
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" 70000/70001 ") && l.ends_with(" a.txt")),
        "the COPY layer does not record a.txt as 70000:70001:\n{listing}"
    );
    let (out, _, log) = kiln_build(&user, &ctx, &["-f", &df("run.Dockerfile"), "-t", "ids:run"]);
    assert!(
        !out.status.success(),
        "a RUN over an unmappable owner succeeded:\n{log}"
    );
    assert!(
        log.contains("owner 70000:70001 is not mapped in this user namespace"),
        "the failure does not say which owner cannot be mapped:\n{log}"
    );

    let root = KilnBuild::new(&tmp.path().join("root-store"), Who::Caller);
    import_bases(&root, false);
    let (out, _, log) = kiln_build(&root, &ctx, &["-f", &df("run.Dockerfile"), "-t", "ids:run"]);
    assert!(out.status.success(), "root build failed:\n{log}");
    let dir = tmp.path().join("root-rootfs");
    root.rootfs("ids:run", &dir);
    let built = Built::from_listing(common::tree_listing(&dir), serde_json::Value::Null, &dir);
    let line = built
        .files
        .get("/a.txt")
        .map(String::as_str)
        .unwrap_or("(none)");
    assert_eq!(
        split_listing(line).3,
        "70000:70001",
        "root's /a.txt: {line}"
    );
}
