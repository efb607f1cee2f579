//! `deploy-guard bench`: the cost of the sandbox against the native Rust reference, in
//! one run, on a generated database of realistic size.
//!
//! Every figure is a per-decision latency measured call by call in repeated batches:
//! the median of the batches' medians, the median of their p99s, and the spread (the
//! lowest and highest batch median). Absolute times on a shared machine mean little;
//! the ratios, measured in the same run, are the result.

mod measure;
mod workload;

use anyhow::Context;
use deploy_guard::facts::source::FactsSource;
use deploy_guard::files::write::{Mode, write_atomically};
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::sandbox::policy::LoadedPolicy;
use deploy_guard::sandbox::question::FactsRecord;
use deploy_guard::{Config, Guard, Limits, Request, Target};
use measure::{Figure, measure, throughput};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
pub use workload::Mix;
use workload::{SERVE_REQUESTS, TASKS, TaskRow, create_database, request, requests, serve_input};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The policy to measure (default: the embedded reference policy).
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,
    /// Decisions per measurement.
    #[arg(long, default_value_t = 20_000)]
    decisions: usize,
    /// Threads for the multi-threaded throughput.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batches the decisions of a measurement are split into.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Write the generated database (`orchestrator.db`) and the `serve` requests
    /// (`requests.jsonl`) to DIR and stop: the same workload for a comparison made
    /// outside this repository (the original Python guard, say).
    #[arg(long, value_name = "DIR")]
    export_workload: Option<PathBuf>,
    /// Which requests: `bench` (every path, 40% done) or `in-progress` (80% for
    /// non-terminal tasks in scope, 10% done, 10% other, with a scope set: the common
    /// case in production).
    #[arg(long, value_enum, default_value_t = Mix::Bench)]
    mix: Mix,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.export_workload {
        return workload::export(dir, args.mix);
    }
    // Decision lines are formatted and written to a sink: their cost is counted.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .with_ansi(false)
        .try_init();
    let dir = tempfile::tempdir().context("creating a directory for the bench")?;
    let db = dir.path().join("orchestrator.db");
    let (_orchestrator, tasks) = create_database(&db)?;
    let policy_path = match &args.policy {
        Some(path) => path.clone(),
        None => {
            let path = dir.path().join("deploy-status-guard.wasm");
            write_atomically(
                &path,
                deploy_guard::sandbox::embedded::DEPLOY_STATUS_GUARD,
                Mode::Readable,
            )?;
            path
        }
    };
    let policy_bytes = std::fs::read(&policy_path).with_context(|| format!("reading {}", policy_path.display()))?;
    let cache_dir = dir.path().join("cache");
    let mut scope_warnings = Vec::new();
    let config = Config {
        db: db.clone(),
        policy: policy_path.clone(),
        cache: Some(cache_dir.clone()),
        scope_repos: deploy_guard::config::sanitise_scope(args.mix.scope(), "--mix", &mut scope_warnings),
        ..Config::default()
    };
    let guard = Guard::new(config.clone())?;
    let policy = guard.policy().context("the policy did not pass the gate")?;
    let n = args.decisions.max(args.batches);
    let reqs = requests(n, args.mix, &tasks);

    println!("deploy-guard bench: {} ({})", policy.identity(), policy.digest);
    println!(
        "  database: {TASKS} tasks (WAL); mix {} (scope \"{}\"); {n} decisions per figure in {} batches; {} threads",
        args.mix.name(),
        args.mix.scope(),
        args.batches,
        args.threads
    );

    // Warm both paths (connections, statement cache, pool slots).
    for r in reqs.iter().take(2000) {
        guard.decide_native_unlogged(request(r)).log();
        guard.decide(&r.0, r.1, Some("bench"));
    }
    let native = measure(n, args.batches, |i| {
        guard.decide_native_unlogged(request(&reqs[i])).log()
    });
    let sandboxed = measure(n, args.batches, |i| {
        guard.decide(&reqs[i].0, reqs[i].1, Some("bench"));
    });
    let facts_source = FactsSource::new(&db, config.busy_timeout);
    let facts_once = measure(n, args.batches, |i| {
        let _ = facts_source.read(&reqs[i].0);
    });
    // The facts each request's policy is asked, read through the guard's own path.
    let prepared: Vec<FactsRecord> = reqs
        .iter()
        .map(|r| guard.facts_record(request(r)))
        .collect::<Result<_, _>>()?;
    let sandbox_alone = measure(n, args.batches, |i| {
        let _ = policy.rule(&prepared[i].question());
    });
    let batched = {
        // serve's path: 16 waiting requests, facts in one read transaction.
        let chunk = 16;
        let figure = measure(n / chunk, args.batches, |i| {
            let batch: Vec<Request<'_>> = reqs[i * chunk..(i + 1) * chunk].iter().map(request).collect();
            guard.decide_batch(&batch);
        });
        Figure {
            median: figure.median / chunk as f64,
            p99: figure.p99 / chunk as f64,
            low: figure.low / chunk as f64,
            high: figure.high / chunk as f64,
        }
    };

    println!();
    println!("{}", native.line("native reference, end to end"));
    println!("{}", sandboxed.line("sandboxed, end to end"));
    println!("{}", batched.line("sandboxed, end to end, 16 per transaction"));
    println!("{}", facts_once.line("facts read once (one statement)"));
    println!("{}", sandbox_alone.line("sandbox alone (fresh instance + call)"));
    println!();
    let ratio = sandboxed.median / native.median;
    println!("ratio sandboxed / native, end to end:      {ratio:.2} x  (target <= 1.5, stretch 1.25)");
    println!(
        "ratio sandbox alone / facts read once:     {:.2} x  (target <= 1.0)",
        sandbox_alone.median / facts_once.median
    );
    println!(
        "ratio batched / native, end to end:        {:.2} x",
        batched.median / native.median
    );

    // Path by path: the requests of the mix grouped by the rule the native reference
    // gives them, each group measured on both sides, so a change can be judged per path.
    println!();
    println!(
        "{:<20} {:>8} {:>14} {:>14} {:>8}",
        "path", "share", "native us", "sandboxed us", "ratio"
    );
    for (path, members) in paths(&guard, &reqs) {
        let m = n.min(members.len() * 4).max(args.batches);
        let native = measure(m, args.batches, |i| {
            guard
                .decide_native_unlogged(request(&reqs[members[i % members.len()]]))
                .log()
        });
        let sandboxed = measure(m, args.batches, |i| {
            let r = &reqs[members[i % members.len()]];
            guard.decide(&r.0, r.1, Some("bench"));
        });
        println!(
            "{path:<20} {:>7.1}% {:>14.2} {:>14.2} {:>7.2} x",
            members.len() as f64 * 100.0 / reqs.len() as f64,
            native.median / 1e3,
            sandboxed.median / 1e3,
            sandboxed.median / native.median
        );
    }

    let threads = args.threads.max(1);
    let sandboxed_decide = |r: &(String, Target)| {
        guard.decide(&r.0, r.1, Some("bench"));
    };
    let native_decide = |r: &(String, Target)| guard.decide_native_unlogged(request(r)).log();
    let one = throughput(&reqs, 1, sandboxed_decide);
    let many = throughput(&reqs, threads, sandboxed_decide);
    let native_one = throughput(&reqs, 1, native_decide);
    let native_many = throughput(&reqs, threads, native_decide);
    let alone_one = throughput(&prepared, 1, |f| {
        let _ = policy.rule(&f.question());
    });
    let alone_many = throughput(&prepared, threads, |f| {
        let _ = policy.rule(&f.question());
    });
    println!();
    println!("throughput, 1 thread:                      {one:>9.0} decisions/s");
    println!(
        "throughput, {threads} threads:                     {many:>9.0} decisions/s  ({:.2} x of 1 thread; target >= 1.6 on 2)",
        many / one
    );
    println!(
        "  native reference: {native_one:.0}/s on 1, {native_many:.0}/s on {threads} ({:.2} x); \
         sandbox alone: {alone_one:.0}/s on 1, {alone_many:.0}/s on {threads} ({:.2} x)",
        native_many / native_one,
        alone_many / alone_one
    );

    let (compile, cached) = startup(&policy_bytes, &cache_dir)?;
    println!();
    println!("{}", compile.line("start-up: compile the policy"));
    println!("{}", cached.line("start-up: load it from the cache"));
    println!(
        "ratio compile / cached:                    {:.0} x  (target >= 100)",
        compile.median / cached.median
    );

    match serve_whole_process(&db, &policy_path, &cache_dir, args.mix, &tasks) {
        Ok((per_decision, peak_kib)) => {
            println!();
            println!(
                "serve, {SERVE_REQUESTS} piped requests, whole process:  {:.2} us per decision",
                per_decision.as_nanos() as f64 / 1e3
            );
            println!(
                "serve, peak resident memory (VmHWM):       {:.1} MiB  (target <= 16)",
                peak_kib as f64 / 1024.0
            );
        }
        Err(e) => println!("serve: not measured: {e:#}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The paths a decision can take, in the order they are printed, each with the indices
/// of the requests that take it (by the native reference's rule); empty paths left out.
fn paths(guard: &Guard, reqs: &[(String, Target)]) -> Vec<(&'static str, Vec<usize>)> {
    let mut groups: Vec<(&'static str, Vec<usize>)> = [
        "not found",
        "out of scope",
        "non-terminal",
        "cancelled",
        "done + window",
        "other",
    ]
    .into_iter()
    .map(|name| (name, Vec::new()))
    .collect();
    for (i, r) in reqs.iter().enumerate() {
        let group = match guard.decide_native_unlogged(request(r)).rule.as_str() {
            "task-not-found" => 0,
            "out-of-scope" => 1,
            "non-terminal" => 2,
            "cancelled" => 3,
            "converge-done" | "monitoring-window-active" | "window-unknown" => 4,
            _ => 5,
        };
        groups[group].1.push(i);
    }
    groups.retain(|(_, members)| !members.is_empty());
    groups
}

/// Compiling the policy against deserializing it from the cache, 20 times each.
fn startup(bytes: &[u8], cache_dir: &Path) -> anyhow::Result<(Figure, Figure)> {
    let sandbox = Sandbox::with_cache(Some(cache_dir))?;
    let cache = sandbox.cache().context("the cache directory is not usable")?;
    let digest = deploy_guard::sandbox::policy::digest(bytes);
    let compile = measure(20, 20, |_| {
        let _ = deploy_guard::sandbox::policy::compile(&sandbox, bytes);
    });
    let component = deploy_guard::sandbox::policy::compile(&sandbox, bytes)?;
    cache.store(sandbox.engine(), &digest, &component);
    let cached = measure(20, 20, |_| {
        let loaded = cache.load(sandbox.engine(), &digest);
        assert!(loaded.is_some(), "the cache entry did not load");
    });
    // A whole load from the cache, gate included, must also work.
    LoadedPolicy::load(&sandbox, bytes, Limits::DEFAULT)?;
    Ok((compile, cached))
}

/// `serve` as a child process fed `SERVE_REQUESTS` piped requests: wall time per
/// decision from spawn to exit, and its peak resident memory.
fn serve_whole_process(
    db: &Path,
    policy: &Path,
    cache: &Path,
    mix: Mix,
    tasks: &[TaskRow],
) -> anyhow::Result<(Duration, u64)> {
    let exe = std::env::current_exe()?;
    let input = serve_input(&requests(SERVE_REQUESTS, mix, tasks));
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg("serve")
        .env("DEPLOY_GUARD_DB", db)
        .env("DEPLOY_GUARD_POLICY", policy)
        .env("DEPLOY_GUARD_CACHE", cache)
        .env("DEPLOY_STATUS_GUARD_REPOS", mix.scope())
        // Decision lines at their normal level, to a discarded stderr: as in production.
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    let mut answers = 0;
    while answers < SERVE_REQUESTS {
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            anyhow::bail!("serve stopped after {answers} answers");
        }
        answers += 1;
    }
    // All answered: the peak so far is the peak of the run.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmHWM")?;
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    child.wait()?;
    Ok((started.elapsed() / SERVE_REQUESTS as u32, peak_kib))
}
