//! `deploy-guard bench`: the cost of the sandbox against the native Rust reference, in
//! one run, on a generated database of realistic size.
//!
//! Every figure is a per-decision latency measured call by call in repeated batches:
//! the median of the batches' medians, the median of their p99s, and the spread (the
//! lowest and highest batch median). Absolute times on a shared machine mean little;
//! the ratios, measured in the same run, are the result.

use anyhow::Context;
use deploy_guard::facts::source::FactsSource;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::sandbox::policy::{Facts, LoadedPolicy, TargetStatus, Task};
use deploy_guard::{Config, Guard, Limits, Request, Target};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Tasks in the generated database.
const TASKS: usize = 10_000;
/// Requests piped through `serve` for the whole-process figure.
const SERVE_REQUESTS: usize = 20_000;

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

/// The request mixes of the bench and of its exported workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Requests drawn uniformly over the work items (one in ten unknown), scope empty
    /// (self-hosting repos only).
    Bench,
    /// 80% of requests for non-terminal tasks in scope, 10% for done tasks, 10% for the
    /// rest (unknown work items, cancelled and out-of-scope tasks), with the scope set.
    InProgress,
}

impl Mix {
    /// `DEPLOY_STATUS_GUARD_REPOS` for this mix.
    fn scope(self) -> &'static str {
        match self {
            Mix::Bench => "",
            Mix::InProgress => IN_PROGRESS_SCOPE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mix::Bench => "bench",
            Mix::InProgress => "in-progress",
        }
    }
}

/// The scope of the in-progress mix: the self-hosting repo and one service.
const IN_PROGRESS_SCOPE: &str = "orchestrator,svc-a";

/// Median, p99 and spread of per-call latencies over batches, in nanoseconds.
struct Figure {
    median: f64,
    p99: f64,
    low: f64,
    high: f64,
}

impl Figure {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<44} median {:>8.2} us   p99 {:>8.2} us   spread {:.2}..{:.2} us",
            self.median / 1e3,
            self.p99 / 1e3,
            self.low / 1e3,
            self.high / 1e3
        )
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Time `call(i)` for i in 0..n, call by call, in `batches` batches.
fn measure(n: usize, batches: usize, mut call: impl FnMut(usize)) -> Figure {
    let per_batch = (n / batches.max(1)).max(1);
    let mut medians = Vec::new();
    let mut p99s = Vec::new();
    let mut samples = Vec::with_capacity(per_batch);
    for batch in 0..batches.max(1) {
        samples.clear();
        for i in 0..per_batch {
            let started = Instant::now();
            call(batch * per_batch + i);
            samples.push(started.elapsed().as_nanos() as f64);
        }
        samples.sort_by(f64::total_cmp);
        medians.push(samples[samples.len() / 2]);
        p99s.push(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]);
    }
    let low = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let high = medians.iter().copied().fold(0.0, f64::max);
    Figure {
        median: median(&mut medians),
        p99: median(&mut p99s),
        low,
        high,
    }
}

/// A deterministic generator (xorshift), so two runs measure the same requests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A database of `TASKS` tasks in WAL mode (the recommended mode) with sentinels:
/// 60% self-hosting, 40% other repos; 40% done (half in their window), 10% cancelled.
/// The connection returned plays the orchestrator: keep it open while deciding (the
/// -wal and -shm files of a WAL database exist only while someone has it open).
fn create_database(path: &Path) -> anyhow::Result<(rusqlite::Connection, Vec<TaskRow>)> {
    let mut db = rusqlite::Connection::open(path).context("creating the bench database")?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT, title TEXT);
         CREATE INDEX tasks_work_item ON tasks (work_item_id);
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
         CREATE INDEX sentinels_work_item ON post_deploy_sentinels (work_item_id, repo);",
    )?;
    let tx = db.transaction()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let work_item = format!("ORCH-{i}");
        let repo = ["orchestrator", "orchestrator", "orchestrator", "svc-a", "enduro-trails"][rng.below(5)];
        let stage = [
            "done",
            "done",
            "done",
            "done",
            "cancelled",
            "deploy",
            "review",
            "build",
            "deploy",
            "failed",
        ][rng.below(10)];
        tx.execute(
            "INSERT INTO tasks (work_item_id, repo, stage, title) VALUES (?1, ?2, ?3, ?4)",
            (&work_item, repo, stage, format!("task {i}")),
        )?;
        rows.push(TaskRow { repo, stage });
        if stage == "done" {
            tx.execute(
                "INSERT INTO post_deploy_sentinels VALUES (?1, ?2, 'ARMED')",
                (repo, &work_item),
            )?;
            if rng.below(2) == 0 {
                tx.execute(
                    "INSERT INTO post_deploy_sentinels VALUES (?1, ?2, 'DONE')",
                    (repo, &work_item),
                )?;
            }
        }
    }
    tx.commit()?;
    Ok((db, rows))
}

/// One generated task, as the request generator needs to know it (`ORCH-<index>`).
#[derive(Debug, Clone, Copy)]
struct TaskRow {
    repo: &'static str,
    stage: &'static str,
}

impl TaskRow {
    fn terminal(self) -> bool {
        matches!(self.stage, "done" | "cancelled")
    }

    fn in_scope(self, scope: &str) -> bool {
        scope.split(',').any(|repo| repo == self.repo)
    }
}

/// `n` requests of the mix over the generated tasks, the same for every run.
fn requests(n: usize, mix: Mix, tasks: &[TaskRow]) -> Vec<(String, Target)> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let pick = |rng: &mut Rng, pool: &[usize]| pool[rng.below(pool.len())];
    let pools = |keep: &dyn Fn(TaskRow) -> bool| -> Vec<usize> {
        tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| keep(**t))
            .map(|(i, _)| i)
            .collect()
    };
    let working = pools(&|t| !t.terminal() && t.in_scope(IN_PROGRESS_SCOPE));
    let done = pools(&|t| t.stage == "done");
    let other = pools(&|t| t.stage == "cancelled" || !t.in_scope(IN_PROGRESS_SCOPE));
    (0..n)
        .map(|_| {
            let id = match mix {
                // One request in ten is for a work item the database does not have.
                Mix::Bench => rng.below(TASKS + TASKS / 10),
                Mix::InProgress => match rng.below(10) {
                    0 => pick(&mut rng, &done),
                    // Half of the rest unknown, half cancelled or out of scope.
                    1 if rng.below(2) == 0 => TASKS + rng.below(TASKS / 10),
                    1 => pick(&mut rng, &other),
                    _ => pick(&mut rng, &working),
                },
            };
            (format!("ORCH-{id}"), Target::ALL[rng.below(3)])
        })
        .collect()
}

fn request(r: &(String, Target)) -> Request<'_> {
    Request {
        work_item: &r.0,
        target: r.1,
        caller: Some("bench"),
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.export_workload {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let db = dir.join("orchestrator.db");
        if db.exists() {
            anyhow::bail!("{} exists already", db.display());
        }
        // Left in rollback-journal mode: whoever reads it next needs no open connection.
        let (connection, tasks) = create_database(&db)?;
        connection.execute_batch("PRAGMA journal_mode = DELETE;")?;
        std::fs::write(
            dir.join("requests.jsonl"),
            serve_input(&requests(SERVE_REQUESTS, args.mix, &tasks)),
        )?;
        // The settings both sides run with (seed_loop.py and serve read the same names).
        let env = format!("DEPLOY_STATUS_GUARD_REPOS={}\n", args.mix.scope());
        std::fs::write(dir.join("workload.env"), &env)?;
        println!(
            "{}, {} and {} (mix {}; run both sides with: env $(cat {}) ...)",
            db.display(),
            dir.join("requests.jsonl").display(),
            dir.join("workload.env").display(),
            args.mix.name(),
            dir.join("workload.env").display()
        );
        return Ok(ExitCode::SUCCESS);
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
            std::fs::write(&path, deploy_guard::sandbox::embedded::DEPLOY_STATUS_GUARD)?;
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
    let prepared: Vec<Facts> = reqs
        .iter()
        .map(|r| {
            let task = facts_source.read(&r.0).ok().flatten();
            Facts {
                work_item_id: r.0.clone(),
                target: match r.1 {
                    Target::Awaiting => TargetStatus::Awaiting,
                    Target::Deploying => TargetStatus::Deploying,
                    Target::Monitoring => TargetStatus::Monitoring,
                },
                caller: Some("bench".into()),
                window_active: task.as_ref().and_then(|t| t.window_active),
                task: task.map(|t| Task {
                    repo: t.repo,
                    stage: t.stage,
                }),
                scope_repos: config.scope_repos.clone(),
                self_hosting_repos: vec!["orchestrator".into()],
            }
        })
        .collect();
    let sandbox_alone = measure(n, args.batches, |i| {
        let _ = policy.decide(&prepared[i]);
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
        let _ = policy.decide(f);
    });
    let alone_many = throughput(&prepared, threads, |f| {
        let _ = policy.decide(f);
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

/// Decisions per second of `decide` over `items`, split across `threads`.
fn throughput<T: Sync>(items: &[T], threads: usize, decide: impl Fn(&T) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let decide = &decide;
            scope.spawn(move || {
                for item in items.iter().skip(t).step_by(threads) {
                    decide(item);
                }
            });
        }
    });
    items.len() as f64 / started.elapsed().as_secs_f64()
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

/// The requests as `serve` reads them, one JSON object per line.
fn serve_input(reqs: &[(String, Target)]) -> String {
    let mut input = String::with_capacity(reqs.len() * 64);
    for (work_item, target) in reqs {
        input.push_str(&format!(
            "{{\"work_item\":\"{work_item}\",\"target\":\"{target}\",\"caller\":\"bench\"}}\n"
        ));
    }
    input
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
