//! A token server for the registry's `auth: token` mode: it checks basic
//! credentials (or a refresh token), grants each user the actions its
//! policy allows on the scopes asked for, and signs an RS256 JWT whose
//! `x5c` header carries the self-signed certificate the registry trusts
//! (`rootcertbundle`). Keys and signatures come from the `openssl` CLI.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const SERVICE: &str = "kiln-test-registry";
pub const ISSUER: &str = "kiln-test-issuer";

/// A user's password and the actions it may be granted on any repository.
#[derive(Clone)]
pub struct User {
    pub password: String,
    pub actions: Vec<&'static str>,
}

/// Every token request: (user, or "" for anonymous; scopes asked).
pub type TokenLog = Arc<Mutex<Vec<(String, Vec<String>)>>>;

pub struct TokenServer {
    pub port: u16,
    dir: tempfile::TempDir,
    pub requests: TokenLog,
    /// While above zero, each request gets a 503 and counts it down.
    pub fail_next: Arc<AtomicUsize>,
}

impl TokenServer {
    /// `refresh_tokens` maps identity tokens to user names.
    pub fn start(
        users: HashMap<String, User>,
        refresh_tokens: HashMap<String, String>,
    ) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kiln-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: TokenLog = Arc::default();
        let reqs = requests.clone();
        let fail_next = Arc::new(AtomicUsize::new(0));
        let fails = fail_next.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let failing = fails
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    let _ = drain_head(&conn).and_then(|_| {
                        respond(&mut conn, 503, r#"{"errors":[{"code":"UNAVAILABLE"}]}"#)
                    });
                    continue;
                }
                let _ = serve(conn, &users, &refresh_tokens, &key, &x5c, &reqs);
            }
        });
        TokenServer {
            port,
            dir,
            requests,
            fail_next,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(w: &mut impl Write, code: u16, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads a request's head (and a small body) so that the client sees our
/// answer rather than a reset.
fn drain_head(conn: &std::net::TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len.min(1 << 16)];
    r.read_exact(&mut body)
}

fn serve(
    conn: std::net::TcpStream,
    users: &HashMap<String, User>,
    refresh: &HashMap<String, String>,
    key: &Path,
    x5c: &str,
    log: &Mutex<Vec<(String, Vec<String>)>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut head = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Ok(());
        }
        let l = l.trim_end().to_string();
        if l.is_empty() {
            break;
        }
        head.push(l);
    }
    let hdr = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let first = head.first().cloned().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let mut params = query_pairs(target.split_once('?').map(|x| x.1).unwrap_or(""));
    let len: usize = hdr("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if method == "POST" {
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        params.extend(query_pairs(&String::from_utf8_lossy(&body)));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // Who is asking?
    let user = if get("grant_type").as_deref() == Some("refresh_token") {
        match get("refresh_token").and_then(|t| refresh.get(&t).cloned()) {
            Some(u) => u,
            None => {
                return respond(
                    &mut w,
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad refresh token"}]}"#,
                );
            }
        }
    } else if let Some(a) =
        hdr("authorization").and_then(|a| a.strip_prefix("Basic ").map(str::to_string))
    {
        let raw =
            String::from_utf8(STANDARD.decode(a.trim()).unwrap_or_default()).unwrap_or_default();
        let (u, p) = raw.split_once(':').unwrap_or(("", ""));
        match users.get(u) {
            Some(user) if user.password == p => u.to_string(),
            _ => {
                return respond(
                    &mut w,
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                );
            }
        }
    } else {
        String::new()
    };
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    log.lock().unwrap().push((user.clone(), scopes.clone()));
    let allowed: Vec<&str> = users
        .get(&user)
        .map(|u| u.actions.clone())
        .unwrap_or_default();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut it = s.splitn(3, ':');
            let (ty, name, actions) = (it.next()?, it.next()?, it.next()?);
            let granted: Vec<&str> = actions.split(',').filter(|a| allowed.contains(a)).collect();
            Some(serde_json::json!({"type": ty, "name": name, "actions": granted}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", log.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let sig = child.wait_with_output()?.stdout;
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string();
    respond(&mut w, 200, &body)
}
