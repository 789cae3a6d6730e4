//! The engine's modules form layers: no import cycle between its top-level
//! modules (`listen`, `dial`, `route`, `cluster`, `portforward`…). A
//! newcomer reads the tree from the top down; an edge pointing back up would
//! make that impossible, so this test fails on the first one and names the
//! cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`listen/http.rs` → `listen`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file's code names as `crate::NAME`, outside
/// comments (doc links are no imports). `use crate::{a, b}` groups are not
/// used in this crate; a test below keeps it that way.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        // The crate root declares and re-exports everything; the fuzz entry
        // points, the in-memory cluster for tests and the in-process tests
        // sit on top of the whole engine.
        if ["lib", "fuzz", "testing", "promises"].contains(&from.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains("use crate::{"), "{}: name each module in its own `use crate::…` line", file.display());
        for to in references(&text) {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle through `node`, if there is one, as the path that closes it.
fn cycle(
    node: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut found = path[at..].to_vec();
        found.push(node.to_string());
        return Some(found);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in edges.get(node).into_iter().flatten() {
        if let Some(found) = cycle(next, edges, path, done) {
            return Some(found);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let edges = graph();
    assert!(edges.contains_key("listen") && edges.contains_key("dial"), "the scan found no imports: {edges:?}");
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(found) = cycle(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", found.join(" → "));
        }
    }
}

#[test]
fn the_layers_point_down() {
    let edges = graph();
    let imports = |from: &str, to: &str| edges.get(from).is_some_and(|e| e.contains(to));
    // The rules are pure: they read a snapshot, never the cluster or a socket.
    for below in ["cluster", "dial", "listen", "portforward", "engine", "gateway"] {
        assert!(!imports("route", below), "route imports {below}");
    }
    // The cluster side knows nothing of clients.
    for above in ["listen", "dial", "engine", "gateway"] {
        assert!(!imports("cluster", above), "cluster imports {above}");
        assert!(!imports("portforward", above), "portforward imports {above}");
    }
    assert!(!imports("listen", "engine") && !imports("listen", "gateway"), "listen imports what runs it");
    assert!(!imports("dial", "listen"), "dial imports listen");
}

#[test]
fn the_scan_reads_crate_paths_and_skips_comments() {
    let found = references(
        "use crate::route::Host;\n// crate::listen is a comment\nlet x = crate::dial::f(); //! crate::engine",
    );
    assert_eq!(found, BTreeSet::from(["route".to_string(), "dial".to_string()]));
}
