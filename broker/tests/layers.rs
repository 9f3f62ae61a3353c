//! The broker's floors: data flows one way, and no module imports from a module above it.
//! This test reads the crate's own sources (the `crate::` paths of non-test code) and fails
//! on any upward or sideways import, so the layout in docs/architecture.md stays true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every top-level module of the broker and its floor, lowest first. A module may use only
/// modules on lower floors. Adding a module means giving it a floor here.
const FLOORS: &[(&str, u8)] = &[
    // Foundations: time, plain configuration data, key files, Redis connections.
    ("clock", 1),
    ("metrics", 1),
    ("config", 1),
    ("keys", 1),
    ("jose", 1),
    ("redis_conn", 1),
    // What every HTTP client the broker builds for a peer it calls shares.
    ("outbound", 1),
    // Pure domain: verification, signing, audit events and chain, limits, the dev issuer.
    ("identity", 2),
    ("token", 2),
    ("audit", 2),
    ("ratelimit", 2),
    ("devissuer", 2),
    ("notify", 2),
    // Domain on domain: the policy decides on verified identities; the store keeps grants
    // and audit events.
    ("policy", 3),
    ("store", 3),
    // Recording decisions, and the error every service answers with.
    ("recorder", 4),
    ("error", 4),
    ("revocation", 5),
    // The life of approval requests (filed by the exchange, decided through the API).
    ("approval", 5),
    // The admin runtime: where admin and background work runs (carries the request id).
    ("runtime", 5),
    // Services: each combines the domain for one job.
    ("gateway", 6),
    ("gatekeeper", 6),
    ("exchange", 6),
    ("admin", 6),
    ("console", 6),
    ("introspection", 6),
    // The one compile step, the shared state, the HTTP floor, the subcommands.
    ("compile", 7),
    // The SSH gate's question: the gatekeeper and the gateway's receive-pack code together.
    ("ssh", 7),
    ("state", 8),
    ("preflight", 8),
    ("http", 9),
    ("commands", 10),
];

/// Test-only support files, compiled only under `cfg(test)` (or the `test-suite` feature).
const TEST_SUPPORT: &[&str] = &[
    "identity/testissuer.rs",
    "store/flaky.rs",
    "store/suite.rs",
    "store/suite_time.rs",
    "store/requests_suite.rs",
    "compile/examples.rs",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of `text` before its `#[cfg(test)] mod tests`, without comments.
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names through `crate::`.
fn used_modules(code: &str) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c};`: every top-level name in the group.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.push(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            used.push(first_ident(&item));
        } else {
            used.push(first_ident(rest));
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_module_imports_from_a_floor_above_or_beside_it() {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        let test_file = rel == "tests.rs" || rel.ends_with("/tests.rs");
        if rel == "main.rs" || rel == "lib.rs" || test_file || TEST_SUPPORT.contains(&rel.as_str())
        {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs");
        let Some(&floor) = floors.get(module) else {
            problems.push(format!("{rel}: module `{module}` has no floor in FLOORS"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for used in used_modules(&production_code(&text)) {
            if used == module {
                continue;
            }
            checked += 1;
            match floors.get(used.as_str()) {
                Some(&f) if f < floor => {}
                Some(&f) => problems.push(format!(
                    "{rel}: `{module}` (floor {floor}) uses `crate::{used}` (floor {f})"
                )),
                None => problems.push(format!("{rel}: uses `crate::{used}`, which has no floor")),
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports seen: is the parser broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_parser_sees_grouped_and_nested_imports() {
    let code = production_code(
        "use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h(); // crate::comment\n\
         #[cfg(test)]\nmod tests { use crate::z; }",
    );
    assert_eq!(used_modules(&code), ["a", "c", "d", "g"]);
}

/// The sibling files of `module`'s folder that `code` names (`super::x`, `crate::module::x`).
fn used_siblings(code: &str, module: &str) -> Vec<String> {
    let mut used = Vec::new();
    let own = format!("crate::{module}::");
    for prefix in ["super::", own.as_str()] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            // `a::super::` is not this folder's; `super::super::x` is the parent's parent.
            let preceded = rest[..i].ends_with("::");
            rest = &rest[i + prefix.len()..];
            if preceded {
                continue;
            }
            if rest.starts_with("super::") {
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                }
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                used.extend(group[..end].split(',').map(first_ident));
            } else {
                used.push(first_ident(rest));
            }
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

/// Inside a module's folder the files form no circle either (`farm-studio look` counts
/// circles between files, not only between top-level modules): a type two parts share goes
/// down into a leaf of its own.
#[test]
fn no_circle_between_the_files_of_one_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut edges_seen = 0;
    for (module, _) in FLOORS {
        let dir = src.join(module);
        if !dir.is_dir() {
            continue;
        }
        // Test-support files are in the graph too (`farm-studio` draws them); the folder's
        // `mod.rs` and its `tests` are not.
        let node = |file: &Path| {
            let name = file.file_stem()?.to_string_lossy().into_owned();
            (name != "mod" && name != "tests").then_some(name)
        };
        let uses = |code: &str, name: &str| {
            let mut used = used_siblings(code, module);
            used.retain(|u| *u != name && dir.join(format!("{u}.rs")).is_file());
            used
        };
        let (graph, edges) = import_graph(&dir, node, uses);
        edges_seen += edges;
        problems.extend(
            circles(&graph)
                .into_iter()
                .map(|c| format!("{module}/: {c}")),
        );
    }
    assert!(
        edges_seen > 10,
        "only {edges_seen} sibling imports seen: is the parser broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn sibling_imports_are_seen_in_groups_and_by_crate_path() {
    let code = "use super::{body::BodyStream, proxy::Forward};\nuse super::super::x;\n\
                let y = crate::gateway::push::inspect();";
    assert_eq!(used_siblings(code, "gateway"), ["body", "proxy", "push"]);
}

/// The import graph of the Rust files under `dir`: each file is the node `node` names (`None`:
/// left out; several files may make one node), its edges what `uses(code, node)` finds in
/// its production code; with how many distinct edges were seen.
fn import_graph(
    dir: &Path,
    node: impl Fn(&Path) -> Option<String>,
    uses: impl Fn(&str, &str) -> Vec<String>,
) -> (BTreeMap<String, Vec<String>>, usize) {
    let mut files = Vec::new();
    sources(dir, &mut files);
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let Some(name) = node(file) else { continue };
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let used = uses(&production_code(&text), &name);
        let entry = graph.entry(name).or_default();
        entry.extend(used);
        entry.sort();
        entry.dedup();
    }
    let edges = graph.values().map(Vec::len).sum();
    (graph, edges)
}

/// The circles of `graph` (each node's list names the nodes it uses), as `a -> b -> a`.
fn circles(graph: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    // Depth-first search; a grey node met again closes a circle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == n) {
            found.push(format!("{} -> {n}", path[i..].join(" -> ")));
            return;
        }
        if done.iter().any(|d| d == n) {
            return;
        }
        path.push(n.to_owned());
        for next in graph.get(n).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
        done.push(n.to_owned());
    }
    let mut done = Vec::new();
    let mut found = Vec::new();
    for n in graph.keys() {
        visit(n, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// The workspace's other crates have no floors of their own, but no circle either: between
/// their top-level modules (`crate::x`), read here so one parser serves every crate.
#[test]
fn no_circle_between_the_modules_of_the_other_crates() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    let mut edges_seen = 0;
    for krate in ["helper", "proto", "sshgate"] {
        let src = workspace.join(krate).join("src");
        // A file is a node of its top-level module; the crate's root and binaries are not.
        let node = |file: &Path| {
            let rel = file
                .strip_prefix(&src)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "lib.rs" || rel == "main.rs" || rel.starts_with("bin/") {
                return None;
            }
            let module = rel.split('/').next()?.trim_end_matches(".rs").to_owned();
            Some(module)
        };
        let uses = |code: &str, module: &str| {
            let mut used = used_modules(code);
            used.retain(|u| u != module);
            used
        };
        let (graph, edges) = import_graph(&src, node, uses);
        edges_seen += edges;
        problems.extend(circles(&graph).into_iter().map(|c| format!("{krate}: {c}")));
    }
    assert!(
        edges_seen > 50,
        "only {edges_seen} imports seen: is the parser broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_circle_is_found_and_named() {
    let graph: BTreeMap<String, Vec<String>> = [
        ("cli", vec!["manual", "config"]),
        ("manual", vec!["cli"]),
        ("config", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&graph), ["cli -> manual -> cli"]);
}
