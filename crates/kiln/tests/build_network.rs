//! A RUN's default network is a namespace of the build's own (as
//! BuildKit's): a service that listens only on the host's 127.0.0.1 is out
//! of its reach, its own `lo` works, and the outside world (DNS, HTTP to the
//! Debian mirror) is reachable through slirp4netns. `--network=none` has only
//! `lo`. `kiln run` has the same default. Each test runs as root and as the
//! unprivileged `kilntest`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::build::*;

/// A TCP server on the host's 127.0.0.1 (random port) answering every
/// connection with a marker unique to this run, until dropped.
struct LoopbackServer {
    port: u16,
    marker: String,
    stop: Arc<AtomicBool>,
}

impl LoopbackServer {
    fn start() -> LoopbackServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut b = [0u8; 16];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .unwrap();
        let marker = format!("host-loopback-{}", hex::encode(b));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (marker.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: 10 minutes at most, whatever the test does.
            for _ in 0..60_000 {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(format!("{m}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let server = LoopbackServer { port, marker, stop };
        // It serves: the host itself gets the marker.
        let mut got = String::new();
        TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got.trim(), server.marker);
        server
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The host's first global IPv4 address (from `ip -4 -o addr`).
fn host_address() -> String {
    let s = sh("ip -4 -o addr show scope global");
    s.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .expect("the host has a global IPv4 address")
}

fn assert_nowhere(dir: &Path, needle: &str) {
    for (p, bytes) in all_bytes(dir) {
        assert!(
            !find_bytes(&bytes, needle.as_bytes()),
            "the host-loopback marker is in {}",
            p.display()
        );
    }
}

fn default_run_cannot_reach_host_loopback(who: Who) {
    if !kiln_build_available() {
        loud("build_network SKIPPED: no `kiln build`");
        return;
    }
    let server = LoopbackServer::start();
    let tmp = scratch("kiln-bt-net-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let info = k.ok(&["info"]);
    assert!(info.contains("network (default):   private, via"), "{info}");

    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let (port, host) = (server.port, host_address());
    // Every attempt prints its output and exit code, so a reached server
    // would put its marker in the log and in the layer.
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM kiln-test/busybox:1\n\
             RUN for h in 127.0.0.1 10.0.2.2 {host}; do nc -w2 $h {port} </dev/null; echo \"$h rc=$?\"; done 2>&1 | tee /host.out\n\
             RUN nc -w2 169.254.169.254 80 </dev/null 2>&1 | tee /linklocal.out\n\
             RUN echo inner-marker | nc -l -p 7777 & sleep 0.3; nc -w2 127.0.0.1 7777 </dev/null > /inner.out\n\
             RUN --network=none sh -c 'cat /proc/net/dev; ip route; nc -w2 127.0.0.1 {port} </dev/null; echo \"rc=$?\"' > /none.out 2>&1\n"
        ),
    )
    .unwrap();
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "net-test:latest"]);
    assert!(out.status.success(), "build failed:\n{log}");
    assert!(
        !log.contains(&server.marker),
        "host loopback reached:\n{log}"
    );

    let root = tmp.path().join("rootfs");
    k.rootfs("net-test:latest", &root);
    let read = |f: &str| fs::read_to_string(root.join(f)).unwrap();
    let hosts = read("host.out");
    for h in ["127.0.0.1", "10.0.2.2", &host] {
        assert!(hosts.contains(&format!("{h} rc=1")), "{h}: {hosts}");
    }
    assert!(read("linklocal.out").contains("No route to host"));
    assert_eq!(read("inner.out"), "inner-marker\n", "the RUN's own lo");
    let none = read("none.out");
    assert!(none.contains("lo:") && !none.contains("tap0"), "{none}");
    assert!(!none.contains("default") && none.contains("rc=1"), "{none}");

    // Nowhere in the store (layers decompressed) or the image's files.
    assert_nowhere(&k.root, &server.marker);
    assert_nowhere(&root, &server.marker);
}

#[test]
fn default_run_cannot_reach_host_loopback_as_root() {
    default_run_cannot_reach_host_loopback(Who::Caller);
}

#[test]
fn default_run_cannot_reach_host_loopback_as_kilntest() {
    default_run_cannot_reach_host_loopback(Who::Kilntest);
}

/// `kiln run` has the same default; `--network none` has only `lo`.
fn kiln_run_default_network(who: Who) {
    let server = LoopbackServer::start();
    let tmp = scratch("kiln-bt-netrun-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let probe = format!(
        "nc -w2 127.0.0.1 {} </dev/null; echo \"rc=$?\"; cat /proc/net/dev",
        server.port
    );
    let out = k.output(&["run", "--rm", BUSYBOX_IMAGE, "sh", "-c", &probe]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}");
    assert!(!s.contains(&server.marker) && s.contains("rc=1"), "{s}");
    assert!(s.contains("tap0"), "{s}");
    let out = k.output(&[
        "run",
        "--network",
        "none",
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        &probe,
    ]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(!s.contains(&server.marker) && s.contains("rc=1"), "{s}");
    assert!(s.contains("lo:") && !s.contains("tap0"), "{s}");
    // The host's network, asked for by name, does reach it.
    let out = k.output(&[
        "run",
        "--network",
        "host",
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        &probe,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&server.marker));
}

#[test]
fn kiln_run_default_network_as_root() {
    kiln_run_default_network(Who::Caller);
}

#[test]
fn kiln_run_default_network_as_kilntest() {
    kiln_run_default_network(Who::Kilntest);
}

/// A default RUN resolves a name and fetches from the Debian mirror (what
/// apt-get and pip inside RUN rely on). Needs the mirror: skipped with
/// `KILN_SKIP_DEBIAN=1`; under CI a host that cannot reach it fails.
fn default_run_reaches_the_debian_mirror(who: Who) {
    if !kiln_build_available() || skip_debian() {
        loud("build_network mirror test SKIPPED");
        return;
    }
    let url = "http://deb.debian.org/debian/dists/stable/Release";
    let host_ok = std::process::Command::new("curl")
        .args(["-fsS", "-m", "20", "-o", "/dev/null", url])
        .status()
        .is_ok_and(|s| s.success());
    if !host_ok {
        assert!(
            std::env::var("CI").is_err(),
            "the host cannot fetch {url}; set KILN_SKIP_DEBIAN=1 where there is no mirror"
        );
        loud(&format!(
            "build_network mirror test SKIPPED: the host cannot fetch {url}"
        ));
        return;
    }
    let tmp = scratch("kiln-bt-netout-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM kiln-test/busybox:1\n\
             RUN nslookup deb.debian.org > /dns.out && wget -qO /release {url}\n"
        ),
    )
    .unwrap();
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "net-out:latest"]);
    assert!(out.status.success(), "build failed:\n{log}");
    let root = tmp.path().join("rootfs");
    k.rootfs("net-out:latest", &root);
    let dns = fs::read_to_string(root.join("dns.out")).unwrap();
    assert!(dns.contains("Name:\tdeb.debian.org"), "{dns}");
    let release = fs::read_to_string(root.join("release")).unwrap();
    assert!(release.starts_with("Origin: Debian"), "{release}");
}

#[test]
fn default_run_reaches_the_debian_mirror_as_root() {
    default_run_reaches_the_debian_mirror(Who::Caller);
}

#[test]
fn default_run_reaches_the_debian_mirror_as_kilntest() {
    default_run_reaches_the_debian_mirror(Who::Kilntest);
}
