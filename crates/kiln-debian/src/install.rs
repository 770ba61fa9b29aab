//! Locked packages into layers: one layer per package (its files, its
//! `status.d/<name>` record as distroless writes it, `info/<name>.list`
//! and `.md5sums`), then one constant layer with an empty
//! `/var/lib/dpkg/status`. dpkg itself reads each package's record from
//! `updates/<number>` — its journal, which every dpkg reader (dpkg-query
//! included) applies on top of `status` — so no file lists all packages
//! and a package's layer depends on nothing but the package (and
//! `SOURCE_DATE_EPOCH`): changing one package changes exactly its layer.
//!
//! Maintainer scripts are not run. One effect is recreated because images
//! need it: `ca-certificates`' bundle `/etc/ssl/certs/ca-certificates.crt`
//! (its postinst runs `update-ca-certificates`), made from every
//! certificate the package ships, as that script does by default.

use std::collections::BTreeSet;
use std::path::Path;

use kiln_image::config::History;
use kiln_image::layer::{Entry, EntryKind, FileSource, LayerOptions, write_entries_layer};
use kiln_image::media::{Compression, Format};
use kiln_image::mutate::NewLayer;
use kiln_image::{Descriptor, Store};

use crate::DebianError;
use crate::deb::{self, Unpacked};
use crate::fetch::Fetcher;
use crate::lock::Lock;

/// The layers of a lock, in order, and warnings for the user.
pub struct Installed {
    pub layers: Vec<(NewLayer, History)>,
    /// How many package layers came from the memo, not made anew.
    pub cached: usize,
    pub warnings: Vec<String>,
}

const DPKG: &str = "var/lib/dpkg";
const DPKG_DIRS: [&str; 3] = [
    "var/lib/dpkg/info",
    "var/lib/dpkg/status.d",
    "var/lib/dpkg/updates",
];

/// A package's file name in dpkg's journal (`updates/`): digits only, all
/// of one length (dpkg refuses mixed lengths), from the name alone.
fn journal_name(package: &str) -> String {
    let h = crate::sha256_hex(package.as_bytes());
    let n = u64::from_str_radix(&h[..15], 16).unwrap_or(0);
    format!("{:010}", n % 10_000_000_000)
}

/// Downloads (or takes from the cache) every package of `lock`, checks its
/// hash, and writes its layer into `store`. `epoch` is
/// `SOURCE_DATE_EPOCH`: generated files get it as their time (0 without),
/// and package files later than it are clamped to it.
pub fn install(
    store: &Store,
    fetcher: &Fetcher,
    lock: &Lock,
    epoch: Option<i64>,
    format: Format,
) -> Result<Installed, DebianError> {
    let mut layers = Vec::new();
    let mut cached = 0;
    let mut scripted = Vec::new();
    let mut journal = std::collections::BTreeMap::new();
    let mut packages = lock.packages.clone();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let opts = LayerOptions {
        compression: Compression::None,
        source_date_epoch: epoch,
        ..LayerOptions::default()
    };
    let created = kiln_image::time::rfc3339(epoch.unwrap_or(0));
    for p in &packages {
        let number = journal_name(&p.name);
        if let Some(other) = journal.insert(number.clone(), p.name.clone()) {
            return Err(DebianError::Invalid(format!(
                "packages {other} and {} share a dpkg journal number; rename one",
                p.name
            )));
        }
        let history = History {
            created: Some(created.clone()),
            created_by: Some(format!(
                "kiln debian: {} {} {}",
                p.name, p.version, p.architecture
            )),
            ..History::default()
        };
        // The layer is a function of the .deb's hash (and the epoch and
        // format): made once, then taken from the memo while its blob is
        // in the store.
        let memo_key = crate::sha256_hex(
            format!("{LAYER_RECIPE} {} {epoch:?} {format:?} {number}", p.sha256).as_bytes(),
        );
        let memo_file = fetcher.memo_dir().join(&memo_key);
        if let Some(memo) = read_memo(store, &memo_file) {
            if !memo.scripts.is_empty() {
                scripted.push(p.name.clone());
            }
            layers.push((memo.layer(format), history));
            cached += 1;
            continue;
        }
        let url = p.url(&lock.release.mirror);
        let file = fetcher.get_verified(&url, &p.sha256, p.size)?;
        let bytes = std::fs::read(&file).map_err(|e| io(&file, e))?;
        let what = format!("{} {}", p.name, p.version);
        let mut u = deb::unpack(&bytes, &what)?;
        let (name, version) = (u.control.get("Package"), u.control.get("Version"));
        if name != Some(p.name.as_str()) || version != Some(p.version.as_str()) {
            return Err(DebianError::Invalid(format!(
                "{url}: the .deb says it is {} {}, the lock says {what}",
                name.unwrap_or("?"),
                version.unwrap_or("?")
            )));
        }
        if !u.scripts.is_empty() {
            scripted.push(p.name.clone());
        }
        if p.name == "ca-certificates" {
            add_ca_bundle(&mut u);
        }
        let scripts = u.scripts.clone();
        let entries = with_dpkg_records(u, &p.name, &p.architecture, &number, epoch.unwrap_or(0));
        let layer = write_layer(store, entries, &opts, format)?;
        write_memo(&memo_file, &layer, scripts);
        layers.push((layer, history));
    }
    let mtime = epoch.unwrap_or(0);
    let mut entries: Vec<Entry> = ["var", "var/lib", DPKG]
        .into_iter()
        .chain(DPKG_DIRS)
        .map(|d| Entry::dir(d).with_mtime(mtime))
        .collect();
    for f in ["status", "available"] {
        entries.push(Entry::file_bytes(format!("{DPKG}/{f}"), Vec::new()).with_mtime(mtime));
    }
    let layer = write_layer(store, entries, &opts, format)?;
    layers.push((
        layer,
        History {
            created: Some(created),
            created_by: Some("kiln debian: dpkg database".into()),
            ..History::default()
        },
    ));
    let mut warnings = Vec::new();
    if !scripted.is_empty() {
        warnings.push(format!(
            "maintainer scripts were not run (kiln never runs them; add their effects as [[file]]s if the image needs them): {}",
            scripted.join(", ")
        ));
    }
    Ok(Installed {
        layers,
        cached,
        warnings,
    })
}

/// Bumped whenever the layer a package makes changes for the same .deb.
const LAYER_RECIPE: &str = "kiln-debian-layer-1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Memo {
    digest: kiln_image::Digest,
    size: u64,
    diff_id: kiln_image::Digest,
    scripts: Vec<String>,
}

impl Memo {
    fn layer(&self, format: Format) -> NewLayer {
        NewLayer {
            blob: Descriptor::new(
                format.layer(Compression::None),
                self.digest.clone(),
                self.size,
            ),
            diff_id: self.diff_id.clone(),
        }
    }
}

fn read_memo(store: &Store, path: &Path) -> Option<Memo> {
    let memo: Memo = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (store.has_blob(&memo.digest) && store.blob_size(&memo.digest).ok()? == memo.size)
        .then_some(memo)
}

/// Best effort: without a memo the next build makes the layer again.
fn write_memo(path: &Path, layer: &NewLayer, scripts: Vec<String>) {
    let memo = Memo {
        digest: layer.blob.digest.clone(),
        size: layer.blob.size,
        diff_id: layer.diff_id.clone(),
        scripts,
    };
    if let Ok(bytes) = serde_json::to_vec(&memo) {
        let _ = kiln_image::store::write_atomic(path, &bytes);
    }
}

fn write_layer(
    store: &Store,
    entries: Vec<Entry>,
    opts: &LayerOptions,
    format: Format,
) -> Result<NewLayer, DebianError> {
    let writer = store
        .blob_writer()
        .map_err(|e| DebianError::Io(e.to_string()))?;
    let (blob, info) = write_entries_layer(entries, opts, writer)
        .map_err(|e| DebianError::Io(format!("writing a layer: {e}")))?;
    blob.commit(Some(&info.digest))
        .map_err(|e| DebianError::Io(e.to_string()))?;
    Ok(NewLayer {
        blob: Descriptor::new(format.layer(info.compression), info.digest, info.size),
        diff_id: info.diff_id,
    })
}

/// The package's paragraph as dpkg's `status` file holds it.
fn status_record(u: &Unpacked) -> String {
    let mut p = u.control.clone();
    let at = p
        .fields
        .iter()
        .position(|(k, _)| k == "Package")
        .map_or(0, |i| i + 1);
    p.fields
        .insert(at, ("Status".into(), "install ok installed".into()));
    p.to_text()
}

/// The package's entries plus its dpkg database records (distroless'
/// `status.d/<name>`, and `info/<name>.list` / `.md5sums` as dpkg keeps).
fn with_dpkg_records(u: Unpacked, name: &str, arch: &str, journal: &str, mtime: i64) -> Vec<Entry> {
    // Multi-Arch: same packages are `name:arch` in dpkg's info directory.
    let info_name = if u.control.get("Multi-Arch") == Some("same") {
        format!("{name}:{arch}")
    } else {
        name.to_string()
    };
    let mut list = String::from("/.\n");
    for e in &u.entries {
        list.push('/');
        list.push_str(&e.path.to_string_lossy());
        list.push('\n');
    }
    let record = status_record(&u);
    let mut entries = u.entries;
    let have: BTreeSet<String> = entries
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    for d in ["var", "var/lib", DPKG].into_iter().chain(DPKG_DIRS) {
        if !have.contains(d) {
            entries.push(Entry::dir(d).with_mtime(mtime));
        }
    }
    let mut add = |path: String, bytes: Vec<u8>| {
        entries.push(Entry::file_bytes(path, bytes).with_mtime(mtime));
    };
    add(
        format!("{DPKG}/updates/{journal}"),
        record.clone().into_bytes(),
    );
    add(format!("{DPKG}/status.d/{name}"), record.into_bytes());
    add(format!("{DPKG}/info/{info_name}.list"), list.into_bytes());
    if let Some(m) = u.md5sums {
        add(format!("{DPKG}/info/{info_name}.md5sums"), m);
    }
    if let Some(c) = u.conffiles {
        add(format!("{DPKG}/info/{info_name}.conffiles"), c);
    }
    entries
}

/// `/etc/ssl/certs/ca-certificates.crt`: every `.crt` under
/// `/usr/share/ca-certificates`, in path order.
fn add_ca_bundle(u: &mut Unpacked) {
    let mut certs: Vec<(&Path, &[u8])> = u
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File {
                source: FileSource::Bytes(b),
                ..
            } if e.path.starts_with("usr/share/ca-certificates")
                && e.path.extension().is_some_and(|x| x == "crt") =>
            {
                Some((e.path.as_path(), b.as_slice()))
            }
            _ => None,
        })
        .collect();
    certs.sort();
    let mut bundle = Vec::new();
    for (_, c) in certs {
        bundle.extend_from_slice(c);
        if !c.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    let path = "etc/ssl/certs/ca-certificates.crt";
    u.entries.retain(|e| e.path.as_os_str() != path);
    let have: BTreeSet<String> = u
        .entries
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    for d in ["etc", "etc/ssl", "etc/ssl/certs"] {
        if !have.contains(d) {
            u.entries.push(Entry::dir(d));
        }
    }
    u.entries.push(Entry::file_bytes(path, bundle));
}

fn io(path: &Path, e: std::io::Error) -> DebianError {
    DebianError::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::{make_deb_with, raw};
    use crate::lock::{LockedPackage, LockedRelease};

    /// A lock over a `file://` mirror holding `debs` (name, version, body).
    fn mirror(dir: &Path, debs: &[(&str, &str, &str)]) -> Lock {
        let mut packages = Vec::new();
        for (name, version, body) in debs {
            let ctl = format!("Package: {name}\nVersion: {version}\nArchitecture: all\n");
            let deb = make_deb_with(&ctl, |b| {
                raw(b, "./usr/", tar::EntryType::Directory, "", b"");
                raw(
                    b,
                    &format!("./usr/{name}"),
                    tar::EntryType::Regular,
                    "",
                    body.as_bytes(),
                );
            });
            let path = format!("pool/{name}_{version}.deb");
            std::fs::create_dir_all(dir.join("pool")).unwrap();
            std::fs::write(dir.join(&path), &deb).unwrap();
            packages.push(LockedPackage {
                name: name.to_string(),
                version: version.to_string(),
                architecture: "all".into(),
                size: deb.len() as u64,
                sha256: crate::sha256_hex(&deb),
                path,
                only: Vec::new(),
            });
        }
        Lock {
            version: 1,
            release: LockedRelease {
                mirror: format!("file://{}", dir.display()),
                suite: "test".into(),
                url: String::new(),
                sha256: String::new(),
                signer: String::new(),
                date: String::new(),
                requested: Vec::new(),
                essential: false,
                excluded: Vec::new(),
                architectures: Vec::new(),
            },
            packages,
        }
    }

    fn layer_digests(dir: &Path, lock: &Lock) -> Vec<String> {
        let store = Store::open(dir.join("store")).unwrap();
        let fetcher = Fetcher::new(&dir.join("cache")).unwrap();
        let installed = install(&store, &fetcher, lock, None, Format::Oci).unwrap();
        installed
            .layers
            .iter()
            .map(|(l, _)| l.diff_id.to_string())
            .collect()
    }

    #[test]
    fn one_changed_package_changes_only_its_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let one = mirror(
            &tmp.path().join("m1"),
            &[("a", "1", "a1"), ("b", "1", "b1")],
        );
        let two = mirror(
            &tmp.path().join("m2"),
            &[("a", "1", "a1"), ("b", "2", "b2")],
        );
        let l1 = layer_digests(&tmp.path().join("s1"), &one);
        let l2 = layer_digests(&tmp.path().join("s2"), &two);
        assert_eq!(l1.len(), 3, "a, b and the dpkg database");
        assert_eq!(l1[0], l2[0], "a's layer");
        assert_ne!(l1[1], l2[1], "b's layer");
        assert_eq!(l1[2], l2[2], "the dpkg database layer");
    }

    #[test]
    fn a_deb_that_does_not_match_the_lock_is_refused_and_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let mut lock = mirror(&tmp.path().join("m"), &[("a", "1", "a1")]);
        lock.packages[0].sha256 = "0".repeat(64);
        let store = Store::open(tmp.path().join("store")).unwrap();
        let cache = tmp.path().join("cache");
        let fetcher = Fetcher::new(&cache).unwrap();
        let err = install(&store, &fetcher, &lock, None, Format::Oci)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("SHA-256 mismatch") && err.contains("a_1.deb"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    }

    #[test]
    fn journal_names_are_digits_of_one_length() {
        for n in ["libc6", "a", "python3.11-minimal"] {
            let j = journal_name(n);
            assert_eq!(j.len(), 10);
            assert!(j.bytes().all(|b| b.is_ascii_digit()));
        }
        assert_ne!(journal_name("a"), journal_name("b"));
    }
}
