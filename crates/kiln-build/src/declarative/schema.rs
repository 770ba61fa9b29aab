//! The `kiln.toml` schema. Unknown keys are errors (a typo must not be
//! silently ignored); see the README's "kiln.toml" section for the prose.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    pub image: ImageSection,
    pub debian: Option<DebianSection>,
    pub python: Option<PythonSection>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserEntry>,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupEntry>,
    #[serde(default, rename = "file")]
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// `scratch` or an image reference.
    #[serde(default = "scratch")]
    pub base: String,
    /// A `[[user]]` name (written as its `uid:gid`), or `uid[:gid]`.
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Platforms this file may be built for (`linux/amd64`, …); empty:
    /// any. One build makes one of them (`--platform`, else the host's).
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
}

fn scratch() -> String {
    "scratch".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSection {
    pub suite: String,
    pub packages: Vec<String>,
    /// The mirror root; unset: the one the host's apt sources name.
    pub mirror: Option<String>,
    #[serde(default = "main")]
    pub components: Vec<String>,
    /// A keyring file (binary or armored); unset: the host source's
    /// `Signed-By`, else Debian's archive keyring.
    pub keyring: Option<PathBuf>,
    /// Add every `Essential: yes` package too.
    #[serde(default)]
    pub essential: bool,
    /// Packages dependencies may not pull in: counted as installed, not
    /// installed (e.g. `dpkg`, `mawk`, `debconf` for a distroless image).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Refuse an `InRelease` past its `Valid-Until` (as apt); `false` for
    /// an archive snapshot (snapshot.debian.org), expired by design.
    #[serde(default = "yes")]
    pub check_valid_until: bool,
}

fn yes() -> bool {
    true
}

fn main() -> Vec<String> {
    vec!["main".into()]
}

/// An app's Python dependencies: pinned wheels from a directory in the
/// context, installed as layers before the app's files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonSection {
    /// A requirements file pinning every distribution (`name==version`,
    /// optional `--hash=sha256:`), relative to the context.
    pub requirements: String,
    /// The directory of `.whl` files (pip's `--no-index --find-links`).
    pub wheels: String,
    /// The image's Python as `3.N`; default: from the `python3.N` package
    /// `[debian]` installs.
    pub version: Option<String>,
    /// site-packages in the image; default
    /// `/usr/local/lib/python3.N/dist-packages` (on Debian's `sys.path`,
    /// apart from the directory dpkg owns, as pip on Debian installs).
    pub target: Option<String>,
    /// Scripts go to `PREFIX/bin`, `.data/data` files under `PREFIX`.
    #[serde(default = "usr_local")]
    pub prefix: String,
    /// What a script's `#!python` becomes.
    #[serde(default = "python3")]
    pub interpreter: String,
}

fn usr_local() -> String {
    "/usr/local".into()
}

fn python3() -> String {
    "/usr/bin/python3".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    /// Defaults to `uid`; a group of the user's name is made when no
    /// `[[group]]` has this gid.
    pub gid: Option<u32>,
    pub home: Option<String>,
    #[serde(default = "nologin")]
    pub shell: String,
}

fn nologin() -> String {
    "/sbin/nologin".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the context (the build file's directory by default).
    /// A directory (its contents are copied) or a file.
    pub src: String,
    /// Absolute; a trailing `/` puts a file inside it.
    pub dest: String,
    /// Octal permission bits for files (`"0644"`); directories keep theirs.
    pub mode: Option<String>,
    /// `uid:gid`, a `[[user]]` name, or `name:group`; default `0:0`.
    pub owner: Option<String>,
}

impl BuildFile {
    pub fn parse(text: &str) -> Result<BuildFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_file_parses_and_typos_do_not() {
        let f = BuildFile::parse(
            "[image]\nbase = \"scratch\"\nuser = \"nonroot\"\nentrypoint = [\"/usr/bin/python3\"]\nenv = { LANG = \"C.UTF-8\" }\n\n[debian]\nsuite = \"bookworm\"\npackages = [\"libc6\"]\n\n[[user]]\nname = \"nonroot\"\nuid = 65532\ngid = 65532\nhome = \"/home/nonroot\"\n\n[[file]]\nsrc = \"app/\"\ndest = \"/app/\"\n",
        )
        .unwrap();
        assert_eq!(f.debian.unwrap().components, ["main"]);
        assert_eq!(f.users[0].shell, "/sbin/nologin");
        assert_eq!(f.files[0].dest, "/app/");
        let err =
            BuildFile::parse("[image]\nbase = \"scratch\"\nentrypiont = [\"x\"]\n").unwrap_err();
        assert!(err.contains("entrypiont"), "{err}");
    }
}
