//! Where registry credentials come from and where `login` puts them:
//! podman's `auth.json` (`$REGISTRY_AUTH_FILE`, then
//! `$XDG_RUNTIME_DIR/containers/auth.json`) and Docker's `config.json`
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) with its
//! `auths`, `credHelpers` and `credsStore` (`docker-credential-<name>`).
//!
//! It only reads and writes credentials; it never sends them anywhere.
//! Unknown fields of config.json are kept when writing it back.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};

/// What we present to a registry or its token server.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An identity (refresh) token, traded at the token server with
    /// `grant_type=refresh_token`.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, ***)")
            }
        }
    }
}

/// The credential files kiln consults, in order, and the one it writes.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    /// podman-style files (auths only), first match wins.
    pub auth_json: Vec<PathBuf>,
    /// Docker's config.json: read after the podman files, written by login.
    pub docker_config: PathBuf,
}

impl CredentialFiles {
    pub fn from_env() -> CredentialFiles {
        let mut auth_json = Vec::new();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
            auth_json.push(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
            auth_json.push(PathBuf::from(p).join("containers/auth.json"));
        }
        let docker_config = match std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            Some(d) => PathBuf::from(d).join("config.json"),
            None => {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
                PathBuf::from(home).join(".docker/config.json")
            }
        };
        CredentialFiles {
            auth_json,
            docker_config,
        }
    }

    /// Credentials for a registry host (as written in references:
    /// `docker.io`, `localhost:5000`), or `None` for anonymous access.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        for p in &self.auth_json {
            if let Some(doc) = read_json(p)?
                && let Some(c) = from_auths(&doc, registry)?
            {
                return Ok(Some(c));
            }
        }
        let Some(doc) = read_json(&self.docker_config)? else {
            return Ok(None);
        };
        if let Some(helper) = helper_for(&doc, registry, true) {
            return helper_get(&helper, &server_url(registry));
        }
        if let Some(c) = from_auths(&doc, registry)? {
            return Ok(Some(c));
        }
        if let Some(helper) = doc.get("credsStore").and_then(Value::as_str) {
            return helper_get(helper, &server_url(registry));
        }
        Ok(None)
    }

    /// Saves credentials for `registry` (after `login` checked them): with
    /// the configured helper if there is one, else in config.json's `auths`.
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let mut doc = read_json(&self.docker_config)?.unwrap_or_else(|| Value::Object(Map::new()));
        if let Some(helper) = helper_for(&doc, registry, false) {
            let (user, secret) = match creds {
                Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
                Credentials::IdentityToken { token, .. } => ("<token>", token.as_str()),
            };
            let input = serde_json::json!({"ServerURL": server_url(registry), "Username": user, "Secret": secret});
            run_helper(&helper, "store", input.to_string().as_bytes())?;
            return Ok(());
        }
        let entry = match creds {
            Credentials::Basic { username, password } => {
                serde_json::json!({"auth": B64.encode(format!("{username}:{password}"))})
            }
            Credentials::IdentityToken { username, token } => {
                serde_json::json!({"auth": B64.encode(format!("{username}:")), "identitytoken": token})
            }
        };
        let obj = doc
            .as_object_mut()
            .ok_or_else(|| bad(&self.docker_config, "not a JSON object"))?;
        let auths = obj
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| bad(&self.docker_config, "\"auths\" is not an object"))?;
        auths.insert(config_key(registry), entry);
        write_private(&self.docker_config, &doc)
    }

    /// Forgets `registry`'s credentials; `false` when there were none.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let Some(mut doc) = read_json(&self.docker_config)? else {
            return Ok(false);
        };
        if let Some(helper) = helper_for(&doc, registry, false) {
            run_helper(&helper, "erase", server_url(registry).as_bytes())?;
            return Ok(true);
        }
        let mut removed = false;
        if let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) {
            for k in candidate_keys(registry) {
                removed |= auths.remove(&k).is_some();
            }
        }
        if removed {
            write_private(&self.docker_config, &doc)?;
        }
        Ok(removed)
    }
}

/// Docker Hub's credentials live under its v1 URL, for historical reasons.
fn config_key(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".into()
    } else {
        registry.into()
    }
}

fn server_url(registry: &str) -> String {
    config_key(registry)
}

fn candidate_keys(registry: &str) -> Vec<String> {
    let mut v = vec![
        config_key(registry),
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" {
        v.extend(["index.docker.io".into(), "registry-1.docker.io".into()]);
    }
    v
}

fn bad(path: &Path, why: &str) -> RegistryError {
    RegistryError::Credentials(format!("{}: {why}", path.display()))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| bad(path, &format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::io(format!("read {}", path.display()))(e)),
    }
}

/// Entries in `auths` may be keyed by host or by URL (`https://host/v1/`).
fn from_auths(doc: &Value, registry: &str) -> Result<Option<Credentials>> {
    let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    let entry = candidate_keys(registry)
        .into_iter()
        .find_map(|k| auths.get(&k))
        .or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalize_key(k) == registry)
                .map(|(_, v)| v)
        });
    let Some(entry) = entry else {
        return Ok(None);
    };
    let (mut username, mut password) = (String::new(), String::new());
    if let Some(a) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let raw = B64.decode(a.trim()).map_err(|_| {
            RegistryError::Credentials(format!("{registry}: \"auth\" is not base64"))
        })?;
        let s = String::from_utf8(raw).map_err(|_| {
            RegistryError::Credentials(format!("{registry}: \"auth\" is not UTF-8"))
        })?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            RegistryError::Credentials(format!("{registry}: \"auth\" is not user:password"))
        })?;
        (username, password) = (u.to_string(), p.to_string());
    }
    if let Some(t) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Credentials::IdentityToken {
            username,
            token: t.to_string(),
        }));
    }
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::Basic { username, password }))
}

fn normalize_key(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k);
    if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    }
}

fn helper_for(doc: &Value, registry: &str, _reading: bool) -> Option<String> {
    let helpers = doc.get("credHelpers").and_then(Value::as_object);
    if let Some(h) =
        helpers.and_then(|h| candidate_keys(registry).into_iter().find_map(|k| h.get(&k)))
    {
        return h.as_str().map(str::to_string);
    }
    if !_reading {
        // login/logout go to the store if one is configured, as docker does.
        return doc
            .get("credsStore")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    None
}

fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::Credentials(format!("run {prog}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| RegistryError::Credentials(format!("{prog} {verb}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("{prog} {verb}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Err(RegistryError::Credentials(format!(
            "{prog} {verb}: {}: {msg}",
            out.status
        )));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let out = match run_helper(helper, "get", server.as_bytes()) {
        Ok(o) => o,
        // Helpers report "credentials not found" with a failure status.
        Err(RegistryError::Credentials(m)) if m.contains("not found") => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        username: String,
        secret: String,
    }
    let o: Out = serde_json::from_slice(&out)
        .map_err(|e| RegistryError::Credentials(format!("docker-credential-{helper} get: {e}")))?;
    Ok(Some(if o.username == "<token>" {
        Credentials::IdentityToken {
            username: String::new(),
            token: o.secret,
        }
    } else {
        Credentials::Basic {
            username: o.username,
            password: o.secret,
        }
    }))
}

/// Writes the file with mode 0600 via a temp file and rename, so a crash
/// never leaves a half-written config or a moment of world-readable secrets.
fn write_private(path: &Path, doc: &Value) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(RegistryError::io(format!("create {}", dir.display())))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| bad(path, &e.to_string()))?;
    bytes.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RegistryError::io(format!("write {}", path.display()))(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn store_lookup_erase() {
        let dir = tempfile::tempdir().unwrap();
        let files = CredentialFiles {
            auth_json: vec![dir.path().join("auth.json")],
            docker_config: dir.path().join("docker/config.json"),
        };
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::write(&files.docker_config, r#"{"psFormat":"x"}"#).unwrap();
        assert_eq!(files.lookup("r.example:5000").unwrap(), None);
        let c = Credentials::Basic {
            username: "u".into(),
            password: "p:w".into(),
        };
        files.store("r.example:5000", &c).unwrap();
        let mode = std::fs::metadata(&files.docker_config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(files.lookup("r.example:5000").unwrap(), Some(c));
        let doc = read_json(&files.docker_config).unwrap().unwrap();
        assert_eq!(doc["psFormat"], "x", "unknown fields are kept");
        assert!(files.erase("r.example:5000").unwrap());
        assert_eq!(files.lookup("r.example:5000").unwrap(), None);

        // podman's auth.json wins, and URL-style keys are understood.
        std::fs::write(
            dir.path().join("auth.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
                B64.encode("a:b")
            ),
        )
        .unwrap();
        assert_eq!(
            files.lookup("docker.io").unwrap(),
            Some(Credentials::Basic {
                username: "a".into(),
                password: "b".into()
            })
        );
    }
}
