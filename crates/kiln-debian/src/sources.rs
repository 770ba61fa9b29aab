//! The host's apt sources: which mirror serves a suite. Both formats are
//! read: one-line `deb URI SUITE COMPONENT…` lists and deb822 `.sources`
//! files (`Types`, `URIs`, `Suites`, `Components`, `Signed-By`, `Enabled`).

use std::path::{Path, PathBuf};

use crate::control;

/// One `deb` source: a mirror, its suites and components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// `Signed-By` when it names a file.
    pub signed_by: Option<PathBuf>,
}

/// Every `deb` source under `etc_apt` (normally `/etc/apt`), in apt's
/// order: `sources.list`, then `sources.list.d/*.list` and `*.sources`
/// sorted by name. Unreadable files are skipped.
pub fn host_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        out.extend(parse_list(&t));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_list(&t)),
            Some("sources") => out.extend(parse_deb822(&t)),
            _ => {}
        }
    }
    out
}

/// The mirror URI for `suite`: the first source that lists it, else the
/// first source that lists a suite of the same family (`bookworm` for
/// `bookworm-updates`), else the first `deb` source at all (a mirror
/// usually carries every suite).
pub fn mirror_for<'a>(sources: &'a [AptSource], suite: &str) -> Option<&'a AptSource> {
    sources
        .iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .or_else(|| {
            sources
                .iter()
                .find(|s| !s.uri.contains("security") && s.suites.iter().any(|x| !x.contains('/')))
        })
}

fn parse_list(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        let mut signed_by = None;
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            // Options: `[arch=amd64 signed-by=/path]`, possibly spread over words.
            for w in words.by_ref() {
                let opt = w.trim_start_matches('[').trim_end_matches(']');
                if let Some(p) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(PathBuf::from(p));
                }
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
        });
    }
    out
}

fn parse_deb822(text: &str) -> Vec<AptSource> {
    let Ok(paragraphs) = control::parse(text) else {
        return Vec::new();
    };
    let words = |p: &control::Paragraph, f: &str| -> Vec<String> {
        p.get(f)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut out = Vec::new();
    for p in &paragraphs {
        if !words(p, "Types").iter().any(|t| t == "deb")
            || p.get("Enabled")
                .is_some_and(|e| e.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let signed_by = p
            .get("Signed-By")
            .filter(|s| s.starts_with('/') && !s.contains('\n'))
            .map(PathBuf::from);
        for uri in words(p, "URIs") {
            out.push(AptSource {
                uri,
                suites: words(p, "Suites"),
                components: words(p, "Components"),
                signed_by: signed_by.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let l = parse_list(
            "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\ndeb-src http://x y z\n",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].uri, "http://m/debian");
        assert_eq!(l[0].components, ["main", "contrib"]);
        assert_eq!(l[0].signed_by.as_deref(), Some(Path::new("/k.gpg")));
        let d = parse_deb822(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(
            mirror_for(&d, "bookworm-security").unwrap().uri,
            "http://deb.debian.org/debian-security"
        );
        assert_eq!(
            mirror_for(&d, "trixie").unwrap().uri,
            "http://deb.debian.org/debian"
        );
    }
}
