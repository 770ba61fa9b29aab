//! The flags CI scripts pass to `docker build` and `buildx build`: accepted
//! where docker ignores them too, said out loud where kiln does not do what
//! they ask yet, and checked before the build where a typo would waste it.

mod common;

use std::fs;

use common::build::*;

fn setup() -> Option<(tempfile::TempDir, std::path::PathBuf, KilnBuild)> {
    if !kiln_build_available() {
        return None;
    }
    let tmp = scratch("kiln-bt-flags-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\nARG USED=1\nRUN echo $USED > /used\n",
    )
    .unwrap();
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    Some((tmp, ctx, k))
}

#[test]
fn buildx_flags_are_accepted_and_unsupported_ones_say_so() {
    let Some((_tmp, ctx, k)) = setup() else {
        return;
    };
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "flags:1",
            "--load",
            "--rm",
            "--force-rm=false",
            "--provenance=false",
            "--sbom=false",
        ],
    );
    assert!(out.status.success(), "{log}");
    assert!(
        !log.contains("attestations"),
        "false asks for nothing:\n{log}"
    );
    assert!(k.ok(&["images"]).contains("flags"));

    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "--provenance=mode=max",
            "--sbom=true",
            "--cache-from",
            "type=registry,ref=localhost:5000/cache",
            "--cache-to",
            "type=inline",
            "--cache-to",
            "type=gha",
        ],
    );
    assert!(out.status.success(), "{log}");
    for said in [
        "--provenance: kiln writes no provenance attestations yet",
        "--sbom: kiln writes no SBOM attestations yet",
        // Nothing listens there: a warning, and the build goes on.
        "warning: --cache-from localhost:5000/cache:latest: ",
        "; building without this cache",
        "--cache-to type=gha: kiln does not export this kind of cache yet; ignored",
        // The inline cache is kiln's own since issue 14.
        "cache: 1 entries inline in the image",
    ] {
        assert!(log.contains(said), "missing {said:?}:\n{log}");
    }
}

#[test]
fn a_bad_tag_fails_before_the_build() {
    let Some((_tmp, ctx, k)) = setup() else {
        return;
    };
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "Bad:Tag"]);
    assert!(!out.status.success());
    assert!(
        log.contains("-t \"Bad:Tag\"") && log.contains("lowercase"),
        "{log}"
    );
    assert!(
        !log.contains("RUN echo"),
        "a step ran before the tag was checked:\n{log}"
    );
}

#[test]
fn an_unused_build_arg_gets_dockers_warning() {
    let Some((_tmp, ctx, k)) = setup() else {
        return;
    };
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &["--build-arg", "USED=2", "--build-arg", "TYPO=3"],
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("One or more build-args [TYPO] were not consumed"),
        "{log}"
    );
    assert!(!log.contains("[USED"), "{log}");
}

#[test]
fn an_unknown_flag_is_not_offered_as_a_value() {
    let Some((_tmp, ctx, k)) = setup() else {
        return;
    };
    for args in [
        vec!["build", "--squash-all", ctx.to_str().unwrap()],
        vec!["build", ctx.to_str().unwrap(), "--zzz"],
        vec!["images", "--zzz"],
    ] {
        let out = k.output(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("unexpected argument"), "{args:?}: {err}");
        assert!(
            !err.contains("'-- "),
            "{args:?} suggests `-- --flag`: {err}"
        );
    }
}

#[test]
fn add_host_and_shm_size_reach_every_run() {
    let Some((tmp, ctx, k)) = setup() else {
        return;
    };
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         RUN grep -E 'db|v6' /etc/hosts > /hosts && grep ' /dev/shm ' /proc/mounts > /shm\n",
    )
    .unwrap();
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "hosts:1",
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "v6=[::1]",
            "--shm-size",
            "8m",
        ],
    );
    assert!(out.status.success(), "{log}");
    let dir = tmp.path().join("rootfs");
    k.rootfs("hosts:1", &dir);
    let hosts = fs::read_to_string(dir.join("hosts")).unwrap();
    assert!(hosts.contains("10.1.2.3\tdb"), "{hosts}");
    assert!(hosts.contains("::1\tv6"), "{hosts}");
    let shm = fs::read_to_string(dir.join("shm")).unwrap();
    assert!(shm.contains("size=8192k"), "{shm}");
    // The hosts are part of the RUN's key, as BuildKit's: another address
    // runs it again.
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "--add-host",
            "db:10.9.9.9",
            "--add-host",
            "v6:[::1]",
            "--shm-size",
            "8m",
        ],
    );
    assert!(out.status.success(), "{log}");
    assert!(exec_steps(&log).iter().any(|s| !s.cached), "{log}");
    // Bad values fail before the build.
    for bad in [
        ["--add-host", "nohost"],
        ["--add-host", "db:not-an-ip"],
        ["--shm-size", "lots"],
    ] {
        let (out, _, log) = kiln_build(&k, &ctx, &bad);
        assert!(!out.status.success(), "{bad:?}: {log}");
        assert!(log.contains(bad[0]), "{bad:?}: {log}");
    }
}

/// What a log shows: the FROM a stage builds on, its arguments expanded; a
/// Dockerfile error with its line, a caret and the closest instruction; and
/// no escape sequence when the stream is not a terminal.
#[test]
fn logs_name_what_they_mean_in_plain_text() {
    let Some((_tmp, ctx, k)) = setup() else {
        return;
    };
    fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE=kiln-test/busybox:1\nFROM $BASE AS base\nRUN true\nFROM base\nRUN true\n",
    )
    .unwrap();
    let (out, _, log) = kiln_build(&k, &ctx, &[]);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("[base 1/2] FROM kiln-test/busybox:1\n"),
        "{log}"
    );
    assert!(log.contains("[stage-1 1/2] FROM base\n"), "{log}");
    assert!(!log.contains("$BASE"), "{log}");

    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\nRUNN echo hi\n",
    )
    .unwrap();
    let (out, _, log) = kiln_build(&k, &ctx, &[]);
    assert!(!out.status.success());
    assert!(
        log.contains("Dockerfile:2:1: unknown instruction: RUNN"),
        "{log}"
    );
    assert!(log.contains(" 2 | RUNN echo hi\n   | ^^^^"), "{log}");
    assert!(log.contains("did you mean RUN?"), "{log}");
    let df = ctx.join("Dockerfile");
    fs::write(&df, "from kiln-test/busybox:1\nMAINTAINER me\nRUN true\n").unwrap();
    for args in [
        vec!["dockerfile", "check", "-f", df.to_str().unwrap()],
        vec!["build", "--progress", "plain", ctx.to_str().unwrap()],
    ] {
        let out = k.output(&args);
        let all = [out.stdout, out.stderr].concat();
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.contains("MAINTAINER") || text.contains("Maintainer"),
            "{args:?}: {text}"
        );
        assert!(
            !all.contains(&0x1b),
            "{args:?} wrote an escape sequence into a pipe: {text}"
        );
    }
}
