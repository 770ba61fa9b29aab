//! Diagnostics: errors and lint warnings that point at a file, line and
//! column, rendered by miette with the offending line and a caret.
//!
//! This module only builds and carries findings; it does not decide what is
//! an error (parse/resolve do) nor which lint rules apply (lint does).

use std::fmt;
use std::sync::Arc;

use miette::SourceSpan;
use serde::Serialize;

/// Byte range into the Dockerfile text.
pub type Span = std::ops::Range<usize>;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The Dockerfile cannot be built as written.
    Error,
    /// A BuildKit-style lint finding; the build proceeds.
    Warning,
}

/// The source text a finding points into, shared between findings.
#[derive(Clone, PartialEq)]
pub struct Source {
    /// File name shown in messages (e.g. `Dockerfile`).
    pub name: Arc<str>,
    /// The full text.
    pub text: Arc<str>,
    /// Byte offset of each line start, for O(log n) line lookups.
    line_starts: Arc<[usize]>,
}

impl fmt::Debug for Source {
    // The text can be large; printing it in every Debug output is noise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({:?})", self.name)
    }
}

impl Source {
    /// Wraps a file name and its text.
    pub fn new(name: &str, text: &str) -> Self {
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            name: name.into(),
            text: text.into(),
            line_starts: line_starts.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One finding: an error or a warning, with its location.
///
/// `Display` gives `file:line:col: message`, so a plain log line is already
/// actionable; the miette rendering adds the source line and a caret.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Diag {
    /// Error or warning.
    pub severity: Severity,
    /// Stable identifier: a BuildKit rule name for lint warnings
    /// (e.g. `JSONArgsRecommended`), or a kebab-case error code.
    pub code: String,
    /// Human readable message.
    pub message: String,
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Byte span in the file.
    pub span: Span,
    /// What to do about it, when we know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip)]
    src: Source,
}

impl Diag {
    /// Creates a finding at `span` of `source`.
    pub fn new(
        severity: Severity,
        code: &str,
        message: impl Into<String>,
        source: &Source,
        span: Span,
    ) -> Self {
        let len = source.text.len();
        let start = floor_char_boundary(&source.text, span.start.min(len));
        let end = floor_char_boundary(&source.text, span.end.clamp(start, len));
        let (line, column) = source.line_col(start);
        Diag {
            severity,
            code: code.to_string(),
            message: message.into(),
            file: source.name.to_string(),
            line,
            column,
            span: start..end,
            help: None,
            src: source.clone(),
        }
    }

    /// The line the finding points at, with a caret under its span, as
    /// plain text (`  3 | RUNN echo hi` / `    | ^^^^`): what a log shows
    /// without miette's rendering.
    pub fn excerpt(&self) -> String {
        let text = &self.src.text;
        let start = self.span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = &text[line_start..line_end];
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        let indent: String = text[line_start..start]
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = text[start..self.span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        format!(" {number} | {line}\n {pad} | {indent}{}", "^".repeat(width))
    }

    /// An error finding.
    pub fn error(code: &str, message: impl Into<String>, source: &Source, span: Span) -> Self {
        Self::new(Severity::Error, code, message, source, span)
    }

    /// A warning finding.
    pub fn warning(code: &str, message: impl Into<String>, source: &Source, span: Span) -> Self {
        Self::new(Severity::Warning, code, message, source, span)
    }

    /// Adds a help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl miette::Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        // Lint rules are CamelCase and documented by Docker; link them.
        if self.severity == Severity::Warning && self.code.starts_with(|c: char| c.is_uppercase()) {
            let slug = camel_to_kebab(&self.code);
            return Some(Box::new(format!(
                "https://docs.docker.com/go/dockerfile/rule/{slug}/"
            )));
        }
        None
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = SourceSpan::from(self.span.start..self.span.end.max(self.span.start));
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_with_span(Some(format!("line {}", self.line)), span),
        )))
    }
}

// Delegating to a NamedSource keeps the file name in miette's header.
impl miette::SourceCode for Diag {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self
            .src
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

fn camel_to_kebab(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// All findings of a parse or resolve: errors first matter, warnings ride
/// along. Returned as the `Err` of [`crate::parse()`] / [`crate::resolve`]
/// when at least one error exists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, thiserror::Error)]
pub struct Diagnostics {
    /// Findings in source order (errors and warnings mixed).
    pub items: Vec<Diag>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in self.items.iter().filter(|d| d.is_error()) {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{d}\n{}", d.excerpt())?;
            if let Some(help) = &d.help {
                write!(f, "\n help: {help}")?;
            }
        }
        if first {
            write!(f, "no errors")?;
        }
        Ok(())
    }
}

impl miette::Diagnostic for Diagnostics {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.items.iter().map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}

impl Diagnostics {
    /// Adds a finding.
    pub fn push(&mut self, d: Diag) {
        self.items.push(d);
    }

    /// True if any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diag::is_error)
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diag> {
        self.items.iter().filter(|d| d.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diag> {
        self.items.iter().filter(|d| !d.is_error())
    }

    /// Sorts findings by position, keeping insertion order for ties.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| (d.span.start, d.span.end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_and_kebab() {
        let s = Source::new("Dockerfile", "FROM a\nRUN x\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(7), (2, 1));
        assert_eq!(s.line_col(9), (2, 3));
        assert_eq!(
            camel_to_kebab("JSONArgsRecommended"),
            "json-args-recommended"
        );
        assert_eq!(camel_to_kebab("FromAsCasing"), "from-as-casing");
        let d = Diag::error("x", "bad", &s, 7..10);
        assert_eq!(d.to_string(), "Dockerfile:2:1: bad");
    }
}
