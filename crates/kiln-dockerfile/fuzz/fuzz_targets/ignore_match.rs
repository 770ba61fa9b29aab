//! `.dockerignore` patterns (before a NUL) against paths (after it, one per
//! line). Checks: no panic, and the walker hint is sound: if a directory
//! is excluded and nothing can be re-included under it, every path below
//! it is excluded too.
#![no_main]

use kiln_dockerfile::ignore::Matcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once('\0').unwrap_or((text.as_ref(), "a/b/c"));
    let Ok(m) = Matcher::new(patterns) else { return };
    for p in paths.lines().take(64) {
        let excluded = m.matches(p);
        let clean = kiln_dockerfile::ignore::clean(p.trim_start_matches('/'));
        let mut dir = String::new();
        for comp in clean.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(comp);
            if m.matches(&dir) && !m.may_reinclude_under(&dir) {
                assert!(excluded, "dir {dir:?} excluded without re-include, but {p:?} is not excluded");
            }
        }
    }
});
