//! Policies from a real OCI registry (issue 13): Debian's `docker-registry`
//! (distribution 2.8) started by each test on a free 127.0.0.1 port with its storage in
//! a temporary directory, and stopped at the end. Push, sign, verify, follow a tag with
//! three `serve` hosts, and the bad artifacts that must never go live.

use deploy_guard::admission::signature::{generate_key_pair, read_signing_key};
use deploy_guard::rollout::oci::client::Registry;
use deploy_guard::rollout::oci::cosign::simple_signing_payload;
use deploy_guard::rollout::oci::reference::PolicyRef;
use deploy_guard::rollout::slot::Outcome;
use deploy_guard::{Guard, Target};
use deploy_guard_e2e::{NEXT, REFERENCE, Workspace, sha256_digest};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry serve` child on 127.0.0.1, killed on drop.
struct RegistryProcess {
    child: Option<Child>,
    addr: String,
    storage: PathBuf,
    config: PathBuf,
}

impl RegistryProcess {
    fn start(dir: &Path) -> RegistryProcess {
        RegistryProcess::start_with(dir, "")
    }

    /// A registry that requires `user` and `password` (HTTP basic, htpasswd).
    fn start_with_credentials(dir: &Path, user: &str, password: &str) -> RegistryProcess {
        let htpasswd = dir.join("htpasswd");
        let hash = bcrypt::hash(password, 5).expect("bcrypt");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
        RegistryProcess::start_with(
            dir,
            &format!(
                "auth:\n  htpasswd:\n    realm: deploy-guard-test\n    path: {}\n",
                htpasswd.display()
            ),
        )
    }

    fn start_with(dir: &Path, extra: &str) -> RegistryProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let storage = dir.join("registry-storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                storage.display()
            ),
        )
        .expect("registry config");
        let mut registry = RegistryProcess {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            storage,
            config,
        };
        registry.restart();
        registry
    }

    fn restart(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn reference(&self, repository_and_tag: &str) -> PolicyRef {
        PolicyRef::parse(&format!("{}/{repository_and_tag}", self.addr)).expect("reference")
    }

    fn client(&self, reference: &PolicyRef) -> Registry {
        Registry::connect(reference, &[], Duration::from_secs(10), &|_| None).expect("client")
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How long a command of these tests may run, or a `serve` host take to answer, before
/// the test fails: far above what any takes (seconds at most), so that only a hang
/// reaches it.
const HANG: Duration = Duration::from_secs(120);

/// Run `command` to its end with `input` on its stdin, its output collected (as
/// `Command::output`); one still running after [`HANG`] is killed and fails the test.
fn run_bounded_with(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // From threads of their own: neither side can block the other on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    }
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {HANG:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().expect("writer");
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// `Command::output`, bounded by [`HANG`] (see [`run_bounded_with`]).
trait RunBounded {
    fn run_bounded(&mut self) -> std::process::Output;
}

impl RunBounded for Command {
    fn run_bounded(&mut self) -> std::process::Output {
        run_bounded_with(self, b"")
    }
}

/// A detached FILE.sig, as `deploy-guard sign FILE` writes it.
fn sign_file_with(path: &Path, key: &Path) {
    let bytes = std::fs::read(path).expect("read");
    let text = deploy_guard::admission::signature::sign(&read_signing_key(key).expect("key"), &bytes);
    std::fs::write(deploy_guard::admission::signature::signature_path(path), text).expect("write sig");
}

fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    generate_key_pair(&dir.join(name)).expect("keygen")
}

#[test]
fn push_sign_verify_and_check_on_the_command_line() {
    let ws = Workspace::story();
    let registry = RegistryProcess::start(ws.dir.path());
    let (private, public) = keys(ws.dir.path(), "ops");
    let (_, foreign) = keys(ws.dir.path(), "foreign");
    let target = format!("{}/policies/guard:1.0.0", registry.addr);
    let out = ws
        .command()
        .arg("push")
        .arg(ws.policy())
        .arg(&target)
        .arg("--key")
        .arg(&private)
        .run_bounded();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let (pushed, digest) = printed.trim().split_once('@').expect("REF@digest");
    assert_eq!(pushed, target);
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");

    // The manifest is the CNCF Wasm layout, read back by the registry's own API.
    let manifest = http_get(&registry.addr, &format!("/v2/policies/guard/manifests/{digest}"));
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest JSON");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["digest"], sha256_digest(REFERENCE));
    let sig_tag = digest.replace(':', "-") + ".sig";
    let signature = http_get(&registry.addr, &format!("/v2/policies/guard/manifests/{sig_tag}"));
    assert!(signature.contains("dev.cosignproject.cosign/signature"), "{signature}");

    let verify = |key: &Path, target: &str| {
        ws.command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", key)
            .args(["verify", target])
            .run_bounded()
    };
    let ok = verify(&public, &target);
    assert_eq!(ok.status.code(), Some(0), "{}{}", text(&ok.stdout), text(&ok.stderr));
    let refused = verify(&foreign, &target);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stdout).contains("another key"),
        "{}",
        text(&refused.stdout)
    );

    // An unsigned push, then `sign REF` signs it.
    let unsigned = format!("{}/policies/guard:next", registry.addr);
    let next = ws.dir.path().join("next.wasm");
    std::fs::write(&next, NEXT).expect("write");
    let out = ws.command().arg("push").arg(&next).arg(&unsigned).run_bounded();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = verify(&public, &unsigned);
    assert_eq!(before.status.code(), Some(1));
    assert!(text(&before.stdout).contains("unsigned"), "{}", text(&before.stdout));
    let out = ws
        .command()
        .args(["sign", &unsigned, "--key"])
        .arg(&private)
        .run_bounded();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(verify(&public, &unsigned).status.code(), Some(0));

    // `check` and `diff` take oci:// references, signature first when keys are trusted.
    let check = ws
        .command()
        .env("DEPLOY_GUARD_TRUSTED_KEYS", &public)
        .args(["check", &format!("oci://{target}")])
        .run_bounded();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let diff = ws
        .command()
        .arg("diff")
        .arg(format!("oci://{target}"))
        .arg(format!("oci://{unsigned}"))
        .run_bounded();
    assert_eq!(
        diff.status.code(),
        Some(1),
        "1.0.0 and 1.1.0 differ: {}",
        text(&diff.stdout)
    );

    // `serve --shadow` takes one too: 1.1.0 judges beside the file's 1.0.0.
    sign_file_with(&ws.policy(), &private);
    let shadowed = run_bounded_with(
        ws.command().env("DEPLOY_GUARD_TRUSTED_KEYS", &public).args([
            "serve",
            "--shadow",
            &format!("oci://{unsigned}"),
        ]),
        b"{\"work_item\": \"ORCH-081\", \"target\": \"awaiting\"}\n",
    );
    assert_eq!(shadowed.status.code(), Some(0), "{}", text(&shadowed.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&shadowed.stdout).expect("one answer");
    assert_eq!(answer["rule"], "non-terminal", "1.0.0 answers: {answer}");
    let stderr = text(&shadowed.stderr);
    assert!(
        stderr.contains("shadowing") && stderr.contains("deploy-status-guard@1.1.0"),
        "{stderr}"
    );
    assert!(stderr.contains("1 decisions compared, 1 disagreements"), "{stderr}");

    // A policy the gate refuses is never pushed.
    let bad = ws.dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm not a component").expect("write");
    let out = ws.command().arg("push").arg(&bad).arg(&target).run_bounded();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

/// A plain HTTP/1.0 GET to the registry (its own API, read back independently).
fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = http_request(addr, path);
    assert_eq!(status, 200, "{body}");
    body
}

/// A plain HTTP/1.0 GET to the registry: the status and the body.
fn http_request(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(HANG)).expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    (status, body.to_owned())
}

/// A fault-injecting HTTP proxy in front of a registry (std only). Each connection
/// carries one request, forwarded with `Connection: close`, so that every request is
/// looked at; while `failing` is on, a GET or HEAD of a cosign `.sig` manifest is
/// answered 500 without reaching the registry, with a body whose text says "manifest
/// unknown ... not found" (only the status may count).
struct FaultyProxy {
    addr: String,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    injected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl FaultyProxy {
    fn start(upstream: &str) -> FaultyProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let failing = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accepting = {
            let (failing, injected, stop) = (Arc::clone(&failing), Arc::clone(&injected), Arc::clone(&stop));
            let upstream = upstream.to_owned();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (failing, injected, upstream) =
                                (Arc::clone(&failing), Arc::clone(&injected), upstream.clone());
                            std::thread::spawn(move || {
                                let _ = proxy_one(client, &upstream, &failing, &injected);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        FaultyProxy {
            addr,
            failing,
            injected,
            stop,
            accepting: Some(accepting),
        }
    }

    fn fail(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn injected(&self) -> usize {
        self.injected.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

/// One request from `client`: answered 500 (a `.sig` manifest while `failing`), or
/// forwarded to `upstream` and its answer copied back until the registry closes.
fn proxy_one(
    client: TcpStream,
    upstream: &str,
    failing: &std::sync::atomic::AtomicBool,
    injected: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(HANG))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut head = request_line.clone();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        match name.as_str() {
            "connection" => continue,
            "content-length" => {
                length = line
                    .split_once(':')
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or_default()
            }
            "transfer-encoding" => panic!("this proxy forwards no chunked request body: {line}"),
            _ => {}
        }
        head.push_str(&line);
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut words = request_line.split(' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let signatures =
        (method == "GET" || method == "HEAD") && path.contains("/manifests/sha256-") && path.ends_with(".sig");
    if signatures && failing.load(std::sync::atomic::Ordering::SeqCst) {
        injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer =
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown: not found (injected 500)"}]}"#;
        write!(
            writer,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )?;
        return writer.flush();
    }
    let mut registry = TcpStream::connect(upstream)?;
    registry.set_read_timeout(Some(HANG))?;
    registry.write_all(head.as_bytes())?;
    registry.write_all(&body)?;
    std::io::copy(&mut registry, &mut writer)?;
    writer.shutdown(std::net::Shutdown::Write)
}

/// The registry fails the read of the signatures already given (500 to the `.sig`
/// manifest, through a fault-injecting proxy): `sign` and `push --key` exit 2 naming
/// it and write nothing, so the first signature stays and verifies; with the registry
/// healthy, the second signature is added beside the first and both verify.
#[test]
fn a_failing_read_of_the_signatures_never_drops_one() {
    let ws = Workspace::story();
    let registry = RegistryProcess::start(ws.dir.path());
    let proxy = FaultyProxy::start(&registry.addr);
    let (a_private, a_public) = keys(ws.dir.path(), "a");
    let (b_private, b_public) = keys(ws.dir.path(), "b");
    let direct = format!("{}/policies/guard:live", registry.addr);
    let proxied = format!("{}/policies/guard:live", proxy.addr);

    // Pushed, signed by A (through the proxy, healthy: it forwards faithfully).
    let out = ws
        .command()
        .arg("push")
        .arg(ws.policy())
        .arg(&proxied)
        .arg("--key")
        .arg(&a_private)
        .run_bounded();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let digest = text(&out.stdout)
        .trim()
        .split_once('@')
        .map(|(_, digest)| digest.to_owned())
        .expect("REF@digest");
    let sig_path = format!("/v2/policies/guard/manifests/{}.sig", digest.replace(':', "-"));
    // The signatures under the .sig tag, read from the registry itself.
    let signatures = || -> Vec<String> {
        let manifest: serde_json::Value = serde_json::from_str(&http_get(&registry.addr, &sig_path)).expect("JSON");
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["annotations"]["dev.cosignproject.cosign/signature"].to_string())
            .collect()
    };
    let verify = |key: &Path, target: &str| {
        ws.command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", key)
            .args(["verify", target])
            .run_bounded()
    };
    let signed_by_a = signatures();
    assert_eq!(signed_by_a.len(), 1, "{signed_by_a:?}");

    // The registry answers 500 to the .sig: `sign` by B exits 2 naming it, and writes
    // nothing.
    proxy.fail(true);
    let out = ws
        .command()
        .args(["sign", &proxied, "--key"])
        .arg(&b_private)
        .run_bounded();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("reading the signatures already given") && all.contains("code: 500"),
        "the failure is not named: {all}"
    );
    assert!(proxy.injected() >= 1, "the proxy injected nothing");
    assert_eq!(signatures(), signed_by_a, "the signatures changed");
    assert_eq!(verify(&a_public, &direct).status.code(), Some(0));
    assert_eq!(verify(&b_public, &direct).status.code(), Some(1));

    // `push --key` reads them before writing anything: exit 2, and not even the
    // artifact is pushed.
    let next = ws.dir.path().join("next.wasm");
    std::fs::write(&next, NEXT).expect("write");
    let injected = proxy.injected();
    let out = ws
        .command()
        .arg("push")
        .arg(&next)
        .arg(format!("{}/policies/guard:other", proxy.addr))
        .arg("--key")
        .arg(&b_private)
        .run_bounded();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("code: 500"), "the failure is not named: {all}");
    assert!(proxy.injected() > injected, "the proxy injected nothing");
    let (status, body) = http_request(&registry.addr, "/v2/policies/guard/manifests/other");
    assert_eq!(status, 404, "the artifact was pushed: {body}");

    // `verify` through the failing registry names the failure: not "unsigned".
    let out = verify(&a_public, &proxied);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("code: 500") && !said.contains("unsigned"), "{said}");

    // Healthy again: B's signature is added beside A's, and both verify.
    proxy.fail(false);
    let out = ws
        .command()
        .args(["sign", &proxied, "--key"])
        .arg(&b_private)
        .run_bounded();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let both = signatures();
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&signed_by_a[0]), "A's signature was dropped: {both:?}");
    assert_eq!(verify(&a_public, &direct).status.code(), Some(0));
    assert_eq!(verify(&b_public, &direct).status.code(), Some(0));
}

/// A `serve` host following a tag, its stderr kept in a file to wait for its lines,
/// its answers read by a thread of its own so that waiting for one is bounded.
struct Host {
    child: Child,
    stdin: std::process::ChildStdin,
    answers: std::sync::mpsc::Receiver<String>,
    log: PathBuf,
}

impl Host {
    fn start(ws: &Workspace, name: &str, policy: &str, trusted: &Path) -> Host {
        Host::start_with(ws, name, policy, trusted, &[])
    }

    /// [`Host::start`] with these environment variables too.
    fn start_with(ws: &Workspace, name: &str, policy: &str, trusted: &Path, env: &[(&str, String)]) -> Host {
        let log = ws.dir.path().join(format!("{name}.log"));
        let mut child = ws
            .command()
            .arg("serve")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("DEPLOY_GUARD_POLICY", policy)
            .env("DEPLOY_GUARD_POLL_MS", "200")
            .env("DEPLOY_GUARD_TRUSTED_KEYS", trusted)
            .env("DEPLOY_GUARD_CACHE", ws.dir.path().join(format!("{name}-cache")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("serve starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Host {
            child,
            stdin,
            answers,
            log,
        }
    }

    /// Ask for a decision and wait (at most [`HANG`]) for its answer.
    fn ask(&mut self) -> serde_json::Value {
        writeln!(self.stdin, "{{\"work_item\": \"ORCH-081\", \"target\": \"awaiting\"}}").expect("write");
        self.stdin.flush().expect("flush");
        let line = self
            .answers
            .recv_timeout(HANG)
            .unwrap_or_else(|e| panic!("no answer within {HANG:?} ({e}); log:\n{}", self.log()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (30 s at most) for a line of the host's log containing `needle`.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_fleet_of_three_follows_a_signed_tag_and_rides_out_the_registry_going_down() {
    let ws = Workspace::story();
    let mut registry = RegistryProcess::start(ws.dir.path());
    let (private, public) = keys(ws.dir.path(), "ops");
    let (foreign, _) = keys(ws.dir.path(), "foreign");
    let reference = registry.reference("policies/guard:live");
    let client = registry.client(&reference);
    let key = read_signing_key(&private).expect("key");
    let first = client.push_policy(&reference, REFERENCE).expect("push 1.0.0");
    client.push_signature(&reference, &first, &key).expect("sign 1.0.0");
    let policy = format!("oci://{reference}");
    let reference_digest = sha256_digest(REFERENCE);
    let next_digest = sha256_digest(NEXT);

    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|name| Host::start(&ws, name, &policy, &public))
        .collect();
    for host in &mut hosts {
        let answer = host.ask();
        assert_eq!(answer["policy_digest"], reference_digest.as_str(), "{answer}");
    }

    // Unsigned 1.1.0 on the tag: refused by every host, 1.0.0 keeps deciding.
    let next = client.push_policy(&reference, NEXT).expect("push 1.1.0");
    for host in &mut hosts {
        host.wait_for_log("unsigned");
        let answer = host.ask();
        assert_eq!(answer["policy_digest"], reference_digest.as_str(), "{answer}");
    }
    // Signed by a key nobody trusts: refused too.
    client
        .push_signature(&reference, &next, &read_signing_key(&foreign).expect("key"))
        .expect("foreign signature");
    for host in &mut hosts {
        host.wait_for_log("another key");
        let answer = host.ask();
        assert_eq!(answer["policy_digest"], reference_digest.as_str(), "{answer}");
    }

    // Signed by the trusted key: every host takes it, no fail-safe meanwhile. Each
    // host's answers are watched until one names 1.1.0's digest (the event itself);
    // the ceiling is there only so that a host that never takes it fails the test.
    client
        .push_signature(&reference, &next, &key)
        .expect("trusted signature");
    let signed_at = Instant::now();
    let mut reached = [None; 3];
    while reached.iter().any(Option::is_none) {
        assert!(
            signed_at.elapsed() < HANG,
            "1.1.0 did not reach every host within {HANG:?}: {reached:?}"
        );
        for (host, reached) in hosts.iter_mut().zip(&mut reached) {
            let answer = host.ask();
            assert_ne!(
                answer["rule"], "fail-safe",
                "a fail-safe answer during the rollout: {answer}"
            );
            if reached.is_none() && answer["policy_digest"] == next_digest.as_str() {
                *reached = Some(signed_at.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let slowest = reached.iter().flatten().max().copied().unwrap_or_default();
    eprintln!("rollout: 1.1.0 reached 3 hosts in {slowest:?} (poll 200 ms): {reached:?}");

    // The registry goes down: every host goes on deciding on 1.1.0.
    registry.stop();
    for host in &mut hosts {
        host.wait_for_log("policy not updated from");
        for _ in 0..3 {
            let answer = host.ask();
            assert_eq!(answer["policy_digest"], next_digest.as_str(), "{answer}");
            assert_eq!(answer["rule"], "failed", "1.1.0 decides: {answer}");
        }
    }
    // A host restarted while the registry is down starts on its last good copy.
    let restarted = hosts.remove(0);
    restarted.stop();
    let mut restarted = Host::start(&ws, "a", &policy, &public);
    let answer = restarted.ask();
    assert_eq!(answer["policy_digest"], next_digest.as_str(), "{answer}");
    assert_eq!(answer["error"], serde_json::Value::Null, "{answer}");
    restarted.wait_for_log("starting on the last good local copy");
    restarted.stop();
    for host in hosts {
        host.stop();
    }
}

/// A guard following `reference`, with trusted `public`, on its own cache.
fn follower(ws: &Workspace, reference: &PolicyRef, public: &Path) -> Guard {
    Guard::new(
        deploy_guard::Config {
            policy: format!("oci://{reference}").into(),
            poll: Duration::from_millis(100),
            cache: Some(ws.dir.path().join("cache")),
            ..ws.config()
        }
        .with_trusted_keys(vec![public.to_owned()]),
    )
    .expect("guard")
}

/// A registry holding the signed reference policy under `policies/guard:live`, and a
/// guard following that tag with the signing key trusted: the start of the tests of
/// what a bad artifact or signature pushed over it does.
struct Followed {
    ws: Workspace,
    registry: RegistryProcess,
    key: deploy_guard::admission::signature::SigningKey,
    reference: PolicyRef,
    client: Registry,
    good: String,
    guard: Guard,
    live: String,
}

impl Followed {
    fn start() -> Followed {
        let ws = Workspace::story();
        let registry = RegistryProcess::start(ws.dir.path());
        let (private, public) = keys(ws.dir.path(), "ops");
        let key = read_signing_key(&private).expect("key");
        let reference = registry.reference("policies/guard:live");
        let client = registry.client(&reference);
        let good = client.push_policy(&reference, REFERENCE).expect("push");
        client.push_signature(&reference, &good, &key).expect("sign");
        let guard = follower(&ws, &reference, &public);
        let live = sha256_digest(REFERENCE);
        Followed {
            ws,
            registry,
            key,
            reference,
            client,
            good,
            guard,
            live,
        }
    }
}

/// Refresh until the follower acts on something other than "unchanged".
fn refresh_until_refused(guard: &Guard) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match guard.refresh_policy() {
            Some(Outcome::Refused(why)) => return why,
            Some(Outcome::Activated { identity, .. }) => panic!("{identity} went live"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no refusal within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A manifest in the CNCF layout with these layers (JSON text).
fn manifest(config: &[u8], layers: &[(&str, String, u64)]) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": sha256_digest(config),
            "size": config.len(),
        },
        "layers": layers.iter().map(|(media_type, digest, size)| serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": size,
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

#[test]
fn bad_artifacts_are_refused_each_naming_its_cause_and_the_live_policy_stays() {
    let Followed {
        ws: _ws,
        registry,
        key,
        reference,
        client,
        good: _good,
        guard,
        live,
    } = Followed::start();
    assert_eq!(guard.policy().expect("live").digest, live);

    let config = b"{}".to_vec();
    let next = NEXT.to_vec();
    let next_digest = sha256_digest(&next);
    let size = next.len() as u64;
    // Each bad artifact is put on the tag, signed by the trusted key (so that only
    // what is wrong with it is wrong), and must be refused naming its cause.
    let case = |name: &str, body: Vec<u8>, blobs: Vec<Vec<u8>>, expect: &str| {
        let digest = client.push_artifact(&reference, &blobs, body).expect(name);
        client.push_signature(&reference, &digest, &key).expect("sign");
        let why = refresh_until_refused(&guard);
        assert!(why.contains(expect), "{name}: {why}");
        assert_eq!(
            guard.policy().expect("live").digest,
            live,
            "{name} changed the live policy"
        );
        let d = guard.decide("ORCH-081", Target::Awaiting, None);
        assert_eq!(
            (d.rule.as_str(), d.policy_digest.as_deref()),
            ("non-terminal", Some(live.as_str()))
        );
    };
    case(
        "oversized blob",
        manifest(&config, &[("application/wasm", next_digest.clone(), 65 << 20)]),
        vec![config.clone(), next.clone()],
        "more than the 67108864 allowed",
    );
    case(
        "two layers",
        manifest(
            &config,
            &[
                ("application/wasm", next_digest.clone(), size),
                ("application/wasm", next_digest.clone(), size),
            ],
        ),
        vec![config.clone(), next.clone()],
        "expected exactly one layer",
    );
    // Digest mismatch: the registry's stored blob is altered on disk, so that it
    // serves other bytes under the digest (what a corrupt or lying registry does).
    let altered = [next.clone(), b"x".to_vec()].concat();
    let altered_digest = sha256_digest(&altered);
    let hex = altered_digest.trim_start_matches("sha256:");
    client
        .push_artifact(
            &registry.reference("policies/guard:scratch"),
            &[config.clone(), altered.clone()],
            manifest(
                &config,
                &[("application/wasm", altered_digest.clone(), altered.len() as u64)],
            ),
        )
        .expect("scratch");
    let blob_file = registry
        .storage
        .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    std::fs::write(&blob_file, [&NEXT[..NEXT.len() - 1], b"yz"].concat()).expect("alter the blob");
    case(
        "digest mismatch",
        manifest(&config, &[("application/wasm", altered_digest, altered.len() as u64)]),
        vec![config.clone()],
        "digest mismatch",
    );
}

#[test]
fn bad_signatures_are_refused_each_naming_its_cause() {
    let Followed {
        ws: _ws,
        registry: _registry,
        key,
        reference,
        client,
        good,
        guard,
        live,
    } = Followed::start();

    let next = client.push_policy(&reference, NEXT).expect("push 1.1.0");
    // A .sig whose payload names another digest, signed by the trusted key.
    let push_sig = |payload: String, signature: String| {
        let config = b"{}".to_vec();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "digest": sha256_digest(payload.as_bytes()), "size": payload.len(),
                        "annotations": {"dev.cosignproject.cosign/signature": signature}}],
        });
        client
            .push_artifact(
                &reference.signature_tag(&next),
                &[config, payload.into_bytes()],
                body.to_string().into_bytes(),
            )
            .expect("push sig");
    };
    let other_payload = simple_signing_payload(&reference, &good);
    let other_signature = deploy_guard::admission::signature::sign(&key, other_payload.as_bytes());
    push_sig(other_payload.clone(), other_signature.clone());
    let why = refresh_until_refused(&guard);
    assert!(why.contains("signed for another digest"), "{why}");
    assert_eq!(guard.policy().expect("live").digest, live);

    // A truncated signature over the right payload.
    let payload = simple_signing_payload(&reference, &next);
    let signature = deploy_guard::admission::signature::sign(&key, payload.as_bytes());
    push_sig(payload.clone(), signature[..signature.len() / 2].to_owned());
    let why = refresh_until_refused(&guard);
    assert!(why.contains("malformed signature"), "{why}");
    assert_eq!(guard.policy().expect("live").digest, live);
    // One manifest refused for its signature, however many polls saw it refused: one
    // refusal in the metrics (an alert on "any increase" must not fire every poll).
    let refusals = guard
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("deploy_guard_policy_refusals_total{reason=\"signature\"} "))
        .map(str::to_owned);
    assert_eq!(refusals.as_deref(), Some("1"), "{}", guard.metrics());

    // And the right signature at last: it goes live.
    push_sig(payload, signature);
    let deadline = Instant::now() + Duration::from_secs(60);
    while guard.policy().expect("live").digest == live {
        assert!(Instant::now() < deadline, "the signed 1.1.0 never went live");
        guard.refresh_policy();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(NEXT));
}

#[test]
fn unreachable_dns_and_a_registry_hanging_mid_body_are_named_and_bounded() {
    // DNS: `.invalid` never resolves (RFC 6761).
    let nowhere = PolicyRef::parse("registry.invalid:5000/policies/guard:live").expect("reference");
    let client = Registry::connect(&nowhere, &[], Duration::from_secs(10), &|_| None).expect("client");
    let error = client.resolve(&nowhere).expect_err("no such host").to_string();
    assert!(error.contains("dns error") || error.contains("lookup"), "{error}");

    // A registry that sends headers and part of a body, then hangs.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = std::sync::Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let mut held = Vec::new();
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 100000\r\n\r\n{\"schemaVersion\":",
                    );
                    let _ = stream.flush();
                    held.push(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let hanging = PolicyRef::parse(&format!("{addr}/policies/guard:live")).expect("reference");
    let client = Registry::connect(&hanging, &[], Duration::from_secs(1), &|_| None).expect("client");
    let started = Instant::now();
    let error = client.resolve(&hanging).expect_err("a hanging registry");
    let waited = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().expect("server");
    let error = error.to_string();
    assert!(
        error.contains("no answer within") || error.contains("timed out"),
        "{error}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "the timeout did not bound the wait: {waited:?}"
    );
}

/// Trusted keys that change with a configuration reload apply to the policy already
/// followed: its manifest's signature is checked again; signed only by a key no longer
/// trusted, it stops deciding (fail-safe, naming why) until a trusted key signs it.
#[test]
fn a_reload_that_changes_the_trusted_keys_checks_the_followed_policy_again() {
    let ws = Workspace::story();
    let registry = RegistryProcess::start(ws.dir.path());
    let (old_private, old_public) = keys(ws.dir.path(), "old");
    let (new_private, new_public) = keys(ws.dir.path(), "new");
    let reference = registry.reference("policies/guard:live");
    let client = registry.client(&reference);
    let good = client.push_policy(&reference, REFERENCE).expect("push");
    client
        .push_signature(&reference, &good, &read_signing_key(&old_private).expect("key"))
        .expect("sign");
    let file = ws.dir.path().join("guard.toml");
    let write_config = |trusted: &Path| {
        let text = format!(
            "db = {:?}\npolicy = \"oci://{reference}\"\ntrusted_keys = {:?}\npoll_ms = 100\ncache = {:?}\n",
            ws.db(),
            trusted,
            ws.dir.path().join("cache")
        );
        deploy_guard_e2e::write_atomically(&file, text.as_bytes());
    };
    write_config(&old_public);
    let config = deploy_guard::Config::load_from(
        |name| (name == "DEPLOY_GUARD_CONFIG").then(|| file.display().to_string()),
        &deploy_guard::Overrides::default(),
    );
    assert_eq!(config.problem, None);
    let guard = Guard::new(config).expect("guard");
    let live = sha256_digest(REFERENCE);
    assert_eq!(guard.policy().expect("signed by the old key, live").digest, live);

    write_config(&new_public);
    let deadline = Instant::now() + Duration::from_secs(30);
    while guard.refresh_config().is_none() {
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let why = refresh_until_refused(&guard);
    assert!(why.contains("not signed by them"), "{why}");
    assert!(guard.policy().is_none());
    let decision = guard.decide("ORCH-072", Target::Awaiting, None);
    assert_eq!(decision.rule, "fail-safe");
    assert!(
        decision
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("policy-unavailable:")),
        "{decision:?}"
    );

    // Signed by the new key: the same manifest is live again.
    client
        .push_signature(&reference, &good, &read_signing_key(&new_private).expect("key"))
        .expect("sign");
    let deadline = Instant::now() + Duration::from_secs(60);
    while guard.policy().is_none() {
        assert!(Instant::now() < deadline, "never live again");
        guard.refresh_policy();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(guard.policy().expect("live").digest, live);
    assert_eq!(guard.decide("ORCH-072", Target::Awaiting, None).rule, "non-terminal");
}

/// A trusted key file rewritten in place (no config file at all, the keys from the
/// environment) is seen as a change of the configuration, for a followed tag as for a
/// file: the keys are read again once, the live policy is verified again against them
/// offline, and withdrawn while they do not sign it.
#[test]
fn a_trusted_key_rewritten_in_place_applies_to_the_followed_policy() {
    let ws = Workspace::story();
    let registry = RegistryProcess::start(ws.dir.path());
    let (old_private, old_public) = keys(ws.dir.path(), "old");
    let (new_private, new_public) = keys(ws.dir.path(), "new");
    let reference = registry.reference("policies/guard:live");
    let client = registry.client(&reference);
    let good = client.push_policy(&reference, REFERENCE).expect("push");
    client
        .push_signature(&reference, &good, &read_signing_key(&old_private).expect("key"))
        .expect("sign");
    let trusted = ws.dir.path().join("trusted.pub");
    std::fs::copy(&old_public, &trusted).expect("the trusted key");
    let env = |name: &str| match name {
        "DEPLOY_GUARD_DB" => Some(ws.db().display().to_string()),
        "DEPLOY_GUARD_POLICY" => Some(format!("oci://{reference}")),
        "DEPLOY_GUARD_TRUSTED_KEYS" => Some(trusted.display().to_string()),
        "DEPLOY_GUARD_POLL_MS" => Some("100".to_owned()),
        "DEPLOY_GUARD_CACHE" => Some(ws.dir.path().join("cache").display().to_string()),
        _ => None,
    };
    let config = deploy_guard::Config::load_from(env, &deploy_guard::Overrides::default());
    assert_eq!((config.problem.as_deref(), config.file.as_deref()), (None, None));
    let guard = Guard::new(config).expect("guard");
    let live = sha256_digest(REFERENCE);
    assert_eq!(guard.policy().expect("signed by the old key, live").digest, live);

    // The same file, another key: rewritten in place (same path, same inode).
    std::fs::write(&trusted, std::fs::read(&new_public).expect("new key")).expect("rewrite in place");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reload = loop {
        if let Some(reload) = guard.refresh_config() {
            break reload;
        }
        assert!(Instant::now() < deadline, "the rewritten key file was never seen");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(reload, deploy_guard::guard::ConfigReload::Reloaded);
    let why = refresh_until_refused(&guard);
    assert!(why.contains("not signed by them"), "{why}");
    assert!(guard.policy().is_none());

    // Signed by the new key: live again.
    client
        .push_signature(&reference, &good, &read_signing_key(&new_private).expect("key"))
        .expect("sign");
    let deadline = Instant::now() + Duration::from_secs(60);
    while guard.policy().is_none() {
        assert!(Instant::now() < deadline, "never live again");
        guard.refresh_policy();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(guard.policy().expect("live").digest, live);
}

/// A registry that requires credentials: `push`, `verify` and following a tag find
/// them in the docker configuration (`DOCKER_CONFIG`), as docker and cosign do; without
/// them, or with a wrong password, each says the registry refused, and neither the
/// password nor its encoding ever reaches an answer or a log line.
#[test]
fn a_registry_that_requires_credentials_is_reached_with_the_docker_config_and_never_logs_them() {
    let ws = Workspace::story();
    let password = "s3cret-Pa55word";
    let registry = RegistryProcess::start_with_credentials(ws.dir.path(), "ops", password);
    let reference = registry.reference("policies/guard:live");
    let policy_file = ws.policy();
    let docker_config = |user_and_password: &str| {
        let dir = ws.dir.path().join(format!("docker-{}", user_and_password.len()));
        std::fs::create_dir_all(&dir).expect("dir");
        let auth = base64_of(user_and_password);
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, registry.addr),
        )
        .expect("config.json");
        (dir, auth)
    };
    let (good, good_auth) = docker_config(&format!("ops:{password}"));
    let (wrong, wrong_auth) = docker_config("ops:not-the-password");
    let secrets = [
        password.to_owned(),
        good_auth,
        wrong_auth,
        "not-the-password".to_owned(),
    ];
    let assert_no_secret = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} shows a credential: {text}");
        }
    };
    let push = |docker: Option<&Path>| {
        let mut command = ws.command();
        // Every log line on, the libraries' too: none may show a credential.
        command.env("HOME", ws.dir.path()).env("RUST_LOG", "trace").args([
            "push",
            policy_file.to_str().expect("utf-8"),
            &reference.to_string(),
        ]);
        if let Some(docker) = docker {
            command.env("DOCKER_CONFIG", docker);
        }
        command.run_bounded()
    };

    // No credentials, then wrong ones: refused by the registry, said so, nothing shown.
    for docker in [None, Some(wrong.as_path())] {
        let out = push(docker);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "registry trouble: {all}");
        assert!(
            all.to_lowercase().contains("authoriz"),
            "the refusal is not named: {all}"
        );
        assert_no_secret("a refused push", &all);
    }
    // The right ones: pushed.
    let out = push(Some(&good));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_no_secret("a push", &all);

    // Following the tag: with the right credentials the pushed policy decides; with the
    // wrong ones every decision fails safe naming the refusal.
    let decide = |docker: &Path, cache: &str| {
        let out = ws
            .command()
            .env("HOME", ws.dir.path())
            .env("DOCKER_CONFIG", docker)
            .env("RUST_LOG", "trace")
            .env("DEPLOY_GUARD_POLICY", format!("oci://{reference}"))
            .env("DEPLOY_GUARD_CACHE", ws.dir.path().join(cache))
            .args(["decide", "--work-item", "ORCH-072", "--target", "awaiting"])
            .run_bounded();
        assert_eq!(out.status.code(), Some(0));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_no_secret("a decision", &all);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON answer")
    };
    let answer = decide(&good, "cache-good");
    assert_eq!(
        (answer["rule"].as_str(), answer["policy"].as_str()),
        (Some("non-terminal"), Some("deploy-status-guard@1.2.0")),
        "{answer}"
    );
    // (A cache of its own: with the good run's local copy it would start on that copy,
    // as a host does when its registry is unreachable.)
    let answer = decide(&wrong, "cache-wrong");
    assert_eq!(answer["rule"], "fail-safe", "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("policy-unavailable:") && error.to_lowercase().contains("not authorized"),
        "{answer}"
    );
}

/// A registry whose password only a docker credential helper knows (htpasswd on the
/// registry; the helper a script on `PATH` that speaks the protocol): `push --key` and
/// a `serve` host following the tag reach it through `credsStore` (which wins over a
/// wrong `auths` entry) and through `credHelpers` (which wins over a `credsStore` whose
/// helper is missing); a helper that is missing or fails is named, by `push` and in a
/// decision's answer. With every log line on, nothing printed shows the secret.
#[test]
fn a_registry_behind_a_credential_helper_is_reached_through_it_and_never_shows_the_secret() {
    let ws = Workspace::story();
    let password = "h3lper-Only-Pa55";
    let registry = RegistryProcess::start_with_credentials(ws.dir.path(), "ops", password);
    let (private, public) = keys(ws.dir.path(), "ops");
    let bin = ws.dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let calls = ws.dir.path().join("helper-calls");
    let helper = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    // The protocol: `get`, the server on stdin, {ServerURL, Username, Secret} on stdout;
    // docker's "credentials not found" for any other server.
    let speaking = |name: &str| {
        format!(
            r#"[ "$1" = get ] || exit 9
read -r server || true
echo "{name} $server" >> "{calls}"
if [ "$server" = "{addr}" ]; then
  printf '{{"ServerURL":"%s","Username":"ops","Secret":"%s"}}\n' "$server" "{password}"
else
  echo "credentials not found in native keychain"; exit 1
fi"#,
            calls = calls.display(),
            addr = registry.addr,
        )
    };
    helper("dg-store", &speaking("dg-store"));
    helper("dg-helper", &speaking("dg-helper"));
    // Prints the secret, then fails: only its name and status may be shown.
    helper("dg-fails", &format!("echo '{password}'; echo '{password}' >&2; exit 1"));
    let secrets = [password.to_owned(), base64_of(&format!("ops:{password}"))];
    let assert_no_secret = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} shows the secret: {text}");
        }
    };
    let docker_config = |name: &str, config: String| {
        let dir = ws.dir.path().join(format!("docker-{name}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("config.json"), config).expect("config.json");
        dir
    };
    let addr = &registry.addr;
    let env = |docker: &Path| {
        vec![
            ("DOCKER_CONFIG", docker.display().to_string()),
            (
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
            ),
            ("RUST_LOG", "trace".to_owned()),
        ]
    };
    let push = |docker: &Path, tag: &str| {
        let out = ws
            .command()
            .envs(env(docker))
            .arg("push")
            .arg(ws.policy())
            .arg(format!("{addr}/policies/guard:{tag}"))
            .arg("--key")
            .arg(&private)
            .run_bounded();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_no_secret("push", &all);
        (out.status.code(), all)
    };

    let store = docker_config(
        "store",
        format!(
            r#"{{"credsStore": "dg-store", "auths": {{"{addr}": {{"auth": "{}"}}}}}}"#,
            base64_of("ops:not-the-password")
        ),
    );
    let helpers = docker_config(
        "helpers",
        format!(r#"{{"credHelpers": {{"{addr}": "dg-helper"}}, "credsStore": "dg-absent"}}"#),
    );
    for (name, docker) in [("dg-store", &store), ("dg-helper", &helpers)] {
        let (code, all) = push(docker, name);
        assert_eq!(code, Some(0), "{name}: {all}");
        let called = std::fs::read_to_string(&calls).unwrap_or_default();
        assert!(
            called.contains(&format!("{name} {addr}\n")),
            "{name} not asked: {called}"
        );
        let mut host = Host::start_with(
            &ws,
            name,
            &format!("oci://{addr}/policies/guard:{name}"),
            &public,
            &env(docker),
        );
        let answer = host.ask();
        assert_eq!(
            (answer["policy_digest"].as_str(), answer["rule"].as_str()),
            (Some(sha256_digest(REFERENCE).as_str()), Some("non-terminal")),
            "{name}: {answer}"
        );
        assert_no_secret("an answer", &answer.to_string());
        let log = host.log();
        host.stop();
        assert!(log.contains("TRACE"), "{name}: not every line was on");
        assert_no_secret("serve's log", &log);
    }

    // A helper missing, or failing: named, never quoted.
    let missing = docker_config("missing", r#"{"credsStore": "dg-absent"}"#.to_owned());
    let failing = docker_config("failing", format!(r#"{{"credHelpers": {{"{addr}": "dg-fails"}}}}"#));
    for (docker, named) in [
        (&missing, "docker-credential-dg-absent: not found on PATH"),
        (&failing, "docker-credential-dg-fails: exited with status 1"),
    ] {
        let (code, all) = push(docker, "refused");
        assert_eq!(code, Some(2), "{all}");
        assert!(all.contains(named), "{all}");
        let out = ws
            .command()
            .envs(env(docker))
            .env("DEPLOY_GUARD_POLICY", format!("oci://{addr}/policies/guard:dg-store"))
            .env("DEPLOY_GUARD_CACHE", ws.dir.path().join("cache-refused"))
            .args(["decide", "--work-item", "ORCH-072", "--target", "awaiting"])
            .run_bounded();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_no_secret("a decision", &all);
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON answer");
        assert_eq!(answer["rule"], "fail-safe", "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(named)), "{answer}");
    }
}

/// Standard base64 (docker's `auth` field), written here so that the test does not
/// take it from the code under test.
fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
