//! The `serve` loop: one JSON request per line in, one JSON answer per line out, in
//! order, flushed per answer, until EOF. A malformed line (bad JSON, invalid UTF-8, an
//! unknown target, a missing field, an empty line, a line longer than
//! [`MAX_LINE_BYTES`]) gets `{"error": "..."}` and the loop goes on.

use crate::decision::{Decision, Target};
use crate::guard::Guard;
use serde::Deserialize;
use std::io::{BufRead, Write};

/// The longest request line read; a longer one is answered with an error, and the
/// rest of it is skipped without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A request, as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeRequest {
    /// The work item.
    pub work_item: String,
    /// The target.
    pub target: Target,
    /// The caller.
    pub caller: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    work_item: Option<String>,
    target: Option<String>,
    #[serde(default)]
    caller: Option<String>,
}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<ServeRequest, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("the request is not valid UTF-8: {e}"))?;
    if text.trim().is_empty() {
        return Err("empty request line".to_owned());
    }
    let raw: RawRequest = serde_json::from_str(text)
        .map_err(|e| format!("the request is not a valid JSON request: {e}"))?;
    let work_item = raw.work_item.ok_or("missing field `work_item`")?;
    let target = raw.target.ok_or("missing field `target`")?;
    let target = target.parse::<Target>()?;
    Ok(ServeRequest {
        work_item,
        target,
        caller: raw.caller,
    })
}

/// The answer to a line that could not be parsed.
pub fn error_line(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// One line read: its bytes, or the fact that it was too long.
enum Line {
    Complete(Vec<u8>),
    TooLong(usize),
}

/// Read one line of at most `MAX_LINE_BYTES`; `None` at EOF.
fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut skipped = 0usize;
    let mut read_any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (read_any, skipped) {
                (false, _) => None,
                (true, 0) => Some(Line::Complete(line)),
                (true, n) => Some(Line::TooLong(n)),
            });
        }
        read_any = true;
        let (taken, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if skipped == 0 && line.len() + taken <= MAX_LINE_BYTES {
            line.extend_from_slice(&chunk[..taken]);
        } else {
            skipped += line.len() + taken;
            line.clear();
        }
        input.consume(taken + usize::from(end));
        if end {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(if skipped == 0 {
                Line::Complete(line)
            } else {
                Line::TooLong(skipped)
            }));
        }
    }
}

/// Serve until EOF on `input`. Only an I/O error on `output` ends it early.
pub fn serve(
    guard: &Guard,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<u64> {
    let mut answered = 0;
    loop {
        let line = match read_line(input) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(target: "deploy_guard::serve", "cannot read stdin: {e}; stopping");
                break;
            }
        };
        let answer = match line {
            Line::TooLong(n) => error_line(&format!(
                "the request line is {n} bytes long, more than {MAX_LINE_BYTES}"
            )),
            Line::Complete(bytes) => match parse_request(&bytes) {
                Ok(request) => answer(guard, &request).to_json(),
                Err(message) => error_line(&message),
            },
        };
        output.write_all(answer.as_bytes())?;
        output.write_all(b"\n")?;
        output.flush()?;
        answered += 1;
    }
    Ok(answered)
}

fn answer(guard: &Guard, request: &ServeRequest) -> Decision {
    guard.decide(
        &request.work_item,
        request.target,
        request.caller.as_deref(),
    )
}
