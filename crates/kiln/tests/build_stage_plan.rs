//! `kiln build --print=stages`: the build cut into jobs that separate
//! machines run. Each planned command runs as its own process with its own
//! empty store (sharing only the registry on 127.0.0.1), jobs that do not
//! wait for each other at the same time; a build after them, in yet
//! another empty store, importing the caches the plan names, runs nothing.

#[macro_use]
mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;

use common::assert_success;
use common::build::*;

fn project(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("main.txt"), "main\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM kiln-test/busybox:1 AS deps\n\
         RUN echo deps > /deps\n\
         FROM deps AS build\n\
         COPY main.txt /src/main.txt\n\
         RUN cat /deps /src/main.txt > /app\n\
         FROM kiln-test/busybox:1 AS lint\n\
         RUN echo clean > /lint\n\
         FROM kiln-test/busybox:1\n\
         COPY --from=build /app /app\n\
         COPY --from=lint /lint /lint\n\
         RUN cat /app /lint > /report\n",
    )
    .unwrap();
}

#[test]
fn planned_jobs_on_separate_stores_leave_the_final_build_nothing_to_run() {
    if !kiln_build_available() {
        missing_prerequisite("build_stage_plan: no `kiln build`");
        return;
    }
    if !have("docker-registry") {
        missing_prerequisite("build_stage_plan: no docker-registry");
        return;
    }
    let tmp = scratch("kiln-bt-plan-");
    let reg = support::Registry::start(support::Auth::None);
    let ctx = tmp.path().join("ctx");
    project(&ctx);
    let store = |name: &str| {
        let k = KilnBuild::new(&tmp.path().join(name), Who::Caller);
        import_bases(&k, false);
        k
    };
    let cache = format!("type=registry,ref={}/plan/cache:ci", reg.host());
    let planner = store("planner");
    let out = planner
        .cmd()
        .args([
            "build",
            "--print=stages",
            "--build-arg",
            EPOCH,
            "-t",
            "app:1",
        ])
        .args(["--cache-to", &cache])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "kiln build --print=stages");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = plan["jobs"].as_array().unwrap();
    let stages: Vec<&str> = jobs
        .iter()
        .map(|j| j["stage"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(stages, ["deps", "build", "lint", ""], "{plan:#}");
    assert_eq!(jobs[1]["depends_on"], serde_json::json!(["deps"]));
    assert_eq!(jobs[3]["depends_on"], serde_json::json!(["build", "lint"]));
    // Nothing was built by planning.
    assert!(planner.output(&["inspect", "app:1"]).status.code() != Some(0));

    // Waves of jobs whose dependencies are done, each job a process with
    // an empty store of its own, the wave's jobs at the same time.
    let mut done: Vec<String> = Vec::new();
    let mut left: Vec<&serde_json::Value> = jobs.iter().collect();
    let mut wave_no = 0;
    while !left.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) = left.into_iter().partition(|j| {
            j["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| done.iter().any(|x| x == d.as_str().unwrap()))
        });
        assert!(
            !ready.is_empty(),
            "a job waits for a job that is not planned: {plan:#}"
        );
        let running: Vec<_> = ready
            .iter()
            .map(|job| {
                let name = job["stage"].as_str().unwrap_or("final").to_string();
                let k = store(&format!("job-{wave_no}-{name}"));
                let argv: Vec<String> = job["command"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                assert_eq!(argv[1], "build", "{argv:?}");
                assert!(!argv.iter().any(|a| a.contains("planner")), "{argv:?}");
                let child = k
                    .cmd()
                    .args(&argv[1..])
                    .arg("--progress=plain")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (name, argv, child)
            })
            .collect();
        for (name, argv, child) in running {
            let out = child.wait_with_output().unwrap();
            assert_success(&out, &format!("job {name}: {argv:?}"));
            done.push(name);
        }
        left = rest;
        wave_no += 1;
    }
    assert_eq!(wave_no, 3, "deps and lint, then build, then the final job");

    // A fresh machine that imports every cache the plan names runs nothing.
    let last = store("last");
    let mut flags = vec!["--build-arg", EPOCH];
    let froms: Vec<String> = jobs
        .iter()
        .map(|j| {
            j["cache"]
                .as_str()
                .unwrap()
                .split(",mode=")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for f in &froms {
        flags.extend(["--cache-from", f.as_str()]);
    }
    let (out, _, log) = kiln_build(&last, &ctx, &flags);
    assert!(out.status.success(), "{log}");
    assert_eq!(ran(&log), Vec::<String>::new(), "{log}");
}
