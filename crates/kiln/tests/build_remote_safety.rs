//! ADD of a URL or a git repository, and remote build contexts, cannot
//! reach the build host's own network (loopback, link-local, unspecified)
//! without `--allow network.host`: not by an IP literal in any spelling,
//! not by a name, not by a redirect. Git sources cannot read host files
//! (a ref git would take as an option, a `file://` or local repository).
//!
//! Canaries: a host file and an HTTP server on 127.0.0.1 (and ::1), each
//! with a random marker. After every refused build the error names the
//! address, the marker is in neither the log nor the store, and the
//! canary server was never connected to. Every scenario runs as root and
//! as the unprivileged kilntest.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::build::*;

/// 16 random bytes as hex: unique to this run, so any hit is a leak.
fn marker(tag: &str) -> String {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    format!("canary-{tag}-{}", hex::encode(b))
}

/// A prerequisite: missing, it fails the test under CI and is reported
/// loudly elsewhere.
fn prerequisite(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} (required under CI)"
        );
        loud(&format!("build_remote_safety SKIPPED: {what}"));
    }
    ok
}

/// Serves `body` for any request on `listener`, counting connections.
fn serve_forever(
    listener: TcpListener,
    hits: Arc<AtomicUsize>,
    respond: impl Fn(&str) -> String + Send + Sync + 'static,
) {
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            hits.fetch_add(1, Ordering::SeqCst);
            let respond = respond.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(&s);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h.trim().is_empty() {
                        break;
                    }
                }
                let target = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = (&s).write_all(respond(&target).as_bytes());
            });
        }
    });
}

fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The host's canaries: a file and an HTTP server on 127.0.0.1 and ::1
/// whose answers hold a marker.
struct Canary {
    file: PathBuf,
    file_marker: String,
    http_marker: String,
    port: u16,
    port6: Option<u16>,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    fn plant(dir: &Path) -> Canary {
        let file_marker = marker("file");
        let http_marker = marker("http");
        let file = dir.join("host-secret");
        fs::write(&file, format!("{file_marker}\n")).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let body = format!("{http_marker}\n");
        let b = body.clone();
        serve_forever(l, hits.clone(), move |_| ok_response(&b));
        let port6 = TcpListener::bind("[::1]:0").ok().map(|l6| {
            let p = l6.local_addr().unwrap().port();
            let b = body.clone();
            serve_forever(l6, hits.clone(), move |_| ok_response(&b));
            p
        });
        Canary {
            file,
            file_marker,
            http_marker,
            port,
            port6,
            hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Neither marker is in `log` nor anywhere in `store`'s files (layers
    /// decompressed).
    fn assert_no_leak(&self, log: &str, store: &Path) {
        for m in [&self.file_marker, &self.http_marker] {
            assert!(
                !log.contains(m.as_str()),
                "a host canary is in the log:\n{log}"
            );
        }
        for (p, bytes) in all_bytes(store) {
            for m in [&self.file_marker, &self.http_marker] {
                assert!(
                    !find_bytes(&bytes, m.as_bytes()),
                    "a host canary is in {}",
                    p.display()
                );
            }
        }
    }
}

/// A stand-in HTTP proxy that answers `GET http://…/rN` with a redirect to
/// `targets[N]`, so a redirect can come from an address that is not the
/// host's own without any traffic leaving the machine (the proxy forwards
/// nothing).
struct RedirectingProxy {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl RedirectingProxy {
    fn start(targets: Vec<String>) -> RedirectingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        let hits = Arc::new(AtomicUsize::new(0));
        serve_forever(l, hits.clone(), move |target| {
            let n = target
                .rsplit("/r")
                .next()
                .and_then(|n| n.parse::<usize>().ok());
            match n.and_then(|n| targets.get(n)) {
                Some(t) => format!(
                    "HTTP/1.0 302 Found\r\nLocation: {t}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
            }
        });
        RedirectingProxy { url, hits }
    }
}

/// A store for `who` with the busybox base, in `tmp`.
fn store(tmp: &Path, who: Who, name: &str) -> KilnBuild {
    let k = KilnBuild::new(&tmp.join(name), who);
    import_bases(&k, false);
    k
}

/// `kiln build` of `dockerfile` in a fresh context under `tmp`, with
/// `flags` and extra environment `env`; returns success and the log.
fn build(
    k: &KilnBuild,
    tmp: &Path,
    dockerfile: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let ctx = tmp.join(format!("ctx-{}", N.fetch_add(1, Ordering::SeqCst)));
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    build_context(k, ctx.to_str().unwrap(), flags, env)
}

fn build_context(
    k: &KilnBuild,
    context: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut c = k.cmd();
    for v in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        c.env_remove(v);
    }
    for (key, v) in env {
        c.env(key, v);
    }
    let out = c
        .args(["build", "--progress=plain"])
        .args(flags)
        .arg(context)
        .output()
        .expect("spawn kiln build");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

fn setup(name: &str) -> Option<tempfile::TempDir> {
    if !prerequisite(kiln_build_available(), &format!("{name}: no `kiln build`")) {
        return None;
    }
    if !prerequisite(
        common::is_root(),
        &format!("{name}: needs root to act as kilntest"),
    ) {
        return None;
    }
    Some(scratch("kiln-bt-remote-"))
}

macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn as_root() {
                ($body)(Who::Caller)
            }
            #[test]
            fn as_kilntest() {
                ($body)(Who::Kilntest)
            }
        }
    };
}

// ------------------------------------------------------------ URLs

both!(add_url_of_the_host_network_is_refused, |who| {
    let Some(tmp) = setup("add_url_of_the_host_network_is_refused") else {
        return;
    };
    let canary = Canary::plant(tmp.path());
    let k = store(tmp.path(), who, "store");
    let p = canary.port;
    // (URL, the address the error must name)
    let mut cases = vec![
        (format!("http://127.0.0.1:{p}/x"), "127.0.0.1".to_string()),
        (format!("http://2130706433:{p}/x"), "127.0.0.1".into()),
        (format!("http://127.1:{p}/x"), "127.0.0.1".into()),
        (format!("http://0x7f.0.0.1:{p}/x"), "127.0.0.1".into()),
        (format!("http://127.0.0.2:{p}/x"), "127.0.0.2".into()),
        (
            format!("http://[::ffff:127.0.0.1]:{p}/x"),
            "::ffff:127.0.0.1".into(),
        ),
        (format!("http://0.0.0.0:{p}/x"), "0.0.0.0".into()),
        (format!("http://0:{p}/x"), "0.0.0.0".into()),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "169.254.169.254".into(),
        ),
        ("http://[fe80::1]/x".into(), "fe80::1".into()),
        (format!("https://127.0.0.1:{p}/x"), "127.0.0.1".into()),
    ];
    if let Some(p6) = canary.port6 {
        cases.push((format!("http://[::1]:{p6}/x"), "::1".into()));
    }
    for (url, addr) in &cases {
        let df = format!("FROM {BUSYBOX_IMAGE}\nADD {url} /got\n");
        let (ok, log) = build(&k, tmp.path(), &df, &[], &[]);
        assert!(!ok, "ADD {url} was not refused:\n{log}");
        assert!(
            log.contains(&format!("refused to connect to {addr}")),
            "ADD {url}: the error does not name {addr}:\n{log}"
        );
        assert!(log.contains("--allow network.host"), "{log}");
    }
    // A name that resolves there: the error says what it resolved to.
    let url = format!("http://localhost:{p}/x");
    let (ok, log) = build(
        &k,
        tmp.path(),
        &format!("FROM {BUSYBOX_IMAGE}\nADD {url} /got\n"),
        &[],
        &[],
    );
    assert!(!ok, "ADD {url} was not refused:\n{log}");
    assert!(log.contains("(localhost resolves there)"), "{log}");
    assert!(
        log.contains("refused to connect to 127.0.0.1")
            || log.contains("refused to connect to ::1"),
        "{log}"
    );
    assert_eq!(
        canary.hits(),
        0,
        "kiln connected to the host's canary server"
    );
    canary.assert_no_leak(&log, &k.root);

    // The same URL with the entitlement is fetched: the refusals above
    // were kiln's, not an unreachable server's.
    let url = format!("http://127.0.0.1:{p}/x");
    let (ok, log) = build(
        &k,
        tmp.path(),
        &format!("FROM {BUSYBOX_IMAGE}\nADD {url} /got\n"),
        &["--allow", "network.host", "-t", "allowed:1"],
        &[],
    );
    assert!(ok, "ADD with --allow network.host failed:\n{log}");
    assert!(canary.hits() > 0);
    let root = tmp.path().join("allowed-rootfs");
    k.rootfs("allowed:1", &root);
    assert_eq!(
        fs::read_to_string(root.join("got")).unwrap(),
        format!("{}\n", canary.http_marker)
    );
});

both!(a_redirect_to_the_host_network_is_refused, |who| {
    let Some(tmp) = setup("a_redirect_to_the_host_network_is_refused") else {
        return;
    };
    let canary = Canary::plant(tmp.path());
    let p = canary.port;
    let targets = vec![
        format!("http://127.0.0.1:{p}/secret"),
        format!("http://localhost:{p}/secret"),
        format!("http://2130706433:{p}/secret"),
        format!("http://[::1]:{}/secret", canary.port6.unwrap_or(p)),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ];
    let proxy = RedirectingProxy::start(targets.clone());
    let k = store(tmp.path(), who, "store");
    // The user's proxy is on this host, by address and by name: kiln
    // reaches it (the user set it), but not what a redirect names.
    let by_name = proxy.url.replace("127.0.0.1", "localhost");
    for proxy_url in [proxy.url.as_str(), by_name.as_str()] {
        let env = [("http_proxy", proxy_url)];
        for (i, target) in targets.iter().enumerate() {
            // 192.0.2.0/24 is for documentation: nothing is sent there,
            // the stand-in proxy answers.
            let url = format!("http://192.0.2.10/r{i}");
            let before = proxy.hits.load(Ordering::SeqCst);
            let df = format!("FROM {BUSYBOX_IMAGE}\nADD {url} /got\n");
            let (ok, log) = build(&k, tmp.path(), &df, &[], &env);
            assert!(
                proxy.hits.load(Ordering::SeqCst) > before,
                "the request did not go through the proxy:\n{log}"
            );
            assert!(!ok, "a redirect to {target} was followed:\n{log}");
            assert!(log.contains("refused to connect to"), "{log}");
            assert!(
                log.contains(&format!(
                    "reached by a redirect to {}",
                    target.replace("2130706433", "127.0.0.1")
                )),
                "the error does not name the redirect to {target}:\n{log}"
            );
            canary.assert_no_leak(&log, &k.root);
        }
        // A URL build context is held to the same rule.
        let (ok, log) = build_context(&k, "http://192.0.2.10/r0", &[], &env);
        assert!(!ok, "a redirected context was fetched:\n{log}");
        assert!(
            log.contains(&format!("reached by a redirect to {}", targets[0])),
            "{log}"
        );
    }
    assert_eq!(
        canary.hits(),
        0,
        "kiln connected to the host's canary server"
    );
});

// ------------------------------------------------------------ git

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
