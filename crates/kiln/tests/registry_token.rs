//! The bearer-token flow against a registry in `auth: token` mode with a
//! real (test) token server signing RS256 JWTs: login, push and pull as a
//! user with push rights, a refused push for a read-only user, identity
//! (refresh) tokens, and a cross-repo mount asking for both scopes.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use support::token::{TokenServer, User};
use support::{Auth, Registry, TestImage, kiln, kiln_ok};

fn config_with(home: &Path, host: &str, entry: serde_json::Value) {
    let dir = home.join(".docker");
    std::fs::create_dir_all(&dir).unwrap();
    let doc = serde_json::json!({"auths": {host: entry}});
    std::fs::write(dir.join("config.json"), doc.to_string()).unwrap();
}

fn basic(user: &str, pass: &str) -> serde_json::Value {
    serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))})
}

#[test]
fn bearer_tokens_scopes_and_refresh() {
    let users = HashMap::from([
        (
            "writer".to_string(),
            User {
                password: "wpass".into(),
                actions: vec!["pull", "push"],
            },
        ),
        (
            "reader".to_string(),
            User {
                password: "rpass".into(),
                actions: vec!["pull"],
            },
        ),
    ]);
    let refresh = HashMap::from([("idtok-1".to_string(), "writer".to_string())]);
    let ts = TokenServer::start(users, refresh);
    let requests = ts.requests.clone();
    let token_fails = ts.fail_next.clone();
    let reg = Registry::start(Auth::Token(ts));
    let host = reg.host();

    let writer = tempfile::tempdir().unwrap();
    let w = writer.path();
    let img = TestImage::new(&[300_000, 2000], 11);
    let name = format!("{host}/team/app:1");
    img.to_store(&w.join("store"), &name);

    // login checks the password with the token server.
    let out = kiln(w, &["login", &host, "-u", "writer", "-p", "nope"]);
    assert!(!out.status.success());
    kiln_ok(w, &["login", &host, "-u", "writer", "-p", "wpass"]);
    assert_eq!(
        kiln_ok(w, &["push", &name]).trim(),
        img.digest().to_string()
    );
    let pushes = requests.lock().unwrap().len();
    // Tokens are cached per scope: a handful of token requests, not one per blob.
    assert!(pushes <= 4, "{:?}", requests.lock().unwrap());

    // A token server that is briefly unavailable is retried, as the
    // registry is: two 503s, then the pull goes through.
    let retrying = tempfile::tempdir().unwrap();
    config_with(retrying.path(), &host, basic("reader", "rpass"));
    token_fails.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        kiln_ok(retrying.path(), &["pull", &name]).trim(),
        img.digest().to_string()
    );
    assert_eq!(token_fails.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A read-only user can pull but not push, and is told why.
    let reader = tempfile::tempdir().unwrap();
    let r = reader.path();
    config_with(r, &host, basic("reader", "rpass"));
    assert_eq!(
        kiln_ok(r, &["pull", &name]).trim(),
        img.digest().to_string()
    );
    let out = kiln(r, &["push", &name, &format!("{host}/team/other:1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("401 Unauthorized") || err.contains("403 Forbidden"),
        "{err}"
    );
    assert!(err.contains("kiln login"), "{err}");

    // Anonymous: no access at all.
    let anon = tempfile::tempdir().unwrap();
    let out = kiln(anon.path(), &["pull", &name]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An identity token is traded with grant_type=refresh_token.
    let idt = tempfile::tempdir().unwrap();
    config_with(
        idt.path(),
        &host,
        serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode("writer:"), "identitytoken": "idtok-1"}),
    );
    let before = requests.lock().unwrap().len();
    let dest = format!("{host}/mirror/app:1");
    // The copy mounts from team/app, so one token covers both repositories.
    let out = kiln(
        idt.path(),
        &[
            "copy",
            &format!("docker://{name}"),
            &format!("docker://{dest}"),
            "-v",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("3 mounts"), "{err}");
    let reqs = requests.lock().unwrap()[before..].to_vec();
    assert!(reqs.iter().all(|(u, _)| u == "writer"), "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|(_, s)| s.contains(&"repository:team/app:pull".to_string())
                && s.contains(&"repository:mirror/app:pull,push".to_string())),
        "{reqs:?}"
    );
    assert!(reg.log_text().contains("from=team%2Fapp") || reg.log_text().contains("from=team/app"));
}
