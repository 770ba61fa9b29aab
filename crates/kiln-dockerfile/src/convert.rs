//! Converts one parsed instruction into its resolved form inside a stage:
//! expansion exactly where BuildKit expands (not RUN/CMD/ENTRYPOINT/
//! SHELL/HEALTHCHECK/ONBUILD text), flag values checked and typed, ARG/ENV
//! scope updated, RUN argv/env/history built.
//!
//! Which stage, base and dependencies is `stage`'s business; this module
//! only sees one instruction at a time through [`Ctx`].

use crate::diag::{Diag, Span};
use crate::expand::{self, ExpandError, Expansion};
use crate::instructions::*;
use crate::lint;
use crate::mount;
use crate::parse::{Args, CommandForm, Instruction as Parsed, Keyword};
use crate::stage::Ctx;

impl Ctx<'_> {
    fn err(&mut self, code: &str, msg: impl Into<String>, span: &Span) {
        let d = Diag::error(code, msg, self.src, span.clone());
        self.diags.push(d);
    }

    fn expand_err(&mut self, e: ExpandError, span: &Span) {
        let (code, help) = match &e {
            ExpandError::Required(_) => (
                "required-variable",
                "pass it with --build-arg or give it a default",
            ),
            ExpandError::Syntax(_) => ("bad-substitution", "check quotes and ${...} syntax"),
        };
        let d = Diag::error(code, e.to_string(), self.src, span.clone()).with_help(help);
        self.diags.push(d);
    }

    fn run_expand(&mut self, text: &str, span: &Span, heredoc: bool) -> Option<Expansion> {
        let scope = &self.scope;
        let lookup = |n: &str| scope.get(n);
        let r = if heredoc {
            expand::expand_heredoc(text, self.escape, &lookup)
        } else {
            expand::expand(text, self.escape, &lookup)
        };
        match r {
            Ok(x) => {
                if self.env_known {
                    for n in &x.unset {
                        if !self.scope.is_declared(n) && !is_special_name(n) {
                            let d = lint::undefined_var(self.src, n, &self.scope, span.clone());
                            self.diags.push(d);
                        }
                    }
                }
                Some(x)
            }
            Err(e) => {
                self.expand_err(e, span);
                None
            }
        }
    }

    /// Expands one word (no splitting).
    pub(crate) fn word(&mut self, text: &str, span: &Span) -> Option<String> {
        self.run_expand(text, span, false).map(|x| x.value)
    }

    fn flag(&mut self, ins: &Parsed, name: &str) -> Option<(String, Span)> {
        let f = ins.flag(name)?;
        let span = f.span.clone();
        let v = f.value.clone().unwrap_or_default();
        self.word(&v, &span).map(|v| (v, span))
    }

    fn bool_flag(ins: &Parsed, name: &str) -> Option<bool> {
        ins.flag(name).map(|f| {
            f.value
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case("true"))
        })
    }
}

fn is_special_name(n: &str) -> bool {
    n.len() == 1 && !n.chars().all(|c| c.is_alphabetic() || c == '_')
        || n.chars().all(|c| c.is_ascii_digit())
}

/// Converts one parsed instruction in the current stage context.
pub(crate) fn convert(ins: &Parsed, ctx: &mut Ctx<'_>) -> Option<Instr> {
    let span = ins.args_span.clone();
    match (&ins.args, ins.keyword) {
        (Args::Command { form }, Keyword::Run) => convert_run(ins, form, ctx),
        (Args::Command { form }, Keyword::Cmd | Keyword::Entrypoint) => {
            let argv = argv_of(form, &ctx.shell);
            if let CommandForm::Shell(_) = form {
                ctx.diags.push(lint::json_args_recommended(ctx.src, ins));
            }
            Some(if ins.keyword == Keyword::Cmd {
                Instr::Cmd {
                    command: form.clone(),
                    argv,
                }
            } else {
                Instr::Entrypoint {
                    command: form.clone(),
                    argv,
                }
            })
        }
        (
            Args::Command {
                form: CommandForm::Exec(v),
            },
            Keyword::Shell,
        ) => {
            ctx.shell = v.clone();
            Some(Instr::Shell { shell: v.clone() })
        }
        (Args::KeyValues { pairs, legacy }, Keyword::Env | Keyword::Label) => {
            if *legacy {
                ctx.diags.push(lint::legacy_key_value(ctx.src, ins));
            }
            // All pairs see the environment from before this instruction.
            let mut vars = Vec::new();
            for p in pairs {
                let k = ctx.word(&p.key, &p.span)?;
                let v = ctx.word(p.value.as_deref().unwrap_or_default(), &p.span)?;
                vars.push(Var { key: k, value: v });
            }
            if ins.keyword == Keyword::Env {
                for v in &vars {
                    ctx.diags
                        .extend(lint::secrets_in(ctx.src, "ENV", &v.key, &ins.span));
                    ctx.scope.set_env(&v.key, &v.value);
                }
                Some(Instr::Env { vars })
            } else {
                Some(Instr::Label { labels: vars })
            }
        }
        (Args::KeyValues { pairs, .. }, Keyword::Arg) => {
            let mut args = Vec::new();
            for p in pairs {
                let value = if let Some(v) = ctx.opts.build_args.get(&p.key) {
                    Some(v.clone())
                } else if let Some(d) = &p.value {
                    Some(ctx.word(d, &p.span)?)
                } else {
                    let global = ctx.global.iter().rev().find(|(k, _)| *k == p.key);
                    global
                        .and_then(|g| g.1.clone())
                        .or_else(|| ctx.platform_args.get(&p.key).cloned())
                };
                ctx.consumed.insert(p.key.clone());
                ctx.diags
                    .extend(lint::secrets_in(ctx.src, "ARG", &p.key, &ins.span));
                ctx.scope.declare_arg(&p.key, value.clone());
                args.push(ArgValue {
                    key: p.key.clone(),
                    value,
                });
            }
            Some(Instr::Arg { args })
        }
        (Args::Words { words, .. }, Keyword::Expose) => {
            let mut ports = Vec::new();
            for w in words {
                let x = ctx.run_expand(&w.text, &w.span, false)?;
                for p in x.words {
                    match parse_port(&p) {
                        Ok((list, warn)) => {
                            if let Some(rule) = warn {
                                ctx.diags.push(lint::expose(ctx.src, rule, &p, &w.span));
                            }
                            ports.extend(list);
                        }
                        Err(e) => {
                            ctx.err("bad-port", e, &w.span);
                            return None;
                        }
                    }
                }
            }
            Some(Instr::Expose { ports })
        }
        (Args::Words { words, .. }, Keyword::Volume) => {
            let mut paths = Vec::new();
            for w in words {
                let v = ctx.word(&w.text, &w.span)?;
                if v.trim().is_empty() {
                    ctx.err(
                        "bad-volume",
                        "VOLUME specified can not be an empty string",
                        &w.span,
                    );
                    return None;
                }
                paths.push(v);
            }
            Some(Instr::Volume { paths })
        }
        (Args::Words { words, .. }, Keyword::Copy | Keyword::Add) => convert_copy(ins, words, ctx),
        (Args::Text { text }, Keyword::User) => Some(Instr::User {
            user: ctx.word(text, &span)?,
        }),
        (Args::Text { text }, Keyword::Maintainer) => {
            ctx.diags.push(lint::maintainer(ctx.src, ins));
            Some(Instr::Maintainer { name: text.clone() })
        }
        (Args::Text { text }, Keyword::Stopsignal) => {
            let s = ctx.word(text, &span)?;
            if !valid_signal(&s) {
                ctx.err("bad-signal", format!("invalid signal: {s}"), &span);
                return None;
            }
            Some(Instr::Stopsignal { signal: s })
        }
        (Args::Text { text }, Keyword::Workdir) => {
            let path = ctx.word(text, &span)?;
            if !path.starts_with('/') && !ctx.workdir_set {
                ctx.diags
                    .push(lint::workdir_relative(ctx.src, &path, &span));
            }
            let resolved = clean_abs(&if path.starts_with('/') {
                path.clone()
            } else {
                format!("{}/{}", ctx.workdir, path)
            });
            ctx.workdir = resolved.clone();
            ctx.workdir_set = true;
            Some(Instr::Workdir { path, resolved })
        }
        (Args::Healthcheck { cmd }, _) => convert_healthcheck(ins, cmd.as_ref(), ctx),
        (Args::Onbuild { expression, .. }, _) => {
            ctx.onbuild.push(expression.clone());
            Some(Instr::Onbuild {
                expression: expression.clone(),
            })
        }
        _ => {
            ctx.err(
                "internal",
                format!("unexpected arguments for {}", ins.keyword.as_str()),
                &ins.span,
            );
            None
        }
    }
}

fn argv_of(form: &CommandForm, shell: &[String]) -> Vec<String> {
    match form {
        CommandForm::Exec(v) => v.clone(),
        CommandForm::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

fn convert_run(ins: &Parsed, form: &CommandForm, ctx: &mut Ctx<'_>) -> Option<Instr> {
    let mut mounts = Vec::new();
    for f in ins.flags.iter().filter(|f| f.name == "mount") {
        let span = f.span.clone();
        let raw = f.value.clone().unwrap_or_default();
        let mut failed = None;
        let parsed = {
            let mut exp = |s: &str| -> Result<String, String> {
                let lookup = |n: &str| ctx.scope.get(n);
                expand::expand(s, ctx.escape, &lookup)
                    .map(|x| x.value)
                    .map_err(|e| {
                        failed = Some(e.clone());
                        e.to_string()
                    })
            };
            mount::parse_mount(&raw, &mut exp, ctx.ssh_count)
        };
        match parsed {
            Ok(m) => {
                if m.kind == mount::MountType::Ssh {
                    ctx.ssh_count += 1;
                }
                let from_ref = match &m.from {
                    Some(name) => Some(ctx.resolve_from(name, &span)?),
                    None => None,
                };
                mounts.push(RunMount { mount: m, from_ref });
            }
            Err(msg) => {
                match failed {
                    Some(e) => ctx.expand_err(e, &span),
                    None => {
                        let d = Diag::error("bad-mount", format!("invalid --mount: {msg}"), ctx.src, span)
                            .with_help("e.g. --mount=type=cache,target=/root/.cache (types: bind, cache, tmpfs, secret, ssh)");
                        ctx.diags.push(d);
                    }
                }
                return None;
            }
        }
    }
    let network = match ins.flag("network").and_then(|f| f.value.as_deref()) {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(v) => {
            let span = ins
                .flag("network")
                .map(|f| f.span.clone())
                .unwrap_or_default();
            ctx.err(
                "bad-flag",
                format!("unsupported network mode {v:?} (use default, none or host)"),
                &span,
            );
            return None;
        }
    };
    let security = match ins.flag("security").and_then(|f| f.value.as_deref()) {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(v) => {
            let span = ins
                .flag("security")
                .map(|f| f.span.clone())
                .unwrap_or_default();
            ctx.err(
                "bad-flag",
                format!("unsupported security mode {v:?} (use sandbox or insecure)"),
                &span,
            );
            return None;
        }
    };
    let heredocs: Vec<HeredocFile> = ins
        .heredocs
        .iter()
        .map(|h| HeredocFile {
            name: h.name.clone(),
            content: h.content.clone(),
            expand: h.expand,
        })
        .collect();
    let mut argv = argv_of(form, &ctx.shell);
    let mut script_file = None;
    if let (CommandForm::Shell(text), Some(first)) = (form, heredocs.first()) {
        let only_marker = crate::words::is_only_heredoc(text) && heredocs.len() == 1;
        if only_marker && first.content.starts_with("#!") {
            let path = format!("/dev/pipes/{}", first.name);
            script_file = Some(ScriptFile {
                path: path.clone(),
                content: first.content.clone(),
            });
            argv = vec![path];
        } else if only_marker {
            // The body is the script, run by the shell.
            argv = argv_of(&CommandForm::Shell(first.content.clone()), &ctx.shell);
        } else {
            // Give the shell the whole heredoc text to interpret.
            let mut full = text.clone();
            for h in &ins.heredocs {
                full.push('\n');
                full.push_str(&h.content);
                full.push_str(&h.name);
            }
            argv = argv_of(&CommandForm::Shell(full), &ctx.shell);
        }
    }
    // ARGs visible to the process and recorded in history.
    let mut env = Vec::new();
    let mut history_args = Vec::new();
    for (k, v) in &ctx.scope.args {
        let Some(v) = v else { continue };
        let shadow = ctx
            .scope
            .env
            .iter()
            .find(|(ek, _)| ek == k)
            .map(|(_, ev)| ev.clone());
        history_args.push(Var::new(k, shadow.as_deref().unwrap_or(v)));
        if shadow.is_none() {
            env.push(Var::new(k, v));
        }
    }
    for p in crate::scope::PROXY_ARGS {
        if let Some(v) = ctx.opts.build_args.get(*p)
            && !ctx.scope.is_declared(p)
        {
            env.push(Var::new(p, v));
        }
    }
    let mut created_by = String::from("RUN ");
    if !history_args.is_empty() {
        created_by.push_str(&format!("|{} ", history_args.len()));
        for a in &history_args {
            created_by.push_str(&format!("{}={} ", a.key, a.value));
        }
    }
    created_by.push_str(&argv.join(" "));
    created_by.push_str(" # buildkit");
    Some(Instr::Run(Run {
        command: form.clone(),
        heredocs,
        argv,
        script_file,
        mounts,
        network,
        security,
        env,
        history_args,
        created_by,
    }))
}

fn convert_copy(
    ins: &Parsed,
    words: &[crate::parse::SpannedWord],
    ctx: &mut Ctx<'_>,
) -> Option<Instr> {
    let is_add = ins.keyword == Keyword::Add;
    if words.len() < 2 {
        ctx.err(
            "missing-argument",
            format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", ins.keyword.as_str()),
            &ins.args_span,
        );
        return None;
    }
    let mut heredocs = ins.heredocs.iter();
    let mut sources = Vec::new();
    let srcs = &words[..words.len() - 1];
    let mut k = 0;
    while k < srcs.len() {
        let w = &srcs[k];
        k += 1;
        let bare = crate::words::is_bare_marker(&w.text) && k < srcs.len();
        if (bare || crate::words::heredoc_marker(&w.text).is_some())
            && let Some(h) = heredocs.next()
        {
            if bare {
                k += 1; // `<< EOF`: the delimiter is the next word
            }
            let content = if h.expand {
                ctx.run_expand(&h.content, &h.span, true)?.value
            } else {
                h.content.clone()
            };
            sources.push(Source::Heredoc(HeredocFile {
                name: h.name.clone(),
                content,
                expand: h.expand,
            }));
            continue;
        }
        sources.push(Source::Path {
            path: ctx.word(&w.text, &w.span)?,
        });
    }
    let last = &words[words.len() - 1];
    let dest = ctx.word(&last.text, &last.span)?;
    let chown = ctx.flag(ins, "chown").map(|(v, _)| v);
    let chmod = match ctx.flag(ins, "chmod") {
        Some((v, span)) => match parse_chmod(&v) {
            Some(c) => Some(c),
            None => {
                let d = Diag::error(
                    "bad-flag",
                    format!("invalid --chmod value {v:?}"),
                    ctx.src,
                    span,
                )
                .with_help("use an octal mode like 0755 or a symbolic one like u+x,g-w");
                ctx.diags.push(d);
                return None;
            }
        },
        None => None,
    };
    let mut exclude = Vec::new();
    for f in ins.flags.iter().filter(|f| f.name == "exclude") {
        exclude.push(ctx.word(f.value.as_deref().unwrap_or_default(), &f.span)?);
    }
    let link = Ctx::bool_flag(ins, "link").unwrap_or(false);
    if is_add {
        let checksum = match ctx.flag(ins, "checksum") {
            Some((v, span)) => {
                let remote = sources.len() == 1
                    && matches!(&sources[0], Source::Path { path } if is_remote(path));
                if !remote {
                    ctx.err(
                        "bad-flag",
                        "checksum can only be used with a single HTTP(S) or git source",
                        &span,
                    );
                    return None;
                }
                if !valid_digest(&v) {
                    let d =
                        Diag::error("bad-flag", format!("invalid checksum {v:?}"), ctx.src, span)
                            .with_help("use algorithm:hex, e.g. sha256:<64 hex digits>");
                    ctx.diags.push(d);
                    return None;
                }
                Some(v)
            }
            None => None,
        };
        return Some(Instr::Add(Add {
            sources,
            dest,
            chown,
            chmod,
            link,
            checksum,
            keep_git_dir: Ctx::bool_flag(ins, "keep-git-dir").unwrap_or(false),
            unpack: Ctx::bool_flag(ins, "unpack"),
            exclude,
        }));
    }
    let from = match ctx.flag(ins, "from") {
        Some((v, span)) => Some(ctx.resolve_from(&v, &span)?),
        None => None,
    };
    Some(Instr::Copy(Copy {
        sources,
        dest,
        from,
        chown,
        chmod,
        link,
        parents: Ctx::bool_flag(ins, "parents").unwrap_or(false),
        exclude,
    }))
}

fn is_remote(p: &str) -> bool {
    p.starts_with("http://")
        || p.starts_with("https://")
        || p.starts_with("git@")
        || p.starts_with("git://")
        || p.contains(".git#")
        || p.ends_with(".git")
}

fn valid_digest(v: &str) -> bool {
    let Some((alg, hex)) = v.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Octal (`755`, `0644`) or symbolic (`u+x,g-w,o=r`) modes.
pub fn parse_chmod(v: &str) -> Option<Chmod> {
    if !v.is_empty() && v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        let n = u32::from_str_radix(v, 8).ok()?;
        return (n <= 0o7777).then_some(Chmod::Octal(n));
    }
    let clause = |c: &str| -> bool {
        let who_len = c.find(|ch: char| !"ugoa".contains(ch)).unwrap_or(c.len());
        let mut rest = &c[who_len..];
        if rest.is_empty() {
            return false;
        }
        while !rest.is_empty() {
            let Some(op) = rest.chars().next().filter(|ch| "+-=".contains(*ch)) else {
                return false;
            };
            rest = &rest[op.len_utf8()..];
            let perm_len = rest
                .find(|ch: char| !"rwxXstugo".contains(ch))
                .unwrap_or(rest.len());
            rest = &rest[perm_len..];
        }
        true
    };
    (!v.is_empty() && v.split(',').all(clause)).then(|| Chmod::Symbolic(v.to_string()))
}

fn convert_healthcheck(
    ins: &Parsed,
    cmd: Option<&CommandForm>,
    ctx: &mut Ctx<'_>,
) -> Option<Instr> {
    let test = match cmd {
        None => vec!["NONE".to_string()],
        Some(CommandForm::Exec(v)) => std::iter::once("CMD".to_string())
            .chain(v.iter().cloned())
            .collect(),
        Some(CommandForm::Shell(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
    };
    let mut durations = [None; 4];
    for (i, name) in ["interval", "timeout", "start-period", "start-interval"]
        .iter()
        .enumerate()
    {
        let Some(f) = ins.flag(name) else { continue };
        let v = f.value.clone().unwrap_or_default();
        match parse_duration(&v) {
            Some(0) => {}
            Some(ns) if ns < 1_000_000 => {
                ctx.err(
                    "bad-flag",
                    format!("--{name} cannot be less than 1ms"),
                    &f.span,
                );
                return None;
            }
            Some(ns) => durations[i] = Some(ns),
            None => {
                let d = Diag::error(
                    "bad-flag",
                    format!("invalid duration {v:?} for --{name}"),
                    ctx.src,
                    f.span.clone(),
                )
                .with_help("use Go duration syntax, e.g. 30s, 1m30s, 500ms");
                ctx.diags.push(d);
                return None;
            }
        }
    }
    let retries = match ins.flag("retries") {
        Some(f) => match f.value.as_deref().unwrap_or_default().parse::<i64>() {
            Ok(n) if n < 0 => {
                ctx.err("bad-flag", "--retries cannot be negative", &f.span);
                return None;
            }
            Ok(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(_) => {
                ctx.err("bad-flag", "--retries must be an integer", &f.span);
                return None;
            }
        },
        None => None,
    };
    Some(Instr::Healthcheck(Healthcheck {
        test,
        interval_ns: durations[0],
        timeout_ns: durations[1],
        start_period_ns: durations[2],
        start_interval_ns: durations[3],
        retries,
    }))
}

/// Go `time.ParseDuration` (non-negative), in nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mul = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * mul;
    }
    (total < u64::MAX as f64).then_some(total as u64)
}

/// EXPOSE spec: `port[-end][/proto]`, optionally `ip:` prefixed (warned).
/// Returns the individual ports (`80/tcp`) and a lint rule to report.
fn parse_port(spec: &str) -> Result<(Vec<String>, Option<&'static str>), String> {
    let mut warn = None;
    let (mut port, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto),
        None => (spec, "tcp"),
    };
    if proto != proto.to_ascii_lowercase() {
        warn = Some("ExposeProtoCasing");
    }
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid proto {proto:?} in EXPOSE {spec} (use tcp, udp or sctp)"
        ));
    }
    if let Some((_, p)) = port.rsplit_once(':') {
        warn = Some("ExposeInvalidFormat");
        port = p;
    }
    let (a, b) = port.split_once('-').unwrap_or((port, port));
    let parse = |x: &str| {
        x.parse::<u16>()
            .map_err(|_| format!("invalid port {x:?} in EXPOSE {spec}"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b < a {
        return Err(format!("invalid port range {spec}: end is before start"));
    }
    Ok(((a..=b).map(|p| format!("{p}/{proto}")).collect(), warn))
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let u = s.to_ascii_uppercase();
    let name = u.strip_prefix("SIG").unwrap_or(&u);
    if SIGNALS.contains(&name) {
        return true;
    }
    for base in ["RTMIN", "RTMAX"] {
        if let Some(r) = name.strip_prefix(base) {
            return r.is_empty()
                || r[1..].parse::<u32>().is_ok() && (r.starts_with('+') || r.starts_with('-'));
        }
    }
    false
}

/// Cleans an absolute path like Go's `path.Clean`.
pub(crate) fn clean_abs(p: &str) -> String {
    kiln_image::clean_path::abs_in_root(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn chmods() {
        assert_eq!(parse_chmod("755"), Some(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("0644"), Some(Chmod::Octal(0o644)));
        assert_eq!(
            parse_chmod("u+x,g-w"),
            Some(Chmod::Symbolic("u+x,g-w".into()))
        );
        assert_eq!(parse_chmod("a=rX"), Some(Chmod::Symbolic("a=rX".into())));
        assert_eq!(parse_chmod("+x"), Some(Chmod::Symbolic("+x".into())));
        assert_eq!(parse_chmod("999"), None);
        assert_eq!(parse_chmod("u"), None);
        assert_eq!(parse_chmod("rwx"), None);
        assert_eq!(parse_chmod("77777"), None);
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").unwrap().0, ["80/tcp"]);
        assert_eq!(parse_port("53/udp").unwrap().0, ["53/udp"]);
        assert_eq!(
            parse_port("8000-8002/tcp").unwrap().0,
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(parse_port("80/TCP").unwrap().1, Some("ExposeProtoCasing"));
        assert_eq!(
            parse_port("127.0.0.1:80").unwrap(),
            (vec!["80/tcp".to_string()], Some("ExposeInvalidFormat"))
        );
        assert!(parse_port("http").is_err());
        assert!(parse_port("80/icmp").is_err());
        assert!(parse_port("90-80").is_err());
    }

    #[test]
    fn signals_and_paths() {
        assert!(
            valid_signal("SIGTERM")
                && valid_signal("term")
                && valid_signal("9")
                && valid_signal("SIGRTMIN+3")
        );
        assert!(!valid_signal("SIGFOO") && !valid_signal("0") && !valid_signal("RTMIN3"));
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_abs("/../x"), "/x");
    }
}
