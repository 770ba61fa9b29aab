//! `.dockerignore` matching with Docker's (moby patternmatcher) semantics:
//! patterns are cleaned like Go's `filepath.Clean` and anchored at the
//! context root, a leading `/` is dropped, `*`/`?`/`[...]`/`\` follow Go's
//! `filepath.Match`, `**` spans directories, `!` re-includes, the last
//! matching pattern wins, and a match on a parent directory covers its
//! children. Also: which ignore file to read, and a hint for walkers.
//!
//! It does not read files or walk directories; callers pass text and
//! slash-separated paths relative to the context root.

use regex::Regex;

/// A bad pattern.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
#[error(".dockerignore line {line}: {message}")]
#[diagnostic(
    code(dockerignore),
    help("patterns follow Go filepath.Match syntax: *, ?, [a-z], \\ escapes, ** for any depth")
)]
pub struct IgnoreError {
    /// 1-based line in the ignore file (0 when built from a list).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

#[derive(Debug, Clone)]
enum Component {
    Literal(String),
    Glob(Regex),
}

impl Component {
    fn new(pat: &str) -> Component {
        match compile_pattern(pat) {
            Ok((Kind::Regexp, Some(re))) => Component::Glob(re),
            _ => Component::Literal(pat.to_string()),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Component::Literal(l) => l == name,
            Component::Glob(re) => re.is_match(name),
        }
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    cleaned: String,
    /// Per path component, for exclusions without `**`: compiled once
    /// because walkers ask `may_reinclude_under` for every directory.
    dirs: Vec<Component>,
    kind: Kind,
    re: Option<Regex>,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Regexp => self.re.as_ref().is_some_and(|r| r.is_match(path)),
        }
    }
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Go's `path.Clean` for slash-separated paths.
pub use kiln_image::clean_path::clean;

impl Matcher {
    /// Compiles the text of a `.dockerignore` file: one pattern per line,
    /// lines starting with `#` are comments, blank lines are ignored.
    pub fn new(text: &str) -> Result<Matcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let invert = p.starts_with('!');
            if invert {
                p = p[1..].trim();
            }
            let mut s = String::new();
            if !p.is_empty() {
                s = clean(p);
                if s.len() > 1 && s.starts_with('/') {
                    s.remove(0);
                }
            }
            if invert {
                s.insert(0, '!');
            }
            patterns.push((i + 1, s));
        }
        Self::compile(patterns)
    }

    /// Compiles a list of patterns (already one per entry).
    pub fn from_patterns<S: AsRef<str>>(list: &[S]) -> Result<Matcher, IgnoreError> {
        Self::compile(list.iter().map(|s| (0, s.as_ref().to_string())).collect())
    }

    fn compile(list: Vec<(usize, String)>) -> Result<Matcher, IgnoreError> {
        let mut patterns = Vec::new();
        for (line, raw) in list {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(IgnoreError {
                        line,
                        message: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
                p.remove(0);
            }
            let (kind, re) =
                compile_pattern(&p).map_err(|message| IgnoreError { line, message })?;
            let dirs = if exclusion && !p.contains("**") {
                p.split('/').map(Component::new).collect()
            } else {
                Vec::new()
            };
            patterns.push(Pattern {
                exclusion,
                dirs,
                cleaned: p,
                kind,
                re,
            });
        }
        Ok(Matcher { patterns })
    }

    /// True when `path` (relative to the context root) is excluded: the
    /// last pattern matching it or one of its parent directories decides.
    pub fn matches(&self, path: &str) -> bool {
        let path = clean(path.trim_start_matches('/'));
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            // An include can't change an already-matched result and an
            // exclusion can't change an unmatched one.
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&path);
            if !m {
                for i in 0..parents.len() {
                    if p.matches(&parents[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Walker hint: could some `!` pattern re-include `dir` itself or a
    /// path below it? When `matches(dir)` is true and this is false, the
    /// walker can skip the whole subtree. May answer true conservatively.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir = clean(dir.trim_start_matches('/'));
        let comps: Vec<&str> = if dir == "." {
            vec![]
        } else {
            dir.split('/').collect()
        };
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            if p.cleaned.contains("**") {
                return true;
            }
            p.dirs.iter().zip(&comps).all(|(pc, dc)| pc.matches(dc))
        })
    }

    /// True if there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Translates a cleaned pattern the way moby's patternmatcher does,
/// choosing a cheap match kind when no regex is needed.
fn compile_pattern(p: &str) -> Result<(Kind, Option<Regex>), String> {
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut token = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regexp;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regexp;
                }
                if token == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regexp;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(n) => {
                    re.push_str(&regex::escape(&n.to_string()));
                    i += 1;
                    // The cleaned text still holds the backslash, so only
                    // the regex can compare it.
                    kind = Kind::Regexp;
                }
                None => return Err(format!("syntax error in pattern {p:?}: trailing backslash")),
            },
            '[' => {
                let (class, next) = class(&chars, i)
                    .ok_or_else(|| format!("syntax error in pattern {p:?}: unclosed ["))?;
                re.push_str(&class);
                i = next;
                kind = Kind::Regexp;
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        token += 1;
    }
    re.push('$');
    if kind != Kind::Regexp {
        return Ok((kind, None));
    }
    Regex::new(&re)
        .map(|r| (Kind::Regexp, Some(r)))
        .map_err(|e| format!("bad pattern {p:?}: {e}"))
}

/// Converts a `[...]` class starting after `[` at `i`; returns the regex
/// class and the index after `]`.
fn class(chars: &[char], mut i: usize) -> Option<(String, usize)> {
    let mut out = String::from("[");
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut n = 0;
    loop {
        let c = *chars.get(i)?;
        i += 1;
        match c {
            ']' if n > 0 => break,
            ']' => return None,
            '\\' => {
                let e = *chars.get(i)?;
                i += 1;
                out.push_str(&regex::escape(&e.to_string()));
            }
            '-' if n > 0 && chars.get(i) != Some(&']') => out.push('-'),
            '[' | '&' | '~' | '^' | '-' => {
                out.push('\\');
                out.push(c);
            }
            '/' => return None,
            c => out.push(c),
        }
        n += 1;
    }
    out.push(']');
    Some((out, i))
}

/// Where an ignore file may be, in order of precedence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "relative_to", content = "path", rename_all = "snake_case")]
pub enum IgnoreFile {
    /// `<Dockerfile path>.dockerignore`, beside the Dockerfile (the
    /// path is the Dockerfile path as given, plus the suffix).
    BesideDockerfile(String),
    /// `.dockerignore` at the context root.
    ContextRoot(String),
}

/// The ignore files to look for, first existing one wins: a
/// Dockerfile-specific `<name>.dockerignore` next to the Dockerfile takes
/// precedence over `.dockerignore` at the context root. For a Dockerfile
/// read from stdin (`-`) only the context root one applies.
pub fn ignore_file_candidates(dockerfile_path: &str) -> Vec<IgnoreFile> {
    let mut v = Vec::new();
    if !dockerfile_path.is_empty() && dockerfile_path != "-" {
        v.push(IgnoreFile::BesideDockerfile(format!(
            "{dockerfile_path}.dockerignore"
        )));
    }
    v.push(IgnoreFile::ContextRoot(".dockerignore".into()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        assert_eq!(
            ignore_file_candidates("build/app.Dockerfile"),
            vec![
                IgnoreFile::BesideDockerfile("build/app.Dockerfile.dockerignore".into()),
                IgnoreFile::ContextRoot(".dockerignore".into())
            ]
        );
        assert_eq!(
            ignore_file_candidates("-"),
            vec![IgnoreFile::ContextRoot(".dockerignore".into())]
        );
    }
}
