//! `deploy-guard serve`: the JSON-lines loop with hot swap, and shadow mode.

use deploy_guard::observe::metrics_server::MetricsServer;
use deploy_guard::rollout::follow::admit_candidate;
use deploy_guard::{Config, Guard, Overrides};
use std::path::Path;
use std::process::ExitCode;

pub fn run(overrides: Overrides, shadow: Option<&Path>, metrics: Option<String>) -> anyhow::Result<ExitCode> {
    let config = Config::load(&overrides);
    super::init_logging(config.log, "info");
    super::gather_decision_lines();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut input = std::io::BufReader::with_capacity(1 << 16, AwakeFirst(stdin.lock()));
    let mut output = AnswersThenLines(std::io::BufWriter::with_capacity(1 << 16, stdout.lock()));
    let guard = match Guard::with_overrides(config.clone(), overrides) {
        Ok(guard) => guard,
        Err(e) => {
            // Never raise: without a sandbox every answer is a fail-safe naming why.
            tracing::error!(target: "deploy_guard::serve", "{e}: every decision fails safe");
            deploy_guard::serve::serve_fail_safe(&e.to_string(), &mut input, &mut output)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(candidate) = shadow {
        match admit_candidate(guard.sandbox(), candidate, &config) {
            Ok(admitted) => {
                let shadow = guard.start_shadow(admitted.policy)?;
                tracing::info!(target: "deploy_guard::shadow", candidate = shadow.candidate(), "shadowing");
            }
            Err(e) => {
                eprintln!(
                    "deploy-guard: the shadow candidate is refused: {}: {e}",
                    candidate.display()
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    let _watcher = guard.watch()?;
    // The metrics endpoint is a convenience: one that cannot start is a warning, and the
    // answers go on.
    let _metrics = metrics.or_else(|| config.metrics_addr.clone()).and_then(|addr| {
        match MetricsServer::start(&addr, guard.clone()) {
            Ok(server) => {
                let url = format!("http://{}/metrics", server.addr());
                tracing::info!(target: "deploy_guard::metrics", url = %url, "serving metrics on {url}");
                Some(server)
            }
            Err(e) => {
                tracing::warn!(target: "deploy_guard::metrics", "{e}: serving without metrics");
                None
            }
        }
    });
    let answered = deploy_guard::serve::serve(&guard, &mut input, &mut output);
    super::flush_decision_lines();
    let answered = answered?;
    tracing::info!(target: "deploy_guard::serve", answered, "end of input");
    if let Some(stats) = guard.finish_shadow() {
        let candidate = shadow.map(|p| p.display().to_string()).unwrap_or_default();
        // A summary for the operator: stderr, since stdout carries answers only.
        eprintln!("{}", stats.summary(&candidate));
    }
    if let Some(ledger) = guard.ledger() {
        ledger.flush();
    }
    Ok(ExitCode::SUCCESS)
}

/// `serve`'s stdout: flushing it (which the loop does at the end of every batch) also
/// writes the batch's decision lines to stderr, in one write.
struct AnswersThenLines<W: std::io::Write>(W);

impl<W: std::io::Write> std::io::Write for AnswersThenLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let answers = self.0.flush();
        super::flush_decision_lines();
        answers
    }
}

/// How long `serve` looks for the next request without sleeping before it blocks on
/// stdin. A client that asks one request at a time (the Python sidecar client) sends
/// the next one soon after its answer; found awake, it costs no wake-up of a sleeping
/// process (measured with `python -m deploy_guard.bench`, with the client's own
/// look of the same kind: the sidecar's median from 45 to 37 us). When
/// requests are waiting, the first look finds them: one `poll` per 64 KiB read.
const AWAKE_FOR: std::time::Duration = std::time::Duration::from_micros(50);

/// stdin, looked at with `poll` (timeout 0) for [`AWAKE_FOR`] before a blocking read.
struct AwakeFirst<R: std::io::Read>(R);

impl<R: std::io::Read> std::io::Read for AwakeFirst<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let until = std::time::Instant::now() + AWAKE_FOR;
        loop {
            let mut stdin = libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, a timeout of 0: poll only reports.
            let ready = unsafe { libc::poll(&mut stdin, 1, 0) };
            if ready != 0 || std::time::Instant::now() >= until {
                break;
            }
            std::hint::spin_loop();
        }
        self.0.read(buf)
    }
}
