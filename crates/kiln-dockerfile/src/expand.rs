//! Variable expansion and quote removal for one word or a list of words,
//! with BuildKit's shell-like rules: `$V`, `${V}`, the `${V:-w}` family,
//! `${V#p}`/`%`/`/` pattern operators, single and double quotes and the
//! escape character.
//!
//! It does not decide which instructions expand (see `instructions`) or
//! where values come from (see `scope`); it only sees a lookup function.

use regex::Regex;

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

/// Expands heredoc content: only `$` forms and escapes of `$` and the escape
/// character are special; quotes are literal, like a shell heredoc.
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
                    if self.heredoc && n != '$' && n != self.escape {
                        out.push(c);
                    }
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
                        let re = pattern_regex(&word)?;
                        Ok(if op == '#' {
                            trim_prefix(&re, &v, greedy)
                        } else {
                            trim_suffix(&re, &v, greedy)
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
                let re = Regex::new(&pattern_to_regex(&pattern)?)
                    .map_err(|e| syntax(format!("bad pattern in substitution: {e}")))?;
                Ok(if all {
                    re.replace_all(&v, regex::NoExpand(&replacement))
                        .into_owned()
                } else {
                    re.replace(&v, regex::NoExpand(&replacement)).into_owned()
                })
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

/// Converts a shell pattern (`*`, `?`, `[...]`, `\x`) to a regex body.
fn pattern_to_regex(p: &str) -> Result<String, ExpandError> {
    let mut re = String::from("(?s)");
    let mut it = p.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '\\' => match it.next() {
                Some(n) => re.push_str(&regex::escape(&n.to_string())),
                None => re.push_str("\\\\"),
            },
            '[' => {
                let mut class = String::from("[");
                if matches!(it.peek(), Some('!' | '^')) {
                    it.next();
                    class.push('^');
                }
                let mut closed = false;
                let mut first = true;
                while let Some(n) = it.next() {
                    if n == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    match n {
                        '\\' => {
                            if let Some(e) = it.next() {
                                class.push_str(&regex::escape(&e.to_string()));
                            }
                        }
                        '[' | '&' | '~' => {
                            class.push('\\');
                            class.push(n);
                        }
                        _ => class.push(n),
                    }
                }
                if !closed {
                    // An unclosed bracket is a literal in shells.
                    re.push_str("\\[");
                    re.push_str(&regex::escape(&class[1..]));
                } else {
                    class.push(']');
                    re.push_str(&class);
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    Ok(re)
}

fn pattern_regex(p: &str) -> Result<Regex, ExpandError> {
    let body = pattern_to_regex(p)?;
    Regex::new(&format!("^(?:{body})$"))
        .map_err(|e| syntax(format!("bad pattern in substitution: {e}")))
}

fn boundaries(v: &str) -> Vec<usize> {
    let mut b: Vec<usize> = v.char_indices().map(|(i, _)| i).collect();
    b.push(v.len());
    b
}

fn trim_prefix(re: &Regex, v: &str, longest: bool) -> String {
    let b = boundaries(v);
    let mut it: Box<dyn Iterator<Item = &usize>> = if longest {
        Box::new(b.iter().rev())
    } else {
        Box::new(b.iter())
    };
    match it.find(|&&i| re.is_match(&v[..i])) {
        Some(&i) => v[i..].to_string(),
        None => v.to_string(),
    }
}

fn trim_suffix(re: &Regex, v: &str, longest: bool) -> String {
    let b = boundaries(v);
    let mut it: Box<dyn Iterator<Item = &usize>> = if longest {
        Box::new(b.iter())
    } else {
        Box::new(b.iter().rev())
    };
    match it.find(|&&i| re.is_match(&v[i..])) {
        Some(&i) => v[..i].to_string(),
        None => v.to_string(),
    }
}
