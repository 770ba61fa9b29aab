//! The builder host's own network, as seen by ADD's downloads and clones:
//! loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10,
//! where cloud metadata services live) and the unspecified addresses
//! (0.0.0.0/8, ::), which Linux connects to the local host. A Dockerfile
//! is untrusted: without `kiln build --allow network.host` nothing it names
//! may open a connection to those, whether by an IP literal (in any of the
//! forms a URL parser or `inet_aton` accept: `2130706433`, `127.1`,
//! `::ffff:127.0.0.1`), a name that resolves there (`localhost`), or a
//! redirect. Names are checked where they are resolved (reqwest's DNS
//! hook), so a name that answers differently the second time (DNS
//! rebinding) cannot slip through.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether remote sources may reach the builder host's own network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostNetwork {
    /// The default for anything a Dockerfile names.
    #[default]
    Refused,
    /// `--allow network.host`, or an address the user typed themselves.
    Allowed,
}

/// What kind of host-local address `ip` is, or `None` for any other.
pub fn local_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => v4_kind(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            let s = a.segments();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (::a.b.c.d, deprecated): judged by the
                // IPv4 address inside, to be safe.
                v4_kind(a.to_ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED))
            } else {
                None
            }
        }
    }
}

fn v4_kind(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_link_local() {
        Some("link-local")
    } else if a.octets()[0] == 0 {
        Some("unspecified")
    } else {
        None
    }
}

/// Why a connection was not opened: the address and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The host as named (a name or a literal).
    pub host: String,
    /// The address it is, or resolved to.
    pub address: IpAddr,
    pub kind: &'static str,
    /// The URL that named it, when that was a redirect.
    pub redirect: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused to connect to {}", self.address)?;
        if self.host != self.address.to_string() {
            write!(f, " ({} resolves there)", self.host)?;
        }
        write!(
            f,
            ", a {} address of the build host's own network",
            self.kind
        )?;
        if let Some(r) = &self.redirect {
            write!(f, ", reached by a redirect to {r}")?;
        }
        write!(f, "; `kiln build --allow network.host` allows it")
    }
}

impl std::error::Error for Refusal {}

/// The host of `url` as a connection would use it: an IP for a literal
/// (after the URL parser's normalization of `127.1`, `0x7f.1`, …).
enum UrlHost {
    Ip(IpAddr),
    Name(String),
}

fn url_host(url: &Url) -> Option<UrlHost> {
    // The URL parser writes IPv4 literals of http(s) URLs in dotted form
    // and IPv6 ones in brackets. A non-special scheme (git://) leaves
    // numbers to the resolver, which reads them as `inet_aton` does.
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => UrlHost::Ip(ip),
        Err(_) => UrlHost::Name(bare.to_string()),
    })
}

/// Checks `host` (a name or an IP literal): every address it resolves to
/// must be outside the host's own network. Returns those addresses.
pub fn check_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, CheckError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (bare, port)
            .to_socket_addrs()
            .map_err(|e| CheckError::Resolve(format!("resolving {bare}: {e}")))?
            .collect(),
    };
    for a in &addrs {
        if let Some(kind) = local_kind(a.ip()) {
            return Err(CheckError::Refused(Refusal {
                host: bare.to_string(),
                address: a.ip(),
                kind,
                redirect: None,
            }));
        }
    }
    Ok(addrs)
}

/// A host that could not be checked, or was refused.
#[derive(Debug)]
pub enum CheckError {
    Resolve(String),
    Refused(Refusal),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Resolve(m) => f.write_str(m),
            CheckError::Refused(r) => r.fmt(f),
        }
    }
}

/// Checks a URL's host before a request or redirect goes to it. Names are
/// resolved here too, not only in the DNS hook: through a proxy, the
/// proxy resolves them, and a proxy on this host would reach its loopback.
pub fn check_url(url: &Url) -> Result<(), CheckError> {
    let port = url.port_or_known_default().unwrap_or(0);
    match url_host(url) {
        None => Ok(()),
        Some(UrlHost::Ip(ip)) => check_host(&ip.to_string(), port).map(|_| ()),
        Some(UrlHost::Name(n)) => check_host(&n, port).map(|_| ()),
    }
}

/// Whether `url` itself names the build host's own network (`localhost`
/// or a host-local literal). A URL the user typed on the command line (a
/// build context) allows its own host: the user asked for it.
pub fn names_host_network(url: &str) -> bool {
    let Ok(u) = Url::parse(url) else {
        return false;
    };
    match url_host(&u) {
        Some(UrlHost::Ip(ip)) => local_kind(ip).is_some(),
        Some(UrlHost::Name(n)) => n.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// [`check_url`], where a name this host cannot resolve passes when a
/// proxy is configured: behind a proxy, only the proxy may know external
/// names (without one, the DNS hook checks the name when connecting).
fn check_url_via(url: &Url, proxied: bool) -> Result<(), CheckError> {
    match check_url(url) {
        Err(CheckError::Resolve(_)) if proxied => Ok(()),
        other => other,
    }
}

/// Whether the environment configures a proxy.
pub fn proxy_configured() -> bool {
    !proxy_hosts().is_empty()
}

/// The variables that name the user's proxies.
pub(crate) const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// The hosts of the proxies the environment configures: the user's own,
/// which may be on this host (a proxy's name goes through the DNS hook).
fn proxy_hosts() -> Vec<String> {
    PROXY_VARS
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter_map(|p| {
            let p = if p.contains("://") {
                p
            } else {
                format!("http://{p}")
            };
            Url::parse(&p).ok()?.host_str().map(str::to_ascii_lowercase)
        })
        .collect()
}

/// reqwest's DNS hook: resolves with the system resolver and refuses a
/// name with any host-local address, recording why in `refusal`.
struct GuardedResolver {
    proxies: Vec<String>,
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let trusted = self.proxies.contains(&host.to_ascii_lowercase());
        let refusal = self.refusal.clone();
        Box::pin(async move {
            // A blocking lookup: the client makes one request at a time.
            let addrs: Vec<SocketAddr> = (host.as_str(), 0).to_socket_addrs()?.collect();
            if !trusted
                && let Some(r) = addrs.iter().find_map(|a| {
                    local_kind(a.ip()).map(|kind| Refusal {
                        host: host.clone(),
                        address: a.ip(),
                        kind,
                        redirect: None,
                    })
                })
            {
                let mut slot = refusal.lock().expect("lock");
                let r = slot.get_or_insert(r).clone();
                return Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The redirects a client follows, at most.
const MAX_REDIRECTS: usize = 10;

/// An HTTP client for remote sources: with [`HostNetwork::Refused`], it
/// cannot open a connection to the host's own network. Call
/// [`GuardedClient::check`] on the URL first; a refused hop is in
/// [`GuardedClient::refusal`] after a failed request.
pub struct GuardedClient {
    pub client: reqwest::blocking::Client,
    refusal: Arc<Mutex<Option<Refusal>>>,
    access: HostNetwork,
    /// Whether the environment configures a proxy.
    proxied: bool,
}

impl GuardedClient {
    pub fn new(access: HostNetwork, url: &Url) -> Result<GuardedClient, String> {
        let refusal: Arc<Mutex<Option<Refusal>>> = Arc::default();
        let proxies = proxy_hosts();
        let proxied = !proxies.is_empty();
        // The registry client's TLS roots, identity and proxy rules; the
        // policy hooks below are the remote sources' own.
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let mut builder = kiln_registry::transport::TransportConfig::default()
            .blocking_builder(&host)
            .map_err(|e| e.to_string())?
            .timeout(std::time::Duration::from_secs(600));
        match access {
            HostNetwork::Allowed => {
                if let Some(UrlHost::Ip(ip)) = url_host(url)
                    && local_kind(ip).is_some()
                {
                    // A proxy cannot reach the builder's own loopback.
                    builder = builder.no_proxy();
                }
                if url.host_str() == Some("localhost") {
                    builder = builder.no_proxy();
                }
            }
            HostNetwork::Refused => {
                let slot = refusal.clone();
                builder = builder
                    .dns_resolver(Arc::new(GuardedResolver {
                        proxies: proxies.clone(),
                        refusal: refusal.clone(),
                    }))
                    .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                        if attempt.previous().len() >= MAX_REDIRECTS {
                            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                        }
                        match check_url_via(attempt.url(), proxied) {
                            Ok(()) => attempt.follow(),
                            Err(CheckError::Refused(mut r)) => {
                                r.redirect = Some(attempt.url().to_string());
                                *slot.lock().expect("lock") = Some(r.clone());
                                attempt.error(r)
                            }
                            Err(e @ CheckError::Resolve(_)) => attempt.error(e.to_string()),
                        }
                    }));
            }
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(GuardedClient {
            client,
            refusal,
            access,
            proxied,
        })
    }

    /// Checks the first URL (nothing to do when the host network is allowed).
    pub fn check(&self, url: &Url) -> Result<(), CheckError> {
        match self.access {
            HostNetwork::Allowed => Ok(()),
            HostNetwork::Refused => check_url_via(url, self.proxied),
        }
    }

    /// The host-local address a request was refused, if it was.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.lock().expect("lock").clone()
    }
}

/// An error's message with its causes (reqwest keeps the reason, such as
/// a refused redirect, in its source chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        local_kind(s.parse().unwrap())
    }

    #[test]
    fn host_local_addresses() {
        assert_eq!(kind("127.0.0.1"), Some("loopback"));
        assert_eq!(kind("127.255.1.2"), Some("loopback"));
        assert_eq!(kind("::1"), Some("loopback"));
        assert_eq!(kind("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(kind("::127.0.0.1"), Some("loopback"));
        assert_eq!(kind("169.254.169.254"), Some("link-local"));
        assert_eq!(kind("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(kind("fe80::1"), Some("link-local"));
        assert_eq!(kind("febf::1"), Some("link-local"));
        assert_eq!(kind("0.0.0.0"), Some("unspecified"));
        assert_eq!(kind("0.1.2.3"), Some("unspecified"));
        assert_eq!(kind("::"), Some("unspecified"));
        assert_eq!(kind("93.184.216.34"), None);
        assert_eq!(kind("10.0.0.1"), None);
        assert_eq!(kind("2001:db8::1"), None);
        assert_eq!(kind("fec0::1"), None);
    }

    #[test]
    fn url_forms_of_loopback_are_refused() {
        for u in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://0.0.0.0:80/",
            "http://0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://localhost:1/",
            "git://2130706433/repo.git",
            "git://127.1/repo.git",
        ] {
            let url = Url::parse(u).unwrap();
            match check_url(&url) {
                Err(CheckError::Refused(r)) => {
                    assert!(local_kind(r.address).is_some(), "{u}: {r}");
                    assert!(r.to_string().contains("--allow network.host"), "{r}");
                }
                other => panic!("{u}: not refused: {other:?}", other = other.err()),
            }
        }
        assert!(check_url(&Url::parse("http://192.0.2.1/").unwrap()).is_ok());
    }

    #[test]
    fn refusal_names_the_address_and_the_redirect() {
        let r = Refusal {
            host: "localhost".into(),
            address: "127.0.0.1".parse().unwrap(),
            kind: "loopback",
            redirect: Some("http://localhost:8/x".into()),
        };
        assert_eq!(
            r.to_string(),
            "refused to connect to 127.0.0.1 (localhost resolves there), a loopback address \
             of the build host's own network, reached by a redirect to http://localhost:8/x; \
             `kiln build --allow network.host` allows it"
        );
    }
}
