//! HTTP client setup per registry host: TLS roots (the system's, plus an
//! extra CA bundle, plus `certs.d/<host>/*.crt` as Docker and podman read
//! them), which hosts may use plain HTTP, proxies and timeouts.
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
    /// Directories with one sub-directory per host holding `*.crt` CAs.
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
    /// Adds every `*.crt`/`*.pem` in `dir` as a trusted CA (podman's `--cert-dir`).
    pub fn add_cert_dir(&mut self, dir: &Path) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).map_err(RegistryError::io(format!("read {}", dir.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt" || x == "pem") {
                self.extra_ca.push(p);
            }
        }
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

    /// A client for requests to `host` (`name[:port]`).
    pub fn client_for(&self, host: &str) -> Result<reqwest::Client> {
        let tls_err = |detail: String| RegistryError::Tls {
            host: host.to_string(),
            detail,
        };
        let mut b = reqwest::Client::builder()
            .user_agent(&self.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(self.read_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16);
        let mut cas: Vec<PathBuf> = self.extra_ca.clone();
        for d in &self.certs_d {
            let dir = d.join(host);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.path().extension().is_some_and(|x| x == "crt") {
                        cas.push(e.path());
                    }
                }
            }
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
        b.build().map_err(|e| tls_err(e.to_string()))
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
