//! The host's modules are layered bottom-up: each imports only from its own layer or
//! below, and no two modules import each other, directly or through others. The
//! table here is ARCHITECTURE.md's; a new module must be placed in it, and an import
//! that reaches up a layer fails this test with its file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom first. Within a layer, imports are allowed but must not form a cycle.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &["decision", "wit", "read_file", "sqlite_mutex", "policies", "signature"],
    ),
    ("config", &["config"]),
    ("engine", &["engine", "cache", "facts"]),
    ("policy", &["policy"]),
    ("what a policy is judged on", &["grid", "vectors", "metrics", "oci"]),
    ("gate", &["gate"]),
    ("around the live policy", &["swap", "ledger", "shadow", "follow"]),
    ("guard", &["guard"]),
    ("serving", &["serve", "tracker", "metrics_server"]),
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

/// `crate::x` paths in a file's code (comments left out), with their line numbers.
fn imports(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let module = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.clone(), |(_, module)| (*module).to_owned());
            found.push((number + 1, module));
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_its_layer_or_below_and_none_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src).expect("host/src") {
        let path = entry.expect("entry").path();
        let Some(module) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        if matches!(module, "lib" | "main") {
            continue;
        }
        let Some(own) = layer_of(module) else {
            problems.push(format!(
                "{module}: not in the layer table (host/tests/layers.rs, ARCHITECTURE.md)"
            ));
            continue;
        };
        let source = std::fs::read_to_string(&path).expect("source");
        let edges = graph.entry(module.to_owned()).or_default();
        for (line, target) in imports(&source) {
            if target == module {
                continue;
            }
            match layer_of(&target) {
                Some(layer) if layer <= own => {
                    edges.insert(target);
                }
                Some(layer) => problems.push(format!(
                    "{module}.rs:{line}: imports {target} ({}) from below it ({})",
                    LAYERS[layer].0, LAYERS[own].0
                )),
                None => problems.push(format!("{module}.rs:{line}: imports {target}, which is in no layer")),
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
fn the_import_scanner_sees_module_paths_and_root_items_and_skips_comments() {
    let found = imports("use crate::config::Limits;\n// crate::guard in a comment\nlet v = crate::Verdict::Allow;");
    assert_eq!(found, vec![(1, "config".to_owned()), (3, "decision".to_owned())]);
}
