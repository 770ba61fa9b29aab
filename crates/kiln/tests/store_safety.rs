//! The store survives kill -9 at any instant and concurrent writers.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Kiln, busybox_rootfs, run};

#[test]
fn killed_imports_and_loads_leave_a_consistent_store() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    // Some bulk, so that a kill lands in the middle of writing a layer.
    std::fs::write(
        rootfs.join("bulk"),
        (0..8_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let kiln = Kiln::new(&tmp.path().join("store"));
    kiln.ok(&["import", rootfs.to_str().unwrap(), "seed:1"]);
    let archive = tmp.path().join("seed.tar");
    kiln.ok(&["save", "seed:1", "-o", archive.to_str().unwrap()]);

    // A deterministic spread of kill times, from the first instant to
    // after the typical end of the command.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 150_000);
        let mut cmd = kiln.cmd();
        if i % 2 == 0 {
            cmd.args(["import", rootfs.to_str().unwrap(), &format!("killed:{i}")]);
        } else {
            kiln.ok(&["rmi", "seed:1"]);
            cmd.args(["load", "-i", archive.to_str().unwrap()]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if i % 2 == 1 {
            // Put the name back whether or not the load got that far.
            kiln.ok(&["load", "-i", archive.to_str().unwrap()]);
        }
        let check = kiln.cmd().arg("check").output().unwrap();
        common::assert_success(&check, &format!("check after kill {i} at {delay:?}"));
    }
    kiln.ok(&["import", rootfs.to_str().unwrap(), "after:1"]);
    kiln.ok(&["prune"]);
    let check = kiln.ok(&["check"]);
    assert!(check.contains(" 0 temp files, 0 problems"), "{check}");
    run("true", &[]);
}

#[test]
fn eight_concurrent_imports_into_one_store() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let kiln = Kiln::new(&tmp.path().join("store"));
    let children: Vec<_> = (0..8)
        .map(|i| {
            kiln.cmd()
                .args(["import", rootfs.to_str().unwrap(), &format!("parallel:{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        common::assert_success(&out, &format!("concurrent import {i}"));
    }
    let images = kiln.ok(&["images", "--json"]);
    let names: Vec<String> = images
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for i in 0..8 {
        let want = format!("docker.io/library/parallel:{i}");
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    kiln.ok(&["check"]);
}
