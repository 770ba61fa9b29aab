//! `kiln dockerfile check|print`: run the pure Dockerfile frontend on a
//! file (or stdin) and show diagnostics or the resolved build as JSON.
//!
//! `print` writes one JSON object (shape version 1):
//! `{"version":1, "file", "directives":{syntax,escape,check},
//!   "target":<stage index>, "global_args":[{key,value}],
//!   "stages":[{index,name,base:{kind,...},platform,dependencies,
//!              instructions:[{instruction:"RUN"|..., ...fields, original,
//!              span:{start,end}, line}], env, workdir, ...}],
//!   "warnings":[{severity,code,message,file,line,column,span,help}],
//!   "unused_build_args":[...], "source_date_epoch"}`.
//! Stages are only those the target needs, in build order.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use kiln_dockerfile::{Diag, ResolveOptions};

/// Dockerfile subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DockerfileCmd {
    /// Print errors and lint warnings; exit 1 if there are errors.
    Check(Common),
    /// Print the resolved stages and expanded instructions as JSON.
    Print(Common),
}

/// Options shared by both subcommands.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Dockerfile path, or `-` for stdin.
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: String,
    /// Build argument KEY=VALUE (KEY alone takes it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Target stage (default: the last one).
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform, e.g. linux/arm64.
    #[arg(long)]
    pub platform: Option<String>,
    /// Named build context NAME (or NAME=anything; only the name matters here).
    #[arg(long = "build-context", value_name = "NAME[=SOURCE]")]
    pub build_contexts: Vec<String>,
}

/// Runs a subcommand; returns the process exit code.
pub fn run(cmd: DockerfileCmd) -> anyhow::Result<i32> {
    match cmd {
        DockerfileCmd::Check(c) => check(&c),
        DockerfileCmd::Print(c) => print(&c),
    }
}

fn read(file: &str) -> anyhow::Result<(String, String)> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading Dockerfile from stdin")?;
        return Ok(("<stdin>".into(), s));
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    Ok((file.to_string(), text))
}

fn options(c: &Common) -> anyhow::Result<ResolveOptions> {
    let mut o = ResolveOptions::default();
    let mut args = BTreeMap::new();
    for a in &c.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    args.insert(a.clone(), v);
                }
            }
        }
    }
    o.build_args = args;
    o.target = c.target.clone();
    if let Some(p) = &c.platform {
        o.target_platform = p.parse().map_err(anyhow::Error::msg)?;
    }
    for bc in &c.build_contexts {
        let name = bc.split_once('=').map_or(bc.as_str(), |(n, _)| n);
        if name.is_empty() {
            bail!("--build-context needs a name");
        }
        o.named_contexts.insert(name.to_string());
    }
    Ok(o)
}

fn render(diags: &[Diag]) {
    let theme = if std::io::stderr().is_terminal() {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    // OSC 8 links are escape sequences too: only for a terminal.
    let handler = miette::GraphicalReportHandler::new_themed(theme)
        .with_links(std::io::stderr().is_terminal());
    for d in diags {
        let mut out = String::new();
        if handler.render_report(&mut out, d).is_err() {
            out = format!("{d}\n");
        }
        eprint!("{out}");
    }
}

fn check(c: &Common) -> anyhow::Result<i32> {
    let (name, text) = read(&c.file)?;
    let opts = options(c)?;
    // Keep going past broken instructions so every problem is reported.
    let (df, mut diags) = kiln_dockerfile::parse::parse_partial(&name, &text);
    let has_stage = df
        .instructions
        .iter()
        .any(|i| i.keyword == kiln_dockerfile::parse::Keyword::From);
    if has_stage {
        match kiln_dockerfile::resolve(&df, &opts) {
            Ok(r) => diags.extend(r.warnings),
            Err(e) => diags.extend(e.items),
        }
    } else {
        diags.extend(df.warnings.iter().cloned());
    }
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags.dedup();
    render(&diags);
    summary(&diags);
    Ok(i32::from(diags.iter().any(Diag::is_error)))
}

fn summary(diags: &[Diag]) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    eprintln!("Check complete: {errors} error(s), {warnings} warning(s)");
}

#[derive(serde::Serialize)]
struct PrintOut<'a> {
    version: u32,
    file: &'a str,
    directives: &'a kiln_dockerfile::parse::Directives,
    #[serde(flatten)]
    build: &'a kiln_dockerfile::ResolvedBuild,
}

fn print(c: &Common) -> anyhow::Result<i32> {
    let (name, text) = read(&c.file)?;
    let opts = options(c)?;
    let df = match kiln_dockerfile::parse(&name, &text) {
        Ok(df) => df,
        Err(e) => {
            render(&e.items);
            return Ok(1);
        }
    };
    match kiln_dockerfile::resolve(&df, &opts) {
        Ok(r) => {
            render(&r.warnings);
            let out = PrintOut {
                version: 1,
                file: &name,
                directives: &df.directives,
                build: &r,
            };
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        Err(e) => {
            render(&e.items);
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(args: &[&str]) -> Common {
        #[derive(clap::Parser)]
        struct T {
            #[command(subcommand)]
            cmd: DockerfileCmd,
        }
        let mut argv = vec!["t", "print"];
        argv.extend_from_slice(args);
        match <T as clap::Parser>::parse_from(argv).cmd {
            DockerfileCmd::Print(c) | DockerfileCmd::Check(c) => c,
        }
    }

    #[test]
    fn options_from_flags() {
        let c = common(&[
            "--build-arg",
            "A=1",
            "--build-arg",
            "B=x=y",
            "--target",
            "t",
            "--platform",
            "linux/arm64",
            "--build-context",
            "ctx=../x",
        ]);
        assert_eq!(c.file, "Dockerfile");
        let o = options(&c).unwrap();
        assert_eq!(o.build_args.get("A").map(String::as_str), Some("1"));
        assert_eq!(o.build_args.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(o.target.as_deref(), Some("t"));
        assert_eq!(o.target_platform.to_string(), "linux/arm64");
        assert!(o.named_contexts.contains("ctx"));
        assert!(options(&common(&["--platform", "bogus"])).is_err());
    }

    #[test]
    fn check_and_print_exit_codes() {
        let dir = std::env::temp_dir().join(format!("kiln-df-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.Dockerfile");
        std::fs::write(&good, "FROM alpine\nCMD [\"sh\"]\n").unwrap();
        let bad = dir.join("bad.Dockerfile");
        std::fs::write(&bad, "FROM alpine\nRUNN x\n").unwrap();
        let f = |p: &std::path::Path| common(&["-f", p.to_str().unwrap()]);
        assert_eq!(check(&f(&good)).unwrap(), 0);
        assert_eq!(check(&f(&bad)).unwrap(), 1);
        assert_eq!(print(&f(&good)).unwrap(), 0);
        assert_eq!(print(&f(&bad)).unwrap(), 1);
        assert!(check(&f(&dir.join("missing"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
