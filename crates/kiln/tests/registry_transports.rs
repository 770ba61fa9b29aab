//! `kiln copy` between every pair of transports: docker://, oci:,
//! oci-archive:, docker-archive: and the store. Each copy's result is read
//! back into the store and must have the original's config (image ID) and
//! layers; registry and OCI copies must keep the manifest digest too.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use kiln_image::{AnyManifest, Store};
use support::{Auth, Registry, TestImage, kiln_ok};

#[test]
fn copy_between_every_pair_of_transports() {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = TestImage::new(&[200_000, 30_000], 21);
    let seed = format!("{}/mx/seed:1", reg.host());
    img.to_store(&h.join("store"), &seed);

    let d = h.join("t");
    std::fs::create_dir_all(&d).unwrap();
    // Where a copy into transport `kind` number `n` goes.
    let loc = |kind: &str, n: &str| -> String {
        match kind {
            "docker" => format!("docker://{}/mx/{n}:1", reg.host()),
            "oci" => format!("oci:{}/oci-{n}:t1", d.display()),
            "oci-archive" => format!("oci-archive:{}/{n}.oci.tar:t1", d.display()),
            "docker-archive" => format!("docker-archive:{}/{n}.docker.tar:mx/{n}:1", d.display()),
            "kiln" => format!("kiln:{}/local/{n}:1", reg.host()),
            _ => unreachable!(),
        }
    };
    let kinds = ["docker", "oci", "oci-archive", "docker-archive", "kiln"];
    // One copy of the seed in each transport.
    for k in kinds {
        kiln_ok(
            h,
            &[
                "copy",
                &format!("kiln:{seed}"),
                &loc(k, &format!("src-{k}")),
            ],
        );
    }
    let check = |what: &str, n: usize| {
        let name = format!("{}/check/{n}:1", reg.host());
        kiln_ok(h, &["copy", what, &format!("kiln:{name}")]);
        let store = Store::open(h.join("store")).unwrap();
        let top = store.resolve(&name).unwrap();
        let AnyManifest::Manifest(m) = store.manifest_doc(&top.digest).unwrap() else {
            panic!("{what}: not a manifest")
        };
        assert_eq!(
            m.config.digest,
            kiln_image::Digest::sha256_of(&img.config),
            "{what}"
        );
        let layers: Vec<_> = m.layers.iter().map(|l| l.digest.clone()).collect();
        let want: Vec<_> = img
            .layers
            .iter()
            .map(|l| kiln_image::Digest::sha256_of(l))
            .collect();
        assert_eq!(layers, want, "{what}");
        if !what.starts_with("docker-archive:") {
            assert_eq!(top.digest, img.digest(), "{what}");
        }
    };
    let mut n = 0;
    for from in kinds {
        for to in kinds {
            n += 1;
            let dst = loc(to, &format!("{from}-to-{to}"));
            kiln_ok(h, &["copy", &loc(from, &format!("src-{from}")), &dst]);
            check(&dst, n);
        }
    }
    // What kiln wrote to the registry, skopeo reads with the same digest.
    let pushed = format!("{}/mx/oci-archive-to-docker:1", reg.host());
    assert_eq!(support::skopeo_digest(&pushed), img.digest().to_string());
}
