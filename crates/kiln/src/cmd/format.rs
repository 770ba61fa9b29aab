//! `--format`: the subset of Go's text/template that docker users write,
//! evaluated over a JSON view of each row.
//!
//! Supported: literal text; `\t` and `\n` written as two characters (the
//! shell passes them so) become a tab and a newline, as docker's formatter
//! does; `{{.}}`, `{{.Field}}`, `{{.Field.Sub}}`; `{{json .}}` and
//! `{{json .Field}}`; a leading `table ` prints a header row first. Values
//! print as Go prints them: strings bare, lists as `[a b]`, objects as
//! `map[k:v]` with sorted keys. A top-level field the command does not have
//! is an error naming it, before anything is printed; any other action
//! (`range`, `if`, pipes, functions but `json`) is an error too.

use anyhow::bail;
use serde_json::Value;

/// A parsed `--format` template.
pub struct Template {
    parts: Vec<Part>,
    table: bool,
}

enum Part {
    Text(String),
    Field { path: Vec<String>, json: bool },
}

impl Template {
    /// Parses `text`, whose top-level fields must be among `fields`.
    pub fn parse(text: &str, fields: &[&str]) -> anyhow::Result<Template> {
        let (table, text) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, text),
        };
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                bail!("template {text:?}: unclosed action (no `}}}}`)");
            };
            parts.push(parse_action(after[..close].trim(), fields)?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts, table })
    }

    /// With a `table` template, the header row: each field's column name,
    /// given by `header_of` (docker's own names: `IMAGE ID` for `.ID`).
    pub fn header(&self, header_of: impl Fn(&str) -> String) -> Option<String> {
        if !self.table {
            return None;
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, .. } if path.is_empty() => out.push_str("VALUE"),
                Part::Field { path, .. } => out.push_str(&header_of(&path.join("."))),
            }
        }
        Some(out)
    }

    /// A `table` template: its lines are aligned (see [`align`]).
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// The template applied to one row.
    pub fn render(&self, row: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, json } => {
                    let v = lookup(row, path)?;
                    if *json {
                        out.push_str(&serde_json::to_string(v.unwrap_or(&Value::Null))?);
                    } else {
                        match v {
                            Some(v) => go_print(v, &mut out),
                            None => out.push_str("<no value>"),
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Tab-separated lines as docker's tables print them (Go's tabwriter with
/// docker's settings): each column as wide as its widest cell plus three
/// spaces, at least ten; the last cell of a line is not padded.
pub fn align(lines: &[String]) -> Vec<String> {
    let split: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &split {
        for (i, c) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            let w = (c.chars().count() + 3).max(10);
            match widths.get_mut(i) {
                Some(have) => *have = (*have).max(w),
                None => widths.push(w),
            }
        }
    }
    split
        .iter()
        .map(|cells| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                out.push_str(c);
                if i + 1 < cells.len() {
                    let pad = widths[i] - c.chars().count();
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out
        })
        .collect()
}

fn parse_action(action: &str, fields: &[&str]) -> anyhow::Result<Part> {
    let (json, arg) = match action.strip_prefix("json") {
        Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim()),
        _ => (false, action),
    };
    let Some(path) = arg.strip_prefix('.') else {
        bail!(
            "template action {{{{{action}}}}} is not supported: use {{{{.Field}}}} or {{{{json .Field}}}}"
        );
    };
    if path.is_empty() {
        return Ok(Part::Field {
            path: Vec::new(),
            json,
        });
    }
    let path: Vec<String> = path.split('.').map(str::to_string).collect();
    let ok = |s: &String| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    if !path.iter().all(ok) {
        bail!(
            "template action {{{{{action}}}}} is not supported: use {{{{.Field}}}} or {{{{json .Field}}}}"
        );
    }
    if !fields.contains(&path[0].as_str()) {
        bail!(
            "template: no field {:?} (the fields are {})",
            path[0],
            fields.join(", ")
        );
    }
    Ok(Part::Field { path, json })
}

/// The value at `path`; `None` for a key an object lacks (Go's `<no
/// value>` for a missing map key), an error for a field of a non-object.
fn lookup<'a>(row: &'a Value, path: &[String]) -> anyhow::Result<Option<&'a Value>> {
    let mut v = row;
    for (i, key) in path.iter().enumerate() {
        match v {
            Value::Object(m) => match m.get(key) {
                Some(next) => v = next,
                None => return Ok(None),
            },
            _ => bail!(
                "template: can't evaluate field {key} of .{} (not an object)",
                path[..i].join(".")
            ),
        }
    }
    Ok(Some(v))
}

/// Formats `v` as Go's fmt prints the same value with `%v`.
fn go_print(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(&b.to_string()),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_print(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                go_print(&m[k], out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIELDS: &[&str] = &["Repository", "Tag", "ID", "Config"];

    fn render(t: &str, v: &Value) -> String {
        Template::parse(t, FIELDS).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_text_tabs_and_json() {
        let v = json!({"Repository": "busybox", "Tag": "1", "ID": "abc",
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"z": "1", "a": "2"}}});
        assert_eq!(
            render("{{.Repository}}:{{.Tag}} {{ .ID }}", &v),
            "busybox:1 abc"
        );
        assert_eq!(render("{{.ID}}\\t{{.Tag}}", &v), "abc\t1");
        assert_eq!(render("{{.Config.Env}}", &v), "[A=1 B=2]");
        assert_eq!(render("{{.Config.Labels}}", &v), "map[a:2 z:1]");
        assert_eq!(render("{{json .Config.Env}}", &v), r#"["A=1","B=2"]"#);
        assert_eq!(render("{{.Config.Cmd}}", &v), "<no value>");
        let all: Value = serde_json::from_str(&render("{{json .}}", &v)).unwrap();
        assert_eq!(all, v);
    }

    #[test]
    fn unknown_fields_and_actions_are_errors_naming_them() {
        let e = Template::parse("{{.Nope}}", FIELDS).err().unwrap();
        assert!(e.to_string().contains("\"Nope\""), "{e}");
        for bad in [
            "{{range .Tag}}",
            "{{.Tag | upper}}",
            "{{.Tag",
            "{{upper .Tag}}",
        ] {
            assert!(Template::parse(bad, FIELDS).is_err(), "{bad}");
        }
        let t = Template::parse("{{.Tag.X}}", FIELDS).unwrap();
        assert!(t.render(&json!({"Tag": "1"})).is_err());
    }

    #[test]
    fn align_fits_each_column_to_its_widest_cell() {
        let lines = [
            "REPOSITORY\tTAG\tSIZE",
            "a-long-repository-name\t1\t5MB",
            "b\tlatest\t10MB",
        ]
        .map(String::from);
        assert_eq!(
            align(&lines),
            [
                "REPOSITORY               TAG       SIZE",
                "a-long-repository-name   1         5MB",
                "b                        latest    10MB",
            ]
        );
    }

    #[test]
    fn table_prints_a_header() {
        let t = Template::parse("table {{.Repository}}\\t{{.ID}}", FIELDS).unwrap();
        assert_eq!(t.header(|f| f.to_uppercase()).unwrap(), "REPOSITORY\tID");
        assert!(
            Template::parse("{{.ID}}", FIELDS)
                .unwrap()
                .header(|f| f.into())
                .is_none()
        );
    }
}
