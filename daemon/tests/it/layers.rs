//! The daemon's modules form layers that only point down:
//!
//! ```text
//! server → handlers → scheduler → runner → sources → layout → engine / store → job → settings, ranges, memory
//! ```
//!
//! This test reads `daemon/src`, finds every reference from one top-level module to another
//! (`crate::name` and `use crate::{name, ...}`, outside `#[cfg(test)]` code) and fails on a
//! reference that points up or sideways, which is also what a module cycle needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its layer: a module may use only modules of a lower layer.
const LAYERS: [(&str, u32); 13] = [
    ("server", 9),
    ("watch", 9),
    ("handlers", 8),
    ("scheduler", 7),
    ("runner", 6),
    ("sources", 5),
    ("layout", 4),
    ("engine", 3),
    ("store", 3),
    ("job", 2),
    ("settings", 1),
    ("ranges", 1),
    ("memory", 1),
];

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate root and the binary).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The code of a file without its test modules (everything from a `#[cfg(test)]` line that
/// opens a `mod` on).
fn without_tests(code: &str) -> String {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or("");
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") {
            break;
        }
        out.push(*line);
    }
    out.join("\n")
}

/// The crate modules `code` names: `crate::name...` and every name in `use crate::{...}`.
fn referenced_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c, d::{e, f}}`: the top-level names of the group.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        out.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|name| !name.is_empty());
    out
}

#[test]
fn daemon_modules_only_point_down() {
    let layer: BTreeMap<&str, u32> = LAYERS.into_iter().collect();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut violations = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        seen_modules.insert(module.clone());
        let Some(&from) = layer.get(module.as_str()) else {
            violations.push(format!(
                "module `{module}` is not in the layer table of daemon/tests/it/layers.rs: add it"
            ));
            continue;
        };
        let code = without_tests(&std::fs::read_to_string(file).unwrap());
        for target in referenced_modules(&code) {
            if target == module {
                continue;
            }
            match layer.get(target.as_str()) {
                Some(&to) if to < from => {}
                Some(_) => violations.push(format!(
                    "{} uses `crate::{target}`: `{module}` may only use layers below it",
                    file.strip_prefix(src_dir()).unwrap().display()
                )),
                // Not a module (e.g. `crate::Settings` re-exported by lib.rs).
                None => {}
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // The table names every module, so a renamed one is noticed too.
    let listed: BTreeSet<String> = LAYERS.iter().map(|(m, _)| m.to_string()).collect();
    assert_eq!(seen_modules, listed);
}

#[test]
fn the_reference_finder_sees_every_form() {
    let found = referenced_modules(
        "use crate::engine::names;\nuse crate::{job::{A, B}, store, sources::x};\nlet _ = crate::scheduler::f();",
    );
    let expected: BTreeSet<String> = ["engine", "job", "store", "sources", "scheduler"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
    assert_eq!(
        without_tests("a\n#[cfg(test)]\nmod tests {\n use crate::server;\n}"),
        "a"
    );
}
