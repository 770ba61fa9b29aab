//! Faults between kiln and a real registry, injected by a TCP proxy:
//! a connection reset and a short body mid-blob (the download resumes with
//! `Range`), 503 and 429 (retried, `Retry-After` honoured), a failed upload
//! chunk (resumed from the registry's offset), and corrupted bytes (a
//! digest-mismatch error, and nothing stored or tagged).

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use std::time::Instant;

use support::proxy::{Fault, Proxy};
use support::{Auth, Registry, TestImage, kiln, kiln_ok};

struct Setup {
    _reg: Registry,
    proxy: Proxy,
    img: TestImage,
    home: tempfile::TempDir,
}

/// A registry holding `app:1` (pushed directly), and a proxy in front.
fn setup() -> Setup {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let img = TestImage::new(&[4 << 20, 200_000], 7);
    let direct = format!("{}/app:1", reg.host());
    img.to_store(&home.path().join("store"), &direct);
    kiln_ok(home.path(), &["push", &direct]);
    let proxy = Proxy::start(reg.port);
    Setup {
        _reg: reg,
        proxy,
        img,
        home,
    }
}

fn layer_path(img: &TestImage) -> String {
    format!("/blobs/{}", kiln_image::Digest::sha256_of(&img.layers[0]))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn reset_and_truncation_mid_blob_resume_with_range() {
    let s = setup();
    let name = format!("{}/app:1", s.proxy.host());
    s.proxy
        .add("GET", &layer_path(&s.img), Fault::ResetAfter(1 << 20), 1);
    s.proxy
        .add("GET", &layer_path(&s.img), Fault::Truncate(2 << 20), 1);
    let fresh = tempfile::tempdir().unwrap();
    let out = kiln(fresh.path(), &["pull", &name, "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 resumes"), "{}", stderr(&out));
    let ranges: Vec<String> = s
        .proxy
        .seen()
        .into_iter()
        .filter(|r| r.path.ends_with(&layer_path(&s.img)))
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    for r in &ranges {
        let start: u64 = r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        assert!(start > 0 && start < 4 << 20, "{r}");
    }
    // Only the missing bytes were fetched again, not the whole layer.
    let err = stderr(&out);
    let down: u64 = err
        .split(", ")
        .find_map(|p| p.strip_suffix(" B down"))
        .unwrap()
        .parse()
        .unwrap();
    let total: u64 =
        s.img.layers.iter().map(|l| l.len() as u64).sum::<u64>() + s.img.config.len() as u64;
    assert_eq!(down, total, "{err}");
    let store = kiln_image::Store::open(fresh.path().join("store")).unwrap();
    assert_eq!(store.resolve(&name).unwrap().digest, s.img.digest());
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn status_503_and_429_are_retried() {
    let s = setup();
    let name = format!("{}/app:1", s.proxy.host());
    s.proxy.add(
        "GET",
        "/manifests/1",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        2,
    );
    s.proxy.add(
        "GET",
        &layer_path(&s.img),
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        1,
    );
    let fresh = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = kiln(fresh.path(), &["pull", &name, "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        t.elapsed().as_secs_f64() >= 1.0,
        "Retry-After: 1 was not honoured"
    );
    assert!(stderr(&out).contains("3 retries"), "{}", stderr(&out));
    let injected = s.proxy.seen().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(injected, 3);

    // Five 503s in a row exhaust the retries: a clear error.
    s.proxy.add(
        "HEAD",
        "/manifests/1",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        5,
    );
    let out = kiln(fresh.path(), &["digest", &name]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
}

#[test]
fn corrupted_blob_is_refused_and_nothing_is_stored() {
    let s = setup();
    let name = format!("{}/app:1", s.proxy.host());
    s.proxy
        .add("GET", &layer_path(&s.img), Fault::Corrupt(1000), 1);
    let fresh = tempfile::tempdir().unwrap();
    let out = kiln(fresh.path(), &["pull", &name]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(err.contains(&format!("pull {name}")), "{err}");
    let store = kiln_image::Store::open(fresh.path().join("store")).unwrap();
    assert!(
        store.images().unwrap().is_empty(),
        "tagged after a bad blob"
    );
    assert!(!store.has_blob(&kiln_image::Digest::sha256_of(&s.img.layers[0])));
    assert_eq!(
        std::fs::read_dir(fresh.path().join("store/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn upload_chunk_failures_resume_from_the_registry_offset() {
    let s = setup();
    let name = format!("{}/pushed:1", s.proxy.host());
    // 1 MiB chunks: the 4 MiB layer goes in four PATCHes.
    s.proxy.add(
        "PATCH",
        "/blobs/uploads/",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        1,
    );
    s.proxy.add(
        "PUT",
        "/manifests/1",
        Fault::Status {
            code: 502,
            retry_after: None,
        },
        1,
    );
    s.proxy.add(
        "HEAD",
        "/blobs/",
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        1,
    );
    let h = s.home.path();
    let src = format!("{}/app:1", s._reg.host());
    let out = std::process::Command::new(support::kiln_bin())
        .args(["push", &src, &name, "-v"])
        .env("KILN_ROOT", h.join("store"))
        .env("HOME", h)
        .env("KILN_CHUNK_MIB", "1")
        .output()
        .unwrap();
    let seen = s.proxy.seen();
    for r in &seen {
        eprintln!(
            "{} {} {:?}",
            r.method,
            &r.path[..r.path.len().min(90)],
            r.fault
        );
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        seen.iter().filter(|r| r.method == "PATCH").count() >= 5,
        "{seen:?}"
    );
    // After the failed PATCH, kiln asked the registry where the upload was.
    assert!(
        seen.iter()
            .any(|r| r.method == "GET" && r.path.contains("/blobs/uploads/")),
        "{seen:?}"
    );
    assert_eq!(support::skopeo_digest(&name), s.img.digest().to_string());
}

#[test]
fn streamed_upload_dropped_midway_resumes_from_the_registry_offset() {
    let s = setup();
    let name = format!("{}/streamed:1", s.proxy.host());
    // The 4 MiB layer goes in one streaming PATCH (the 200 kB one in a PUT).
    // The first PATCH is cut after 1.5 MB: distribution then cancels the
    // upload, so kiln starts the blob over from the source. That PATCH gets
    // a 503 (the registry never saw it): kiln resumes at the registry's
    // offset, replaying from its window.
    s.proxy.add(
        "PATCH",
        "/blobs/uploads/",
        Fault::ResetRequestAfter(1_500_000),
        1,
    );
    s.proxy.add(
        "PATCH",
        "/blobs/uploads/",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        1,
    );
    let h = s.home.path();
    let src = format!("{}/app:1", s._reg.host());
    let out = std::process::Command::new(support::kiln_bin())
        .args(["push", &src, &name, "-v"])
        .env("KILN_ROOT", h.join("store"))
        .env("HOME", h)
        .env_remove("KILN_CHUNK_MIB")
        .output()
        .unwrap();
    let seen = s.proxy.seen();
    assert!(out.status.success(), "{}\n{seen:?}", stderr(&out));
    assert_eq!(
        seen.iter().filter(|r| r.method == "PATCH").count(),
        3,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|r| r.method == "GET" && r.path.contains("/blobs/uploads/"))
            .count()
            >= 2
    );
    assert_eq!(support::skopeo_digest(&name), s.img.digest().to_string());
}
