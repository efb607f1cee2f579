//! Property tests of what comes from outside: request lines, the serve loop, and the
//! strings stored in the orchestrator's database.
//!
//! - `parse_request` over arbitrary bytes, arbitrary JSON values and valid requests
//!   with arbitrary Unicode (quotes, control characters, emoji, NUL, 100 KB): it never
//!   panics, it accepts exactly the objects the contract describes, and a request
//!   round-trips (work item and caller preserved exactly) whatever the JSON encoder.
//! - `serve` in-process over a generated mix of valid requests, malformed lines,
//!   invalid UTF-8, empty lines and lines longer than 64 KiB (and a few MB): one answer
//!   per line, in order, each one JSON object; a request gets its decision, a malformed
//!   line `{"error": ...}`.
//! - Facts with arbitrary strings in a real SQLite file: `Guard::decide` never fails
//!   safe on text, and agrees with the native reference and with the predicate over
//!   the facts as inserted.
//!
//! What this proves is the plumbing: bytes and strings reach the sandbox unchanged and
//! every answer comes back. The expected answers come from the code that carries them
//! (`parse_request`, and the guest's own `predicate::decide` run natively), so these
//! tests cannot catch a wrong rule: the rules are proven by the guest's hand-written
//! grid (`guest/src/predicate/tests.rs`) and by the independent port of the seed in
//! `differential.rs`.
//!
//! The case counts keep the whole file well under 30 s in release.

use deploy_guard::decision::Ask;
use deploy_guard::serve::{MAX_LINE_BYTES, parse_request, serve};
use deploy_guard::{Config, Decision, Guard, Request, Target, Verdict};
use deploy_guard_e2e::{PATIENT, Row, Workspace, insert_sentinel, insert_task};
use deploy_status_guard::predicate;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use rusqlite::Connection;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::io::{BufReader, Read};

// ---------------------------------------------------------------------------------
// Strings and requests
// ---------------------------------------------------------------------------------

/// Strings that have broken parsers before: quotes, escapes, control characters, NUL,
/// separators, surrogate-pair emoji, BOM, Python's extra whitespace, long ones.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[\"\\\\/\\u{0}-\\u{1f}\\u{7f}\\u{85}\\u{a0}\\u{2028}\\u{2029}\\u{feff}\\u{1c}-\\u{1f}a-z ]{0,24}",
        2 => prop::collection::vec(
            prop_oneof![
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("\\u0000".to_owned()),
                Just("\0".to_owned()),
                Just("\u{1f980}".to_owned()),
                Just("\u{1f3f3}\u{fe0f}\u{200d}\u{1f308}".to_owned()),
                Just("\r\n".to_owned()),
                Just("\u{2028}".to_owned()),
                Just("}{".to_owned()),
                Just("ORCH-061".to_owned()),
                Just("done".to_owned()),
                Just(" ".to_owned()),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat()),
        1 => (any::<char>(), 1usize..4).prop_map(|(c, k)| c.to_string().repeat(k * 25_000)),
    ]
}

/// A target.
fn target() -> impl Strategy<Value = Target> {
    prop::sample::select(Target::ALL.to_vec())
}

/// `s` as Python's `json.dumps` writes it by default (`ensure_ascii`): every non-ASCII
/// character as `\uXXXX`, astral ones as surrogate pairs.
fn python_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
    out
}

/// How a client writes a request line.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    /// serde_json, compact.
    Compact,
    /// Python's `json.dumps` defaults: `", "`/`": "` separators, ASCII only.
    Python,
    /// Target first, caller as an explicit null when absent, odd whitespace.
    Reordered,
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::Compact),
        Just(Encoding::Python),
        Just(Encoding::Reordered)
    ]
}

/// One request line (no newline).
fn request_line(work_item: &str, target: Target, caller: Option<&str>, encoding: Encoding) -> String {
    match encoding {
        Encoding::Compact => {
            let mut object = Map::new();
            object.insert("work_item".into(), json!(work_item));
            object.insert("target".into(), json!(target.as_str()));
            if let Some(caller) = caller {
                object.insert("caller".into(), json!(caller));
            }
            Value::Object(object).to_string()
        }
        Encoding::Python => {
            let mut line = format!(
                "{{\"work_item\": {}, \"target\": \"{target}\"",
                python_json_string(work_item)
            );
            if let Some(caller) = caller {
                let _ = write!(line, ", \"caller\": {}", python_json_string(caller));
            }
            line.push('}');
            line
        }
        Encoding::Reordered => format!(
            " \t{{ \"target\" :\"{target}\",\"caller\":{} ,\r\"work_item\":{}\t}} ",
            caller.map_or_else(|| "null".to_owned(), |c| json!(c).to_string()),
            json!(work_item)
        ),
    }
}

// ---------------------------------------------------------------------------------
// (a) parse_request
// ---------------------------------------------------------------------------------

/// What the contract accepts: an object with a string `work_item`, a string `target`
/// naming a target, a string or null or absent `caller`, and nothing else.
fn accepted(value: &Value) -> Option<(String, Target, Option<String>)> {
    let object = value.as_object()?;
    if object
        .keys()
        .any(|k| !matches!(k.as_str(), "work_item" | "target" | "caller"))
    {
        return None;
    }
    let work_item = object.get("work_item")?.as_str()?.to_owned();
    let target = object.get("target")?.as_str()?.parse::<Target>().ok()?;
    let caller = match object.get("caller") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    Some((work_item, target, caller))
}

/// Arbitrary JSON, weighted towards objects with the request's keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["awaiting", "deploying", "monitoring", "done", "Awaiting"]).prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    3 => prop::sample::select(vec!["work_item", "target", "caller"]).prop_map(str::to_owned),
                    1 => "[a-z_]{0,10}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects that are close to a request: the three keys present or not, each with a
/// value of the right type or not, sometimes an extra key.
fn near_request() -> impl Strategy<Value = Value> {
    let string_or_not = || {
        prop_oneof![
            4 => tricky_string().prop_map(Value::String),
            1 => Just(Value::Null),
            1 => json_value(),
        ]
    };
    let target_or_not = prop_oneof![
        4 => target().prop_map(|t| Value::from(t.as_str())),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.9, string_or_not()),
        prop::option::weighted(0.9, target_or_not),
        prop::option::of(string_or_not()),
        prop::option::weighted(0.1, ("[a-z_]{1,8}", json_value())),
    )
        .prop_map(|(work_item, target, caller, extra)| {
            let mut object = Map::new();
            if let Some((key, value)) = extra {
                object.insert(key, value);
            }
            if let Some(v) = work_item {
                object.insert("work_item".into(), v);
            }
            if let Some(v) = target {
                object.insert("target".into(), v);
            }
            if let Some(v) = caller {
                object.insert("caller".into(), v);
            }
            Value::Object(object)
        })
}

/// Bytes near a valid request: a valid line with a few bytes replaced, inserted or
/// removed.
fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    (
        tricky_string(),
        target(),
        prop::option::of(tricky_string()),
        encoding(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(work_item, target, caller, encoding, edits)| {
            let mut bytes = request_line(&work_item, target, caller.as_deref(), encoding).into_bytes();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any bytes: no panic; accepted only when they are the JSON the contract describes,
    /// and then with exactly its values; refused with a message otherwise.
    #[test]
    fn parse_request_judges_any_bytes_exactly(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            mutated_request(),
        ]
    ) {
        let parsed = parse_request(&bytes);
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        match (&parsed, value.as_ref().and_then(accepted)) {
            (Ok(request), Some((work_item, target, caller))) => {
                prop_assert_eq!(&request.work_item, &work_item);
                prop_assert_eq!(request.ask, Ask::Decide(target));
                prop_assert_eq!(&request.caller, &caller);
            }
            (Err(message), None) => prop_assert!(!message.is_empty()),
            (parsed, expected) => prop_assert!(
                false,
                "{:?}: parsed {:?}, the contract says {:?}",
                String::from_utf8_lossy(&bytes), parsed, expected
            ),
        }
    }

    /// Any JSON value, written compactly or pretty-printed: accepted exactly when it is
    /// a request object, with its values.
    #[test]
    fn parse_request_accepts_exactly_the_request_objects(
        value in prop_oneof![json_value(), near_request()],
        pretty in any::<bool>(),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).expect("serialises")
        } else {
            value.to_string()
        };
        let parsed = parse_request(text.as_bytes());
        match (parsed, accepted(&value)) {
            (Ok(request), Some((work_item, target, caller))) => {
                prop_assert_eq!(request.work_item, work_item);
                prop_assert_eq!(request.ask, Ask::Decide(target));
                prop_assert_eq!(request.caller, caller);
            }
            (Err(message), None) => prop_assert!(!message.is_empty()),
            (parsed, expected) => prop_assert!(
                false, "{}: parsed {:?}, the contract says {:?}", text, parsed, expected
            ),
        }
    }

    /// A valid request with any strings round-trips exactly, whoever encoded it.
    #[test]
    fn parse_request_round_trips_any_unicode(
        work_item in tricky_string(),
        target in target(),
        caller in prop::option::of(tricky_string()),
        encoding in encoding(),
    ) {
        let line = request_line(&work_item, target, caller.as_deref(), encoding);
        let request = parse_request(line.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}: {line:?}")))?;
        prop_assert_eq!(request.work_item, work_item);
        prop_assert_eq!(request.ask, Ask::Decide(target));
        prop_assert_eq!(request.caller, caller);
    }
}

#[test]
fn parse_request_handles_lone_surrogates_and_duplicate_keys_without_panicking() {
    for (line, expected) in [
        (r#"{"work_item": "\ud800", "target": "awaiting"}"#, None),
        (r#"{"work_item": "\udc00\ud800", "target": "awaiting"}"#, None),
        (
            r#"{"work_item": "\ud83e\udd80", "target": "awaiting"}"#,
            Some("\u{1f980}"),
        ),
        (r#"{"work_item": "a", "work_item": "b", "target": "awaiting"}"#, None),
        (r#"{"work_item": "a\u0000b", "target": "awaiting"}"#, Some("a\0b")),
        ("{\"work_item\": \"a\0b\", \"target\": \"awaiting\"}", None),
        ("{\"work_item\": \"tab\tinside\", \"target\": \"awaiting\"}", None),
    ] {
        let parsed = parse_request(line.as_bytes());
        match expected {
            Some(work_item) => assert_eq!(parsed.map(|r| r.work_item).as_deref(), Ok(work_item), "{line}"),
            None => assert!(parsed.is_err(), "{line}: {parsed:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// (b) the serve loop
// ---------------------------------------------------------------------------------

/// A workspace with a story database and the reference policy, and a guard on it.
fn story_guard() -> (Workspace, Guard) {
    let ws = Workspace::story();
    let db = Connection::open(ws.db()).expect("open");
    insert_task(
        &db,
        Row {
            work_item: "ÜNI-\u{1f980}\0\"",
            repo: Some(" orchestrator\u{3000}"),
            stage: Some("\u{1f}done\u{85}"),
        },
    );
    let guard = Guard::new(ws.config()).expect("guard");
    assert!(guard.policy().is_some(), "the reference policy loads");
    (ws, guard)
}

/// One line of input to `serve` (without its newline).
#[derive(Clone, Debug)]
enum Line {
    /// A valid request.
    Valid {
        work_item: String,
        target: Target,
        caller: Option<String>,
        encoding: Encoding,
        crlf: bool,
    },
    /// Any text without a newline: almost always malformed.
    Text(String),
    /// Bytes that are not UTF-8.
    NotUtf8(Vec<u8>),
    /// Nothing.
    Empty,
    /// A line longer than `MAX_LINE_BYTES`: a request padded, or filler.
    Long { len: usize, request: bool },
}

impl Line {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Line::Valid {
                work_item,
                target,
                caller,
                encoding,
                crlf,
            } => {
                let mut line = request_line(work_item, *target, caller.as_deref(), *encoding);
                if *crlf {
                    line.push('\r');
                }
                line.into_bytes()
            }
            Line::Text(text) => text.clone().into_bytes(),
            Line::NotUtf8(bytes) => bytes.clone(),
            Line::Empty => Vec::new(),
            Line::Long { len, request } => {
                let mut line = if *request {
                    br#"{"work_item": "ORCH-061", "target": "awaiting"}"#.to_vec()
                } else {
                    Vec::new()
                };
                // JSON whitespace before the end keeps a padded request valid JSON.
                let pad = len - line.len();
                let end = line.pop();
                line.extend(std::iter::repeat_n(b' ', pad));
                line.extend(end);
                line
            }
        }
    }
}

fn line() -> impl Strategy<Value = Line> {
    let work_item = prop_oneof![
        3 => prop::sample::select(vec![
            "ORCH-061", "ORCH-072", "ORCH-055", "ORCH-090", "SVC-1", "ORCH-404", "",
            "ÜNI-\u{1f980}\0\"",
        ])
        .prop_map(str::to_owned),
        1 => tricky_string(),
    ];
    prop_oneof![
        6 => (work_item, target(), prop::option::of(tricky_string()), encoding(), any::<bool>())
            .prop_map(|(work_item, target, caller, encoding, crlf)| Line::Valid {
                work_item, target, caller, encoding, crlf,
            }),
        2 => "[^\n]{0,80}".prop_map(Line::Text),
        1 => mutated_request()
            .prop_map(|b| Line::Text(String::from_utf8_lossy(&b).replace('\n', " "))),
        1 => (prop::collection::vec(any::<u8>(), 0..40), any::<prop::sample::Index>())
            .prop_map(|(mut bytes, at)| {
                bytes.insert(at.index(bytes.len() + 1), 0xff);
                bytes.retain(|&b| b != b'\n');
                Line::NotUtf8(bytes)
            }),
        1 => Just(Line::Empty),
        1 => (MAX_LINE_BYTES + 1..MAX_LINE_BYTES * 3, any::<bool>())
            .prop_map(|(len, request)| Line::Long { len, request }),
    ]
}

/// The whole input: the lines joined by newlines, the last newline optional.
fn input(lines: &[Line], final_newline: bool) -> Vec<u8> {
    let mut input = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let bytes = line.bytes();
        let last = i + 1 == lines.len();
        let empty = bytes.is_empty();
        input.extend(bytes);
        if !last || final_newline || empty {
            input.push(b'\n');
        }
    }
    input
}

/// The decision object as JSON, without the policy's identity (the native reference
/// has its own).
fn without_identity(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.remove("policy");
        object.remove("policy_digest");
    }
    value
}

/// What `serve` must answer to `line`: the decision of the request it parses to, or
/// an error containing the message.
fn expected_answer(guard: &Guard, line: &Line) -> Result<Value, String> {
    let mut bytes = line.bytes();
    if bytes.len() > MAX_LINE_BYTES {
        return Err(format!("{} bytes long, more than {MAX_LINE_BYTES}", bytes.len()));
    }
    // serve drops one '\r' before the newline.
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    let request = parse_request(&bytes)?;
    if let Line::Valid { work_item, caller, .. } = line {
        // The generator's request is the one parsed.
        assert_eq!((&request.work_item, &request.caller), (work_item, caller));
    }
    let native = guard.decide_native_unlogged(Request {
        work_item: &request.work_item,
        ask: request.ask,
        caller: request.caller.as_deref(),
    });
    Ok(without_identity(
        serde_json::to_value(native).expect("a decision serialises"),
    ))
}

/// Run `serve` over `input` with a reader of `capacity`, and check every answer.
fn check_serve(
    guard: &Guard,
    lines: &[Line],
    input_bytes: &[u8],
    reader: impl Read,
    capacity: usize,
) -> Result<(), TestCaseError> {
    let mut output = Vec::new();
    let answered = serve(guard, &mut BufReader::with_capacity(capacity, reader), &mut output)
        .map_err(|e| TestCaseError::fail(format!("serve failed: {e}")))?;
    let text = String::from_utf8(output).map_err(|e| TestCaseError::fail(format!("the output is not UTF-8: {e}")))?;
    let answers: Vec<&str> = text.lines().collect();
    prop_assert!(text.ends_with('\n') || text.is_empty());
    prop_assert_eq!(
        answers.len(),
        lines.len(),
        "{} lines in ({} bytes), {} answers",
        lines.len(),
        input_bytes.len(),
        answers.len()
    );
    prop_assert_eq!(answered, lines.len() as u64);
    for (i, (line, answer)) in lines.iter().zip(&answers).enumerate() {
        let answer: Value = serde_json::from_str(answer)
            .map_err(|e| TestCaseError::fail(format!("answer {i} is not JSON ({e}): {answer}")))?;
        match expected_answer(guard, line) {
            Ok(decision) => {
                prop_assert_eq!(
                    &answer["policy"],
                    &json!("deploy-status-guard@1.2.0"),
                    "answer {}: {}",
                    i,
                    answer
                );
                prop_assert_eq!(without_identity(answer), decision, "answer {} to {:?}", i, line);
            }
            Err(message) => {
                let error = answer
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .and_then(|o| o.get("error"))
                    .and_then(Value::as_str);
                prop_assert!(
                    error.is_some_and(|e| e.contains(&message)),
                    "answer {} to {:?} should be an error containing {:?}: {}",
                    i,
                    line,
                    message,
                    answer
                );
            }
        }
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// The reader's buffer sizes: byte by byte, odd sizes, the default, larger than a line.
fn capacity() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1, 7, 64, 4096, 8192, 65_536, 65_537, 1 << 18])
}

#[test]
fn serve_answers_every_line_in_order() {
    let (_ws, guard) = story_guard();
    runner(128)
        .run(
            &(prop::collection::vec(line(), 0..40), any::<bool>(), capacity()),
            |(lines, final_newline, capacity)| {
                let bytes = input(&lines, final_newline);
                check_serve(&guard, &lines, &bytes, bytes.as_slice(), capacity)
            },
        )
        .expect("serve answers every line");
}

/// A reader that gives at most `chunk` bytes per read and, every `every` reads, fails
/// with `Interrupted` (EINTR) first: the loop must retry and lose nothing.
struct Interrupting<'a> {
    bytes: &'a [u8],
    chunk: usize,
    every: usize,
    reads: usize,
}

impl Read for Interrupting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reads += 1;
        if self.reads.is_multiple_of(self.every) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = self.chunk.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// `Read` allows `Interrupted` at any time, mid-line too: retrying it must not drop
/// the part of a line already read.
#[test]
fn serve_loses_nothing_when_reads_are_short_or_interrupted() {
    let (_ws, guard) = story_guard();
    runner(64)
        .run(
            &(prop::collection::vec(line(), 1..12), 1usize..200, 2usize..9, capacity()),
            |(lines, chunk, every, capacity)| {
                let bytes = input(&lines, true);
                let reader = Interrupting {
                    bytes: &bytes,
                    chunk,
                    every,
                    reads: 0,
                };
                check_serve(&guard, &lines, &bytes, reader, capacity)
            },
        )
        .expect("serve loses nothing to short or interrupted reads");
}

#[test]
fn serve_survives_megabyte_lines_and_the_exact_limit() {
    let (_ws, guard) = story_guard();
    let request = |work_item: &str| Line::Valid {
        work_item: work_item.to_owned(),
        target: Target::Monitoring,
        caller: Some("monitor-tick".to_owned()),
        encoding: Encoding::Compact,
        crlf: false,
    };
    let lines = vec![
        request("ORCH-061"),
        Line::Long {
            len: 3 << 20,
            request: true,
        },
        request("ORCH-090"),
        Line::Long {
            len: 8 << 20,
            request: false,
        },
        // The longest line read, exactly: a request padded to MAX_LINE_BYTES.
        Line::Long {
            len: MAX_LINE_BYTES,
            request: true,
        },
        Line::Long {
            len: MAX_LINE_BYTES + 1,
            request: true,
        },
        Line::Text("x".repeat(MAX_LINE_BYTES)),
        Line::NotUtf8(vec![0xc3; 200_000]),
        request("ORCH-055"),
    ];
    let bytes = input(&lines, false);
    for capacity in [8192, 1 << 16, 1 << 20] {
        // By hand first: the exact-limit line is a request, the next one is not.
        let mut output = Vec::new();
        serve(
            &guard,
            &mut BufReader::with_capacity(capacity, bytes.as_slice()),
            &mut output,
        )
        .expect("serve");
        let answers: Vec<Value> = String::from_utf8(output)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(answers.len(), lines.len());
        assert_eq!(answers[4]["rule"], "converge-done", "{}", answers[4]);
        assert!(
            answers[5]["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("{} bytes", MAX_LINE_BYTES + 1))),
            "{}",
            answers[5]
        );
        assert!(
            answers[7]["error"].as_str().is_some_and(|e| e.contains("more than")),
            "{}",
            answers[7]
        );
        check_serve(&guard, &lines, &bytes, bytes.as_slice(), capacity).expect("every answer right");
    }
}

// ---------------------------------------------------------------------------------
// (c) facts with arbitrary strings
// ---------------------------------------------------------------------------------

/// Repos: the scoped and self-hosting ones, padded with Python whitespace or not,
/// and anything.
fn repo() -> impl Strategy<Value = String> {
    let named = prop::sample::select(vec!["orchestrator", "svc-a", "dépôt-\u{1f980}", "other"]);
    let padding = "[ \t\r\n\u{b}\u{c}\u{1c}-\u{1f}\u{85}\u{a0}\u{2000}\u{3000}]{0,3}";
    prop_oneof![
        3 => (padding, named, padding).prop_map(|(a, n, b)| format!("{a}{n}{b}")),
        1 => tricky_string(),
    ]
}

/// Stages: the terminal ones and a live one, padded, in the wrong case, or anything.
fn stage() -> impl Strategy<Value = String> {
    let named = prop::sample::select(vec!["done", "cancelled", "deploy", "DONE", "Done", "failed"]);
    let padding = "[ \t\r\n\u{b}\u{c}\u{1c}-\u{1f}\u{85}\u{a0}\u{2000}\u{3000}\u{200b}]{0,3}";
    prop_oneof![
        3 => (padding, named, padding).prop_map(|(a, n, b)| format!("{a}{n}{b}")),
        1 => tricky_string(),
    ]
}

/// A sentinel row of the work item: for the task's repo as stored, or another.
#[derive(Clone, Debug)]
struct Sentinel {
    same_repo: bool,
    other_repo: String,
    sentinel: &'static str,
}

fn sentinel() -> impl Strategy<Value = Sentinel> {
    (
        prop::bool::weighted(0.8),
        repo(),
        prop::sample::select(vec!["ARMED", "DONE", "armed", "ARMED ", "OTHER"]),
    )
        .prop_map(|(same_repo, other_repo, sentinel)| Sentinel {
            same_repo,
            other_repo,
            sentinel,
        })
}

#[derive(Clone, Debug)]
struct Case {
    work_item: String,
    repo: String,
    stage: String,
    sentinels: Vec<Sentinel>,
    target: Target,
    caller: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        tricky_string(),
        repo(),
        stage(),
        prop::collection::vec(sentinel(), 0..4),
        target(),
        prop::option::of(tricky_string()),
    )
        .prop_map(|(work_item, repo, stage, sentinels, target, caller)| Case {
            work_item,
            repo,
            stage,
            sentinels,
            target,
            caller,
        })
}

/// The guards of the facts tests: the default scope (self-hosting only), and a scope
/// of two repos with a non-ASCII self-hosting repo beside it. Their limits are the
/// workspace's, [`PATIENT`]: the default fuel and memory bound what a megabyte string
/// costs the sandbox, and a 60 s deadline keeps a decision preempted on a loaded
/// machine (stripping 4 MiB takes tens of milliseconds of fuel-bounded work) from
/// ending in the deadline's class, which these tests do not measure.
fn facts_guards(ws: &Workspace) -> Vec<Guard> {
    assert_eq!(ws.config().limits, PATIENT);
    ws.install_reference();
    [
        ws.config(),
        Config {
            scope_repos: vec!["svc-a".to_owned(), "orchestrator".to_owned()],
            self_hosting_repos: vec!["orchestrator".to_owned(), "dépôt-\u{1f980}".to_owned()],
            ..ws.config()
        },
        Config {
            self_hosting_repos: vec!["orchestrator".to_owned(), "dépôt-\u{1f980}".to_owned()],
            ..ws.config()
        },
    ]
    .into_iter()
    .map(|config| {
        let guard = Guard::new(config).expect("guard");
        assert!(guard.policy().is_some());
        guard
    })
    .collect()
}

/// Insert the case's task and sentinels (the task becomes the newest of its work item).
fn insert_case(db: &Connection, case: &Case) {
    insert_task(
        db,
        Row {
            work_item: &case.work_item,
            repo: Some(&case.repo),
            stage: Some(&case.stage),
        },
    );
    db.execute(
        "DELETE FROM post_deploy_sentinels WHERE work_item_id = ?1",
        [&case.work_item],
    )
    .expect("delete");
    for s in &case.sentinels {
        let repo = if s.same_repo { &case.repo } else { &s.other_repo };
        insert_sentinel(db, repo, &case.work_item, s.sentinel);
    }
}

/// The predicate over the facts as inserted (not as read back): the window is ARMED
/// and not DONE for the task's repo exactly as stored.
fn predicted(case: &Case, config: &Config) -> predicate::Ruling {
    let window = |which: &str| {
        case.sentinels
            .iter()
            .any(|s| s.sentinel == which && (s.same_repo || s.other_repo == case.repo))
    };
    predicate::decide(&predicate::Facts {
        target: match case.target {
            Target::Awaiting => predicate::Target::Awaiting,
            Target::Deploying => predicate::Target::Deploying,
            Target::Monitoring => predicate::Target::Monitoring,
        },
        task: Some(predicate::Task {
            repo: &case.repo,
            stage: &case.stage,
        }),
        window_active: Some(window("ARMED") && !window("DONE")),
        scope_repos: &config.scope_repos,
        self_hosting_repos: &config.self_hosting_repos,
    })
}

fn verdict_of(v: predicate::Verdict) -> Verdict {
    match v {
        predicate::Verdict::Allow => Verdict::Allow,
        predicate::Verdict::ConvergeDone => Verdict::ConvergeDone,
        predicate::Verdict::Suppress => Verdict::Suppress,
    }
}

/// The sandboxed decision on `case` is the policy's, with the facts as stored, equal
/// to the native reference's and to the predicate's over the inserted facts.
fn check_case(guard: &Guard, case: &Case) -> Result<(), TestCaseError> {
    let decision: Decision = guard.decide(&case.work_item, case.target, case.caller.as_deref());
    prop_assert_ne!(decision.rule.as_str(), "fail-safe", "{:?}", decision);
    prop_assert_eq!(decision.error.as_deref(), None);
    prop_assert_eq!(&decision.work_item, &case.work_item);
    prop_assert_eq!(&decision.caller, &case.caller);
    prop_assert_eq!(decision.target(), Some(case.target));
    prop_assert_eq!(decision.db_stage.as_deref(), Some(predicate::py_strip(&case.stage)));
    prop_assert_eq!(decision.policy.as_deref(), Some("deploy-status-guard@1.2.0"));

    let native = guard.decide_native_unlogged(Request::decide(&case.work_item, case.target, case.caller.as_deref()));
    prop_assert_eq!(
        (decision.verdict, &decision.rule, decision.window_active),
        (native.verdict, &native.rule, native.window_active)
    );
    let ruling = predicted(case, &guard.config());
    prop_assert_eq!(
        (decision.verdict, decision.rule.as_str()),
        (verdict_of(ruling.verdict), ruling.rule.as_str())
    );
    Ok(())
}

#[test]
fn facts_with_any_strings_decide_as_the_native_reference() {
    let ws = Workspace::new();
    let db = ws.create_db();
    db.execute_batch("PRAGMA synchronous = OFF").expect("a fast writer");
    let guards = facts_guards(&ws);
    runner(400)
        .run(&case(), |case| {
            insert_case(&db, &case);
            for guard in &guards {
                check_case(guard, &case)?;
            }
            Ok(())
        })
        .expect("every decision is the reference's");
}

/// Megabyte strings: a work item, a caller, a repo and a stage of a megabyte each.
#[test]
fn megabyte_strings_decide_as_the_native_reference() {
    let ws = Workspace::new();
    let db = ws.create_db();
    let guards = facts_guards(&ws);
    let mb = 1 << 20;
    let cases = [
        ("x".repeat(mb), "orchestrator".to_owned(), "done".to_owned()),
        ("MB-STAGE".to_owned(), "orchestrator".to_owned(), "d".repeat(mb)),
        ("MB-REPO".to_owned(), "\u{1f980}".repeat(mb / 4), "done".to_owned()),
        (
            "MB-NUL\0".to_owned(),
            format!("orchestrator{}", "\0".repeat(mb)),
            "cancelled".to_owned(),
        ),
        (
            "\"\\\u{2028}".repeat(mb / 8),
            "svc-a".to_owned(),
            "cancelled\u{1f}".to_owned(),
        ),
    ];
    for (work_item, repo, stage) in cases {
        for target in Target::ALL {
            let case = Case {
                work_item: work_item.clone(),
                repo: repo.clone(),
                stage: stage.clone(),
                sentinels: vec![Sentinel {
                    same_repo: true,
                    other_repo: String::new(),
                    sentinel: "ARMED",
                }],
                target,
                caller: Some("c".repeat(mb)),
            };
            insert_case(&db, &case);
            for guard in &guards {
                check_case(guard, &case).unwrap_or_else(|e| {
                    panic!("{target} {:?}..: {e}", &work_item.chars().take(16).collect::<String>())
                });
            }
        }
    }
}

/// A terminal stage or a scoped repo padded with a megabyte of (Python) whitespace is
/// still that stage or repo: the seed's `strip()` does not care how much there is.
#[test]
fn megabyte_whitespace_padding_decides_as_the_native_reference() {
    let ws = Workspace::new();
    let db = ws.create_db();
    let guards = facts_guards(&ws);
    let mb = 1 << 20;
    let cases = [
        (
            "PAD-STAGE",
            "orchestrator".to_owned(),
            format!("{}done{}", " ".repeat(mb / 2), "\n".repeat(mb / 2)),
        ),
        (
            "PAD-REPO",
            format!("{}orchestrator{}", "\u{3000}".repeat(mb / 6), "\t".repeat(mb / 2)),
            "done".to_owned(),
        ),
        ("BLANK-STAGE", "orchestrator".to_owned(), " ".repeat(4 * mb)),
    ];
    let mut failures = Vec::new();
    for (work_item, repo, stage) in cases {
        for target in Target::ALL {
            let case = Case {
                work_item: work_item.to_owned(),
                repo: repo.clone(),
                stage: stage.clone(),
                sentinels: Vec::new(),
                target,
                caller: None,
            };
            insert_case(&db, &case);
            for guard in &guards {
                if check_case(guard, &case).is_err() {
                    let d = guard.decide(work_item, target, None);
                    let native = guard.decide_native_unlogged(Request::decide(work_item, target, None));
                    failures.push(format!(
                        "{work_item} {target} (scope {:?}): {} {} ({}), native: {} {}",
                        guard.config().scope_repos,
                        d.verdict,
                        d.rule,
                        d.error.unwrap_or_default(),
                        native.verdict,
                        native.rule
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
