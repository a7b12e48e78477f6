//! The files of `src/` must import each other without a loop: a loop means none of its files
//! can be read, tested or moved without the others. An edge is any path from one file into a
//! module another file defines (`use`, `crate::x::f()`, `super::Error`, `lockguard::` in
//! main.rs); `mod x;` is structure, not an edge. IMPORTS_SRC checks another tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Token, UseTree};

/// (from file, to file) -> the names the first takes from the second.
type Edges = BTreeMap<(String, String), BTreeSet<String>>;

#[test]
fn imports_form_no_cycle() {
    let root =
        std::env::var("IMPORTS_SRC").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/src").into());
    let mut files = Vec::new();
    read_tree(Path::new(&root), Path::new(&root), &mut files);
    assert!(!files.is_empty(), "no .rs file under {root}");
    let edges = edges(&files);
    let cycles = cycles(&edges);
    assert!(cycles.is_empty(), "{}", report(&cycles, &edges));
    println!("imports: {} files, {} edges, no cycle", files.len(), edges.len());
}

/// Every `*.rs` under `dir`, as ("src/a/b.rs", source) whatever the root is called.
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.expect("cannot read a directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let rel = path.strip_prefix(root).expect("a file under the root");
            out.push((format!("src/{}", rel.to_string_lossy()), source));
        }
    }
}

/// "src/lib.rs" and "src/main.rs" -> [], "src/a/mod.rs" -> [a], "src/a/b.rs" -> [a, b].
fn module_of(file: &str) -> Vec<String> {
    let rel = file.trim_start_matches("src/").trim_end_matches(".rs");
    let rel = if matches!(rel, "lib" | "main") { "" } else { rel.strip_suffix("/mod").unwrap_or(rel) };
    rel.split('/').filter(|part| !part.is_empty()).map(String::from).collect()
}

/// The edges between `files`, given as ("src/a/b.rs", source).
fn edges<S: AsRef<str>>(files: &[(S, S)]) -> Edges {
    // main.rs is the root of another crate, not a module of the lib.
    let lib = files.iter().map(|(file, _)| file.as_ref()).filter(|file| *file != "src/main.rs");
    let modules: HashMap<_, _> = lib.map(|file| (module_of(file), file)).collect();
    let mut edges = Edges::new();
    for (file, source) in files.iter().map(|(file, source)| (file.as_ref(), source.as_ref())) {
        let ast = syn::parse_file(source).unwrap_or_else(|e| panic!("cannot parse {file}: {e}"));
        let (scope, aliases) = (module_of(file), HashMap::new());
        Walk { modules: &modules, file, scope, aliases, edges: &mut edges }.visit_file(&ast);
    }
    edges
}

struct Walk<'a> {
    modules: &'a HashMap<Vec<String>, &'a str>,
    file: &'a str,
    /// The module the walk is in: the file's, or an inline module inside it.
    scope: Vec<String>,
    /// What the names bound by the file's `use`s stand for (`batch::X` after `use super::batch`).
    aliases: HashMap<String, Vec<String>>,
    edges: &'a mut Edges,
}

impl Walk<'_> {
    /// The lib's path that `segs` names, or None for std, other crates, locals and main.rs itself.
    fn absolute(&self, segs: &[String]) -> Option<Vec<String>> {
        let bin = self.file == "src/main.rs";
        let (mut base, mut rest) = match segs.first()?.as_str() {
            "crate" | "self" | "super" if bin => return None,
            "crate" | "lockguard" => (Vec::new(), &segs[1..]), // as main.rs names the lib
            "self" => (self.scope.clone(), &segs[1..]),
            "super" => (self.scope.clone(), segs),
            // A lone name is a local (`claim.uid()`) or an item whose `use` is already counted.
            _ if segs.len() == 1 => return None,
            // A child module here or of the file's module (as `use super::*` in `mod tests`), or a `use`.
            name => {
                let own = module_of(self.file);
                let child = [&self.scope, &own].map(|m| [m.as_slice(), &[name.to_string()]].concat());
                let child = child.into_iter().find(|m| !bin && self.modules.contains_key(m));
                (child.or_else(|| self.aliases.get(name).cloned())?, &segs[1..])
            }
        };
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?; // `super` above the crate root names nothing of the lib
            rest = &rest[1..];
        }
        Some([base.as_slice(), rest].concat())
    }

    /// Counts what `segs` takes from the file of the deepest module it names.
    fn record(&mut self, segs: &[String], glob: bool) -> Option<()> {
        let full = self.absolute(segs)?;
        // The deepest module named is the longest prefix of the path that has a file.
        let (depth, to) = (0..=full.len()).rev().find_map(|n| Some((n, *self.modules.get(&full[..n])?)))?;
        // The item taken, "*", or the module itself.
        let name =
            if glob && depth == full.len() { "*".into() } else { full.get(depth).or(full.last())?.clone() };
        if to != self.file {
            self.edges.entry((self.file.into(), to.into())).or_default().insert(name);
        }
        Some(())
    }

    fn use_tree(&mut self, tree: &UseTree, mut path: Vec<String>) {
        let (alias, leaf) = match tree {
            UseTree::Path(p) => return self.use_tree(&p.tree, [path, vec![p.ident.to_string()]].concat()),
            UseTree::Group(g) => return g.items.iter().for_each(|item| self.use_tree(item, path.clone())),
            UseTree::Glob(_) => (None, None),
            UseTree::Name(n) if n.ident == "self" => (path.last().cloned(), None),
            UseTree::Name(n) => (Some(n.ident.to_string()), Some(&n.ident)),
            UseTree::Rename(r) => (Some(r.rename.to_string()), Some(&r.ident)),
        };
        path.extend(leaf.map(|ident| ident.to_string()));
        self.record(&path, alias.is_none());
        if let (Some(alias), Some(full)) = (alias, self.absolute(&path)) {
            self.aliases.insert(alias, full);
        }
    }
}

impl<'ast> Visit<'ast> for Walk<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // `mod x;` declares a child: structure, not an import.
        let Some((_, items)) = &m.content else { return };
        self.scope.push(m.ident.to_string());
        items.iter().for_each(|item| self.visit_item(item));
        self.scope.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, Vec::new());
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record(&path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>(), false);
        visit::visit_path(self, path); // generic arguments hold paths too
    }

    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {} // `pub(super)` imports nothing

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Most macros (assert_eq!, vec!, format!) take expressions; other bodies stay unread.
        if let Ok(args) = mac.parse_body_with(Punctuated::<syn::Expr, Token![,]>::parse_terminated) {
            args.iter().for_each(|arg| self.visit_expr(arg));
        }
        visit::visit_macro(self, mac);
    }
}

/// Every set of two files or more that each reach each other (a strongly connected component);
/// files are few, so a search from each is simpler than Tarjan's and fast enough.
fn cycles(edges: &Edges) -> BTreeSet<BTreeSet<&str>> {
    let reach = |start| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![start]);
        while let Some(file) = stack.pop() {
            let next = edges.keys().filter(|(from, _)| from == file).map(|(_, to)| to.as_str());
            stack.extend(next.filter(|to| seen.insert(*to)));
        }
        seen
    };
    let reached: BTreeMap<_, _> =
        edges.keys().map(|(from, _)| (from.as_str(), reach(from.as_str()))).collect();
    let back = |file: &str, other: &str| reached.get(other).is_some_and(|r| r.contains(file));
    let sets = reached.iter().map(|(file, r)| r.iter().copied().filter(|o| back(file, o)).collect());
    sets.filter(|cycle: &BTreeSet<&str>| cycle.len() > 1).collect()
}

fn show(((from, to), names): (&(String, String), &BTreeSet<String>)) -> String {
    format!("{from} -> {to}: {}", names.iter().cloned().collect::<Vec<_>>().join(", "))
}

fn report(cycles: &BTreeSet<BTreeSet<&str>>, edges: &Edges) -> String {
    let mut out = format!("{} import cycle(s) in src/; break one edge of each:\n", cycles.len());
    for cycle in cycles {
        let files: Vec<_> = cycle.iter().copied().collect();
        out += &format!("\ncycle of {} files: {}\n", files.len(), files.join(", "));
        let inside = edges.iter().filter(|((from, to), _)| cycle.contains(&**from) && cycle.contains(&**to));
        out += &inside.map(|edge| format!("  {}\n", show(edge))).collect::<String>();
    }
    out
}

/// The checks of the check: synthetic trees in which given edges, then a loop, must be found.
#[test]
fn paths_resolve_to_the_file_of_the_deepest_module() {
    let edges = edges(&[
        ("src/main.rs", "use lockguard::c; fn main() { c::e::go(); std::process::exit(kube::x()) }"),
        ("src/lib.rs", "pub mod a; pub mod c;"),
        ("src/a/mod.rs", "pub mod b; pub struct Error; fn g(b: u8) -> u8 { b } mod tests { use super::*; }"),
        ("src/a/b.rs", "use super::Error; use crate::c::{d, e::F}; fn f() -> super::super::c::G { todo!() }"),
        ("src/a/c.rs", "pub(super) fn f() -> bool { assert!(crate::c::d::ok()); true }"),
        ("src/c/mod.rs", "pub mod d; pub mod e; pub use e::go; pub struct G;"),
        ("src/c/d.rs", "pub fn ok() -> bool { true }"),
        ("src/c/e.rs", "pub struct F; pub fn go() {}"),
    ]);
    let want = [
        "src/a/b.rs -> src/a/mod.rs: Error",
        "src/a/b.rs -> src/c/d.rs: d",
        "src/a/b.rs -> src/c/e.rs: F",
        "src/a/b.rs -> src/c/mod.rs: G",
        "src/a/c.rs -> src/c/d.rs: ok",
        "src/c/mod.rs -> src/c/e.rs: go",
        "src/main.rs -> src/c/e.rs: go",
        "src/main.rs -> src/c/mod.rs: c",
    ];
    assert_eq!(edges.iter().map(show).collect::<Vec<_>>(), want);
}

#[test]
fn a_three_file_loop_is_found() {
    let edges = edges(&[
        ("src/lib.rs", "mod a; mod b; mod c; mod d;"),
        ("src/a.rs", "use crate::b::X;"),
        ("src/b.rs", "fn f() { crate::c::y() }"),
        ("src/c.rs", "#[cfg(test)] mod tests { use crate::a::Z; }"),
        ("src/d.rs", "use crate::a::Z;"),
    ]);
    let found = cycles(&edges);
    assert_eq!(found, BTreeSet::from([BTreeSet::from(["src/a.rs", "src/b.rs", "src/c.rs"])]));
    let message = report(&found, &edges);
    assert!(message.contains("src/a.rs -> src/b.rs: X\n"), "{message}");
    assert!(message.contains("src/c.rs -> src/a.rs: Z\n"), "{message}");
    assert!(!message.contains("src/d.rs"), "{message}");
}
