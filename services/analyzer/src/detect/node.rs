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

use super::{default_name, find_line, line_of, rel_to, weight};
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

/// Matches a workspace glob (`apps/*`, `packages/**`, `tools/cli`) against a
/// directory relative to the workspace root.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim().trim_start_matches("./").trim_end_matches('/');
    let mut pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).take(32).collect();
    // `**/**` is `**`; collapsing keeps the match linear in practice.
    pat.dedup_by(|a, b| *a == "**" && *b == "**");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    fn rec(p: &[&str], s: &[&str], depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => rec(&p[1..], s, depth + 1) || (!s.is_empty() && rec(p, &s[1..], depth + 1)),
            (Some(ps), Some(ss)) => seg_match(ps, ss) && rec(&p[1..], &s[1..], depth + 1),
            _ => false,
        }
    }
    rec(&pat, &segs, 0)
}

fn seg_match(p: &str, s: &str) -> bool {
    match p.split_once('*') {
        None => p == s,
        Some((pre, post)) => s.len() >= pre.len() + post.len() && s.starts_with(pre) && s.ends_with(post),
    }
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
            let rel = super::rel_to(root, dir);
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

/// Whether a script never exits by itself because it watches files.
pub fn is_watch(script: &str) -> bool {
    let s = script.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let has = |w: &str| words.contains(&w);
    if s.contains("nodemon")
        || s.contains("--watch")
        || s.contains("--watchAll")
        || s.contains("ts-node-dev")
        || s.contains("tsx watch")
        || s.contains("next dev")
        || s.contains("nuxt dev")
        || s.contains("astro dev")
        || s.contains("react-scripts start")
        || s.contains("webpack serve")
        || s.contains("webpack-dev-server")
        || s.contains("ng serve")
        || s.contains("vue-cli-service serve")
        || s.contains("remix dev")
        || s.contains("gatsby develop")
        || s.contains("node --watch")
        || s.contains("bun --watch")
        || s.contains("bun --hot")
    {
        return true;
    }
    // vitest watches unless told `run` (or --run); `vitest watch`/`vitest dev` too.
    if let Some(pos) = words.iter().position(|w| *w == "vitest") {
        let next = words.get(pos + 1).copied().unwrap_or("");
        return next != "run" && !has("--run");
    }
    // vite: bare `vite` or `vite dev`/`vite serve` is the dev server.
    if let Some(pos) = words.iter().position(|w| *w == "vite") {
        let next = words.get(pos + 1).copied().unwrap_or("");
        return !matches!(next, "build" | "preview" | "optimize");
    }
    false
}

/// `>=16 <21` → `>=16, <21`; first alternative of `||`; for the semver crate.
pub fn semver_friendly(constraint: &str) -> String {
    let first = constraint.split("||").next().unwrap_or(constraint).trim();
    let mut out: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for tok in first.split_whitespace() {
        if tok == "-" {
            // hyphen ranges: keep it simple
            continue;
        }
        if matches!(tok, ">=" | "<=" | ">" | "<" | "=" | "^" | "~") {
            pending_op = tok.to_owned();
            continue;
        }
        out.push(format!("{pending_op}{}", tok.trim_start_matches('v')));
        pending_op.clear();
    }
    out.join(", ")
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let mut d = Draft::new(&default_name(idx, dir), dir, "javascript");
    let pkg_file = join(dir, "package.json");
    let (text, pkg) =
        read_pkg(idx, dir).unwrap_or_else(|| (String::new(), Value::Object(Default::default())));
    if let Some(name) = pkg.get("name").and_then(|v| v.as_str()) {
        d.c.name = name.to_owned();
    }
    let deps = dep_names(&pkg);
    d.deps = deps.clone();

    // Workspace root (for members): the closest ancestor declaring workspaces.
    let mut ws_root: Option<String> = None;
    let mut p = dir.to_owned();
    while !p.is_empty() {
        p = parent_of(&p).to_owned();
        let globs = workspace_globs(idx, &p);
        if globs.iter().any(|g| glob_match(g, rel_to(&p, dir))) {
            ws_root = Some(p.clone());
            break;
        }
    }
    let install_dir = ws_root.clone().unwrap_or_else(|| dir.to_owned());
    let root_pkg = ws_root.as_deref().and_then(|r| read_pkg(idx, r)).map(|(_, v)| v);

    // Package manager.
    let pm_field = pkg
        .get("packageManager")
        .and_then(|v| v.as_str())
        .or_else(|| {
            root_pkg
                .as_ref()
                .and_then(|r| r.get("packageManager"))
                .and_then(|v| v.as_str())
        })
        .map(str::to_owned);
    let lock = |name: &str| -> Option<String> {
        let here = join(dir, name);
        if idx.has(&here) {
            return Some(here);
        }
        let there = join(&install_dir, name);
        idx.has(&there).then_some(there)
    };
    let (pm, pm_evidence) = if let Some(field) = &pm_field {
        let name = field.split('@').next().unwrap_or("npm").to_owned();
        let name = if ["npm", "pnpm", "yarn", "bun"].contains(&name.as_str()) {
            name
        } else {
            "npm".into()
        };
        (
            name,
            ev(
                "package_manager",
                &pkg_file,
                find_line(&text, "packageManager"),
                format!("packageManager: {field}"),
                0.95,
            ),
        )
    } else if let Some(f) = lock("bun.lockb").or_else(|| lock("bun.lock")) {
        (
            "bun".into(),
            ev("package_manager", &f, 0, "bun lockfile", weight::MANIFEST),
        )
    } else if let Some(f) = lock("pnpm-lock.yaml").or_else(|| lock("pnpm-workspace.yaml")) {
        (
            "pnpm".into(),
            ev(
                "package_manager",
                &f,
                0,
                "pnpm lockfile/workspace",
                weight::MANIFEST,
            ),
        )
    } else if let Some(f) = lock("yarn.lock") {
        (
            "yarn".into(),
            ev("package_manager", &f, 0, "yarn.lock", weight::MANIFEST),
        )
    } else if let Some(f) = lock("package-lock.json").or_else(|| lock("npm-shrinkwrap.json")) {
        (
            "npm".into(),
            ev("package_manager", &f, 0, "package-lock.json", weight::MANIFEST),
        )
    } else {
        (
            "npm".into(),
            ev("package_manager", &pkg_file, 0, "no lockfile: npm", 0.5),
        )
    };
    d.note(pm_evidence);
    d.c.package_manager = pm.clone();
    let has_npm_lock = lock("package-lock.json").is_some();
    let install = match pm.as_str() {
        "npm" if has_npm_lock => "npm ci",
        "npm" => "npm install",
        "pnpm" => "pnpm install",
        "yarn" => "yarn install",
        _ => "bun install",
    };
    let wd = if ws_root.is_some() {
        if install_dir.is_empty() {
            ".".to_owned()
        } else {
            install_dir.clone()
        }
    } else {
        String::new()
    };
    d.offer(ev("install", &pkg_file, 0, install, weight::MANIFEST));
    d.c.install = cmd_in(install, &wd);

    // Language.
    if idx.has(&join(dir, "tsconfig.json")) || deps.contains("typescript") {
        d.c.language = "typescript".into();
    }

    // Runtime.
    node_runtime(idx, &mut d, dir, &install_dir, &pkg, &text, &pkg_file, &pm);

    // Frameworks.
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
        if deps.contains(dep) {
            d.add_framework(fw);
        }
    }

    let scripts: BTreeMap<String, String> = pkg
        .get("scripts")
        .and_then(|s| s.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .take(500)
                .collect()
        })
        .unwrap_or_default();
    let run = |script: &str| -> String {
        match (pm.as_str(), script) {
            ("npm", "start") => "npm start".into(),
            ("npm", "test") => "npm test".into(),
            ("npm", s) => format!("npm run {s}"),
            ("yarn", s) => format!("yarn {s}"),
            ("pnpm", s) => format!("pnpm run {s}"),
            (_, s) => format!("bun run {s}"),
        }
    };

    if let Some(b) = scripts.get("build") {
        d.offer(ev(
            "build",
            &pkg_file,
            find_line(&text, "\"build\""),
            format!("build: {b}"),
            weight::SCRIPT,
        ));
        d.c.build = watch_cmd(run("build"), is_watch(b));
    }
    if let Some(t) = scripts.get("test")
        && !t.contains("no test specified")
    {
        d.offer(ev(
            "test",
            &pkg_file,
            find_line(&text, "\"test\""),
            format!("test: {t}"),
            weight::SCRIPT,
        ));
        d.c.test = watch_cmd(run("test"), is_watch(t) || t.contains("jest --watch"));
    }

    // Start.
    let candidates = [
        ("start", weight::SCRIPT),
        ("dev", weight::SCRIPT * 0.9),
        ("serve", weight::SCRIPT * 0.85),
        ("start:dev", weight::SCRIPT * 0.8),
    ];
    d.scripts = scripts.keys().cloned().collect();
    let chosen = candidates.iter().find(|(name, _)| {
        scripts
            .get(*name)
            .is_some_and(|s| !(s.trim().is_empty() || *name != "start" && is_build_watcher(s)))
    });
    let is_next = d.has_framework("next");
    if let Some((name, w)) = chosen {
        let script = scripts.get(*name).cloned().unwrap_or_default();
        let line = find_line(&text, &format!("\"{name}\""));
        let (mut port, mut binding) = script_port(&script);
        let mut run_line = run(name);
        if binding == "flag:--port" && (script.contains("vite") || script.contains("astro")) {
            // Only npm needs `--` before a script's own flags; pnpm (7+), yarn
            // and bun pass them through, and pnpm would hand the script a
            // literal `--` after which vite ignores `--host` and `--port`.
            run_line.push_str(if pm == "npm" {
                " -- --host 0.0.0.0"
            } else {
                " --host 0.0.0.0"
            });
        }
        if port == 0 && binding.is_empty() {
            let (p, b, src) = scan_server(idx, dir, &script, &pkg);
            if p != 0 || !b.is_empty() {
                port = p;
                binding = b;
                if let Some((file, line, detail)) = src {
                    d.note(ev("port", &file, line, detail, weight::FRAMEWORK));
                }
            }
        }
        let mut c = watch_cmd(run_line, is_watch(&script));
        if let Some(c) = c.as_mut() {
            c.watch_mode = is_watch(&script);
        }
        d.set_start(
            ev("start", &pkg_file, line, format!("{name}: {script}"), *w),
            c,
            port,
            &binding,
        );
        if is_delegating(&script) {
            d.warnings
                .push(format!("the {name} script delegates to other packages: {script}"));
        }
    } else if is_next {
        d.set_start(
            ev(
                "start",
                &pkg_file,
                0,
                "next dependency without scripts",
                weight::FRAMEWORK_GUESS,
            ),
            cmd_in("npx next start", ""),
            3000,
            "env:PORT",
        );
    } else {
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
        let server_deps = deps
            .iter()
            .any(|d| ["express", "fastify", "koa", "hono", "@hapi/hapi"].contains(&d.as_str()));
        let is_library = !server_deps
            && (pkg.get("main").is_some() || pkg.get("exports").is_some() || pkg.get("module").is_some());
        let entry = if main_exists && server_deps {
            main.clone().map(|m| (m, weight::FRAMEWORK_GUESS))
        } else if is_library {
            None
        } else {
            conventional.map(|c| (c, weight::CONVENTION))
        };
        if let Some((file, w)) = entry {
            let runner = if pm == "bun" {
                "bun"
            } else if file.ends_with(".ts") {
                "npx tsx"
            } else {
                "node"
            };
            let (port, binding, src) = scan_file(idx, &join(dir, &file));
            if let Some((f, line, detail)) = src {
                d.note(ev("port", &f, line, detail, weight::FRAMEWORK));
            }
            d.set_start(
                ev("start", &join(dir, &file), 0, format!("entry file {file}"), w),
                watch_cmd(format!("{runner} {file}"), false),
                port,
                &binding,
            );
        }
    }
    if is_next && d.c.port == 0 {
        d.c.port = 3000;
        d.c.port_binding = "env:PORT".into();
    }
    if d.c.start.is_none() {
        d.set_kind(ComponentKind::Library);
    }
    vec![d]
}

#[allow(clippy::too_many_arguments)]
fn node_runtime(
    idx: &RepoIndex,
    d: &mut Draft,
    dir: &str,
    install_dir: &str,
    pkg: &Value,
    text: &str,
    pkg_file: &str,
    pm: &str,
) {
    let name = if pm == "bun" { "bun" } else { "node" };
    let mut pin: Option<(String, String)> = None;
    for f in [".nvmrc", ".node-version"] {
        for base in [dir, install_dir] {
            let path = join(base, f);
            if let Some(t) = idx.read(&path)
                && let Some(v) = t
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let v = v.trim_start_matches('v').to_owned();
                if name == "node" {
                    d.set_runtime(ev("runtime", &path, 1, format!("node {v}"), 0.9), "node", &v);
                }
                pin = Some((path.clone(), v));
                break;
            }
        }
        if pin.is_some() {
            break;
        }
    }
    if let Some(v) = pkg
        .get("volta")
        .and_then(|v| v.get(name))
        .and_then(|v| v.as_str())
    {
        d.set_runtime(
            ev(
                "runtime",
                pkg_file,
                find_line(text, "\"volta\""),
                format!("volta {name} {v}"),
                0.85,
            ),
            name,
            v,
        );
    }
    if let Some(engines) = pkg
        .get("engines")
        .and_then(|e| e.get(name))
        .and_then(|v| v.as_str())
    {
        let e = ev(
            "runtime",
            pkg_file,
            find_line(text, "\"engines\""),
            format!("engines.{name}: {engines}"),
            weight::MANIFEST,
        );
        if let Some((file, v)) = &pin {
            let req = semver::VersionReq::parse(&semver_friendly(engines));
            let have = semver::Version::parse(&super::pad_semver(v));
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
                        find_line(text, "\"engines\""),
                        format!("engines.{name}: {engines} (conflict)"),
                        0.99,
                    ),
                    name,
                    engines,
                );
                return;
            }
            d.note(e);
        } else {
            d.set_runtime(e, name, engines);
        }
    }
    if d.c.runtime.is_none() {
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: name.into(),
            version_constraint: String::new(),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_mode_is_detected() {
        assert!(is_watch("vitest"));
        assert!(!is_watch("vitest run"));
        assert!(!is_watch("vitest --run"));
        assert!(is_watch("jest --watch"));
        assert!(!is_watch("jest"));
        assert!(is_watch("nodemon server.js"));
        assert!(is_watch("next dev"));
        assert!(!is_watch("next start"));
        assert!(is_watch("vite"));
        assert!(!is_watch("vite build"));
        assert!(!is_watch("node server.js"));
    }

    #[test]
    fn workspace_globs_match() {
        assert!(glob_match("packages/*", "packages/ui"));
        assert!(!glob_match("packages/*", "packages/ui/x"));
        assert!(glob_match("apps/**", "apps/web/x"));
        assert!(glob_match("./tools/cli/", "tools/cli"));
        assert!(glob_match("pkg-*", "pkg-a"));
    }

    #[test]
    fn engines_become_semver_requirements() {
        assert_eq!(semver_friendly(">=16 <21"), ">=16, <21");
        assert_eq!(semver_friendly("^18 || ^20"), "^18");
        assert!(semver::VersionReq::parse(&semver_friendly(">= 18.0.0")).is_ok());
    }
}
