//! One pure edit of an image config: [`apply`] takes a [`ConfigEdit`] and
//! changes the config as the Dockerfile instruction of the same name does.
//! A build's config steps and `kiln import --change` get their edits from
//! the Dockerfile frontend (`kiln_dockerfile::change`); `kiln mutate`
//! builds them from its flags. None edits a config any other way, so they
//! cannot drift apart.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut c = ImageConfig::default();
        let edits = [
            ConfigEdit::Cmd(vec!["sh".into()]),
            ConfigEdit::Env("A".into(), "1".into()),
            ConfigEdit::Env("B".into(), "2".into()),
            ConfigEdit::Label("x".into(), "1".into()),
            ConfigEdit::Expose("80".into()),
        ];
        apply_all(&mut c, &edits);
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
