//! Issue #13 ("the first hour as a docker user"), from the user's side:
//! `kiln run`'s docker flags (-i, -t on a real terminal, --entrypoint,
//! --env-file, --name, --rm, a missing image pulled, 127/126 for a command
//! that does not run), `kiln copy` of a bare registry reference, `kiln
//! completion`, and the stripped release profile. The run scenarios go
//! as root and as the unprivileged `kilntest` (subuid 200000:65536).

#[macro_use]
mod common;
#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::fs;
use std::process::{Command, Output, Stdio};

use common::build::*;
use common::{busybox_rootfs, is_root};

/// A store for `who` holding the busybox image `base`, with an entrypoint
/// and a command to override.
fn store(who: Who) -> Option<(tempfile::TempDir, KilnBuild)> {
    if who == Who::Kilntest && !is_root() {
        missing_prerequisite("the kilntest variant needs a root caller");
        return None;
    }
    let d = scratch("kiln-run-flags-");
    let rootfs = d.path().join("rootfs");
    busybox_rootfs(&rootfs);
    fs::write(rootfs.join("not-executable"), "#!/bin/sh\necho no\n").unwrap();
    let k = KilnBuild::new(&d.path().join("store"), who);
    k.ok(&[
        "import",
        rootfs.to_str().unwrap(),
        "base",
        "--change",
        r#"ENTRYPOINT ["/bin/echo", "from-entrypoint"]"#,
        "--change",
        r#"CMD ["from-cmd"]"#,
    ]);
    Some((d, k))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(k: &KilnBuild, args: &[&str], out: &Output) {
    eprintln!(
        "[{:?}] kiln {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        k.who,
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn run(k: &KilnBuild, args: &[&str]) -> Output {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    let out = k.output(&a);
    show(k, &a, &out);
    out
}

fn run_ok(k: &KilnBuild, args: &[&str]) -> String {
    let out = run(k, args);
    assert!(out.status.success(), "kiln run {args:?}: {}", out.status);
    text(&out.stdout)
}

/// `kiln run ARGS` with `input` on stdin (a pipe).
fn run_with_stdin(k: &KilnBuild, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    let mut child = k
        .cmd()
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    show(k, &a, &out);
    out
}

both!(entrypoint_replaces_the_images_and_drops_its_cmd, |who| {
    let Some((_d, k)) = store(who) else { return };
    // The image's own: ENTRYPOINT + CMD; a command replaces CMD only.
    assert_eq!(run_ok(&k, &["base"]), "from-entrypoint from-cmd\n");
    assert_eq!(run_ok(&k, &["base", "a", "b"]), "from-entrypoint a b\n");
    // --entrypoint: the image's CMD goes too, as with docker.
    assert_eq!(run_ok(&k, &["--entrypoint", "/bin/echo", "base"]), "\n");
    assert_eq!(
        run_ok(&k, &["--entrypoint", "echo", "base", "x", "y"]),
        "x y\n"
    );
    // "" clears it: the command runs alone.
    assert_eq!(
        run_ok(&k, &["--entrypoint", "", "base", "echo", "cleared"]),
        "cleared\n"
    );
    let out = run(&k, &["--entrypoint", "", "base"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has no command"));
});

both!(env_file_follows_dockers_rules, |who| {
    let Some((d, k)) = store(who) else { return };
    let file = d.path().join("app.env");
    fs::write(
        &file,
        "# a comment\n\
         \n\
         A=from-file\n\
         \x20 SPACED=two words  \n\
         QUOTED=\"kept\"\n\
         FROM_CALLER\n\
         UNSET_IN_CALLER\n\
         OVERRIDDEN=file\n",
    )
    .unwrap();
    give_to_kilntest(d.path());
    let mut c = k.cmd();
    c.args(["run", "--env-file", file.to_str().unwrap()])
        .args(["-e", "OVERRIDDEN=flag", "-e", "ALSO_UNSET"])
        .args(["--entrypoint", "env", "base"])
        .env("FROM_CALLER", "caller-value")
        .env_remove("UNSET_IN_CALLER")
        .env_remove("ALSO_UNSET");
    let out = c.output().unwrap();
    show(&k, &["run", "--env-file", "..."], &out);
    assert!(out.status.success());
    let env = text(&out.stdout);
    let lines: Vec<&str> = env.lines().collect();
    for want in [
        "A=from-file",
        "SPACED=two words  ",
        "QUOTED=\"kept\"",
        "FROM_CALLER=caller-value",
        "OVERRIDDEN=flag",
    ] {
        assert!(lines.contains(&want), "{want:?} not in\n{env}");
    }
    for absent in ["UNSET_IN_CALLER", "ALSO_UNSET", "# a comment"] {
        assert!(!env.contains(absent), "{absent:?} in\n{env}");
    }
    // A bad line is an error naming the file and line, not a panic.
    fs::write(&file, "OK=1\nBAD KEY=1\n").unwrap();
    let out = run(&k, &["--env-file", file.to_str().unwrap(), "base", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
});

both!(stdin_reaches_the_command_only_with_i, |who| {
    let Some((_d, k)) = store(who) else { return };
    let out = run_with_stdin(&k, &["--entrypoint", "cat", "base"], "piped\n");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "", "stdin without -i");
    let out = run_with_stdin(&k, &["-i", "--entrypoint", "cat", "base"], "piped\n");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "piped\n");
});

/// `kiln run ARGS` on a real terminal (util-linux `script`), fed `input`
/// after a second; returns the exit code and what the terminal showed.
fn run_on_terminal(k: &KilnBuild, args: &str, input: &str) -> Option<(Option<i32>, String)> {
    if !have("script") {
        missing_prerequisite("run_flags: no `script` (util-linux) for a terminal");
        return None;
    }
    let prefix = match k.who {
        Who::Caller => String::new(),
        Who::Kilntest => format!("runuser -u {TEST_USER} -- "),
    };
    let cmd = format!(
        "{prefix}{} --root {} run {args}",
        k.bin.display(),
        k.root.display()
    );
    let feed = format!("sleep 1; printf '{input}'; sleep 2");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "({feed}) | script -qefc \"$KILN_CMD\" /dev/null; echo \"exit=$?\" >&2"
        ))
        .env("KILN_CMD", &cmd)
        .env_remove("KILN_ROOT")
        .current_dir("/")
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    let err = text(&out.stderr);
    eprintln!(
        "[{:?}] {cmd}\n--- terminal\n{screen}--- stderr\n{err}",
        k.who
    );
    let code = err
        .lines()
        .find_map(|l| l.strip_prefix("exit="))
        .and_then(|c| c.trim().parse().ok());
    Some((code, screen))
}

both!(tty_is_a_real_terminal_and_passes_the_exit_code, |who| {
    let Some((_d, k)) = store(who) else { return };
    // -t: stdin and stdout are a terminal, TERM is set, the code is kiln's.
    let Some((code, screen)) = run_on_terminal(
        &k,
        "-t --entrypoint sh base -c 'test -t 0 && test -t 1 && echo tty-$TERM; exit 7'",
        "",
    ) else {
        return;
    };
    assert_eq!(code, Some(7), "{screen}");
    assert!(screen.contains("tty-xterm"), "{screen}");
    // -it: what is typed reaches the command through its terminal.
    let (code, screen) = run_on_terminal(
        &k,
        "-it --entrypoint sh base -c 'read line; echo got-$line; exit 5'",
        "typed\\n",
    )
    .unwrap();
    assert_eq!(code, Some(5), "{screen}");
    assert!(screen.contains("got-typed"), "{screen}");
    // Ctrl-C on kiln's terminal is the command's terminal's: SIGINT, 130.
    let (code, screen) = run_on_terminal(&k, "-it --entrypoint sleep base 30", "\\003").unwrap();
    assert_eq!(code, Some(130), "{screen}");
    // Without -t the command has no terminal, even on kiln's.
    let (code, screen) =
        run_on_terminal(&k, "--entrypoint sh base -c 'test -t 1 || echo no-tty'", "").unwrap();
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("no-tty"), "{screen}");
    // -i alone on a terminal: the input arrives, through a pipe.
    let (code, screen) = run_on_terminal(
        &k,
        "-i --entrypoint sh base -c 'test -t 0 || { read line; echo piped-$line; }'",
        "typed\n",
    )
    .unwrap();
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("piped-typed"), "{screen}");
    // The pty's size is the terminal's, and follows it when it changes.
    let prefix = match who {
        Who::Caller => String::new(),
        Who::Kilntest => format!("runuser -u {TEST_USER} -- "),
    };
    let cmd = format!(
        "stty rows 20 cols 70; {prefix}{} --root {} run -t --entrypoint sh base \
         -c 'stty size; sleep 3; stty size' & sleep 1.5; stty rows 33 cols 99; wait",
        k.bin.display(),
        k.root.display()
    );
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("KILN_ROOT")
        .current_dir("/")
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    let sizes: Vec<&str> = screen.lines().map(str::trim).collect();
    assert_eq!(sizes, ["20 70", "33 99"], "{screen}{}", text(&out.stderr));
    // The caller's terminal is back in cooked mode afterwards: `stty`
    // after kiln, in the same terminal, shows echo and icanon on.
    let cmd = format!(
        "{} --root {} run -it --entrypoint true base; stty -a",
        k.bin.display(),
        k.root.display()
    );
    if who == Who::Caller {
        let out = Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .env_remove("KILN_ROOT")
            .output()
            .unwrap();
        let screen = text(&out.stdout);
        assert!(
            screen.contains(" icanon") && screen.contains(" echo "),
            "{screen}"
        );
    }
});

both!(missing_command_exits_127_and_unexecutable_126, |who| {
    let Some((_d, k)) = store(who) else { return };
    let out = run(&k, &["--entrypoint", "nope", "base"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{}",
        text(&out.stderr)
    );
    let out = run(&k, &["--entrypoint", "", "base", "/no/such"]);
    assert_eq!(out.status.code(), Some(127));
    let out = run(&k, &["--entrypoint", "/not-executable", "base"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains(r#"exec: "/not-executable": permission denied"#),
        "{}",
        text(&out.stderr)
    );
    // A command that runs and fails keeps its own code.
    let out = run(&k, &["--entrypoint", "sh", "base", "-c", "exit 127"]);
    assert_eq!(out.status.code(), Some(127));
});

both!(name_rm_and_hostname, |who| {
    let Some((_d, k)) = store(who) else { return };
    // --name is the default hostname; --hostname wins; --rm changes nothing.
    assert_eq!(
        run_ok(
            &k,
            &[
                "--rm",
                "--name",
                "web-1",
                "--entrypoint",
                "hostname",
                "base"
            ]
        ),
        "web-1\n"
    );
    assert_eq!(
        run_ok(
            &k,
            &[
                "--name",
                "web-1",
                "--hostname",
                "h",
                "--entrypoint",
                "hostname",
                "base"
            ]
        ),
        "h\n"
    );
    assert_eq!(run_ok(&k, &["--entrypoint", "hostname", "base"]), "kiln\n");
    // Two runs with the same name: no container is kept to clash with.
    run_ok(&k, &["--name", "web-1", "base"]);
    let out = run(&k, &["--name", "bad/name", "base"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--name"),
        "{}",
        text(&out.stderr)
    );
    let help = k.ok(&["run", "--help"]);
    assert!(help.contains("--rm") && help.contains("always"), "{help}");
});

both!(run_pulls_a_missing_image, |who| {
    if !have("docker-registry") {
        missing_prerequisite("run_flags: no docker-registry");
        return;
    }
    let Some((d, k)) = store(who) else { return };
    let reg = support::Registry::start(support::Auth::None);
    let remote = format!("{}/first-hour/busybox:1", reg.host());
    k.ok(&["tag", "base", &remote]);
    k.ok(&["push", &remote]);
    // A fresh store: kiln run pulls, says so on stderr, then runs.
    let fresh = KilnBuild::new(&d.path().join("fresh"), who);
    let out = fresh.output(&["run", "--pull", "never", &remote, "never"]);
    assert!(!out.status.success(), "--pull never pulled");
    let out = fresh.output(&["run", &remote, "pulled"]);
    show(&fresh, &["run", &remote], &out);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "from-entrypoint pulled\n");
    assert!(
        text(&out.stderr).contains("Unable to find image"),
        "{}",
        text(&out.stderr)
    );
    let images = fresh.ok(&["images"]);
    assert!(images.contains("first-hour/busybox"), "{images}");
    // Now it is there: no second pull.
    let out = fresh.output(&["run", &remote, "again"]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("Unable to find"));
    // A missing image the registry does not have either: a clear error.
    let out = fresh.output(&["run", &format!("{}/no/such:1", reg.host())]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no/such"),
        "{}",
        text(&out.stderr)
    );
});

#[test]
fn copy_takes_a_bare_registry_reference_as_the_registry() {
    if !have("docker-registry") {
        missing_prerequisite("run_flags: no docker-registry");
        return;
    }
    let Some((d, k)) = store(Who::Caller) else {
        return;
    };
    let reg = support::Registry::start(support::Auth::None);
    let remote = format!("{}/copy/busybox:1", reg.host());
    // Store to registry with no docker:// (crane's reading).
    let digest = k.ok(&["copy", "kiln:base", &remote]);
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"));
    assert_eq!(k.ok(&["digest", &remote]).trim(), digest);
    assert!(
        reg.log_text().contains("PUT /v2/copy/busybox/manifests/1"),
        "no manifest PUT in the registry log"
    );
    // Registry to the store, bare on the source side.
    k.ok(&["copy", &remote, "kiln:copied:1"]);
    assert!(k.ok(&["images"]).contains("copied"));
    // localhost names a registry too: nothing in the store by that name.
    let local = format!("localhost:{}/copy/busybox:1", reg.port);
    let layout = d.path().join("layout");
    k.ok(&["copy", &local, &format!("oci:{}:x", layout.display())]);
    assert!(layout.join("index.json").exists());
    // A name without a host stays the store's.
    k.ok(&["copy", "base", &format!("oci:{}:y", layout.display())]);
    let help = k.ok(&["copy", "--help"]);
    assert!(help.contains("kiln tag"), "{help}");
}

#[test]
fn completion_scripts_for_bash_zsh_fish() {
    let d = scratch("kiln-completion-");
    let k = KilnBuild::new(&d.path().join("store"), Who::Caller);
    for shell in ["bash", "zsh", "fish"] {
        let script = k.ok(&["completion", shell]);
        for word in ["run", "copy", "entrypoint", "env-file"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    // bash loads it, and it completes `kiln ru` to `run`.
    let script = d.path().join("kiln.bash");
    fs::write(&script, k.ok(&["completion", "bash"])).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(kiln ru); COMP_CWORD=1; COMP_LINE='kiln ru'; COMP_POINT=7; \
             _kiln kiln ru kiln; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).lines().any(|l| l == "run"),
        "bash completion of `kiln ru`: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = k.output(&["completion", "tcsh"]);
    assert!(!out.status.success());
}

/// The release binary carries no debug info; the README says how to get
/// line tables back for profiling.
#[test]
fn release_profile_strips_debug_info() {
    let root = repo_dir();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let release = section(&manifest, "[profile.release]");
    assert!(
        release.contains("strip = \"debuginfo\"") || release.contains("strip = true"),
        "[profile.release] does not strip:\n{release}"
    );
    assert!(!release.contains("debug ="), "{release}");
    let profiling = section(&manifest, "[profile.profiling]");
    assert!(profiling.contains("line-tables-only"), "{profiling}");
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("--profile profiling"), "README");
}

fn section<'a>(toml: &'a str, header: &str) -> &'a str {
    let start = toml.find(header).unwrap_or_else(|| panic!("no {header}"));
    let rest = &toml[start + header.len()..];
    &rest[..rest.find("\n[").unwrap_or(rest.len())]
}
