//! What `kiln build` shows while it works and when a RUN fails: RUN output
//! in the plain log (`#N 0.123 line`), the TTY view through a real
//! pseudo-terminal, `-q`, and BuildKit's error report for a failing RUN.
//! Each test has its own store.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::build::*;

/// Tests `kiln build` does not pass yet, with why: reported loudly, and a
/// listed test that passes fails, so the list only shrinks.
const KNOWN_GAPS: &[(&str, &str)] = &[];

fn setup(name: &str) -> Option<(tempfile::TempDir, KilnBuild)> {
    if !kiln_build_available() {
        missing_prerequisite(&format!("build_progress::{name}: no `kiln build`"));
        return None;
    }
    let tmp = scratch("kiln-bt-progress-");
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    Some((tmp, k))
}

fn context(dir: &Path, dockerfile: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

/// The `#N` of the step whose title contains `needle`.
fn step_id(log: &str, needle: &str) -> String {
    plain_steps(log)
        .into_iter()
        .find(|s| s.title.contains(needle))
        .unwrap_or_else(|| panic!("no step `{needle}` in:\n{log}"))
        .id
}

/// The output lines of step `id`: `#N 0.123 text` → text.
fn output_of(log: &str, id: &str) -> Vec<String> {
    let prefix = format!("#{id} ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (t, text) = rest.split_once(' ').unwrap_or((rest, ""));
            t.parse::<f64>().ok().map(|_| text.to_string())
        })
        .collect()
}

#[test]
fn plain_log_prefixes_run_output() {
    guarded(
        KNOWN_GAPS,
        "plain_log_prefixes_run_output",
        plain_log_prefixes_run_output_body,
    );
}

fn plain_log_prefixes_run_output_body() {
    let Some((tmp, k)) = setup("plain_log_prefixes_run_output") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    context(
        &ctx,
        "FROM kiln-test/busybox:1\n\
         RUN echo out-line-1 && echo err-line >&2 && printf 'no-newline'\n\
         RUN echo second-step\n",
    );
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "plain-test:latest"]);
    assert!(out.status.success(), "build failed:\n{log}");
    let id = step_id(&log, "RUN echo out-line-1");
    assert_eq!(
        output_of(&log, &id),
        ["out-line-1", "err-line", "no-newline"],
        "{log}"
    );
    let id2 = step_id(&log, "RUN echo second-step");
    assert_eq!(output_of(&log, &id2), ["second-step"], "{log}");
    // The output comes before the step's DONE.
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle}:\n{log}"))
    };
    assert!(pos(" out-line-1") < pos(&format!("#{id} DONE")), "{log}");
}

#[test]
fn failing_run_shows_line_command_status_and_output() {
    guarded(
        KNOWN_GAPS,
        "failing_run_shows_line_command_status_and_output",
        failing_run_shows_line_command_status_and_output_body,
    );
}

fn failing_run_shows_line_command_status_and_output_body() {
    let Some((tmp, k)) = setup("failing_run_shows_line_command_status_and_output") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    context(
        &ctx,
        "FROM kiln-test/busybox:1\n\
         RUN echo fine > /fine\n\
         RUN seq 1 30 && echo 'to stderr' >&2 && exit 3\n\
         CMD [\"true\"]\n",
    );
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "fail-test:latest"]);
    assert!(!out.status.success(), "a failing RUN built:\n{log}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Where: the Dockerfile and line, the instruction marked in an excerpt.
    let dockerfile = ctx.join("Dockerfile");
    assert!(
        stderr.contains(&format!("{}:3: ", dockerfile.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("   3 | >>> RUN seq 1 30 && echo 'to stderr' >&2 && exit 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("   2 |     RUN echo fine > /fine"),
        "{stderr}"
    );
    // What and how it ended.
    assert!(
        stderr.contains(
            "process \"/bin/sh -c seq 1 30 && echo 'to stderr' >&2 && exit 3\" \
             did not complete successfully: exit code: 3"
        ),
        "{stderr}"
    );
    // The last 20 lines of its output, in BuildKit's box.
    let box_start = stderr
        .find("] RUN seq 1 30 && echo 'to stderr' >&2 && exit 3:\n")
        .unwrap_or_else(|| panic!("no ` > [step]:` line:\n{stderr}"));
    let boxed: Vec<&str> = stderr[box_start..]
        .lines()
        .skip(1)
        .take_while(|l| *l != "------")
        .map(|l| {
            l.split_once(' ').map_or("", |(t, text)| {
                assert!(t.parse::<f64>().is_ok(), "no time stamp in {l:?}");
                text
            })
        })
        .collect();
    let mut want: Vec<String> = (12..=30).map(|i| i.to_string()).collect();
    want.push("to stderr".into());
    assert_eq!(boxed, want, "{stderr}");
    // The plain log marks the step as failed.
    let id = step_id(&log, "RUN seq 1 30");
    assert!(
        log.contains(&format!("#{id} ERROR: process \"/bin/sh -c seq 1 30")),
        "{log}"
    );
    // Nothing half-built is tagged.
    let inspect = k.output(&["inspect", "fail-test:latest"]);
    assert!(
        !inspect.status.success(),
        "a failed build tagged fail-test:latest"
    );
}

#[test]
fn quiet_prints_only_the_image_id() {
    guarded(
        KNOWN_GAPS,
        "quiet_prints_only_the_image_id",
        quiet_prints_only_the_image_id_body,
    );
}

fn quiet_prints_only_the_image_id_body() {
    let Some((tmp, k)) = setup("quiet_prints_only_the_image_id") else {
        return;
    };
    let ctx = tmp.path().join("ctx");
    context(
        &ctx,
        "FROM kiln-test/busybox:1\nRUN echo noisy-output\nCMD [\"true\"]\n",
    );
    let iid = tmp.path().join("iid");
    for flag in ["-q", "--progress=quiet"] {
        let out = k
            .cmd()
            .args(["build", flag, "--iidfile", iid.to_str().unwrap()])
            .arg(&ctx)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{flag}: {stdout}{stderr}");
        let id = fs::read_to_string(&iid).unwrap();
        assert!(id.starts_with("sha256:"), "{id}");
        assert_eq!(stdout, format!("{id}\n"), "{flag}: stdout");
        assert_eq!(stderr, "", "{flag}: stderr");
    }
}

/// Runs `kiln build` on a pseudo-terminal (util-linux `script`); returns
/// whether it succeeded and everything the terminal got.
fn build_on_tty(k: &KilnBuild, ctx: &Path, flags: &str) -> (bool, String) {
    let cmd = format!(
        "{} --root {} build {flags} {}",
        k.bin.display(),
        k.root.display(),
        ctx.display()
    );
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_ROOT")
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .output()
        .expect("spawn script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn tty_view_on_a_terminal() {
    guarded(
        KNOWN_GAPS,
        "tty_view_on_a_terminal",
        tty_view_on_a_terminal_body,
    );
}

fn tty_view_on_a_terminal_body() {
    let Some((tmp, k)) = setup("tty_view_on_a_terminal") else {
        return;
    };
    if !have("script") {
        missing_prerequisite("build_progress::tty_view_on_a_terminal: no `script` (util-linux)");
        return;
    }
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("src/a.txt"), "a\n").unwrap();
    context(
        &ctx,
        "FROM kiln-test/busybox:1 AS build\n\
         COPY src/ /src/\n\
         RUN echo tick-output-1 && echo tick-output-2 && sleep 1 && cat /src/a.txt > /out\n\
         FROM kiln-test/busybox:1\n\
         COPY --from=build /out /out\n",
    );
    let iid = tmp.path().join("iid");
    let flags = format!(
        "--progress=auto -t tty-test:latest --iidfile {}",
        iid.display()
    );
    let (ok, screen) = build_on_tty(&k, &ctx, &flags);
    assert!(ok, "build on a terminal failed:\n{screen}");
    let id = fs::read_to_string(&iid).unwrap();
    // auto on a terminal is the TTY view: redrawn in place, not plain lines.
    assert!(screen.contains("\x1b[K"), "no in-place redraw:\n{screen}");
    assert!(
        !screen.lines().any(|l| l.starts_with("#1 ")),
        "plain log on a tty:\n{screen}"
    );
    assert!(screen.contains("[+] Building "), "{screen}");
    assert!(screen.contains(" FINISHED"), "{screen}");
    for name in [
        "[build 2/3] COPY src/ /src/",
        "[build 3/3] RUN echo tick-output-1",
        "[stage-1 2/2] COPY --from=build /out /out",
    ] {
        assert!(screen.contains(name), "no step {name:?}:\n{screen}");
    }
    // The running RUN showed its output under it, while it slept.
    assert!(screen.contains(" => => # tick-output-2"), "{screen}");
    assert!(screen.contains(&id), "no image ID:\n{screen}");
    assert!(screen.contains("built sha256:"), "no digest:\n{screen}");

    let (ok, screen) = build_on_tty(&k, &ctx, &flags);
    assert!(ok, "rebuild on a terminal failed:\n{screen}");
    assert!(
        screen.contains(" => CACHED [build 3/3] RUN echo tick-output-1"),
        "no CACHED step on a rebuild:\n{screen}"
    );
    assert!(screen.contains(&id), "{screen}");

    // A failing RUN: its line says ERROR, the report follows the view.
    let bad = tmp.path().join("bad");
    context(
        &bad,
        "FROM kiln-test/busybox:1\nRUN echo about-to-fail && exit 7\n",
    );
    let (ok, screen) = build_on_tty(&k, &bad, "--progress=tty");
    assert!(!ok, "a failing RUN built:\n{screen}");
    let error_line = screen
        .find(" => ERROR [stage-0 2/2] RUN echo about-to-fail")
        .unwrap_or_else(|| panic!("no ERROR line:\n{screen}"));
    let report = screen
        .find("did not complete successfully: exit code: 7")
        .unwrap_or_else(|| panic!("no error report:\n{screen}"));
    assert!(error_line < report, "{screen}");
}
