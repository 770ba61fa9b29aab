//! `kiln.lock` as a whole: kiln-debian's lock (`version`, `[release]`,
//! `[[package]]`) and, for `[python]`, the pins it answers and each wheel
//! installed (`[python]`, `[[wheel]]`: name, version, file, SHA-256).
//! Either part may be absent.

use kiln_debian::Lock;
use serde::{Deserialize, Serialize};

use super::python::{LockedWheel, PythonLock};
use crate::BuildError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    pub debian: Option<Lock>,
    pub python: Option<PythonPart>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonPart {
    pub python: PythonLock,
    #[serde(default, rename = "wheel")]
    pub wheels: Vec<LockedWheel>,
}

fn bad(e: impl std::fmt::Display) -> BuildError {
    BuildError::Usage(format!("kiln.lock: {e}"))
}

impl LockFile {
    pub fn parse(text: &str) -> Result<LockFile, BuildError> {
        let mut table: toml::Table = text.parse().map_err(bad)?;
        let mut py = toml::Table::new();
        for k in ["python", "wheel"] {
            if let Some(v) = table.remove(k) {
                py.insert(k.into(), v);
            }
        }
        let python = if py.is_empty() {
            None
        } else {
            let part: PythonPart = py.try_into().map_err(bad)?;
            for w in &part.wheels {
                if w.file.contains('/') || !w.file.ends_with(".whl") {
                    return Err(bad(format!("wheel {:?} is not a wheel file name", w.file)));
                }
            }
            Some(part)
        };
        let debian = if table.contains_key("release") || table.contains_key("package") {
            let text = toml::to_string(&table).map_err(bad)?;
            Some(Lock::parse(&text).map_err(|e| BuildError::Usage(e.to_string()))?)
        } else {
            if let Some(k) = table.keys().find(|k| *k != "version") {
                return Err(bad(format!("unknown key {k:?}")));
            }
            None
        };
        Ok(LockFile { debian, python })
    }

    pub fn to_toml(&self) -> String {
        let mut out = match &self.debian {
            Some(l) => l.to_toml(),
            None => "# Written by `kiln lock`.\nversion = 1\n".into(),
        };
        if let Some(p) = &self.python {
            out.push('\n');
            out.push_str(&toml::to_string(p).unwrap_or_default());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_part_round_trips_beside_debian_or_alone() {
        let lock = LockFile {
            debian: None,
            python: Some(PythonPart {
                python: PythonLock {
                    requested: vec!["greeting==1.0".into()],
                },
                wheels: vec![LockedWheel {
                    name: "greeting".into(),
                    version: "1.0".into(),
                    file: "greeting-1.0-py3-none-any.whl".into(),
                    sha256: "ab".repeat(32),
                }],
            }),
        };
        let text = lock.to_toml();
        assert_eq!(LockFile::parse(&text).unwrap(), lock);
        let evil = text.replace("greeting-1.0-py3-none-any.whl", "../x.whl");
        assert!(LockFile::parse(&evil).is_err());
        let typo = format!("{text}\n[pyhton]\n");
        assert!(
            LockFile::parse(&typo)
                .unwrap_err()
                .to_string()
                .contains("pyhton")
        );
    }
}
