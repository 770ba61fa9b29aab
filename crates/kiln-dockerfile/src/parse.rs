//! Turns Dockerfile text into instructions with spans: parser directives,
//! comments, line continuations, heredocs and flag extraction; the
//! per-instruction argument syntax (JSON vs shell form, `KEY=VALUE` lists)
//! is in `syntax`. Also the AST types.
//!
//! It does not expand variables, resolve stages or apply lint rules beyond
//! what only the line reader can see (empty continuation lines). The line
//! reader is our own rather than `parse-dockerfile`'s because BuildKit
//! accepts heredocs anywhere on a RUN/COPY/ADD line and several per line
//! (`RUN cat <<A >a && cat <<B >b`), which that crate (0.1.9) does not.

use serde::Serialize;

use crate::diag::{Diag, Diagnostics, Source, Span};
use crate::words::{self, heredoc_markers};

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Directives {
    /// `# syntax=` frontend image reference (recorded, not acted upon).
    pub syntax: Option<String>,
    /// `# escape=` character, `\` by default.
    pub escape: char,
    /// `# check=` lint configuration text.
    pub check: Option<String>,
}

/// The instruction keywords BuildKit knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum Keyword {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
}

const KEYWORDS: &[(&str, Keyword)] = &[
    ("ADD", Keyword::Add),
    ("ARG", Keyword::Arg),
    ("CMD", Keyword::Cmd),
    ("COPY", Keyword::Copy),
    ("ENTRYPOINT", Keyword::Entrypoint),
    ("ENV", Keyword::Env),
    ("EXPOSE", Keyword::Expose),
    ("FROM", Keyword::From),
    ("HEALTHCHECK", Keyword::Healthcheck),
    ("LABEL", Keyword::Label),
    ("MAINTAINER", Keyword::Maintainer),
    ("ONBUILD", Keyword::Onbuild),
    ("RUN", Keyword::Run),
    ("SHELL", Keyword::Shell),
    ("STOPSIGNAL", Keyword::Stopsignal),
    ("USER", Keyword::User),
    ("VOLUME", Keyword::Volume),
    ("WORKDIR", Keyword::Workdir),
];

impl Keyword {
    /// Upper-case spelling.
    pub fn as_str(self) -> &'static str {
        KEYWORDS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("", |(s, _)| s)
    }

    fn lookup(word: &str) -> Option<Keyword> {
        KEYWORDS
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(word))
            .map(|(_, k)| *k)
    }
}

/// A `--name[=value]` flag as written (quotes removed, not expanded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    /// Name without the leading `--`.
    pub name: String,
    /// Value after `=`, if any.
    pub value: Option<String>,
    /// Span of the whole flag.
    pub span: Span,
}

/// A heredoc body attached to a RUN, COPY or ADD line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heredoc {
    /// Delimiter word without quotes; also the file name for COPY/ADD.
    pub name: String,
    /// Body, one `\n` after each line; leading tabs removed when `chomp`.
    pub content: String,
    /// False when the delimiter was quoted: no variable expansion.
    pub expand: bool,
    /// Written as `<<-`.
    pub chomp: bool,
    /// File descriptor prefix, 0 if none.
    pub fd: u32,
    /// Span of the body and terminator line.
    pub span: Span,
}

/// Exec form (JSON array) or shell form (raw text).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandForm {
    /// `["executable", "arg"]`.
    Exec(Vec<String>),
    /// Text handed to the shell untouched.
    Shell(String),
}

/// A word of the argument text and its span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpannedWord {
    /// The word, unexpanded.
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A `key=value` pair (value absent for `ARG name`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyValue {
    /// Key, unexpanded.
    pub key: String,
    /// Value, unexpanded; `None` for `ARG name` without default.
    pub value: Option<String>,
    /// Where the pair is.
    pub span: Span,
}

/// Instruction arguments, split per instruction syntax but not expanded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Args {
    /// RUN, CMD, ENTRYPOINT, SHELL.
    Command {
        /// The form.
        form: CommandForm,
    },
    /// FROM, EXPOSE, COPY, ADD, VOLUME: words (JSON arrays already
    /// decoded; `json` tells which).
    Words {
        /// The words.
        words: Vec<SpannedWord>,
        /// Came from a JSON array.
        json: bool,
    },
    /// ENV, LABEL, ARG.
    KeyValues {
        /// The pairs.
        pairs: Vec<KeyValue>,
        /// Legacy `KEY value` form (ENV/LABEL).
        legacy: bool,
    },
    /// USER, WORKDIR, STOPSIGNAL, MAINTAINER: the whole text.
    Text {
        /// The text.
        text: String,
    },
    /// HEALTHCHECK NONE / CMD.
    Healthcheck {
        /// `None` means `HEALTHCHECK NONE`.
        cmd: Option<CommandForm>,
    },
    /// ONBUILD: the trigger expression and its parse.
    Onbuild {
        /// Trigger text as stored in the image config.
        expression: String,
        /// The parsed trigger.
        trigger: Box<Instruction>,
    },
}

/// One instruction as written: keyword, flags, arguments, heredocs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instruction {
    /// Which instruction.
    pub keyword: Keyword,
    /// Keyword as written (for casing lints).
    pub keyword_text: String,
    /// Flags in order.
    pub flags: Vec<Flag>,
    /// Arguments.
    pub args: Args,
    /// Heredocs in marker order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line with continuations joined (BuildKit's "original").
    pub original: String,
    /// Raw argument text after the flags.
    pub args_text: String,
    /// Span of the logical line (heredoc bodies excluded).
    pub span: Span,
    /// Span of the keyword.
    pub keyword_span: Span,
    /// Span of the argument text.
    pub args_span: Span,
    /// 1-based line of the keyword.
    pub line: usize,
}

impl Instruction {
    /// The flag with this name, if given (the last one wins).
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().rev().find(|f| f.name == name)
    }
}

/// A parsed Dockerfile: directives and instructions with spans; no
/// expansion has happened yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dockerfile {
    /// File name used in diagnostics.
    pub name: String,
    /// Parser directives.
    pub directives: Directives,
    /// All instructions, global ARGs included, in order.
    pub instructions: Vec<Instruction>,
    /// Warnings found while reading (e.g. NoEmptyContinuation).
    pub warnings: Vec<Diag>,
    #[serde(skip)]
    pub(crate) source: Source,
}

impl Dockerfile {
    /// The source text and name (for building diagnostics).
    pub fn source(&self) -> &Source {
        &self.source
    }
}

/// A logical line: physical lines joined after removing continuations, with
/// a map back to byte offsets in the file.
pub(crate) struct Logical {
    pub(crate) text: String,
    /// (offset in `text`, offset in file) at the start of each piece.
    map: Vec<(usize, usize)>,
    end: usize,
}

impl Logical {
    fn push(&mut self, piece: &str, file_offset: usize) {
        self.map.push((self.text.len(), file_offset));
        self.text.push_str(piece);
        self.end = file_offset + piece.len();
    }

    fn file_pos(&self, pos: usize) -> usize {
        let i = self
            .map
            .partition_point(|&(l, _)| l <= pos)
            .saturating_sub(1);
        match self.map.get(i) {
            Some(&(l, f)) => f + (pos - l),
            None => pos,
        }
    }

    pub(crate) fn span(&self, r: std::ops::Range<usize>) -> Span {
        let s = self.file_pos(r.start);
        let e = if r.end > r.start {
            self.file_pos(r.end - 1) + 1
        } else {
            s
        };
        s..e.max(s)
    }
}

struct Line<'a> {
    text: &'a str,
    start: usize,
}

fn physical_lines(text: &str, base: usize) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in text.split_inclusive('\n') {
        let t = piece.strip_suffix('\n').unwrap_or(piece);
        let t = t.strip_suffix('\r').unwrap_or(t);
        out.push(Line {
            text: t,
            start: base + start,
        });
        start += piece.len();
    }
    out
}

/// Splits `line` into the part before a trailing escape (plus optional
/// blanks) and whether it continues on the next line.
fn strip_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(rest) => (rest, true),
        None => (line, false),
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

pub(crate) struct Parser<'a> {
    pub(crate) src: Source,
    lines: Vec<Line<'a>>,
    i: usize,
    pub(crate) escape: char,
    diags: Diagnostics,
}

/// Parses Dockerfile text. `name` is only used in diagnostics.
///
/// Errors are collected (one per broken instruction) so `check` can report
/// them all; warnings found by the reader are in [`Dockerfile::warnings`].
pub fn parse(name: &str, text: &str) -> Result<Dockerfile, Diagnostics> {
    let (df, errors) = parse_partial(name, text);
    if errors.is_empty() {
        return Ok(df);
    }
    let mut d = Diagnostics { items: errors };
    d.items.extend(df.warnings);
    d.sort();
    Err(d)
}

/// Like [`parse`] but never fails: broken instructions are left out of the
/// returned file and their errors returned beside it, so a checker can
/// still resolve and lint the rest.
pub fn parse_partial(name: &str, text: &str) -> (Dockerfile, Vec<Diag>) {
    let src = Source::new(name, text);
    let (body, base) = match text.strip_prefix('\u{feff}') {
        Some(b) => (b, 3),
        None => (text, 0),
    };
    let mut p = Parser {
        src,
        lines: physical_lines(body, base),
        i: 0,
        escape: '\\',
        diags: Diagnostics::default(),
    };
    let directives = p.directives();
    p.escape = directives.escape;
    let mut instructions = Vec::new();
    while let Some(ins) = p.next_instruction() {
        if let Some(ins) = ins {
            instructions.push(ins);
        }
    }
    check_order(&p.src, &instructions, &mut p.diags);
    let (errors, warnings): (Vec<Diag>, Vec<Diag>) =
        p.diags.items.into_iter().partition(Diag::is_error);
    let df = Dockerfile {
        name: name.to_string(),
        directives,
        instructions,
        warnings,
        source: p.src,
    };
    (df, errors)
}

/// Instructions other than ARG need a stage; a file needs at least one.
fn check_order(src: &Source, ins: &[Instruction], diags: &mut Diagnostics) {
    let mut seen_from = false;
    for i in ins {
        match i.keyword {
            Keyword::From => seen_from = true,
            Keyword::Arg => {}
            k if !seen_from => {
                diags.push(
                    Diag::error(
                        "no-build-stage",
                        format!("{} instruction before the first FROM: no build stage in current context", k.as_str()),
                        src,
                        i.keyword_span.clone(),
                    )
                    .with_help("only ARG may come before the first FROM"),
                );
            }
            _ => {}
        }
    }
    if !seen_from && !diags.has_errors() {
        let end = src.text.len();
        diags.push(
            Diag::error(
                "no-stages",
                "the Dockerfile has no FROM instruction: no stages to build",
                src,
                end..end,
            )
            .with_help("add a FROM instruction, e.g. `FROM alpine`"),
        );
    }
}

impl<'a> Parser<'a> {
    fn directives(&mut self) -> Directives {
        let mut d = Directives {
            syntax: None,
            escape: '\\',
            check: None,
        };
        let mut seen: Vec<String> = Vec::new();
        while let Some(line) = self.lines.get(self.i) {
            let Some((key, value, vstart)) = directive(line.text) else {
                break;
            };
            let key_l = key.to_ascii_lowercase();
            let span = line.start..line.start + line.text.len();
            if seen.contains(&key_l) {
                self.diags.push(Diag::error(
                    "duplicate-directive",
                    format!("only one {key_l} parser directive can be used"),
                    &self.src,
                    span,
                ));
                self.i += 1;
                continue;
            }
            seen.push(key_l.clone());
            match key_l.as_str() {
                "syntax" => d.syntax = Some(value.to_string()),
                "check" => d.check = Some(value.to_string()),
                "escape" => match value {
                    "\\" => d.escape = '\\',
                    "`" => d.escape = '`',
                    _ => self.diags.push(
                        Diag::error(
                            "invalid-escape",
                            format!("invalid escape token '{value}' does not match ` or \\"),
                            &self.src,
                            line.start + vstart..line.start + vstart + value.len(),
                        )
                        .with_help("use `# escape=\\` or `# escape=`` ` ``"),
                    ),
                },
                _ => {} // unknown directives are treated like comments
            }
            self.i += 1;
        }
        d
    }

    /// Reads the next instruction. `None` at end of file, `Some(None)` when
    /// the instruction had an error (already recorded).
    fn next_instruction(&mut self) -> Option<Option<Instruction>> {
        // Skip blank and comment lines.
        let first = loop {
            let line = self.lines.get(self.i)?;
            self.i += 1;
            let t = line.text.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            break Line {
                text: t,
                start: line.start + (line.text.len() - t.len()),
            };
        };
        let mut logical = Logical {
            text: String::new(),
            map: vec![],
            end: first.start,
        };
        let (piece, mut cont) = strip_continuation(first.text, self.escape);
        logical.push(piece, first.start);
        let mut warned_empty = false;
        while cont {
            let Some(line) = self.lines.get(self.i) else {
                break;
            };
            self.i += 1;
            if is_comment(line.text) {
                continue;
            }
            if line.text.trim().is_empty() {
                if !warned_empty {
                    warned_empty = true;
                    self.diags.push(Diag::warning(
                        "NoEmptyContinuation",
                        "Empty continuation line found: empty continuation lines will become errors in a future release",
                        &self.src,
                        line.start..line.start,
                    ));
                }
                continue;
            }
            let (piece, c) = strip_continuation(line.text, self.escape);
            logical.push(piece, line.start);
            cont = c;
        }
        match self.instruction(&logical, 0, true) {
            Ok(ins) => Some(Some(ins)),
            Err(d) => {
                self.diags.push(*d);
                Some(None)
            }
        }
    }

    pub(crate) fn err(&self, code: &str, msg: impl Into<String>, span: Span) -> Box<Diag> {
        Box::new(Diag::error(code, msg, &self.src, span))
    }

    /// Parses the instruction that starts at `at` in `logical`.
    pub(crate) fn instruction(
        &mut self,
        logical: &Logical,
        at: usize,
        top: bool,
    ) -> Result<Instruction, Box<Diag>> {
        let text = &logical.text;
        let lead = text[at..].len() - text[at..].trim_start().len();
        let kw_start = at + lead;
        let kw_end = text[kw_start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |i| kw_start + i);
        let kw_text = &text[kw_start..kw_end];
        let keyword_span = logical.span(kw_start..kw_end);
        let Some(keyword) = Keyword::lookup(kw_text) else {
            let mut d = self.err(
                "unknown-instruction",
                format!("unknown instruction: {kw_text}"),
                keyword_span,
            );
            if let Some(s) = suggest(kw_text) {
                d = Box::new(d.with_help(format!("did you mean {s}?")));
            }
            return Err(d);
        };
        let rest_start = kw_end + (text[kw_end..].len() - text[kw_end..].trim_start().len());
        let (flag_words, flags_len) = words::extract_flags(&text[rest_start..]);
        let args_start = rest_start + flags_len;
        let args_text = text[args_start..].trim_end().to_string();
        let args_span = logical.span(args_start..args_start + args_text.len());
        let whole = logical.span(kw_start..text.trim_end().len());
        let mut flags = Vec::new();
        for w in flag_words {
            let body = &w.text[2..];
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            flags.push(Flag {
                name,
                value,
                span: logical.span(rest_start + w.start..rest_start + w.end),
            });
        }
        self.check_flags(keyword, &flags)?;

        let mut heredocs = Vec::new();
        if top && matches!(keyword, Keyword::Run | Keyword::Copy | Keyword::Add) {
            for m in heredoc_markers(&args_text) {
                let marker_span = match args_text.find(&m.word) {
                    Some(i) => logical.span(args_start + i..args_start + i + m.word.len()),
                    None => args_span.clone(),
                };
                heredocs.push(self.read_heredoc(&m, marker_span)?);
            }
        }
        let line = self.src.line_col(keyword_span.start).0;
        let mut ins = Instruction {
            keyword,
            keyword_text: kw_text.to_string(),
            flags,
            args: Args::Text {
                text: String::new(),
            },
            heredocs,
            original: text[kw_start..].trim_end().to_string(),
            args_text,
            span: whole,
            keyword_span,
            args_span,
            line,
        };
        ins.args = self.args(&ins, logical, args_start)?;
        Ok(ins)
    }

    fn read_heredoc(
        &mut self,
        m: &words::HeredocMarker,
        marker_span: Span,
    ) -> Result<Heredoc, Box<Diag>> {
        let mut content = String::new();
        let start = self
            .lines
            .get(self.i)
            .map_or(self.src.text.len(), |l| l.start);
        loop {
            let Some(line) = self.lines.get(self.i) else {
                return Err(Box::new(
                    Diag::error(
                        "unterminated-heredoc",
                        format!(
                            "unterminated heredoc: no line `{}` closes `{}`",
                            m.name, m.word
                        ),
                        &self.src,
                        marker_span,
                    )
                    .with_help(format!(
                        "end the heredoc with a line containing only `{}`",
                        m.name
                    )),
                ));
            };
            self.i += 1;
            let t = if m.chomp {
                line.text.trim_start_matches('\t')
            } else {
                line.text
            };
            if t == m.name {
                return Ok(Heredoc {
                    name: m.name.clone(),
                    content,
                    expand: m.expand,
                    chomp: m.chomp,
                    fd: m.fd,
                    span: start..line.start + line.text.len(),
                });
            }
            content.push_str(t);
            content.push('\n');
        }
    }
}

/// A `# key=value` directive line: key, value and the value's offset.
fn directive(line: &str) -> Option<(&str, &str, usize)> {
    let rest = line.strip_prefix('#')?;
    let t = rest.trim_start();
    let key_len = t
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(t.len());
    let key = &t[..key_len];
    if key.is_empty() || !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let after = t[key_len..].trim_start().strip_prefix('=')?;
    let value = after.trim();
    if value.is_empty() {
        return None;
    }
    let vstart = line.len() - after.len() + (after.len() - after.trim_start().len());
    Some((key, value, vstart))
}

/// Nearest keyword by edit distance, for "did you mean".
fn suggest(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_uppercase();
    KEYWORDS
        .iter()
        .map(|(k, _)| (levenshtein(&w, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses ONBUILD trigger expressions from a base image's config (e.g.
/// `["RUN echo hi", "COPY . /app"]`) into instructions to run right after
/// FROM. Spans point into the triggers joined with newlines, named
/// `<onbuild>`.
pub fn parse_onbuild_triggers(triggers: &[String]) -> Result<Vec<Instruction>, Diagnostics> {
    let text = triggers
        .iter()
        .map(|t| t.replace(['\n', '\r'], " "))
        .collect::<Vec<_>>()
        .join("\n");
    let src = Source::new("<onbuild>", &text);
    let mut p = Parser {
        src,
        lines: physical_lines(&text, 0),
        i: 0,
        escape: '\\',
        diags: Diagnostics::default(),
    };
    let mut out = Vec::new();
    while let Some(ins) = p.next_instruction() {
        if let Some(ins) = ins {
            if matches!(
                ins.keyword,
                Keyword::Onbuild | Keyword::From | Keyword::Maintainer
            ) {
                p.diags.push(Diag::error(
                    "bad-onbuild",
                    format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        ins.keyword.as_str()
                    ),
                    &p.src,
                    ins.keyword_span.clone(),
                ));
                continue;
            }
            out.push(ins);
        }
    }
    if p.diags.has_errors() {
        return Err(p.diags);
    }
    Ok(out)
}
