//! The gate every policy passes before it decides anything: at start-up, in `decide`,
//! in `serve`, on a hot swap, and in `check` (CONTRACT.md, "Loading a policy").
//!
//! In order, stopping at the first failure: a component of the `guard-policy` world
//! that imports nothing; `info` answers a name and a version; every case of the fact
//! grid is decided inside the limits; the policy's vectors pass, if it ships them.
//! The gate judges safety, not taste: any name and version may replace any other.

use crate::admission::grid::{GridCase, fact_grid};
use crate::admission::vectors::{Vectors, read_vectors};
use crate::config::Limits;
use crate::sandbox::engine::Sandbox;
use crate::sandbox::policy::{LoadError, LoadedPolicy, Ruling, RunError};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Why a candidate was refused.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// It could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// It is not a loadable policy.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// It failed on a case of the fact grid.
    #[error("fact grid: {case}: {error}")]
    Grid {
        /// The case.
        case: String,
        /// What happened.
        error: RunError,
    },
    /// Its vectors file is unusable.
    #[error("{0}")]
    VectorsFile(String),
    /// It failed a vector.
    #[error("vectors: {case}: expected {expected}, got {got}")]
    Vector {
        /// Which vector.
        case: String,
        /// What was expected.
        expected: String,
        /// What the policy answered.
        got: String,
    },
}

impl GateError {
    /// A short class of the refusal (the metrics' `reason` label): `unreadable`,
    /// `not-a-component`, `too-large`, `imports`, `wrong-world`, `info`, `grid` or `vectors`.
    pub fn reason(&self) -> &'static str {
        match self {
            GateError::Unreadable { .. } => "unreadable",
            GateError::Load(LoadError::NotAComponent(_)) => "not-a-component",
            GateError::Load(LoadError::TooLarge(_)) => "too-large",
            GateError::Load(LoadError::Imports(_)) => "imports",
            GateError::Load(LoadError::WrongWorld(_)) => "wrong-world",
            GateError::Load(LoadError::Info(_)) => "info",
            GateError::Grid { .. } => "grid",
            GateError::VectorsFile(_) | GateError::Vector { .. } => "vectors",
        }
    }
}

/// A policy that passed the gate, with what the gate saw.
#[derive(Debug)]
pub struct Admitted {
    /// The policy, ready to go live.
    pub policy: LoadedPolicy,
    /// Its answers over the fact grid, in grid order.
    pub grid: Vec<(GridCase, Ruling)>,
    /// Number of vectors passed (none when it ships no vectors file).
    pub vectors_passed: Option<usize>,
    /// Vectors that did not apply: tick vectors, for a policy without `monitor` (whose
    /// ticks are the host's, not its own rules).
    pub vectors_not_applicable: usize,
}

impl Admitted {
    /// A hash of the policy's verdicts and rules over the grid: two policies with the
    /// same fingerprint decide alike on every case of it. The ticks count only for a
    /// policy that answers them itself (the 1.1.0 world), so that a 1.0.0 policy keeps
    /// the fingerprint it always had.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        let answered = self
            .grid
            .iter()
            .filter(|(case, _)| self.policy.has_monitor() || case.facts.ask != crate::decision::Ask::Tick);
        for (_, ruling) in answered {
            hash.update(ruling.verdict.as_str());
            hash.update([0]);
            hash.update(&ruling.rule);
            hash.update([0]);
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("grid:{}", &hex[..16])
    }
}

/// The bytes of the candidate policy file at `path`, read once through the one bounded
/// reader (what a signature is checked over is then what the gate judges). Every path
/// that loads a policy file reads it here, so an unreadable one is refused alike.
pub fn read_candidate(path: &Path) -> Result<Vec<u8>, GateError> {
    crate::files::read::read_bounded(path, crate::files::read::MAX_POLICY_BYTES).map_err(|e| GateError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Read and admit the policy file at `path`, with the vectors that ship beside it.
pub fn admit_file(sandbox: &Arc<Sandbox>, path: &Path, limits: Limits) -> Result<Admitted, GateError> {
    let bytes = read_candidate(path)?;
    admit(
        sandbox,
        &bytes,
        limits,
        Some(&crate::admission::vectors::vectors_path(path)),
    )
}

/// Admit `bytes`, with the vectors at `vectors` if that file exists.
pub fn admit(
    sandbox: &Arc<Sandbox>,
    bytes: &[u8],
    limits: Limits,
    vectors: Option<&Path>,
) -> Result<Admitted, GateError> {
    let policy = LoadedPolicy::load(sandbox, bytes, limits)?;
    let vectors = match vectors {
        Some(path) => read_vectors(path).map_err(GateError::VectorsFile)?,
        None => None,
    };
    admit_loaded(policy, vectors.as_ref())
}

/// The rest of the gate for a policy already loaded (compiled or from the cache).
pub fn admit_loaded(policy: LoadedPolicy, vectors: Option<&Vectors>) -> Result<Admitted, GateError> {
    let mut grid = Vec::new();
    for case in fact_grid() {
        match policy.rule(&case.facts.question()) {
            Ok(ruling) => grid.push((case, ruling)),
            Err(error) => {
                return Err(GateError::Grid {
                    case: case.label,
                    error,
                });
            }
        }
    }
    let mut vectors_not_applicable = 0;
    let vectors_passed = match vectors {
        None => None,
        Some(vectors) => {
            for (index, case) in vectors.cases.iter().enumerate() {
                // A tick vector tests a policy's own tick rules: a policy of the 1.0.0
                // world has none (the host answers its ticks), so it does not apply.
                if case.facts.ask == crate::decision::Ask::Tick && !policy.has_monitor() {
                    vectors_not_applicable += 1;
                    continue;
                }
                let got = policy.rule(&case.facts.question()).map_err(|error| GateError::Grid {
                    case: case.describe(index),
                    error,
                })?;
                let rule_ok = case.expect.rule.as_ref().is_none_or(|rule| *rule == got.rule);
                if got.verdict != case.expect.verdict || !rule_ok {
                    return Err(GateError::Vector {
                        case: case.describe(index),
                        expected: match &case.expect.rule {
                            Some(rule) => format!("{} ({rule})", case.expect.verdict),
                            None => case.expect.verdict.to_string(),
                        },
                        got: format!("{} ({})", got.verdict, got.rule),
                    });
                }
            }
            Some(vectors.cases.len() - vectors_not_applicable)
        }
    };
    Ok(Admitted {
        policy,
        grid,
        vectors_passed,
        vectors_not_applicable,
    })
}
