//! Where variable values come from: build args, global (pre-FROM) ARGs,
//! ARGs declared in a stage, ENV, and the automatic platform, proxy and
//! SOURCE_DATE_EPOCH arguments.
//!
//! The rules: global ARGs are visible only in FROM unless re-declared in a
//! stage; a build arg overrides any ARG default; ENV shadows an ARG of the
//! same name regardless of order; platform ARGs are predefined in the
//! global scope and get their automatic value when declared in a stage.
//! This module holds state only; expansion itself is in `expand`.

use std::collections::BTreeMap;

use serde::Serialize;

/// An OS/architecture/variant triple (`linux/arm64/v8`) as the automatic
/// platform args spell it: what was written, lower-cased, with none of
/// `kiln_image::Platform`'s normalisation (kiln-build converts one to the
/// other in one place, `kiln_build::platform::arg_platform`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v7`; empty when none.
    pub variant: String,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: String::new(),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (os, arch, variant) = kiln_image::Platform::split(s).map_err(|_| {
            format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/arm64")
        })?;
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            architecture: arch.to_ascii_lowercase(),
            variant: variant.unwrap_or_default().to_ascii_lowercase(),
        })
    }
}

/// Proxy build args: usable in RUN without an ARG declaration and kept
/// out of the history unless declared.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Names of the automatic platform args.
pub const PLATFORM_ARGS: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Automatic platform arg values for a build and target platform.
pub fn platform_args(build: &Platform, target: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        m.insert(format!("{prefix}PLATFORM"), p.to_string());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(format!("{prefix}VARIANT"), p.variant.clone());
    }
    m
}

/// Default PATH BuildKit sets when the base image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables in effect inside one stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// ENV in effect, in definition order (image env first).
    pub env: Vec<(String, String)>,
    /// ARGs declared in this stage, in order; `None` when declared
    /// without any value.
    pub args: Vec<(String, Option<String>)>,
}

impl Scope {
    /// Value for expansion: ENV wins over ARG.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    /// True if declared by ARG or ENV (even without a value).
    pub fn is_declared(&self, name: &str) -> bool {
        self.env.iter().any(|(k, _)| k == name) || self.args.iter().any(|(k, _)| k == name)
    }

    /// Sets an ENV variable, keeping its original position if it existed.
    pub fn set_env(&mut self, k: &str, v: &str) {
        match self.env.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.env.push((k.to_string(), v.to_string())),
        }
    }

    /// Declares an ARG (a re-declaration replaces the value in place).
    pub fn declare_arg(&mut self, k: &str, v: Option<String>) {
        match self.args.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v,
            None => self.args.push((k.to_string(), v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_roundtrip_and_args() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        let a = platform_args(&Platform::default(), &p);
        assert_eq!(a["TARGETARCH"], "arm");
        assert_eq!(a["TARGETVARIANT"], "v7");
        assert_eq!(a["BUILDPLATFORM"], "linux/amd64");
        assert_eq!(a["BUILDVARIANT"], "");
    }

    #[test]
    fn env_shadows_arg() {
        let mut s = Scope::default();
        s.declare_arg("A", Some("arg".into()));
        assert_eq!(s.get("A").as_deref(), Some("arg"));
        s.set_env("A", "env");
        s.declare_arg("A", Some("later".into()));
        assert_eq!(s.get("A").as_deref(), Some("env"));
        s.declare_arg("B", None);
        assert!(s.is_declared("B"));
        assert_eq!(s.get("B"), None);
    }
}
