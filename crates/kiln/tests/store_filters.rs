//! `kiln images` and `kiln inspect` as a docker user types them (issue
//! #13, item 9's rest): `--filter reference=` with wildcards (and a
//! pattern as the REPOSITORY argument), `dangling=`, `label=`, `before=`,
//! `since=`; `inspect A B` printing a JSON array; tables whose columns fit
//! their widest cell. Each as root and as kilntest.

#[macro_use]
mod common;

use common::build::*;

/// The busybox base (created 1700000000) and two more images: an older
/// `kiln-test/old:1` labelled tier=old and a newer
/// `example.com/team/new-service:2` labelled tier=new, team=core.
fn setup(who: Who) -> (tempfile::TempDir, KilnBuild) {
    let tmp = scratch("kiln-store-filters-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    for (epoch, name, labels) in [
        ("1600000000", "kiln-test/old:1", "LABEL tier=old"),
        (
            "1800000000",
            "example.com/team/new-service:2",
            "LABEL tier=new team=core",
        ),
    ] {
        let out = k
            .cmd()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["import", busybox_dir().to_str().unwrap(), name])
            .args(["--change", labels])
            .output()
            .unwrap();
        common::assert_success(&out, &format!("import {name}"));
    }
    (tmp, k)
}

/// The `REPOSITORY:TAG` of each listed image, sorted.
fn names(k: &KilnBuild, args: &[&str]) -> Vec<String> {
    let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = k.ok(&a).lines().map(String::from).collect();
    v.sort();
    v
}

both!(images_filters_are_dockers, |who| {
    let (_tmp, k) = setup(who);
    let all = names(&k, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    // reference= is Go's path.Match over the familiar name, with and
    // without the tag; several reference filters are alternatives.
    assert_eq!(
        names(&k, &["--filter", "reference=kiln-test/*"]),
        ["kiln-test/busybox:1", "kiln-test/old:1"]
    );
    assert_eq!(
        names(&k, &["-f", "reference=*/*:1"]),
        ["kiln-test/busybox:1", "kiln-test/old:1"]
    );
    assert_eq!(
        names(
            &k,
            &[
                "-f",
                "reference=kiln-test/old",
                "-f",
                "reference=example.com/*/*"
            ]
        ),
        ["example.com/team/new-service:2", "kiln-test/old:1"]
    );
    // `*` stops at a slash, as docker's.
    assert!(names(&k, &["-f", "reference=*"]).is_empty());
    // A pattern as the REPOSITORY argument is the same filter.
    assert_eq!(names(&k, &["kiln-test/b*"]), ["kiln-test/busybox:1"]);
    // label=KEY and label=KEY=VALUE; several must all hold.
    assert_eq!(
        names(&k, &["-f", "label=tier"]),
        ["example.com/team/new-service:2", "kiln-test/old:1"]
    );
    assert_eq!(names(&k, &["-f", "label=tier=old"]), ["kiln-test/old:1"]);
    assert!(names(&k, &["-f", "label=tier=old", "-f", "label=team"]).is_empty());
    // before= / since= another image's creation.
    assert_eq!(
        names(&k, &["-f", "before=kiln-test/busybox:1"]),
        ["kiln-test/old:1"]
    );
    assert_eq!(
        names(&k, &["-f", "since=kiln-test/busybox:1"]),
        ["example.com/team/new-service:2"]
    );
    // Every listed image has a name: none is dangling, as in docker.
    assert!(names(&k, &["-f", "dangling=true"]).is_empty());
    assert_eq!(names(&k, &["-f", "dangling=false"]), all);
    // -q honours the filters.
    assert_eq!(
        k.ok(&["images", "-q", "-f", "label=team"]).lines().count(),
        1
    );
    // Bad filters are errors naming them.
    for (bad, says) in [
        ("colour=red", "invalid filter 'colour'"),
        ("dangling=maybe", "dangling=maybe"),
        ("before=nosuch:1", "nosuch"),
        ("noequals", "KEY=VALUE"),
    ] {
        let out = k.output(&["images", "--filter", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(err.contains(says), "{bad}: {err}");
    }
});

both!(tables_fit_their_widest_cell, |who| {
    let (_tmp, k) = setup(who);
    for args in [
        &["images"][..],
        &["images", "--digests"],
        &[
            "images",
            "--format",
            "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}",
        ],
    ] {
        let out = k.ok(args);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REPOSITORY "), "{args:?}:\n{out}");
        // The widest repository sets the column: three spaces after it,
        // and every row's TAG starts at the same place.
        let widest = "example.com/team/new-service".len();
        let tag_at = widest + 3;
        for l in &lines {
            let cut = &l[..tag_at];
            assert!(
                cut.ends_with("   ") || cut.trim_end().len() == widest,
                "{args:?}: column not aligned:\n{out}"
            );
            assert!(
                !l[tag_at..].starts_with(' '),
                "{args:?}: a cell does not start at its column:\n{out}"
            );
        }
        assert!(lines[0][tag_at..].starts_with("TAG"), "{args:?}:\n{out}");
    }
});

both!(inspect_of_several_is_a_json_array, |who| {
    let (_tmp, k) = setup(who);
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", BUSYBOX_IMAGE, "kiln-test/old:1"])).unwrap();
    let a = v.as_array().expect("an array");
    assert_eq!(a.len(), 2);
    assert!(a[0]["RepoTags"].to_string().contains("kiln-test/busybox:1"));
    assert!(a[1]["RepoTags"].to_string().contains("kiln-test/old:1"));
    // One name keeps kiln's single object.
    let one: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", BUSYBOX_IMAGE])).unwrap();
    assert!(one.is_object());
    // --format: one line per image.
    let ids = k.ok(&[
        "inspect",
        "--format",
        "{{.Id}}",
        BUSYBOX_IMAGE,
        "kiln-test/old:1",
    ]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    // As docker: the images found are printed, a missing one is an error
    // naming it, and the status is 1.
    let out = k.output(&["inspect", BUSYBOX_IMAGE, "nosuch:1"]);
    assert_eq!(out.status.code(), Some(1));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.as_array().map(Vec::len), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
});
