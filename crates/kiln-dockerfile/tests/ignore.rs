//! `.dockerignore` table: Docker's (moby patternmatcher) documented
//! behaviour, one (patterns, path, excluded?) row per case.

use kiln_dockerfile::ignore::Matcher;

const CASES: &[(&str, &str, bool)] = &[
    // Root-anchored globs.
    ("*.go", "main.go", true),
    ("*.go", "cmd/main.go", false),
    ("*.txt", ".txt", true),
    ("a*", "abc", true),
    ("a*", "b/abc", false),
    ("*", "anything", true),
    ("*", "a/b", true), // parent "a" matches
    ("?.txt", "a.txt", true),
    ("?.txt", "ab.txt", false),
    ("?.txt", "/.txt", false),
    ("*/a", "x/a", true),
    ("*/a", "a", false),
    ("*/a", "x/y/a", false),
    ("dir/*.txt", "dir/a.txt", true),
    ("dir/*.txt", "dir/sub/a.txt", false),
    // ** spans directories.
    ("**/*.go", "cmd/main.go", true),
    ("**/*.go", "main.go", true),
    ("**/*.go", "a/b/c/x.go", true),
    ("**/*.go", "a/b/c/x.gox", false),
    ("**", "x/y/z", true),
    ("**/node_modules", "node_modules", true),
    ("**/node_modules", "a/node_modules", true),
    ("**/node_modules", "a/node_modules/x/y", true),
    ("**/node_modules", "xnode_modules", false),
    ("node_modules", "a/node_modules", false),
    ("a/**/b", "a/b", true),
    ("a/**/b", "a/x/y/b", true),
    ("a/**/b", "a/xb", false),
    ("docs/**/*.md", "docs/a.md", true),
    ("docs/**/*.md", "docs/x/y/a.md", true),
    ("docs/**/*.md", "a.md", false),
    ("**/*.tmp", "a.tmp", true),
    ("foo**", "foobar", true),
    ("foo**", "foo/x", true),
    // Directories: a match on a parent covers children.
    ("dir", "dir", true),
    ("dir", "dir/x", true),
    ("dir", "dir/x/y/z", true),
    ("dir", "dirx", false),
    ("foo.txt", "foo.txt/bar", true),
    (".git", ".git/HEAD", true),
    ("dir/*", "dir/x", true),
    ("dir/*", "dir/x/y", true),
    ("dir/*", "dir", false),
    ("dir/**", "dir/x/y", true),
    ("dir/**", "dir", false),
    // Cleaning and anchoring.
    ("/dir", "dir/x", true),
    ("./dir", "dir/a", true),
    ("dir/", "dir/x", true),
    ("dir/../other", "other/x", true),
    ("dir/../other", "dir/other", false),
    ("a/./b", "a/b", true),
    ("a//b", "a/b", true),
    ("/", "x", false),
    ("dir", "./dir/x", true),
    ("dir", "/dir/x", true),
    // Classes and escapes.
    ("[abc].txt", "b.txt", true),
    ("[abc].txt", "d.txt", false),
    ("[^abc].txt", "d.txt", true),
    ("[^abc].txt", "a.txt", false),
    ("[a-c]x", "bx", true),
    ("[a-c]x", "dx", false),
    ("\\*.txt", "*.txt", true),
    ("\\*.txt", "a.txt", false),
    ("\\[x\\]", "[x]", true),
    ("a.b", "axb", false),
    ("a+b", "a+b", true),
    ("(x)", "(x)", true),
    // Comments and whitespace.
    ("# comment", "# comment", false),
    (" spaced.txt ", "spaced.txt", true),
    ("\n\n*.log\n\n", "x.log", true),
    // Exceptions: last match wins.
    ("*.md\n!README.md", "README.md", false),
    ("*.md\n!README.md", "CHANGES.md", true),
    ("!README.md\n*.md", "README.md", true),
    (
        "*.log\n!important.log\nimportant.log",
        "important.log",
        true,
    ),
    ("docs\n!docs/keep.md", "docs/keep.md", false),
    ("docs\n!docs/keep.md", "docs/other.md", true),
    ("docs\n!docs/keep.md", "docs", true),
    ("dir\n!dir", "dir/x", false),
    ("*\n!keep", "keep/sub/file", false),
    ("*\n!keep", "other/file", true),
    ("**/*.go\n!vendor/*.go", "vendor/x.go", false),
    ("**/*.go\n!vendor/*.go", "vendor/sub/x.go", true),
    ("*\n!src\nsrc/*.tmp", "src/a.tmp", true),
    ("*\n!src\nsrc/*.tmp", "src/a.rs", false),
    ("! spaced", "spaced", false),
    ("*\n! spaced", "spaced", false),
];

#[test]
fn dockerignore_table() {
    assert!(
        CASES.len() >= 60,
        "need at least 60 cases, have {}",
        CASES.len()
    );
    let mut failures = Vec::new();
    for (patterns, path, want) in CASES {
        let m = Matcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"));
        if m.matches(path) != *want {
            failures.push(format!("patterns {patterns:?} path {path:?}: want {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_patterns() {
    assert!(Matcher::new("!").is_err());
    assert!(Matcher::new("ok\n[abc").is_err());
    let e = Matcher::new("ok\n[abc").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(Matcher::new("abc\\").is_err());
}

#[test]
fn reinclude_hint() {
    let cases: &[(&str, &str, bool)] = &[
        ("docs\n!docs/keep.md", "docs", true),
        ("docs", "docs", false),
        ("docs\n!src/x", "docs", false),
        ("*\n!**/keep", "any", true),
        ("a/b\n!a/b/c/d", "a/b", true),
        ("a/b\n!a/b/c/d", "a/b/c", true),
        ("a/b\n!a/b/c/d", "a/x", false),
        ("build\n!build/*.so", "build/sub", false),
        ("build\n!build/*.so", "build", true),
        ("x\n!*/keep", "x", true),
        ("x\n!x", "x/deep/er", true),
    ];
    for (patterns, dir, want) in cases {
        let m = Matcher::new(patterns).unwrap();
        assert_eq!(m.may_reinclude_under(dir), *want, "{patterns:?} {dir:?}");
    }
}
