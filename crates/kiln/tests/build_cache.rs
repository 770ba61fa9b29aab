//! `kiln build`'s cache, seen from the outside: the `--progress=plain` log
//! (BuildKit's format: `#N [stage i/n] INSTR`, then `#N CACHED` or
//! `#N DONE 0.1s`) and wall time. Each test has its own store.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::build::*;

/// Tests `kiln build` does not pass yet, with why: reported loudly, and a
/// listed test that passes fails, so the list only shrinks.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// A store with the busybox base, or None (loudly) without `kiln build`.
fn setup(name: &str) -> Option<(tempfile::TempDir, KilnBuild)> {
    if !kiln_build_available() {
        missing_prerequisite(&format!("build_cache::{name}: no `kiln build`"));
        return None;
    }
    let tmp = scratch("kiln-bt-cache-");
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    Some((tmp, k))
}

fn build(k: &KilnBuild, ctx: &Path, extra: &[&str]) -> (Duration, String, Vec<Step>) {
    let mut flags = vec!["-t", "cache-test:latest"];
    flags.extend_from_slice(extra);
    let (out, took, log) = kiln_build(k, ctx, &flags);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    let steps = exec_steps(&log);
    assert!(
        !steps.is_empty(),
        "no RUN/COPY steps found in the plain progress log:\n{log}"
    );
    (took, log, steps)
}

/// The step whose title contains `needle`.
fn step<'a>(steps: &'a [Step], needle: &str, log: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.title.contains(needle))
        .unwrap_or_else(|| panic!("no step `{needle}` in:\n{log}"))
}

/// A context whose Dockerfile has two independent COPYs and a RUN after
/// each, so a change can be traced through the graph.
fn two_copies(dir: &Path) {
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::create_dir_all(dir.join("b")).unwrap();
    fs::write(dir.join("a/one.txt"), "one\n").unwrap();
    fs::write(dir.join("b/two.txt"), "two\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         COPY a/ /a/\n\
         RUN cat /a/one.txt > /a-seen\n\
         COPY b/ /b/\n\
         RUN cat /b/two.txt > /b-seen\n",
    )
    .unwrap();
}

#[test]
fn no_change_rebuild_runs_nothing() {
    guarded(
        KNOWN_GAPS,
        "no_change_rebuild_runs_nothing",
        no_change_rebuild_runs_nothing_body,
    );
}

fn no_change_rebuild_runs_nothing_body() {
    let Some((tmp, k)) = setup("no_change_rebuild_runs_nothing") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    two_copies(&ctx);
    let (cold, log, steps) = build(&k, &ctx, &[]);
    assert!(
        steps.iter().all(|s| !s.cached),
        "a cold build hit a cache:\n{log}"
    );
    let (warm, log, steps) = build(&k, &ctx, &[]);
    let ran: Vec<_> = steps
        .iter()
        .filter(|s| !s.cached)
        .map(|s| &s.title)
        .collect();
    assert!(ran.is_empty(), "a no-change rebuild ran {ran:?}:\n{log}");
    eprintln!("cold {cold:?}, no-change rebuild {warm:?}");
    // No container starts, no file copies: well under a second here.
    assert!(
        warm < Duration::from_secs(2),
        "no-change rebuild took {warm:?}:\n{log}"
    );
    assert!(
        warm < cold,
        "no-change rebuild ({warm:?}) not faster than cold ({cold:?})"
    );
}

#[test]
fn changed_source_reruns_only_its_dependents() {
    guarded(
        KNOWN_GAPS,
        "changed_source_reruns_only_its_dependents",
        changed_source_reruns_only_its_dependents_body,
    );
}

fn changed_source_reruns_only_its_dependents_body() {
    let Some((tmp, k)) = setup("changed_source_reruns_only_its_dependents") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    two_copies(&ctx);
    build(&k, &ctx, &[]);

    // Change the second COPY's source: the first COPY and its RUN hit.
    fs::write(ctx.join("b/two.txt"), "two, changed\n").unwrap();
    let (_, log, steps) = build(&k, &ctx, &[]);
    assert!(
        step(&steps, "COPY a/", &log).cached,
        "COPY a/ re-ran:\n{log}"
    );
    assert!(
        step(&steps, "/a-seen", &log).cached,
        "RUN after COPY a/ re-ran:\n{log}"
    );
    assert!(
        !step(&steps, "COPY b/", &log).cached,
        "COPY b/ was CACHED:\n{log}"
    );
    assert!(
        !step(&steps, "/b-seen", &log).cached,
        "RUN after COPY b/ was CACHED:\n{log}"
    );

    // A touch that changes no content is no change (content-addressed).
    let f = fs::File::options()
        .write(true)
        .open(ctx.join("a/one.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    let (_, log, steps) = build(&k, &ctx, &[]);
    assert!(
        steps.iter().all(|s| s.cached),
        "touch without change re-ran steps:\n{log}"
    );
}

#[test]
fn later_unchanged_op_hits_after_an_earlier_miss() {
    guarded(
        KNOWN_GAPS,
        "later_unchanged_op_hits_after_an_earlier_miss",
        later_unchanged_op_hits_after_an_earlier_miss_body,
    );
}

fn later_unchanged_op_hits_after_an_earlier_miss_body() {
    let Some((tmp, k)) = setup("later_unchanged_op_hits_after_an_earlier_miss") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    // Two stages, each with one COPY, merged at the end: changing the
    // first stage's input must not re-run the second stage's COPY/RUN.
    fs::create_dir_all(ctx.join("a")).unwrap();
    fs::create_dir_all(ctx.join("b")).unwrap();
    fs::write(ctx.join("a/one.txt"), "one\n").unwrap();
    fs::write(ctx.join("b/two.txt"), "two\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1 AS first\n\
         COPY a/one.txt /one.txt\n\
         RUN cat /one.txt > /first-out\n\
         FROM kiln-test/busybox:1 AS second\n\
         COPY b/two.txt /two.txt\n\
         RUN cat /two.txt > /second-out\n\
         FROM kiln-test/busybox:1\n\
         COPY --from=first /first-out /\n\
         COPY --from=second /second-out /\n",
    )
    .unwrap();
    build(&k, &ctx, &[]);
    fs::write(ctx.join("a/one.txt"), "one, changed\n").unwrap();
    let (_, log, steps) = build(&k, &ctx, &[]);
    assert!(
        !step(&steps, "COPY a/one.txt", &log).cached,
        "changed COPY was CACHED:\n{log}"
    );
    assert!(
        !step(&steps, "> /first-out", &log).cached,
        "RUN after the changed COPY was CACHED:\n{log}"
    );
    assert!(
        step(&steps, "COPY b/two.txt", &log).cached,
        "unchanged COPY re-ran:\n{log}"
    );
    assert!(
        step(&steps, "> /second-out", &log).cached,
        "unchanged RUN re-ran:\n{log}"
    );
}

#[test]
fn no_cache_runs_everything() {
    guarded(
        KNOWN_GAPS,
        "no_cache_runs_everything",
        no_cache_runs_everything_body,
    );
}

fn no_cache_runs_everything_body() {
    let Some((tmp, k)) = setup("no_cache_runs_everything") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    two_copies(&ctx);
    build(&k, &ctx, &[]);
    let (_, log, steps) = build(&k, &ctx, &["--no-cache"]);
    let hit: Vec<_> = steps
        .iter()
        .filter(|s| s.cached)
        .map(|s| &s.title)
        .collect();
    assert!(hit.is_empty(), "--no-cache still hit {hit:?}:\n{log}");
    // And the cache still works afterwards.
    let (_, log, steps) = build(&k, &ctx, &[]);
    assert!(
        steps.iter().all(|s| s.cached),
        "rebuild after --no-cache missed:\n{log}"
    );
}

/// Reads "start end" pairs (/proc/uptime seconds) a stage wrote.
fn interval(root: &Path, name: &str) -> (f64, f64) {
    let t = fs::read_to_string(root.join(name)).unwrap();
    let v: Vec<f64> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn a_link_copy_does_not_wait_for_the_run_before_it() {
    guarded(
        KNOWN_GAPS,
        "a_link_copy_does_not_wait_for_the_run_before_it",
        a_link_copy_does_not_wait_for_the_run_before_it_body,
    );
}

/// `COPY --link` does not read the stage below it (BuildKit makes it on
/// scratch and merges it), so it runs while a slow RUN before it in the
/// same stage still does; the image still stacks them in order.
fn a_link_copy_does_not_wait_for_the_run_before_it_body() {
    let Some((tmp, k)) = setup("a_link_copy_does_not_wait_for_the_run_before_it") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1 AS other\n\
         RUN echo linked > /f\n\
         FROM kiln-test/busybox:1\n\
         RUN sleep 2 && echo slow > /slow\n\
         COPY --link --from=other /f /f\n\
         RUN cat /slow /f > /both\n",
    )
    .unwrap();
    build(&k, &ctx, &[]);
    let (_, log, steps) = build(&k, &ctx, &["--no-cache"]);
    let done_at = |needle: &str| {
        let id = &step(&steps, needle, &log).id;
        log.lines()
            .position(|l| l.starts_with(&format!("#{id} DONE")))
            .unwrap_or_else(|| panic!("`{needle}` never finished:\n{log}"))
    };
    assert!(
        done_at("COPY --link") < done_at("sleep 2"),
        "the COPY --link waited for the RUN before it:\n{log}"
    );
    let out = tmp.path().join("out");
    k.rootfs("cache-test:latest", &out);
    assert_eq!(
        fs::read_to_string(out.join("both")).unwrap(),
        "slow\nlinked\n"
    );
}

#[test]
fn independent_stages_run_in_parallel() {
    guarded(
        KNOWN_GAPS,
        "independent_stages_run_in_parallel",
        independent_stages_run_in_parallel_body,
    );
}

fn independent_stages_run_in_parallel_body() {
    let Some((tmp, k)) = setup("independent_stages_run_in_parallel") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    // Each stage records when its `sleep 1` ran, on the host's uptime
    // clock (/proc/uptime is not namespaced), so overlap is measured where
    // it happens, independent of the progress format.
    let stage = |n: &str| {
        format!(
            "FROM kiln-test/busybox:1 AS {n}\n\
             RUN a=$(cut -d' ' -f1 /proc/uptime) && sleep 1 && echo \"$a $(cut -d' ' -f1 /proc/uptime)\" > /{n}.t\n"
        )
    };
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "{}{}FROM kiln-test/busybox:1\nCOPY --from=left /left.t /\nCOPY --from=right /right.t /\n",
            stage("left"),
            stage("right")
        ),
    )
    .unwrap();
    // The base is prepared by a first build so the timed build only runs
    // the two RUNs (and --no-cache keeps them from hitting).
    build(&k, &ctx, &[]);
    let (took, log, _) = build(&k, &ctx, &["--no-cache"]);
    let out = tmp.path().join("out");
    k.rootfs("cache-test:latest", &out);
    let (l0, l1) = interval(&out, "left.t");
    let (r0, r1) = interval(&out, "right.t");
    eprintln!("left {l0}..{l1}, right {r0}..{r1}, build {took:?}");
    assert!(
        l0 < r1 && r0 < l1,
        "the two stages' RUNs did not overlap: left {l0}..{l1}, right {r0}..{r1}\n{log}"
    );
    assert!(
        took < Duration::from_secs(2),
        "two parallel 1 s stages took {took:?}:\n{log}"
    );
}

#[test]
fn unchanged_rebuild_keeps_the_image_id() {
    guarded(
        KNOWN_GAPS,
        "unchanged_rebuild_keeps_the_image_id",
        unchanged_rebuild_keeps_the_image_id_body,
    );
}

/// As BuildKit: times in the config come from when each cached layer was
/// first made, so a fully cached rebuild writes the same config and
/// manifest (the same image ID), and a real change gives new ones.
fn unchanged_rebuild_keeps_the_image_id_body() {
    let Some((tmp, k)) = setup("unchanged_rebuild_keeps_the_image_id") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    two_copies(&ctx);
    // Metadata steps too (their history time derives from the layers').
    let mut df = fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    df.push_str("ENV GREETING=hello\nLABEL stage=test\nCMD [\"cat\", \"/a-seen\"]\n");
    fs::write(ctx.join("Dockerfile"), df).unwrap();
    let iid = tmp.path().join("iid");
    let iid_arg = format!("--iidfile={}", iid.display());
    let built = |k: &KilnBuild| -> (String, String) {
        build(k, &ctx, &[&iid_arg]);
        let id = fs::read_to_string(&iid).unwrap();
        (id, k.ok(&["inspect", "cache-test:latest"]))
    };
    let (id1, inspect1) = built(&k);
    let config = k.config_blob("cache-test:latest");
    assert!(
        config["created"].is_string(),
        "the image has no created time: {config:#}"
    );
    let history = config["history"].as_array().expect("history");
    assert!(
        history.iter().all(|h| h["created"].is_string()),
        "a history entry has no time: {config:#}"
    );
    // Time moves on: a build that stamped "now" would differ.
    std::thread::sleep(Duration::from_millis(1100));
    let (id2, inspect2) = built(&k);
    assert_eq!(id1, id2, "a fully cached rebuild changed the image ID");
    assert_eq!(
        inspect1, inspect2,
        "a fully cached rebuild changed `kiln inspect`"
    );

    fs::write(ctx.join("b/two.txt"), "two, changed\n").unwrap();
    let (id3, _) = built(&k);
    assert_ne!(id1, id3, "a changed file kept the image ID");
    let config3 = k.config_blob("cache-test:latest");
    let times = |c: &serde_json::Value| -> Vec<String> {
        c["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (t1, t3) = (times(&config), times(&config3));
    let n = t1.len();
    assert_eq!(n, t3.len());
    // COPY b/ and the RUN after it were made again, later; COPY a/ and its
    // RUN came from the cache with their first times.
    assert_eq!(t1[n - 7..n - 5], t3[n - 7..n - 5], "{t1:?} vs {t3:?}");
    assert!(
        t3[n - 5] > t1[n - 5] && t3[n - 4] > t1[n - 4],
        "{t1:?} vs {t3:?}"
    );
    assert_eq!(config3["created"].as_str().unwrap(), t3[n - 1]);
}
