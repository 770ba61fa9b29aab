//! ADD of a URL, and URL build contexts, cannot reach the build host's
//! own network (loopback, link-local, unspecified) without `--allow
//! network.host`: not by an IP literal in any spelling, not by a name,
//! not by a redirect.
//!
//! Canaries (`common::canary`): a host file and an HTTP server on
//! 127.0.0.1 (and ::1), each with a random marker. After every refused
//! build the error names the address, the marker is in neither the log
//! nor the store, and the canary server was never connected to. Every
//! scenario runs as root and as the unprivileged kilntest.

#[macro_use]
mod common;

use std::fs;
use std::sync::atomic::Ordering;

use common::build::*;
use common::canary::*;

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
