//! `ui/src/generated.ts`: the TypeScript declarations of what the window gets
//! from the app (the [`Snapshot`], the [`View`] pushed on every change, the
//! [`Settings`] it saves), generated from the Rust types with ts-rs, so the
//! two languages cannot drift apart. The lower crates derive `TS` behind
//! their `typescript` feature, which only this crate's tests switch on.
//!
//! The test below regenerates the text and fails when the committed file
//! differs; with `KUBESOCKS_BLESS=1` it writes the file instead.

use std::any::TypeId;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use ts_rs::{Config, TS, TypeVisitor};

use crate::commands::Snapshot;
use crate::settings::Settings;
use crate::view::View;

/// The command that refreshes the file.
const BLESS: &str = "KUBESOCKS_BLESS=1 cargo test -p kubesocks-tray generated";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/src/generated.ts")
}

/// The whole file: the roots and every type they use, each declared once,
/// sorted by name (ts-rs visits dependencies in no fixed order).
fn render() -> String {
    // JSON numbers are JavaScript numbers: the counters (u64) stay below 2^53.
    let cfg = Config::new().with_large_int("number");
    let mut out = Declarations { cfg, seen: HashSet::new(), decls: BTreeMap::new() };
    out.visit::<Snapshot>();
    out.visit::<View>();
    out.visit::<Settings>();
    let mut text = format!(
        "// The types the window gets from the app, generated from their Rust\n\
         // definitions by src-tauri/src/typescript.rs. Do not edit: after changing\n\
         // one of those types, run\n\
         //   {BLESS}\n"
    );
    for decl in out.decls.values() {
        text.push('\n');
        text.push_str(decl);
    }
    text
}

struct Declarations {
    cfg: Config,
    seen: HashSet<TypeId>,
    /// Each type's declaration, by name.
    decls: BTreeMap<String, String>,
}

impl TypeVisitor for Declarations {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        // Primitives and containers have no declaration of their own.
        if T::output_path().is_none() || !self.seen.insert(TypeId::of::<T>()) {
            return;
        }
        let mut decl = T::docs().map(|docs| jsdoc(&docs, "")).unwrap_or_default();
        decl.push_str("export ");
        decl.push_str(&pretty(&T::decl(&self.cfg)));
        decl.push('\n');
        self.decls.insert(T::ident(&self.cfg), decl);
        T::visit_dependencies(self);
    }
}

/// ts-rs declares an object type on one line, its fields' doc comments
/// inline; this puts each field on a line of its own, its docs above it.
/// Anything but `type X = { ... };` is left as it is.
fn pretty(decl: &str) -> String {
    let (Some(open), Some(close)) = (decl.find('{'), decl.rfind('}')) else { return decl.into() };
    let (head, body, tail) = (&decl[..open], &decl[open + 1..close], &decl[close + 1..]);
    if !head.trim_end().ends_with('=') || tail.trim() != ";" {
        return decl.into();
    }
    let mut out = format!("{}{{\n", head);
    for member in split_members(body) {
        let (docs, field) = match member.strip_prefix("/**").and_then(|rest| rest.split_once("*/")) {
            Some((docs, field)) => (Some(format!("/**{docs}*/")), field.trim()),
            None => (None, member),
        };
        if let Some(docs) = docs {
            out.push_str(&jsdoc(&docs, "  "));
        }
        out.push_str(&format!("  {field},\n"));
    }
    out.push_str("};");
    out
}

/// The members of an object type's body: split at the commas outside any
/// nested type, string or comment; trimmed, empty ones dropped.
fn split_members(body: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut depth, mut start, mut in_string, mut in_comment) = (0usize, 0, false, false);
    let bytes = body.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if in_comment => in_comment = !(b == b'/' && i > 0 && bytes[i - 1] == b'*'),
            b'"' => in_string = !in_string,
            _ if in_string => {}
            b'/' if bytes.get(i + 1) == Some(&b'*') => in_comment = true,
            b'{' | b'[' | b'(' | b'<' => depth += 1,
            b'}' | b']' | b')' | b'>' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                members.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(body[start..].trim());
    members.retain(|m| !m.is_empty());
    members
}

/// A `/** ... */` comment re-indented: on one line when its text is one line.
fn jsdoc(comment: &str, indent: &str) -> String {
    let inner = comment.trim().trim_start_matches("/**").trim_end_matches("*/");
    let lines: Vec<&str> = inner.lines().map(|l| l.trim().trim_start_matches('*').trim()).collect();
    let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(lines.len());
    let last = lines.iter().rposition(|l| !l.is_empty()).map_or(first, |i| i + 1);
    match &lines[first..last] {
        [one] => format!("{indent}/** {one} */\n"),
        many => {
            let body: String = many
                .iter()
                .map(|l| if l.is_empty() { format!("{indent} *\n") } else { format!("{indent} * {l}\n") })
                .collect();
            format!("{indent}/**\n{body}{indent} */\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_typescript_matches_the_rust_types() {
        let fresh = render();
        let path = path();
        if std::env::var_os("KUBESOCKS_BLESS").is_some() {
            std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != fresh {
            let line = committed
                .lines()
                .zip(fresh.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
            panic!(
                "ui/src/generated.ts is stale: it differs from the Rust types from line {} on\n  file:      {:?}\n  generated: {:?}\nRefresh it with\n  {BLESS}\nand commit it.",
                line + 1,
                committed.lines().nth(line).unwrap_or("<end of file>"),
                fresh.lines().nth(line).unwrap_or("<end of file>"),
            );
        }
    }

    #[test]
    fn object_types_get_a_line_per_field_with_its_docs() {
        let decl = "type A = { \n/**\n * The name, first.\n */\nname: string, b: { c: number, d: \"x, y\" }, \n/**\n * Two\n * lines.\n */\ne: Array<string> | null, };";
        assert_eq!(
            pretty(decl),
            "type A = {\n  /** The name, first. */\n  name: string,\n  b: { c: number, d: \"x, y\" },\n  /**\n   * Two\n   * lines.\n   */\n  e: Array<string> | null,\n};"
        );
        assert_eq!(pretty("type S = \"off\" | \"on\";"), "type S = \"off\" | \"on\";", "unions stay as they are");
    }
}
