//! HTTP client setup per registry host: TLS roots (the system's, plus an
//! extra CA bundle, plus `certs.d/<host>/*.crt` as Docker and podman read
//! them), client certificates (`client.cert` + `client.key` pairs, from the
//! same places), which hosts may use plain HTTP, proxies and timeouts.
//!
//! Plain HTTP is allowed only for hosts marked insecure (`--insecure-registry`
//! or `--tls-verify=false`) and for loopback, as Docker does; for those HTTPS
//! is still tried first and HTTP used only when the TLS handshake fails.
//! Certificates go unchecked only for hosts marked insecure, not loopback. Proxies come from the environment
//! (`HTTPS_PROXY`, `NO_PROXY`), except that loopback is never proxied, so a
//! local test registry works behind a corporate proxy.
//!
//! Redirects are never followed by reqwest: blob downloads follow them by
//! hand so that credentials never leave the registry's host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{RegistryError, Result};

#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// `false` accepts any certificate and allows plain HTTP for every host.
    pub tls_verify: bool,
    /// Hosts (`host` or `host:port`) that may use plain HTTP and bad certs.
    pub insecure_registries: Vec<String>,
    /// PEM files of extra trusted CAs (`--cert-dir` contents, `KILN_EXTRA_CA`).
    pub extra_ca: Vec<PathBuf>,
    /// Client certificates for every host: (`X.cert`, `X.key`) pairs.
    pub client_certs: Vec<(PathBuf, PathBuf)>,
    /// Directories with one sub-directory per host holding `*.crt` CAs and
    /// `*.cert`/`*.key` client certificate pairs.
    pub certs_d: Vec<PathBuf>,
    pub user_agent: String,
    /// No data for this long on a connection counts as a failure (retried).
    pub read_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        let mut extra_ca = Vec::new();
        if let Some(p) = std::env::var_os("KILN_EXTRA_CA").filter(|p| !p.is_empty()) {
            extra_ca.push(PathBuf::from(p));
        }
        TransportConfig {
            tls_verify: true,
            insecure_registries: Vec::new(),
            extra_ca,
            client_certs: Vec::new(),
            certs_d: vec![
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ],
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl TransportConfig {
    /// Adds every `*.crt`/`*.pem` in `dir` as a trusted CA, and every
    /// `X.cert` with its `X.key` as a client certificate (podman's
    /// `--cert-dir`, laid out as a `certs.d/<host>` directory).
    pub fn add_cert_dir(&mut self, dir: &Path) -> Result<()> {
        std::fs::read_dir(dir).map_err(RegistryError::io(format!("read {}", dir.display())))?;
        let found = CertDir::read(dir);
        self.extra_ca.extend(found.cas);
        self.client_certs.extend(found.client_pairs);
        Ok(())
    }

    /// Whether `host` may be reached over plain HTTP: insecure hosts and,
    /// as Docker allows, loopback.
    pub fn allows_http(&self, host: &str) -> bool {
        is_loopback(host) || self.skips_verification(host)
    }

    /// Whether certificates of `host` go unchecked: only when the user said
    /// so. Loopback gets plain HTTP but not this: a local registry that
    /// does speak TLS is verified (with `--cert-dir` or certs.d for its CA).
    pub fn skips_verification(&self, host: &str) -> bool {
        !self.tls_verify
            || self
                .insecure_registries
                .iter()
                .any(|h| h == host || h == strip_port(host))
    }

    /// A client for registry requests to `host` (`name[:port]`).
    pub fn client_for(&self, host: &str) -> Result<reqwest::Client> {
        let b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .read_timeout(self.read_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16);
        self.configure(host, b)?
            .build()
            .map_err(|e| tls_error(host, e.to_string()))
    }

    /// A blocking client builder for `host` with the same TLS, proxy and
    /// identity settings as a registry client's, for the build's remote
    /// sources (which add their own redirect and name-resolution policy).
    pub fn blocking_builder(&self, host: &str) -> Result<reqwest::blocking::ClientBuilder> {
        self.configure(host, reqwest::blocking::Client::builder())
    }

    /// The settings every kiln HTTP client shares, on either builder.
    fn configure<B: Builder>(&self, host: &str, b: B) -> Result<B> {
        let tls_err = |detail: String| tls_error(host, detail);
        let mut b = b
            .user_agent(&self.user_agent)
            .connect_timeout(Duration::from_secs(30));
        let mut cas: Vec<PathBuf> = self.extra_ca.clone();
        let mut pairs = self.client_certs.clone();
        for d in &self.certs_d {
            let found = CertDir::read(&d.join(host));
            cas.extend(found.cas);
            pairs.extend(found.client_pairs);
        }
        if let Some((cert, key)) = pairs.first() {
            // One identity per client, as Docker takes the first pair too.
            let mut pem = std::fs::read(cert)
                .map_err(|e| tls_err(format!("read {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key).map_err(|e| tls_err(format!("read {}: {e}", key.display())))?,
            );
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                tls_err(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            b = b.identity(id);
        }
        for p in cas {
            let pem =
                std::fs::read(&p).map_err(|e| tls_err(format!("read {}: {e}", p.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| tls_err(format!("{}: {e}", p.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if self.skips_verification(host) {
            b = b.danger_accept_invalid_certs(true);
        }
        if is_loopback(host) {
            b = b.no_proxy();
        }
        Ok(b)
    }
}

fn tls_error(host: &str, detail: String) -> RegistryError {
    RegistryError::Tls {
        host: host.to_string(),
        detail,
    }
}

/// What [`TransportConfig::configure`] sets, on reqwest's async and
/// blocking client builders alike.
trait Builder: Sized {
    fn user_agent(self, agent: &str) -> Self;
    fn connect_timeout(self, timeout: Duration) -> Self;
    fn identity(self, id: reqwest::Identity) -> Self;
    fn add_root_certificate(self, cert: reqwest::Certificate) -> Self;
    fn danger_accept_invalid_certs(self, accept: bool) -> Self;
    fn no_proxy(self) -> Self;
}

macro_rules! builder {
    ($t:ty) => {
        impl Builder for $t {
            fn user_agent(self, agent: &str) -> Self {
                <$t>::user_agent(self, agent)
            }
            fn connect_timeout(self, timeout: Duration) -> Self {
                <$t>::connect_timeout(self, timeout)
            }
            fn identity(self, id: reqwest::Identity) -> Self {
                <$t>::identity(self, id)
            }
            fn add_root_certificate(self, cert: reqwest::Certificate) -> Self {
                <$t>::add_root_certificate(self, cert)
            }
            fn danger_accept_invalid_certs(self, accept: bool) -> Self {
                <$t>::danger_accept_invalid_certs(self, accept)
            }
            fn no_proxy(self) -> Self {
                <$t>::no_proxy(self)
            }
        }
    };
}

builder!(reqwest::ClientBuilder);
builder!(reqwest::blocking::ClientBuilder);

/// What one certificate directory holds, by Docker's naming: `*.crt` are
/// CAs, `X.cert` with `X.key` a client certificate. Unreadable or missing
/// directories hold nothing; a `.cert` without its `.key` is skipped.
#[derive(Default)]
struct CertDir {
    cas: Vec<PathBuf>,
    client_pairs: Vec<(PathBuf, PathBuf)>,
}

impl CertDir {
    fn read(dir: &Path) -> CertDir {
        let mut found = CertDir::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return found;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            match p.extension().and_then(|x| x.to_str()) {
                Some("crt" | "pem") => found.cas.push(p),
                Some("cert") => {
                    let key = p.with_extension("key");
                    if key.is_file() {
                        found.client_pairs.push((p, key));
                    }
                }
                _ => {}
            }
        }
        found
    }
}

fn strip_port(host: &str) -> &str {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host; // a bare IPv6 address: its colons are not a port
    }
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// 127.0.0.0/8, ::1 and localhost, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure() {
        for h in [
            "127.0.0.1:5000",
            "127.8.0.1",
            "localhost:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "example.com", "localhost.example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
        let mut c = TransportConfig::default();
        c.insecure_registries.push("reg.lan".into());
        assert!(c.skips_verification("reg.lan:5000"));
        assert!(!c.skips_verification("other.lan"));
        assert!(c.allows_http("127.0.0.1:5000"));
        assert!(!c.skips_verification("127.0.0.1:5000"));
    }
}
