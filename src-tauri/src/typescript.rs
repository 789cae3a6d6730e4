//! `ui/src/generated.ts`: the window's whole side of the app, generated from
//! the Rust side so the two languages cannot drift apart:
//! - the TypeScript declarations of what the window gets from the app (the
//!   [`Snapshot`], the [`View`] pushed on every change, the [`Settings`] it
//!   saves), from the Rust types with ts-rs. The lower crates derive `TS`
//!   behind their `typescript` feature, which only this crate's tests switch on;
//! - a typed function per command, read (with syn) from `commands.rs`: its
//!   `#[tauri::command]` functions and the list in `commands::handler`;
//! - an `on<Name>` listener per event, read from the constants in `events.rs`.
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
    out.visit::<kubesocks_managed::control::ConnectionActivity>();
    let mut text = format!(
        "// The window's side of the app: the types it gets, the commands it calls\n\
         // and the events it listens for, generated from their Rust definitions by\n\
         // src-tauri/src/typescript.rs. Do not edit: after changing one of those, run\n\
         //   {BLESS}\n\
         \n\
         import {{ invoke }} from \"@tauri-apps/api/core\";\n\
         import {{ listen, type UnlistenFn }} from \"@tauri-apps/api/event\";\n"
    );
    for decl in out.decls.values() {
        text.push('\n');
        text.push_str(decl);
    }
    let known = |name: &str| out.decls.contains_key(name);
    text.push_str("\n// The commands (src-tauri/src/commands.rs).\n");
    for command in seams::commands(include_str!("commands.rs"), &known) {
        text.push('\n');
        text.push_str(&command);
    }
    text.push_str("\n// The events the app pushes (src-tauri/src/events.rs).\n");
    for event in seams::events(include_str!("events.rs"), &known) {
        text.push('\n');
        text.push_str(&event);
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
    if !head.trim_end().ends_with('=') || tail.trim() != ";" || !balanced(body) {
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

/// Whether the braces in `body` never close more than they opened: the
/// outer braces are one object's, not the ends of a union of objects
/// (`{ a } | { b }`), which is left as ts-rs wrote it.
fn balanced(body: &str) -> bool {
    let mut depth = 0i32;
    for b in body.bytes() {
        match b {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
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

/// The commands and events, read from their Rust source.
mod seams {
    use syn::{Expr, FnArg, GenericArgument, Item, Lit, Pat, PathArguments, ReturnType, Type};

    /// A `/** ... */` block from `///` lines, or nothing.
    fn docs(attrs: &[syn::Attribute]) -> String {
        let lines: Vec<String> = attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .filter_map(|a| match &a.meta {
                syn::Meta::NameValue(nv) => match &nv.value {
                    Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Some(s.value().trim().to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        if lines.is_empty() {
            return String::new();
        }
        super::jsdoc(&format!("/**\n{}\n*/", lines.join("\n")), "")
    }

    fn camel(snake: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in snake.chars() {
            match c {
                '_' => upper = true,
                c if upper => {
                    out.extend(c.to_uppercase());
                    upper = false;
                }
                c => out.push(c),
            }
        }
        out
    }

    fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
        match ty {
            Type::Path(p) => p.path.segments.last(),
            _ => None,
        }
    }

    /// The type's single (or first) generic argument, as in `Vec<T>`.
    fn generic(segment: &syn::PathSegment, index: usize) -> &Type {
        let PathArguments::AngleBracketed(args) = &segment.arguments else {
            panic!("{} has no type arguments", segment.ident)
        };
        match args.args.iter().filter(|a| matches!(a, GenericArgument::Type(_))).nth(index) {
            Some(GenericArgument::Type(ty)) => ty,
            _ => panic!("{} lacks type argument {index}", segment.ident),
        }
    }

    /// The TypeScript for a Rust type that crosses the seam as JSON.
    fn ts(ty: &Type, known: &dyn Fn(&str) -> bool) -> String {
        match ty {
            Type::Reference(r) => ts(&r.elem, known),
            Type::Tuple(t) if t.elems.is_empty() => "void".into(),
            _ => {
                let segment =
                    last_segment(ty).unwrap_or_else(|| panic!("a command uses a type the generator does not map"));
                let name = segment.ident.to_string();
                match name.as_str() {
                    "String" | "str" => "string".into(),
                    "bool" => "boolean".into(),
                    "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" | "f32" | "f64" => {
                        "number".into()
                    }
                    "Option" => format!("{} | null", ts(generic(segment, 0), known)),
                    "Vec" => format!("Array<{}>", ts(generic(segment, 0), known)),
                    _ if known(&name) => name,
                    _ => panic!(
                        "{name} crosses to the window but has no TypeScript declaration: add it to the roots in render()"
                    ),
                }
            }
        }
    }

    /// What a command's promise resolves with: `Result<T, String>` rejects
    /// with the text instead.
    fn resolves(output: &ReturnType, known: &dyn Fn(&str) -> bool) -> String {
        let ReturnType::Type(_, ty) = output else { return "void".into() };
        match last_segment(ty) {
            Some(s) if s.ident == "Result" => {
                let error = generic(s, 1);
                assert!(
                    last_segment(error).is_some_and(|e| e.ident == "String"),
                    "a command's error must be a String: the window shows it as the reason"
                );
                ts(generic(s, 0), known)
            }
            _ => ts(ty, known),
        }
    }

    /// Arguments Tauri fills in itself, not the window.
    fn injected(ty: &Type) -> bool {
        last_segment(ty)
            .is_some_and(|s| ["AppHandle", "State", "Window", "WebviewWindow"].contains(&s.ident.to_string().as_str()))
    }

    /// The names listed in `handler`'s `generate_handler!`.
    fn registered(file: &syn::File) -> Vec<String> {
        let handler = file.items.iter().find_map(|item| match item {
            Item::Fn(f) if f.sig.ident == "handler" => Some(f),
            _ => None,
        });
        let handler = handler.expect("commands.rs has no fn handler()");
        let mac = handler.block.stmts.iter().find_map(|stmt| match stmt {
            syn::Stmt::Macro(m) => Some(&m.mac),
            syn::Stmt::Expr(Expr::Macro(m), _) => Some(&m.mac),
            _ => None,
        });
        let mac = mac.expect("handler() does not end in generate_handler![...]");
        let paths = mac
            .parse_body_with(syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated)
            .expect("generate_handler! lists command paths");
        paths.iter().map(|p| p.segments.last().unwrap().ident.to_string()).collect()
    }

    /// One `export const name = (...): Promise<T> => invoke(...)` per command.
    pub fn commands(source: &str, known: &dyn Fn(&str) -> bool) -> Vec<String> {
        let file = syn::parse_file(source).expect("commands.rs parses");
        let registered = registered(&file);
        let mut out = Vec::new();
        let mut defined = Vec::new();
        for item in &file.items {
            let Item::Fn(f) = item else { continue };
            let is_command = f.attrs.iter().any(|a| a.path().segments.last().is_some_and(|s| s.ident == "command"));
            if !is_command {
                continue;
            }
            let name = f.sig.ident.to_string();
            let mut params = Vec::new();
            let mut keys = Vec::new();
            for input in &f.sig.inputs {
                let FnArg::Typed(arg) = input else { panic!("command {name} takes self") };
                if injected(&arg.ty) {
                    continue;
                }
                let Pat::Ident(ident) = &*arg.pat else { panic!("command {name}: an argument is a pattern") };
                // Tauri's invoke keys are the arguments' names in camelCase.
                let key = camel(&ident.ident.to_string());
                params.push(format!("{key}: {}", ts(&arg.ty, known)));
                keys.push(key);
            }
            let payload = if keys.is_empty() { String::new() } else { format!(", {{ {} }}", keys.join(", ")) };
            out.push(format!(
                "{}export const {} = ({}): Promise<{}> => invoke(\"{name}\"{payload});\n",
                docs(&f.attrs),
                camel(&name),
                params.join(", "),
                resolves(&f.sig.output, known),
            ));
            defined.push(name);
        }
        let (mut a, mut b) = (defined.clone(), registered.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "commands.rs: the #[tauri::command] functions and the list in handler() differ");
        out
    }

    /// One `export const on<Name> = (handler) => listen(...)` per event.
    pub fn events(source: &str, known: &dyn Fn(&str) -> bool) -> Vec<String> {
        let file = syn::parse_file(source).expect("events.rs parses");
        let mut out = Vec::new();
        for item in &file.items {
            let Item::Const(c) = item else { continue };
            let Some(segment) = last_segment(&c.ty).filter(|s| s.ident == "Event") else { continue };
            let payload = ts(generic(segment, 0), known);
            let name = match &*c.expr {
                Expr::Call(call) => match call.args.first() {
                    Some(Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. })) => s.value(),
                    _ => panic!("events.rs: {} is not Event::new(\"name\")", c.ident),
                },
                _ => panic!("events.rs: {} is not Event::new(\"name\")", c.ident),
            };
            let listener = format!("on{}", camel(&format!("_{name}")));
            out.push(format!(
                "{}export const {listener} = (handler: (payload: {payload}) => void): Promise<UnlistenFn> =>\n  \
                 listen<{payload}>(\"{name}\", (event) => handler(event.payload));\n",
                docs(&c.attrs),
            ));
        }
        assert!(!out.is_empty(), "events.rs declares no Event constant");
        out
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

    const COMMANDS: &str = r#"
        pub fn handler() -> impl Fn(Invoke) -> bool { tauri::generate_handler![look_up, forget] }
        /// Looks a name up.
        #[tauri::command]
        pub async fn look_up(app: AppHandle, host_name: String, ports: Vec<u16>, ns: Option<String>) -> Result<Row, String> { todo!() }
        #[tauri::command]
        pub fn forget(app: AppHandle) {}
        pub fn helper() {}
    "#;

    #[test]
    fn commands_become_typed_functions_without_what_tauri_fills_in() {
        let known = |name: &str| name == "Row";
        assert_eq!(
            seams::commands(COMMANDS, &known),
            [
                "/** Looks a name up. */\nexport const lookUp = (hostName: string, ports: Array<number>, ns: string | null): Promise<Row> => invoke(\"look_up\", { hostName, ports, ns });\n",
                "export const forget = (): Promise<void> => invoke(\"forget\");\n",
            ]
        );
    }

    #[test]
    #[should_panic(expected = "the #[tauri::command] functions and the list in handler() differ")]
    fn a_command_the_handler_does_not_list_is_refused() {
        seams::commands(&COMMANDS.replace("[look_up, forget]", "[look_up]"), &|name| name == "Row");
    }

    #[test]
    #[should_panic(expected = "Row crosses to the window but has no TypeScript declaration")]
    fn a_type_without_a_declaration_is_refused() {
        seams::commands(COMMANDS, &|_| false);
    }

    #[test]
    fn events_become_typed_listeners() {
        let source =
            "/// Pushed.\npub const SOME_THING: Event<Vec<Row>> = Event::new(\"some_thing\");\nconst OTHER: u8 = 1;";
        assert_eq!(
            seams::events(source, &|name| name == "Row"),
            [
                "/** Pushed. */\nexport const onSomeThing = (handler: (payload: Array<Row>) => void): Promise<UnlistenFn> =>\n  listen<Array<Row>>(\"some_thing\", (event) => handler(event.payload));\n"
            ]
        );
    }

    #[test]
    fn object_types_get_a_line_per_field_with_its_docs() {
        let decl = "type A = { \n/**\n * The name, first.\n */\nname: string, b: { c: number, d: \"x, y\" }, \n/**\n * Two\n * lines.\n */\ne: Array<string> | null, };";
        assert_eq!(
            pretty(decl),
            "type A = {\n  /** The name, first. */\n  name: string,\n  b: { c: number, d: \"x, y\" },\n  /**\n   * Two\n   * lines.\n   */\n  e: Array<string> | null,\n};"
        );
        assert_eq!(pretty("type S = \"off\" | \"on\";"), "type S = \"off\" | \"on\";", "unions stay as they are");
        let tagged = "type H = { \"state\": \"a\" } | { \"state\": \"b\", since: number, };";
        assert_eq!(pretty(tagged), tagged, "so do unions of objects");
    }
}
