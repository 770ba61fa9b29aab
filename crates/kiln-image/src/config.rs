//! The image configuration (the "config blob"): runtime defaults, the rootfs
//! diff IDs and the history.
//!
//! This is kiln's own type rather than `oci-spec`'s, because Docker-only
//! fields (Healthcheck, Shell, OnBuild, ArgsEscaped) and fields neither spec
//! knows must survive a read, an edit and a write. Unknown fields land in the
//! `extra` maps and are written back in sorted order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Digest;

/// The whole config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The defaults a container of this image starts with (`config` in the blob).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Docker's HEALTHCHECK. Durations are nanoseconds, as Docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The ordered uncompressed digests of the layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry. `empty_layer` marks entries that added no layer, so
/// that history and layers can be matched up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// An empty config for the host platform, as `FROM scratch` starts.
    pub fn scratch(platform: &crate::Platform) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: Some(RuntimeConfig::default()),
            ..Default::default()
        }
    }

    pub fn runtime(&self) -> &RuntimeConfig {
        static EMPTY: std::sync::OnceLock<RuntimeConfig> = std::sync::OnceLock::new();
        self.config
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(RuntimeConfig::default))
    }

    pub fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        self.config.get_or_insert_with(RuntimeConfig::default)
    }

    pub fn platform(&self) -> crate::Platform {
        crate::Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone().unwrap_or_default(),
            variant: self.variant.clone(),
        }
    }
}

impl RuntimeConfig {
    /// The value of `key` in Env, if set.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.as_ref()?.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key=value` in Env, replacing an earlier value in place, as
    /// Docker does so that the order of first definition is kept.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG: &str = r#"{
      "architecture": "amd64",
      "config": {
        "Hostname": "",
        "User": "app",
        "Env": ["PATH=/usr/bin", "A=1"],
        "Cmd": ["/bin/sh"],
        "ArgsEscaped": true,
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30000000000, "Retries": 3},
        "Shell": ["/bin/bash", "-c"],
        "OnBuild": ["RUN echo hi"],
        "StopSignal": "SIGTERM",
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"b": "2", "a": "1"}
      },
      "container": "abc",
      "container_config": {"Cmd": ["x"]},
      "created": "2024-01-01T00:00:00Z",
      "docker_version": "24.0.0",
      "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh", "empty_layer": true}],
      "os": "linux",
      "rootfs": {"type": "layers", "diff_ids": []}
    }"#;

    #[test]
    fn docker_fields_and_unknown_fields_round_trip() {
        let cfg: ImageConfig = serde_json::from_str(DOCKER_CONFIG).unwrap();
        let rt = cfg.runtime();
        assert_eq!(
            rt.shell.as_deref(),
            Some(&["/bin/bash".to_string(), "-c".into()][..])
        );
        assert_eq!(rt.on_build.as_ref().unwrap()[0], "RUN echo hi");
        assert_eq!(rt.healthcheck.as_ref().unwrap().retries, Some(3));
        assert_eq!(rt.args_escaped, Some(true));
        assert_eq!(rt.extra["Hostname"], "");
        assert_eq!(cfg.extra["docker_version"], "24.0.0");

        let bytes = crate::canonical::to_vec(&cfg).unwrap();
        let again: ImageConfig = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(cfg, again);
        let expected: Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
        let written: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(expected, written);
    }

    #[test]
    fn env_replaces_in_place() {
        let mut rt = RuntimeConfig::default();
        rt.set_env("PATH", "/bin");
        rt.set_env("A", "1");
        rt.set_env("PATH", "/usr/bin");
        assert_eq!(rt.env.as_ref().unwrap(), &["PATH=/usr/bin", "A=1"]);
        assert_eq!(rt.env_var("A"), Some("1"));
        assert_eq!(rt.env_var("B"), None);
    }
}
