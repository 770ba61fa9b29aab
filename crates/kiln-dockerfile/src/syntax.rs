//! Per-instruction argument syntax, after the line reader has found the
//! keyword, flags and argument text: which flags each instruction takes
//! and their kinds, JSON (exec) vs shell form, `KEY=VALUE` lists, FROM and
//! HEALTHCHECK shapes, ONBUILD triggers.
//!
//! No expansion happens here; values stay as written.

use crate::diag::{Diag, Span};
use crate::parse::{
    Args, CommandForm, Flag, Instruction, KeyValue, Keyword, Logical, Parser, SpannedWord,
};
use crate::words;

impl Parser<'_> {
    pub(crate) fn check_flags(&self, kw: Keyword, flags: &[Flag]) -> Result<(), Box<Diag>> {
        let allowed = allowed_flags(kw);
        for (i, f) in flags.iter().enumerate() {
            let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == f.name) else {
                let mut d = self.err(
                    "unknown-flag",
                    format!("unknown flag: --{} for {}", f.name, kw.as_str()),
                    f.span.clone(),
                );
                let names: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                d = Box::new(if names.is_empty() {
                    d.with_help(format!("{} takes no flags", kw.as_str()))
                } else {
                    d.with_help(format!("{} accepts {}", kw.as_str(), names.join(", ")))
                });
                return Err(d);
            };
            match kind {
                FlagKind::Bool => {
                    if let Some(v) = &f.value
                        && !v.eq_ignore_ascii_case("true")
                        && !v.eq_ignore_ascii_case("false")
                    {
                        return Err(self.err(
                            "bad-flag",
                            format!("expecting boolean value for flag --{}, not: {v}", f.name),
                            f.span.clone(),
                        ));
                    }
                }
                FlagKind::Str | FlagKind::Multi => {
                    if f.value.is_none() {
                        return Err(Box::new(
                            Diag::error(
                                "bad-flag",
                                format!("missing a value on flag: --{}", f.name),
                                &self.src,
                                f.span.clone(),
                            )
                            .with_help(format!("write --{}=<value>", f.name)),
                        ));
                    }
                }
            }
            if kind != FlagKind::Multi && flags[..i].iter().any(|g| g.name == f.name) {
                return Err(self.err(
                    "bad-flag",
                    format!("duplicate flag specified: --{}", f.name),
                    f.span.clone(),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn args(
        &mut self,
        ins: &Instruction,
        logical: &Logical,
        args_start: usize,
    ) -> Result<Args, Box<Diag>> {
        let kw = ins.keyword;
        let a = ins.args_text.as_str();
        let need = |this: &Self| -> Result<(), Box<Diag>> {
            if a.is_empty() {
                return Err(this.err(
                    "missing-argument",
                    format!("{} requires at least one argument", kw.as_str()),
                    ins.keyword_span.clone(),
                ));
            }
            Ok(())
        };
        let spanned = |ws: Vec<words::Word>| -> Vec<SpannedWord> {
            ws.into_iter()
                .map(|w| SpannedWord {
                    span: logical.span(args_start + w.start..args_start + w.end),
                    text: w.text,
                })
                .collect()
        };
        Ok(match kw {
            Keyword::Run | Keyword::Cmd | Keyword::Entrypoint => {
                need(self)?;
                Args::Command {
                    form: self.command_form(a, &ins.args_span)?,
                }
            }
            Keyword::Shell => {
                need(self)?;
                match json_array(a) {
                    Some(v) if !v.is_empty() => Args::Command {
                        form: CommandForm::Exec(v),
                    },
                    _ => {
                        return Err(Box::new(
                            Diag::error(
                                "bad-json",
                                "SHELL requires the arguments to be in JSON form",
                                &self.src,
                                ins.args_span.clone(),
                            )
                            .with_help(r#"write e.g. SHELL ["/bin/bash", "-c"]"#),
                        ));
                    }
                }
            }
            Keyword::From | Keyword::Expose => {
                need(self)?;
                Args::Words {
                    words: spanned(words::split_whitespace(a)),
                    json: false,
                }
            }
            Keyword::Copy | Keyword::Add | Keyword::Volume => {
                need(self)?;
                if let Some(v) = json_array(a) {
                    let words = v
                        .into_iter()
                        .map(|text| SpannedWord {
                            text,
                            span: ins.args_span.clone(),
                        })
                        .collect();
                    Args::Words { words, json: true }
                } else {
                    self.intended_json(a, &ins.args_span)?;
                    Args::Words {
                        words: spanned(words::split_whitespace(a)),
                        json: false,
                    }
                }
            }
            Keyword::Env | Keyword::Label => {
                need(self)?;
                self.name_val(kw, a, logical, args_start)?
            }
            Keyword::Arg => {
                need(self)?;
                let pairs = words::split_keep_quotes(a, self.escape)
                    .into_iter()
                    .map(|w| {
                        let span = logical.span(args_start + w.start..args_start + w.end);
                        match w.text.split_once('=') {
                            Some((k, v)) => KeyValue {
                                key: k.to_string(),
                                value: Some(v.to_string()),
                                span,
                            },
                            None => KeyValue {
                                key: w.text,
                                value: None,
                                span,
                            },
                        }
                    })
                    .collect::<Vec<_>>();
                if let Some(p) = pairs.iter().find(|p| p.key.is_empty()) {
                    return Err(self.err("bad-arg", "ARG names can not be blank", p.span.clone()));
                }
                Args::KeyValues {
                    pairs,
                    legacy: false,
                }
            }
            Keyword::User | Keyword::Workdir | Keyword::Stopsignal | Keyword::Maintainer => {
                need(self)?;
                Args::Text {
                    text: a.to_string(),
                }
            }
            Keyword::Healthcheck => {
                need(self)?;
                let (word, rest) = match a.split_once(char::is_whitespace) {
                    Some((w, r)) => (w, r.trim()),
                    None => (a, ""),
                };
                if word.eq_ignore_ascii_case("NONE") {
                    if !rest.is_empty() {
                        return Err(self.err(
                            "bad-healthcheck",
                            "HEALTHCHECK NONE takes no arguments",
                            ins.args_span.clone(),
                        ));
                    }
                    Args::Healthcheck { cmd: None }
                } else if word.eq_ignore_ascii_case("CMD") {
                    if rest.is_empty() {
                        return Err(self.err(
                            "missing-argument",
                            "HEALTHCHECK CMD requires at least one argument",
                            ins.args_span.clone(),
                        ));
                    }
                    Args::Healthcheck {
                        cmd: Some(self.command_form(rest, &ins.args_span)?),
                    }
                } else {
                    return Err(Box::new(
                        Diag::error(
                            "bad-healthcheck",
                            format!("unknown type {word:?} in HEALTHCHECK (try CMD)"),
                            &self.src,
                            ins.args_span.clone(),
                        )
                        .with_help("use HEALTHCHECK CMD <command> or HEALTHCHECK NONE"),
                    ));
                }
            }
            Keyword::Onbuild => {
                need(self)?;
                let trigger = self.instruction(logical, args_start, false)?;
                match trigger.keyword {
                    Keyword::Onbuild => {
                        return Err(self.err(
                            "bad-onbuild",
                            "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                            trigger.keyword_span,
                        ));
                    }
                    Keyword::From | Keyword::Maintainer => {
                        return Err(self.err(
                            "bad-onbuild",
                            format!(
                                "{} isn't allowed as an ONBUILD trigger",
                                trigger.keyword.as_str()
                            ),
                            trigger.keyword_span,
                        ));
                    }
                    _ => {}
                }
                Args::Onbuild {
                    expression: a.to_string(),
                    trigger: Box::new(trigger),
                }
            }
        })
    }

    pub(crate) fn command_form(&self, a: &str, span: &Span) -> Result<CommandForm, Box<Diag>> {
        if let Some(v) = json_array(a) {
            return Ok(CommandForm::Exec(v));
        }
        self.intended_json(a, span)?;
        Ok(CommandForm::Shell(a.to_string()))
    }

    /// BuildKit silently runs a broken JSON array as a shell command; when
    /// the text is clearly meant as JSON (`["...` ... `]`) we report it.
    pub(crate) fn intended_json(&self, a: &str, span: &Span) -> Result<(), Box<Diag>> {
        let t = a.trim();
        // `["` can't start a shell command; `[ "$a" = "b" ]` can, so with a
        // space we also want a `", "` separator.
        let comma_sep = || {
            let mut rest = t;
            while let Some(i) = rest.find(['"', '\'']) {
                let after = rest[i + 1..].trim_start();
                if let Some(r) = after.strip_prefix(',')
                    && r.trim_start().starts_with(['"', '\''])
                {
                    return true;
                }
                rest = &rest[i + 1..];
            }
            false
        };
        if t.starts_with("[\"") || t.starts_with("['") || (t.starts_with('[') && comma_sep()) {
            let detail = serde_json::from_str::<Vec<String>>(t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(Box::new(
                Diag::error("bad-json", format!("invalid JSON array: {detail}"), &self.src, span.clone())
                    .with_help(r#"exec form must be a JSON array of strings with double quotes, e.g. ["echo", "hi"]"#),
            ));
        }
        Ok(())
    }

    pub(crate) fn name_val(
        &self,
        kw: Keyword,
        a: &str,
        logical: &Logical,
        args_start: usize,
    ) -> Result<Args, Box<Diag>> {
        let ws = words::split_keep_quotes(a, self.escape);
        let Some(first) = ws.first() else {
            return Err(self.err(
                "missing-argument",
                format!("{} requires at least one argument", kw.as_str()),
                logical.span(0..0),
            ));
        };
        if !first.text.contains('=') {
            // Legacy `KEY value with spaces`: the value is the rest verbatim.
            let span = logical.span(args_start..args_start + a.len());
            let Some((k, v)) = a.split_once(char::is_whitespace) else {
                return Err(Box::new(
                    Diag::error(
                        "missing-argument",
                        format!("{} must have two arguments", kw.as_str()),
                        &self.src,
                        span,
                    )
                    .with_help(format!("write {} key=value", kw.as_str())),
                ));
            };
            let pair = KeyValue {
                key: k.to_string(),
                value: Some(v.trim_start().to_string()),
                span,
            };
            return Ok(Args::KeyValues {
                pairs: vec![pair],
                legacy: true,
            });
        }
        let mut pairs = Vec::new();
        for w in ws {
            let span = logical.span(args_start + w.start..args_start + w.end);
            let Some((k, v)) = w.text.split_once('=') else {
                return Err(Box::new(
                    Diag::error(
                        "bad-key-value",
                        format!(
                            "Syntax error - can't find = in {:?}. Must be of the form: name=value",
                            w.text
                        ),
                        &self.src,
                        span,
                    )
                    .with_help("quote values that contain spaces: KEY=\"a b\""),
                ));
            };
            if k.is_empty() {
                return Err(self.err(
                    "bad-key-value",
                    format!("{} names can not be blank", kw.as_str()),
                    span,
                ));
            }
            pairs.push(KeyValue {
                key: k.to_string(),
                value: Some(v.to_string()),
                span,
            });
        }
        Ok(Args::KeyValues {
            pairs,
            legacy: false,
        })
    }
}

/// Decodes a JSON array of strings; `None` if the text is not one.
pub(crate) fn json_array(a: &str) -> Option<Vec<String>> {
    let t = a.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FlagKind {
    Str,
    Bool,
    Multi,
}

fn allowed_flags(kw: Keyword) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match kw {
        Keyword::From => &[("platform", Str)],
        Keyword::Run => &[("mount", Multi), ("network", Str), ("security", Str)],
        Keyword::Copy => &[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Multi),
        ],
        Keyword::Add => &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", Str),
            ("unpack", Bool),
            ("exclude", Multi),
        ],
        Keyword::Healthcheck => &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
        _ => &[],
    }
}
