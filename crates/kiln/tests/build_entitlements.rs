//! `RUN --network=host` and `RUN --security=insecure` are the
//! Dockerfile's to ask and the user's to allow (`kiln build --allow
//! network.host|security.insecure`, repeatable or comma-separated). An
//! unallowed request fails before any step runs, naming the file, line
//! and column of the RUN and the flag that allows it; the user's own
//! `--network host` needs nothing. As root and as kilntest.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::build::*;

fn build(k: &KilnBuild, tmp: &Path, dockerfile: &str, flags: &[&str]) -> (bool, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let ctx = tmp.join(format!("ctx-{}", N.fetch_add(1, Ordering::SeqCst)));
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let (out, _, log) = kiln_build(k, &ctx, flags);
    (out.status.success(), log)
}

fn setup(name: &str, who: Who) -> Option<(tempfile::TempDir, KilnBuild)> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if !kiln_build_available() || !common::is_root() {
        assert!(
            !ci,
            "{name}: needs `kiln build` and root (required under CI)"
        );
        loud(&format!("build_entitlements::{name} SKIPPED"));
        return None;
    }
    let tmp = scratch("kiln-bt-entitle-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    Some((tmp, k))
}

both!(unallowed_runs_fail_before_any_step, |who| {
    let Some((tmp, k)) = setup("unallowed_runs_fail_before_any_step", who) else {
        return;
    };
    let df = format!(
        "FROM {BUSYBOX_IMAGE}\n\
         RUN echo first-step-ran > /first\n\
         RUN --network=host echo host > /host\n  \
         RUN --security=insecure echo insecure > /insecure\n"
    );
    let (ok, log) = build(&k, tmp.path(), &df, &[]);
    assert!(!ok, "{log}");
    for want in [
        "Dockerfile:3:1: RUN --network=host needs the network.host entitlement: \
         `kiln build --allow network.host` allows it",
        "Dockerfile:4:3: RUN --security=insecure needs the security.insecure entitlement: \
         `kiln build --allow security.insecure` allows it",
    ] {
        assert!(log.contains(want), "no `{want}` in:\n{log}");
    }
    assert!(
        !log.contains("RUN echo first-step-ran"),
        "a step ran before the refusal:\n{log}"
    );

    // One entitlement is not the other.
    let (ok, log) = build(&k, tmp.path(), &df, &["--allow", "network.host"]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("Dockerfile:4:3: RUN --security=insecure"),
        "{log}"
    );
    assert!(!log.contains("RUN --network=host needs"), "{log}");
    let (ok, log) = build(&k, tmp.path(), &df, &["--allow", "security.insecure"]);
    assert!(!ok, "{log}");
    assert!(log.contains("Dockerfile:3:1: RUN --network=host"), "{log}");

    // Both, repeated or comma-separated.
    for flags in [
        &["--allow", "network.host", "--allow", "security.insecure"][..],
        &["--allow", "network.host,security.insecure"][..],
        &["--allow=security.insecure,network.host"][..],
    ] {
        let (ok, log) = build(&k, tmp.path(), &df, flags);
        assert!(ok, "{flags:?}:\n{log}");
    }

    // An unknown entitlement is a usage error.
    let (ok, log) = build(&k, tmp.path(), &df, &["--allow", "fs.write"]);
    assert!(!ok);
    assert!(log.contains("unknown entitlement"), "{log}");
});

both!(the_users_own_network_host_needs_no_entitlement, |who| {
    let Some((tmp, k)) = setup("the_users_own_network_host_needs_no_entitlement", who) else {
        return;
    };
    let df = format!("FROM {BUSYBOX_IMAGE}\nRUN echo ok > /ok\n");
    let (ok, log) = build(&k, tmp.path(), &df, &["--network", "host"]);
    assert!(ok, "{log}");
});

both!(onbuild_triggers_are_checked_too, |who| {
    let Some((tmp, k)) = setup("onbuild_triggers_are_checked_too", who) else {
        return;
    };
    // The base only records the trigger: it builds without the entitlement.
    let base = format!("FROM {BUSYBOX_IMAGE}\nONBUILD RUN --network=host echo from-trigger\n");
    let (ok, log) = build(&k, tmp.path(), &base, &["-t", "onbuild-base:1"]);
    assert!(ok, "{log}");
    let child = "FROM onbuild-base:1\nRUN echo child\n";
    let (ok, log) = build(&k, tmp.path(), child, &[]);
    assert!(!ok, "{log}");
    assert!(
        log.contains(
            "Dockerfile:1:1: RUN --network=host (an ONBUILD trigger of the base image) \
             needs the network.host entitlement"
        ),
        "{log}"
    );
    let (ok, log) = build(&k, tmp.path(), child, &["--allow", "network.host"]);
    assert!(ok, "{log}");
});
