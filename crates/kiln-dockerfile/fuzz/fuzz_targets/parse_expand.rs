//! Parse + resolve arbitrary text with arbitrary build args and target.
//! Input: `K=V` lines (build args; `@name` sets the target) up to a NUL,
//! then the Dockerfile. Checks: no panic, every finding has a line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = match text.split_once('\0') {
        Some((h, b)) => (h, b),
        None => ("", text.as_ref()),
    };
    let mut opts = kiln_dockerfile::ResolveOptions::default();
    for line in head.lines() {
        if let Some(t) = line.strip_prefix('@') {
            opts.target = Some(t.to_string());
        } else if let Some((k, v)) = line.split_once('=') {
            opts.build_args.insert(k.to_string(), v.to_string());
        } else if !line.is_empty() {
            opts.named_contexts.insert(line.to_string());
        }
    }
    let (df, errors) = kiln_dockerfile::parse_partial("Dockerfile", body);
    for d in &errors {
        assert!(d.line >= 1, "{d:?}");
        let _ = d.to_string();
    }
    match kiln_dockerfile::resolve(&df, &opts) {
        Ok(r) => {
            for w in &r.warnings {
                assert!(w.line >= 1);
            }
            let _ = debug_len(&r);
        }
        Err(e) => {
            for d in &e.items {
                assert!(d.line >= 1, "{d:?}");
            }
        }
    }
});

fn debug_len(r: &kiln_dockerfile::ResolvedBuild) -> usize {
    format!("{r:?}").len()
}
