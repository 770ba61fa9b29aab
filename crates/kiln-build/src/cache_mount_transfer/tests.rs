//! Restoring cache mounts: once, never over a local one, and nothing
//! from a hostile or wrong layer.

use super::*;
use crate::progress::{Progress, ProgressMode};
use kiln_image::transport::{self, RawManifest};

/// Blobs served from memory.
struct MemSource(BTreeMap<Digest, Vec<u8>>);

impl ImageSource for MemSource {
    fn top(&self) -> transport::Result<RawManifest> {
        Err(transport::TransportError::Invalid("no manifest".into()))
    }
    fn manifest(&self, d: &Digest) -> transport::Result<RawManifest> {
        Err(transport::TransportError::Invalid(format!("no {d}")))
    }
    fn blob(&self, desc: &Descriptor) -> transport::Result<Box<dyn std::io::Read + Send + '_>> {
        let b = self.0.get(&desc.digest).cloned().unwrap_or_default();
        Ok(Box::new(std::io::Cursor::new(b)))
    }
}

/// One raw ustar entry, with whatever name and link the test wants
/// (tar writers refuse hostile names; an attacker's does not).
fn entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o755);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut t: Vec<u8> = entries.concat();
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// A session whose one import carries `layer` (a plain tar) as the
/// mount named `dl`.
fn session(layer: Vec<u8>) -> CacheMounts {
    let d = Digest::sha256_of(&layer);
    let mount = ImportedMount {
        name: "dl".into(),
        id: "dl".into(),
        target: "/cache".into(),
        remote: Descriptor::new(kiln_image::media::OCI_LAYER, d.clone(), layer.len() as u64),
        diff_id: d.clone(),
        size: layer.len() as u64,
        bytes: 5,
        mode: 0o750,
        uid: 0,
        gid: 0,
    };
    let source = MemSource([(d, layer)].into_iter().collect());
    CacheMounts::new(vec![ImportedMounts::new(
        "mem".into(),
        vec![mount],
        Some(Box::new(source)),
        false,
    )])
}

fn used() -> Vec<RunCacheMount> {
    vec![RunCacheMount {
        name: "dl".into(),
        id: "dl".into(),
        target: "/cache".into(),
    }]
}

fn restore(store: &Store, mounts: &CacheMounts) {
    let progress = Progress::new(ProgressMode::Quiet, Box::new(std::io::sink()));
    let step = progress.start("RUN");
    mounts.restore(store, &used(), &step);
    step.done();
}

#[test]
fn a_mount_is_restored_once_and_never_over_a_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let layer = tar(&[
        entry("sub/", b'5', "", b""),
        entry("sub/f", b'0', "", b"hello"),
    ]);
    let mounts = session(layer.clone());
    restore(&store, &mounts);
    let data = CacheMount::open(&store, "dl").unwrap().data();
    assert_eq!(fs::read(data.join("sub/f")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(mounts.restored().len(), 1);
    assert!(mounts.take_warnings().is_empty());

    // A local cache with files in it is kept, in a later build.
    fs::write(data.join("sub/f"), b"local").unwrap();
    let again = session(layer);
    restore(&store, &again);
    assert_eq!(fs::read(data.join("sub/f")).unwrap(), b"local");
    assert!(again.restored().is_empty());
}

#[test]
fn a_hostile_mount_layer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let to_outside = outside.display().to_string();
    let cases = [
        // Climbing out by name.
        tar(&[entry("../../../../escape", b'0', "", b"x")]),
        // Through an absolute symlink, then a file under it.
        tar(&[
            entry("abs", b'2', &to_outside, b""),
            entry("abs/escape", b'0', "", b"x"),
        ]),
        // Through a relative one that climbs.
        tar(&[
            entry("up", b'2', "../../../../../../..", b""),
            entry(&format!("up{to_outside}/escape"), b'0', "", b"x"),
        ]),
        // A hard link to a host file.
        tar(&[entry("passwd", b'1', "/etc/passwd", b"")]),
    ];
    for (i, layer) in cases.into_iter().enumerate() {
        let mounts = session(layer);
        restore(&store, &mounts);
        assert!(!outside.join("escape").exists(), "case {i}");
        assert!(!dir.path().join("escape").exists(), "case {i}");
        let cache = CacheMount::open(&store, "dl").unwrap();
        // Either refused whole (nothing in place, nothing left over) or
        // confined to the mount.
        let left: Vec<_> = fs::read_dir(cache.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("restore-"))
            .collect();
        assert!(left.is_empty(), "case {i}: {left:?}");
        if mounts.restored().is_empty() {
            assert!(!cache.data().exists(), "case {i}");
            assert_eq!(mounts.take_warnings().len(), 1, "case {i}");
        }
        let _ = fs::remove_dir_all(cache.data());
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn a_blob_that_is_not_what_the_cache_says_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let good = tar(&[entry("f", b'0', "", b"hello")]);
    let mounts = session(good.clone());
    // Served bytes differ from the digest the cache names.
    let mut source = BTreeMap::new();
    source.insert(
        Digest::sha256_of(&good),
        tar(&[entry("f", b'0', "", b"evil!")]),
    );
    let mut imports = mounts.imports;
    imports[0].source = Some(Box::new(MemSource(source)));
    let mounts = CacheMounts::new(imports);
    restore(&store, &mounts);
    assert!(!CacheMount::open(&store, "dl").unwrap().data().exists());
    let w = mounts.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("--cache-from mem: cache mount dl (/cache): "),
        "{w:?}"
    );
}

#[test]
fn sizes_read_as_progress_says_them() {
    assert_eq!(human_bytes(999), "999 B");
    assert_eq!(human_bytes(12_345_678), "12.3 MB");
    assert_eq!(human_bytes(1 << 30), "1.1 GB");
}
