//! Debian control files (deb822): paragraphs of `Field: value` lines,
//! continuation lines starting with a space or tab, paragraphs separated by
//! blank lines. Used for `InRelease`, `Packages` and a `.deb`'s `control`.

use std::collections::BTreeMap;

/// One paragraph: fields in file order (field names compare
/// case-insensitively, as Debian policy says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (continuation lines joined with `\n`, the first
    /// line's leading space trimmed).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The paragraph written back as deb822 text (ending in `\n`).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.fields {
            let mut lines = v.split('\n');
            out.push_str(k);
            out.push(':');
            let first = lines.next().unwrap_or("");
            if !first.is_empty() {
                out.push(' ');
                out.push_str(first);
            }
            out.push('\n');
            for l in lines {
                out.push(' ');
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Parses every paragraph of `text`. Lines that are neither a field nor a
/// continuation (and not comments) are an error naming the line.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, String> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some((_, v)) = cur.fields.last_mut() else {
                return Err(format!("line {}: continuation without a field", n + 1));
            };
            v.push('\n');
            v.push_str(line[1..].trim_end());
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("line {}: expected `Field: value`: {line:?}", n + 1));
        };
        cur.fields
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The lines of a multi-line field (e.g. `SHA256` in a Release file),
/// without the empty first line.
pub fn lines(value: &str) -> impl Iterator<Item = &str> {
    value.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// Parses a Release file's hash list (`<hex> <size> <path>` per line) into
/// path → (hex, size).
pub fn hash_list(value: &str) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for l in lines(value) {
        let mut it = l.split_whitespace();
        if let (Some(h), Some(s), Some(p)) = (it.next(), it.next(), it.next())
            && let Ok(size) = s.parse()
        {
            out.insert(p.to_string(), (h.to_ascii_lowercase(), size));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let text =
            "Package: a\nDescription: short\n long line\n .\n more\n\n\nPackage: b\nversion: 1\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("description"), Some("short\nlong line\n.\nmore"));
        assert_eq!(ps[1].get("Version"), Some("1"));
        assert!(parse(" orphan\n").is_err());
        assert!(parse("no colon here\n").is_err());
    }

    #[test]
    fn hash_lists_map_paths() {
        let h = hash_list("\n abc 12 main/binary-amd64/Packages\n def 3 x\n");
        assert_eq!(h["main/binary-amd64/Packages"], ("abc".to_string(), 12));
        assert_eq!(h.len(), 2);
    }
}
