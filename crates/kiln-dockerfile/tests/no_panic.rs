//! Property tests: no input makes parse/resolve (what `check` runs) panic,
//! and every finding carries a line number inside the file; the
//! `.dockerignore` walker hint is sound.

use kiln_dockerfile::ignore::{Matcher, clean};
use kiln_dockerfile::{ResolveOptions, parse_partial, resolve};
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "FROM ",
    "from ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "EXPOSE ",
    "VOLUME ",
    "USER ",
    "WORKDIR ",
    "CMD ",
    "ENTRYPOINT ",
    "SHELL ",
    "HEALTHCHECK ",
    "ONBUILD ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "BOGUS ",
    "AS ",
    "as ",
    "scratch",
    "alpine",
    "a",
    "b",
    "0",
    "1",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\\\n",
    "\\",
    "`",
    "#",
    "# escape=`\n",
    "# check=error=true\n",
    "# syntax=x\n",
    "$",
    "${",
    "}",
    "$A",
    "${A:-x}",
    "${A:?}",
    "${A#*}",
    "${A//a/b}",
    "${",
    ":",
    "=",
    "A=1",
    "\"",
    "'",
    "[",
    "]",
    "[\"",
    "\",",
    "<<",
    "<<EOF",
    "<<-EOF",
    "<<'E'",
    "EOF",
    "E",
    "--mount=",
    "type=cache",
    "type=secret",
    "type=ssh",
    "type=bind",
    "type=tmpfs",
    "target=/x",
    ",",
    "--from=",
    "--chmod=",
    "755",
    "u+x",
    "--chown=",
    "--link",
    "--network=",
    "none",
    "--platform=",
    "$BUILDPLATFORM",
    "linux/arm64",
    "--interval=",
    "1s",
    "NONE",
    "CMD",
    "--retries=",
    "-1",
    "/",
    "*",
    "?",
    "80",
    "-",
    "/udp",
    "é",
    "\u{feff}",
    "\0",
];

fn dockerfile() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60).prop_map(|v| v.concat()),
        1 => ".{0,200}",
    ]
}

fn args() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            "[A-Z]{1,2}|TARGETARCH|HTTP_PROXY|SOURCE_DATE_EPOCH",
            ".{0,6}",
        ),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn check_never_panics_and_locates_findings(text in dockerfile(), a in args(), target in prop::option::of("[a-c0-2]")) {
        let lines = text.matches('\n').count() + 1;
        let o = ResolveOptions { build_args: a.into_iter().collect(), target, ..Default::default() };
        let (df, errors) = parse_partial("Dockerfile", &text);
        let mut all = errors;
        match resolve(&df, &o) {
            Ok(r) => all.extend(r.warnings),
            Err(e) => all.extend(e.items),
        }
        for d in &all {
            prop_assert!(d.line >= 1 && d.line <= lines, "{d:?} in {lines} lines");
            prop_assert!(d.column >= 1);
            prop_assert!(!d.message.is_empty());
            let prefix = format!("Dockerfile:{}:", d.line);
            prop_assert!(d.to_string().starts_with(&prefix));
        }
    }

    #[test]
    fn reinclude_hint_is_sound(
        patterns in prop::collection::vec("!?[ab*?/]{1,6}", 1..5),
        path in "[ab]{1,2}(/[ab]{1,2}){0,3}",
    ) {
        let Ok(m) = Matcher::new(&patterns.join("\n")) else { return Ok(()) };
        let excluded = m.matches(&path);
        let comps: Vec<&str> = path.split('/').collect();
        for i in 1..comps.len() {
            let dir = clean(&comps[..i].join("/"));
            if m.matches(&dir) && !m.may_reinclude_under(&dir) {
                prop_assert!(excluded, "dir {dir} excluded and final, but {path} is not excluded; patterns {patterns:?}");
            }
        }
    }
}
