//! The library API in-process (the other tests go through the example
//! binary): statuses, typed errors, concurrent runs from threads. As root only:
//! an unprivileged test process would need `ensure_root_in_userns`, which
//! re-executes the process and so belongs in a binary, not a test harness.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use common::*;
use kiln_sandbox::{Error, Isolation, Rootfs, RunSpec, Sandbox, exit_code};

fn rootfs() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !is_root() {
        missing_prerequisite("in-process API tests need root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("root");
    make_busybox_rootfs(&r);
    Some((dir, r))
}

#[test]
fn statuses_and_errors() {
    let Some((_d, r)) = rootfs() else { return };
    let sb = Sandbox::new(Isolation::Auto).unwrap();
    assert_eq!(sb.isolation(), Isolation::Root);

    let st = sb
        .run(&RunSpec::new(
            Rootfs::Dir(r.clone()),
            ["sh", "-c", "exit 5"],
        ))
        .unwrap();
    assert_eq!(st.code(), Some(5));
    let st = sb
        .run(&RunSpec::new(
            Rootfs::Dir(r.clone()),
            ["sh", "-c", "kill -KILL $$"],
        ))
        .unwrap();
    assert_eq!(st.signal(), Some(9));
    assert_eq!(exit_code(&st), 137);

    let e = sb
        .run(&RunSpec::new(Rootfs::Dir(r.clone()), ["nonexistent-cmd"]))
        .unwrap_err();
    assert!(matches!(e, Error::Exec { .. }), "{e}");
    let e = sb
        .run(&RunSpec::new(Rootfs::Dir(r.clone()), Vec::<String>::new()))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSpec(_)), "{e}");
    let mut spec = RunSpec::new(Rootfs::Dir(r.clone()), ["true"]);
    spec.user = "ghost".into();
    let e = sb.run(&spec).unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
    let e = sb
        .run(&RunSpec::new(Rootfs::Dir(r.join("missing")), ["true"]))
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn concurrent_runs_share_a_sandbox() {
    let Some((_d, r)) = rootfs() else { return };
    let sb = Arc::new(Sandbox::new(Isolation::Root).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (sb, r) = (sb.clone(), r.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let mut spec = RunSpec::new(
                        Rootfs::Dir(r.clone()),
                        [
                            "sh",
                            "-c",
                            &format!("test \"$(hostname)\" = h{i} && exit {i}"),
                        ],
                    );
                    spec.hostname = format!("h{i}");
                    assert_eq!(sb.run(&spec).unwrap().code(), Some(i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn rootless_mode_as_real_root_maps_only_root() {
    let Some((_d, r)) = rootfs() else { return };
    let sb = Sandbox::new(Isolation::Rootless).unwrap();
    let st = sb
        .run(&RunSpec::new(
            Rootfs::Dir(r),
            [
                "sh",
                "-c",
                "test \"$(cat /proc/self/uid_map | tr -s ' ')\" = ' 0 0 1'",
            ],
        ))
        .unwrap();
    assert!(st.success());
}

#[test]
fn output_to_caller_fds() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let Some((_d, r)) = rootfs() else { return };
    let sb = Sandbox::new(Isolation::Root).unwrap();
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let reader = |fd: std::os::fd::OwnedFd| {
        std::thread::spawn(move || {
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).unwrap();
            s
        })
    };
    let (out_t, err_t) = (reader(out_r), reader(err_r));
    let io = kiln_sandbox::RunIo {
        stdin: None,
        stdout: Some(out_w.as_fd()),
        stderr: Some(err_w.as_fd()),
    };
    let spec = RunSpec::new(
        Rootfs::Dir(r),
        ["sh", "-c", "echo to-out; echo to-err >&2; ls /proc/self/fd"],
    );
    let st = sb.run_with_io(&spec, io).unwrap();
    assert!(st.success());
    drop(out_w);
    drop(err_w);
    assert_eq!(out_t.join().unwrap(), "to-out\n0\n1\n2\n3\n");
    assert_eq!(err_t.join().unwrap(), "to-err\n");
}

/// A `BindInRoot` source is resolved inside its root: a symlink to a host
/// directory (absolute, or climbing with `..`), at the source or in the
/// middle of it, never binds the host's directory; one that stays inside
/// the tree binds the tree's own path, read-only or read-write.
#[test]
fn bind_in_root_stays_in_its_root() {
    use kiln_sandbox::MountSpec;
    use std::os::unix::fs::symlink;
    let Some((d, r)) = rootfs() else { return };
    let host = d.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("canary"), "host-canary").unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/canary"), "tree-file").unwrap();
    symlink(&host, tree.join("abs")).unwrap();
    symlink("../host", tree.join("up")).unwrap();
    symlink("/sub", tree.join("inside")).unwrap();
    let sb = Sandbox::new(Isolation::Root).unwrap();
    // The rootfs is a directory, changed in place: a file and a directory
    // need mount points of their own.
    let run = |source: &str, readonly: bool, cmd: &str| {
        let mut spec = RunSpec::new(Rootfs::Dir(r.clone()), ["sh", "-c", cmd]);
        let target = if source.ends_with("canary") {
            "/f"
        } else {
            "/m"
        };
        spec.mounts.push(MountSpec::BindInRoot {
            root: tree.clone(),
            source: source.into(),
            target: target.into(),
            readonly,
        });
        sb.run(&spec)
    };
    for source in ["abs", "up", "abs/canary", "/abs/../abs/canary"] {
        for readonly in [true, false] {
            let e = run(source, readonly, "cat /m/canary /f; exit 0").unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("in the bind's root"), "{source}: {msg}");
            assert!(!msg.contains("host-canary"), "{source}: {msg}");
        }
    }
    for readonly in [true, false] {
        let st = run("inside", readonly, "test \"$(cat /m/canary)\" = tree-file").unwrap();
        assert!(st.success(), "inside (readonly {readonly})");
        let st = run("inside/canary", readonly, "test \"$(cat /f)\" = tree-file").unwrap();
        assert!(st.success(), "inside/canary (readonly {readonly})");
    }
    assert_eq!(
        std::fs::read_to_string(tree.join("sub/canary")).unwrap(),
        "tree-file"
    );
}
