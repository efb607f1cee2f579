//! The `serve` loop: one JSON request per line in, one JSON answer per line out, in
//! order, flushed at the end of each batch, until EOF. A request is a stamp,
//! `{"work_item": "...", "target": "...", "caller": "..."}` (or with `"op": "decide"`),
//! or a tick of the post-deploy monitor, `{"op": "tick", "work_item": "...",
//! "caller": "..."}`. A malformed line (bad JSON, invalid UTF-8, an unknown target or
//! op, a missing field, a target given to a tick, an empty line, a line longer than
//! [`MAX_LINE_BYTES`]) gets `{"error": "..."}` and the loop goes on.

use crate::decision::{Ask, Decision, Request, Target};
use crate::guard::Guard;
use serde::Deserialize;
use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};

/// The most requests decided together (their facts read in one transaction).
pub const MAX_BATCH: usize = 64;

/// The longest request line read; a longer one is answered with an error, and the
/// rest of it is skipped without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A request, as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeRequest {
    /// The work item.
    pub work_item: String,
    /// A stamp's target, or a tick.
    pub ask: Ask,
    /// The caller.
    pub caller: Option<String>,
}

/// A request as it is on the line: its strings borrowed from the line where they need
/// no unescaping (the common case), so that parsing a request allocates nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    #[serde(default, borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    work_item: Option<Cow<'a, str>>,
    #[serde(borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    caller: Option<Cow<'a, str>>,
}

/// A request borrowed from its line (see [`RawRequest`]).
struct LineRequest<'a> {
    work_item: Cow<'a, str>,
    ask: Ask,
    caller: Option<Cow<'a, str>>,
}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<ServeRequest, String> {
    parse_line(line).map(|r| ServeRequest {
        work_item: r.work_item.into_owned(),
        ask: r.ask,
        caller: r.caller.map(Cow::into_owned),
    })
}

fn parse_line(line: &[u8]) -> Result<LineRequest<'_>, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("the request is not valid UTF-8: {e}"))?;
    if text.trim().is_empty() {
        return Err("empty request line".to_owned());
    }
    // serde would also read a struct from a JSON array: the contract says an object.
    if !text.trim_start().starts_with('{') {
        return Err("the request is not a valid JSON request: expected a JSON object".to_owned());
    }
    let raw: RawRequest<'_> =
        serde_json::from_str(text).map_err(|e| format!("the request is not a valid JSON request: {e}"))?;
    let work_item = raw.work_item.ok_or("missing field `work_item`")?;
    let ask = match (raw.op.as_deref(), raw.target) {
        (None | Some("decide"), Some(target)) => Ask::Decide(target.parse::<Target>()?),
        (None | Some("decide"), None) => return Err("missing field `target`".to_owned()),
        (Some("tick"), None) => Ask::Tick,
        (Some("tick"), Some(_)) => return Err("a tick has no `target`".to_owned()),
        (Some(other), _) => return Err(format!("unknown op {other:?}: expected decide or tick")),
    };
    Ok(LineRequest {
        work_item,
        ask,
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
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            // Interrupted before anything was read: the bytes of this line so far stay.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
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
///
/// Requests that are already waiting (complete lines in the input buffer) are taken
/// together, up to [`MAX_BATCH`]: their facts are read in one read transaction, a new
/// one per batch. Answers are written in order and flushed at the end of each batch,
/// that is whenever no further request is waiting, so a client that waits for its
/// answer always gets it.
pub fn serve<R: Read>(guard: &Guard, input: &mut BufReader<R>, output: &mut impl Write) -> std::io::Result<u64> {
    serve_with(input, output, |requests| guard.decide_batch(requests))
}

/// Serve when no guard could be made (the sandbox could not be built): every request
/// is answered with a fail-safe ALLOW naming `cause`, malformed lines as usual.
pub fn serve_fail_safe<R: Read>(
    cause: &str,
    input: &mut BufReader<R>,
    output: &mut impl Write,
) -> std::io::Result<u64> {
    serve_with(input, output, |requests| {
        requests
            .iter()
            .map(|request| {
                let decision = Decision::fail_safe(*request, cause);
                decision.log();
                decision
            })
            .collect()
    })
}

/// The loop of [`serve`], deciding each batch of valid requests with `decide`.
fn serve_with<R: Read>(
    input: &mut BufReader<R>,
    output: &mut impl Write,
    mut decide: impl FnMut(&[Request<'_>]) -> Vec<Decision>,
) -> std::io::Result<u64> {
    let mut answered = 0;
    let mut lines = Vec::with_capacity(MAX_BATCH);
    loop {
        lines.clear();
        match next_line(input) {
            Some(line) => lines.push(line),
            None => break,
        }
        while lines.len() < MAX_BATCH && input.buffer().contains(&b'\n') {
            match next_line(input) {
                Some(line) => lines.push(line),
                None => break,
            }
        }
        answered += write_answers(&mut decide, &lines, output)?;
        output.flush()?;
    }
    Ok(answered)
}

fn next_line(input: &mut impl BufRead) -> Option<Line> {
    loop {
        match read_line(input) {
            Ok(line) => return line,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(target: "deploy_guard::serve", "cannot read stdin: {e}; stopping");
                return None;
            }
        }
    }
}

/// Decide a batch of lines and write their answers, in order, one a line, each
/// serialised straight into `output` (no string per answer). Returns how many.
fn write_answers(
    decide: &mut impl FnMut(&[Request<'_>]) -> Vec<Decision>,
    lines: &[Line],
    output: &mut impl Write,
) -> std::io::Result<u64> {
    let parsed: Vec<Result<LineRequest<'_>, String>> = lines
        .iter()
        .map(|line| match line {
            Line::TooLong(n) => Err(format!(
                "the request line is {n} bytes long, more than {MAX_LINE_BYTES}"
            )),
            Line::Complete(bytes) => parse_line(bytes),
        })
        .collect();
    let requests: Vec<Request<'_>> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(|r| Request {
            work_item: &r.work_item,
            ask: r.ask,
            caller: r.caller.as_deref(),
        })
        .collect();
    let mut decisions = decide(&requests).into_iter();
    for p in &parsed {
        match p {
            Ok(_) => match decisions.next() {
                Some(decision) => {
                    if let Err(e) = serde_json::to_writer(&mut *output, &decision) {
                        // Only the writer can fail here (a decision always serialises).
                        return Err(e.into());
                    }
                }
                None => output.write_all(error_line("internal: no decision was made").as_bytes())?,
            },
            Err(message) => {
                tracing::warn!(target: "deploy_guard::serve", "malformed request: {message}");
                output.write_all(error_line(message).as_bytes())?;
            }
        }
        output.write_all(b"\n")?;
    }
    Ok(parsed.len() as u64)
}
