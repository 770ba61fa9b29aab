//! Table tests for word expansion: every `${...}` form, quoting and the
//! escape character, with BuildKit's results.

use kiln_dockerfile::expand::{ExpandError, expand};

fn env(n: &str) -> Option<String> {
    match n {
        "V" => Some("value".into()),
        "E" => Some(String::new()),
        "P" => Some("/usr/local/bin/tool.tar.gz".into()),
        "S" => Some("a b  c".into()),
        "R" => Some("foo-foo-bar".into()),
        "G" => Some("a*b".into()),
        _ => None,
    }
}

fn x(s: &str) -> Result<String, ExpandError> {
    expand(s, '\\', &env).map(|e| e.value)
}

#[test]
fn expansion_forms() {
    let cases: &[(&str, &str)] = &[
        ("$V", "value"),
        ("${V}", "value"),
        ("pre${V}post", "prevaluepost"),
        ("$Vx", ""), // name is Vx
        ("${V}x", "valuex"),
        ("$U", ""),
        ("${U}", ""),
        ("$", "$"),
        ("a$", "a$"),
        ("$ a", "$ a"),
        ("$1", ""),
        ("$$", ""),
        // Defaults.
        ("${V:-w}", "value"),
        ("${E:-w}", "w"),
        ("${U:-w}", "w"),
        ("${V-w}", "value"),
        ("${E-w}", ""),
        ("${U-w}", "w"),
        ("${U:-$V}", "value"),
        ("${U:-${E:-deep}}", "deep"),
        ("${U:-a b}", "a b"),
        ("${U:-'q t'}", "q t"),
        // Alternatives.
        ("${V:+w}", "w"),
        ("${E:+w}", ""),
        ("${U:+w}", ""),
        ("${V+w}", "w"),
        ("${E+w}", "w"),
        ("${U+w}", ""),
        // Required (set).
        ("${V:?msg}", "value"),
        ("${V?msg}", "value"),
        ("${E?msg}", ""),
        // Prefix / suffix removal.
        ("${P#*/}", "usr/local/bin/tool.tar.gz"),
        ("${P##*/}", "tool.tar.gz"),
        ("${P%.*}", "/usr/local/bin/tool.tar"),
        ("${P%%.*}", "/usr/local/bin/tool"),
        ("${P#nomatch}", "/usr/local/bin/tool.tar.gz"),
        ("${P%/bin*}", "/usr/local"),
        ("${R#foo-}", "foo-bar"),
        ("${R##foo-}", "foo-bar"),
        ("${R%-*}", "foo-foo"),
        ("${R%%-*}", "foo"),
        ("${R#f?o}", "-foo-bar"),
        ("${R#[ef]oo}", "-foo-bar"),
        ("${G#a\\*}", "b"),
        ("${G#a'*'}", "b"),
        ("${U#x}", ""),
        // Replacement.
        ("${R/foo/baz}", "baz-foo-bar"),
        ("${R//foo/baz}", "baz-baz-bar"),
        ("${R/foo}", "-foo-bar"),
        ("${R//o/}", "f-f-bar"),
        ("${R/b*/x}", "foo-foo-x"),
        ("${R/nomatch/x}", "foo-foo-bar"),
        ("${U/a/b}", ""),
        // Quotes.
        ("'$V'", "$V"),
        ("\"$V\"", "value"),
        ("\"a  b\"", "a  b"),
        ("'a\\b'", "a\\b"),
        ("\"a\\\"b\"", "a\"b"),
        ("\"a\\$V\"", "a$V"),
        ("\"a\\b\"", "a\\b"),
        ("\"\\\\\"", "\\"),
        ("a'b'c\"d\"", "abcd"),
        ("''", ""),
        // Escapes outside quotes.
        ("\\$V", "$V"),
        ("\\'", "'"),
        ("a\\ b", "a b"),
        ("\\\\", "\\"),
        ("trail\\", "trail"),
    ];
    let mut bad = Vec::new();
    for (input, want) in cases {
        match x(input) {
            Ok(got) if got == *want => {}
            other => bad.push(format!("{input:?}: want {want:?}, got {other:?}")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn expansion_errors() {
    let cases: &[(&str, &str)] = &[
        ("${U:?}", "U: is not allowed to be unset"),
        ("${E:?}", "E: is not allowed to be empty"),
        ("${U:?need U}", "U: need U"),
        ("${U?need U}", "U: need U"),
        (
            "'open",
            "unexpected end of statement while looking for matching single-quote",
        ),
        (
            "\"open",
            "unexpected end of statement while looking for matching double-quote",
        ),
        ("${V", "syntax error: missing '}'"),
        ("${V:-x", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${:x}", "syntax error: bad substitution"),
        ("${V:#x}", "unsupported modifier (:#) in substitution"),
        ("${V!}", "unsupported modifier (!) in substitution"),
    ];
    for (input, want) in cases {
        match x(input) {
            Err(e) => assert_eq!(e.to_string(), *want, "{input:?}"),
            Ok(v) => panic!("{input:?}: expected error, got {v:?}"),
        }
    }
    assert!(matches!(x("${U:?}"), Err(ExpandError::Required(_))));
}

#[test]
fn word_splitting() {
    let w = |s: &str| expand(s, '\\', &env).unwrap().words;
    assert_eq!(w("a b  c"), ["a", "b", "c"]);
    assert_eq!(w("$S"), ["a", "b", "c"]); // unquoted values split
    assert_eq!(w("\"$S\""), ["a b  c"]); // quoted values don't
    assert_eq!(w("x\\ y z"), ["x y", "z"]);
    assert_eq!(w("'a b' c"), ["a b", "c"]);
    assert_eq!(w("80 443/tcp"), ["80", "443/tcp"]);
    assert_eq!(w("\"\""), [""]);
    assert!(w("   ").is_empty());
}

#[test]
fn backtick_escape() {
    let e = |s: &str| expand(s, '`', &env).unwrap().value;
    assert_eq!(e("C:\\path\\$V"), "C:\\path\\value");
    assert_eq!(e("`$V"), "$V");
    assert_eq!(e("\"a`\"b\""), "a\"b");
}

#[test]
fn used_and_unset_names() {
    let r = expand("$V ${U:-x} ${E} $W", '\\', &env).unwrap();
    assert_eq!(r.used, ["V", "E"]);
    assert_eq!(r.unset, ["W"]); // ${U:-x} handles unset itself
}

#[test]
fn heredoc_expansion_keeps_quotes() {
    let r = kiln_dockerfile::expand::expand_heredoc("echo \"$V\" '$V' \\$V\n", '\\', &env).unwrap();
    assert_eq!(r.value, "echo \"value\" 'value' $V\n");
}

#[test]
fn pattern_edge_cases() {
    let cases: &[(&str, &str)] = &[
        ("${R#*}", "foo-foo-bar"),
        ("${R##*}", ""),
        ("${R%*}", "foo-foo-bar"),
        ("${R%%*}", ""),
        ("${R#[!f]*}", "foo-foo-bar"),
        ("${R#[^x]}", "oo-foo-bar"),
        ("${R%[a-z]}", "foo-foo-ba"),
        ("${R//[-]/_}", "foo_foo_bar"),
        ("${R/#foo/x}", "foo-foo-bar"), // `#` anchors are not supported: literal
        ("${R//?/.}", "..........."),
        ("${R/*/all}", "all"),
        ("${R/[/x}", "foo-foo-bar"),
        ("${P##*[/]}", "tool.tar.gz"),
    ];
    for (input, want) in cases {
        assert_eq!(x(input).unwrap(), *want, "{input}");
    }
}
