//! `--change` for `kiln import`: Dockerfile instructions that edit the
//! config, as `docker import --change` takes them (CMD, ENTRYPOINT, ENV,
//! EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use kiln_image::RuntimeConfig;

/// Applies one `--change` line to `rt`.
pub fn apply(rt: &mut RuntimeConfig, line: &str) -> anyhow::Result<()> {
    let line = line.trim();
    let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let ctx = || format!("--change {line:?}");
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => rt.cmd = Some(command(rest).with_context(ctx)?),
        "ENTRYPOINT" => rt.entrypoint = Some(command(rest).with_context(ctx)?),
        "ENV" => {
            for (k, v) in key_values(rest).with_context(ctx)? {
                rt.set_env(&k, &v);
            }
        }
        "LABEL" => {
            let labels = rt.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in key_values(rest).with_context(ctx)? {
                labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            let ports = rt.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = rt.volumes.get_or_insert_with(BTreeMap::new);
            let list = if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest).with_context(ctx)?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for v in list {
                vols.insert(v, serde_json::json!({}));
            }
        }
        "USER" => rt.user = Some(rest.to_string()),
        "WORKDIR" => rt.working_dir = Some(rest.to_string()),
        "STOPSIGNAL" => rt.stop_signal = Some(rest.to_string()),
        "ONBUILD" => rt
            .on_build
            .get_or_insert_with(Vec::new)
            .push(rest.to_string()),
        other => bail!("{}: {other} cannot be used in --change", ctx()),
    }
    Ok(())
}

/// Exec form (a JSON array) or shell form (wrapped in `/bin/sh -c`).
fn command(s: &str) -> anyhow::Result<Vec<String>> {
    if s.starts_with('[') {
        return serde_json::from_str(s).context("invalid JSON array");
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), s.into()])
}

/// `K=V K2="v 2"` or the legacy `K V` form.
fn key_values(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    if !s.contains('=') {
        let (k, v) = s
            .split_once(char::is_whitespace)
            .context("expected KEY VALUE")?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for word in split_words(s)? {
        let (k, v) = word
            .split_once('=')
            .with_context(|| format!("{word:?} is not KEY=VALUE"))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn split_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut chars = s.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote");
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes() {
        let mut rt = RuntimeConfig::default();
        apply(&mut rt, r#"CMD ["/bin/sh"]"#).unwrap();
        apply(&mut rt, "ENTRYPOINT echo hi").unwrap();
        apply(&mut rt, r#"ENV A=1 B="two words""#).unwrap();
        apply(&mut rt, "ENV C three").unwrap();
        apply(&mut rt, "EXPOSE 80 53/udp").unwrap();
        apply(&mut rt, "LABEL a=b").unwrap();
        apply(&mut rt, "WORKDIR /app").unwrap();
        assert_eq!(rt.cmd.as_ref().unwrap(), &["/bin/sh"]);
        assert_eq!(
            rt.entrypoint.as_ref().unwrap(),
            &["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(rt.env.as_ref().unwrap(), &["A=1", "B=two words", "C=three"]);
        assert!(rt.exposed_ports.as_ref().unwrap().contains_key("53/udp"));
        assert!(rt.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert_eq!(rt.working_dir.as_deref(), Some("/app"));
        assert!(apply(&mut rt, "RUN true").is_err());
        assert!(apply(&mut rt, "CMD [broken").is_err());
    }
}
