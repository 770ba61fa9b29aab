//! `requirements.txt` as a lock: each line pins one distribution with
//! `name==version`, optionally with pip's `--hash=sha256:HEX` options (the
//! form `pip-compile --generate-hashes` writes). Comments, blank lines and
//! `\` continuations are read as pip reads them. Anything else (ranges,
//! URLs, `-r` includes, markers, extras) is refused by line number: a
//! build installs exactly what the file names, with no resolver.

use std::collections::BTreeSet;

/// One pinned requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// As written.
    pub name: String,
    pub version: String,
    /// Allowed SHA-256s (lowercase hex); empty: any.
    pub hashes: BTreeSet<String>,
}

impl Pin {
    /// The name as PEP 503 normalizes it (`Foo_bar.baz` → `foo-bar-baz`).
    pub fn key(&self) -> String {
        normalize(&self.name)
    }
}

/// PEP 503's name normalization.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// Parses a requirements file; `what` names it in errors.
pub fn parse(text: &str, what: &str) -> Result<Vec<Pin>, String> {
    let mut pins: Vec<Pin> = Vec::new();
    let mut logical = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            first_line = i + 1;
        }
        // A comment runs from a `#` at the start or after whitespace.
        let line = match raw.find(" #").or_else(|| raw.find("\t#")) {
            Some(at) => &raw[..at],
            None if raw.trim_start().starts_with('#') => "",
            None => raw,
        };
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let l = std::mem::take(&mut logical);
        if let Some(p) = parse_line(&l).map_err(|e| format!("{what}:{first_line}: {e}"))? {
            if pins.iter().any(|q| q.key() == p.key()) {
                return Err(format!("{what}:{first_line}: {} is pinned twice", p.name));
            }
            pins.push(p);
        }
    }
    if !logical.trim().is_empty() {
        return Err(format!("{what}:{first_line}: ends in a `\\` continuation"));
    }
    Ok(pins)
}

fn parse_line(line: &str) -> Result<Option<Pin>, String> {
    let mut words = line.split_whitespace();
    let Some(spec) = words.next() else {
        return Ok(None);
    };
    let only = "only `name==version` lines (with `--hash=sha256:…`) are supported: kiln installs pinned wheels without a resolver";
    if spec.starts_with('-') {
        return Err(format!("option {spec:?}: {only}"));
    }
    let Some((name, version)) = spec.split_once("==") else {
        return Err(format!("{spec:?} is not pinned with ==; {only}"));
    };
    if !is_name(name) {
        return Err(format!(
            "{spec:?}: {name:?} is not a plain project name; {only}"
        ));
    }
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+!-".contains(&b))
    {
        return Err(format!(
            "{spec:?}: {version:?} is not an exact version; {only}"
        ));
    }
    let mut hashes = BTreeSet::new();
    while let Some(w) = words.next() {
        let value = match w.strip_prefix("--hash") {
            Some("") => words.next().unwrap_or(""),
            Some(v) => v.strip_prefix('=').unwrap_or(v),
            None => return Err(format!("unexpected {w:?} after {spec:?}; {only}")),
        };
        let hex = value
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("--hash {value:?}: only sha256: hashes are supported"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("--hash {value:?} is not a SHA-256"));
        }
        hashes.insert(hex.to_ascii_lowercase());
    }
    Ok(Some(Pin {
        name: name.into(),
        version: version.into(),
        hashes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_hashes_comments_and_continuations() {
        let h = "a".repeat(64);
        let text = format!(
            "# generated\n\nRequests==2.31.0 \\\n    --hash=sha256:{h} \\\n    --hash sha256:{}\nfoo_bar.baz==1.0  # why\n",
            "B".repeat(64)
        );
        let p = parse(&text, "r.txt").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key(), "requests");
        assert_eq!(p[0].version, "2.31.0");
        assert_eq!(p[0].hashes.len(), 2);
        assert!(p[0].hashes.contains(&"b".repeat(64)));
        assert_eq!(p[1].key(), "foo-bar-baz");
        assert!(p[1].hashes.is_empty());
    }

    #[test]
    fn what_a_resolver_would_need_is_refused_by_line() {
        for (line, want) in [
            ("requests>=2", "not pinned"),
            ("-r other.txt", "option"),
            ("requests[socks]==2.0", "plain project name"),
            ("requests==2.0; python_version<'3'", "exact version"),
            ("requests==2.0 --hash=md5:00", "sha256"),
            ("https://x/y.whl", "not pinned"),
        ] {
            let err = parse(&format!("ok==1\n{line}\n"), "r.txt").unwrap_err();
            assert!(err.starts_with("r.txt:2:"), "{line}: {err}");
            assert!(err.contains(want), "{line}: {err}");
        }
        assert!(parse("a==1\nA==2\n", "r").unwrap_err().contains("twice"));
    }
}
