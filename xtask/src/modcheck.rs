//! `cargo xtask modcheck`: no module of any workspace crate imports in a
//! cycle. A module uses what is below it, never what uses it.
//!
//! The crates and their lib and bin targets come from `cargo metadata
//! --no-deps`. From each target's root file the module tree is walked as
//! rustc walks it: `mod x;` is `x.rs` or `x/mod.rs` (beside a root or a
//! `mod.rs`, under `dir/name/` beside any other `name.rs`), `#[path = ".."]`
//! is relative to the declaring file's directory (to the inline modules'
//! directory inside `mod a { .. }`), and inline `mod x { .. }` is walked in
//! place. Every item under `#[cfg(test)]` (or `cfg(all(test, ..))`) or
//! `#[test]` is left out, test modules with it: they may `use super::*`.
//!
//! **Nodes** are files. An inline module (`mod x { .. }`) keeps its own
//! scope for name resolution, but what it uses counts for its file: the
//! question is which file may use which, and a file cannot be half below
//! another.
//!
//! **Edges.** File A -> file B when a module of A names an item (struct,
//! enum, union, trait, type, fn, const, static, foreign item) that is
//! *defined* in B, through
//! - a private `use` (`use crate::..`, `use super::..`, `use self::..`, or a
//!   path starting at a name in scope: a child module, an import);
//! - a path anywhere else in the module's items: types, expressions,
//!   patterns, trait bounds, `impl X for Y`, macro paths, and the arguments
//!   of macro calls (parsed as comma-separated expressions, otherwise
//!   scanned for `a::b::c` token runs), e.g. `crate::foo::bar()`,
//!   `super::X`, `config::parse(..)` after `use crate::config`.
//!
//! A path is resolved segment by segment, from the module where it is
//! written, through child modules, items, named imports (`use a::B as C`,
//! `pub use` re-exports included) and glob imports, in that order, until it
//! reaches an item; later segments (variants, associated items) are that
//! item's. So a re-export is followed to the file that defines the item:
//! `crate::config::Config`, where `config/mod.rs` only does `pub use
//! types::Config`, is an edge to `config/types.rs`.
//!
//! **Not edges:** a `mod child;` declaration; a re-export (`pub use`,
//! `pub(crate) use`, `pub(super) use`) by itself, whether of a child's item
//! or another module's: who uses the name is sent on to where it is
//! defined, and the re-exporting module has an edge only where it names the
//! item itself; naming a module alone (`use crate::config;`): each path
//! through it is resolved on; a path that leaves the crate (other workspace
//! crates, std, dependencies: cross-crate cycles are Cargo's to refuse);
//! a file's use of itself (a self-edge is not a cycle).
//!
//! **Known approximations.**
//! - Glob imports (`use super::*`, `use types::*`): a glob is not an edge by
//!   itself; each name the module uses that is found only through the glob
//!   is an edge to where that name is defined. A trait reached only through
//!   a glob and used only by method syntax is missed.
//! - Types are not inferred: a module that calls a method, or takes a
//!   value, of a type it never names has no edge to that type's file. A
//!   trait named in a private `use` (to call its methods) is an edge.
//! - Local scopes are not tracked, and one namespace per module stands for
//!   Rust's type and value namespaces (a module is preferred in the middle
//!   of a path, another item at its end): a local variable, generic
//!   parameter or field shorthand that has the name of an item the module
//!   imports (by name or through a glob) counts as that item. With a named
//!   private import that edge is there anyway; the glob case is the one
//!   that can add an edge.
//! - `use` inside a function body is treated as a private import of its
//!   module; items declared inside function bodies are not path-reachable
//!   items; `macro_rules!` bodies are not read, nor items that a macro
//!   generates, nor doc links; `cfg`s other than `test` are all taken as on.
//! - Each lib and bin target is its own module tree; a crate's count of
//!   modules is the files of all its targets. Test, bench, example and
//!   build-script targets are not read.
//!
//! Files of a depth are parsed in parallel; most of the time is syn's
//! parsing, which `[profile.dev.package.syn] opt-level = 3` (and the same
//! for proc-macro2) makes about three times faster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt as _;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Expr, ImplItem, Item, Lit, Meta, Token, UseTree, Visibility};

/// `cargo xtask modcheck`: prints each crate's module count and cycles;
/// returns the number of cycles.
pub fn run() -> anyhow::Result<usize> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = crate::command::cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata's output")?;
    let (report, cycles) = check_workspace(&metadata)?;
    print!("{report}");
    if cycles > 0 {
        eprintln!(
            "modcheck: {cycles} module cycle(s): a module uses what is below it, never what uses it"
        );
    }
    Ok(cycles)
}

/// The report for every workspace package in `metadata` (`cargo metadata
/// --format-version 1` output), and the number of cycles in it.
pub fn check_workspace(metadata: &serde_json::Value) -> anyhow::Result<(String, usize)> {
    let root = PathBuf::from(
        metadata["workspace_root"]
            .as_str()
            .context("cargo metadata: no workspace_root")?,
    );
    let members: HashSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no workspace_members")?
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let mut packages: Vec<&serde_json::Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .collect();
    packages.sort_by_key(|p| p["name"].as_str().unwrap_or_default().to_string());

    let mut report = String::new();
    let mut total = 0;
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let mut files = BTreeSet::new();
        let mut cycles = BTreeSet::new();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .collect();
            let is_crate = kinds.iter().any(|k| {
                matches!(
                    *k,
                    "lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro" | "bin"
                )
            });
            if !is_crate {
                continue;
            }
            let src = target["src_path"]
                .as_str()
                .with_context(|| format!("{name}: a target without src_path"))?;
            let tree = Tree::load(Path::new(src))?;
            files.extend(tree.files.iter().map(|f| relative(f, &root)));
            cycles.extend(tree.cycles().into_iter().map(|c| c.relative_to(&root)));
        }
        total += cycles.len();
        writeln!(
            report,
            "crate {name}: {} modules, {} cycles",
            files.len(),
            cycles.len()
        )?;
        for (i, cycle) in cycles.iter().enumerate() {
            writeln!(report, "  cycle {}: {} modules", i + 1, cycle.files.len())?;
            for file in &cycle.files {
                writeln!(report, "    {file}")?;
            }
            for (from, to, names) in &cycle.edges {
                writeln!(report, "    {from} -> {to}: {}", names.join(", "))?;
            }
        }
    }
    Ok((report, total))
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

type ModId = usize;

/// What a path names.
#[derive(Clone, Debug, PartialEq)]
enum Res {
    Module(ModId),
    /// An item, by the module that defines it and its name there.
    Item(ModId, String),
}

/// A module: a file, or an inline `mod x { .. }` in one.
#[derive(Default)]
struct Module {
    /// Its file (an index into `Tree::files`).
    file: usize,
    parent: Option<ModId>,
    children: HashMap<String, ModId>,
    /// The other items it defines, all namespaces together.
    items: HashSet<String>,
    /// `use` imports by the name they bind: the paths, from this module.
    imports: HashMap<String, Vec<Vec<String>>>,
    /// Paths of its glob imports, from this module.
    globs: Vec<Vec<String>>,
    /// The paths it names (private `use`s and every path in its items).
    refs: HashSet<Vec<String>>,
}

/// A cycle: the files of a strongly connected component, and the edges
/// between them with the names that make each.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cycle {
    pub files: Vec<String>,
    pub edges: Vec<(String, String, Vec<String>)>,
}

impl Cycle {
    fn relative_to(self, root: &Path) -> Cycle {
        let rel = |f: String| relative(Path::new(&f), root);
        Cycle {
            files: self.files.into_iter().map(rel).collect(),
            edges: self
                .edges
                .into_iter()
                .map(|(a, b, names)| (rel(a), rel(b), names))
                .collect(),
        }
    }
}

/// The module tree of one crate (a lib or bin target).
#[derive(Default)]
pub struct Tree {
    files: Vec<PathBuf>,
    modules: Vec<Module>,
}

/// What a module's source says, in plain strings (syn's trees cannot leave
/// the thread that parsed them).
#[derive(Default)]
struct Scope {
    items: HashSet<String>,
    /// `use` entries: path, the name bound (`None`: a glob), re-exported.
    uses: Vec<(Vec<String>, Option<String>, bool)>,
    refs: Vec<Vec<String>>,
    mods: Vec<ModDecl>,
}

/// `mod name;` (with its `#[path]`, if any) or `mod name { .. }`.
struct ModDecl {
    name: String,
    path: Option<String>,
    inline: Option<Scope>,
}

/// A `mod x;` whose file is still to be read.
struct Pending {
    file: PathBuf,
    /// Where its own `mod y;` files are.
    children: PathBuf,
    /// The declaring module and the name.
    parent: Option<(ModId, String)>,
}

impl Tree {
    /// Walks the modules from the crate's root file (`src/lib.rs`, ...),
    /// reading the files of each depth in parallel.
    pub fn load(root: &Path) -> anyhow::Result<Tree> {
        let mut tree = Tree::default();
        let mut pending = vec![Pending {
            file: root.to_path_buf(),
            children: root.parent().unwrap_or(Path::new(".")).to_path_buf(),
            parent: None,
        }];
        while !pending.is_empty() {
            let batch = std::mem::take(&mut pending);
            let scopes = read_all(batch.iter().map(|p| p.file.as_path()).collect())?;
            for (job, scope) in batch.into_iter().zip(scopes) {
                let file = match tree.files.iter().position(|f| *f == job.file) {
                    Some(file) => file,
                    None => {
                        tree.files.push(job.file.clone());
                        tree.files.len() - 1
                    }
                };
                let parent = job.parent.as_ref().map(|(p, _)| *p);
                let dir = job.file.parent().unwrap_or(Path::new("."));
                let id = tree.add(scope, file, parent, &job.children, dir, &mut pending);
                if let Some((parent, name)) = job.parent {
                    tree.modules[parent].children.insert(name, id);
                }
            }
        }
        Ok(tree)
    }

    /// Adds a module and its inline modules; queues its `mod x;` files.
    /// `children` is where those files are; `#[path]`s are relative to
    /// `path_base`.
    fn add(
        &mut self,
        scope: Scope,
        file: usize,
        parent: Option<ModId>,
        children: &Path,
        path_base: &Path,
        pending: &mut Vec<Pending>,
    ) -> ModId {
        self.modules.push(Module {
            file,
            parent,
            ..Module::default()
        });
        let id = self.modules.len() - 1;
        let module = &mut self.modules[id];
        module.items = scope.items;
        module.refs = scope.refs.into_iter().collect();
        for (path, name, reexport) in scope.uses {
            match name {
                Some(name) if name != "_" => {
                    module.imports.entry(name).or_default().push(path.clone());
                }
                Some(_) => {}
                None => module.globs.push(path.clone()),
            }
            if !reexport {
                module.refs.insert(path);
            }
        }
        for decl in scope.mods {
            let child_dir = children.join(&decl.name);
            if let Some(inline) = decl.inline {
                let child = self.add(inline, file, Some(id), &child_dir, &child_dir, pending);
                self.modules[id].children.insert(decl.name, child);
            } else if let Some(path) = decl.path {
                let file = path_base.join(path);
                let children = file.parent().unwrap_or(Path::new(".")).to_path_buf();
                pending.push(Pending {
                    file,
                    children,
                    parent: Some((id, decl.name)),
                });
            } else {
                let flat = children.join(format!("{}.rs", decl.name));
                pending.push(Pending {
                    file: if flat.exists() {
                        flat
                    } else {
                        child_dir.join("mod.rs")
                    },
                    children: child_dir,
                    parent: Some((id, decl.name)),
                });
            }
        }
        id
    }

    /// What `path`, written in module `from`, names; `None` outside the
    /// crate or unknown.
    fn resolve(
        &self,
        from: ModId,
        path: &[String],
        stack: &mut Vec<(ModId, String)>,
    ) -> Option<Res> {
        let (first, rest) = path.split_first()?;
        let mut res = match first.as_str() {
            "crate" => Res::Module(0),
            "self" => Res::Module(from),
            "super" => Res::Module(self.modules[from].parent?),
            "::" => return None,
            name => self.lookup(from, name, rest.is_empty(), stack)?,
        };
        for (i, segment) in rest.iter().enumerate() {
            let Res::Module(m) = res else { break };
            res = match segment.as_str() {
                "super" => Res::Module(self.modules[m].parent?),
                "self" => res,
                name => self.lookup(m, name, i + 1 == rest.len(), stack)?,
            };
        }
        Some(res)
    }

    /// What `name` is in module `m`: its own child or item, else a named
    /// import, else a glob import's. `last`: the end of a path, where an
    /// item is preferred to a module (elsewhere a module to an item), as a
    /// module and a function of one name live in different namespaces.
    fn lookup(
        &self,
        m: ModId,
        name: &str,
        last: bool,
        stack: &mut Vec<(ModId, String)>,
    ) -> Option<Res> {
        let module = &self.modules[m];
        let child = module.children.get(name).map(|&c| Res::Module(c));
        let item = module
            .items
            .contains(name)
            .then(|| Res::Item(m, name.to_string()));
        let (own, other) = if last { (item, child) } else { (child, item) };
        if own.is_some() {
            return own;
        }
        if stack.iter().any(|(sm, sn)| *sm == m && sn == name) {
            return other;
        }
        stack.push((m, name.to_string()));
        let preferred = |res: &Res| matches!(res, Res::Module(_)) != last;
        let mut found = other;
        for path in module.imports.get(name).into_iter().flatten() {
            if let Some(res) = self.resolve(m, path, stack) {
                if preferred(&res) {
                    stack.pop();
                    return Some(res);
                }
                found.get_or_insert(res);
            }
        }
        for glob in &module.globs {
            let Some(Res::Module(target)) = self.resolve(m, glob, stack) else {
                continue;
            };
            if let Some(res) = self.lookup(target, name, last, stack) {
                if preferred(&res) {
                    stack.pop();
                    return Some(res);
                }
                found.get_or_insert(res);
            }
        }
        stack.pop();
        found
    }

    /// File -> file edges, with the names of the items that make each.
    fn edges(&self) -> BTreeMap<(usize, usize), BTreeSet<String>> {
        let mut edges: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
        let mut stack = Vec::new();
        for (id, module) in self.modules.iter().enumerate() {
            for path in &module.refs {
                if let Some(Res::Item(target, name)) = self.resolve(id, path, &mut stack) {
                    let to = self.modules[target].file;
                    if to != module.file {
                        edges.entry((module.file, to)).or_default().insert(name);
                    }
                }
            }
        }
        edges
    }

    /// The strongly connected components of more than one file.
    pub fn cycles(&self) -> Vec<Cycle> {
        let edges = self.edges();
        let mut graph = DiGraph::<usize, ()>::new();
        let nodes: Vec<NodeIndex> = (0..self.files.len()).map(|f| graph.add_node(f)).collect();
        for &(a, b) in edges.keys() {
            graph.add_edge(nodes[a], nodes[b], ());
        }
        let name = |f: usize| self.files[f].display().to_string();
        let mut cycles: Vec<Cycle> = tarjan_scc(&graph)
            .into_iter()
            .filter(|scc| scc.len() > 1)
            .map(|scc| {
                let members: BTreeSet<usize> = scc.iter().map(|&n| graph[n]).collect();
                let mut files: Vec<String> = members.iter().map(|&f| name(f)).collect();
                files.sort();
                let mut edges: Vec<(String, String, Vec<String>)> = edges
                    .iter()
                    .filter(|((a, b), _)| members.contains(a) && members.contains(b))
                    .map(|(&(a, b), names)| (name(a), name(b), names.iter().cloned().collect()))
                    .collect();
                edges.sort();
                Cycle { files, edges }
            })
            .collect();
        cycles.sort();
        cycles
    }
}

/// Reads and parses `files`, on as many threads as there are cores.
fn read_all(files: Vec<&Path>) -> anyhow::Result<Vec<Scope>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|files| s.spawn(move || files.iter().map(|f| read(f)).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a modcheck reader panicked"))
            .collect()
    })
}

fn read(file: &Path) -> anyhow::Result<Scope> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok(scope_of(&ast.items))
}

/// What a module's items say, test-only items left out.
fn scope_of(items: &[Item]) -> Scope {
    let mut scope = Scope::default();
    for item in items {
        if test_only(item_attrs(item)) {
            continue;
        }
        match item {
            Item::Mod(m) => scope.mods.push(ModDecl {
                name: m.ident.unraw().to_string(),
                path: path_attr(&m.attrs),
                inline: m.content.as_ref().map(|(_, items)| scope_of(items)),
            }),
            Item::Use(u) => add_use(&mut scope, u),
            _ => {
                scope.items.extend(item_name(item));
                if let Item::ForeignMod(f) = item {
                    for foreign in &f.items {
                        let name = match foreign {
                            syn::ForeignItem::Fn(f) => &f.sig.ident,
                            syn::ForeignItem::Static(s) => &s.ident,
                            syn::ForeignItem::Type(t) => &t.ident,
                            _ => continue,
                        };
                        scope.items.insert(name.unraw().to_string());
                    }
                }
                let mut refs = Refs::default();
                refs.visit_item(item);
                scope.refs.extend(refs.paths);
                for u in &refs.uses {
                    add_use(&mut scope, u);
                }
            }
        }
    }
    scope
}

fn add_use(scope: &mut Scope, u: &syn::ItemUse) {
    let reexport = !matches!(u.vis, Visibility::Inherited);
    let mut prefix = Vec::new();
    if u.leading_colon.is_some() {
        prefix.push("::".to_string());
    }
    let mut entries = Vec::new();
    flatten_use(&u.tree, &mut prefix, &mut entries);
    for (path, name) in entries {
        scope.uses.push((path, name, reexport));
    }
}

/// The paths and the `use`s inside one item (not its nested modules).
#[derive(Default)]
struct Refs {
    paths: Vec<Vec<String>>,
    uses: Vec<syn::ItemUse>,
}

impl Refs {
    fn path(&mut self, path: &syn::Path) {
        if path.leading_colon.is_none() {
            self.paths.push(
                path.segments
                    .iter()
                    .map(|s| s.ident.unraw().to_string())
                    .collect(),
            );
        }
    }

    /// `a::b::c` runs in tokens that are not expressions (`vec![x; n]`,
    /// `matches!(x, P)`): an identifier after `.`, `'` or `$` starts none.
    fn scan(&mut self, tokens: TokenStream) {
        let mut path: Vec<String> = Vec::new();
        let mut extern_path = false;
        let mut after_colons = false;
        let mut skip_next = false;
        let mut iter = tokens.into_iter().peekable();
        while let Some(token) = iter.next() {
            match token {
                TokenTree::Ident(ident) => {
                    if std::mem::take(&mut skip_next) {
                        self.flush(&mut path, &mut extern_path);
                        continue;
                    }
                    if !after_colons {
                        self.flush(&mut path, &mut extern_path);
                    }
                    path.push(ident.unraw().to_string());
                    after_colons = false;
                }
                TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint => {
                    if matches!(iter.peek(), Some(TokenTree::Punct(q)) if q.as_char() == ':') {
                        iter.next();
                        if path.is_empty() {
                            extern_path = true;
                        }
                        after_colons = true;
                    }
                }
                TokenTree::Punct(p) => {
                    self.flush(&mut path, &mut extern_path);
                    after_colons = false;
                    skip_next = matches!(p.as_char(), '.' | '\'' | '$');
                }
                TokenTree::Group(g) => {
                    self.flush(&mut path, &mut extern_path);
                    after_colons = false;
                    self.scan(g.stream());
                }
                TokenTree::Literal(_) => {
                    self.flush(&mut path, &mut extern_path);
                    after_colons = false;
                }
            }
        }
        self.flush(&mut path, &mut extern_path);
    }

    fn flush(&mut self, path: &mut Vec<String>, extern_path: &mut bool) {
        if !path.is_empty() && !std::mem::take(extern_path) {
            self.paths.push(std::mem::take(path));
        }
        path.clear();
        *extern_path = false;
    }
}

impl<'ast> Visit<'ast> for Refs {
    fn visit_item(&mut self, item: &'ast Item) {
        if !test_only(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(i) => &i.attrs,
            ImplItem::Fn(i) => &i.attrs,
            ImplItem::Type(i) => &i.attrs,
            ImplItem::Macro(i) => &i.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.uses.push(u.clone());
    }

    /// A module inside a function body: out of reach of paths from outside.
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}

    /// `macro_rules!` bodies are not read.
    fn visit_item_macro(&mut self, m: &'ast syn::ItemMacro) {
        if m.ident.is_none() {
            self.visit_macro(&m.mac);
        }
    }

    /// Attributes (derives, doc links) name no module of the crate.
    fn visit_attribute(&mut self, _: &'ast Attribute) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.path(path);
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.path(&mac.path);
        match mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            Ok(args) => args.iter().for_each(|arg| self.visit_expr(arg)),
            Err(_) => self.scan(mac.tokens.clone()),
        }
    }
}

/// Flattens a `use` tree into (path, bound name) pairs; a glob binds `None`.
fn flatten_use(
    tree: &UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.unraw().to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(n) => out.push(use_entry(prefix, &n.ident, None)),
        UseTree::Rename(r) => out.push(use_entry(prefix, &r.ident, Some(&r.rename))),
        UseTree::Glob(_) => out.push((prefix.clone(), None)),
        UseTree::Group(g) => {
            for tree in &g.items {
                flatten_use(tree, prefix, out);
            }
        }
    }
}

/// `a::b::X` binds `X`; `a::b::{self}` binds `b`; `as Y` binds `Y`.
fn use_entry(
    prefix: &[String],
    ident: &syn::Ident,
    rename: Option<&syn::Ident>,
) -> (Vec<String>, Option<String>) {
    let ident = ident.unraw().to_string();
    let mut path = prefix.to_vec();
    if ident != "self" {
        path.push(ident);
    }
    let name = match rename {
        Some(rename) => Some(rename.unraw().to_string()),
        None => path.last().cloned(),
    };
    (path, name)
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The name an item defines in its module's namespaces (modules and
/// imports apart).
fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.unraw().to_string())
}

/// `#[cfg(test)]`, `#[cfg(all(.., test, ..))]` or `#[test]`.
fn test_only(attrs: &[Attribute]) -> bool {
    fn needs_test(meta: &Meta) -> bool {
        match meta {
            Meta::Path(p) => p.is_ident("test"),
            Meta::List(l) if l.path.is_ident("all") => l
                .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .is_ok_and(|metas| metas.iter().any(needs_test)),
            _ => false,
        }
    }
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg") && a.parse_args::<Meta>().is_ok_and(|m| needs_test(&m)))
    })
}

/// The value of `#[path = "..."]`.
fn path_attr(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate in a temporary directory, removed on drop.
    struct FakeCrate {
        dir: PathBuf,
    }

    impl FakeCrate {
        fn new(files: &[(&str, &str)]) -> FakeCrate {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xtask-modcheck-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            for (path, text) in files {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            FakeCrate { dir }
        }

        /// The cycles from src/lib.rs, with paths relative to the crate.
        fn cycles(&self) -> Vec<Cycle> {
            let tree = Tree::load(&self.dir.join("src/lib.rs")).unwrap();
            tree.cycles()
                .into_iter()
                .map(|c| c.relative_to(&self.dir))
                .collect()
        }

        fn edges(&self) -> Vec<(String, String, Vec<String>)> {
            let tree = Tree::load(&self.dir.join("src/lib.rs")).unwrap();
            let mut edges: Vec<_> = tree
                .edges()
                .into_iter()
                .map(|((a, b), names)| {
                    (
                        relative(&tree.files[a], &self.dir),
                        relative(&tree.files[b], &self.dir),
                        names.into_iter().collect(),
                    )
                })
                .collect();
            edges.sort();
            edges
        }
    }

    impl Drop for FakeCrate {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn edge(a: &str, b: &str, names: &[&str]) -> (String, String, Vec<String>) {
        (
            a.to_string(),
            b.to_string(),
            names.iter().map(|n| n.to_string()).collect(),
        )
    }

    #[test]
    fn two_files_using_each_other_are_a_cycle() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            (
                "src/a.rs",
                "use crate::b::B;\npub struct A;\npub fn f(_: B) {}\n",
            ),
            (
                "src/b.rs",
                "pub struct B;\npub fn g() { let _ = crate::a::A; }\n",
            ),
        ]);
        assert_eq!(
            krate.cycles(),
            [Cycle {
                files: vec!["src/a.rs".into(), "src/b.rs".into()],
                edges: vec![
                    edge("src/a.rs", "src/b.rs", &["B"]),
                    edge("src/b.rs", "src/a.rs", &["A"]),
                ],
            }]
        );
    }

    #[test]
    fn a_child_using_its_parent_that_uses_it_is_a_cycle() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod config;\n"),
            (
                "src/config/mod.rs",
                "mod check;\npub struct Config;\npub fn run() { check::check(&Config); }\n",
            ),
            (
                "src/config/check.rs",
                "pub fn check(_: &super::Config) {}\n",
            ),
        ]);
        assert_eq!(
            krate.cycles(),
            [Cycle {
                files: vec!["src/config/check.rs".into(), "src/config/mod.rs".into()],
                edges: vec![
                    edge("src/config/check.rs", "src/config/mod.rs", &["Config"]),
                    edge("src/config/mod.rs", "src/config/check.rs", &["check"]),
                ],
            }]
        );
    }

    #[test]
    fn a_reexport_leads_to_the_file_that_defines_the_item() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod config;\npub mod user;\n"),
            (
                "src/config/mod.rs",
                "mod types;\nmod parse;\npub use types::Config;\npub use parse::*;\n\
                 pub fn load() -> Config { parse(\"\") }\n",
            ),
            ("src/config/types.rs", "pub struct Config;\n"),
            (
                "src/config/parse.rs",
                "use super::Config;\npub fn parse(_: &str) -> Config { Config }\n",
            ),
            (
                "src/user.rs",
                "use crate::config::{self, Config};\npub fn f() -> Config { config::parse(\"x\") }\n",
            ),
        ]);
        assert_eq!(krate.cycles(), []);
        assert_eq!(
            krate.edges(),
            [
                edge("src/config/mod.rs", "src/config/parse.rs", &["parse"]),
                edge("src/config/mod.rs", "src/config/types.rs", &["Config"]),
                edge("src/config/parse.rs", "src/config/types.rs", &["Config"]),
                edge("src/user.rs", "src/config/parse.rs", &["parse"]),
                edge("src/user.rs", "src/config/types.rs", &["Config"]),
            ]
        );
    }

    #[test]
    fn test_modules_are_left_out() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod config;\n"),
            (
                "src/config/mod.rs",
                "mod check;\npub use check::check;\npub struct Config;\n\
                 #[cfg(test)]\nmod tests { use super::*; fn t() { check(&Config); } }\n\
                 #[cfg(all(test, unix))]\nmod more;\n",
            ),
            (
                "src/config/check.rs",
                "use super::Config;\npub fn check(_: &Config) {}\n\
                 #[cfg(test)]\nmod tests { use super::*; }\n",
            ),
        ]);
        assert_eq!(krate.cycles(), []);
        assert_eq!(
            krate.edges(),
            [edge(
                "src/config/check.rs",
                "src/config/mod.rs",
                &["Config"]
            )]
        );
    }

    #[test]
    fn a_path_attribute_names_the_file() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod controller;\npub struct Root;\n"),
            (
                "src/controller.rs",
                "#[path = \"hooks/hooks_file.rs\"]\nmod hooks;\n\
                 pub struct Controller;\npub fn run() { hooks::follow(); }\n",
            ),
            (
                "src/hooks/hooks_file.rs",
                "pub fn follow() { let _ = super::Controller; }\n",
            ),
        ]);
        assert_eq!(
            krate.cycles(),
            [Cycle {
                files: vec!["src/controller.rs".into(), "src/hooks/hooks_file.rs".into()],
                edges: vec![
                    edge("src/controller.rs", "src/hooks/hooks_file.rs", &["follow"]),
                    edge(
                        "src/hooks/hooks_file.rs",
                        "src/controller.rs",
                        &["Controller"]
                    ),
                ],
            }]
        );
    }

    #[test]
    fn inline_modules_count_for_their_file_and_macros_are_read() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            (
                "src/a.rs",
                "pub mod inner { pub fn f() { println!(\"{}\", crate::b::N); } }\n",
            ),
            (
                "src/b.rs",
                "pub const N: u8 = 1;\npub fn g() -> bool { matches!(3, crate::a::inner::f) }\n\
                 mod nested;\n",
            ),
            (
                "src/b/nested.rs",
                "pub fn h() { super::super::a::inner::f(); }\n",
            ),
        ]);
        assert_eq!(
            krate.edges(),
            [
                edge("src/a.rs", "src/b.rs", &["N"]),
                edge("src/b.rs", "src/a.rs", &["f"]),
                edge("src/b/nested.rs", "src/a.rs", &["f"]),
            ]
        );
        assert_eq!(krate.cycles().len(), 1);
    }

    #[test]
    fn a_workspace_report_names_crates_cycles_and_edges() {
        let krate = FakeCrate::new(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            ("src/a.rs", "use crate::b::{B, C};\npub struct A;\n"),
            (
                "src/b.rs",
                "pub struct B;\npub struct C;\npub fn g(_: crate::a::A) {}\n",
            ),
            ("src/main.rs", "fn main() {}\n"),
        ]);
        let dir = krate.dir.display().to_string();
        let metadata = serde_json::json!({
            "workspace_root": dir,
            "workspace_members": ["fake 0.1.0"],
            "packages": [{
                "id": "fake 0.1.0",
                "name": "fake",
                "targets": [
                    {"kind": ["lib"], "src_path": format!("{dir}/src/lib.rs")},
                    {"kind": ["bin"], "src_path": format!("{dir}/src/main.rs")},
                    {"kind": ["test"], "src_path": format!("{dir}/tests/t.rs")},
                ],
            }],
        });
        let (report, cycles) = check_workspace(&metadata).unwrap();
        assert_eq!(cycles, 1);
        assert_eq!(
            report,
            "crate fake: 4 modules, 1 cycles\n  cycle 1: 2 modules\n    src/a.rs\n    src/b.rs\n    \
             src/a.rs -> src/b.rs: B, C\n    src/b.rs -> src/a.rs: A\n"
        );
    }
}
