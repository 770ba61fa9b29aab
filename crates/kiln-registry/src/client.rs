//! The registry client: one per process, shared by every transfer. It keeps
//! one HTTP client, base URL, auth challenge and token cache per registry
//! host, and sends requests with authentication and retries.
//!
//! It knows the shape of a request (method, path, scopes, body) but not the
//! meaning of the endpoints; `manifest`, `blob`, `mount` and `catalog` build
//! on `Client::send`. The public API is blocking (it owns a small tokio
//! runtime), because the image copy machinery is thread-based.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::sync::OnceCell;

use crate::auth::{self, Challenge, TokenCache};
use crate::credentials::{CredentialFiles, Credentials};
use crate::error::{RegistryError, Result, error_detail};
use crate::retry::{self, RetryPolicy};
use crate::transport::TransportConfig;

/// Everything a [`Client`] is configured with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub transport: TransportConfig,
    pub retry: RetryPolicy,
    pub credentials: CredentialFiles,
    /// Credentials to use instead of the files, by registry host (`login`
    /// checks new credentials this way before saving them).
    pub credentials_override: HashMap<String, Credentials>,
    /// `None` (the default): blobs over 4 MiB go in one streaming PATCH,
    /// resumed from the registry's offset after a failure. `Some(n)`:
    /// PATCH chunks of `n` bytes, each buffered until acknowledged (for
    /// registries or proxies that limit request sizes).
    pub chunk_size: Option<usize>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            transport: TransportConfig::default(),
            retry: RetryPolicy::default(),
            credentials: CredentialFiles::from_env(),
            credentials_override: HashMap::new(),
            chunk_size: None,
        }
    }
}

/// Counters of what the client did, for tests, benchmarks and `--verbose`.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_downloaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Blob downloads continued with a `Range` request after a failure.
    pub resumes: AtomicU64,
    pub mounts: AtomicU64,
    /// Blobs not uploaded because the registry had them.
    pub blobs_skipped: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub bytes_downloaded: u64,
    pub bytes_uploaded: u64,
    pub requests: u64,
    pub retries: u64,
    pub resumes: u64,
    pub mounts: u64,
    pub blobs_skipped: u64,
}

/// A handle on the shared client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    pub(crate) stats: Stats,
    pub(crate) rt: tokio::runtime::Runtime,
}

/// Per-registry state.
pub(crate) struct Host {
    /// As in references (`docker.io`), for credentials.
    registry: String,
    /// Where the API is (`registry-1.docker.io`).
    api_host: String,
    pub(crate) http: reqwest::Client,
    base: OnceCell<Url>,
    challenge: Mutex<Option<Challenge>>,
    tokens: TokenCache,
    creds: Option<Credentials>,
}

/// One request, rebuilt for each try (bodies are `Bytes`, cheap to clone).
pub(crate) struct Req {
    pub method: Method,
    /// A path under the base URL (`/v2/...`), or an absolute URL from a
    /// `Location` header.
    pub target: Target,
    /// Token scopes the request needs (`repository:app:pull`).
    pub scopes: Vec<String>,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// What the request is, for errors (`GET manifest app:1`).
    pub op: String,
    /// Whether `send` may retry it (false for PATCH chunks, whose caller
    /// resumes from the registry's offset instead).
    pub retry: bool,
}

pub(crate) enum Target {
    Path(String),
    Url(Url),
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>, op: impl Into<String>) -> Req {
        Req {
            method,
            target: Target::Path(path.into()),
            scopes: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            op: op.into(),
            retry: true,
        }
    }

    pub fn url(method: Method, url: Url, op: impl Into<String>) -> Req {
        Req {
            target: Target::Url(url),
            ..Req::new(method, "", op)
        }
    }

    pub fn scope(mut self, s: impl Into<String>) -> Req {
        self.scopes.push(s.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub fn body(mut self, b: Bytes) -> Req {
        self.body = Some(b);
        self
    }
}

pub(crate) fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

pub(crate) fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-registry")
            .enable_all()
            .build()
            .map_err(RegistryError::io("start the HTTP runtime"))?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                hosts: Mutex::new(HashMap::new()),
                stats: Stats::default(),
                rt,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            bytes_downloaded: g(&s.bytes_downloaded),
            bytes_uploaded: g(&s.bytes_uploaded),
            requests: g(&s.requests),
            retries: g(&s.retries),
            resumes: g(&s.resumes),
            mounts: g(&s.mounts),
            blobs_skipped: g(&s.blobs_skipped),
        }
    }

    /// Runs a future of this client to completion on its runtime. Must not
    /// be called from inside the runtime (the copy threads are plain threads).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.inner.rt.block_on(f)
    }

    /// The state for `registry` (a reference's registry, `docker.io`).
    pub(crate) fn host(&self, registry: &str) -> Result<Arc<Host>> {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hosts.get(registry) {
            return Ok(h.clone());
        }
        let api_host = if registry == kiln_image::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        let creds = match self.inner.config.credentials_override.get(registry) {
            Some(c) => Some(c.clone()),
            None => self.inner.config.credentials.lookup(registry)?,
        };
        let h = Arc::new(Host {
            registry: registry.to_string(),
            http: self.inner.config.transport.client_for(&api_host)?,
            api_host,
            base: OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: TokenCache::default(),
            creds,
        });
        hosts.insert(registry.to_string(), h.clone());
        Ok(h)
    }

    /// The registry's base URL, found by `GET /v2/`: HTTPS, or HTTP for an
    /// insecure host whose TLS handshake fails. The answer's challenge (if
    /// 401) tells us how to authenticate before the first real request.
    pub(crate) async fn base(&self, host: &Host) -> Result<Url> {
        host.base
            .get_or_try_init(|| async {
                let insecure = self.inner.config.transport.allows_http(&host.api_host);
                let schemes: &[&str] = if insecure {
                    &["https", "http"]
                } else {
                    &["https"]
                };
                let mut last = None;
                for (i, scheme) in schemes.iter().enumerate() {
                    let url =
                        Url::parse(&format!("{scheme}://{}/", host.api_host)).map_err(|e| {
                            RegistryError::Protocol(format!(
                                "bad registry host {:?}: {e}",
                                host.api_host
                            ))
                        })?;
                    let ping = url
                        .join("v2/")
                        .map_err(|e| RegistryError::Protocol(e.to_string()))?;
                    let fallback = i + 1 < schemes.len();
                    match self.ping(host, ping, fallback).await {
                        // A TLS-only server answers plain HTTP with 400: the
                        // TLS error (say, an unknown CA) is the real story.
                        Ok(StatusCode::BAD_REQUEST) if last.is_some() => break,
                        Ok(_) => return Ok(url),
                        Err(e @ RegistryError::Connection { .. }) if i + 1 < schemes.len() => {
                            tracing::debug!("{}: {e}; trying plain HTTP", host.api_host);
                            last = Some(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(last.unwrap_or_else(|| RegistryError::Protocol("no scheme to try".into())))
            })
            .await
            .cloned()
    }

    async fn ping(&self, host: &Host, url: Url, fallback: bool) -> Result<StatusCode> {
        let op = format!("ping {}", host.registry);
        let policy = &self.inner.config.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = host.http.get(url.clone()).send().await;
            let wait = match resp {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    self.learn_challenge(host, r.headers());
                    return Ok(r.status());
                }
                Ok(r) if retry::retryable_status(r.status()) && attempt < policy.attempts => {
                    retry::retry_after(r.headers())
                }
                // Any other answer means an HTTP server is there; what it
                // thinks of /v2/ matters less than the real requests' answers.
                Ok(r) => return Ok(r.status()),
                Err(e) if e.is_connect() && fallback => {
                    // A TLS handshake failure shows up as a connect error;
                    // let the caller try plain HTTP at once.
                    return Err(RegistryError::Connection { op, cause: e });
                }
                Err(e) if retry::retryable_error(&e) && attempt < policy.attempts => None,
                Err(e) => return Err(RegistryError::Connection { op, cause: e }),
            };
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(policy.delay(attempt, wait)).await;
        }
    }

    fn learn_challenge(&self, host: &Host, headers: &HeaderMap) -> Option<Challenge> {
        let c = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(auth::parse_challenge)
            // Prefer bearer when a registry offers both.
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))?;
        let mut slot = host.challenge.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(c.clone());
        Some(c)
    }

    /// The `Authorization` value for a request with `scopes`, fetching a
    /// token when the registry wants bearer auth and none is cached.
    async fn authorization(&self, host: &Host, scopes: &[String]) -> Result<Option<String>> {
        let challenge = host
            .challenge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(host.creds.as_ref().and_then(auth::basic_header)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.join(" ");
                if let Some(t) = host.tokens.get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let realm_url = Url::parse(&realm)
                    .map_err(|e| RegistryError::Auth(format!("bad token realm {realm:?}: {e}")))?;
                let realm_host = match (realm_url.host_str(), realm_url.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_string(),
                    (None, _) => {
                        return Err(RegistryError::Auth(format!("bad token realm {realm:?}")));
                    }
                };
                let http = self.inner.config.transport.client_for(&realm_host)?;
                // The token server is a second service that can be busy or
                // restarting while the registry is fine: retry it as a
                // registry request would be, but not a refusal (4xx).
                let policy = &self.inner.config.retry;
                let mut attempt = 0;
                let (token, life) = loop {
                    attempt += 1;
                    self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
                    match auth::fetch_token(
                        &http,
                        &realm,
                        service.as_deref(),
                        scopes,
                        host.creds.as_ref(),
                    )
                    .await
                    {
                        Ok(t) => break t,
                        Err(e) if e.is_transient() && attempt < policy.attempts => {
                            tracing::debug!("{e}; retrying");
                            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(policy.delay(attempt, None)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                host.tokens.put(&key, token.clone(), life);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Sends `req` to `registry` with auth, retrying connection errors, 5xx
    /// and 429 (honouring `Retry-After`) up to the policy's limit, and
    /// re-authenticating once on a 401. Returns the response for any other
    /// status, success or not: the caller knows which it expects.
    pub(crate) async fn send(&self, registry: &str, req: &Req) -> Result<Response> {
        let host = self.host(registry)?;
        let base = self.base(&host).await?;
        let url = match &req.target {
            Target::Path(p) => base
                .join(p.trim_start_matches('/'))
                .map_err(|e| RegistryError::Protocol(format!("{}: bad path {p:?}: {e}", req.op)))?,
            Target::Url(u) => u.clone(),
        };
        // Credentials go only to the registry itself, never to another host
        // a Location header pointed at.
        let same_host = url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        let policy = &self.inner.config.retry;
        let mut attempt = 0;
        let mut reauthed = false;
        let mut scopes = req.scopes.clone();
        loop {
            attempt += 1;
            let mut b = host.http.request(req.method.clone(), url.clone());
            b = b.headers(req.headers.clone());
            if same_host && let Some(a) = self.authorization(&host, &scopes).await? {
                b = b.header(AUTHORIZATION, a);
            }
            if let Some(body) = &req.body {
                b = b.body(body.clone());
            } else if matches!(req.method, Method::PUT | Method::POST | Method::PATCH) {
                b = b.header(reqwest::header::CONTENT_LENGTH, "0");
            }
            self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            let wait = match b.send().await {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && same_host && !reauthed => {
                    reauthed = true;
                    host.tokens.forget(&scopes.join(" "));
                    let had = host
                        .challenge
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    let c = self.learn_challenge(&host, r.headers());
                    // The registry may name a scope we did not think of.
                    if let Some(Challenge::Bearer { scope: Some(s), .. }) = &c {
                        for part in s.split(' ') {
                            if !scopes.iter().any(|x| x == part) {
                                scopes.push(part.to_string());
                            }
                        }
                    }
                    let retry_auth = match &c {
                        Some(Challenge::Bearer { .. }) => true,
                        Some(Challenge::Basic) => {
                            host.creds.is_some() && had != Some(Challenge::Basic)
                        }
                        None => false,
                    };
                    if !retry_auth {
                        return Ok(r);
                    }
                    attempt -= 1;
                    continue;
                }
                Ok(r)
                    if req.retry
                        && retry::retryable_status(r.status())
                        && attempt < policy.attempts =>
                {
                    tracing::debug!("{}: {}; retrying", req.op, r.status());
                    retry::retry_after(r.headers())
                }
                Ok(r) => return Ok(r),
                Err(e) if req.retry && retry::retryable_error(&e) && attempt < policy.attempts => {
                    tracing::debug!("{}: {e}; retrying", req.op);
                    None
                }
                Err(e) => {
                    return Err(RegistryError::Connection {
                        op: req.op.clone(),
                        cause: e,
                    });
                }
            };
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(policy.delay(attempt, wait)).await;
        }
    }

    /// Sends one request with a streaming body: no retries (the body cannot
    /// be replayed; the caller resumes) and no re-authentication.
    pub(crate) async fn send_once(
        &self,
        registry: &str,
        method: Method,
        url: Url,
        body: reqwest::Body,
        scopes: &[String],
        op: &str,
    ) -> Result<Response> {
        let host = self.host(registry)?;
        let base = self.base(&host).await?;
        let same_host = url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        let mut b = host
            .http
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if same_host && let Some(a) = self.authorization(&host, scopes).await? {
            b = b.header(AUTHORIZATION, a);
        }
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        b.send().await.map_err(|e| RegistryError::Connection {
            op: op.to_string(),
            cause: e,
        })
    }

    /// Checks that the registry accepts our credentials (`login`): `GET
    /// /v2/`, authenticated as the registry demands.
    pub fn check_login(&self, registry: &str) -> Result<()> {
        self.block_on(async {
            let resp = self
                .send(registry, &Req::new(Method::GET, "/v2/", "GET /v2/"))
                .await?;
            expect(resp, &[StatusCode::OK], "GET /v2/").await.map(drop)
        })
    }
}

/// Fails with a [`RegistryError::Status`] naming `op` unless the status is
/// one of `ok`. The error body is read (bounded) for the registry's message.
pub(crate) async fn expect(resp: Response, ok: &[StatusCode], op: &str) -> Result<Response> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    Err(status_error(resp, op).await)
}

pub(crate) async fn status_error(resp: Response, op: &str) -> RegistryError {
    let status = resp.status();
    let mut detail = read_limited(resp, 64 << 10)
        .await
        .ok()
        .and_then(|b| error_detail(&b));
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let hint = "check the credentials (kiln login) and that they allow this";
        detail = Some(match detail {
            Some(d) => format!("{d} ({hint})"),
            None => hint.to_string(),
        });
    }
    RegistryError::Status {
        op: op.to_string(),
        status,
        detail,
    }
}

/// Reads a small body (manifest, error, token) whole, refusing more than
/// `limit` bytes so a hostile server cannot make us buffer gigabytes.
pub(crate) async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > limit {
                    return Err(RegistryError::Protocol(format!(
                        "response body larger than {limit} bytes"
                    )));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(RegistryError::Connection {
                    op: "read response".into(),
                    cause: e,
                });
            }
        }
    }
}

/// Resolves a `Location` header against the URL the request went to.
pub(crate) fn location(resp: &Response, op: &str) -> Result<Url> {
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            RegistryError::Protocol(format!("{op}: no Location header in the answer"))
        })?;
    resp.url()
        .join(loc)
        .map_err(|e| RegistryError::Protocol(format!("{op}: bad Location {loc:?}: {e}")))
}
