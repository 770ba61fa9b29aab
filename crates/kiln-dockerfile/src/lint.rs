//! BuildKit-style lint rules (warnings, never errors on their own) and the
//! `# check=skip=...;error=true` configuration that filters or promotes
//! them.
//!
//! Rules that need expansion state are called from `instructions`/`stage`
//! through the small constructors here; rules that only need the parsed
//! file are in [`file_lints`].

use crate::diag::{Diag, Severity, Source, Span};
use crate::parse::{Args, Dockerfile, Instruction, Keyword};
use crate::scope::Scope;

fn warn(rule: &str, msg: impl Into<String>, src: &Source, span: Span) -> Diag {
    Diag::warning(rule, msg, src, span)
}

/// UndefinedVar.
pub(crate) fn undefined_var(src: &Source, name: &str, scope: &Scope, span: Span) -> Diag {
    let mut msg = format!("Usage of undefined variable '${name}'");
    let known = scope
        .env
        .iter()
        .map(|(k, _)| k)
        .chain(scope.args.iter().map(|(k, _)| k));
    if let Some(s) = known
        .filter(|k| close(k, name))
        .min_by_key(|k| distance(k, name))
    {
        msg.push_str(&format!(" (did you mean ${s}?)"));
    }
    warn("UndefinedVar", msg, src, span)
}

/// UndefinedArgInFrom.
pub(crate) fn undefined_arg_in_from(src: &Source, name: &str, span: &Span) -> Diag {
    warn(
        "UndefinedArgInFrom",
        format!("FROM argument '{name}' is not declared"),
        src,
        span.clone(),
    )
    .with_help(format!("declare `ARG {name}` before the first FROM"))
}

/// JSONArgsRecommended.
pub(crate) fn json_args_recommended(src: &Source, ins: &Instruction) -> Diag {
    warn(
        "JSONArgsRecommended",
        format!("JSON arguments recommended for {} to prevent unintended behavior related to OS signals", ins.keyword.as_str()),
        src,
        ins.span.clone(),
    )
    .with_help(format!(r#"use the exec form, e.g. {} ["executable", "arg"]"#, ins.keyword.as_str()))
}

/// LegacyKeyValueFormat.
pub(crate) fn legacy_key_value(src: &Source, ins: &Instruction) -> Diag {
    let k = ins.keyword.as_str();
    warn(
        "LegacyKeyValueFormat",
        format!("\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"),
        src,
        ins.span.clone(),
    )
}

/// MaintainerDeprecated.
pub(crate) fn maintainer(src: &Source, ins: &Instruction) -> Diag {
    warn(
        "MaintainerDeprecated",
        "Maintainer instruction is deprecated in favor of using label",
        src,
        ins.span.clone(),
    )
    .with_help(r#"use LABEL org.opencontainers.image.authors="name""#)
}

/// WorkdirRelativePath.
pub(crate) fn workdir_relative(src: &Source, path: &str, span: &Span) -> Diag {
    warn(
        "WorkdirRelativePath",
        format!(
            "Relative workdir \"{path}\" can have unexpected results if the base image changes"
        ),
        src,
        span.clone(),
    )
}

/// ExposeProtoCasing / ExposeInvalidFormat.
pub(crate) fn expose(src: &Source, rule: &str, spec: &str, span: &Span) -> Diag {
    let msg = if rule == "ExposeProtoCasing" {
        format!("Defined protocol '{spec}' in EXPOSE instruction should be lowercase")
    } else {
        format!(
            "EXPOSE instruction should not define an IP address or host-port mapping, found '{spec}'"
        )
    };
    warn(rule, msg, src, span.clone())
}

/// SecretsUsedInArgOrEnv: names that look like credentials.
pub(crate) fn secrets_in(src: &Source, kind: &str, key: &str, span: &Span) -> Option<Diag> {
    let tokens = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = key.to_ascii_lowercase();
    let hit = lower.split(['_', '-']).any(|part| tokens.contains(&part));
    hit.then(|| {
        warn(
            "SecretsUsedInArgOrEnv",
            format!("Do not use ARG or ENV instructions for sensitive data ({kind} \"{key}\")"),
            src,
            span.clone(),
        )
        .with_help("use RUN --mount=type=secret instead")
    })
}

/// A `--from` value that is not a stage but is one or two edits away from a
/// stage name: BuildKit would pull it as an image, which is rarely meant.
pub(crate) fn near_stage(
    src: &Source,
    name: &str,
    stages: &[Option<String>],
    span: &Span,
) -> Option<Diag> {
    let lower = name.to_ascii_lowercase();
    let best = stages
        .iter()
        .flatten()
        .filter(|s| close(s, &lower))
        .min_by_key(|s| distance(s, &lower))?;
    Some(
        warn(
            "FromNotAStage",
            format!(
                "'{name}' is not a stage of this Dockerfile and will be used as an image reference"
            ),
            src,
            span.clone(),
        )
        .with_help(format!("did you mean stage '{best}'?")),
    )
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

fn close(a: &str, b: &str) -> bool {
    a != b && distance(&a.to_ascii_lowercase(), &b.to_ascii_lowercase()) <= 2
}

/// Rules that only need the parsed file.
pub fn file_lints(df: &Dockerfile) -> Vec<Diag> {
    let src = df.source();
    let mut out = Vec::new();
    // ConsistentInstructionCasing: compare with the majority.
    let all: Vec<&Instruction> = df
        .instructions
        .iter()
        .flat_map(|i| match &i.args {
            Args::Onbuild { trigger, .. } => vec![i, trigger.as_ref()],
            _ => vec![i],
        })
        .collect();
    let upper = all
        .iter()
        .filter(|i| i.keyword_text.chars().all(|c| !c.is_lowercase()))
        .count();
    let lower = all
        .iter()
        .filter(|i| i.keyword_text.chars().all(|c| !c.is_uppercase()))
        .count();
    let majority_upper = upper >= lower;
    for i in &all {
        let ok = if majority_upper {
            i.keyword_text.chars().all(|c| !c.is_lowercase())
        } else {
            i.keyword_text.chars().all(|c| !c.is_uppercase())
        };
        if !ok {
            out.push(warn(
                "ConsistentInstructionCasing",
                format!(
                    "Command '{}' should match the case of the command majority ({})",
                    i.keyword_text,
                    if majority_upper {
                        "uppercase"
                    } else {
                        "lowercase"
                    }
                ),
                src,
                i.keyword_span.clone(),
            ));
        }
    }
    let mut stage_start = 0;
    let froms: Vec<usize> = df
        .instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == Keyword::From)
        .map(|(i, _)| i)
        .collect();
    for (n, &fi) in froms.iter().enumerate() {
        let from = &df.instructions[fi];
        let end = froms.get(n + 1).copied().unwrap_or(df.instructions.len());
        stage_start = stage_start.max(fi);
        if let Args::Words { words, .. } = &from.args {
            if let [_, as_, name] = words.as_slice() {
                let from_upper = from.keyword_text.chars().all(|c| !c.is_lowercase());
                let from_lower = from.keyword_text.chars().all(|c| !c.is_uppercase());
                let as_upper = as_.text.chars().all(|c| !c.is_lowercase());
                let as_lower = as_.text.chars().all(|c| !c.is_uppercase());
                if (from_upper && !as_upper) || (from_lower && !as_lower) {
                    out.push(warn(
                        "FromAsCasing",
                        format!(
                            "'{}' and '{}' keywords' casing do not match",
                            as_.text, from.keyword_text
                        ),
                        src,
                        as_.span.clone(),
                    ));
                }
                if name.text != name.text.to_ascii_lowercase() {
                    out.push(warn(
                        "StageNameCasing",
                        format!("Stage name '{}' should be lowercase", name.text),
                        src,
                        name.span.clone(),
                    ));
                }
                let l = name.text.to_ascii_lowercase();
                if l == "scratch" || l == "context" {
                    out.push(warn(
                        "ReservedStageName",
                        format!(
                            "Stage name should not use the same name as reserved stage \"{l}\""
                        ),
                        src,
                        name.span.clone(),
                    ));
                }
            }
            if let Some(p) = from.flag("platform").and_then(|f| f.value.as_deref()) {
                let span = from
                    .flag("platform")
                    .map(|f| f.span.clone())
                    .unwrap_or_default();
                if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
                    out.push(warn(
                        "RedundantTargetPlatform",
                        format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                        src,
                        span,
                    ));
                } else if !p.contains('$') {
                    let stage = match words.as_slice() {
                        [_, _, name] => name.text.to_ascii_lowercase(),
                        _ => String::new(),
                    };
                    let arch = p.split('/').nth(1).unwrap_or_default().to_ascii_lowercase();
                    if arch.is_empty() || !stage.contains(&arch) {
                        out.push(warn(
                            "FromPlatformFlagConstDisallowed",
                            format!("FROM --platform flag should not use constant value \"{p}\""),
                            src,
                            span,
                        ));
                    }
                }
            }
        }
        // MultipleInstructionsDisallowed: only the last one counts.
        for kw in [Keyword::Cmd, Keyword::Entrypoint, Keyword::Healthcheck] {
            let list: Vec<&Instruction> = df.instructions[fi + 1..end]
                .iter()
                .filter(|i| i.keyword == kw)
                .collect();
            if list.len() > 1 {
                for i in &list[..list.len() - 1] {
                    out.push(warn(
                        "MultipleInstructionsDisallowed",
                        format!(
                            "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                            kw.as_str()
                        ),
                        src,
                        i.span.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// Parsed `check` directive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckConfig {
    /// Rules to skip (`all` skips every rule).
    pub skip: Vec<String>,
    /// Turn findings into errors.
    pub error: bool,
}

/// Parses `skip=A,B;error=true`.
pub fn parse_check(text: &str) -> CheckConfig {
    let mut c = CheckConfig::default();
    for part in text.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "skip" => c.skip.extend(
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            ),
            "error" => c.error = v.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    c
}

/// Drops skipped rules and, with `error=true`, promotes warnings to errors.
pub fn apply_check_config(diags: Vec<Diag>, check: Option<&str>, _src: &Source) -> Vec<Diag> {
    let Some(text) = check else { return diags };
    let c = parse_check(text);
    let skip_all = c.skip.iter().any(|s| s.eq_ignore_ascii_case("all"));
    diags
        .into_iter()
        .filter(|d| d.is_error() || !(skip_all || c.skip.contains(&d.code)))
        .map(|mut d| {
            if c.error && d.severity == Severity::Warning {
                d.severity = Severity::Error;
                d.help
                    .get_or_insert_with(|| "promoted to an error by `# check=error=true`".into());
            }
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_directive() {
        let c = parse_check("skip=JSONArgsRecommended,StageNameCasing;error=true");
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(!parse_check("error=false").error);
    }
}
