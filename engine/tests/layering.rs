//! The engine's modules are layered, and their imports form no cycle.
//!
//! Every top-level module of `engine/src` (a directory module together with its submodules) has a
//! layer in [`LAYERS`], which mirrors the table in ARCHITECTURE.md ("Engine modules"). A module
//! may import modules of its own layer and of the layers below it, never of a layer above; and
//! the imports between modules must not form a cycle (which catches loops inside one layer).
//!
//! How the imports are found, without compiling anything: the crate is walked from `lib.rs`
//! through its `mod` declarations (so only files that are part of the crate count, whatever their
//! `cfg`); comments, string and character literals are blanked out; items under `#[cfg(test)]`
//! (the `mod tests { … }` blocks, and whole test-only files declared by `#[cfg(test)] mod x;`)
//! are skipped; then every path that starts with `crate::` or `super::` — in a `use`, in a
//! re-export or inline in code — is resolved against the module it appears in (inline
//! `mod x { … }` blocks included) to the top-level module it reaches. A path through the crate
//! root's re-exports (`crate::Admit`) is refused, since it would hide the module it comes from.
//! Intra-doc links are comments and do not count: they create no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first, with their modules. Keep in step with ARCHITECTURE.md (checked by
/// `architecture_md_lists_the_same_layers`).
const LAYERS: &[(&str, &[&str])] = &[
    ("foundations", &["error", "topk", "kernels"]),
    (
        "shared vocabulary, the OS boundary",
        &["admit", "params", "expr", "fusion", "mmap", "priority"],
    ),
    ("on-disk format, codecs", &["format", "pq", "attributes"]),
    (
        "index parts",
        &[
            "sparse",
            "approx",
            "tokens",
            "doc_tokens",
            "tombstones",
            "maxsim",
        ],
    ),
    ("a segment", &["segment"]),
    ("filter compilation", &["filter"]),
    ("the query pipeline", &["pipeline", "explain"]),
    ("the index: segments searched as one", &["index"]),
    (
        "tools over the index",
        &["build", "compact", "weight_table", "encoders"],
    ),
    ("live writes: log, refresh, seal, merge", &["live"]),
];

/// The layer (0-based position in [`LAYERS`]) of top-level module `name`.
fn layer_of(name: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&name))
}

/// One reference from a module to another top-level module.
#[derive(Debug, Clone)]
struct Import {
    /// The top-level module the reference is in.
    from: String,
    /// The top-level module it reaches.
    to: String,
    /// Where: the file (relative to the source root) and line.
    file: String,
    line: usize,
    /// The path as written, e.g. `crate::filter::Admit`.
    text: String,
}

/// What a walk over a crate's sources found.
#[derive(Debug, Default)]
struct Scan {
    /// References between top-level modules (and within one, which the checks ignore).
    imports: Vec<Import>,
    /// Top-level modules declared by `lib.rs` (test-only ones excluded).
    modules: BTreeSet<String>,
    /// Faults of the sources themselves: a declared module without a file, a path the scan
    /// cannot resolve to a module.
    problems: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Reading sources

/// `source` with comments, string literals and character literals replaced by spaces (line
/// breaks kept, so line numbers stay right). Lifetimes are left alone.
fn blank_out(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_hashes(&chars, i) {
            // A raw string: r"…", r#"…"#, br"…" (not a raw identifier such as r#type).
            let closing =
                |j: usize| chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#'));
            let mut j = i + chars[i..].iter().position(|&q| q == '"').unwrap_or(0) + 1;
            while j < chars.len() && !closing(j) {
                j += 1;
            }
            let end = (j + 1 + hashes).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '"' || (c == 'b' && next == Some('"') && !after_ident) {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\'', '\u{…}'), not a lifetime ('a).
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '\'' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#`s of the raw string literal starting at `chars[i]` (`r"`, `r#"`, `br##"`…),
/// or `None` if none starts there.
fn raw_string_hashes(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let after_prefix = match (chars.get(i), chars.get(i + 1)) {
        (Some('r'), _) => i + 1,
        (Some('b'), Some('r')) => i + 2,
        _ => return None,
    };
    let hashes = chars[after_prefix..]
        .iter()
        .take_while(|&&h| h == '#')
        .count();
    (chars.get(after_prefix + hashes) == Some(&'"')).then_some(hashes)
}

/// A token of blanked-out source: an identifier (or number), `::`, or one punctuation character.
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

/// The tokens of blanked-out `source`, with their line numbers.
fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// Whether token `text` is an identifier (not a number or punctuation).
fn is_ident(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// What one file holds: its references to other modules, and the modules it declares with
/// `mod name;` (those under `#[cfg(test)]` left out).
#[derive(Default)]
struct FileScan {
    /// (module path the reference resolves to, line, the path as written).
    references: Vec<(Vec<String>, usize, String)>,
    /// Child modules declared by `mod name;` outside `#[cfg(test)]`.
    children: Vec<String>,
    /// Paths that resolve to no module (`super` above the crate root, a glob on the root).
    unresolved: Vec<(usize, String)>,
}

/// Segment just past the item starting at `i`: through the first `;` outside brackets, or through
/// the `}` matching the first `{`.
fn skip_item(tokens: &[Token], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < tokens.len() {
        match tokens[i].text.as_str() {
            "(" | "[" => depth += 1,
            ")" | "]" => depth = depth.saturating_sub(1),
            ";" if depth == 0 => return i + 1,
            "{" if depth == 0 => {
                let mut braces = 0usize;
                while i < tokens.len() {
                    match tokens[i].text.as_str() {
                        "{" => braces += 1,
                        "}" => {
                            braces -= 1;
                            if braces == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                return i;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Segment just past the attribute starting at `i` (`#` `[`…`]` or `#` `!` `[`…`]`), and whether it
/// is a `cfg` that holds only under test (`cfg(test)`, `cfg(all(test, …))`; not `cfg(not(test))`).
fn read_attribute(tokens: &[Token], i: usize) -> (usize, bool) {
    let mut j = i + 1;
    if tokens.get(j).is_some_and(|t| t.text == "!") {
        j += 1;
    }
    if tokens.get(j).is_none_or(|t| t.text != "[") {
        return (i + 1, false);
    }
    let start = j + 1;
    let mut depth = 0usize;
    while j < tokens.len() {
        match tokens[j].text.as_str() {
            "[" => depth += 1,
            "]" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let inside: Vec<&str> = tokens[start..j.min(tokens.len())]
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    let test_only = inside.first() == Some(&"cfg")
        && inside.contains(&"test")
        && !inside.contains(&"not")
        && !inside.contains(&"any");
    (j + 1, test_only)
}

/// The top-level names a path reaches from the crate root, starting at `tokens[i]`: one name, or
/// the first name of each item of a `{ … }` group.
fn root_names(tokens: &[Token], i: usize) -> Vec<String> {
    match tokens.get(i).map(|t| t.text.as_str()) {
        Some("{") => {
            let mut names = Vec::new();
            let (mut depth, mut item_start) = (0usize, true);
            for token in &tokens[i..] {
                match token.text.as_str() {
                    "{" => {
                        depth += 1;
                        if depth == 1 {
                            item_start = true;
                            continue;
                        }
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "," if depth == 1 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if item_start && depth == 1 {
                    names.push(token.text.clone());
                }
                item_start = false;
            }
            names
        }
        Some(name) => vec![name.to_string()],
        None => Vec::new(),
    }
}

/// The path as written from `tokens[i]` on, for messages: up to the end of the `use` group or
/// the last segment.
fn path_text(tokens: &[Token], i: usize) -> String {
    let mut text = String::new();
    let mut depth = 0usize;
    let mut previous = "";
    for token in &tokens[i..] {
        let t = token.text.as_str();
        if depth == 0 {
            // A group opens only right after `::`; any other brace ends the path.
            let continues = is_ident(t) || t == "::" || (t == "{" && previous == "::");
            if !continues {
                break;
            }
        }
        match t {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
        text.push_str(t);
        if t == "," {
            text.push(' ');
        }
        previous = t;
        if depth == 0 && t == "}" {
            break;
        }
    }
    text
}

/// Scans one file whose module path is `module` (empty for the crate root).
fn scan_file(source: &str, module: &[String]) -> FileScan {
    let tokens = tokenize(&blank_out(source));
    let mut scan = FileScan::default();
    // Inline `mod name { … }` blocks open at this brace depth.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let text = tokens[i].text.as_str();
        let next = tokens.get(i + 1).map(|t| t.text.as_str());
        match text {
            "#" => {
                let inner = next == Some("!");
                let (mut after, test_only) = read_attribute(&tokens, i);
                if test_only && inner {
                    // `#![cfg(test)]`: the whole file is test-only.
                    return FileScan::default();
                }
                if test_only {
                    while tokens.get(after).is_some_and(|t| t.text == "#") {
                        after = read_attribute(&tokens, after).0;
                    }
                    after = skip_item(&tokens, after);
                }
                i = after;
                continue;
            }
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                while inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            "mod" => {
                if let (Some(name), Some(after)) = (tokens.get(i + 1), tokens.get(i + 2)) {
                    if after.text == ";" {
                        if inline.is_empty() {
                            scan.children.push(name.text.clone());
                        }
                        i += 3;
                        continue;
                    }
                    if after.text == "{" {
                        depth += 1;
                        inline.push((name.text.clone(), depth));
                        i += 3;
                        continue;
                    }
                }
            }
            "crate" | "super" if next == Some("::") => {
                let line = tokens[i].line;
                let written = path_text(&tokens, i);
                // `crate::` starts at the root, `super::` at the module the path is in.
                let (mut base, mut j) = if text == "crate" {
                    (Vec::new(), i + 2)
                } else {
                    let mut here = module.to_vec();
                    here.extend(inline.iter().map(|(name, _)| name.clone()));
                    (here, i)
                };
                let mut above_root = false;
                while tokens.get(j).is_some_and(|t| t.text == "super")
                    && tokens.get(j + 1).is_some_and(|t| t.text == "::")
                {
                    above_root |= base.pop().is_none();
                    j += 2;
                }
                if above_root {
                    scan.unresolved.push((line, written));
                } else if base.is_empty() {
                    let names = root_names(&tokens, j);
                    if names.is_empty() || names.iter().any(|n| !is_ident(n)) {
                        scan.unresolved.push((line, written.clone()));
                    }
                    for name in names.into_iter().filter(|n| is_ident(n)) {
                        scan.references.push((vec![name], line, written.clone()));
                    }
                } else {
                    scan.references.push((base, line, written));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// The file of module `module` (`[]` is the crate root), if it exists.
fn module_file(root: &Path, module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return Some(root.join("lib.rs"));
    }
    let dir: PathBuf = module.iter().collect();
    let flat = root.join(&dir).with_extension("rs");
    let nested = root.join(&dir).join("mod.rs");
    [flat, nested].into_iter().find(|p| p.is_file())
}

/// Walks the crate under `root` (a `src` directory with a `lib.rs`) from its root through its
/// non-test `mod` declarations, and collects every reference between top-level modules.
fn scan_crate(root: &Path) -> Scan {
    let mut result = Scan::default();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(module) = pending.pop() {
        let Some(file) = module_file(root, &module) else {
            result.problems.push(format!(
                "module `{}` is declared but has no file",
                module.join("::")
            ));
            continue;
        };
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let source = match std::fs::read_to_string(&file) {
            Ok(source) => source,
            Err(e) => {
                result.problems.push(format!("{relative}: {e}"));
                continue;
            }
        };
        let scan = scan_file(&source, &module);
        for child in scan.children {
            let mut path = module.clone();
            path.push(child);
            if module.is_empty() {
                result.modules.insert(path[0].clone());
            }
            pending.push(path);
        }
        for (line, text) in scan.unresolved {
            result.problems.push(format!(
                "{relative}:{line}: `{text}` does not name a module of the crate"
            ));
        }
        // The crate root declares and re-exports modules; it is above every layer.
        if module.is_empty() {
            continue;
        }
        for (target, line, text) in scan.references {
            result.imports.push(Import {
                from: module[0].clone(),
                to: target[0].clone(),
                file: relative.clone(),
                line,
                text,
            });
        }
    }
    result
        .imports
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    result
}

// ---------------------------------------------------------------------------------------------
// Checking

/// Every fault of the scanned crate against [`LAYERS`]: references to names that are not
/// top-level modules, modules without a layer, imports of a higher layer, and cycles.
fn faults(scan: &Scan) -> Vec<String> {
    let mut faults = scan.problems.clone();
    for module in &scan.modules {
        if layer_of(module).is_none() {
            faults.push(format!(
                "module `{module}` has no layer: add it to LAYERS in engine/tests/layering.rs \
                 and to the table in ARCHITECTURE.md"
            ));
        }
    }
    let mut graph: BTreeMap<&str, BTreeMap<&str, &Import>> = BTreeMap::new();
    for import in &scan.imports {
        if import.from == import.to {
            continue;
        }
        if !scan.modules.contains(&import.to) {
            faults.push(format!(
                "{}:{}: `{}` goes through the crate root, not a module: import it from its \
                 module so the layering can be checked",
                import.file, import.line, import.text
            ));
            continue;
        }
        let (Some(from), Some(to)) = (layer_of(&import.from), layer_of(&import.to)) else {
            continue;
        };
        if to > from {
            faults.push(format!(
                "{}:{}: `{}` (layer {}, {}) imports `{}` (layer {}, {}): `{}`",
                import.file,
                import.line,
                import.from,
                from + 1,
                LAYERS[from].0,
                import.to,
                to + 1,
                LAYERS[to].0,
                import.text
            ));
        }
        graph
            .entry(import.from.as_str())
            .or_default()
            .entry(import.to.as_str())
            .or_insert(import);
    }
    faults.extend(cycles(&graph));
    faults
}

/// One message per cycle found by a depth-first search of `graph`, naming each import on it.
fn cycles(graph: &BTreeMap<&str, BTreeMap<&str, &Import>>) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Open,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeMap<&'a str, &Import>>,
        state: &mut BTreeMap<&'a str, State>,
        stack: &mut Vec<&'a str>,
        found: &mut Vec<String>,
    ) {
        state.insert(node, State::Open);
        stack.push(node);
        for (&next, _) in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(State::Open) => {
                    let start = stack.iter().position(|&n| n == next).unwrap_or(0);
                    let mut path: Vec<&str> = stack[start..].to_vec();
                    path.push(next);
                    let edges: Vec<String> = path
                        .windows(2)
                        .map(|w| {
                            let import = graph[w[0]][w[1]];
                            format!("{}:{}: `{}`", import.file, import.line, import.text)
                        })
                        .collect();
                    found.push(format!("cycle {}: {}", path.join(" → "), edges.join("; ")));
                }
                Some(State::Done) => {}
                None => visit(next, graph, state, stack, found),
            }
        }
        stack.pop();
        state.insert(node, State::Done);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for &node in graph.keys() {
        if !state.contains_key(node) {
            visit(node, graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The checks

fn engine_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn engine_modules_are_layered_without_cycles() {
    let scan = scan_crate(&engine_src());
    let mut faults = faults(&scan);
    for (_, modules) in LAYERS {
        for module in *modules {
            if !scan.modules.contains(*module) {
                faults.push(format!(
                    "LAYERS lists `{module}`, which engine/src does not declare: remove it \
                     here and in ARCHITECTURE.md"
                ));
            }
        }
    }
    assert!(
        faults.is_empty(),
        "engine module layering (ARCHITECTURE.md, \"Engine modules\"):\n  {}",
        faults.join("\n  ")
    );
    let between = scan.imports.iter().filter(|i| i.from != i.to).count();
    println!(
        "{} engine modules in {} layers, {between} references between modules, no upward \
         import, no cycle",
        scan.modules.len(),
        LAYERS.len()
    );
}

/// The table under "Engine modules" in ARCHITECTURE.md: rows `| n | name | `a`, `b` |`.
fn documented_layers(text: &str) -> Vec<(String, Vec<String>)> {
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Engine modules"))
        .unwrap_or("");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let [number, name, modules] = cells.as_slice() else {
                return None;
            };
            number.trim().parse::<usize>().ok()?;
            let modules = modules
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_string())
                .collect();
            Some((name.trim().to_string(), modules))
        })
        .collect()
}

#[test]
fn architecture_md_lists_the_same_layers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("ARCHITECTURE.md is readable");
    let expected: Vec<(String, Vec<String>)> = LAYERS
        .iter()
        .map(|(name, modules)| {
            (
                name.to_string(),
                modules.iter().map(|m| m.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        documented_layers(&text),
        expected,
        "the layer table of ARCHITECTURE.md (\"Engine modules\") differs from LAYERS in \
         engine/tests/layering.rs"
    );
}

// ---------------------------------------------------------------------------------------------
// The check itself, on small made-up crates

/// Writes `files` (path relative to `src`, contents) into a new temporary `src` directory.
fn crate_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, contents) in files {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the directory");
        }
        std::fs::write(&path, contents).expect("write the file");
    }
    dir
}

fn faults_of(files: &[(&str, &str)]) -> Vec<String> {
    let dir = crate_of(files);
    faults(&scan_crate(dir.path()))
}

#[test]
fn an_upward_import_is_reported_with_its_file_and_path() {
    // What the engine had before its layering: the exact first stage took `Admit` from the
    // filter compilation, which sits above the index.
    let faults = faults_of(&[
        ("lib.rs", "pub mod filter;\npub mod sparse;\n"),
        ("filter.rs", "pub struct Admit;\n"),
        (
            "sparse.rs",
            "//! Uses crate::segment only in a comment.\n\nuse crate::filter::Admit;\n",
        ),
    ]);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].starts_with("sparse.rs:3: `sparse` (layer 4, index parts) imports `filter`")
            && faults[0].ends_with("`crate::filter::Admit`"),
        "{}",
        faults[0]
    );
}

#[test]
fn a_cycle_within_a_layer_is_reported() {
    let faults = faults_of(&[
        ("lib.rs", "pub mod approx;\nmod sparse;\n"),
        ("approx/mod.rs", "mod search;\npub struct A;\n"),
        (
            "approx/search.rs",
            "fn f() -> crate::sparse::S { todo!() }\nuse super::A;\n",
        ),
        (
            "sparse.rs",
            "pub struct S;\nuse crate::{approx::A, error};\n",
        ),
    ]);
    assert!(
        faults
            .iter()
            .any(|f| f.starts_with("cycle approx → sparse → approx")
                && f.contains("approx/search.rs:1: `crate::sparse::S`")
                && f.contains("sparse.rs:2: `crate::{approx::A, error}`")),
        "{faults:?}"
    );
}

#[test]
fn test_code_comments_and_strings_are_ignored() {
    let faults = faults_of(&[
        (
            "lib.rs",
            "pub mod topk;\n#[cfg(test)]\nmod helpers;\npub mod pipeline;\n",
        ),
        ("helpers.rs", "use crate::pipeline::Query;\n"),
        ("pipeline.rs", "pub struct Query;\n"),
        (
            "topk.rs",
            concat!(
                "/* crate::pipeline /* nested */ crate::pipeline */\n",
                "const A: &str = \"crate::pipeline::Query\";\n",
                "const B: &str = r#\"crate::pipeline\"#;\n",
                "const C: char = '\\'';\n",
                "fn f<'a>(x: &'a str) -> &'a str { x }\n",
                "#[cfg(test)]\n",
                "mod tests {\n    use crate::pipeline::Query;\n    mod inner { }\n}\n",
                "#[cfg(all(test, feature = \"x\"))]\nuse crate::pipeline::Query as Q;\n",
            ),
        ),
    ]);
    assert!(faults.is_empty(), "{faults:?}");
}

#[test]
fn super_paths_resolve_through_inline_modules_and_the_root_is_refused() {
    let faults = faults_of(&[
        (
            "lib.rs",
            "pub mod tokens;\npub mod index;\npub use index::Segment;\n",
        ),
        ("index.rs", "pub struct Segment;\n"),
        (
            "tokens.rs",
            concat!(
                "pub mod files {\n    pub use super::Store;\n}\n",
                "pub struct Store;\n",
                "mod inner {\n    use super::super::index::Segment;\n}\n",
                "fn f() -> crate::Segment { todo!() }\n",
            ),
        ),
    ]);
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(
        faults[0].starts_with("tokens.rs:6: `tokens` (layer 4, index parts) imports `index`"),
        "{}",
        faults[0]
    );
    assert!(
        faults[1].starts_with("tokens.rs:8: `crate::Segment` goes through the crate root"),
        "{}",
        faults[1]
    );
}
