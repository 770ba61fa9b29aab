//! The docker-compatible pieces of `kiln run`'s command line that are
//! plain data: the argv from `--entrypoint` and the image, the environment
//! from `--env-file` and `-e`, `--name`, and the exit code and message of
//! a command that cannot be executed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_image::config::RuntimeConfig;

/// The command to run, as docker composes it: `--entrypoint` (a single
/// executable; `""` clears the image's) replaces the image's entrypoint
/// and drops the image's CMD; a command given after the image replaces
/// CMD.
pub fn argv(rt: &RuntimeConfig, entrypoint: Option<&str>, command: &[String]) -> Vec<String> {
    let entry: Vec<String> = match entrypoint {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
        None => rt.entrypoint.clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !command.is_empty() {
        command.to_vec()
    } else if entrypoint.is_some() {
        Vec::new()
    } else {
        rt.cmd.clone().unwrap_or_default()
    };
    entry.into_iter().chain(cmd).collect()
}

/// The lines of an `--env-file`, by docker's rules: blank lines and lines
/// starting with `#` (after leading spaces) are skipped; `KEY=VALUE` is
/// taken as written (no quotes, no expansion, trailing spaces kept);
/// `KEY` alone takes the caller's value, and is left out when the caller
/// has none.
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("--env-file {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("--env-file {}: not UTF-8", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let where_ = || format!("--env-file {} line {}", path.display(), n + 1);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            bail!("{}: no variable name before '='", where_());
        }
        if key.contains(char::is_whitespace) {
            bail!("{}: variable {key:?} contains whitespace", where_());
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = std::env::var_os(key) {
                    out.push(format!("{key}={}", v.to_string_lossy()));
                }
            }
        }
    }
    Ok(out)
}

/// `-e K=V`, or `-e K` for the caller's value (left out when unset, as
/// docker does).
pub fn env_flag(e: &str) -> Option<String> {
    match e.split_once('=') {
        Some(_) => Some(e.to_string()),
        None => std::env::var_os(e).map(|v| format!("{e}={}", v.to_string_lossy())),
    }
}

/// Sets `kv` in `env`, replacing an earlier value of its key.
pub fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv.split('=').next().unwrap_or_default().to_string();
    env.retain(|x| x.split('=').next() != Some(key.as_str()));
    env.push(kv);
}

/// docker's container name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok || name.len() < 2 || name.len() > 64 {
        bail!("--name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, 2 to 64 characters");
    }
    Ok(())
}

/// docker's exit code and message for a command that did not start: 127
/// when it is not there, 126 when it is there but cannot be executed.
pub fn exec_failure(argv0: &str, err: &std::io::Error) -> (i32, String) {
    use std::io::ErrorKind::{NotADirectory, NotFound, PermissionDenied};
    match err.kind() {
        NotFound | NotADirectory if !argv0.contains('/') => (
            127,
            format!("exec: {argv0:?}: executable file not found in $PATH"),
        ),
        NotFound | NotADirectory => (
            127,
            format!("exec: {argv0:?}: stat {argv0}: no such file or directory"),
        ),
        PermissionDenied => (126, format!("exec: {argv0:?}: permission denied")),
        _ => (126, format!("exec: {argv0:?}: {err}")),
    }
}
