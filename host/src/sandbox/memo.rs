//! Answers of a pure policy, remembered.
//!
//! Why a remembered answer is the answer: a policy imports nothing, and every
//! question runs in a fresh instance, so what it answers is a function of its bytes,
//! its limits and the question alone. The engine makes that exact to the bit: NaNs are
//! canonicalised and relaxed SIMD is deterministic ([`crate::sandbox::engine`]), and
//! fuel is counted the same on every run. Only the deadline depends on timing, so only
//! answers are kept, never a failure: a question whose run failed runs again next time.
//!
//! Where the key comes from: a memo belongs to one [`crate::sandbox::policy::LoadedPolicy`],
//! which is one digest under one set of limits; a swap, a roll back and a reload with
//! other limits all bring another policy value, and with it another memo. The question
//! itself, every field the policy is told (ask, work item, caller, task, window, scope,
//! self-hosting repos), is the key, compared byte for byte: a hash only finds the
//! entry, it never stands for the question.
//!
//! Bounded: the memo is split into [`SHARDS`] shards, each with its own lock (two
//! threads rarely meet on one), each holding at most [`MEMO_BYTES`] / [`SHARDS`] bytes:
//! keys, answers and the table that holds them. A shard that is full is emptied before it takes another entry:
//! no order is kept per entry, so a hit costs a lookup and nothing more.

use crate::decision::{Ask, Target};
use crate::sandbox::question::Question;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// How many bytes of keys and answers one policy's memo holds at most.
pub const MEMO_BYTES: usize = 1 << 20;

/// How many independently locked parts a memo has.
pub const SHARDS: usize = 32;

/// The remembered answers (`A`) of one policy under one set of limits.
pub struct Memo<A> {
    shards: Box<[Shard<A>]>,
    hasher: std::hash::RandomState,
}

impl<A: Clone> std::fmt::Debug for Memo<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").field("stats", &self.stats()).finish()
    }
}

/// One lock's worth of the memo, alone on its cache lines.
#[repr(align(128))]
struct Shard<A>(parking_lot::Mutex<ShardState<A>>);

struct ShardState<A> {
    /// By the question's hash (already a hash: not hashed again).
    entries: HashMap<u64, Entry<A>, BuildHasherDefault<AlreadyHashed>>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

struct Entry<A> {
    /// The question, encoded by [`encode`].
    question: Box<[u8]>,
    answer: A,
    /// What the entry costs: its key, what the answer holds elsewhere, its share of
    /// the table ([`entry_overhead`]).
    bytes: usize,
}

/// What an entry costs beyond its key's bytes and what its answer holds elsewhere: its
/// share of the table and the allocator's due on its two allocations (the key, the
/// answer's string). A table doubles when it is 7/8 full, so it has at most 16/7
/// buckets (an entry and a control byte each) per entry it holds, or its smallest
/// size, counted once per shard ([`table_floor`]); an emptied shard starts a new
/// table. So a shard never holds more than it counts
/// (`the_memo_stays_within_its_bytes`).
const fn entry_overhead<A>() -> usize {
    bucket::<A>() * 16 / 7 + 1 + 2 * 16
}

/// What a shard counts before it holds anything: the smallest table (4 buckets).
const fn table_floor<A>() -> usize {
    4 * bucket::<A>()
}

/// One bucket of a shard's table: an entry and its control byte.
const fn bucket<A>() -> usize {
    size_of::<(u64, Entry<A>)>() + 1
}

/// How often a memo answered, and how often it had to run the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoStats {
    /// Questions answered from the memo.
    pub hits: u64,
    /// Questions it did not have.
    pub misses: u64,
    /// Answers it holds now.
    pub entries: usize,
}

impl<A: Clone> Default for Memo<A> {
    fn default() -> Self {
        Memo::new()
    }
}

impl<A: Clone> Memo<A> {
    /// An empty memo.
    pub fn new() -> Memo<A> {
        Memo {
            shards: (0..SHARDS)
                .map(|_| {
                    Shard(parking_lot::Mutex::new(ShardState {
                        entries: HashMap::default(),
                        bytes: table_floor::<A>(),
                        hits: 0,
                        misses: 0,
                    }))
                })
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The answer remembered for `question`, if any.
    pub fn recall(&self, question: &Question<'_>) -> Option<A> {
        let hash = self.hash(question);
        let mut shard = self.shard(hash).lock();
        let found = shard
            .entries
            .get(&hash)
            .filter(|entry| encodes(&entry.question, question))
            .map(|entry| entry.answer.clone());
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    /// Remember `answer` to `question`; `heap_bytes` is what the answer holds outside
    /// itself (a string's bytes), counted against the memo's bound.
    pub fn remember(&self, question: &Question<'_>, answer: A, heap_bytes: usize) {
        let mut encoded = Vec::with_capacity(64);
        encode(question, &mut |bytes| encoded.extend_from_slice(bytes));
        let size = encoded.len() + heap_bytes + entry_overhead::<A>();
        // A question larger than a shard is answered, never kept, and empties nothing.
        if table_floor::<A>() + size > MEMO_BYTES / SHARDS {
            return;
        }
        let entry = Entry {
            question: encoded.into_boxed_slice(),
            answer,
            bytes: size,
        };
        let hash = self.hash(question);
        let mut shard = self.shard(hash).lock();
        if shard.bytes + size > MEMO_BYTES / SHARDS {
            // Emptied, its table's memory too: what it holds is always what it counts.
            shard.entries = HashMap::default();
            shard.bytes = table_floor::<A>();
        }
        shard.bytes += size;
        if let Some(replaced) = shard.entries.insert(hash, entry) {
            shard.bytes -= replaced.bytes;
        }
    }

    /// How often this memo answered so far.
    pub fn stats(&self) -> MemoStats {
        self.shards.iter().fold(MemoStats::default(), |total, shard| {
            let shard = shard.0.lock();
            MemoStats {
                hits: total.hits + shard.hits,
                misses: total.misses + shard.misses,
                entries: total.entries + shard.entries.len(),
            }
        })
    }

    fn hash(&self, question: &Question<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        encode(question, &mut |bytes| hasher.write(bytes));
        hasher.finish()
    }

    fn shard(&self, hash: u64) -> &parking_lot::Mutex<ShardState<A>> {
        // The high bits pick the shard; the map uses the low ones.
        &self.shards[(hash >> 58) as usize % SHARDS].0
    }
}

/// Whether `encoded` is the encoding of `question`, compared as it is encoded (no copy).
fn encodes(encoded: &[u8], question: &Question<'_>) -> bool {
    let mut rest = encoded;
    let mut same = true;
    encode(question, &mut |bytes| {
        same = same && rest.starts_with(bytes);
        if same {
            rest = &rest[bytes.len()..];
        }
    });
    same && rest.is_empty()
}

/// Every field of `question`, in order, as bytes: each string with its length before
/// it, each optional field with a tag, so that two questions encode alike only if they
/// are equal.
fn encode(question: &Question<'_>, out: &mut impl FnMut(&[u8])) {
    let text = |text: &str, out: &mut dyn FnMut(&[u8])| {
        out(&(text.len() as u64).to_le_bytes());
        out(text.as_bytes());
    };
    let ask: u8 = match question.ask {
        Ask::Decide(Target::Awaiting) => 0,
        Ask::Decide(Target::Deploying) => 1,
        Ask::Decide(Target::Monitoring) => 2,
        Ask::Tick => 3,
    };
    let window: u8 = match question.window_active {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    };
    let present = match (question.caller.is_some(), question.task.is_some()) {
        (false, false) => 0u8,
        (true, false) => 1,
        (false, true) => 2,
        (true, true) => 3,
    };
    out(&[ask, window, present]);
    text(question.work_item, out);
    if let Some(caller) = question.caller {
        text(caller, out);
    }
    if let Some(task) = question.task {
        text(task.repo, out);
        text(task.stage, out);
    }
    for repos in [question.scope_repos, question.self_hosting_repos] {
        out(&(repos.len() as u64).to_le_bytes());
        for repo in repos {
            text(repo, out);
        }
    }
}

/// The hasher of a map whose keys are hashes already.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; anything else is folded in, never lost.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::question::TaskRef;

    fn ruling(rule: &str) -> String {
        rule.to_owned()
    }

    fn remember(memo: &Memo<String>, question: &Question<'_>, answer: String) {
        let bytes = answer.len();
        memo.remember(question, answer, bytes);
    }

    fn question<'a>(work_item: &'a str, scope: &'a [String], hosting: &'a [String]) -> Question<'a> {
        Question {
            ask: Ask::Decide(Target::Monitoring),
            work_item,
            caller: Some("setter"),
            task: Some(TaskRef {
                repo: "orchestrator",
                stage: "done",
            }),
            window_active: Some(false),
            scope_repos: scope,
            self_hosting_repos: hosting,
        }
    }

    #[test]
    fn an_answer_is_recalled_only_for_the_very_same_question() {
        let memo = Memo::<String>::new();
        let (scope, hosting) = (vec![], vec!["orchestrator".to_owned()]);
        let asked = question("ORCH-1", &scope, &hosting);
        assert_eq!(memo.recall(&asked), None);
        remember(&memo, &asked, ruling("converge-done"));
        assert_eq!(memo.recall(&asked), Some(ruling("converge-done")));

        // Each field changed alone is another question.
        let other_scope = vec!["svc".to_owned()];
        let others = [
            Question {
                ask: Ask::Decide(Target::Deploying),
                ..asked
            },
            Question {
                ask: Ask::Tick,
                ..asked
            },
            Question {
                work_item: "ORCH-2",
                ..asked
            },
            Question { caller: None, ..asked },
            Question {
                caller: Some("settera"),
                ..asked
            },
            Question { task: None, ..asked },
            Question {
                task: Some(TaskRef {
                    repo: "orchestrator",
                    stage: "done ",
                }),
                ..asked
            },
            Question {
                window_active: None,
                ..asked
            },
            Question {
                window_active: Some(true),
                ..asked
            },
            Question {
                scope_repos: &other_scope,
                ..asked
            },
            Question {
                self_hosting_repos: &scope,
                ..asked
            },
            // Lengths keep fields apart: the same bytes split otherwise.
            Question {
                work_item: "ORCH-1s",
                caller: Some("etter"),
                ..asked
            },
        ];
        for other in others {
            assert_eq!(memo.recall(&other), None, "{other:?}");
        }
        let stats = memo.stats();
        assert_eq!((stats.hits, stats.entries), (1, 1));
        assert_eq!(stats.misses, 1 + others.len() as u64);
    }

    #[test]
    fn the_memo_stays_within_its_bytes() {
        let memo = Memo::<String>::new();
        let (scope, hosting) = (vec![], vec!["orchestrator".to_owned()]);
        let work_items: Vec<String> = (0..200_000).map(|i| format!("ORCH-{i}")).collect();
        for work_item in &work_items {
            remember(&memo, &question(work_item, &scope, &hosting), ruling("converge-done"));
        }
        let held: usize = memo.shards.iter().map(|shard| shard.0.lock().bytes).sum();
        assert!(held <= MEMO_BYTES, "{held} bytes");
        assert!(memo.stats().entries > 1000, "{:?}", memo.stats());
        // The newest are there.
        let last = question(work_items.last().expect("some"), &scope, &hosting);
        assert_eq!(memo.recall(&last), Some(ruling("converge-done")));
        // What the shards hold, their tables at their capacity, is within what they
        // count: every key and answer, and 8/7 of each table's capacity in buckets.
        let bucket = bucket::<String>();
        let held_for_real: usize = memo
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.0.lock();
                let buckets = (shard.entries.capacity() * 8 / 7).next_power_of_two();
                let keys_and_answers: usize = shard.entries.values().map(|e| e.question.len() + e.answer.len()).sum();
                assert!(
                    buckets * bucket + keys_and_answers <= shard.bytes,
                    "{} buckets",
                    buckets
                );
                shard.bytes
            })
            .sum();
        assert!(held_for_real <= MEMO_BYTES);
        // A question larger than a shard is answered, never kept, and empties nothing.
        let entries = memo.stats().entries;
        let huge = "x".repeat(MEMO_BYTES / SHARDS);
        remember(&memo, &question(&huge, &scope, &hosting), ruling("converge-done"));
        assert_eq!(memo.recall(&question(&huge, &scope, &hosting)), None);
        assert_eq!(memo.stats().entries, entries);
        assert_eq!(memo.recall(&last), Some(ruling("converge-done")));
    }
}
