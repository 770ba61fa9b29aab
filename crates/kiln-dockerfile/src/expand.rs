//! Variable expansion and quote removal for one word or a list of words,
//! with BuildKit's shell-like rules: `$V`, `${V}`, the `${V:-w}` family,
//! `${V#p}`/`%`/`/` pattern operators, single and double quotes and the
//! escape character.
//!
//! It does not decide which instructions expand (see `instructions`) or
//! where values come from (see `scope`); it only sees a lookup function.

/// Result of expanding text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expansion {
    /// The whole text expanded, as one word (quotes removed).
    pub value: String,
    /// The text split into words on unquoted whitespace, including
    /// whitespace that came from unquoted variable values.
    pub words: Vec<String>,
    /// Names referenced that had a value (or were set but empty).
    pub used: Vec<String>,
    /// Names referenced that were unset.
    pub unset: Vec<String>,
}

/// Why expansion failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpandError {
    /// Malformed text (unterminated quote, bad substitution, ...).
    Syntax(String),
    /// `${V:?msg}` / `${V?msg}` on an unset (or empty) variable.
    Required(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Syntax(m) | ExpandError::Required(m) => f.write_str(m),
        }
    }
}

/// Looks up a variable; `None` means unset.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands `text` with the given escape character (`\` or `` ` ``).
pub fn expand(text: &str, escape: char, env: Lookup<'_>) -> Result<Expansion, ExpandError> {
    let mut lx = Lexer::new(text, escape, env, false);
    let (value, words) = lx.process_stop_on(&[], false)?;
    Ok(Expansion {
        value,
        words: words.finish(),
        used: lx.used,
        unset: lx.unset,
    })
}

/// Expands COPY/ADD heredoc content like BuildKit's raw expansion: `$`
/// forms are expanded and the escape character works as usual (`\$V` is a
/// literal `$V`, `\x` is `x`), but quotes are kept literally.
pub fn expand_heredoc(text: &str, escape: char, env: Lookup<'_>) -> Result<Expansion, ExpandError> {
    let mut lx = Lexer::new(text, escape, env, true);
    let (value, _) = lx.process_stop_on(&[], false)?;
    Ok(Expansion {
        words: vec![value.clone()],
        value,
        used: lx.used,
        unset: lx.unset,
    })
}

#[derive(Default)]
struct WordsBuilder {
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl WordsBuilder {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            self.add_blank();
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.cur.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }
    fn add_blank(&mut self) {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.cur));
            self.in_word = false;
        }
    }
    fn finish(mut self) -> Vec<String> {
        self.add_blank();
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: Lookup<'a>,
    heredoc: bool,
    used: Vec<String>,
    unset: Vec<String>,
}

const UNTERMINATED_SQ: &str = "unexpected end of statement while looking for matching single-quote";
const UNTERMINATED_DQ: &str = "unexpected end of statement while looking for matching double-quote";

fn syntax(m: impl Into<String>) -> ExpandError {
    ExpandError::Syntax(m.into())
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, env: Lookup<'a>, heredoc: bool) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            env,
            heredoc,
            used: vec![],
            unset: vec![],
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get(&mut self, name: &str) -> Option<String> {
        self.get_tracked(name, true)
    }

    /// `report_unset` is false for forms that handle unset themselves
    /// (`${V:-w}`, `${V+w}`, `${V?m}`): those are not "undefined" uses.
    fn get_tracked(&mut self, name: &str, report_unset: bool) -> Option<String> {
        let v = (self.env)(name);
        if v.is_none() && !report_unset {
            return v;
        }
        let list = if v.is_some() {
            &mut self.used
        } else {
            &mut self.unset
        };
        if !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
        v
    }

    /// Processes until one of `stops` (consumed) or the end. With stops, the
    /// end is an error the caller turns into "missing '}'".
    /// `raw_escapes` keeps escape characters so pattern operators can see
    /// which characters were escaped.
    fn process_stop_on(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
    ) -> Result<(String, WordsBuilder), ExpandError> {
        let mut out = String::new();
        let mut words = WordsBuilder::default();
        loop {
            let Some(c) = self.peek() else {
                if stops.is_empty() {
                    return Ok((out, words));
                }
                return Err(syntax("syntax error: missing '}'"));
            };
            if stops.contains(&c) {
                self.next();
                return Ok((out, words));
            }
            match c {
                '\'' if !self.heredoc => {
                    self.next();
                    words.in_word = true;
                    loop {
                        match self.next() {
                            None => return Err(syntax(UNTERMINATED_SQ)),
                            Some('\'') => break,
                            Some(ch) => {
                                // Quoted characters are literal, even for
                                // pattern operators.
                                if raw_escapes && is_pattern_meta(ch) {
                                    out.push('\\');
                                }
                                out.push(ch);
                                words.add_raw_char(ch);
                            }
                        }
                    }
                }
                '"' if !self.heredoc => {
                    self.process_double_quote(&mut out, &mut words, raw_escapes)?
                }
                '$' => {
                    let v = self.process_dollar()?;
                    if raw_escapes {
                        out.push_str(&escape_pattern(&v));
                    } else {
                        out.push_str(&v);
                    }
                    words.add_string(&v);
                }
                c if c == self.escape => {
                    self.next();
                    let Some(n) = self.next() else { break };
                    if raw_escapes {
                        out.push('\\');
                    }
                    out.push(n);
                    words.add_raw_char(n);
                }
                c => {
                    self.next();
                    out.push(c);
                    words.add_char(c);
                }
            }
        }
        Ok((out, words))
    }

    fn process_double_quote(
        &mut self,
        out: &mut String,
        words: &mut WordsBuilder,
        raw_escapes: bool,
    ) -> Result<(), ExpandError> {
        self.next();
        words.in_word = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(syntax(UNTERMINATED_DQ));
            };
            if c == '"' {
                self.next();
                return Ok(());
            }
            if c == '$' {
                let v = self.process_dollar()?;
                if raw_escapes {
                    out.push_str(&escape_pattern(&v));
                } else {
                    out.push_str(&v);
                }
                words.add_raw_string(&v);
                continue;
            }
            self.next();
            let mut ch = c;
            if c == self.escape {
                match self.peek() {
                    None => continue,
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        ch = n;
                        self.next();
                    }
                    _ => {}
                }
            }
            if raw_escapes && is_pattern_meta(ch) {
                out.push('\\');
            }
            out.push(ch);
            words.add_raw_char(ch);
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && "@*#?-$!0".contains(c) {
                self.next();
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.get(&name).unwrap_or_default());
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err(syntax("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(syntax("syntax error: bad substitution")),
            _ => {}
        }
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err(syntax("syntax error: missing '}'"));
        };
        match ch {
            '}' => Ok(self.get(&name).unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut op = ch;
                let null_is_unset = ch == ':';
                if null_is_unset {
                    op = self
                        .next()
                        .ok_or_else(|| syntax("syntax error: missing '}'"))?;
                    if !matches!(op, '+' | '-' | '?') {
                        return Err(syntax(format!(
                            "unsupported modifier (:{op}) in substitution"
                        )));
                    }
                }
                let pattern_op = op == '#' || op == '%';
                let (mut word, _) = self.process_stop_on(&['}'], pattern_op)?;
                let value = self.get_tracked(&name, pattern_op);
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match op {
                    '-' => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => {
                        if value.is_none() || empty {
                            let msg = if !word.is_empty() {
                                word
                            } else if value.is_none() {
                                "is not allowed to be unset".into()
                            } else {
                                "is not allowed to be empty".into()
                            };
                            return Err(ExpandError::Required(format!("{name}: {msg}")));
                        }
                        Ok(value.unwrap_or_default())
                    }
                    _ => {
                        let greedy = word.starts_with(op);
                        if greedy {
                            word.remove(0);
                        }
                        let v = value.unwrap_or_default();
                        let pat = Glob::new(&word);
                        Ok(if op == '#' {
                            trim_prefix(&pat, &v, greedy)
                        } else {
                            trim_suffix(&pat, &v, greedy)
                        })
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let before = self.pos;
                let (pattern, _) = self.process_stop_on(&['/', '}'], true)?;
                // Did the pattern end at '}' (no replacement given)?
                let ended_at_brace =
                    self.chars.get(self.pos - 1) == Some(&'}') && self.pos > before;
                let replacement = if ended_at_brace {
                    String::new()
                } else {
                    self.process_stop_on(&['}'], false)?.0
                };
                let v = self.get(&name).unwrap_or_default();
                if pattern.is_empty() {
                    return Ok(v);
                }
                Ok(replace(&Glob::new(&pattern), &v, &replacement, all))
            }
            c => Err(syntax(format!(
                "unsupported modifier ({c}) in substitution"
            ))),
        }
    }
}

fn is_pattern_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '\\')
}

fn escape_pattern(v: &str) -> String {
    // Variable values inside a pattern are literal text.
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if is_pattern_meta(c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// A shell pattern (`*`, `?`, `[...]` with `!`/`^` negation and ranges,
/// `\x` literal). Matched with a small DP instead of a regex: no compile
/// cost per expansion and no size limits.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Any,
    One,
    Lit(char),
    Class { neg: bool, items: Vec<(char, char)> },
}

struct Glob(Vec<Tok>);

impl Glob {
    fn new(p: &str) -> Glob {
        let chars: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Any) {
                        toks.push(Tok::Any);
                    }
                }
                '?' => toks.push(Tok::One),
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => match parse_class(&chars, i) {
                    Some((tok, next)) => {
                        toks.push(tok);
                        i = next;
                    }
                    None => toks.push(Tok::Lit('[')),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Glob(toks)
    }

    /// `ends[j]` is true when the whole pattern matches `s[..j]`.
    fn match_ends(&self, s: &[char]) -> Vec<bool> {
        let n = s.len();
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for t in &self.0 {
            let mut next = vec![false; n + 1];
            if *t == Tok::Any {
                let mut on = false;
                for j in 0..=n {
                    on |= reach[j];
                    next[j] = on;
                }
            } else {
                for j in 0..n {
                    if reach[j] && tok_matches(t, s[j]) {
                        next[j + 1] = true;
                    }
                }
            }
            reach = next;
            if !reach.iter().any(|&r| r) {
                break;
            }
        }
        reach
    }

    fn reversed(&self) -> Glob {
        Glob(self.0.iter().rev().cloned().collect())
    }
}

fn tok_matches(t: &Tok, c: char) -> bool {
    match t {
        Tok::Any | Tok::One => true,
        Tok::Lit(l) => *l == c,
        Tok::Class { neg, items } => items.iter().any(|&(a, b)| a <= c && c <= b) != *neg,
    }
}

/// Parses a class after `[`; `None` if it is not closed (then `[` is a
/// literal, as in shells).
fn parse_class(chars: &[char], mut i: usize) -> Option<(Tok, usize)> {
    let mut neg = false;
    if matches!(chars.get(i), Some('!' | '^')) {
        neg = true;
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        i += 1;
        if c == ']' && !first {
            return Some((Tok::Class { neg, items }, i));
        }
        first = false;
        if c == '\\' {
            c = *chars.get(i)?;
            i += 1;
        }
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&e| e != ']') {
            let mut e = chars[i + 1];
            i += 2;
            if e == '\\' {
                e = *chars.get(i)?;
                i += 1;
            }
            items.push((c, e));
        } else {
            items.push((c, c));
        }
    }
}

fn pick(ends: &[bool], longest: bool) -> Option<usize> {
    if longest {
        ends.iter().rposition(|&e| e)
    } else {
        ends.iter().position(|&e| e)
    }
}

fn trim_prefix(p: &Glob, v: &str, longest: bool) -> String {
    let s: Vec<char> = v.chars().collect();
    match pick(&p.match_ends(&s), longest) {
        Some(j) => s[j..].iter().collect(),
        None => v.to_string(),
    }
}

fn trim_suffix(p: &Glob, v: &str, longest: bool) -> String {
    // Match the reversed pattern against the reversed value.
    let mut s: Vec<char> = v.chars().collect();
    s.reverse();
    match pick(&p.reversed().match_ends(&s), longest) {
        Some(j) => s[j..].iter().rev().collect(),
        None => v.to_string(),
    }
}

/// `${V/p/r}` and `${V//p/r}`: leftmost-longest matches; empty matches
/// are not replaced.
fn replace(p: &Glob, v: &str, r: &str, all: bool) -> String {
    let s: Vec<char> = v.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut done = false;
    while i < s.len() {
        if !done && let Some(len) = pick(&p.match_ends(&s[i..]), true).filter(|&l| l > 0) {
            out.push_str(r);
            i += len;
            done = !all;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}
