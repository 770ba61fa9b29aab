//! Parser-level word splitting, done before any variable expansion:
//! leading `--flag` extraction, the quote-preserving split used for
//! `KEY=VALUE` lists, plain whitespace splitting and heredoc markers.
//!
//! Nothing here expands variables or removes quotes from argument words
//! (that is [`crate::expand`]); flag words are the exception, because
//! BuildKit unquotes them while extracting them.

/// A word and the byte offset where it starts in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The word text.
    pub text: String,
    /// Byte range in the input.
    pub start: usize,
    /// End offset (exclusive).
    pub end: usize,
}

/// Extracts leading `--name[=value]` words, the way BuildKit does before
/// handing the rest to the instruction: quotes inside a flag word are removed
/// and `\` escapes the next character. A bare `--` ends the flags.
/// Returns the flag words (without quotes) and the offset of the rest.
pub fn extract_flags(line: &str) -> (Vec<Word>, usize) {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_space(b[pos]) {
            pos += 1;
        }
        if pos + 1 >= b.len() || b[pos] != b'-' || b[pos + 1] != b'-' {
            return (words, pos.min(b.len()));
        }
        let start = pos;
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        let mut chars = line[pos..].char_indices().peekable();
        let mut end = b.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = pos + i;
                    break;
                }
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if let Some((_, n)) = chars.next() {
                        word.push(n);
                    }
                }
                _ => word.push(c),
            }
        }
        pos = end;
        if word == "--" {
            while pos < b.len() && is_space(b[pos]) {
                pos += 1;
            }
            return (words, pos);
        }
        if blank_ok || !word.is_empty() {
            words.push(Word {
                text: word,
                start,
                end,
            });
        }
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r' || b == b'\n'
}

/// Splits on unquoted whitespace, keeping quotes and escape characters in
/// the words (BuildKit's `parseWords`, used for ENV, LABEL and ARG). A quote
/// can be escaped outside quotes and inside double quotes; nothing can be
/// escaped inside single quotes.
pub fn split_keep_quotes(rest: &str, escape: char) -> Vec<Word> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start = None::<usize>;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut it = rest.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match quote {
            None => {
                if c.is_whitespace() {
                    if let Some(s) = start.take() {
                        if blank_ok || !word.is_empty() {
                            words.push(Word {
                                text: std::mem::take(&mut word),
                                start: s,
                                end: i,
                            });
                        }
                        word.clear();
                        blank_ok = false;
                    }
                    continue;
                }
                start.get_or_insert(i);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                    word.push(c);
                } else if c == escape {
                    // An escape at the very end is dropped.
                    if let Some((_, n)) = it.next() {
                        word.push(c);
                        word.push(n);
                    }
                } else {
                    word.push(c);
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                    word.push(c);
                } else if c == escape && q != '\'' {
                    match it.next() {
                        Some((_, n)) => {
                            word.push(c);
                            word.push(n);
                        }
                        None => quote = None,
                    }
                } else {
                    word.push(c);
                }
            }
        }
    }
    if let Some(s) = start
        && (blank_ok || !word.is_empty())
    {
        words.push(Word {
            text: word,
            start: s,
            end: rest.len(),
        });
    }
    words
}

/// Plain whitespace split (BuildKit's `parseStringsWhitespaceDelimited`):
/// quotes are not special here, they are handled later by expansion.
pub fn split_whitespace(rest: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in rest.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push(Word {
                    text: rest[s..i].to_string(),
                    start: s,
                    end: i,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(Word {
            text: rest[s..].to_string(),
            start: s,
            end: rest.len(),
        });
    }
    out
}

/// A heredoc marker found in an instruction line.
#[derive(Debug, Clone, PartialEq)]
pub struct HeredocMarker {
    /// Terminator word, quotes removed.
    pub name: String,
    /// `<<-`: leading tabs are stripped from content and terminator.
    pub chomp: bool,
    /// False when any part of the delimiter was quoted.
    pub expand: bool,
    /// File descriptor prefix (`3<<EOF`), 0 when absent.
    pub fd: u32,
    /// The marker word as written (e.g. `<<"EOF"`).
    pub word: String,
}

/// Recognises `[fd]<<[-]NAME` in one word (with raw quotes kept).
pub fn heredoc_marker(word: &str) -> Option<HeredocMarker> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    // Remove quotes and backslash escapes; a delimiter that is quoted in
    // any part disables expansion, like in a POSIX shell.
    let mut name = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    let mut it = rest.chars();
    while let Some(c) = it.next() {
        match quote {
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                quoted = true;
            }
            Some(q) if c == q => quote = None,
            Some('\'') => name.push(c),
            _ if c == '\\' => {
                if let Some(n) = it.next() {
                    name.push(n);
                }
            }
            None if c.is_whitespace() => return None,
            _ => name.push(c),
        }
    }
    if quote.is_some() || name.is_empty() {
        return None;
    }
    let fd = word[..digits].parse().unwrap_or(0);
    Some(HeredocMarker {
        name,
        chomp,
        expand: !quoted,
        fd,
        word: word.to_string(),
    })
}

/// True for a marker with the delimiter in the next word (`<< EOF`,
/// accepted since BuildKit 0.22).
pub fn is_bare_marker(word: &str) -> bool {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    matches!(&word[digits..], "<<" | "<<-")
}

/// All heredoc markers in an instruction's argument text, in order.
pub fn heredoc_markers(args: &str) -> Vec<HeredocMarker> {
    let words = split_keep_quotes(args, '\\');
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i].text;
        if is_bare_marker(w)
            && i + 1 < words.len()
            && let Some(mut m) = heredoc_marker(&format!("{w}{}", words[i + 1].text))
        {
            m.word = w.clone();
            out.push(m);
            i += 2;
            continue;
        }
        if let Some(m) = heredoc_marker(w) {
            out.push(m);
        }
        i += 1;
    }
    out
}

/// True when the text is exactly one heredoc marker (`<<EOF`, `<< EOF`):
/// then RUN runs the heredoc body itself.
pub fn is_only_heredoc(text: &str) -> bool {
    let words = split_keep_quotes(text, '\\');
    match words.as_slice() {
        [w] => heredoc_marker(&w.text).is_some(),
        [a, b] => {
            is_bare_marker(&a.text) && heredoc_marker(&format!("{}{}", a.text, b.text)).is_some()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(w: &[Word]) -> Vec<&str> {
        w.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn flags() {
        let (f, rest) = extract_flags("--mount=type=cache,target=/x --network=none echo hi");
        assert_eq!(
            texts(&f),
            ["--mount=type=cache,target=/x", "--network=none"]
        );
        assert_eq!(rest, 44);
        let (f, rest) = extract_flags(r#"--chown="a b" --link src dst"#);
        assert_eq!(texts(&f), ["--chown=a b", "--link"]);
        assert_eq!(&r#"--chown="a b" --link src dst"#[rest..], "src dst");
        let (f, rest) = extract_flags("-- --notaflag");
        assert!(f.is_empty());
        assert_eq!(rest, 3);
        let (f, rest) = extract_flags("echo --x");
        assert!(f.is_empty());
        assert_eq!(rest, 0);
        let (f, rest) = extract_flags("--link");
        assert_eq!(texts(&f), ["--link"]);
        assert_eq!(rest, 6);
    }

    #[test]
    fn keep_quotes() {
        let w = split_keep_quotes(r#"A="a b" B=c\ d C='x\' D"#, '\\');
        assert_eq!(texts(&w), [r#"A="a b""#, r"B=c\ d", r"C='x\'", "D"]);
        let w = split_keep_quotes("  a   b ", '\\');
        assert_eq!(texts(&w), ["a", "b"]);
        assert_eq!((w[1].start, w[1].end), (6, 7));
        let w = split_keep_quotes(r#"A="" B"#, '\\');
        assert_eq!(texts(&w), [r#"A="""#, "B"]);
    }

    #[test]
    fn heredocs() {
        let m = heredoc_marker("<<EOF").unwrap();
        assert_eq!((m.name.as_str(), m.chomp, m.expand), ("EOF", false, true));
        let m = heredoc_marker("<<-'EOT'").unwrap();
        assert_eq!((m.name.as_str(), m.chomp, m.expand), ("EOT", true, false));
        let m = heredoc_marker(r#"<<"E"OF"#).unwrap();
        assert_eq!((m.name.as_str(), m.expand), ("EOF", false));
        assert_eq!(heredoc_marker("3<<X").unwrap().fd, 3);
        assert!(heredoc_marker("<<").is_none());
        assert!(heredoc_marker("a<<b").is_none());
        assert!(heredoc_marker("<<<x").is_none());
        assert_eq!(heredoc_markers("cat << EOF").len(), 1);
        assert!(
            is_only_heredoc("<< EOF") && is_only_heredoc("<<-'X'") && !is_only_heredoc("cat <<EOF")
        );
        let ms = heredoc_markers("cat <<A > /a && cat <<-\"B\" > /b");
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[1].name, "B");
    }
}
