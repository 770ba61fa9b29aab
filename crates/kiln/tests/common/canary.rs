//! Host canaries for the remote-source safety tests: a file and an HTTP
//! server on 127.0.0.1 (and ::1) whose contents are random markers, a
//! stand-in proxy that answers with redirects, and `kiln build` helpers
//! that run as root or as kilntest.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::build::*;

/// 16 random bytes as hex: unique to this run, so any hit is a leak.
pub fn marker(tag: &str) -> String {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    format!("canary-{tag}-{}", hex::encode(b))
}

/// A prerequisite: missing, it fails the test under CI and is reported
/// loudly elsewhere.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if !ok {
        missing_prerequisite(what);
    }
    ok
}

/// Serves `body` for any request on `listener`, counting connections.
pub fn serve_forever(
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

pub fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The host's canaries: a file and an HTTP server on 127.0.0.1 and ::1
/// whose answers hold a marker.
pub struct Canary {
    pub file: PathBuf,
    pub file_marker: String,
    pub http_marker: String,
    pub port: u16,
    pub port6: Option<u16>,
    pub hits: Arc<AtomicUsize>,
}

impl Canary {
    pub fn plant(dir: &Path) -> Canary {
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

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Neither marker is in `log` nor anywhere in `store`'s files (layers
    /// decompressed).
    pub fn assert_no_leak(&self, log: &str, store: &Path) {
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
pub struct RedirectingProxy {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

impl RedirectingProxy {
    pub fn start(targets: Vec<String>) -> RedirectingProxy {
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
pub fn store(tmp: &Path, who: Who, name: &str) -> KilnBuild {
    let k = KilnBuild::new(&tmp.join(name), who);
    import_bases(&k, false);
    k
}

/// `kiln build` of `dockerfile` in a fresh context under `tmp`, with
/// `flags` and extra environment `env`; returns success and the log.
pub fn build(
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

pub fn build_context(
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

pub fn setup(name: &str) -> Option<tempfile::TempDir> {
    if !prerequisite(kiln_build_available(), &format!("{name}: no `kiln build`")) {
        return None;
    }
    if !prerequisite(
        super::is_root(),
        &format!("{name}: needs root to act as kilntest"),
    ) {
        return None;
    }
    Some(scratch("kiln-bt-remote-"))
}
