//! One pure edit of an image config: [`apply`] takes a [`ConfigEdit`] and
//! changes the config as the Dockerfile instruction of the same name does.
//! `kiln import --change` parses Dockerfile lines into edits with
//! [`parse_change`]; `kiln mutate` builds them from its flags. Neither
//! edits a config any other way, so the two cannot drift apart.
//!
//! It does not record history: the caller decides whether an edit is a step.

use std::collections::BTreeMap;

use crate::config::ImageConfig;

/// A change to the config, with the semantics of the Dockerfile instruction
/// it is named after (and, for the `Unset*`/`Remove*` ones, of buildah's
/// `config --env NAME-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigEdit {
    /// ENTRYPOINT: also drops the CMD, as an ENTRYPOINT drops the CMD
    /// inherited from the base image; a [`ConfigEdit::Cmd`] after it sets one.
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
    Env(String, String),
    UnsetEnv(String),
    Label(String, String),
    RemoveLabel(String),
    /// A port as EXPOSE writes it (`80` means `80/tcp`).
    Expose(String),
    RemoveExpose(String),
    Volume(String),
    RemoveVolume(String),
    User(String),
    Workdir(String),
    StopSignal(String),
    OnBuild(String),
    /// The image's `created` time (RFC 3339).
    Created(String),
}

/// Applies `edit` to `config`.
pub fn apply(config: &mut ImageConfig, edit: &ConfigEdit) {
    if let ConfigEdit::Created(t) = edit {
        config.created = Some(t.clone());
        return;
    }
    let rt = config.runtime_mut();
    match edit {
        ConfigEdit::Entrypoint(argv) => {
            rt.entrypoint = Some(argv.clone());
            rt.cmd = None;
        }
        ConfigEdit::Cmd(argv) => rt.cmd = Some(argv.clone()),
        ConfigEdit::Env(k, v) => rt.set_env(k, v),
        ConfigEdit::UnsetEnv(k) => {
            if let Some(env) = &mut rt.env {
                env.retain(|kv| kv.split_once('=').map_or(kv.as_str(), |(n, _)| n) != k);
            }
        }
        ConfigEdit::Label(k, v) => {
            rt.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(k.clone(), v.clone());
        }
        ConfigEdit::RemoveLabel(k) => {
            if let Some(l) = &mut rt.labels {
                l.remove(k);
            }
        }
        ConfigEdit::Expose(p) => {
            rt.exposed_ports
                .get_or_insert_with(BTreeMap::new)
                .insert(port_key(p), serde_json::json!({}));
        }
        ConfigEdit::RemoveExpose(p) => {
            if let Some(ports) = &mut rt.exposed_ports {
                ports.remove(&port_key(p));
            }
        }
        ConfigEdit::Volume(v) => {
            rt.volumes
                .get_or_insert_with(BTreeMap::new)
                .insert(v.clone(), serde_json::json!({}));
        }
        ConfigEdit::RemoveVolume(v) => {
            if let Some(vols) = &mut rt.volumes {
                vols.remove(v);
            }
        }
        ConfigEdit::User(u) => rt.user = Some(u.clone()),
        ConfigEdit::Workdir(w) => rt.working_dir = Some(w.clone()),
        ConfigEdit::StopSignal(s) => rt.stop_signal = Some(s.clone()),
        ConfigEdit::OnBuild(e) => rt.on_build.get_or_insert_with(Vec::new).push(e.clone()),
        ConfigEdit::Created(_) => unreachable!("handled above"),
    }
}

/// Applies `edits` in order, as the instructions of one Dockerfile stage:
/// an ENTRYPOINT drops the inherited CMD, but not one set by an earlier
/// edit of the same list.
pub fn apply_all(config: &mut ImageConfig, edits: &[ConfigEdit]) {
    let mut cmd_set = false;
    for e in edits {
        let kept = cmd_set.then(|| config.runtime().cmd.clone()).flatten();
        apply(config, e);
        match e {
            ConfigEdit::Cmd(_) => cmd_set = true,
            ConfigEdit::Entrypoint(_) if cmd_set => config.runtime_mut().cmd = kept,
            _ => {}
        }
    }
}

/// `80` is `80/tcp`, as EXPOSE writes it.
fn port_key(p: &str) -> String {
    if p.contains('/') {
        p.to_string()
    } else {
        format!("{p}/tcp")
    }
}

/// Why a change line or flag value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EditError(pub String);

/// Exec form (a JSON array) or shell form (wrapped in `/bin/sh -c`), as
/// CMD and ENTRYPOINT take them.
pub fn parse_command(s: &str) -> Result<Vec<String>, EditError> {
    let s = s.trim();
    if s.starts_with('[') {
        return serde_json::from_str(s)
            .map_err(|e| EditError(format!("{s:?} is not a JSON array of strings: {e}")));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), s.into()])
}

/// A Dockerfile line as `docker import --change` takes it: CMD,
/// ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR,
/// STOPSIGNAL. One line can make several edits (`ENV A=1 B=2`).
pub fn parse_change(line: &str) -> Result<Vec<ConfigEdit>, EditError> {
    let line = line.trim();
    let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let edits = match instr.to_ascii_uppercase().as_str() {
        "CMD" => vec![ConfigEdit::Cmd(parse_command(rest)?)],
        "ENTRYPOINT" => vec![ConfigEdit::Entrypoint(parse_command(rest)?)],
        "ENV" => key_values(rest)?
            .into_iter()
            .map(|(k, v)| ConfigEdit::Env(k, v))
            .collect(),
        "LABEL" => key_values(rest)?
            .into_iter()
            .map(|(k, v)| ConfigEdit::Label(k, v))
            .collect(),
        "EXPOSE" => rest
            .split_whitespace()
            .map(|p| ConfigEdit::Expose(p.to_string()))
            .collect(),
        "VOLUME" => {
            let list = if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest)
                    .map_err(|e| EditError(format!("invalid JSON array: {e}")))?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            list.into_iter().map(ConfigEdit::Volume).collect()
        }
        "USER" => vec![ConfigEdit::User(rest.to_string())],
        "WORKDIR" => vec![ConfigEdit::Workdir(rest.to_string())],
        "STOPSIGNAL" => vec![ConfigEdit::StopSignal(rest.to_string())],
        "ONBUILD" => vec![ConfigEdit::OnBuild(rest.to_string())],
        other => return Err(EditError(format!("{other} cannot be used here"))),
    };
    Ok(edits)
}

/// `K=V K2="v 2"` or the legacy `K V` form.
fn key_values(s: &str) -> Result<Vec<(String, String)>, EditError> {
    if !s.contains('=') {
        let (k, v) = s
            .split_once(char::is_whitespace)
            .ok_or_else(|| EditError("expected KEY VALUE".into()))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for word in split_words(s)? {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| EditError(format!("{word:?} is not KEY=VALUE")))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn split_words(s: &str) -> Result<Vec<String>, EditError> {
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
        return Err(EditError("unterminated quote".into()));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(lines: &[&str]) -> ImageConfig {
        let mut c = ImageConfig::default();
        let edits: Vec<ConfigEdit> = lines
            .iter()
            .flat_map(|l| parse_change(l).unwrap())
            .collect();
        apply_all(&mut c, &edits);
        c
    }

    #[test]
    fn change_lines() {
        let c = applied(&[
            "ENTRYPOINT echo hi",
            r#"CMD ["/bin/sh"]"#,
            r#"ENV A=1 B="two words""#,
            "ENV C three",
            "EXPOSE 80 53/udp",
            "LABEL a=b",
            "WORKDIR /app",
        ]);
        let rt = c.runtime();
        assert_eq!(rt.cmd.as_ref().unwrap(), &["/bin/sh"]);
        assert_eq!(
            rt.entrypoint.as_ref().unwrap(),
            &["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(rt.env.as_ref().unwrap(), &["A=1", "B=two words", "C=three"]);
        assert!(rt.exposed_ports.as_ref().unwrap().contains_key("53/udp"));
        assert!(rt.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert_eq!(rt.working_dir.as_deref(), Some("/app"));
        assert!(parse_change("RUN true").is_err());
        assert!(parse_change("CMD [broken").is_err());
    }

    #[test]
    fn an_entrypoint_keeps_a_cmd_of_the_same_batch() {
        let mut c = ImageConfig::default();
        let edits = [
            ConfigEdit::Cmd(vec!["x".into()]),
            ConfigEdit::Entrypoint(vec!["/e".into()]),
        ];
        apply_all(&mut c, &edits);
        assert_eq!(c.runtime().cmd.as_deref(), Some(&["x".to_string()][..]));
    }

    #[test]
    fn entrypoint_drops_the_inherited_cmd_and_removals_remove() {
        let mut c = applied(&[r#"CMD ["sh"]"#, "ENV A=1 B=2", "LABEL x=1", "EXPOSE 80"]);
        apply(&mut c, &ConfigEdit::Entrypoint(vec!["/app".into()]));
        assert_eq!(c.runtime().cmd, None);
        apply(&mut c, &ConfigEdit::UnsetEnv("A".into()));
        apply(&mut c, &ConfigEdit::RemoveLabel("x".into()));
        apply(&mut c, &ConfigEdit::RemoveExpose("80".into()));
        let rt = c.runtime();
        assert_eq!(rt.env.as_ref().unwrap(), &["B=2"]);
        assert!(rt.labels.as_ref().unwrap().is_empty());
        assert!(rt.exposed_ports.as_ref().unwrap().is_empty());
    }
}
