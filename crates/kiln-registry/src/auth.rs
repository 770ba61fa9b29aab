//! Registry authentication: parsing `WWW-Authenticate` challenges, fetching
//! bearer tokens from the token server (with basic credentials, with an
//! identity token via `grant_type=refresh_token`, or anonymously), and a
//! cache of tokens per scope with their expiry.
//!
//! It does not decide when to authenticate; the client does that on a 401.
//! Tokens are opaque to us: we never parse or verify the JWT.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::credentials::Credentials;
use crate::error::{RegistryError, Result, error_detail};

/// What a registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the registry said the request needs, if it said.
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="https://auth",service="reg",scope="repository:a:pull"`
/// (and `Basic realm="..."`). Quoted values may contain commas.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    out
}

/// `Authorization: Basic ...` for credentials (an identity token cannot be
/// sent as basic auth; registries that issue them use bearer tokens).
pub fn basic_header(creds: &Credentials) -> Option<String> {
    match creds {
        Credentials::Basic { username, password } => Some(format!(
            "Basic {}",
            B64.encode(format!("{username}:{password}"))
        )),
        Credentials::IdentityToken { .. } => None,
    }
}

struct Token {
    value: String,
    expires: Instant,
}

/// Bearer tokens by scope string. A token is dropped a little before its
/// expiry so that a long blob upload does not start with a dying token.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, Token>>,
}

impl TokenCache {
    pub fn get(&self, scope: &str) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.get(scope)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.value.clone())
    }

    pub fn put(&self, scope: &str, value: String, lifetime: Duration) {
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            scope.to_string(),
            Token {
                value,
                expires: Instant::now() + lifetime.saturating_sub(margin),
            },
        );
    }

    pub fn forget(&self, scope: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(scope);
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Asks the token server for a token covering `scopes` (space-separated
/// scope strings become repeated `scope` parameters, as Docker sends them).
pub async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<(String, Duration)> {
    let op = format!("get token from {realm}");
    let resp = match creds {
        Some(Credentials::IdentityToken { token, .. }) => {
            // OAuth2 refresh flow: the identity token is a refresh token.
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", "kiln"),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            let scope = scopes.join(" ");
            if !scope.is_empty() {
                form.push(("scope", &scope));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            http.post(realm)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
        }
        _ => {
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = service {
                q.push(("service", s));
            }
            for s in scopes {
                q.push(("scope", s));
            }
            let mut url = reqwest::Url::parse(realm)
                .map_err(|e| RegistryError::Auth(format!("bad token realm {realm:?}: {e}")))?;
            url.query_pairs_mut().extend_pairs(q);
            let mut req = http.get(url);
            if let Some(c) = creds.and_then(basic_header) {
                req = req.header("authorization", c);
            }
            req.send().await
        }
    };
    let resp = resp.map_err(|source| RegistryError::Connection {
        op: op.clone(),
        cause: source,
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|source| RegistryError::Connection {
            op: op.clone(),
            cause: source,
        })?;
    if !status.is_success() {
        return Err(RegistryError::Status {
            op,
            status,
            detail: error_detail(&body),
        });
    }
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| RegistryError::Auth(format!("{op}: invalid token response: {e}")))?;
    let value = t
        .token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::Auth(format!("{op}: the response has no token")))?;
    // The spec's default lifetime is 60 s when the server does not say.
    Ok((
        value,
        Duration::from_secs(t.expires_in.unwrap_or(60).max(10)),
    ))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/a,b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/a,b:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn cache_expires() {
        let c = TokenCache::default();
        c.put("s", "t".into(), Duration::from_secs(60));
        assert_eq!(c.get("s").as_deref(), Some("t"));
        c.put("s", "t".into(), Duration::from_millis(0));
        assert_eq!(c.get("s"), None);
    }
}
