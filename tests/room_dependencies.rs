//! The import direction between the rooms of `src/` (see ARCHITECTURE.md).
//!
//! A room is a top-level module of the crate: `src/R.rs` and everything under `src/R/` belong to
//! room `R`. [`ROOMS`] lists them top to bottom. A file may import its own room and the rooms
//! listed BELOW its own, never one above: a room that imports the room above it makes a cycle,
//! and a change in the upper room then ripples down through everything beneath it. The leaves
//! at the bottom may be imported by anyone; a leaf imports only leaves further down, so the
//! leaves cannot form a cycle among themselves either.
//!
//! What counts as an import: every `crate::X` in code (`use` trees, grouped ones over several
//! lines included, `pub use`, `use crate::x as y`, inline paths in expressions, types and
//! attributes), string literals included, because `#[serde(with = "crate::config::duration")]`
//! is a real dependency. Comments do not count (doc-links in `///` and `//!` included).
//!
//! Exempt: the crate root (`src/lib.rs`, `src/main.rs`), and test and bench modules: files
//! named `tests.rs`, `*_tests.rs` or `bench.rs`, and files under a `tests/` folder of `src/`.
//! Nothing in the crate imports those, so they cannot close a cycle; a test may reach any room.
//! Test code inside an ordinary file (`#[cfg(test)] mod tests { .. }`) is NOT exempt.
//!
//! Limitations (a plain scanner, no `syn`): `super::` paths that climb out of a room are not
//! seen; `crate::X` where `X` is no module (an item of the crate root) is ignored; a string
//! literal that merely mentions `crate::x` in prose would count; char literals and raw strings
//! are recognised well enough for this code base, not to the full grammar.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The rooms, top to bottom: an edge may only point to a later entry or stay in its room.
/// Keep in step with ARCHITECTURE.md. A room that does not exist yet is fine.
#[rustfmt::skip]
const ROOMS: &[(&str, &str)] = &[
    ("cli",          "argument parsing, printing, one-shot commands"),
    ("daemon",       "wiring: starts tasks, connects channels, signals, reload"),
    ("service",      "local HTTP: status page, /metrics, trace, one-shot reads"),
    ("control",      "fee-control commands: verify, policy, audit, hand to the bus"),
    ("uplink",       "MQTT session, publish window, PUBACK -> ack"),
    ("ingest",       "validation -> spool hand-off, group commit, last-good registers"),
    ("spool",        "SQLite outbox and per-meter state"),
    ("health",       "per-meter/bus counters, success rate, MeterHealth"),
    ("bus",          "one task per physical bus: transports, exchange, schedule"),
    ("meter",        "sans-IO drivers: which frames to send, how to read replies"),
    ("sim",          "the meter simulator"),
    // --- leaves (anyone may import them; a leaf imports only leaves further down this list) ---
    ("config",       "configuration types and parsing"),
    ("logging",      "tracing subscriber set-up"),
    ("startup_code", "unmapping start-up code"),
    ("serial_port",  "opening a serial port with errors a technician understands"),
    ("hex_input",    "hex text -> bytes"),
    ("suggest",      "did you mean: the known names closest to a typo"),
    ("reading",      "reading batch types, quantities"),
    ("clock",        "wall-clock time: RFC 3339, Unix milliseconds, UTC calendar"),
    ("sync",         "the one poison-tolerant lock helper"),
];

/// The first leaf of [`ROOMS`].
const FIRST_LEAF: &str = "config";

fn rank(room: &str) -> Option<usize> {
    ROOMS.iter().position(|(name, _)| *name == room)
}

fn is_leaf(room: &str) -> bool {
    rank(room) >= rank(FIRST_LEAF)
}

/// `source` with every comment blanked out (newlines kept, so offsets and lines stay put).
/// String, raw-string and char literals are copied as they are: `"http://x"` is no comment.
fn strip_comments(source: &str) -> Vec<u8> {
    let b = source.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |i: usize| i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (start, mut depth) = (i, 0);
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    (depth, i) = (depth + 1, i + 2);
                } else if b[i..].starts_with(b"*/") {
                    (depth, i) = (depth - 1, i + 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            blank(&mut out, start, i.min(b.len()));
        } else if b[i] == b'r' && !ident(i) && matches!(b.get(i + 1), Some(b'"' | b'#')) {
            // A raw string r"..." or r#"..."#: ends at a quote followed by as many hashes.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1; // r#ident, not a string
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(vec![b'#'; hashes]).collect();
            let body = i + 2 + hashes;
            i = b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |n| body + n + close.len());
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '"', '\'', '→') is skipped whole; otherwise a lifetime.
            let next = source[i + 1..].chars().next().map_or(1, char::len_utf8);
            if b.get(i + 1) == Some(&b'\\') {
                i += 2 + b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map_or(0, |n| n + 1);
            } else if b.get(i + 1 + next) == Some(&b'\'') {
                i += 2 + next;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn ident_at(code: &[u8], i: usize) -> &str {
    let n = code[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    std::str::from_utf8(&code[i..i + n]).expect("an ASCII identifier")
}

/// Every `crate::X` in `source` as (1-based line, first segment `X`). A grouped tree
/// `crate::{a::b, c::{d, e}}` gives one entry per head (`a`, `c`), each at its own line.
fn extract(source: &str) -> Vec<(usize, String)> {
    let code = strip_comments(source);
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            code.iter()
                .enumerate()
                .filter(|(_, c)| **c == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let line_of = |i: usize| line_starts.partition_point(|&start| start <= i);
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip_ws = |mut i: usize| {
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut edges = Vec::new();
    let mut push = |i: usize, name: &str| {
        if !matches!(name, "" | "self" | "super") {
            edges.push((line_of(i), name.to_owned()));
        }
    };
    let mut from = 0;
    while let Some(n) = code[from..].windows(7).position(|w| w == b"crate::") {
        let at = from + n;
        from = at + 7;
        if at > 0 && is_ident(code[at - 1]) {
            continue; // my_crate::x
        }
        let mut i = skip_ws(from);
        if code.get(i) != Some(&b'{') {
            if i < code.len() {
                push(i, ident_at(&code, i));
            }
            continue;
        }
        // A grouped tree: the head of each item at depth 1.
        let (mut depth, mut item_start) = (1, true);
        i += 1;
        while i < code.len() && depth > 0 {
            i = skip_ws(i);
            match code.get(i) {
                Some(b'{') => depth += 1,
                Some(b'}') => depth -= 1,
                Some(b',') if depth == 1 => item_start = true,
                Some(c) if is_ident(*c) => {
                    let name = ident_at(&code, i);
                    if item_start && depth == 1 {
                        push(i, name);
                    }
                    item_start = false;
                    i += name.len();
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
    edges
}

/// The room of a file relative to the repository root, or `None` for exempt files.
fn room_of(path: &str) -> Option<&str> {
    let parts: Vec<&str> = path.strip_prefix("src/")?.split('/').collect();
    let file = parts.last()?;
    let root = parts.len() == 1 && matches!(*file, "lib.rs" | "main.rs");
    let test_or_bench = matches!(*file, "tests.rs" | "bench.rs")
        || file.ends_with("_tests.rs")
        || parts[..parts.len() - 1].contains(&"tests");
    let exempt = root || test_or_bench;
    (!exempt).then(|| parts[0].strip_suffix(".rs").unwrap_or(parts[0]))
}

fn below(room: &str) -> String {
    let r = rank(room).expect("a room in the table");
    let lower = ROOMS[r + 1..].iter().map(|(name, _)| *name);
    if is_leaf(room) {
        let leaves = lower.collect::<Vec<_>>().join(", ");
        let leaves = if leaves.is_empty() {
            "nothing"
        } else {
            &leaves
        };
        return format!("{room} is a leaf and may import only the leaves below it: {leaves}");
    }
    let rooms: Vec<&str> = lower.filter(|name| !is_leaf(name)).collect();
    let list = match rooms.len() {
        0 => String::new(),
        1 => format!("{} and ", rooms[0]),
        _ => rooms.join(", ") + ", and ",
    };
    format!("{room} may import only rooms below it: {list}the leaves")
}

/// Checks `files` (path relative to the repository root, contents) against [`ROOMS`].
/// Returns the violations sorted by file and line, as (file, line, message line); line 0 for a
/// module that is in no room.
fn check(files: &[(String, String)]) -> Vec<(String, usize, String)> {
    let modules: BTreeSet<&str> = files.iter().filter_map(|(p, _)| room_of(p)).collect();
    let mut violations = BTreeSet::new();
    for module in modules.iter().filter(|m| rank(m).is_none()) {
        let shown = [format!("src/{module}.rs"), format!("src/{module}/mod.rs")]
            .into_iter()
            .find(|p| files.iter().any(|(f, _)| f == p))
            .unwrap_or_else(|| format!("src/{module}/"));
        let text = format!(
            "{shown} is in no room: add it to the table in tests/room_dependencies.rs and \
             ARCHITECTURE.md"
        );
        violations.insert((shown, 0, text));
    }
    for (path, source) in files {
        let Some(from) = room_of(path) else { continue };
        // A module in no room was reported above, its edges are not ranked.
        let Some(from_rank) = rank(from) else {
            continue;
        };
        for (line, to) in extract(source) {
            let why = match rank(&to) {
                _ if to == from => continue,
                None if !modules.contains(to.as_str()) => continue, // an item of the crate root
                None => format!("{to} is in no room"),
                Some(to_rank) if to_rank > from_rank => continue,
                Some(_) => format!("upward: {}", below(from)),
            };
            let text = format!("{path}:{line}: {from} -> {to} ({why})");
            violations.insert((path.clone(), line, text));
        }
    }
    violations.into_iter().collect()
}

fn report(violations: &[(String, usize, String)]) -> String {
    let unplaced = violations.iter().filter(|(_, line, _)| *line == 0).count();
    let mut lines: Vec<String> = violations.iter().map(|(_, _, text)| text.clone()).collect();
    lines.push(format!(
        "{} room dependency violation(s) ({} edges, {unplaced} modules in no room); \
         the rule is in tests/room_dependencies.rs and ARCHITECTURE.md",
        violations.len(),
        violations.len() - unplaced
    ));
    lines.join("\n")
}

fn read_tree(dir: &Path, root: &Path, files: &mut Vec<(String, String)>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            read_tree(&path, root, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let rel = path
                .strip_prefix(root)
                .expect("a file below the repository root");
            files.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

#[test]
fn rooms_import_only_downward() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    read_tree(&root.join("src"), root, &mut files);
    assert!(
        files.iter().any(|(p, _)| p == "src/lib.rs"),
        "no src/lib.rs under {root:?}"
    );
    let violations = check(&files);
    assert!(violations.is_empty(), "{}", report(&violations));
}

#[test]
fn table_names_each_room_once() {
    let names: BTreeSet<&str> = ROOMS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names.len(), ROOMS.len(), "a room listed twice");
    assert!(rank(FIRST_LEAF).is_some(), "FIRST_LEAF is in the table");
}

/// ARCHITECTURE.md states the same order in its code map ("The order is `cli`, … then the
/// leaves `config`, …"): the document and the enforced table cannot drift apart.
#[test]
fn architecture_md_states_the_same_order() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("reading ARCHITECTURE.md");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = flat
        .find("The order is ")
        .expect("ARCHITECTURE.md says \"The order is …\" in its code map");
    let sentence = &flat[start..];
    let end = sentence.find(". ").unwrap_or(sentence.len());
    let named: Vec<&str> = sentence[..end].split('`').skip(1).step_by(2).collect();
    let table: Vec<&str> = ROOMS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        named, table,
        "ARCHITECTURE.md's room order differs from ROOMS"
    );
}

/// The extracted edges of `source`, as `line:room` words.
fn heads(source: &str) -> String {
    let edges = extract(source)
        .into_iter()
        .map(|(line, name)| format!("{line}:{name}"));
    edges.collect::<Vec<_>>().join(" ")
}

#[test]
fn extract_nested_grouped_use_over_lines() {
    let source = "use std::fmt;\nuse crate::{\n    bus::task::{self, Task},\n    config::{\n        \
                  Config, duration,\n    },\n    reading,\n};\n";
    assert_eq!(heads(source), "3:bus 4:config 7:reading");
    assert_eq!(heads("pub(crate) use crate::{a::b, c::{d, e}};"), "1:a 1:c");
}

#[test]
fn extract_inline_paths_and_aliases() {
    let source = "let q = crate::reading::Quality::Bad;\npub use crate::clock as wall;\n\
                  fn f(x: &crate::sync::Lock) {}\nlet y = my_crate::bus::x; pub(crate) fn g() {}";
    assert_eq!(heads(source), "1:reading 2:clock 3:sync");
}

#[test]
fn extract_counts_serde_with_strings() {
    let source = "    #[serde(default, with = \"crate::config::duration\")]\n    pub t: Duration,";
    assert_eq!(heads(source), "1:config");
}

#[test]
fn extract_skips_comments_but_not_code_after_strings() {
    let source = "/// See [`crate::bus`].\n//! and crate::spool\nlet a = 1; // crate::health\n\
                  /* crate::uplink /* nested */ crate::cli */\n\
                  let u = format!(\"http://{}\", crate::service::DEFAULT_LISTEN);\n\
                  let q = '\"'; let r = r#\"say \"hi\" // no comment\"#; crate::sync::x();";
    assert_eq!(heads(source), "5:service 6:sync");
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

#[test]
fn synthetic_upward_edge_is_caught() {
    let tree = files(&[
        ("src/lib.rs", "pub use crate::health::MeterHealth;\n"),
        (
            "src/bus/task.rs",
            "//! [`crate::health`]\nuse crate::meter::Driver;\nuse crate::health::MeterHealth;\n",
        ),
        ("src/bus/tests.rs", "use crate::cli::Args;\n"),
        ("src/health.rs", "use crate::bus::BusId;\n"),
        ("src/meter/mod.rs", "use crate::meter::dlt645;\n"),
    ]);
    let violations = check(&tree);
    assert_eq!(violations.len(), 1, "{}", report(&violations));
    assert_eq!(
        violations[0].2,
        "src/bus/task.rs:3: bus -> health (upward: bus may import only rooms below it: meter, sim, \
         and the leaves)"
    );
}

#[test]
fn leaf_cycles_and_unplaced_modules_are_caught() {
    let tree = files(&[
        ("src/config/mod.rs", "use crate::clock::Clock;\n"),
        ("src/clock.rs", "\n#[serde(with = \"crate::config::x\")]\n"),
        ("src/foo.rs", "use crate::bus::Bus;\n"),
        ("src/meter/modbus.rs", "let f = crate::foo::x();\n"),
    ]);
    let texts: Vec<String> = check(&tree).into_iter().map(|v| v.2).collect();
    assert_eq!(
        texts,
        [
            "src/clock.rs:2: clock -> config (upward: clock is a leaf and may import only the \
             leaves below it: sync)",
            "src/foo.rs is in no room: add it to the table in tests/room_dependencies.rs and \
             ARCHITECTURE.md",
            "src/meter/modbus.rs:1: meter -> foo (foo is in no room)",
        ]
    );
}
