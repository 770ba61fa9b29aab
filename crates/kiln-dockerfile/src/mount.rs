//! `RUN --mount=...` values: CSV fields, per-field expansion, defaults per
//! mount type and BuildKit's validation rules.
//!
//! It does not decide what `from=` refers to (stage, context or image);
//! the stage resolver does that with the raw `from` string kept here.

use serde::Serialize;

/// Mount types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// Read-only (by default) view of a context, stage or image.
    Bind,
    /// Persistent cache directory.
    Cache,
    /// Empty in-memory filesystem.
    Tmpfs,
    /// A secret file or environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// Cache sharing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent writers allowed.
    Shared,
    /// A new cache is made when the cache is in use.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A fully defaulted mount. `from` is still a name to resolve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// Mount type.
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Mount point; `None` only for a secret exposed as env only.
    pub target: Option<String>,
    /// Path inside `from` (bind, cache) to mount.
    pub source: Option<String>,
    /// Stage name/index, named context or image to take `source` from.
    pub from: Option<String>,
    /// Read-only.
    pub readonly: bool,
    /// Cache/secret/ssh id.
    pub id: Option<String>,
    /// Cache sharing (cache only).
    pub sharing: Option<Sharing>,
    /// File mode (cache, secret, ssh).
    pub mode: Option<u32>,
    /// Owner uid (cache, secret, ssh).
    pub uid: Option<u32>,
    /// Owner gid (cache, secret, ssh).
    pub gid: Option<u32>,
    /// Fail if the secret/ssh socket is not provided.
    pub required: bool,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
}

/// Parses one `--mount` value. `expand` expands a field value; `ssh_index`
/// numbers the default ssh socket path. Errors are plain messages; the
/// caller attaches the flag's span.
pub fn parse_mount(
    value: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ssh_index: usize,
) -> Result<Mount, String> {
    let fields = csv_fields(value)?;
    let mut m = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        readonly: true,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
    };
    // The type decides defaults, so find it first.
    let mut ro_set: Option<bool> = None;
    for f in &fields {
        let (k, v) = split_kv(f);
        if k.eq_ignore_ascii_case("type") {
            let v = v.ok_or_else(|| format!("invalid field '{f}' must be a key=value pair"))?;
            m.kind = match v.to_ascii_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => {
                    return Err(format!(
                        "unsupported mount type {other:?} (use bind, cache, tmpfs, secret or ssh)"
                    ));
                }
            };
        }
    }
    for f in &fields {
        let (k, v) = split_kv(f);
        let key = k.to_ascii_lowercase();
        if key == "type" {
            continue;
        }
        let bool_key = matches!(
            key.as_str(),
            "readonly" | "ro" | "rw" | "readwrite" | "required"
        );
        let raw = match v {
            Some(v) => v,
            None if bool_key => "true",
            None => return Err(format!("invalid field '{f}' must be a key=value pair")),
        };
        let val = expand(raw)?;
        let only = |types: &[MountType]| -> Result<(), String> {
            if types.contains(&m.kind) {
                Ok(())
            } else {
                Err(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    type_name(m.kind)
                ))
            }
        };
        match key.as_str() {
            "target" | "dst" | "destination" => m.target = Some(val),
            "source" | "src" => m.source = Some(val),
            "from" => {
                if matches!(
                    m.kind,
                    MountType::Secret | MountType::Ssh | MountType::Tmpfs
                ) {
                    return Err(format!(
                        "{} mount should not have a from",
                        type_name(m.kind)
                    ));
                }
                m.from = Some(val)
            }
            "readonly" | "ro" => ro_set = Some(parse_bool(&key, &val)?),
            "rw" | "readwrite" => ro_set = Some(!parse_bool(&key, &val)?),
            "id" => m.id = Some(val),
            "sharing" => {
                if m.kind != MountType::Cache {
                    return Err(format!(
                        "invalid cache sharing set for {} mount",
                        type_name(m.kind)
                    ));
                }
                m.sharing = Some(match val.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {val:?} (use shared, private or locked)"
                        ));
                    }
                });
            }
            "mode" => {
                only(&[MountType::Cache, MountType::Secret, MountType::Ssh])?;
                m.mode = Some(u32::from_str_radix(&val, 8).map_err(|_| {
                    format!("invalid value {val} for mode: expected octal like 0755")
                })?);
            }
            "uid" | "gid" => {
                only(&[MountType::Cache, MountType::Secret, MountType::Ssh])?;
                let n = val
                    .parse::<u32>()
                    .map_err(|_| format!("invalid value {val} for {key}: expected a number"))?;
                if key == "uid" {
                    m.uid = Some(n)
                } else {
                    m.gid = Some(n)
                }
            }
            "required" => {
                only(&[MountType::Secret, MountType::Ssh])?;
                m.required = parse_bool(&key, &val)?;
            }
            "env" => {
                only(&[MountType::Secret])?;
                m.env = Some(val);
            }
            "size" => {
                only(&[MountType::Tmpfs])?;
                m.size = Some(parse_size(&val)?);
            }
            _ => return Err(format!("unexpected key '{k}' in '{f}'")),
        }
    }
    m.readonly = match m.kind {
        MountType::Bind => ro_set.unwrap_or(true),
        MountType::Secret | MountType::Ssh => true,
        _ => ro_set.unwrap_or(false),
    };
    match m.kind {
        MountType::Bind | MountType::Tmpfs => {
            if m.target.is_none() {
                return Err(format!("{} mount requires a target", type_name(m.kind)));
            }
        }
        MountType::Cache => {
            let Some(t) = &m.target else {
                return Err("cache mount requires a target".into());
            };
            if m.id.is_none() {
                m.id = Some(t.clone());
            }
            m.sharing.get_or_insert(Sharing::Shared);
            m.mode.get_or_insert(0o755);
            m.uid.get_or_insert(0);
            m.gid.get_or_insert(0);
        }
        MountType::Secret => {
            if m.id.is_none() {
                match &m.target {
                    Some(t) => m.id = Some(basename(t)),
                    None => return Err("secret mount requires an id or a target".into()),
                }
            }
            if m.target.is_none() && m.env.is_none() {
                m.target = Some(format!(
                    "/run/secrets/{}",
                    m.id.as_deref().unwrap_or_default()
                ));
            }
            m.mode.get_or_insert(0o400);
            m.uid.get_or_insert(0);
            m.gid.get_or_insert(0);
        }
        MountType::Ssh => {
            m.id.get_or_insert_with(|| "default".into());
            m.target
                .get_or_insert_with(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
            m.mode.get_or_insert(0o600);
            m.uid.get_or_insert(0);
            m.gid.get_or_insert(0);
        }
    }
    Ok(m)
}

fn type_name(t: MountType) -> &'static str {
    match t {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

fn split_kv(f: &str) -> (&str, Option<&str>) {
    match f.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v)),
        None => (f.trim(), None),
    }
}

fn basename(p: &str) -> String {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "invalid value {v:?} for {key}: expected true or false"
        )),
    }
}

/// Sizes like `64m`, `1g`, `1024` (binary multiples, like go-units).
fn parse_size(v: &str) -> Result<u64, String> {
    let l = v.trim().to_ascii_lowercase();
    let num_end = l
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(l.len());
    let (num, unit) = l.split_at(num_end);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {v:?}"))?;
    let unit = unit.trim().trim_end_matches("ib").trim_end_matches('b');
    let mul: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(format!("invalid size {v:?}: unknown unit")),
    };
    Ok((n * mul as f64) as u64)
}

/// Splits a CSV record like Go's encoding/csv with one record: commas
/// separate fields, a field starting with `"` is quoted and `""` is a quote.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("invalid mount value {s:?}: unterminated quote")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            // Text after the closing quote up to the comma.
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        if !field.is_empty() {
            out.push(field);
        }
        if chars.next().is_none() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Result<Mount, String> {
        parse_mount(v, &mut |s| Ok(s.to_string()), 0)
    }

    #[test]
    fn csv() {
        assert_eq!(
            csv_fields(r#"a=1,"b=x,y",c"#).unwrap(),
            ["a=1", "b=x,y", "c"]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn defaults() {
        let m = p("type=cache,target=/root/.cache").unwrap();
        assert_eq!(m.id.as_deref(), Some("/root/.cache"));
        assert_eq!(
            (m.sharing, m.mode, m.readonly),
            (Some(Sharing::Shared), Some(0o755), false)
        );
        let m = p("target=/src").unwrap();
        assert_eq!((m.kind, m.readonly), (MountType::Bind, true));
        assert!(!p("target=/src,rw").unwrap().readonly);
        let m = p("type=secret,id=tok").unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/tok"));
        let m = p("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(m.target, None);
        let m = p("type=secret,target=/run/x/aws").unwrap();
        assert_eq!(m.id.as_deref(), Some("aws"));
        let m = p("type=ssh").unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/buildkit/ssh_agent.0"));
        assert!(p("type=bind").is_err());
        assert!(p("type=nope,target=/x").is_err());
        assert!(p("type=tmpfs,target=/x,sharing=locked").is_err());
        assert!(p("type=bind,target=/x,mode=0700").is_err());
        assert!(p("type=cache,target=/x,mode=9").is_err());
        assert!(p("type=secret,id=a,from=b").is_err());
        assert!(p("type=cache,target=/x,bogus=1").is_err());
        assert!(p("type=cache,target").is_err());
    }
}
