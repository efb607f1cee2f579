//! Metrics: a running `serve --metrics` scraped over HTTP while a known sequence of
//! decisions, swaps, refusals and a roll back goes through it; every metric must move
//! exactly as the sequence says. Then the endpoint under attack (a slowloris, a huge
//! request, many connections) while answers must keep flowing, an address that cannot
//! be bound, and `Guard::metrics()` in-process for the ledger's drops.

use deploy_guard::{Config, Guard, Target};
use deploy_guard_e2e::{
    CEILING, NEXT, REFERENCE, ServeChild, Workspace, hostile, sha256_digest, wait_for, write_atomically,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Wait for `serve`'s log line naming the metrics endpoint; the address it bound.
fn metrics_addr(serve: &mut ServeChild) -> SocketAddr {
    let line = serve.wait_for_log(CEILING, |l| l.contains("serving metrics on http://"));
    let start = line.find("http://").expect("url") + "http://".len();
    let end = start + line[start..].find("/metrics").expect("/metrics");
    line[start..end].parse().expect("a socket address")
}

/// One HTTP request; (status line, body).
fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, CEILING).expect("connect");
    stream.set_read_timeout(Some(CEILING)).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a whole response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// `GET /metrics`: every sample, `name{labels}` -> value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The samples `name{...}` of one family (or the plain sample `name`).
fn family(samples: &BTreeMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|(series, _)| *series == name || series.starts_with(&format!("{name}{{")))
        .map(|(series, value)| (series.clone(), *value))
        .collect()
}

/// What the counters must be: every series of the families tracked, exactly.
#[derive(Default)]
struct Expected {
    samples: BTreeMap<String, f64>,
    /// Whether decisions are recorded (a ledger is configured).
    ledger: bool,
}

const COUNTED: [&str; 9] = [
    "deploy_guard_decisions_total",
    "deploy_guard_fail_safe_total",
    "deploy_guard_policy_info",
    "deploy_guard_policy_swaps_total",
    "deploy_guard_policy_refusals_total",
    "deploy_guard_policy_rollbacks_total",
    "deploy_guard_ledger_records_total",
    "deploy_guard_ledger_dropped_total",
    "deploy_guard_shadow_disagreements_total",
];

const CLASSES: [&str; 10] = [
    "fuel",
    "deadline",
    "memory",
    "trap",
    "invalid-result",
    "facts",
    "config",
    "policy-unavailable",
    "pool",
    "internal",
];

impl Expected {
    /// Every counter at zero, `live` the live policy, with or without a ledger.
    fn start(live: Option<(&[u8], &str, &str)>, ledger: bool) -> Expected {
        let mut expected = Expected {
            ledger,
            ..Expected::default()
        };
        for counter in [
            "deploy_guard_policy_swaps_total",
            "deploy_guard_policy_rollbacks_total",
            "deploy_guard_ledger_records_total",
            "deploy_guard_ledger_dropped_total",
            "deploy_guard_shadow_disagreements_total",
        ] {
            expected.samples.insert(counter.to_owned(), 0.0);
        }
        for class in CLASSES {
            expected
                .samples
                .insert(format!("deploy_guard_fail_safe_total{{class=\"{class}\"}}"), 0.0);
        }
        if let Some((policy, name, version)) = live {
            expected.live(policy, name, version);
        }
        expected
    }

    fn add(&mut self, series: &str, by: f64) {
        *self.samples.entry(series.to_owned()).or_default() += by;
    }

    fn decision(&mut self, verdict: &str, rule: &str) {
        self.add(
            &format!("deploy_guard_decisions_total{{verdict=\"{verdict}\",rule=\"{rule}\"}}"),
            1.0,
        );
        if self.ledger {
            self.add("deploy_guard_ledger_records_total", 1.0);
        }
    }

    fn fail_safe(&mut self, class: &str) {
        self.decision("ALLOW", "fail-safe");
        self.add(&format!("deploy_guard_fail_safe_total{{class=\"{class}\"}}"), 1.0);
    }

    fn live(&mut self, policy: &[u8], name: &str, version: &str) {
        self.samples
            .retain(|series, _| !series.starts_with("deploy_guard_policy_info"));
        let digest = sha256_digest(policy);
        self.samples.insert(
            format!("deploy_guard_policy_info{{name=\"{name}\",version=\"{version}\",digest=\"{digest}\"}}"),
            1.0,
        );
    }

    fn decisions(&self) -> f64 {
        family(&self.samples, "deploy_guard_decisions_total").values().sum()
    }

    /// What the tracked families hold now that differs from what is expected.
    fn differences(&self, samples: &BTreeMap<String, f64>) -> Vec<String> {
        let mut actual = BTreeMap::new();
        for name in COUNTED {
            actual.extend(family(samples, name));
        }
        let mut differences = Vec::new();
        for series in actual.keys().chain(self.samples.keys()) {
            let (want, got) = (self.samples.get(series), actual.get(series));
            if want != got && !differences.iter().any(|d: &String| d.starts_with(series.as_str())) {
                differences.push(format!("{series}: expected {want:?}, scraped {got:?}"));
            }
        }
        differences
    }

    /// Scrape until the endpoint shows exactly what is expected (asynchronous parts:
    /// the ledger's writer, the shadow's thread, the swap's poll), or fail saying what
    /// differs after [`CEILING`].
    fn check(&self, addr: SocketAddr, step: &str) -> BTreeMap<String, f64> {
        let started = Instant::now();
        loop {
            let samples = scrape(addr);
            let differences = self.differences(&samples);
            if differences.is_empty() {
                return samples;
            }
            assert!(
                started.elapsed() < CEILING,
                "after {step}, the metrics differ:\n{}",
                differences.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn assert_answer(answer: &Value, verdict: &str, rule: &str) {
    assert_eq!(
        (answer["verdict"].as_str(), answer["rule"].as_str()),
        (Some(verdict), Some(rule)),
        "{answer}"
    );
}

fn assert_fail_safe(answer: &Value, error_prefix: &str) {
    assert_answer(answer, "ALLOW", "fail-safe");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.starts_with(error_prefix)),
        "expected an error starting {error_prefix:?}: {answer}"
    );
}

#[test]
fn every_metric_moves_as_expected_across_a_known_sequence() {
    let ws = Workspace::story();
    let next = ws.dir.path().join("next.wasm");
    std::fs::write(&next, NEXT).expect("write the shadow candidate");
    // An endless loop runs out of this fuel in milliseconds, far inside the deadline;
    // with the fuel raised later, it runs out of time instead.
    let config = ws.dir.path().join("guard.toml");
    std::fs::write(&config, "fuel = 1000000\n").expect("write the config");
    let mut command = ws.command();
    command
        .args(["serve", "--metrics", "127.0.0.1:0", "--shadow"])
        .arg(&next)
        .env("DEPLOY_GUARD_LEDGER", ws.dir.path().join("ledger.db"))
        .env("DEPLOY_GUARD_CONFIG", &config);
    let mut serve = ServeChild::spawn(command);
    let addr = metrics_addr(&mut serve);
    assert!(addr.ip().is_loopback());
    let mut expected = Expected::start(Some((REFERENCE, "deploy-status-guard", "1.2.0")), true);
    let samples = expected.check(addr, "start-up");
    assert_eq!(
        family(&samples, "deploy_guard_decision_duration_seconds_count")
            .values()
            .sum::<f64>(),
        0.0
    );

    // ALLOW, SUPPRESS, CONVERGE_DONE with 1.2.0; the shadow (1.1.0) disagrees on the
    // failed task only.
    assert_answer(&serve.ask("ORCH-072", "awaiting"), "ALLOW", "non-terminal");
    expected.decision("ALLOW", "non-terminal");
    assert_answer(&serve.ask("ORCH-055", "deploying"), "SUPPRESS", "cancelled");
    expected.decision("SUPPRESS", "cancelled");
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    expected.decision("CONVERGE_DONE", "converge-done");
    assert_answer(&serve.ask("ORCH-081", "monitoring"), "ALLOW", "non-terminal");
    expected.decision("ALLOW", "non-terminal");
    expected.add("deploy_guard_shadow_disagreements_total", 1.0);
    expected.check(addr, "ALLOW, SUPPRESS, CONVERGE_DONE");

    // facts: the database goes away, then comes back.
    let aside = ws.dir.path().join("aside.db");
    std::fs::rename(ws.db(), &aside).expect("move the database away");
    assert_fail_safe(&serve.ask("ORCH-061", "awaiting"), "database:");
    expected.fail_safe("facts");
    std::fs::rename(&aside, ws.db()).expect("put the database back");
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    expected.decision("CONVERGE_DONE", "converge-done");
    expected.check(addr, "a missing database");

    // A swap to a policy that fails on demand.
    write_atomically(&ws.policy(), hostile::LIVE_CLASSES);
    expected.add("deploy_guard_policy_swaps_total", 1.0);
    expected.live(hostile::LIVE_CLASSES, "live-classes", "9.9.9");
    expected.check(addr, "a swap");
    // Healthy: the shadow disagrees (1.1.0 says task-not-found).
    assert_answer(&serve.ask("OK-1", "awaiting"), "ALLOW", "live-classes");
    expected.decision("ALLOW", "live-classes");
    expected.add("deploy_guard_shadow_disagreements_total", 1.0);
    // One fail-safe of each class the policy can cause (5 failures on probation).
    assert_fail_safe(&serve.ask("F-1", "awaiting"), "fuel:");
    expected.fail_safe("fuel");
    // The workspace's deadline is 60 s; the default 100 ms for the deadline's class,
    // then 60 s again, so that no other class can become a deadline on a loaded machine.
    std::fs::write(&config, "fuel = 10000000000\ntimeout_ms = 100\n").expect("raise the fuel");
    serve.wait_for_log(CEILING, |l| l.contains("configuration reloaded"));
    assert_fail_safe(&serve.ask("F-2", "awaiting"), "deadline:");
    expected.fail_safe("deadline");
    std::fs::write(&config, "fuel = 10000000000\n").expect("the deadline back to 60 s");
    serve.wait_for_log(CEILING, |l| l.contains("configuration reloaded"));
    for (work_item, error, class) in [
        ("M-1", "memory:", "memory"),
        ("T-1", "trap:", "trap"),
        ("I-1", "invalid-result:", "invalid-result"),
    ] {
        assert_fail_safe(&serve.ask(work_item, "awaiting"), error);
        expected.fail_safe(class);
    }
    let samples = expected.check(addr, "a fail-safe of each class");
    // The deadline's decision took more than 100 ms: past the last bucket.
    let over = family(&samples, "deploy_guard_decision_duration_seconds_bucket");
    let below_100ms = over["deploy_guard_decision_duration_seconds_bucket{le=\"0.1\"}"];
    let all = over["deploy_guard_decision_duration_seconds_bucket{le=\"+Inf\"}"];
    assert!(all - below_100ms >= 1.0, "{over:?}");

    // A refused file: the live policy stays.
    write_atomically(&ws.policy(), b"not a component at all");
    expected.add("deploy_guard_policy_refusals_total{reason=\"not-a-component\"}", 1.0);
    expected.check(addr, "a refused file");

    // Five more failures: ten on probation, rolled back to 1.2.0.
    for i in 2..7 {
        assert_fail_safe(&serve.ask(&format!("T-{i}"), "awaiting"), "trap:");
        expected.fail_safe("trap");
    }
    expected.add("deploy_guard_policy_rollbacks_total", 1.0);
    expected.live(REFERENCE, "deploy-status-guard", "1.2.0");
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    expected.decision("CONVERGE_DONE", "converge-done");
    let samples = expected.check(addr, "a roll back");

    // The histogram counted every decision once, and its buckets are cumulative.
    let histogram = family(&samples, "deploy_guard_decision_duration_seconds_bucket");
    let bounds: Vec<f64> = histogram
        .keys()
        .filter_map(|series| {
            let le = series.split("le=\"").nth(1)?.trim_end_matches("\"}");
            (le != "+Inf").then(|| le.parse().ok()).flatten()
        })
        .collect();
    assert_eq!(bounds.len(), 16, "{histogram:?}");
    assert_eq!(
        (
            bounds.iter().copied().fold(f64::MAX, f64::min),
            bounds.iter().copied().fold(0.0, f64::max)
        ),
        (1e-6, 0.1)
    );
    let count = samples["deploy_guard_decision_duration_seconds_count"];
    assert_eq!(count, expected.decisions());
    assert_eq!(
        histogram["deploy_guard_decision_duration_seconds_bucket{le=\"+Inf\"}"],
        count
    );
    assert!(samples["deploy_guard_decision_duration_seconds_sum"] > 0.1);
    let mut cumulative: Vec<(f64, f64)> = histogram
        .iter()
        .filter_map(|(series, n)| {
            let le = series.split("le=\"").nth(1)?.trim_end_matches("\"}");
            Some((le.parse().unwrap_or(f64::INFINITY), *n))
        })
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1), "{cumulative:?}");
    assert_eq!(serve.finish(), Some(0));
}

#[test]
fn a_bad_config_and_a_missing_policy_fail_safe_in_their_own_class() {
    let ws = Workspace::story();
    let config = ws.dir.path().join("guard.toml");
    std::fs::write(&config, "enabled = [unclosed").expect("write");
    let mut command = ws.command();
    command
        .args(["serve", "--metrics", "127.0.0.1:0"])
        .env("DEPLOY_GUARD_CONFIG", &config);
    let mut serve = ServeChild::spawn(command);
    let addr = metrics_addr(&mut serve);
    let mut expected = Expected::start(Some((REFERENCE, "deploy-status-guard", "1.2.0")), false);
    assert_fail_safe(&serve.ask("ORCH-061", "awaiting"), "config:");
    expected.fail_safe("config");
    expected.check(addr, "a bad config");
    assert_eq!(serve.finish(), Some(0));

    let mut command = ws.command();
    command
        .args(["serve", "--metrics", "127.0.0.1:0"])
        .env("DEPLOY_GUARD_POLICY", ws.dir.path().join("policies/missing.wasm"));
    let mut serve = ServeChild::spawn(command);
    let addr = metrics_addr(&mut serve);
    let mut expected = Expected::start(None, false);
    expected.add("deploy_guard_policy_refusals_total{reason=\"unreadable\"}", 1.0);
    assert_fail_safe(&serve.ask("ORCH-061", "awaiting"), "policy-unavailable:");
    expected.fail_safe("policy-unavailable");
    expected.check(addr, "no policy");
    assert_eq!(serve.finish(), Some(0));
}

/// Bytes written by an attacker before the server closed on it, and how long it took.
fn send_until_closed(mut stream: TcpStream, chunk: &[u8], times: usize, pause: Duration) -> (usize, Duration) {
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..times {
        match stream.write(chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
        std::thread::sleep(pause);
    }
    (sent, started.elapsed())
}

/// The bytes of a slowloris connection: one every 100 ms, for a minute, never a whole
/// request head.
const TRICKLE: usize = 600;

/// A slowloris attacker: it connects, starts a request head and trickles one byte every
/// 100 ms; when the endpoint closes the connection, it connects again, until `stop`
/// (its connection of the moment then goes on to its end). So the attack is on for as
/// long as the answers below take, however slow the machine. Returns, for each of its
/// connections, the bytes it trickled before the endpoint closed it and how long that
/// took; `None` for one still open after the attacker's minute ([`TRICKLE`] bytes).
fn slowloris(addr: SocketAddr, stop: &AtomicBool) -> Vec<Option<(usize, Duration)>> {
    let mut ended = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, CEILING) else {
            continue;
        };
        if stream.write_all(b"GET /metrics HTTP/1.1\r\n").is_ok() {
            let (sent, held) = send_until_closed(stream, b"X", TRICKLE, Duration::from_millis(100));
            ended.push((sent < TRICKLE).then_some((sent, held)));
        }
        // Turned away at once (every slot held): not at full speed.
        std::thread::sleep(Duration::from_millis(100));
    }
    ended
}

/// Whether the endpoint turns a whole `GET /metrics` away unanswered: it does so only
/// when all its connection slots are held.
fn turned_away(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, CEILING) else {
        return false;
    };
    stream.set_read_timeout(Some(CEILING)).expect("timeout");
    if stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_err() {
        return true;
    }
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => response.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn a_hostile_scraper_never_delays_an_answer() {
    let ws = Workspace::story();
    let mut command = ws.command();
    command.args(["serve", "--metrics", "127.0.0.1:0"]);
    let mut serve = ServeChild::spawn(command);
    let addr = metrics_addr(&mut serve);
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");

    // A huge request: 256 MiB of header, as fast as it goes; the endpoint reads 8 KiB,
    // answers 431 and closes. Answers go on meanwhile.
    let huge = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nX-Huge: ")
            .expect("start a head");
        send_until_closed(stream, &[b'a'; 1 << 16], 4096, Duration::ZERO)
    });
    for _ in 0..20 {
        assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    }
    let (sent, _) = huge.join().expect("huge");
    assert!(sent < 256 << 20, "the endpoint read all {sent} bytes");

    // Slowloris: more attackers than the endpoint handles connections at once, each
    // trickling a request head that never ends, and connecting again when closed.
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..deploy_guard::observe::metrics_server::MAX_CONNECTIONS + 4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || slowloris(addr, &stop))
        })
        .collect();
    // Many connections, held open doing nothing.
    let idle: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    assert!(idle.len() >= 100, "only {} connections", idle.len());
    // The event the answers below must not wait for: every slot of the endpoint held,
    // seen as a whole scrape turned away unanswered.
    wait_for(
        "the endpoint turns a scrape away while the slow connections hold it",
        || turned_away(addr).then_some(()),
    );

    // Answers keep flowing while all of that is held open: each one comes (a blocked
    // loop would wait for the attack, which goes on until the answers are in, so the
    // answer would not come within CEILING), and the endpoint is still full after them.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let asked = Instant::now();
        let (item, verdict, rule) = if i % 2 == 0 {
            ("ORCH-061", "CONVERGE_DONE", "converge-done")
        } else {
            ("ORCH-072", "ALLOW", "non-terminal")
        };
        assert_answer(&serve.ask(item, "awaiting"), verdict, rule);
        slowest = slowest.max(asked.elapsed());
    }
    eprintln!(
        "300 answers under attack in {:?}, the slowest {slowest:?}",
        started.elapsed()
    );
    wait_for("the endpoint still full after the answers", || {
        turned_away(addr).then_some(())
    });
    stop.store(true, Ordering::Relaxed);

    // Every slow connection was closed by the endpoint (its request deadline is 5 s, or
    // at once when its slots were full), none held for the attacker's whole minute.
    let mut longest = Duration::ZERO;
    let mut connections = 0;
    for attacker in slow {
        for connection in attacker.join().expect("slowloris") {
            let (_, lasted) = connection.expect("a slow connection was held for the attacker's whole minute");
            longest = longest.max(lasted);
            connections += 1;
        }
    }
    eprintln!("{connections} slow connections, the longest held {longest:?}");
    drop(idle);
    // And the endpoint still answers scrapers, once the attackers are gone.
    let decisions = wait_for("the endpoint answers scrapers again", || {
        std::panic::catch_unwind(|| scrape(addr))
            .ok()
            .map(|samples| family(&samples, "deploy_guard_decisions_total").values().sum::<f64>())
    });
    assert_eq!(decisions, 321.0);
    // Anything but GET /metrics is turned away.
    assert_eq!(http(addr, "GET / HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http(addr, "POST /metrics HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(serve.finish(), Some(0));
}

#[test]
fn an_address_that_cannot_be_bound_is_a_warning_and_serve_answers() {
    let ws = Workspace::story();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    // The flag, and the environment's address the flag overrides.
    let mut command = ws.command();
    command
        .args(["serve", "--metrics", &format!("127.0.0.1:{port}")])
        .env("DEPLOY_GUARD_METRICS_ADDR", "127.0.0.1:0");
    let mut serve = ServeChild::spawn(command);
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    let warning = serve.wait_for_log(CEILING, |l| l.contains("cannot listen on"));
    let line: Value = serde_json::from_str(&warning).expect("a JSON log line");
    assert_eq!(line["level"], "WARN", "{warning}");
    assert!(warning.contains(&format!("127.0.0.1:{port}")), "{warning}");
    assert_answer(&serve.ask("ORCH-072", "awaiting"), "ALLOW", "non-terminal");
    assert_eq!(serve.finish(), Some(0));
    // The environment alone gives the address (a port alone: the loopback interface).
    let mut command = ws.command();
    command.arg("serve").env("DEPLOY_GUARD_METRICS_ADDR", "0");
    let mut serve = ServeChild::spawn(command);
    let addr = metrics_addr(&mut serve);
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    let samples = scrape(addr);
    assert_eq!(
        samples.get("deploy_guard_decisions_total{verdict=\"CONVERGE_DONE\",rule=\"converge-done\"}"),
        Some(&1.0)
    );
    assert_eq!(serve.finish(), Some(0));
}

#[test]
fn guard_metrics_counts_the_records_a_stalled_ledger_drops() {
    let ws = Workspace::story();
    let path = ws.dir.path().join("ledger.db");
    let guard = Guard::new(Config {
        ledger: Some(path.clone()),
        ..ws.config()
    })
    .expect("guard");
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    // Another process holds the ledger's write lock: its writer waits.
    let holder = rusqlite::Connection::open(&path).expect("open");
    holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let huge = "W".repeat(1 << 20);
    for _ in 0..100 {
        guard.decide(&huge, Target::Awaiting, None);
    }
    let ledger = guard.ledger().expect("ledger in use");
    let dropped = ledger.dropped();
    assert!(dropped > 0, "nothing dropped");
    let text = guard.metrics();
    assert_eq!(value(&text, "deploy_guard_ledger_dropped_total"), dropped as f64);
    assert_eq!(value(&text, "deploy_guard_ledger_records_total"), 0.0);
    holder.execute_batch("COMMIT").expect("unlock");
    ledger.flush();
    let text = guard.metrics();
    assert_eq!(
        value(&text, "deploy_guard_ledger_records_total"),
        (100 - dropped) as f64
    );
    assert_eq!(
        value(
            &text,
            "deploy_guard_decisions_total{verdict=\"ALLOW\",rule=\"task-not-found\"}"
        ),
        100.0
    );
    assert!(text.contains("deploy_guard_policy_info{name=\"deploy-status-guard\",version=\"1.2.0\""));
}
