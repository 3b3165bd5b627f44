//! The module layout has no import cycle (DESIGN.md §2): lower layers never import higher
//! ones. Reads `src/` and follows every `crate::` path outside comments and `#[cfg(test)]`
//! code; a module importing its own parent or child (a `mod.rs` re-exporting its files) does
//! not count.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Every source file as a module path (`store::file`, `middleware`), with its text.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix("src").unwrap().with_extension("");
                let mut name = rel.to_string_lossy().replace(['/', '\\'], "::");
                if let Some(parent) = name.strip_suffix("::mod") {
                    name = parent.to_owned();
                }
                if name != "lib" {
                    out.insert(name, fs::read_to_string(&path).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new("src"), &mut out);
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names under `crate::`, braces of `use` trees expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        paths.extend(expand("", rest));
    }
    paths
}

/// The paths of a use tree starting at `text` (`a::{b, c::d}` gives `a::b` and `a::c::d`),
/// each prefixed with `prefix`.
fn expand(prefix: &str, text: &str) -> Vec<String> {
    let head: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let after = &text[head.len()..];
    let path = format!("{prefix}{head}");
    if !after.starts_with('{') {
        return vec![path];
    }
    // The items of the braces, split at top-level commas.
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = 1;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&after[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&after[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .flat_map(|item| expand(&path, item.trim()))
        .collect()
}

/// The module a path lands in: its longest prefix that is a file.
fn resolve<'a>(path: &str, modules: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len()).rev().find_map(|n| {
        let candidate = parts[..n].join("::");
        modules.get_key_value(&candidate).map(|(k, _)| k.as_str())
    })
}

fn related(a: &str, b: &str) -> bool {
    a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = modules();
    assert!(modules.len() > 20, "read the sources from the crate root");
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, text) in &modules {
        let deps = edges.entry(name.as_str()).or_default();
        for path in crate_paths(&code(text)) {
            if let Some(dep) = resolve(&path, &modules) {
                if dep != name && !related(dep, name) {
                    deps.insert(dep);
                }
            }
        }
    }
    // A cycle is an edge a -> b with a path back from b to a.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(node) = stack.pop() {
            if node == to {
                return true;
            }
            if seen.insert(node) {
                stack.extend(edges.get(node).into_iter().flatten().copied());
            }
        }
        false
    };
    let cycles: Vec<String> = edges
        .iter()
        .flat_map(|(a, deps)| deps.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| reaches(b, a))
        .map(|(a, b)| format!("{a} -> {b} -> ... -> {a}"))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_use_trees_and_cycles() {
    let paths = crate_paths("use crate::{a::{b, c::D}, e};\nlet x = crate::f::g();");
    assert_eq!(paths, ["a::b", "a::c::D", "e", "f::g"]);
    assert!(related("store::file", "store"));
    assert!(!related("store", "state"));
}
