//! The import rules of ARCHITECTURE.md, enforced.
//!
//! The "Parts" table in ARCHITECTURE.md says, for each module, which other modules of the crate
//! it may import. This test reads that table and every `crate::` path in the production code
//! under `src/` (in `use` lines and inline; comments and test code left out), and fails on a
//! path the table does not allow, naming the file and the line. It also fails when the table
//! itself allows a cycle between top-level modules, or when a module under `src/` has no row.
//!
//! Resolution: a file belongs to the longest module path with a row (`smtp::proto` before
//! `smtp`); an imported path likewise. `super::` paths are resolved against the file's own
//! module path, so a `super::super::` that leaves its top-level module is checked too.
//!
//! The same walk checks the size rule of the house style: every production file under `src/`
//! is below 500 lines of non-test code, or says why at its top in a module doc line starting
//! with `//! Over 500 lines:`.
//!
//! Test code may import anything: files named `tests.rs`, `*_tests.rs` or `test_support.rs`,
//! files under a `tests/` folder, and inline `#[cfg(test)] mod … { … }` blocks.

#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One forbidden import, for the failure message.
#[derive(Debug)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    from: String,
    to: String,
}

/// Module path (`smtp::server`) → modules it may import.
type Rules = BTreeMap<String, BTreeSet<String>>;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The backticked names in one table cell: "`cli`, `telemetry`" → [cli, telemetry].
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The rules from the table whose header has the columns `module` and `may import`.
fn rules_from_architecture(text: &str) -> Rules {
    let mut rules = Rules::new();
    let mut lines = text.lines();
    let header = lines
        .by_ref()
        .find(|line| line.starts_with("| module") && line.contains("may import"));
    assert!(
        header.is_some(),
        "ARCHITECTURE.md has no table with the columns `module` and `may import`"
    );
    for line in lines.skip(1) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let (Some(first), Some(last)) = (cells.first(), cells.last()) else {
            continue;
        };
        let allowed: BTreeSet<String> = backticked(last).into_iter().collect();
        for module in backticked(first) {
            rules.insert(module, allowed.clone());
        }
    }
    rules
}

/// `src/a/b/c.rs` → `a::b::c`, `src/a/b/mod.rs` → `a::b`; `None` for `lib.rs` and `main.rs`.
fn module_path_of(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

fn is_test_file(relative: &Path) -> bool {
    let name = relative
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name == "test_support.rs"
        || relative.iter().any(|part| part == "tests")
}

/// The production text of a file: comments blanked, inline `#[cfg(test)] mod x { … }` blocks
/// blanked (line numbers are kept).
fn production_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skipping_depth: Option<i64> = None;
    let mut cfg_test_pending = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(depth) = skipping_depth.as_mut() {
            *depth += brace_balance(line);
            if *depth <= 0 {
                skipping_depth = None;
            }
            out.push(String::new());
            continue;
        }
        if trimmed.starts_with("//") {
            out.push(String::new());
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            cfg_test_pending = true;
            out.push(String::new());
            continue;
        }
        if cfg_test_pending {
            cfg_test_pending = false;
            let is_inline_module = (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
                || trimmed.starts_with("pub(crate) mod ");
            if is_inline_module && line.contains('{') {
                let depth = brace_balance(line);
                if depth > 0 {
                    skipping_depth = Some(depth);
                }
                out.push(String::new());
                continue;
            }
            if trimmed.starts_with("#[") {
                // More attributes on the same item: keep looking.
                cfg_test_pending = true;
                out.push(String::new());
                continue;
            }
        }
        let code = match line.find("//") {
            Some(comment) if !line[..comment].contains('"') => &line[..comment],
            _ => line,
        };
        out.push(code.to_owned());
    }
    out
}

fn brace_balance(line: &str) -> i64 {
    line.chars().fold(0, |depth, ch| match ch {
        '{' => depth + 1,
        '}' => depth - 1,
        _ => depth,
    })
}

fn is_ident_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || ch == '_'
}

/// Every path that starts with `crate::` or `super::` on one line of code, as segments
/// (`crate::{a::b, c}` gives `a::b` and `c`; a group spanning lines is read from `rest`).
fn paths_in(code: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut index = 0;
    while index < bytes.len() {
        let at_word_start =
            index == 0 || !is_ident_char(bytes[index - 1]) && bytes[index - 1] != ':';
        let rest: String = bytes[index..].iter().collect();
        let root = ["crate::", "super::"]
            .into_iter()
            .find(|root| rest.starts_with(root));
        match root {
            Some(root) if at_word_start => {
                let (paths, consumed) = expand(&rest);
                for path in paths {
                    // The first segment is the root itself.
                    let tail = path.get(1..).unwrap_or_default().to_vec();
                    found.push((root.trim_end_matches("::").to_owned(), tail));
                }
                index += consumed.max(root.len());
            }
            _ => index += 1,
        }
    }
    found
}

/// Expand the path at the start of `text` (`crate::a::{b, c::d}`) into its leaves' prefixes;
/// returns the segments after the root and how many characters were read.
fn expand(text: &str) -> (Vec<Vec<String>>, usize) {
    let chars: Vec<char> = text.chars().collect();
    let mut segments: Vec<String> = Vec::new();
    let mut index = 0;
    loop {
        let start = index;
        while index < chars.len() && is_ident_char(chars[index]) {
            index += 1;
        }
        if index > start {
            segments.push(chars[start..index].iter().collect());
        }
        if chars.get(index) == Some(&':') && chars.get(index + 1) == Some(&':') {
            index += 2;
            if chars.get(index) == Some(&'{') {
                // A group: split at top-level commas and expand each member.
                let mut depth = 0;
                let mut member = String::new();
                let mut members = Vec::new();
                while index < chars.len() {
                    let ch = chars[index];
                    index += 1;
                    match ch {
                        '{' => {
                            depth += 1;
                            if depth > 1 {
                                member.push(ch);
                            }
                        }
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                members.push(std::mem::take(&mut member));
                                break;
                            }
                            member.push(ch);
                        }
                        ',' if depth == 1 => members.push(std::mem::take(&mut member)),
                        _ => member.push(ch),
                    }
                }
                let mut paths = Vec::new();
                for member in members {
                    let member = member.trim();
                    if member.is_empty() {
                        continue;
                    }
                    let (inner, _) = expand(member);
                    for tail in inner {
                        let mut path = segments.clone();
                        path.extend(tail);
                        paths.push(path);
                    }
                }
                return (paths, index);
            }
            continue;
        }
        break;
    }
    // `crate::root` of segments; `self` inside a group names the group's prefix itself.
    segments.retain(|segment| segment != "self");
    (vec![segments], index)
}

/// The longest prefix of `path` that has a row in the rules.
fn owner(rules: &Rules, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|len| path[..len].join("::"))
        .find(|candidate| rules.contains_key(candidate))
}

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Every import in `src/` that the rules do not allow, and every production module without a
/// row.
fn check_tree(rules: &Rules, src: &Path) -> (Vec<Violation>, BTreeSet<String>) {
    let mut violations = Vec::new();
    let mut unowned = BTreeSet::new();
    let mut files = Vec::new();
    source_files(src, &mut files);
    for file in files {
        let Ok(relative) = file.strip_prefix(src) else {
            continue;
        };
        if is_test_file(relative) {
            continue;
        }
        let Some(module) = module_path_of(relative) else {
            continue;
        };
        let Some(from) = owner(rules, &module) else {
            unowned.insert(module.join("::"));
            continue;
        };
        let text = fs::read_to_string(&file).unwrap_or_default();
        // A `mod.rs`'s `super` is its parent; a `foo.rs`'s `super` is the folder's module.
        let own_scope = module.clone();
        for (number, line) in production_lines(&text).iter().enumerate() {
            for (root, tail) in paths_in(line) {
                let mut target = if root == "crate" {
                    Vec::new()
                } else {
                    own_scope.clone()
                };
                let mut tail = tail.as_slice();
                if root == "super" {
                    target.pop();
                    while let Some(("super", rest)) =
                        tail.split_first().map(|(head, rest)| (head.as_str(), rest))
                    {
                        target.pop();
                        tail = rest;
                    }
                }
                target.extend(tail.iter().cloned());
                let Some(to) = owner(rules, &target) else {
                    continue;
                };
                let allowed = to == from
                    || rules
                        .get(&from)
                        .is_some_and(|allowed| allowed.contains(&to))
                    || to.starts_with(&format!("{from}::"))
                    || from.starts_with(&format!("{to}::"));
                if !allowed {
                    violations.push(Violation {
                        file: format!("src/{}", relative.display()),
                        line: number + 1,
                        path: format!("{root}::{}", tail.join("::")),
                        from: from.clone(),
                        to,
                    });
                }
            }
        }
    }
    (violations, unowned)
}

/// A cycle among top-level modules in the allowed graph, if any.
fn cycle_in(rules: &Rules) -> Option<Vec<String>> {
    let top = |module: &str| module.split("::").next().unwrap_or(module).to_owned();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, allowed) in rules {
        let entry = graph.entry(top(module)).or_default();
        for target in allowed {
            if top(target) != top(module) {
                entry.insert(top(target));
            }
        }
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(position) = stack.iter().position(|entry| entry == node) {
            let mut cycle = stack[position..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn every_import_in_src_is_allowed_by_the_architecture_table() {
    let root = manifest_dir();
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    let rules = rules_from_architecture(&architecture);
    assert!(
        rules.contains_key("vocab") && rules.len() > 10,
        "the table was not read: {rules:?}"
    );
    let (violations, unowned) = check_tree(&rules, &root.join("src"));
    let report: Vec<String> = violations
        .iter()
        .map(|v| {
            format!(
                "{}:{}: `{}` imports `{}` ({}), which the ARCHITECTURE.md table does not allow",
                v.file, v.line, v.from, v.to, v.path
            )
        })
        .collect();
    assert!(
        report.is_empty(),
        "{} forbidden import(s):\n{}",
        report.len(),
        report.join("\n")
    );
    assert!(
        unowned.is_empty(),
        "modules without a row in the ARCHITECTURE.md table: {unowned:?}"
    );
}

#[test]
fn the_allowed_imports_have_no_cycle_between_top_level_modules() {
    let architecture =
        fs::read_to_string(manifest_dir().join("ARCHITECTURE.md")).unwrap_or_default();
    let rules = rules_from_architecture(&architecture);
    assert_eq!(cycle_in(&rules), None, "the table allows a cycle");
}

#[test]
fn the_vocabulary_imports_nothing_else_of_the_crate() {
    let architecture =
        fs::read_to_string(manifest_dir().join("ARCHITECTURE.md")).unwrap_or_default();
    let rules = rules_from_architecture(&architecture);
    assert_eq!(rules.get("vocab"), Some(&BTreeSet::new()));
}

#[test]
fn paths_are_read_from_groups_inline_uses_and_super() {
    let cases: &[(&str, &[&str])] = &[
        (
            "use crate::vocab::address::Address;",
            &["crate:vocab::address::Address"],
        ),
        (
            "use crate::{config::{self, Limits}, spool::Spool};",
            &["crate:config", "crate:config::Limits", "crate:spool::Spool"],
        ),
        (
            "let id = crate::vocab::hex::lower(&bytes);",
            &["crate:vocab::hex::lower"],
        ),
        ("use super::super::format;", &["super:super::format"]),
        ("let x = my_crate::thing();", &[]),
    ];
    for (code, expected) in cases {
        let found: Vec<String> = paths_in(code)
            .into_iter()
            .map(|(root, path)| format!("{root}:{}", path.join("::")))
            .collect();
        assert_eq!(&found, expected, "{code}");
    }
}

#[test]
fn test_code_and_comments_are_left_out() {
    let text = "use crate::a::B;\n// use crate::c::D;\n#[cfg(test)]\nmod tests {\n    use crate::e::F;\n}\nuse crate::g::H;\n";
    let lines = production_lines(text);
    let paths: Vec<String> = lines
        .iter()
        .flat_map(|line| paths_in(line))
        .map(|(_, path)| path.join("::"))
        .collect();
    assert_eq!(paths, ["a::B", "g::H"]);
}

#[test]
fn a_forbidden_edge_is_reported_with_its_file_and_line() {
    let dir = std::env::temp_dir().join(format!("import-rules-{}", std::process::id()));
    let src = dir.join("src");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(src.join("vocab")).unwrap_or_default();
    fs::write(
        src.join("vocab/mod.rs"),
        "//! leaf\n\nuse crate::spool::Spool;\n",
    )
    .unwrap_or_default();
    fs::write(src.join("spool.rs"), "use crate::vocab::X;\n").unwrap_or_default();
    let rules = rules_from_architecture(
        "| module | role | may import |\n|---|---|---|\n| `vocab` | leaf | — |\n| `spool` | disk | `vocab` |\n",
    );
    let (violations, unowned) = check_tree(&rules, &src);
    let _ = fs::remove_dir_all(&dir);
    assert!(unowned.is_empty());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].file, "src/vocab/mod.rs");
    assert_eq!(violations[0].line, 3);
    assert_eq!(violations[0].to, "spool");
}

/// Lines a file may have before its inline test module, without saying why.
const MAX_PRODUCTION_LINES: usize = 500;

/// Lines of `text` before its inline `#[cfg(test)] mod tests { … }` block (all of it when
/// there is none).
fn production_line_count(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let test_block = lines.windows(2).position(|pair| {
        pair[0].trim_start().starts_with("#[cfg(test)]")
            && pair[1].trim_start().starts_with("mod tests")
            && pair[1].contains('{')
    });
    test_block.unwrap_or(lines.len())
}

#[test]
fn every_file_is_below_500_lines_of_production_code_or_says_why() {
    let src = manifest_dir().join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut too_long = Vec::new();
    for file in files {
        let Ok(relative) = file.strip_prefix(&src) else {
            continue;
        };
        if is_test_file(relative) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap_or_default();
        let count = production_line_count(&text);
        let says_why = text
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .any(|line| line.starts_with("//! Over 500 lines:"));
        if count >= MAX_PRODUCTION_LINES && !says_why {
            too_long.push(format!("src/{}: {count} lines", relative.display()));
        }
    }
    assert!(
        too_long.is_empty(),
        "files of {MAX_PRODUCTION_LINES} lines or more of production code without a reason \
         (`//! Over 500 lines: …` at the top), split them where the seam is:\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_line_count_stops_at_the_inline_test_module() {
    let text = "//! doc\nfn a() {}\n\n#[cfg(test)]\nmod tests {\n    fn b() {}\n}\n";
    assert_eq!(production_line_count(text), 3);
    assert_eq!(production_line_count("fn a() {}\nfn b() {}\n"), 2);
}
