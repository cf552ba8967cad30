//! The gateway's modules form layers: no top-level module reaches, through its imports, back to
//! itself (a module and its submodules count as one). Test code is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for p in entries.flatten().map(|e| e.path()) {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if p.is_dir() && name.as_deref() != Some("tests") {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && name.as_deref() != Some("tests.rs") {
            out.push(p);
        }
    }
}

/// The identifiers that follow `crate::` in `text`, including each member of a
/// `use crate::{a, b::c}` group.
fn referenced(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (at, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    ch if start && !ch.is_whitespace() => {
                        out.insert(ident(&group[at..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let deps = edges.entry(top.clone()).or_default();
        deps.extend(referenced(code).into_iter().filter(|m| *m != top));
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == start {
                let mut p = path.clone();
                p.push(start.to_string());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_modules_import_each_other_in_layers_without_a_cycle() {
    let edges = graph();
    assert!(edges.len() > 30, "{edges:?}");
    // The graph is read correctly: known edges are there.
    assert!(edges["call"].contains("upstream"), "{:?}", edges["call"]);
    assert!(edges["front"].contains("dispatch"), "{:?}", edges["front"]);
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|m| cycle_from(&edges, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle_from(&edges, "a").map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".to_string())
    );
    edges.insert("c".to_string(), BTreeSet::new());
    assert_eq!(cycle_from(&edges, "a"), None);
    assert_eq!(
        referenced(
            "use crate::{call::{self, Call}, gateway::Gateway};\nlet x = crate::metrics::get();"
        ),
        BTreeSet::from([
            "call".to_string(),
            "gateway".to_string(),
            "metrics".to_string()
        ])
    );
}
