//! Node and Bun: package managers from lockfiles and `packageManager`,
//! engines/.nvmrc/.node-version, scripts (with watch-mode detection),
//! Express, Next, Vite, Nest and friends, npm/yarn/pnpm workspaces.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::LazyLock,
};

use regex::Regex;
use reporunner_proto::common::v1::ComponentKind;
use serde_json::Value;

use super::{
    pass::{self, Pass, Stage},
    util::{default_name, find_line, glob_match, is_watch, line_of, pad_semver, rel_to, semver_friendly},
    weight,
};
use crate::{
    draft::{Draft, cmd_in, ev, watch_cmd},
    index::{RepoIndex, join, parent_of},
};

static LISTEN_PORT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:\.listen\(\s*(?:\{\s*port:\s*)?|PORT\s*(?:=|\|\||\?\?|:)\s*(?:process\.env\.PORT\s*(?:\|\||\?\?)\s*)?|process\.env\.PORT\)?\s*(?:\|\||\?\?)\s*)['\x22]?(\d{2,5})\b").ok()
});

/// Reads and parses a package.json, warning on malformed JSON.
fn read_pkg(idx: &RepoIndex, dir: &str) -> Option<(String, Value)> {
    let f = join(dir, "package.json");
    let text = idx.read(&f)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => Some((text, v)),
        Ok(_) => {
            idx.warn(format!("{f} is not a JSON object"));
            None
        }
        Err(e) => {
            idx.warn(format!("{f} is not valid JSON: {e}"));
            None
        }
    }
}

/// Workspace globs declared at `dir` (package.json `workspaces`, pnpm-workspace.yaml).
fn workspace_globs(idx: &RepoIndex, dir: &str) -> Vec<String> {
    let mut globs = Vec::new();
    if let Some((_, pkg)) = read_pkg(idx, dir) {
        let ws = pkg.get("workspaces");
        let list = ws
            .and_then(|w| w.as_array())
            .or_else(|| ws.and_then(|w| w.get("packages")).and_then(|p| p.as_array()));
        if let Some(list) = list {
            globs.extend(
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .take(200),
            );
        }
    }
    let pnpm = join(dir, "pnpm-workspace.yaml");
    if let Some(text) = idx.read(&pnpm) {
        match serde_norway::from_str::<serde_norway::Value>(&text) {
            Ok(doc) => {
                if let Some(list) = doc.get("packages").and_then(|v| v.as_sequence()) {
                    globs.extend(
                        list.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .take(200),
                    );
                }
            }
            Err(e) => idx.warn(format!("{pnpm} is not valid YAML: {e}")),
        }
    }
    globs
}

/// Member directory → workspace root directory.
pub fn workspace_members(idx: &RepoIndex, node_dirs: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut members = BTreeMap::new();
    let mut roots: Vec<&String> = node_dirs.iter().collect();
    if idx.has("pnpm-workspace.yaml") && !node_dirs.contains("") {
        roots.push(&EMPTY);
    }
    for root in roots {
        let globs = workspace_globs(idx, root);
        if globs.is_empty() {
            continue;
        }
        for dir in node_dirs {
            if dir == root {
                continue;
            }
            let rel = rel_to(root, dir);
            if !root.is_empty() && !dir.starts_with(&format!("{root}/")) {
                continue;
            }
            let included = globs.iter().any(|g| !g.starts_with('!') && glob_match(g, rel));
            let excluded = globs
                .iter()
                .any(|g| g.starts_with('!') && glob_match(&g[1..], rel));
            if included && !excluded {
                members.entry(dir.clone()).or_insert_with(|| root.clone());
            }
        }
    }
    members
}

static EMPTY: String = String::new();

/// Whether the package.json at `dir` is a component of its own.
pub fn is_component(
    idx: &RepoIndex,
    dir: &str,
    all: &BTreeSet<String>,
    members: &BTreeMap<String, String>,
) -> bool {
    if members.contains_key(dir) {
        return true;
    }
    let is_ws_root = members.values().any(|r| r == dir);
    let Some((_, pkg)) = read_pkg(idx, dir) else {
        return !is_ws_root;
    };
    let scripts = pkg.get("scripts").and_then(|s| s.as_object());
    let has_script = |n: &str| scripts.is_some_and(|s| s.contains_key(n));
    if is_ws_root {
        // A workspace root is a component only when it runs something itself.
        return scripts
            .and_then(|s| s.get("start"))
            .and_then(|v| v.as_str())
            .is_some_and(|s| !is_delegating(s));
    }
    let other_eco_here = idx.child_files(dir).any(|f| {
        matches!(
            crate::index::file_name(f),
            "pyproject.toml"
                | "requirements.txt"
                | "setup.py"
                | "Cargo.toml"
                | "go.mod"
                | "pom.xml"
                | "build.gradle"
                | "manage.py"
                | "Pipfile"
        )
    });
    let _ = all;
    // A manifest npm has nothing to do with: no scripts, no dependencies, no
    // entry (a clib `package.json` beside C sources).
    let inert = [
        "scripts",
        "dependencies",
        "devDependencies",
        "main",
        "bin",
        "exports",
        "module",
        "workspaces",
    ]
    .iter()
    .all(|k| pkg.get(*k).is_none());
    if inert {
        return false;
    }
    if other_eco_here {
        let deps = dep_names(&pkg);
        return has_script("start")
            || has_script("dev")
            || has_script("serve")
            || [
                "next",
                "vite",
                "express",
                "react-scripts",
                "@nestjs/core",
                "nuxt",
                "astro",
            ]
            .iter()
            .any(|d| deps.contains(*d));
    }
    true
}

/// A `dev` script that only rebuilds a library on change.
fn is_build_watcher(script: &str) -> bool {
    let first = script.split_whitespace().next().unwrap_or_default();
    matches!(
        first,
        "tsc"
            | "tsup"
            | "tsdown"
            | "rollup"
            | "unbuild"
            | "babel"
            | "esbuild"
            | "swc"
            | "microbundle"
            | "pkgroll"
    ) || script.contains("vite build --watch")
        || script.starts_with("git clean")
}

fn is_delegating(script: &str) -> bool {
    [
        "--cwd",
        "--prefix",
        "--filter",
        "--workspace",
        " -w ",
        "turbo ",
        "nx ",
        "lerna ",
        "pnpm -r",
        "pnpm --filter",
        "yarn workspace",
        "npm run -w",
        "npm -w",
        "concurrently",
        "npm-run-all",
        "run-p ",
        "pnpm -F",
    ]
    .iter()
    .any(|p| script.contains(p))
}

fn dep_names(pkg: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for key in [
        "dependencies",
        "devDependencies",
        "peerDependencies",
        "optionalDependencies",
    ] {
        if let Some(obj) = pkg.get(key).and_then(|v| v.as_object()) {
            out.extend(obj.keys().take(2000).cloned());
        }
    }
    out
}
/// What the Node passes read before deciding.
#[derive(Debug, Default)]
struct Facts {
    pkg_file: String,
    /// package.json as text (for evidence lines) and parsed.
    text: String,
    pkg: Value,
    /// The closest ancestor whose workspaces include this package.
    ws_root: Option<String>,
    /// Where install runs: the workspace root, else the package itself.
    install_dir: String,
    root_pkg: Option<Value>,
    pm: String,
    scripts: BTreeMap<String, String>,
}

type Scan<'a> = pass::Scan<'a, Facts>;

/// The Node detector, in order. The package manager is decided before the
/// runtime because Bun is both.
const PASSES: &[Pass<Facts>] = &[
    Pass::new(Stage::Manifest, "package.json", manifest),
    Pass::new(Stage::Manifest, "workspace", workspace),
    Pass::new(Stage::Scripts, "package manager", package_manager),
    Pass::new(Stage::Versions, "runtime", runtime),
    Pass::new(Stage::Scripts, "build script", build_script),
    Pass::new(Stage::Tests, "test script", test_script),
    Pass::new(Stage::EntryPoint, "start", start),
    Pass::new(Stage::EntryPoint, "defaults", start_defaults),
];

/// `stage/name` of each pass, in order.
pub fn passes() -> Vec<String> {
    pass::describe(PASSES)
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let d = Draft::new(&default_name(idx, dir), dir, "javascript");
    vec![pass::run(PASSES, idx, dir, d, Facts::default())]
}

/// Name, dependencies, TypeScript and frameworks.
fn manifest(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    s.facts.pkg_file = join(dir, "package.json");
    let (text, pkg) =
        read_pkg(idx, dir).unwrap_or_else(|| (String::new(), Value::Object(Default::default())));
    if let Some(name) = pkg.get("name").and_then(|v| v.as_str()) {
        s.d.c.name = name.to_owned();
    }
    s.d.deps = dep_names(&pkg);
    s.facts.text = text;
    s.facts.pkg = pkg;
    if idx.has(&join(dir, "tsconfig.json")) || s.d.has_dep("typescript") {
        s.d.c.language = "typescript".into();
    }
    for (dep, fw) in [
        ("next", "next"),
        ("nuxt", "nuxt"),
        ("@remix-run/node", "remix"),
        ("astro", "astro"),
        ("@sveltejs/kit", "sveltekit"),
        ("@nestjs/core", "nest"),
        ("vite", "vite"),
        ("express", "express"),
        ("fastify", "fastify"),
        ("koa", "koa"),
        ("hono", "hono"),
        ("@angular/core", "angular"),
        ("react-scripts", "create-react-app"),
        ("gatsby", "gatsby"),
        ("react", "react"),
        ("vue", "vue"),
        ("svelte", "svelte"),
    ] {
        if s.d.has_dep(dep) {
            s.d.add_framework(fw);
        }
    }
}

/// Workspace root (for members): the closest ancestor declaring workspaces.
fn workspace(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let mut p = dir.to_owned();
    while !p.is_empty() {
        p = parent_of(&p).to_owned();
        let globs = workspace_globs(idx, &p);
        if globs.iter().any(|g| glob_match(g, rel_to(&p, dir))) {
            s.facts.ws_root = Some(p.clone());
            break;
        }
    }
    s.facts.install_dir = s.facts.ws_root.clone().unwrap_or_else(|| dir.to_owned());
    s.facts.root_pkg = s
        .facts
        .ws_root
        .as_deref()
        .and_then(|r| read_pkg(idx, r))
        .map(|(_, v)| v);
}

/// A lockfile in the package, else at the workspace root.
fn lockfile(s: &Scan<'_>, name: &str) -> Option<String> {
    let here = join(s.dir, name);
    if s.idx.has(&here) {
        return Some(here);
    }
    let there = join(&s.facts.install_dir, name);
    s.idx.has(&there).then_some(there)
}

/// `packageManager`, else the lockfile, else npm; and the install command.
fn package_manager(s: &mut Scan<'_>) {
    let (pm, pm_evidence) = choose_package_manager(s);
    s.d.note(pm_evidence);
    s.d.c.package_manager = pm.clone();
    let has_npm_lock = lockfile(s, "package-lock.json").is_some();
    let install = match pm.as_str() {
        "npm" if has_npm_lock => "npm ci",
        "npm" => "npm install",
        "pnpm" => "pnpm install",
        "yarn" => "yarn install",
        _ => "bun install",
    };
    let f = &s.facts;
    let wd = if f.ws_root.is_some() {
        if f.install_dir.is_empty() {
            ".".to_owned()
        } else {
            f.install_dir.clone()
        }
    } else {
        String::new()
    };
    s.d.offer(ev("install", &f.pkg_file, 0, install, weight::MANIFEST));
    s.d.c.install = cmd_in(install, &wd);
    s.facts.pm = pm;
}

fn choose_package_manager(s: &Scan<'_>) -> (String, reporunner_proto::common::v1::Evidence) {
    let f = &s.facts;
    let pm_field = f.pkg.get("packageManager").and_then(|v| v.as_str()).or_else(|| {
        f.root_pkg
            .as_ref()
            .and_then(|r| r.get("packageManager"))
            .and_then(|v| v.as_str())
    });
    let lock = |name: &str| lockfile(s, name);
    let from_lock = |pm: &str, file: String, detail: &str| {
        (
            pm.to_owned(),
            ev("package_manager", &file, 0, detail, weight::MANIFEST),
        )
    };
    if let Some(field) = pm_field {
        let name = field.split('@').next().unwrap_or("npm").to_owned();
        let name = if ["npm", "pnpm", "yarn", "bun"].contains(&name.as_str()) {
            name
        } else {
            "npm".into()
        };
        let line = find_line(&f.text, "packageManager");
        let detail = format!("packageManager: {field}");
        (name, ev("package_manager", &f.pkg_file, line, detail, 0.95))
    } else if let Some(file) = lock("bun.lockb").or_else(|| lock("bun.lock")) {
        from_lock("bun", file, "bun lockfile")
    } else if let Some(file) = lock("pnpm-lock.yaml").or_else(|| lock("pnpm-workspace.yaml")) {
        from_lock("pnpm", file, "pnpm lockfile/workspace")
    } else if let Some(file) = lock("yarn.lock") {
        from_lock("yarn", file, "yarn.lock")
    } else if let Some(file) = lock("package-lock.json").or_else(|| lock("npm-shrinkwrap.json")) {
        from_lock("npm", file, "package-lock.json")
    } else {
        let e = ev("package_manager", &f.pkg_file, 0, "no lockfile: npm", 0.5);
        ("npm".into(), e)
    }
}

/// The command that runs a package.json script with the package manager.
fn run_script(pm: &str, script: &str) -> String {
    match (pm, script) {
        ("npm", "start") => "npm start".into(),
        ("npm", "test") => "npm test".into(),
        ("npm", s) => format!("npm run {s}"),
        ("yarn", s) => format!("yarn {s}"),
        ("pnpm", s) => format!("pnpm run {s}"),
        (_, s) => format!("bun run {s}"),
    }
}

/// The package's scripts and its `build` script.
fn build_script(s: &mut Scan<'_>) {
    let f = &mut s.facts;
    f.scripts = f
        .pkg
        .get("scripts")
        .and_then(|s| s.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .take(500)
                .collect()
        })
        .unwrap_or_default();
    if let Some(b) = f.scripts.get("build") {
        s.d.offer(ev(
            "build",
            &f.pkg_file,
            find_line(&f.text, "\"build\""),
            format!("build: {b}"),
            weight::SCRIPT,
        ));
        s.d.c.build = watch_cmd(run_script(&f.pm, "build"), is_watch(b));
    }
}

fn test_script(s: &mut Scan<'_>) {
    let f = &s.facts;
    if let Some(t) = f.scripts.get("test")
        && !t.contains("no test specified")
    {
        s.d.offer(ev(
            "test",
            &f.pkg_file,
            find_line(&f.text, "\"test\""),
            format!("test: {t}"),
            weight::SCRIPT,
        ));
        s.d.c.test = watch_cmd(
            run_script(&f.pm, "test"),
            is_watch(t) || t.contains("jest --watch"),
        );
    }
}

/// The start script, else `next start`, else a main or conventional file.
fn start(s: &mut Scan<'_>) {
    let candidates = [
        ("start", weight::SCRIPT),
        ("dev", weight::SCRIPT * 0.9),
        ("serve", weight::SCRIPT * 0.85),
        ("start:dev", weight::SCRIPT * 0.8),
    ];
    s.d.scripts = s.facts.scripts.keys().cloned().collect();
    let chosen = candidates.iter().find(|(name, _)| {
        s.facts
            .scripts
            .get(*name)
            .is_some_and(|s| !(s.trim().is_empty() || *name != "start" && is_build_watcher(s)))
    });
    if let Some((name, w)) = chosen {
        start_script(s, name, *w);
    } else if s.d.has_framework("next") {
        s.d.set_start(
            ev(
                "start",
                &s.facts.pkg_file,
                0,
                "next dependency without scripts",
                weight::FRAMEWORK_GUESS,
            ),
            cmd_in("npx next start", ""),
            3000,
            "env:PORT",
        );
    } else {
        entry_file(s);
    }
}

/// Starts with the script `name`, its port from the script or the server
/// file it runs.
fn start_script(s: &mut Scan<'_>, name: &str, w: f64) {
    let (idx, dir, f) = (s.idx, s.dir, &s.facts);
    let script = f.scripts.get(name).cloned().unwrap_or_default();
    let line = find_line(&f.text, &format!("\"{name}\""));
    let (mut port, mut binding) = script_port(&script);
    let mut run_line = run_script(&f.pm, name);
    if binding == "flag:--port" && (script.contains("vite") || script.contains("astro")) {
        // Only npm needs `--` before a script's own flags; pnpm (7+), yarn
        // and bun pass them through, and pnpm would hand the script a
        // literal `--` after which vite ignores `--host` and `--port`.
        run_line.push_str(if f.pm == "npm" {
            " -- --host 0.0.0.0"
        } else {
            " --host 0.0.0.0"
        });
    }
    let mut server_file = None;
    if port == 0 && binding.is_empty() {
        let (p, b, src) = scan_server(idx, dir, &script, &f.pkg);
        if p != 0 || !b.is_empty() {
            port = p;
            binding = b;
            if let Some((file, line, detail)) = src {
                s.d.note(ev("port", &file, line, detail, weight::FRAMEWORK));
                server_file = Some(file);
            }
        }
    }
    let mut c = watch_cmd(run_line, is_watch(&script));
    if let Some(c) = c.as_mut() {
        c.watch_mode = is_watch(&script);
    }
    s.d.set_start(
        ev("start", &f.pkg_file, line, format!("{name}: {script}"), w),
        c,
        port,
        &binding,
    );
    if is_delegating(&script) {
        s.d.warnings
            .push(format!("the {name} script delegates to other packages: {script}"));
    }
    raw_tcp_kind(s, server_file.as_deref());
}

/// A server file of no HTTP framework that serves its own protocol over
/// `net` makes the component a service (probed by connecting).
fn raw_tcp_kind(s: &mut Scan<'_>, server_file: Option<&str>) {
    let http_deps =
        s.d.has_any_dep(&["express", "fastify", "koa", "hono", "@hapi/hapi", "next"]);
    if !http_deps
        && let Some(file) = server_file
        && s.idx.read_source(file).is_some_and(|t| serves_raw_tcp(&t))
    {
        s.d.set_kind(ComponentKind::Service);
    }
}

/// Without a start script: `main` of a server package, else a conventional
/// file unless the package is a library.
fn entry_file(s: &mut Scan<'_>) {
    let (idx, dir, f) = (s.idx, s.dir, &s.facts);
    let pkg = &f.pkg;
    let main = pkg
        .get("main")
        .and_then(|v| v.as_str())
        .map(|m| m.trim_start_matches("./").to_owned());
    let main_exists = main.as_ref().is_some_and(|m| idx.has(&join(dir, m)));
    let conventional = [
        "server.js",
        "index.js",
        "app.js",
        "main.js",
        "server.ts",
        "src/index.js",
        "src/server.js",
    ]
    .iter()
    .find(|f| idx.has(&join(dir, f)))
    .map(|f| (*f).to_owned());
    let server_deps =
        s.d.has_any_dep(&["express", "fastify", "koa", "hono", "@hapi/hapi"]);
    // `files` lists what a published package ships: a library's mark.
    let is_library = !server_deps
        && ["main", "exports", "module", "files"]
            .iter()
            .any(|key| pkg.get(key).is_some());
    // A conventional file that shows no server, in a package with tests, is
    // a library's entry: it would exit at once, and its tests are the goal.
    let has_tests = pkg
        .get("scripts")
        .and_then(|s| s.get("test"))
        .and_then(|t| t.as_str())
        .is_some_and(|t| !t.contains("no test specified"));
    let entry = if main_exists && server_deps {
        main.clone().map(|m| (m, weight::FRAMEWORK_GUESS))
    } else if is_library {
        None
    } else {
        conventional
            .filter(|c| server_deps || !has_tests || shows_a_server(idx, &join(dir, c)))
            .map(|c| (c, weight::CONVENTION))
    };
    let Some((file, w)) = entry else { return };
    let runner = if f.pm == "bun" {
        "bun"
    } else if file.ends_with(".ts") {
        "npx tsx"
    } else {
        "node"
    };
    let (port, binding, src) = scan_file(idx, &join(dir, &file));
    if let Some((f, line, detail)) = src {
        s.d.note(ev("port", &f, line, detail, weight::FRAMEWORK));
    }
    s.d.set_start(
        ev("start", &join(dir, &file), 0, format!("entry file {file}"), w),
        watch_cmd(format!("{runner} {file}"), false),
        port,
        &binding,
    );
    if port != 0 || !binding.is_empty() {
        raw_tcp_kind(s, Some(&join(dir, &file)));
    }
}

/// Whether a Node entry file serves a protocol of its own over `net`
/// (`net.createServer`) and no HTTP: it is up when its port accepts
/// connections, an HTTP probe would never pass.
fn serves_raw_tcp(text: &str) -> bool {
    let uses = |module: &str| {
        [
            format!("require('{module}')"),
            format!("require(\"{module}\")"),
            format!("from '{module}'"),
            format!("from \"{module}\""),
            format!("'node:{module}'"),
            format!("\"node:{module}\""),
        ]
        .iter()
        .any(|form| text.contains(form.as_str()))
    };
    uses("net") && text.contains("createServer(") && !uses("http") && !uses("https") && !uses("http2")
}

/// Next listens on $PORT (3000); nothing to start is a library.
fn start_defaults(s: &mut Scan<'_>) {
    if s.d.has_framework("next") && s.d.c.port == 0 {
        s.d.c.port = 3000;
        s.d.c.port_binding = "env:PORT".into();
    }
    if s.d.c.start.is_none() {
        s.d.set_kind(ComponentKind::Library);
    }
}

/// .nvmrc / .node-version, volta, then engines (which win a conflict).
fn runtime(s: &mut Scan<'_>) {
    let name = if s.facts.pm == "bun" { "bun" } else { "node" };
    let pin = version_file(s, name);
    let (f, d) = (&s.facts, &mut s.d);
    if let Some(v) = f
        .pkg
        .get("volta")
        .and_then(|v| v.get(name))
        .and_then(|v| v.as_str())
    {
        d.set_runtime(
            ev(
                "runtime",
                &f.pkg_file,
                find_line(&f.text, "\"volta\""),
                format!("volta {name} {v}"),
                0.85,
            ),
            name,
            v,
        );
    }
    if let Some(engines) = f
        .pkg
        .get("engines")
        .and_then(|e| e.get(name))
        .and_then(|v| v.as_str())
        && engines_conflict(d, f, name, engines, pin.as_ref())
    {
        return;
    }
    if d.c.runtime.is_none() {
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: name.into(),
            version_constraint: String::new(),
            preferred_version: String::new(),
        });
    }
}

/// The first version file found in the package or at the workspace root.
fn version_file(s: &mut Scan<'_>, name: &str) -> Option<(String, String)> {
    for f in [".nvmrc", ".node-version"] {
        for base in [s.dir, s.facts.install_dir.as_str()] {
            let path = join(base, f);
            if let Some(t) = s.idx.read(&path)
                && let Some(v) = t
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let v = v.trim_start_matches('v').to_owned();
                if name == "node" {
                    s.d.set_runtime(ev("runtime", &path, 1, format!("node {v}"), 0.9), "node", &v);
                }
                return Some((path.clone(), v));
            }
        }
    }
    None
}

/// `engines`: the runtime unless a version file pins it; true when the pin
/// conflicts with it (engines then wins and the runtime is final).
fn engines_conflict(
    d: &mut Draft,
    f: &Facts,
    name: &str,
    engines: &str,
    pin: Option<&(String, String)>,
) -> bool {
    let line = find_line(&f.text, "\"engines\"");
    let pkg_file = &f.pkg_file;
    let e = ev(
        "runtime",
        pkg_file,
        line,
        format!("engines.{name}: {engines}"),
        weight::MANIFEST,
    );
    let Some((file, v)) = pin else {
        d.set_runtime(e, name, engines);
        return false;
    };
    let req = semver::VersionReq::parse(&semver_friendly(engines));
    let have = semver::Version::parse(&pad_semver(v));
    if let (Ok(req), Ok(have)) = (req, have)
        && !req.matches(&have)
    {
        d.warnings.push(format!(
            "{file} pins node {v} but {pkg_file} engines.node is {engines}; using {engines}"
        ));
        d.c.runtime = None;
        d.set_runtime(
            ev(
                "runtime",
                pkg_file,
                line,
                format!("engines.{name}: {engines} (conflict)"),
                0.99,
            ),
            name,
            engines,
        );
        return true;
    }
    d.note(e);
    false
}

/// Port conventions of well-known commands in a script.
fn script_port(script: &str) -> (u32, String) {
    let s = script;
    let explicit = Regex::new(r"(?:--port[= ]|-p[= ]?)(\d{2,5})")
        .ok()
        .and_then(|re| re.captures(s))
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<u32>().ok());
    if s.contains("next ")
        || s.starts_with("next")
        || s.contains("react-scripts start")
        || s.contains("nuxt")
        || s.contains("remix-serve")
    {
        return (explicit.unwrap_or(3000), "env:PORT".into());
    }
    if s.contains("vite preview") {
        return (explicit.unwrap_or(4173), "flag:--port".into());
    }
    if s.contains("vite") || s.contains("astro dev") || s.contains("astro preview") {
        let port = if s.contains("astro") { 4321 } else { 5173 };
        return (explicit.unwrap_or(port), "flag:--port".into());
    }
    if s.contains("webpack serve") || s.contains("webpack-dev-server") {
        return (explicit.unwrap_or(8080), "flag:--port".into());
    }
    if s.contains("ng serve") {
        return (explicit.unwrap_or(4200), "flag:--port".into());
    }
    if s.contains("serve -s") || s.starts_with("serve ") || s.contains("http-server") {
        return (explicit.unwrap_or(3000), "env:PORT".into());
    }
    if s.contains("gatsby") {
        return (explicit.unwrap_or(8000), "flag:-p".into());
    }
    (0, String::new())
}

/// Finds the server file a script runs (or main / conventional files) and
/// reads its port.
fn scan_server(
    idx: &RepoIndex,
    dir: &str,
    script: &str,
    pkg: &Value,
) -> (u32, String, Option<(String, u32, String)>) {
    let mut files: Vec<String> = Vec::new();
    for tok in script.split_whitespace() {
        let t = tok.trim_matches(['"', '\'']);
        if [".js", ".ts", ".mjs", ".cjs"].iter().any(|e| t.ends_with(e)) {
            files.push(t.trim_start_matches("./").to_owned());
            // dist/main.js → src/main.ts
            if let Some(rest) = t.strip_prefix("dist/") {
                files.push(format!("src/{}", rest.replace(".js", ".ts")));
            }
        }
    }
    if script.contains("nest start") || script.contains("dist/main") {
        files.push("src/main.ts".into());
    }
    if let Some(m) = pkg.get("main").and_then(|v| v.as_str()) {
        files.push(m.trim_start_matches("./").to_owned());
    }
    files.extend(
        [
            "server.js",
            "index.js",
            "app.js",
            "src/index.ts",
            "src/server.ts",
            "src/index.js",
            "src/server.js",
            "src/app.ts",
            "src/main.ts",
            "bin/www",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    for f in files {
        let path = join(dir, &f);
        if idx.has(&path) {
            let found = scan_file(idx, &path);
            if found.0 != 0 || !found.1.is_empty() {
                return found;
            }
        }
    }
    (0, String::new(), None)
}

/// Whether a source file starts something long-running: a server's
/// `listen`/`createServer`, or a port from the environment.
fn shows_a_server(idx: &RepoIndex, path: &str) -> bool {
    idx.read_source(path).is_some_and(|text| {
        ["listen(", "createServer(", "process.env.PORT", "serve("]
            .iter()
            .any(|mark| text.contains(mark))
    })
}

fn scan_file(idx: &RepoIndex, path: &str) -> (u32, String, Option<(String, u32, String)>) {
    let Some(text) = idx.read_source(path) else {
        return (0, String::new(), None);
    };
    let uses_env = text.contains("process.env.PORT")
        || text.contains("process.env['PORT']")
        || text.contains("process.env[\"PORT\"]");
    let found = LISTEN_PORT
        .as_ref()
        .and_then(|re| re.captures(&text))
        .and_then(|c| c.get(1));
    let port = found
        .and_then(|m| m.as_str().parse::<u32>().ok())
        .filter(|p| *p > 0 && *p < 65536)
        .unwrap_or(0);
    let line = found.map_or_else(
        || find_line(&text, "process.env.PORT"),
        |m| line_of(&text, m.start()),
    );
    let binding = if uses_env {
        "env:PORT".to_owned()
    } else {
        String::new()
    };
    if port == 0 && !uses_env {
        return (0, String::new(), None);
    }
    // With no literal the port is whatever $PORT says; finish() picks a default.
    (
        port,
        binding,
        Some((
            path.to_owned(),
            line,
            format!("listens on {port}{}", if uses_env { " or $PORT" } else { "" }),
        )),
    )
}
