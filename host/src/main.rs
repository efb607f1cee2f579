//! `deploy-guard`: the command line of CONTRACT.md. Stdout carries answers only; every
//! log line goes to stderr. The library speaks typed errors; this edge speaks anyhow.

#![allow(clippy::print_stdout)]

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A sandboxed WebAssembly host for the orchestrator's deploy-status guard.
///
/// Configuration comes from the environment, then the TOML file named by
/// DEPLOY_GUARD_CONFIG, then the flags: every setting is listed below.
#[derive(Debug, Parser)]
#[command(name = "deploy-guard", version, about, long_about, after_long_help = settings())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--db` and `--policy`.
#[derive(Debug, clap::Args)]
pub struct Paths {
    /// The orchestrator's SQLite database (opened read-only) [env: DEPLOY_GUARD_DB]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The policy component [env: DEPLOY_GUARD_POLICY]
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decide one stamp: prints one JSON decision and exits 0, whatever failed inside.
    #[command(after_long_help = settings())]
    Decide {
        /// The work item the status goes on (may be empty).
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        work_item: String,
        /// The deploy-phase status about to be stamped.
        #[arg(long, value_enum)]
        target: deploy_guard::Target,
        /// The setter's reason.
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        caller: Option<String>,
        #[command(flatten)]
        paths: Paths,
    },
    /// Decide one tick of the post-deploy monitor: prints one JSON decision (PROCEED,
    /// or NOOP for a task cancelled during its window) and exits 0, whatever failed
    /// inside.
    #[command(after_long_help = settings())]
    Tick {
        /// The work item of the task the monitor watches (may be empty).
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        work_item: String,
        /// The monitor's reason.
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        caller: Option<String>,
        #[command(flatten)]
        paths: Paths,
    },
    /// Answer JSON requests, one per line on stdin, one decision per line on stdout,
    /// hot-swapping the policy when its file changes; exits 0 at EOF.
    #[command(after_long_help = settings())]
    Serve {
        #[command(flatten)]
        paths: Paths,
        /// Also run this candidate policy on every decision, off the answers' path, and
        /// report where it disagrees (it must pass the gate).
        #[arg(long, value_name = "CANDIDATE.wasm")]
        shadow: Option<PathBuf>,
        /// Serve `GET /metrics` (OpenMetrics text) on this address: PORT or HOST:PORT; a
        /// port alone binds the loopback interface [env: DEPLOY_GUARD_METRICS_ADDR]
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Run a candidate policy through the gate: exit 0 with a summary, 1 with the reason.
    #[command(after_long_help = settings())]
    Check {
        /// The candidate component.
        policy: PathBuf,
    },
    /// Compare two policies over the fact grid: exit 0 if they agree, 1 if not, 2 on trouble.
    #[command(after_long_help = settings())]
    Diff {
        /// The running policy.
        old: PathBuf,
        /// The candidate.
        new: PathBuf,
    },
    /// Run every decision recorded in a ledger through a candidate policy: what would
    /// have changed. Exit 0 if nothing, 1 if something, 2 on trouble.
    #[command(after_long_help = settings())]
    Replay {
        /// The ledger (`DEPLOY_GUARD_LEDGER` of a running deploy-guard).
        #[arg(long, value_name = "PATH")]
        ledger: PathBuf,
        /// The candidate policy.
        #[arg(long, value_name = "NEW.wasm")]
        against: PathBuf,
    },
    /// Put back the policy that was live before the last swap (kept beside the active
    /// policy file as `.<name>.previous`); a running serve picks it up.
    #[command(after_long_help = settings())]
    Rollback {
        #[command(flatten)]
        paths: Paths,
    },
    /// The main job on an embedded example: a fresh database with the seed's story, the
    /// decision table, then a hot swap to the next policy and what it changed.
    #[command(after_long_help = settings())]
    Demo,
    /// Decision latency and throughput of a policy against the native Rust reference,
    /// in one run, on a generated database of 10,000 tasks.
    Bench(cli::bench::BenchArgs),
    /// Write a new signing key pair: PREFIX.key (mode 0600) and PREFIX.pub.
    Keygen {
        /// Path and name stem of the two files.
        prefix: PathBuf,
    },
    /// Run the gate on a policy, then push it to a registry as a CNCF Wasm artifact;
    /// prints REF@sha256:<manifest digest>. Exit 0, 1 refused, 2 trouble.
    #[command(after_long_help = settings())]
    Push {
        /// The policy component.
        file: PathBuf,
        /// HOST[:PORT]/REPOSITORY:TAG.
        reference: String,
        /// Sign what was pushed with this private key (cosign's .sig tag).
        #[arg(long, value_name = "KEY")]
        key: Option<PathBuf>,
    },
    /// Sign a local policy file (a detached FILE.sig, cosign's sign-blob format) or a
    /// pushed artifact (cosign's sha256-<digest>.sig tag).
    #[command(after_long_help = settings())]
    Sign {
        /// The policy file, or HOST[:PORT]/REPOSITORY:TAG.
        target: String,
        /// The private key (PEM PKCS#8, from `keygen`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Check a policy's signature against the trusted keys: exit 0 valid, 1 not.
    #[command(after_long_help = settings())]
    Verify {
        /// The policy file, or HOST[:PORT]/REPOSITORY:TAG.
        target: String,
        /// A public key to trust (repeatable) instead of DEPLOY_GUARD_TRUSTED_KEYS.
        #[arg(long, value_name = "PUB")]
        key: Vec<PathBuf>,
    },
    /// Write the embedded policies as deployable files (`<dir>/<name>.wasm`).
    ExportPolicies {
        /// Where to write them.
        #[arg(long, default_value = "policies")]
        out: PathBuf,
    },
}

/// Every setting (variable, config key, default, meaning), after the options of the
/// commands that read the configuration.
fn settings() -> String {
    deploy_guard::config::settings::help()
}

fn main() -> ExitCode {
    // Before any database is opened (see the module's doc).
    deploy_guard::facts::sqlite_mutex::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decide {
            work_item,
            target,
            caller,
            paths,
        } => cli::decide::run(&work_item, target, caller.as_deref(), paths.into()),
        Command::Tick {
            work_item,
            caller,
            paths,
        } => cli::tick::run(&work_item, caller.as_deref(), paths.into()),
        Command::Serve { paths, shadow, metrics } => cli::serve::run(paths.into(), shadow.as_deref(), metrics),
        Command::Replay { ledger, against } => cli::replay::run(&ledger, &against),
        Command::Rollback { paths } => cli::rollback::run(paths.into()),
        Command::Check { policy } => cli::check::run(&policy),
        Command::Diff { old, new } => cli::diff::run(&old, &new),
        Command::Demo => cli::demo::run(),
        Command::Bench(args) => cli::bench::run(args),
        Command::Keygen { prefix } => cli::keygen::run(&prefix),
        Command::Push { file, reference, key } => cli::push::run(&file, &reference, key.as_deref()),
        Command::Sign { target, key } => cli::sign::run(&target, &key),
        Command::Verify { target, key } => cli::verify::run(&target, &key),
        Command::ExportPolicies { out } => cli::export::run(&out),
    };
    cli::flush_decision_lines();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deploy-guard: {e:#}");
            ExitCode::from(2)
        }
    }
}

impl From<Paths> for deploy_guard::Overrides {
    fn from(paths: Paths) -> Self {
        deploy_guard::Overrides {
            db: paths.db,
            policy: paths.policy,
            ..deploy_guard::Overrides::default()
        }
    }
}
