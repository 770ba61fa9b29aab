//! One config instruction on its own, as `docker import --change` and
//! `docker commit --change` take it: parsed and expanded by this frontend
//! exactly as a line of a Dockerfile would be (against the image's ENV and
//! WORKDIR, the image a stage would start from), then turned into the
//! [`ConfigEdit`]s that the build applies for the same instruction.
//!
//! So a `--change` line and a Dockerfile line cannot mean two things: the
//! same parser reads both, and [`config_edits`] is the one mapping from a
//! resolved config instruction to edits of an image config.

use kiln_image::config_edit::ConfigEdit;

use crate::Diagnostics;
use crate::instructions::{Instr, Resolved};
use crate::stage::{ImageInfo, ResolveOptions};

/// The instructions `--change` takes: docker's list, and STOPSIGNAL.
pub const CHANGE_INSTRUCTIONS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Why a `--change` line was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Not one of [`CHANGE_INSTRUCTIONS`].
    #[error("{0} cannot be used here (expected one of {list})", list = CHANGE_INSTRUCTIONS.join(", "))]
    NotAllowed(String),
    /// The text held more (or less) than one instruction.
    #[error("expected exactly one instruction")]
    NotOne,
    /// The Dockerfile frontend refused it.
    #[error(transparent)]
    Dockerfile(#[from] Diagnostics),
}

impl ImageInfo {
    /// What the frontend needs of an image config.
    pub fn from_config(config: &kiln_image::ImageConfig) -> ImageInfo {
        let rt = config.runtime();
        let env = rt.env.iter().flatten();
        ImageInfo {
            env: env
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            onbuild: rt.on_build.clone().unwrap_or_default(),
            workdir: rt.working_dir.clone(),
            shell: rt.shell.clone(),
        }
    }
}

/// The reference the line's stand-in stage starts from; the caller's
/// [`ImageInfo`] is its config.
const BASE: &str = "kiln-change-base";

/// Parses and resolves one instruction of [`CHANGE_INSTRUCTIONS`] as if it
/// were the only step of a stage over an image whose config `image` gives
/// (ENV for `$VAR`, WORKDIR for a relative WORKDIR, SHELL for shell form).
pub fn parse_instruction(line: &str, image: &ImageInfo) -> Result<Resolved, ChangeError> {
    let keyword = line.split_whitespace().next().unwrap_or_default();
    let upper = keyword.to_ascii_uppercase();
    if !CHANGE_INSTRUCTIONS.contains(&upper.as_str()) {
        return Err(ChangeError::NotAllowed(upper));
    }
    let text = format!("FROM {BASE}\n{line}\n");
    let df = crate::parse("--change", &text)?;
    let mut opts = ResolveOptions::default();
    // The image's own ONBUILD triggers are not this line's to run.
    let info = ImageInfo {
        onbuild: Vec::new(),
        ..image.clone()
    };
    opts.images.insert(BASE.into(), info);
    let build = crate::resolve(&df, &opts)?;
    let stage = build.stages.into_iter().last().ok_or(ChangeError::NotOne)?;
    let mut instructions = stage.instructions.into_iter();
    match (instructions.next(), instructions.next()) {
        (Some(only), None) => Ok(only),
        _ => Err(ChangeError::NotOne),
    }
}

/// The config edits a resolved instruction makes, in order; `None` for an
/// instruction that is not a config edit (RUN, COPY, ADD, ARG, SHELL,
/// HEALTHCHECK, MAINTAINER).
pub fn config_edits(instr: &Instr) -> Option<Vec<ConfigEdit>> {
    Some(match instr {
        Instr::Env { vars } => vars
            .iter()
            .map(|v| ConfigEdit::Env(v.key.clone(), v.value.clone()))
            .collect(),
        Instr::Label { labels } => labels
            .iter()
            .map(|v| ConfigEdit::Label(v.key.clone(), v.value.clone()))
            .collect(),
        Instr::Expose { ports } => ports.iter().cloned().map(ConfigEdit::Expose).collect(),
        Instr::Volume { paths } => paths.iter().cloned().map(ConfigEdit::Volume).collect(),
        Instr::User { user } => vec![ConfigEdit::User(user.clone())],
        Instr::Workdir { resolved, .. } => vec![ConfigEdit::Workdir(resolved.clone())],
        Instr::Cmd { argv, .. } => vec![ConfigEdit::Cmd(argv.clone())],
        Instr::Entrypoint { argv, .. } => vec![ConfigEdit::Entrypoint(argv.clone())],
        Instr::Stopsignal { signal } => vec![ConfigEdit::StopSignal(signal.clone())],
        Instr::Onbuild { expression } => vec![ConfigEdit::OnBuild(expression.clone())],
        Instr::Run(_)
        | Instr::Copy(_)
        | Instr::Add(_)
        | Instr::Shell { .. }
        | Instr::Healthcheck(_)
        | Instr::Arg { .. }
        | Instr::Maintainer { .. } => return None,
    })
}

/// A `--change` line as the edits it makes to a config like `image`'s.
pub fn parse_change(line: &str, image: &ImageInfo) -> Result<Vec<ConfigEdit>, ChangeError> {
    let resolved = parse_instruction(line, image)?;
    let upper = resolved.original.split_whitespace().next().unwrap_or("");
    config_edits(&resolved.instr).ok_or_else(|| ChangeError::NotAllowed(upper.to_uppercase()))
}

/// A command as CMD takes it, exec form (a JSON array) or shell form (run
/// by the image's SHELL, else `/bin/sh -c`): what a `--cmd` or
/// `--entrypoint` flag means.
pub fn parse_command(command: &str, image: &ImageInfo) -> Result<Vec<String>, ChangeError> {
    match parse_instruction(&format!("CMD {command}"), image)?.instr {
        Instr::Cmd { argv, .. } => Ok(argv),
        _ => Err(ChangeError::NotOne),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::ImageConfig;
    use kiln_image::config_edit::apply_all;

    fn applied(lines: &[&str]) -> ImageConfig {
        let mut c = ImageConfig::default();
        let edits: Vec<ConfigEdit> = lines
            .iter()
            .flat_map(|l| parse_change(l, &ImageInfo::default()).unwrap())
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
        let none = ImageInfo::default();
        assert!(matches!(
            parse_change("RUN true", &none),
            Err(ChangeError::NotAllowed(_))
        ));
        assert!(parse_change("FROM x", &none).is_err());
    }

    /// As docker: text that is not a JSON array is shell form, even when
    /// it starts with `[`.
    #[test]
    fn a_broken_json_array_is_shell_form_as_docker_takes_it() {
        let edits = parse_change("CMD [broken", &ImageInfo::default()).unwrap();
        assert_eq!(
            edits,
            [ConfigEdit::Cmd(vec![
                "/bin/sh".into(),
                "-c".into(),
                "[broken".into()
            ])]
        );
    }

    #[test]
    fn one_line_is_one_instruction() {
        let none = ImageInfo::default();
        assert!(parse_change("CMD a\nRUN b", &none).is_err());
        assert!(parse_change("ENV A=1\nENV B=2", &none).is_err());
        assert!(parse_change("", &none).is_err());
    }

    #[test]
    fn the_image_config_is_the_context() {
        let image = ImageInfo {
            env: vec![("HOME".into(), "/home/app".into())],
            workdir: Some("/srv".into()),
            shell: Some(vec!["/bin/bash".into(), "-c".into()]),
            onbuild: vec!["RUN false".into()],
        };
        assert_eq!(
            parse_change("ENV CACHE=$HOME/.cache", &image).unwrap(),
            [ConfigEdit::Env("CACHE".into(), "/home/app/.cache".into())]
        );
        assert_eq!(
            parse_change("WORKDIR data", &image).unwrap(),
            [ConfigEdit::Workdir("/srv/data".into())]
        );
        assert_eq!(
            parse_command("make all", &image).unwrap(),
            ["/bin/bash", "-c", "make all"]
        );
    }
}
