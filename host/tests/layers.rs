//! The host's modules are layered bottom-up: each imports only from its own layer or
//! below, and no two modules import each other, directly or through others. The
//! table here is ARCHITECTURE.md's, by whole module path (`rollout::slot`, not a
//! folder); a new module must be placed in it, and an import that reaches up a layer
//! fails this test with its file and line.
//!
//! The walk covers every file under `host/src` except the binary (`main.rs`, `cli/`)
//! and the crate root. A folder's `mod.rs` is the folder's module (`guard/mod.rs` is
//! `guard`); one that only declares its files, importing nothing of the crate, is a
//! grouping and needs no place in the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom first. Within a layer, imports are allowed but must not form a cycle.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "decision",
            "files::read",
            "files::stamp",
            "files::write",
            "facts::sqlite_mutex",
            "sandbox::embedded",
            "admission::signature",
        ],
    ),
    ("config", &["config", "config::settings", "config::load"]),
    (
        "what a policy is asked",
        &["sandbox::question", "sandbox::wit", "sandbox::world", "sandbox::memo"],
    ),
    ("engine", &["sandbox::engine", "sandbox::cache", "facts::source"]),
    ("policy", &["sandbox::policy"]),
    (
        "what a policy is judged on",
        &[
            "admission::grid",
            "admission::vectors",
            "observe::metrics",
            "rollout::oci::error",
            "rollout::oci::reference",
            "rollout::oci::cosign",
            "rollout::oci::credentials",
            "rollout::oci::client",
        ],
    ),
    ("gate", &["admission::gate"]),
    (
        "around the live policy",
        &[
            "rollout::slot",
            "rollout::watch",
            "observe::ledger",
            "observe::shadow",
            "rollout::follow",
        ],
    ),
    ("guard", &["guard", "guard::judge", "guard::refresh"]),
    ("serving", &["serve", "tracker", "observe::metrics_server"]),
];

/// Items the crate root re-exports, by the module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Decision", "decision"),
    ("Request", "decision"),
    ("Target", "decision"),
    ("Verdict", "decision"),
    ("LogFormat", "decision"),
    ("Config", "config"),
    ("Limits", "config"),
    ("Overrides", "config"),
    ("Guard", "guard"),
    ("GuardError", "guard"),
    ("GuardedSetters", "tracker"),
    ("Status", "tracker"),
    ("Tracker", "tracker"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// The module paths of the files under `dir` (`a/b.rs` is `a::b`, `a/mod.rs` is `a`),
/// with whether the file is a folder's `mod.rs`.
fn walk(dir: &Path, prefix: &str, found: &mut Vec<(String, bool, std::path::PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("a source folder")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}::{name}")
            }
        };
        if path.is_dir() {
            walk(&path, &join(name), found);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if stem == "mod" {
                found.push((prefix.to_owned(), true, path.clone()));
            } else {
                found.push((join(stem), false, path.clone()));
            }
        }
    }
}

/// The module a `crate::` path names: the longest prefix of its segments that is a
/// module of the crate (`crate::rollout::slot::PolicySlot` is `rollout::slot`), or the
/// module of a root item (`crate::Verdict` is `decision`).
fn resolve(segments: &[String], modules: &BTreeSet<String>) -> Option<String> {
    if let [item, ..] = segments
        && let Some((_, module)) = ROOT_ITEMS.iter().find(|(name, _)| name == item)
    {
        return Some((*module).to_owned());
    }
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|path| modules.contains(path))
}

/// The `crate::` paths in a file's code (comments left out), as their segments, with
/// their line numbers.
fn imports(source: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments = path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
            found.push((number + 1, segments));
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_its_layer_or_below_and_none_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, "", &mut files);
    files.retain(|(module, _, _)| !matches!(module.as_str(), "lib" | "main" | "cli") && !module.starts_with("cli::"));
    // A mod.rs that imports something of the crate is a module like any other.
    let sources: Vec<String> = files
        .iter()
        .map(|(_, _, path)| std::fs::read_to_string(path).expect("source"))
        .collect();
    for ((_, grouping, _), source) in files.iter_mut().zip(&sources) {
        *grouping = *grouping && imports(source).is_empty();
    }
    let modules: BTreeSet<String> = files
        .iter()
        .filter(|(_, grouping, _)| !grouping)
        .map(|(module, _, _)| module.clone())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for ((module, grouping, path), source) in files.iter().zip(&sources) {
        let shown = path.strip_prefix(&src).unwrap_or(path).display().to_string();
        if *grouping {
            continue;
        }
        let Some(own) = layer_of(module) else {
            problems.push(format!(
                "{module} ({shown}): not in the layer table (host/tests/layers.rs, ARCHITECTURE.md)"
            ));
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        for (line, segments) in imports(source) {
            let Some(target) = resolve(&segments, &modules) else {
                problems.push(format!(
                    "{shown}:{line}: crate::{} names no module of the crate",
                    segments.join("::")
                ));
                continue;
            };
            if target == *module {
                continue;
            }
            match layer_of(&target) {
                Some(layer) if layer <= own => {
                    edges.insert(target);
                }
                Some(layer) => problems.push(format!(
                    "{shown}:{line}: {module} imports {target} ({}) from below it ({})",
                    LAYERS[layer].0, LAYERS[own].0
                )),
                None => problems.push(format!("{shown}:{line}: imports {target}, which is in no layer")),
            }
        }
    }
    // Every module of the table exists: the table is the map, not a wish list.
    for (_, listed) in LAYERS {
        for module in *listed {
            if !modules.contains(*module) {
                problems.push(format!("{module}: in the layer table but no such file under host/src"));
            }
        }
    }
    // No circle, even within a layer.
    fn reach(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
        graph.get(from).is_some_and(|next| {
            next.iter()
                .any(|n| n == to || (seen.insert(n.clone()) && reach(graph, n, to, seen)))
        })
    }
    for module in graph.keys() {
        if reach(&graph, module, module, &mut BTreeSet::new()) {
            problems.push(format!("{module}: imports itself through other modules"));
        }
    }
    assert!(
        graph.len() > 15,
        "only {} modules found in {}",
        graph.len(),
        src.display()
    );
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_import_scanner_sees_whole_module_paths_and_root_items_and_skips_comments() {
    let found = imports(
        "use crate::rollout::slot::{Outcome, PolicySlot};\n// crate::guard in a comment\nlet v = crate::Verdict::Allow;",
    );
    let modules: BTreeSet<String> = ["rollout::slot", "decision"].into_iter().map(str::to_owned).collect();
    let resolved: Vec<(usize, Option<String>)> = found
        .iter()
        .map(|(line, segments)| (*line, resolve(segments, &modules)))
        .collect();
    assert_eq!(
        resolved,
        vec![(1, Some("rollout::slot".to_owned())), (3, Some("decision".to_owned()))]
    );
    assert_eq!(
        resolve(&["rollout".to_owned(), "nothing".to_owned()], &modules),
        None,
        "a path that names no file module is not resolved to a folder"
    );
}
