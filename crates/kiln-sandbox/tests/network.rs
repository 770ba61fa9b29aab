//! The default network of a run (`Network::Private`): its own loopback, the
//! host's loopback services out of reach, the outside world (DNS + HTTP to
//! the Debian mirror) reachable through slirp4netns. Each scenario runs as
//! the caller and as the unprivileged `kilntest` (see `common`).
//! The outside-world test needs the Debian mirror; `KILN_SKIP_DEBIAN=1`
//! skips it, as it skips the apt test.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// A TCP server on the host's 127.0.0.1 (random port) that answers every
/// connection with a unique marker, until dropped.
pub struct LoopbackServer {
    pub port: u16,
    pub marker: String,
    stop: Arc<AtomicBool>,
}

impl LoopbackServer {
    pub fn start() -> LoopbackServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let marker = format!(
            "host-loopback-secret-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (marker.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: at most 10 minutes, whatever the test does.
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
        LoopbackServer { port, marker, stop }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The host's first global IPv4 address (from `ip -4 -o addr`).
fn host_address() -> String {
    let o = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip (iproute2) installed");
    let s = String::from_utf8_lossy(&o.stdout);
    s.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .expect("the host has a global IPv4 address")
}

both!(private_network_cannot_reach_host_loopback, |env: &Env| {
    let server = LoopbackServer::start();
    let root = env.busybox_rootfs("root");
    let port = server.port.to_string();
    let nc = |host: &str| format!("nc -w2 {host} {port} </dev/null; echo \"rc=$?\"");

    // The server works: the host's network (on purpose) reaches it.
    let o = env.run_in(
        &root,
        &["--network", "host"],
        &["sh", "-c", &nc("127.0.0.1")],
    );
    assert!(stdout(&o).contains(&server.marker), "{}", stdout(&o));

    // The default: not through 127.0.0.1, not through slirp's host alias,
    // not through the host's own address (the server listens on loopback
    // only), and link-local (cloud metadata) is unreachable.
    let host = host_address();
    let script = [
        nc("127.0.0.1"),
        nc("10.0.2.2"),
        nc(&host),
        "nc -w2 169.254.169.254 80 </dev/null; echo \"rc=$?\"".into(),
    ]
    .join("; ");
    for extra in [&[][..], &["--network", "private"][..]] {
        let o = env.run_in(&root, extra, &["sh", "-c", &script]);
        let (out, err) = (stdout(&o), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{err}");
        assert!(
            !out.contains(&server.marker),
            "host loopback reached: {out}"
        );
        assert!(
            !err.contains(&server.marker),
            "host loopback reached: {err}"
        );
        assert_eq!(out.matches("rc=1").count(), 4, "{out}{err}");
        assert!(err.contains("(169.254.169.254): No route to host"), "{err}");
    }
});

both!(
    private_network_has_its_own_loopback_and_a_way_out,
    |env: &Env| {
        let root = env.busybox_rootfs("root");
        let o = env.run_in(
            &root,
            &[],
            &[
                "sh",
                "-c",
                "echo inner-marker | nc -l -p 7777 & sleep 0.3; nc -w2 127.0.0.1 7777 </dev/null; \
             cat /proc/net/dev; ip route; cat /etc/hosts",
            ],
        );
        let s = stdout(&o);
        assert!(o.status.success());
        assert!(s.starts_with("inner-marker\n"), "the run's own lo: {s}");
        let ifaces: Vec<&str> = s
            .lines()
            .filter(|l| l.contains(':') && !l.contains('|'))
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .filter(|i| !i.is_empty() && !i.contains(' '))
            .collect();
        assert_eq!(ifaces, ["lo", "tap0"], "{s}");
        assert!(s.contains("default via 10.0.2.2 dev tap0"), "{s}");
        assert!(s.contains("unreachable 169.254.0.0/16"), "{s}");
        // The host's /etc/hosts is not copied: localhost and our hostname only.
        assert!(s.contains("127.0.0.1\tlocalhost\n"), "{s}");
        assert!(s.contains("127.0.0.1\tkiln\n"), "{s}");

        // A run cannot reconfigure the namespace the next run joins.
        let o = env.run_in(
            &root,
            &[],
            &["sh", "-c", "ip route del unreachable 169.254.0.0/16"],
        );
        assert!(!o.status.success(), "a run changed the shared routes");
    }
);

both!(private_network_reaches_the_debian_mirror, |env: &Env| {
    if std::env::var("KILN_SKIP_DEBIAN").is_ok_and(|v| v == "1") {
        eprintln!("KILN_SKIP_DEBIAN=1: skipping the outside-world test");
        return;
    }
    let url = "http://deb.debian.org/debian/dists/stable/Release";
    let host = std::process::Command::new("curl")
        .args(["-fsS", "-m", "20", "-o", "/dev/null", url])
        .status();
    if !host.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("CI").is_err(),
            "the host cannot fetch {url}; set KILN_SKIP_DEBIAN=1 where there is no mirror"
        );
        eprintln!("skipping: the host cannot fetch {url}");
        return;
    }
    let root = env.busybox_rootfs("root");
    let o = env.run_in(
        &root,
        &[],
        &[
            "sh",
            "-c",
            &format!("cat /etc/resolv.conf; nslookup deb.debian.org; wget -qO- {url} | head -n 3"),
        ],
    );
    let s = stdout(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains("Name:\tdeb.debian.org"), "DNS: {s}");
    assert!(s.contains("Origin: Debian"), "HTTP: {s}");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = kiln_sandbox::net::private_resolv_conf(&host_resolv);
    assert!(s.starts_with(&resolv), "resolv.conf: {s}");
});

both!(
    network_none_sees_neither_host_nor_private_network,
    |env: &Env| {
        let server = LoopbackServer::start();
        let root = env.busybox_rootfs("root");
        let o = env.run_in(
            &root,
            &["--network", "none"],
            &[
                "sh",
                "-c",
                &format!(
                    "cat /proc/net/dev; ip route; nc -w2 127.0.0.1 {} </dev/null; \
                 nc -w2 10.0.2.3 53 </dev/null; echo end",
                    server.port
                ),
            ],
        );
        let s = stdout(&o);
        assert!(s.ends_with("end\n"), "{s}");
        assert!(!s.contains("tap0"), "{s}");
        assert!(!s.contains("default"), "{s}");
        assert!(!s.contains(&server.marker), "{s}");
    }
);

/// Without slirp4netns the default network is a clear error naming what to
/// install and the alternative, never the host's network in silence; the
/// other modes do not need it.
#[test]
fn missing_slirp4netns_is_a_clear_error() {
    let env = Env::new(Who::Caller).unwrap();
    let root = env.busybox_rootfs("root");
    let run = |extra: &[&str]| {
        std::process::Command::new(&env.bin)
            .env("PATH", "/nonexistent")
            .arg("--rootfs")
            .arg(&root)
            .args(extra)
            .args(["--", "/bin/true"])
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("apt-get install slirp4netns"), "{err}");
    assert!(err.contains("--network=host --allow network.host"), "{err}");
    for mode in ["none", "host"] {
        let o = run(&["--network", mode]);
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

// A caller that never became root of a user namespace: each run makes its
// own single-ID one, so the private network lives in a user namespace of
// its own that the runs join.
both!(private_network_without_userns_reexec, |env: &Env| {
    let server = LoopbackServer::start();
    let root = env.busybox_rootfs("root");
    let o = env.run_in(
        &root,
        &["--no-userns-reexec", "--isolation", "rootless"],
        &[
            "sh",
            "-c",
            &format!(
                "id -u; cat /proc/net/dev; nc -w2 127.0.0.1 {} </dev/null; echo \"rc=$?\"; \
                 echo inner-marker | nc -l -p 7777 & sleep 0.3; nc -w2 127.0.0.1 7777 </dev/null",
                server.port
            ),
        ],
    );
    let s = stdout(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.starts_with("0\n"), "{s}");
    assert!(s.contains("tap0:") && s.contains("rc=1"), "{s}");
    assert!(!s.contains(&server.marker), "{s}");
    assert!(s.ends_with("inner-marker\n"), "{s}");
});
