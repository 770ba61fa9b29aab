//! ADD of a git repository cannot read the build host's files (a ref or
//! subdirectory git would take as an option, a `file://` or local
//! repository, git's `ext::` transport) nor reach its own network (git,
//! ssh and http transports to loopback or link-local addresses) without
//! `--allow network.host`. Host canaries as in `build_remote_safety.rs`;
//! as root and as kilntest.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;

use common::build::*;
use common::canary::*;

/// A bare repository under `served/repo.git` (dumb HTTP), with `file.txt`
/// at the root and `sub/inner.txt`, tagged v1.
fn git_repo(served: &Path) {
    fs::create_dir_all(served).unwrap();
    sh(&format!(
        "set -eu; cd '{}'; \
         export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com; \
         git -c init.defaultBranch=main init -q src; cd src; \
         echo repo-ok > file.txt; mkdir sub; echo inner-ok > sub/inner.txt; \
         git add -A; git commit -qm v1; git tag v1; cd ..; \
         git clone -q --bare src repo.git; git -C repo.git update-server-info; rm -rf src",
        served.display()
    ));
}

both!(git_sources_cannot_reach_host_files_or_network, |who| {
    let Some(tmp) = setup("git_sources_cannot_reach_host_files_or_network") else {
        return;
    };
    if !prerequisite(have("git"), "git is not installed") {
        return;
    }
    let canary = Canary::plant(tmp.path());
    let secret = canary.file.display().to_string();
    let served = tmp.path().join("served");
    git_repo(&served);
    // The same repository with the canary in it, on the host's disk.
    let host_repo = tmp.path().join("host-repo.git");
    sh(&format!(
        "set -eu; cd '{t}'; export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com; \
         git -c init.defaultBranch=main init -q hsrc; cp '{secret}' hsrc/; git -C hsrc add -A; git -C hsrc commit -qm c; \
         git clone -q --bare hsrc '{r}'; rm -rf hsrc",
        t = tmp.path().display(),
        r = host_repo.display()
    ));
    let http = serve_http(&served);
    let k = store(tmp.path(), who, "store");
    let allow = ["--allow", "network.host"];

    // Allowed, it works: a tag, and a subdirectory of it alone.
    let df = format!(
        "FROM {BUSYBOX_IMAGE}\nADD {http}/repo.git#v1 /whole\nADD {http}/repo.git#v1:sub /only-sub\n"
    );
    let (ok, log) = build(
        &k,
        tmp.path(),
        &df,
        &["--allow", "network.host", "-t", "git:ok"],
        &[],
    );
    assert!(ok, "{log}");
    let root = tmp.path().join("git-ok-rootfs");
    k.rootfs("git:ok", &root);
    assert_eq!(
        fs::read_to_string(root.join("whole/file.txt")).unwrap(),
        "repo-ok\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("only-sub/inner.txt")).unwrap(),
        "inner-ok\n"
    );
    assert!(!root.join("only-sub/file.txt").exists());

    // Not allowed, the server on 127.0.0.1 is refused before git runs.
    let (ok, log) = build(
        &k,
        tmp.path(),
        &format!("FROM {BUSYBOX_IMAGE}\nADD {http}/repo.git#v1 /x\n"),
        &[],
        &[],
    );
    assert!(!ok, "{log}");
    assert!(log.contains("refused to connect to 127.0.0.1"), "{log}");

    // Refs and subdirectories git could read as options, with the server
    // allowed so that only the ref stands in the way.
    for (source, says) in [
        (
            format!("{http}/repo.git#--pathspec-from-file={secret}"),
            "not a valid git ref",
        ),
        (format!("{http}/repo.git#-b"), "not a valid git ref"),
        (
            format!("{http}/repo.git#--upload-pack=cat%20{secret}"),
            "not a valid git ref",
        ),
        (
            format!("{http}/repo.git#v1:--pathspec-from-file={secret}"),
            "not a directory inside the repository",
        ),
        (
            format!("{http}/repo.git#v1:../../../../../../..{secret}"),
            "not a directory inside the repository",
        ),
    ] {
        let df = format!("FROM {BUSYBOX_IMAGE}\nADD [\"{source}\", \"/x\"]\n");
        let (ok, log) = build(&k, tmp.path(), &df, &allow, &[]);
        assert!(!ok, "ADD {source} succeeded:\n{log}");
        assert!(log.contains(says), "ADD {source}: no `{says}`:\n{log}");
        canary.assert_no_leak(&log, &k.root);
    }

    // Repositories on the host's disk: file:// is refused even allowed;
    // a path is the context's (where there is none), never cloned; git's
    // ext:: transport is not a URL kiln fetches.
    let host = host_repo.display().to_string();
    for (source, says) in [
        (format!("file://{host}"), "file://"),
        (format!("file://{host}#main"), "file://"),
        (host.clone(), "no such file"),
        (format!("{host}#main"), "no such file"),
        (
            format!("ext::sh -c cat% {secret}% >&2 #.git"),
            "no such file",
        ),
    ] {
        for flags in [&[][..], &allow[..]] {
            let df = format!("FROM {BUSYBOX_IMAGE}\nADD [\"{source}\", \"/x\"]\n");
            let (ok, log) = build(&k, tmp.path(), &df, flags, &[]);
            assert!(!ok, "ADD {source} {flags:?} succeeded:\n{log}");
            assert!(log.contains(says), "ADD {source}: no `{says}`:\n{log}");
            canary.assert_no_leak(&log, &k.root);
        }
    }

    // git and ssh transports to the host's own addresses.
    let p = canary.port;
    for (source, addr) in [
        (format!("git://127.0.0.1:{p}/repo.git"), "127.0.0.1"),
        (format!("git://2130706433:{p}/repo.git"), "127.0.0.1"),
        (format!("git://127.1:{p}/repo.git"), "127.0.0.1"),
        (format!("ssh://git@127.0.0.1:{p}/repo.git"), "127.0.0.1"),
        ("git@127.0.0.1:org/repo.git".to_string(), "127.0.0.1"),
        ("git@[::1]:org/repo.git".to_string(), "::1"),
        (
            "git@169.254.169.254:org/repo.git".to_string(),
            "169.254.169.254",
        ),
    ] {
        let df = format!("FROM {BUSYBOX_IMAGE}\nADD {source} /x\n");
        let (ok, log) = build(&k, tmp.path(), &df, &[], &[]);
        assert!(!ok, "ADD {source} was not refused:\n{log}");
        assert!(
            log.contains(&format!("refused to connect to {addr}")),
            "ADD {source}: the error does not name {addr}:\n{log}"
        );
    }
    assert_eq!(
        canary.hits(),
        0,
        "git connected to the host's canary server"
    );
    canary.assert_no_leak("", &k.root);
});
