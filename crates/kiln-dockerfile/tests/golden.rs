//! Golden tests: realistic multi-stage Go, Python and Node Dockerfiles
//! resolved to JSON and compared with reviewed snapshots.

use kiln_dockerfile::stage::ImageInfo;
use kiln_dockerfile::{ResolveOptions, parse, resolve};

fn resolve_file(name: &str, opts: &ResolveOptions) -> serde_json::Value {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("golden file");
    let df = parse(name, &text).unwrap_or_else(|e| panic!("{e}"));
    let r = resolve(&df, opts).unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_value(&r).expect("json")
}

#[test]
fn go_multistage() {
    let mut o = ResolveOptions {
        target_platform: "linux/arm64".parse().unwrap(),
        ..Default::default()
    };
    o.build_args.insert("VERSION".into(), "1.4.2".into());
    o.target = Some("final".into());
    insta::assert_json_snapshot!("go_final_arm64", resolve_file("go.Dockerfile", &o));
    o.target = Some("test".into());
    insta::assert_json_snapshot!("go_test_target", resolve_file("go.Dockerfile", &o));
}

#[test]
fn python_multistage() {
    let mut o = ResolveOptions::default();
    o.images.insert(
        "python:3.12-slim".into(),
        ImageInfo {
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("LANG".into(), "C.UTF-8".into()),
                ("PYTHON_VERSION".into(), "3.12.4".into()),
            ],
            ..Default::default()
        },
    );
    insta::assert_json_snapshot!("python_runtime", resolve_file("python.Dockerfile", &o));
}

#[test]
fn node_multistage() {
    let mut o = ResolveOptions::default();
    o.build_args.insert("NODE_VERSION".into(), "22".into());
    o.build_args
        .insert("HTTPS_PROXY".into(), "http://proxy:3128".into());
    insta::assert_json_snapshot!("node_final", resolve_file("node.Dockerfile", &o));
}
