//! The TTY progress view, drawn like BuildKit's:
//!
//! ```text
//! [+] Building 3.4s (5/7)
//!  => [build 1/4] FROM kiln-test/busybox:1                          0.0s
//!  => CACHED [build 2/4] COPY go.mod /src/                          0.0s
//!  => [build 3/4] RUN make                                          2.1s
//!  => => # cc -c main.c
//!  => => # cc -o app main.o
//! ```
//!
//! Each frame overwrites the last one (cursor up, erase to the end of each
//! line). A running step shows its last [`OUTPUT_LINES`] lines of output,
//! dimmed; a finished one only its line, marked `CACHED` or `ERROR` or, when
//! it ran, coloured as done. While the build runs the frame is kept to the
//! terminal's height by leaving out the oldest finished steps; the final
//! frame shows every step and stays on the screen. Colours follow NO_COLOR.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::progress::Screen;

/// Output lines shown under a running step.
pub const OUTPUT_LINES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Done,
    Cached,
    Error,
}

pub(crate) struct StepView {
    pub id: usize,
    pub name: String,
    pub began: Instant,
    pub took: Option<Duration>,
    pub status: Status,
    pub tail: VecDeque<String>,
}

const DIM: &str = "\x1b[2m";
const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// The terminal's (columns, rows) on standard error; 80x24 if unknown.
fn size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(w) if w.ws_col > 0 && w.ws_row > 0 => (usize::from(w.ws_col), usize::from(w.ws_row)),
        _ => (80, 24),
    }
}

/// `text` made safe for one terminal line: control characters (escape
/// sequences of the RUN's own output, tabs, newlines of a heredoc) become
/// spaces, and it is cut to `width` characters.
fn fit(text: &str, width: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(width)
        .collect()
}

/// ` => NAME` padded so that `right` ends at the last column.
fn row(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1);
    let left = fit(left, room);
    let pad = room - left.chars().count();
    format!("{left}{} {right}", " ".repeat(pad))
}

struct Line {
    text: String,
    colour: Option<&'static str>,
}

/// A step's line and, while it runs, its output.
fn step_lines(v: &StepView, width: usize, out: &mut Vec<Line>) {
    let took = v.took.unwrap_or_else(|| v.began.elapsed()).as_secs_f64();
    let (marker, colour) = match v.status {
        Status::Running => ("", None),
        Status::Done => ("", Some(BLUE)),
        Status::Cached => ("CACHED ", Some(BLUE)),
        Status::Error => ("ERROR ", Some(RED)),
    };
    out.push(Line {
        text: row(
            &format!(" => {marker}{}", v.name),
            &format!("{took:.1}s"),
            width,
        ),
        colour,
    });
    if v.status == Status::Running {
        for l in &v.tail {
            out.push(Line {
                text: fit(&format!(" => => # {l}"), width),
                colour: Some(DIM),
            });
        }
    }
}

fn frame(s: &Screen, start: Instant, last: bool) -> Vec<Line> {
    let (cols, rows) = size();
    // The last column stays empty: writing there wraps on some terminals.
    let width = cols.saturating_sub(1).max(20);
    let done = s
        .steps
        .iter()
        .filter(|v| v.status != Status::Running)
        .count();
    let mut header = format!(
        "[+] Building {:.1}s ({done}/{})",
        start.elapsed().as_secs_f64(),
        s.steps.len()
    );
    if last {
        header.push_str(" FINISHED");
    }
    let mut lines = vec![Line {
        text: fit(&header, width),
        colour: None,
    }];
    // While running, leave out the oldest finished steps until the frame
    // fits the screen (a frame taller than the screen cannot be redrawn).
    let max = rows.saturating_sub(1).max(2);
    let mut shown: Vec<&StepView> = s.steps.iter().collect();
    if !last {
        let height = |shown: &[&StepView]| {
            1 + shown
                .iter()
                .map(|v| {
                    1 + if v.status == Status::Running {
                        v.tail.len()
                    } else {
                        0
                    }
                })
                .sum::<usize>()
        };
        while height(&shown) > max {
            match shown.iter().position(|v| v.status != Status::Running) {
                Some(i) => {
                    shown.remove(i);
                }
                None => break,
            }
        }
    }
    for v in shown {
        step_lines(v, width, &mut lines);
    }
    if !last && lines.len() > max {
        // Only running steps left and still too tall: keep the newest lines.
        lines.drain(1..1 + lines.len() - max);
    }
    lines
}

/// Draws the current state over the previous frame.
pub(crate) fn redraw(s: &mut Screen, start: Instant, last: bool) {
    if s.steps.is_empty() && !last {
        return; // nothing to show yet (a warning may still come first)
    }
    let colours = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let lines = frame(s, start, last);
    let mut buf = String::new();
    if s.drawn > 0 {
        buf.push_str(&format!("\x1b[{}A", s.drawn));
    }
    for l in &lines {
        buf.push('\r');
        match l.colour.filter(|_| colours) {
            Some(c) => buf.push_str(&format!("{c}{}{RESET}", l.text)),
            None => buf.push_str(&l.text),
        }
        buf.push_str("\x1b[K\n");
    }
    // Whatever the previous, taller frame left below.
    buf.push_str("\x1b[J");
    s.drawn = lines.len();
    let _ = s.out.write_all(buf.as_bytes());
    let _ = s.out.flush();
}

/// Prints `text` above the view; the next frame is drawn below it.
pub(crate) fn note(s: &mut Screen, text: &str) {
    let mut buf = String::new();
    if s.drawn > 0 {
        buf.push_str(&format!("\x1b[{}A\r\x1b[J", s.drawn));
    }
    buf.push_str(text);
    buf.push('\n');
    s.drawn = 0;
    let _ = s.out.write_all(buf.as_bytes());
    let _ = s.out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, status: Status, tail: &[&str]) -> StepView {
        StepView {
            id: 0,
            name: name.into(),
            began: Instant::now(),
            took: (status != Status::Running).then_some(Duration::from_millis(1200)),
            status,
            tail: tail.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn screen(steps: Vec<StepView>) -> Screen {
        Screen {
            out: Box::new(std::io::sink()),
            steps,
            drawn: 0,
            finished: false,
        }
    }

    #[test]
    fn running_steps_show_their_output_and_finished_ones_do_not() {
        let s = screen(vec![
            view("[a 1/3] FROM x", Status::Done, &["hidden"]),
            view("[a 2/3] COPY . .", Status::Cached, &[]),
            view("[a 3/3] RUN make", Status::Running, &["cc main.c"]),
            view("[b 2/2] RUN false", Status::Error, &["boom"]),
        ]);
        let text: Vec<String> = frame(&s, Instant::now(), true)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert!(text[0].starts_with("[+] Building ") && text[0].ends_with("(3/4) FINISHED"));
        assert!(text[1].starts_with(" => [a 1/3] FROM x ") && text[1].ends_with(" 1.2s"));
        assert!(text[2].starts_with(" => CACHED [a 2/3] COPY . ."));
        assert!(text[3].starts_with(" => [a 3/3] RUN make"));
        assert_eq!(text[4], " => => # cc main.c");
        assert!(text[5].starts_with(" => ERROR [b 2/2] RUN false"));
        assert_eq!(text.len(), 6);
    }

    #[test]
    fn control_characters_cannot_escape_the_line() {
        assert_eq!(fit("a\x1b[2Jb\tc\n", 80), "a [2Jb c ");
        assert_eq!(fit("abcdef", 3), "abc");
    }
}
