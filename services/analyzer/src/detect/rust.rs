//! Rust: Cargo packages and workspaces, bins and examples (a server that is
//! an example runs with `cargo run --example`), axum/actix/rocket/warp,
//! rust-toolchain(.toml) and rust-version.

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::{BackingServiceKind, ComponentKind};

use super::{
    pass::{self, Pass, Stage},
    util::{default_name, find_line, glob_match, line_of, rel_to},
    weight,
};
use crate::{
    draft::{Draft, cmd, cmd_in, ev},
    index::{RepoIndex, file_name, join, parent_of},
};

static ADDR: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"["'](?:0\.0\.0\.0|127\.0\.0\.1|localhost|\[::\])?:(\d{2,5})["']|\(\s*\[\s*(?:0|127)\s*,\s*0\s*,\s*0\s*,\s*[01]\s*\]\s*,\s*(\d{2,5})\s*\)|\(\s*"[\w.]+"\s*,\s*(\d{2,5})\s*\)"#).ok()
});

/// Ports of databases that appear in connection strings, never a server's own.
const DB_PORTS: &[&str] = &["5432", "3306", "6379", "27017", "5672", "9200", "11211"];

const SERVERS: &[&str] = &[
    "axum",
    "actix-web",
    "rocket",
    "warp",
    "poem",
    "salvo",
    "tide",
    "hyper",
    "tower-http",
    "loco-rs",
];

/// One Cargo package of the component.
struct Pkg {
    name: String,
    dir: String,
    deps: Vec<String>,
    /// The `optional = true` ones among `deps`: features of the program
    /// (mdBook's `serve` subcommand), not what it is.
    optional_deps: Vec<String>,
    bins: Vec<(String, String)>,
    examples: Vec<(String, String)>,
    default_run: Option<String>,
    rust_version: Option<String>,
    sqlx_features: Vec<String>,
}

fn parse_pkg(idx: &RepoIndex, dir: &str) -> Option<(Pkg, toml::Table)> {
    let f = join(dir, "Cargo.toml");
    let text = idx.read(&f)?;
    let doc = match toml::from_str::<toml::Table>(&text) {
        Ok(doc) => doc,
        Err(e) => {
            idx.warn(format!(
                "{f} is not valid TOML: {}",
                e.to_string().lines().next().unwrap_or_default()
            ));
            return None;
        }
    };
    let package = doc.get("package").and_then(|p| p.as_table());
    let name = package
        .and_then(|p| p.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let (deps, optional_deps, sqlx_features) = dependencies(&doc);
    let bins = find_bins(idx, dir, &doc, package.is_some(), &name);
    let examples = find_examples(idx, dir, &doc);
    let package_str = |key: &str| {
        package
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let default_run = package_str("default-run");
    let rust_version = package_str("rust-version");
    Some((
        Pkg {
            name,
            dir: dir.to_owned(),
            deps,
            optional_deps,
            bins,
            examples,
            default_run,
            rust_version,
            sqlx_features,
        },
        doc,
    ))
}

/// Dependency names, the optional ones among them, and their
/// `crate/feature` features.
fn dependencies(doc: &toml::Table) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut deps = Vec::new();
    let mut optional = Vec::new();
    let mut features = Vec::new();
    for key in ["dependencies", "dev-dependencies"] {
        if let Some(t) = doc.get(key).and_then(|v| v.as_table()) {
            for (k, v) in t.iter().take(500) {
                deps.push(k.clone());
                if v.get("optional").and_then(toml::Value::as_bool) == Some(true) {
                    optional.push(k.clone());
                }
                if let Some(list) = v.get("features").and_then(|f| f.as_array()) {
                    for feat in list.iter().filter_map(|f| f.as_str()) {
                        features.push(format!("{k}/{feat}"));
                    }
                }
            }
        }
    }
    (deps, optional, features)
}

/// src/main.rs, `[[bin]]` targets and src/bin/: (name, file).
fn find_bins(
    idx: &RepoIndex,
    dir: &str,
    doc: &toml::Table,
    has_package: bool,
    name: &str,
) -> Vec<(String, String)> {
    let mut bins = Vec::new();
    if has_package && idx.has(&join(dir, "src/main.rs")) {
        bins.push((name.to_owned(), join(dir, "src/main.rs")));
    }
    if let Some(list) = doc.get("bin").and_then(|b| b.as_array()) {
        for b in list.iter().take(100) {
            if let Some(n) = b.get("name").and_then(|v| v.as_str()) {
                let path = b
                    .get("path")
                    .and_then(|v| v.as_str())
                    .map_or_else(|| join(dir, &format!("src/bin/{n}.rs")), |p| join(dir, p));
                if !bins.iter().any(|(b, _)| b == n) {
                    bins.push((n.to_owned(), path));
                }
            }
        }
    }
    let bin_dir = join(dir, "src/bin");
    for f in idx.child_files(&bin_dir) {
        if let Some(n) = file_name(f).strip_suffix(".rs")
            && !bins.iter().any(|(b, _)| b == n)
        {
            bins.push((n.to_owned(), f.clone()));
        }
    }
    for d in idx.child_dirs(&bin_dir) {
        let main = join(d, "main.rs");
        if idx.has(&main) {
            bins.push((file_name(d).to_owned(), main));
        }
    }
    bins
}

/// examples/ files and directories, and `[[example]]` targets: (name, file).
fn find_examples(idx: &RepoIndex, dir: &str, doc: &toml::Table) -> Vec<(String, String)> {
    let mut examples = Vec::new();
    let ex_dir = join(dir, "examples");
    for f in idx.child_files(&ex_dir) {
        if let Some(n) = file_name(f).strip_suffix(".rs") {
            examples.push((n.to_owned(), f.clone()));
        }
    }
    for d in idx.child_dirs(&ex_dir) {
        let main = join(d, "main.rs");
        if idx.has(&main) {
            examples.push((file_name(d).to_owned(), main));
        }
    }
    if let Some(list) = doc.get("example").and_then(|b| b.as_array()) {
        for b in list.iter().take(200) {
            if let (Some(n), Some(p)) = (
                b.get("name").and_then(|v| v.as_str()),
                b.get("path").and_then(|v| v.as_str()),
            ) && !examples.iter().any(|(e, _)| e == n)
            {
                examples.push((n.to_owned(), join(dir, p)));
            }
        }
    }
    examples
}

fn is_server_source(text: &str) -> bool {
    [
        "axum::serve",
        "axum::Server",
        "HttpServer::new",
        "#[launch]",
        "rocket::build",
        "warp::serve",
        "TcpListener::bind",
        "Server::bind",
        "poem::Server",
        "salvo::Server",
    ]
    .iter()
    .any(|n| text.contains(n))
}

/// Whether the server in `file` answers HTTP: a package of the component
/// depends on an HTTP framework, or the source names HTTP. A bare
/// `TcpListener` server without either speaks its own protocol (a Redis or
/// chat server) and is probed by connecting to its port.
fn speaks_http(idx: &RepoIndex, pkgs: &[Pkg], file: &str) -> bool {
    if pkgs
        .iter()
        .any(|p| p.deps.iter().any(|d| SERVERS.contains(&d.as_str())))
    {
        return true;
    }
    let text = idx.read_source(file).unwrap_or_default();
    let without_bare_listener = text.replace("TcpListener::bind", "");
    is_server_source(&without_bare_listener) || text.contains("HTTP/1.") || text.contains("http::")
}

/// What the Rust passes read before deciding.
#[derive(Default)]
struct Facts {
    manifest: String,
    /// The root package (possibly nameless in a virtual workspace) first,
    /// then the workspace members.
    pkgs: Vec<Pkg>,
    doc: toml::Table,
    is_workspace: bool,
    /// The file of the chosen start (a bin or example).
    chosen_file: Option<String>,
}

type Scan<'a> = pass::Scan<'a, Facts>;

/// The Rust detector, in order.
const PASSES: &[Pass<Facts>] = &[
    Pass::new(Stage::Manifest, "Cargo.toml", manifest),
    Pass::new(Stage::Manifest, "workspace", workspace),
    Pass::new(Stage::Manifest, "dependencies", dependencies_and_frameworks),
    Pass::new(Stage::Scripts, "cargo", cargo_commands),
    Pass::new(Stage::Tests, "cargo test", cargo_test),
    Pass::new(Stage::Versions, "toolchain", toolchain),
    Pass::new(Stage::EntryPoint, "bin or example", entry_point),
    Pass::new(Stage::Services, "database features", database_features),
];

/// `stage/name` of each pass, in order.
pub fn passes() -> Vec<String> {
    pass::describe(PASSES)
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let d = Draft::new(&default_name(idx, dir), dir, "rust");
    vec![pass::run(PASSES, idx, dir, d, Facts::default())]
}

/// The root Cargo.toml; an unparsable one still fetches and builds.
fn manifest(s: &mut Scan<'_>) {
    s.d.c.package_manager = "cargo".into();
    s.facts.manifest = s.path("Cargo.toml");
    let Some((root, doc)) = parse_pkg(s.idx, s.dir) else {
        s.d.offer(ev("install", &s.facts.manifest, 0, "Cargo.toml (unparsed)", 0.4));
        s.d.c.install = cmd("cargo fetch");
        s.d.c.build = cmd("cargo build");
        s.stop = true;
        return;
    };
    if !root.name.is_empty() {
        s.d.c.name = root.name.clone();
    }
    s.facts.pkgs = vec![root];
    s.facts.doc = doc;
}

/// `[workspace]` members (globs and excludes), parsed as packages.
fn workspace(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let Some(ws) = s.facts.doc.get("workspace").and_then(|w| w.as_table()) else {
        return;
    };
    s.facts.is_workspace = true;
    let strings = |key: &str, limit: usize| -> Vec<String> {
        ws.get(key)
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .take(limit)
                    .collect()
            })
            .unwrap_or_default()
    };
    let members = strings("members", 200);
    let excluded = strings("exclude", usize::MAX);
    let mut member_dirs: Vec<String> = Vec::new();
    for m in &members {
        if m.contains('*') {
            for f in idx.files_under(dir).filter(|f| file_name(f) == "Cargo.toml") {
                let md = parent_of(f);
                if md != dir && glob_match(m, rel_to(dir, md)) {
                    member_dirs.push(md.to_owned());
                }
            }
        } else {
            member_dirs.push(join(dir, m));
        }
    }
    member_dirs.retain(|m| !excluded.iter().any(|e| join(dir, e) == *m));
    member_dirs.sort();
    member_dirs.dedup();
    for m in member_dirs.iter().take(100) {
        if let Some((p, _)) = parse_pkg(idx, m) {
            s.facts.pkgs.push(p);
        }
    }
    if s.d.c.name.is_empty() || s.facts.pkgs[0].name.is_empty() {
        s.d.c.name = default_name(idx, dir);
    }
}

fn dependencies_and_frameworks(s: &mut Scan<'_>) {
    for p in &s.facts.pkgs {
        s.d.deps.extend(p.deps.iter().cloned());
    }
    for fw in SERVERS {
        if s.d.deps.contains(*fw) {
            s.d.add_framework(fw);
        }
    }
}

fn cargo_commands(s: &mut Scan<'_>) {
    let (d, f) = (&mut s.d, &s.facts);
    d.note(ev(
        "package_manager",
        &f.manifest,
        0,
        if f.is_workspace {
            "cargo workspace"
        } else {
            "cargo package"
        },
        weight::MANIFEST,
    ));
    d.offer(ev("install", &f.manifest, 0, "cargo fetch", weight::MANIFEST));
    d.c.install = cmd("cargo fetch");
    d.c.build = cmd(if f.is_workspace {
        "cargo build --workspace"
    } else {
        "cargo build"
    });
}

fn cargo_test(s: &mut Scan<'_>) {
    let (d, f) = (&mut s.d, &s.facts);
    d.c.test = cmd(if f.is_workspace {
        "cargo test --workspace"
    } else {
        "cargo test"
    });
    d.offer(ev("test", &f.manifest, 0, "cargo test", weight::MANIFEST));
}

/// A rust-version's numbers (`1.88` is `[1, 88, 0]`), for ordering; `None`
/// when it is not one.
fn release_numbers(version: &str) -> Option<[u64; 3]> {
    let mut numbers = [0; 3];
    let mut parts = version.trim().split('.');
    for slot in &mut numbers {
        match parts.next() {
            Some(part) => *slot = part.parse().ok()?,
            None => break,
        }
    }
    parts.next().is_none().then_some(numbers)
}

/// rust-toolchain(.toml), then the packages' rust-version.
fn toolchain(s: &mut Scan<'_>) {
    for f in ["rust-toolchain.toml", "rust-toolchain"] {
        let path = s.path(f);
        let Some(text) = s.idx.read(&path) else { continue };
        let channel = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| {
                t.get("toolchain")
                    .and_then(|tc| tc.get("channel"))
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .or_else(|| {
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('[') && !l.contains('='))
                    .map(str::to_owned)
            });
        if let Some(c) = channel {
            s.d.set_runtime(
                ev(
                    "runtime",
                    &path,
                    find_line(&text, "channel").max(1),
                    format!("toolchain {c}"),
                    0.9,
                ),
                "rust",
                &c,
            );
        }
        break;
    }
    // The newest rust-version of the packages and of the workspace
    // (`[workspace.package]`, which members take with
    // `rust-version.workspace = true`): a build of the workspace needs it.
    let workspace_version = s
        .facts
        .doc
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("rust-version"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let newest = s
        .facts
        .pkgs
        .iter()
        .filter_map(|p| p.rust_version.clone())
        .chain(workspace_version)
        .filter_map(|v| release_numbers(&v).map(|n| (n, v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v);
    if let Some(v) = newest {
        s.d.set_runtime(
            ev(
                "runtime",
                &s.facts.manifest,
                0,
                format!("rust-version {v}"),
                weight::MANIFEST,
            ),
            "rust",
            &format!(">={v}"),
        );
    }
    if s.d.c.runtime.is_none() {
        s.d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: "rust".into(),
            version_constraint: String::new(),
            preferred_version: String::new(),
        });
    }
}

/// A program to run: (weight, command, file, detail).
struct Candidate {
    weight: f64,
    run: String,
    file: String,
    detail: String,
}

/// The best candidate so far and the server file it runs, if it serves.
#[derive(Default)]
struct Choice {
    best: Option<Candidate>,
    server_file: Option<String>,
}

impl Choice {
    fn offer(&mut self, c: Candidate, server: bool) {
        if self.best.as_ref().is_none_or(|b| c.weight > b.weight) {
            if server {
                self.server_file = Some(c.file.clone());
            }
            self.best = Some(c);
        }
    }
}

/// What to run: a bin of a server package, else a server example, else the
/// only bin; else a server in a separate examples workspace.
fn entry_point(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let pkgs = &s.facts.pkgs;
    let multi = pkgs.iter().filter(|p| !p.bins.is_empty()).count() > 1 || s.facts.is_workspace;
    let mut choice = Choice::default();
    for p in pkgs {
        bin_candidates(idx, p, multi, &mut choice);
    }
    let best_is_server = choice
        .best
        .as_ref()
        .is_some_and(|b| b.weight >= weight::FRAMEWORK - 0.05);
    if !best_is_server {
        for p in pkgs {
            example_candidate(idx, p, multi, &mut choice);
        }
    }
    s.facts.chosen_file = choice.best.as_ref().map(|b| b.file.clone());
    if let Some(mut best) = choice.best {
        let (port, binding) = bound_port(idx, &mut s.d, choice.server_file.as_deref());
        // The port flag goes to the program, not to cargo.
        if binding.starts_with("flag:") && best.run.starts_with("cargo run") && !best.run.contains(" -- ") {
            best.run.push_str(" --");
        }
        s.d.set_start(
            ev(
                "start",
                &best.file,
                0,
                best.detail,
                best.weight.min(weight::FRAMEWORK),
            ),
            cmd(best.run),
            port,
            &binding,
        );
        let kind = match choice.server_file.as_deref() {
            Some(file) if !speaks_http(idx, pkgs, file) => ComponentKind::Service,
            Some(_) => ComponentKind::Web,
            None => ComponentKind::Cli,
        };
        s.d.set_kind(kind);
    } else if let Some((run, file)) = examples_workspace_server(idx, dir) {
        examples_workspace_start(s, run, &file);
    } else {
        s.d.set_kind(ComponentKind::Library);
    }
}

/// ` -p NAME` when the component has several packages.
fn package_flag(p: &Pkg, multi: bool) -> String {
    if multi && !p.name.is_empty() {
        format!(" -p {}", p.name)
    } else {
        String::new()
    }
}

/// Each bin of `p`, weighted: servers first, then the default or
/// package-named bin, then the simplest-looking name in the shallowest package.
fn bin_candidates(idx: &RepoIndex, p: &Pkg, multi: bool, choice: &mut Choice) {
    let pkg_flag = package_flag(p, multi);
    // A server framework the package can be built without is behind a
    // feature (a `serve` subcommand of a command-line tool): it makes a bin
    // a server only when the bin's own source serves.
    let is_server_pkg = p
        .deps
        .iter()
        .any(|d| SERVERS.contains(&d.as_str()) && !p.optional_deps.contains(d));
    for (bin, file) in &p.bins {
        let text = idx.read_source(file).unwrap_or_default();
        let server = is_server_source(&text) || (is_server_pkg && text.contains("main"));
        let many_bins = p.bins.len() > 1;
        let not_default = many_bins && p.default_run.as_deref() != Some(bin);
        let bin_flag = if not_default {
            format!(" --bin {bin}")
        } else {
            String::new()
        };
        let w = if server {
            weight::FRAMEWORK
        } else {
            weight::MANIFEST * 0.9
        } - if not_default && bin != &p.name { 0.1 } else { 0.0 };
        // Among equals, the simplest-looking program in the shallowest package.
        let named = |words: &[&str]| words.iter().any(|n| p.name.contains(n) || bin.contains(n));
        let hint = if named(&["hello"]) {
            0.03
        } else if named(&["basic", "simple", "minimal"]) {
            0.02
        } else if named(&["server", "api", "web"]) {
            0.01
        } else {
            0.0
        };
        let w = w + hint - 0.001 * p.dir.matches('/').count() as f64;
        let candidate = Candidate {
            weight: w,
            run: format!("cargo run{pkg_flag}{bin_flag}"),
            file: file.clone(),
            detail: format!("bin {bin}{}", if server { " (server)" } else { "" }),
        };
        choice.offer(candidate, server);
    }
}

/// The first example of `p` that serves.
fn example_candidate(idx: &RepoIndex, p: &Pkg, multi: bool, choice: &mut Choice) {
    let pkg_flag = package_flag(p, multi);
    for (ex, file) in &p.examples {
        let text = idx.read_source(file).unwrap_or_default();
        if is_server_source(&text) {
            let candidate = Candidate {
                weight: weight::FRAMEWORK - 0.05,
                run: format!("cargo run{pkg_flag} --example {ex}"),
                file: file.clone(),
                detail: format!("example {ex} serves"),
            };
            choice.offer(candidate, true);
            break;
        }
    }
}

/// The port a server binds, from its file and its directory's other files;
/// `env:PORT` when it reads `PORT`.
fn bound_port(idx: &RepoIndex, d: &mut Draft, server_file: Option<&str>) -> (u32, String) {
    let mut port = 0;
    let mut binding = String::new();
    let mut scan: Vec<String> = server_file.iter().map(|f| (*f).to_owned()).collect();
    if let Some(sf) = server_file {
        let src_dir = parent_of(sf).to_owned();
        scan.extend(
            idx.files_under(&src_dir)
                .filter(|f| f.ends_with(".rs") && Some(f.as_str()) != server_file)
                .take(12)
                .cloned(),
        );
    }
    for sf in &scan {
        if port != 0 {
            break;
        }
        let Some(text) = idx.read_source(sf) else { continue };
        let found = ADDR.as_ref().and_then(|re| {
            re.captures_iter(&text)
                .filter_map(|c| c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)))
                .find(|m| !DB_PORTS.contains(&m.as_str()))
        });
        if let Some(m) = found {
            port = m.as_str().parse().unwrap_or(0);
            d.note(ev(
                "port",
                sf,
                line_of(&text, m.start()),
                format!("binds port {port}"),
                weight::FRAMEWORK,
            ));
        }
        if text.contains("\"PORT\"") {
            binding = "env:PORT".into();
            if port == 0 {
                port = 3000;
            }
        }
    }
    // A `port` option of the server's own argument parser (clap, structopt,
    // argh): the runner passes the port it picks as `--port N`.
    if binding.is_empty()
        && let Some(file) = server_file
        && let Some(text) = idx.read_source(file)
        && CLAP_PORT.as_ref().is_some_and(|re| re.is_match(&text))
    {
        binding = "flag:--port".into();
        d.note(ev("port", file, 0, "a --port option", weight::FRAMEWORK));
    }
    (port, binding)
}

/// A `port` field that a derive-based argument parser reads from `--port`.
static CLAP_PORT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"#\[(?:arg|clap|structopt|argh)\([^\]]*\blong\b[^\]]*\)\]\s*(?:(?:///[^\n]*|#\[[^\n]*\])\s*)*(?:pub(?:\([^)]*\))?\s+)?port\s*:",
    )
    .ok()
});

/// A library whose runnable servers live in a separate examples workspace.
fn examples_workspace_start(s: &mut Scan<'_>, run: String, file: &str) {
    let d = &mut s.d;
    d.set_start(
        ev(
            "start",
            file,
            0,
            "server in the examples workspace",
            weight::FRAMEWORK_GUESS,
        ),
        cmd_in(run, &join(s.dir, "examples")),
        0,
        "",
    );
    d.set_kind(ComponentKind::Web);
    if let Some(text) = s.idx.read_source(file)
        && let Some(m) = ADDR
            .as_ref()
            .and_then(|re| re.captures(&text))
            .and_then(|c| c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)))
    {
        d.c.port = m.as_str().parse().unwrap_or(0);
    }
}

/// In a workspace, the packages that run decide the backing services:
/// the chosen one when a start was chosen, else all of them.
fn database_features(s: &mut Scan<'_>) {
    let (d, f) = (&mut s.d, &s.facts);
    let chosen = f.chosen_file.as_ref().and_then(|file| {
        f.pkgs
            .iter()
            .filter(|p| p.dir.is_empty() || file.starts_with(&format!("{}/", p.dir)))
            .max_by_key(|p| p.dir.len())
    });
    match chosen {
        Some(p) if f.pkgs.len() > 1 => {
            d.deps = p.deps.iter().cloned().collect();
            sqlx_backing(d, p);
        }
        _ => {
            for p in &f.pkgs {
                sqlx_backing(d, p);
            }
        }
    }
}

/// Backing services from sqlx / sea-orm / diesel features of one package.
fn sqlx_backing(d: &mut Draft, p: &Pkg) {
    for f in &p.sqlx_features {
        let kind = if f.ends_with("/postgres")
            || f.ends_with("/sqlx-postgres")
            || f.ends_with("/runtime-tokio-postgres")
        {
            Some(BackingServiceKind::Postgresql)
        } else if f.ends_with("/mysql") || f.ends_with("/sqlx-mysql") {
            Some(BackingServiceKind::Mysql)
        } else {
            None
        };
        if let Some(kind) = kind
            && (f.starts_with("sqlx/") || f.starts_with("sea-orm/") || f.starts_with("diesel/"))
        {
            d.add_backing(
                kind,
                "",
                ev(
                    "backing_service",
                    &join(&p.dir, "Cargo.toml"),
                    0,
                    format!("feature {f}"),
                    weight::MANIFEST,
                ),
            );
        }
    }
}

/// `examples/Cargo.toml` with its own `[workspace]`: the simplest server
/// package there (hello-world first).
fn examples_workspace_server(idx: &RepoIndex, dir: &str) -> Option<(String, String)> {
    let ex = join(dir, "examples");
    let text = idx.read(&join(&ex, "Cargo.toml"))?;
    if !text.contains("[workspace]") {
        return None;
    }
    let mut best: Option<(i32, String, String)> = None;
    for member in idx.child_dirs(&ex).take(200) {
        let main = join(member, "src/main.rs");
        if !idx.has(&main) {
            continue;
        }
        let Some((pkg, _)) = parse_pkg(idx, member) else {
            continue;
        };
        let name = file_name(member);
        let score = if name.contains("hello") {
            3
        } else if name.contains("basic") || name.contains("simple") {
            2
        } else {
            0
        };
        if best.as_ref().is_some_and(|b| b.0 >= score) {
            continue;
        }
        let Some(src) = idx.read_source(&main) else {
            continue;
        };
        if is_server_source(&src) && !pkg.name.is_empty() {
            best = Some((score, format!("cargo run -p {}", pkg.name), main));
        }
    }
    best.map(|(_, run, file)| (run, file))
}
