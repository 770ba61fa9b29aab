//! `kiln images --filter`, docker's keys and rules: `reference=PATTERN`
//! (Go's path.Match over the familiar name, with or without its tag; any
//! of several may match), `dangling=true|false`, `label=KEY[=VALUE]` (all
//! must match), `before=IMAGE` and `since=IMAGE` (created before or after
//! that image).
//!
//! kiln lists names only (an image no name reaches is not listed and
//! `kiln prune` removes it), so no listed image is dangling, as in docker,
//! where an image that a tag or digest reference names is not dangling.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use kiln_image::{Image, Platform, Reference, Store};

#[derive(Default)]
pub struct Filters {
    references: Vec<String>,
    dangling: Option<bool>,
    labels: Vec<(String, Option<String>)>,
    before: Option<i64>,
    since: Option<i64>,
}

impl Filters {
    /// `KEY=VALUE` filters; `before`/`since` images are looked up in `store`.
    pub fn parse(specs: &[String], store: &Store) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        for spec in specs {
            let (key, value) = spec
                .split_once('=')
                .with_context(|| format!("--filter {spec:?}: expected KEY=VALUE"))?;
            match key {
                "reference" => f.references.push(value.to_string()),
                "dangling" => {
                    let d = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!(
                            "--filter {spec:?}: invalid filter 'dangling={value}' (true or false)"
                        ),
                    };
                    if f.dangling.is_some_and(|had| had != d) {
                        bail!("--filter dangling: give one value, not both");
                    }
                    f.dangling = Some(d);
                }
                "label" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (value.to_string(), None),
                    };
                    f.labels.push((k, v));
                }
                "before" => f.before = Some(created_of(store, value, spec)?),
                "since" => f.since = Some(created_of(store, value, spec)?),
                other => bail!(
                    "--filter {spec:?}: invalid filter '{other}' (kiln knows reference, dangling, label, before, since)"
                ),
            }
        }
        Ok(f)
    }

    /// Whether the image named `name` passes every filter.
    pub fn keep(
        &self,
        name: &Reference,
        labels: &BTreeMap<String, String>,
        created: Option<i64>,
    ) -> bool {
        if self.dangling == Some(true) {
            return false;
        }
        if !self.references.is_empty()
            && !self.references.iter().any(|p| reference_matches(p, name))
        {
            return false;
        }
        let labels_ok = self.labels.iter().all(|(k, v)| match (labels.get(k), v) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        });
        let before_ok = self.before.is_none_or(|b| created.is_some_and(|c| c < b));
        let since_ok = self.since.is_none_or(|s| created.is_some_and(|c| c > s));
        labels_ok && before_ok && since_ok
    }
}

/// The creation time of the image `name` (for before= and since=).
fn created_of(store: &Store, name: &str, spec: &str) -> anyhow::Result<i64> {
    let (img, _) = Image::load(store, name, &Platform::host())
        .with_context(|| format!("--filter {spec:?}"))?;
    img.config
        .created
        .as_deref()
        .and_then(kiln_image::time::parse_rfc3339)
        .with_context(|| format!("--filter {spec:?}: {name} has no creation time"))
}

/// docker's reference filter: the pattern against the familiar name
/// (`busybox:latest`), and against the repository alone when the name has
/// a tag (`busybox`).
fn reference_matches(pattern: &str, name: &Reference) -> bool {
    let familiar = name.familiar();
    if glob(pattern, &familiar) {
        return true;
    }
    match name.tag() {
        Some(tag) => familiar
            .strip_suffix(&format!(":{tag}"))
            .is_some_and(|repo| glob(pattern, repo)),
        None => false,
    }
}

/// Go's `path.Match`: `*` is any run of characters but `/`, `?` one such
/// character, `[abc]`, `[a-z]`, `[^a-z]` a class, `\` quotes the next.
/// A malformed pattern matches nothing.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches_at(&p, &t)
}

fn matches_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => {
            let rest = &p[1..];
            // Each split of the run of non-'/' characters the star may take.
            let mut i = 0;
            loop {
                if matches_at(rest, &t[i..]) {
                    return true;
                }
                if i == t.len() || t[i] == '/' {
                    return false;
                }
                i += 1;
            }
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && matches_at(&p[1..], &t[1..]),
        Some('[') => {
            let Some(c) = t.first() else { return false };
            match class(&p[1..], *c) {
                Some((hit, used)) => hit && *c != '/' && matches_at(&p[1 + used..], &t[1..]),
                None => false,
            }
        }
        Some('\\') => p.len() > 1 && t.first() == Some(&p[1]) && matches_at(&p[2..], &t[1..]),
        Some(c) => t.first() == Some(c) && matches_at(&p[1..], &t[1..]),
    }
}

/// A class after its `[`: whether `c` is in it, and how many pattern
/// characters it used (through `]`); `None` if it is not closed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = if p[i] == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            p[i]
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            let hi = p[i + 1];
            i += 2;
            hit |= lo <= c && c <= hi;
        } else {
            hit |= lo == c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_go_path_match() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("*", "busybox"));
        assert!(!glob("*", "kiln-test/busybox"));
        assert!(glob("*/*", "kiln-test/busybox"));
        assert!(glob("b?sybox:1.3[0-9]", "busybox:1.36"));
        assert!(!glob("b?sybox:1.3[^0-9]", "busybox:1.36"));
        assert!(glob("a\\*", "a*"));
        assert!(!glob("a\\*", "ab"));
        assert!(!glob("[", "["));
    }

    #[test]
    fn reference_matches_with_and_without_the_tag() {
        let n = Reference::parse("kiln-test/busybox:1").unwrap();
        assert!(reference_matches("kiln-test/*", &n));
        assert!(reference_matches("kiln-test/busybox", &n));
        assert!(reference_matches("*/busybox:1", &n));
        assert!(!reference_matches("busybox", &n));
        assert!(!reference_matches("*:2", &n));
    }
}
