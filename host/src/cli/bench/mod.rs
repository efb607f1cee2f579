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
use deploy_guard::{Config, Guard, Limits, Request};
use measure::{Figure, measure, measure_pair, scaling};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
pub use workload::Mix;
use workload::{BenchRequest, SERVE_REQUESTS, TASKS, TaskRow, create_database, requests, serve_input};

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
    /// Which requests: `bench` (every path, 40% done), `in-progress` (80% for
    /// non-terminal tasks in scope, 10% done, 10% other, with a scope set: the common
    /// case in production) or `distinct` (as `bench`, no request ever repeats).
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
    // Each figure asks its own pass of requests: in the `distinct` mix no request
    // repeats in the whole run (in the others, every pass is the same requests).
    let mut passes = 0;
    let mut pass = |count: usize| {
        passes += 1;
        requests(count, args.mix, &tasks, passes)
    };

    println!("deploy-guard bench: {} ({})", policy.identity(), policy.digest);
    println!(
        "  database: {TASKS} tasks (WAL); mix {} (scope \"{}\"); {n} decisions per figure in {} batches; {} threads",
        args.mix.name(),
        args.mix.scope(),
        args.batches,
        args.threads
    );

    // Warm both paths (connections, statement cache, pool slots).
    for r in &pass(2000) {
        guard.decide_native_unlogged(r.request()).log();
        guard.answer(r.request());
    }
    let reqs = pass(n);
    // The native reference and the sandboxed path alternate request by request.
    let memo_before = policy.memo_stats();
    let sandboxed_reqs = pass(n);
    let (native, sandboxed) = measure_pair(
        n,
        args.batches,
        |i| guard.decide_native_unlogged(reqs[i].request()).log(),
        |i| {
            guard.answer(sandboxed_reqs[i].request());
        },
    );
    let memo_after = policy.memo_stats();
    let facts_source = FactsSource::new(&db, config.busy_timeout);
    let facts_once = measure(n, args.batches, |i| {
        let _ = facts_source.read(&reqs[i].work_item);
    });
    // The facts each request's policy is asked, read through the guard's own path.
    let prepared: Vec<FactsRecord> = reqs
        .iter()
        .map(|r| guard.facts_record(r.request()))
        .collect::<Result<_, _>>()?;
    // Always run in a fresh instance: the sandbox's own cost, remembered or not;
    // alternating with the floor.
    let (sandbox_alone, floor) = floor(n, args.batches, |i| {
        let _ = policy.rule(&prepared[i].question());
    })?;
    let batched = {
        // serve's path: 16 waiting requests, facts in one read transaction.
        let chunk = 16;
        let batched_reqs = pass(n);
        let figure = measure(n / chunk, args.batches, |i| {
            let batch: Vec<Request<'_>> = batched_reqs[i * chunk..(i + 1) * chunk]
                .iter()
                .map(BenchRequest::request)
                .collect();
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
    println!("{}", floor.line("floor (empty component, fresh + call)"));
    let (hits, misses) = (
        memo_after.hits - memo_before.hits,
        memo_after.misses - memo_before.misses,
    );
    println!(
        "remembered answers, sandboxed end to end:  {:.1}% of {} ({} entries held)",
        hits as f64 * 100.0 / (hits + misses).max(1) as f64,
        hits + misses,
        memo_after.entries
    );
    println!();
    let ratio = sandboxed.median / native.median;
    println!("ratio sandboxed / native, end to end:      {ratio:.2} x  (target <= 1.5)");
    println!(
        "ratio sandbox alone / floor:               {:.2} x  (target <= 1.5)",
        sandbox_alone.median / floor.median
    );
    println!(
        "ratio sandbox alone / facts read once:     {:.2} x",
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
        // The path's requests, each asked anew (distinct: by a new caller every time).
        let asked: Vec<BenchRequest> = (0..m)
            .map(|i| reqs[members[i % members.len()]].again(args.mix))
            .collect();
        let (native, sandboxed) = measure_pair(
            m,
            args.batches,
            |i| guard.decide_native_unlogged(asked[i].request()).log(),
            |i| {
                guard.answer(asked[i].request());
            },
        );
        println!(
            "{path:<20} {:>7.1}% {:>14.2} {:>14.2} {:>7.2} x",
            members.len() as f64 * 100.0 / reqs.len() as f64,
            native.median / 1e3,
            sandboxed.median / 1e3,
            sandboxed.median / native.median
        );
    }

    let threads = args.threads.max(1);
    let sandboxed_decide = |r: &BenchRequest| {
        guard.answer(r.request());
    };
    let native_decide = |r: &BenchRequest| guard.decide_native_unlogged(r.request()).log();
    // Each in 5 rounds, 1 thread and `threads` taking turns (the distinct mix: 2n
    // requests, none asked twice).
    const ROUNDS: usize = 5;
    let sandboxed = scaling(&pass(2 * n), threads, ROUNDS, sandboxed_decide);
    let native = scaling(&reqs, threads, ROUNDS, native_decide);
    let alone = scaling(&prepared, threads, ROUNDS, |f| {
        let _ = policy.rule(&f.question());
    });
    println!();
    println!(
        "throughput, 1 thread:                      {:>9.0} decisions/s  (median of {ROUNDS} rounds, taking turns)",
        sandboxed.one
    );
    println!(
        "throughput, {threads} threads:                     {:>9.0} decisions/s  ({:.2} x of 1 thread, median of the rounds' ratios; target >= 1.6 on 2)",
        sandboxed.many, sandboxed.ratio
    );
    println!(
        "  native reference: {:.0}/s on 1, {:.0}/s on {threads} ({:.2} x); \
         sandbox alone: {:.0}/s on 1, {:.0}/s on {threads} ({:.2} x)",
        native.one, native.many, native.ratio, alone.one, alone.many, alone.ratio
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
fn paths(guard: &Guard, reqs: &[BenchRequest]) -> Vec<(&'static str, Vec<usize>)> {
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
        let group = match guard.decide_native_unlogged(r.request()).rule.as_str() {
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

/// `alone(i)` and the floor (`floor.wat`, an empty component: a fresh Store, a fresh
/// instance and a call, on an engine of the same settings as the policies', under the
/// default limits), alternating.
fn floor(n: usize, batches: usize, alone: impl FnMut(usize)) -> anyhow::Result<(Figure, Figure)> {
    const FLOOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/floor.wasm"));
    let sandbox = Sandbox::new()?;
    let lane = sandbox.current_lane();
    let wasmtime_error = |e: wasmtime::Error| anyhow::anyhow!("the floor: {e:#}");
    let component =
        wasmtime::component::Component::new(sandbox.lanes()[lane].engine(), FLOOR).map_err(wasmtime_error)?;
    let pre = sandbox.lanes()[lane]
        .linker()
        .instantiate_pre(&component)
        .map_err(wasmtime_error)?;
    let nothing = component
        .get_export_index(None, "nothing")
        .context("the floor exports `nothing`")?;
    // Once, checked, before it is timed.
    {
        let mut store = sandbox.store(lane, Limits::DEFAULT);
        let instance = pre.instantiate(&mut store).map_err(wasmtime_error)?;
        let func = instance.get_func(&mut store, nothing).context("`nothing`")?;
        func.typed::<(), ()>(&store)
            .and_then(|func| func.call(&mut store, ()))
            .map_err(wasmtime_error)?;
    }
    Ok(measure_pair(n, batches, alone, |_| {
        let mut store = sandbox.store(lane, Limits::DEFAULT);
        let called = pre.instantiate(&mut store).ok().and_then(|instance| {
            let func = instance.get_func(&mut store, nothing)?;
            func.typed::<(), ()>(&store).ok()?.call(&mut store, ()).ok()
        });
        std::hint::black_box(called);
    }))
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
    let input = serve_input(&requests(SERVE_REQUESTS, mix, tasks, 0));
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
