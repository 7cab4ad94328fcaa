//! Detection: find component roots in the index, let each ecosystem's
//! detector fill them in, then lay the cross-cutting evidence (Procfile,
//! Dockerfile, compose, devcontainer, env templates, README) over them.

mod compose;
mod docker;
mod env;
mod go;
mod init;
mod java;
mod native;
mod node;
mod pass;
mod procfile;
mod python;
mod readme;
mod rust;
mod static_site;
mod util;

use std::collections::BTreeSet;

use reporunner_proto::common::v1::{BackingServiceKind, ComponentKind, Environment, RunPlan};

use crate::{
    config::AnalyzerConfig,
    draft::{Draft, default_env_for, ev},
    index::{RepoIndex, file_name, parent_of},
};

use util::{pad_semver, semver_friendly};

/// Evidence weights, strongest first.
pub mod weight {
    /// A Procfile `web:` line: the author said how to run it in production.
    pub const PROCFILE: f64 = 0.95;
    /// A package.json `start` script.
    pub const SCRIPT: f64 = 0.9;
    /// A framework's own entry point found in code (app object, manage.py).
    pub const FRAMEWORK: f64 = 0.85;
    /// A manifest field read as such (lockfile, engines, requires-python).
    pub const MANIFEST: f64 = 0.8;
    /// A framework is a dependency but its entry point was guessed.
    pub const FRAMEWORK_GUESS: f64 = 0.6;
    /// Dockerfile CMD/ENTRYPOINT.
    pub const DOCKER: f64 = 0.6;
    /// docker-compose service command/ports.
    pub const COMPOSE: f64 = 0.55;
    /// devcontainer.json.
    pub const DEVCONTAINER: f64 = 0.5;
    /// A conventional file name (main.py, index.js) with no other signal.
    pub const CONVENTION: f64 = 0.45;
    /// A README shell block.
    pub const README: f64 = 0.3;
}

/// Directory names whose manifests are never components on their own.
const NOT_COMPONENT_DIRS: &[&str] = &[
    "test",
    "tests",
    "testing",
    "fixtures",
    "fixture",
    "testdata",
    "__tests__",
    "e2e",
    "example",
    "examples",
    "docs",
    "doc",
    "documentation",
    "samples",
    "sample",
    "benchmarks",
    "bench",
    "benches",
    "templates",
    "template",
    "scripts",
    "tools",
    ".github",
    "third_party",
    "third-party",
    "deps",
    "external",
    "playground",
];

/// Manifest file names that make a directory a component root.
const MANIFESTS: &[&str] = &[
    "package.json",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "requirements.txt",
    "Pipfile",
    "environment.yml",
    "environment.yaml",
    "manage.py",
    "Cargo.toml",
    "go.mod",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "CMakeLists.txt",
    "Makefile",
    "makefile",
    "GNUmakefile",
];

/// The deepest a component root may sit below the workspace root.
const MAX_COMPONENT_DEPTH: usize = 4;

/// Which ecosystem a component root belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Eco {
    Python,
    Node,
    Rust,
    Go,
    Java,
    Native,
}

/// Builds the plan from the index.
pub fn plan(idx: &RepoIndex, environment: Option<&Environment>, config: &AnalyzerConfig) -> RunPlan {
    let mut drafts: Vec<Draft> = Vec::new();
    let roots = component_roots(idx);
    for (dir, eco) in &roots {
        if drafts.len() >= config.max_components {
            idx.warn(format!(
                "more than {} components; the rest were not analyzed",
                config.max_components
            ));
            break;
        }
        if idx.expired() {
            idx.warn("the time budget ran out; the plan is partial");
            break;
        }
        let found = match eco {
            Eco::Python => python::detect(idx, dir),
            Eco::Node => node::detect(idx, dir),
            Eco::Rust => rust::detect(idx, dir),
            Eco::Go => go::detect(idx, dir),
            Eco::Java => java::detect(idx, dir),
            Eco::Native => native::detect(idx, dir),
        };
        drafts.extend(found);
    }
    if !drafts.iter().any(|d| d.dir().is_empty())
        && let Some(d) = static_site::detect(idx, "")
    {
        drafts.push(d);
    }

    // Cross-cutting evidence.
    procfile::apply(idx, &mut drafts);
    docker::apply(idx, &mut drafts);
    compose::apply(idx, &mut drafts);
    docker::apply_devcontainer(idx, &mut drafts);
    readme::apply(idx, &mut drafts);
    for d in &mut drafts {
        if idx.expired() {
            break;
        }
        init::apply(idx, d);
        env::apply(idx, d);
    }
    let mut warnings: Vec<String> = Vec::new();
    for d in &mut drafts {
        finish(d, environment, &mut warnings);
    }
    unique_names(&mut drafts);
    warnings.extend(idx.warnings.borrow().iter().cloned());
    if drafts.is_empty() {
        warnings.push("no runnable component was found: no manifest, entry point or README command".into());
    }
    RunPlan {
        workspace_id: String::new(),
        components: drafts.into_iter().map(|d| d.c).collect(),
        files_considered: idx.considered(),
        warnings,
        generator: String::new(),
        applied_patches: Vec::new(),
    }
}

/// Each ecosystem detector and its passes (`stage/name`), in the order
/// they run, for printing.
pub fn detector_passes() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("python", python::passes()),
        ("node", node::passes()),
        ("rust", rust::passes()),
        ("go", go::passes()),
        ("java", java::passes()),
        ("native", native::passes()),
    ]
}

/// Component roots: directories holding a manifest, minus those that belong
/// to a component above them (Cargo/Maven/Gradle modules, nested Python
/// packages) and those in test, example and doc trees.
fn component_roots(idx: &RepoIndex) -> Vec<(String, Eco)> {
    let mut found: BTreeSet<(String, Eco)> = BTreeSet::new();
    for file in idx.files() {
        let name = file_name(file);
        // requirements/base.txt makes its parent's parent a Python root.
        let (name, dir) = if name.ends_with(".txt") && file_name(parent_of(file)) == "requirements" {
            ("requirements.txt", parent_of(parent_of(file)))
        } else {
            (name, parent_of(file))
        };
        if !MANIFESTS.contains(&name) {
            continue;
        }
        if !dir.is_empty() && dir.split('/').count() > MAX_COMPONENT_DEPTH {
            continue;
        }
        if dir
            .split('/')
            .any(|seg| NOT_COMPONENT_DIRS.contains(&seg) || seg.starts_with('.'))
            && !dir.is_empty()
        {
            continue;
        }
        let eco = match name {
            "package.json" => Eco::Node,
            "Cargo.toml" => Eco::Rust,
            "go.mod" => Eco::Go,
            "pom.xml" | "build.gradle" | "build.gradle.kts" => Eco::Java,
            "CMakeLists.txt" | "Makefile" | "makefile" | "GNUmakefile" => Eco::Native,
            _ => Eco::Python,
        };
        found.insert((dir.to_owned(), eco));
    }
    // A C/C++ library whose only Makefile runs its tests (`tests/Makefile`):
    // the root is the component, tested with that Makefile.
    if found.iter().all(|(d, e)| !d.is_empty() || *e == Eco::Node) && native::tests_makefile(idx).is_some() {
        found.insert((String::new(), Eco::Native));
    }
    let dirs_of = |eco: Eco| -> BTreeSet<String> {
        found
            .iter()
            .filter(|(_, e)| *e == eco)
            .map(|(d, _)| d.clone())
            .collect()
    };
    let node_members = node::workspace_members(idx, &dirs_of(Eco::Node));
    let (uv_roots, uv_members) = python::uv_workspaces(idx, &dirs_of(Eco::Python));
    let mut roots = Vec::new();
    let all: BTreeSet<String> = found.iter().map(|(d, _)| d.clone()).collect();
    for (dir, eco) in &found {
        let same = dirs_of(*eco);
        let under_same = has_ancestor_in(dir, &same);
        let keep = match eco {
            // A nested package.json is its own component (frontend/, apps/web).
            Eco::Node => node::is_component(idx, dir, &all, &node_members),
            Eco::Python => {
                if uv_roots.contains(dir) {
                    false
                } else {
                    uv_members.contains(dir) || !under_same
                }
            }
            Eco::Rust | Eco::Go | Eco::Java => !under_same,
            Eco::Native => {
                !under_same
                    && !found.iter().any(|(d, e)| {
                        d == dir && *e != Eco::Native && !(*e == Eco::Node && node_inert(idx, d))
                    })
                    && !has_ancestor_in(dir, &all)
            }
        };
        if keep {
            roots.push((dir.clone(), *eco));
        }
    }
    // Root first, then by path.
    roots.sort_by(|a, b| (a.0.is_empty(), &b.0).cmp(&(b.0.is_empty(), &a.0)).reverse());
    roots
}

/// Whether the package.json at `dir` is one npm has nothing to do with.
fn node_inert(idx: &RepoIndex, dir: &str) -> bool {
    !node::is_component(idx, dir, &BTreeSet::new(), &std::collections::BTreeMap::new())
}

fn has_ancestor_in(dir: &str, dirs: &BTreeSet<String>) -> bool {
    if dir.is_empty() {
        return false;
    }
    let mut p = parent_of(dir);
    loop {
        if dirs.contains(p) {
            return true;
        }
        if p.is_empty() {
            return false;
        }
        p = parent_of(p);
    }
}

/// Versions of a runtime the host has, from the environment's toolchains.
pub fn host_versions(environment: Option<&Environment>, names: &[&str]) -> Vec<String> {
    let Some(env) = environment else { return Vec::new() };
    let mut out: Vec<String> = env
        .toolchains
        .iter()
        .filter(|t| {
            names
                .iter()
                .any(|n| t.name == *n || t.name.starts_with(&format!("{n}3.")))
        })
        .map(|t| t.version.clone())
        .filter(|v| !v.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Does the host version `have` satisfy `constraint` (ecosystem syntax)?
fn satisfies(runtime: &str, constraint: &str, have: &str) -> Option<bool> {
    match runtime {
        "python" => {
            let specs: pep440_rs::VersionSpecifiers = constraint.parse().ok()?;
            let version: pep440_rs::Version = have.parse().ok()?;
            Some(specs.contains(&version))
        }
        "node" | "bun" => {
            let req = semver::VersionReq::parse(&semver_friendly(constraint)).ok()?;
            let version = semver::Version::parse(&pad_semver(have)).ok()?;
            Some(req.matches(&version))
        }
        _ => None,
    }
}

/// Confidence, defaults and the host check, once every detector ran.
fn finish(d: &mut Draft, environment: Option<&Environment>, warnings: &mut Vec<String>) {
    let name = d.c.name.clone();
    for w in d.warnings.drain(..) {
        warnings.push(format!("{name}: {w}"));
    }
    default_port(d);
    default_kind(d);
    backing_env_vars(d);
    check_host_runtime(d, environment, &name, warnings);
    let mut confidence = if d.c.start.is_some() {
        d.weight("start")
    } else {
        d.weight("install") * 0.9
    };
    if d.c.start.is_some() && d.kind() == ComponentKind::Web && d.c.port == 0 && d.c.port_binding.is_empty() {
        confidence -= 0.15;
    }
    if d.from_readme {
        confidence = confidence.min(weight::README);
    }
    d.c.confidence = (confidence.clamp(0.05, 0.99) * 100.0).round() / 100.0;
    for e in &mut d.c.evidence {
        e.weight = (e.weight * 100.0).round() / 100.0;
    }
}

/// A valid port; `env:PORT` (bound or read from an env var) with the
/// language's conventional default.
fn default_port(d: &mut Draft) {
    if d.c.port > 65535 {
        d.c.port = 0;
    }
    if d.c.port == 0 && d.c.port_binding == "env:PORT" {
        d.c.port = match d.c.language.as_str() {
            "javascript" | "typescript" => 3000,
            "python" => 8000,
            _ => 8080,
        };
    }
    if d.c.start.is_some() && d.c.port_binding.is_empty() && d.c.env.iter().any(|e| e.name == "PORT") {
        d.c.port_binding = "env:PORT".into();
        if d.c.port == 0 {
            d.c.port =
                d.c.env
                    .iter()
                    .find(|e| e.name == "PORT")
                    .and_then(|e| e.default_value.parse().ok())
                    .unwrap_or(3000);
        }
    }
}

/// Library without a start, web with a port, else CLI; web gets `/` as health.
fn default_kind(d: &mut Draft) {
    if d.kind() == ComponentKind::Unspecified {
        let kind = if d.c.start.is_none() {
            ComponentKind::Library
        } else if d.c.port != 0 || !d.c.port_binding.is_empty() {
            ComponentKind::Web
        } else {
            ComponentKind::Cli
        };
        d.set_kind(kind);
    }
    if d.kind() == ComponentKind::Web && d.c.health_paths.is_empty() {
        d.c.health_paths = vec!["/".into()];
    }
}

/// The env vars a backing service is read from.
fn backing_env_vars(d: &mut Draft) {
    let env_names: Vec<(String, String)> =
        d.c.env
            .iter()
            .map(|e| (e.name.clone(), e.default_value.clone()))
            .collect();
    for b in &mut d.c.backing_services {
        let kind = BackingServiceKind::try_from(b.kind).unwrap_or(BackingServiceKind::Unspecified);
        let mut names: Vec<String> = env_names
            .iter()
            .filter(|(n, v)| crate::draft::backing_from_env(n, v) == Some(kind) || generic_db_var(n, kind))
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            names.push(default_env_for(kind).to_owned());
        }
        names.sort();
        names.dedup();
        b.env_vars = names;
    }
}

/// Runtime against the host: evidence when one fits, a warning when none does.
fn check_host_runtime(
    d: &mut Draft,
    environment: Option<&Environment>,
    name: &str,
    warnings: &mut Vec<String>,
) {
    let Some(rt) = d.c.runtime.clone() else { return };
    let names: &[&str] = match rt.name.as_str() {
        "python" => &["python3", "python"],
        "node" => &["node"],
        "bun" => &["bun"],
        "go" => &["go"],
        "rust" => &["rustc", "cargo"],
        "java" => &["java"],
        _ => &[],
    };
    let have = host_versions(environment, names);
    if have.is_empty() || rt.version_constraint.is_empty() {
        return;
    }
    let fitting: Vec<&String> = have
        .iter()
        .filter(|v| satisfies(&rt.name, &rt.version_constraint, v) == Some(true))
        .collect();
    if let Some(best) = fitting.last() {
        d.note(ev(
            "runtime",
            "",
            0,
            format!(
                "host has {} {best}, which satisfies {}",
                rt.name, rt.version_constraint
            ),
            0.0,
        ));
    } else if have
        .iter()
        .all(|v| satisfies(&rt.name, &rt.version_constraint, v).is_some())
    {
        warnings.push(format!(
            "{name}: needs {} {} but the host has {}",
            rt.name,
            rt.version_constraint,
            have.join(", ")
        ));
    }
}

fn generic_db_var(name: &str, kind: BackingServiceKind) -> bool {
    let n = name.to_ascii_uppercase();
    matches!(kind, BackingServiceKind::Postgresql | BackingServiceKind::Mysql)
        && (n == "DATABASE_URL" || n == "DB_URL" || n == "DB_HOST" || n == "SQLALCHEMY_DATABASE_URI")
}

fn unique_names(drafts: &mut [Draft]) {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for d in drafts.iter_mut() {
        let mut name = sanitize_name(&d.c.name);
        if name.is_empty() {
            name = "app".into();
        }
        if seen.contains(&name) {
            let alt = format!("{name}-{}", d.c.language);
            name = if seen.contains(&alt) {
                let mut i = 2;
                while seen.contains(&format!("{name}-{i}")) {
                    i += 1;
                }
                format!("{name}-{i}")
            } else {
                alt
            };
        }
        seen.insert(name.clone());
        d.c.name = name;
    }
}

fn sanitize_name(name: &str) -> String {
    let name = name.rsplit('/').next().unwrap_or(name);
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_detector_reads_its_manifest_first_and_names_each_pass_once() {
        for (stack, passes) in detector_passes() {
            assert!(
                passes.first().is_some_and(|p| p.starts_with("manifest/")),
                "{stack}: {passes:?}"
            );
            let unique: BTreeSet<&String> = passes.iter().collect();
            assert_eq!(unique.len(), passes.len(), "{stack}: {passes:?}");
        }
    }
}
