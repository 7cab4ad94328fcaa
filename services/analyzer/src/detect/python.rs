//! Python: requirements files, PEP 621, Poetry, uv, Pipenv, setup.py/cfg and
//! conda manifests; interpreter versions; Flask, FastAPI/Starlette, Django,
//! Streamlit and Gradio entry points; console scripts; pytest/unittest/tox.

use std::{str::FromStr, sync::LazyLock};

use regex::Regex;
use reporunner_proto::common::v1::ComponentKind;

use super::{
    pass::{self, Pass, Stage},
    util::{default_name, find_line, glob_match, line_of, rel_to, shell_quote, source_files},
    weight,
};
use crate::{
    draft::{Draft, cmd, ev},
    index::{RepoIndex, join},
};

static FASTAPI_APP: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?m)^([A-Za-z_]\w*)\s*(?::\s*[\w.\[\]]+\s*)?=\s*(?:fastapi\.|starlette\.applications\.)?(FastAPI|Starlette)\(").ok()
});
static FLASK_APP: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^([A-Za-z_]\w*)\s*=\s*(?:flask\.)?(Flask|APIFlask|Quart)\(").ok());
static FACTORY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^(?:async\s+)?def\s+(create_app|make_app)\s*\(").ok());
static MAIN_GUARD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?m)^if\s+__name__\s*==\s*['"]__main__['"]"#).ok());
static RUN_PORT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?:uvicorn\.run|\.run)\([^)]*port\s*=\s*(\d{2,5})").ok());
static SETTINGS_MODULE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]"#).ok());
static APP_ASSIGN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^(app|application|api)\s*(?::\s*\w+\s*)?=\s*[A-Za-z_][\w.]*\(").ok());
static STREAMLIT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*(?:import streamlit|from streamlit)").ok());
static GRADIO: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*(?:import gradio|from gradio)").ok());
static NAME_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)").ok());
static SETUP_PY_REQ: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"python_requires\s*=\s*['"]([^'"]+)['"]"#).ok());
static QUOTED: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r#"['"]([^'"]+)['"]"#).ok());
static CLASSIFIER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"Programming Language :: Python :: (3\.\d+)").ok());

/// Normalised distribution name (PEP 503).
pub fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The distribution name of a requirement line, if it is one.
pub fn requirement_name(line: &str) -> Option<String> {
    let line = line.split(" #").next().unwrap_or(line).trim();
    if line.is_empty()
        || line.starts_with('#')
        || line.starts_with('-')
        || line.contains("://") && !line.contains('@')
    {
        return None;
    }
    // Only the name, its extras and its version go to pep508_rs: the name is
    // all that is read here, and its marker and URL parsers are not needed.
    let head = line.split([';', '@']).next().unwrap_or(line).trim_end();
    // pep508_rs 0.9 panics (an `expect` in its name and extras parsers) on a
    // name or an extra that ends in a separator, e.g. `U.` or `x[a_]`. Such a
    // line names no distribution; such extras are not PEP 508 (the fuzz
    // target `manifests` found them: fuzz/regressions/manifests/).
    let name_end = head
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(head.len());
    if head[..name_end].ends_with(['-', '_', '.']) {
        return None;
    }
    if !extra_ends_in_separator(&head[name_end..])
        && let Ok(req) = pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::from_str(head)
    {
        return Some(normalize(req.name.as_ref()));
    }
    let re = NAME_RE.as_ref()?;
    re.captures(line)
        .and_then(|c| c.get(1))
        .map(|m| normalize(m.as_str()))
}

/// Whether the extras (`[a, b]`) at the start of `rest` hold one that ends
/// in a separator.
fn extra_ends_in_separator(rest: &str) -> bool {
    let Some(extras) = rest.trim_start().strip_prefix('[') else {
        return false;
    };
    let extras = extras.split(']').next().unwrap_or(extras);
    extras
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|extra| extra.ends_with(['-', '_', '.']))
}

/// uv workspaces: (roots that are only a workspace, member directories).
pub fn uv_workspaces(
    idx: &RepoIndex,
    python_dirs: &std::collections::BTreeSet<String>,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut roots = std::collections::BTreeSet::new();
    let mut members = std::collections::BTreeSet::new();
    for dir in python_dirs {
        let Some(text) = idx.read(&join(dir, "pyproject.toml")) else {
            continue;
        };
        let Ok(doc) = toml::from_str::<toml::Table>(&text) else {
            continue;
        };
        let Some(globs) = doc
            .get("tool")
            .and_then(|t| t.get("uv"))
            .and_then(|u| u.get("workspace"))
            .and_then(|w| w.get("members"))
            .and_then(|m| m.as_array())
        else {
            continue;
        };
        let globs: Vec<&str> = globs.iter().filter_map(|g| g.as_str()).take(100).collect();
        let mut found = false;
        for other in python_dirs {
            if other != dir
                && (dir.is_empty() || other.starts_with(&format!("{dir}/")))
                && globs.iter().any(|g| glob_match(g, rel_to(dir, other)))
            {
                members.insert(other.clone());
                found = true;
            }
        }
        if found && doc.get("project").and_then(|p| p.get("dependencies")).is_none() {
            roots.insert(dir.clone());
        }
    }
    (roots, members)
}

/// A version constraint with its origin.
#[derive(Clone, Debug)]
struct VersionPin {
    file: String,
    line: u32,
    constraint: String,
    /// A concrete version (from .python-version, runtime.txt) to check
    /// against ranges.
    exact: Option<String>,
    weight: f64,
}

/// What the Python passes read from the manifests before deciding.
#[derive(Debug, Default)]
struct Facts {
    pins: Vec<VersionPin>,
    /// Console scripts: (name, target).
    scripts: Vec<(String, String)>,
    installable: bool,
    pytest_configured: bool,
    is_poetry: bool,
    /// `[tool.poetry] package-mode = false`.
    poetry_no_package: bool,
    /// Poetry's main dependencies: (name, spec).
    poetry_deps: Vec<(String, String)>,
    /// PEP 621 dependencies of a virtual (unbuildable) project.
    project_deps: Vec<String>,
    main_requirements: Option<String>,
    /// Pipfile `[packages]`: (name, spec).
    pipenv_packages: Vec<(String, String)>,
    conda_file: Option<String>,
    conda_pip: Vec<String>,
    conda_pkgs: Vec<String>,
    /// manage.py and its DJANGO_SETTINGS_MODULE.
    django_settings: Option<(String, String)>,
}

type Scan<'a> = pass::Scan<'a, Facts>;

/// The Python detector, in order.
const PASSES: &[Pass<Facts>] = &[
    Pass::new(Stage::Manifest, "pyproject.toml", pyproject),
    Pass::new(Stage::Manifest, "requirements", requirements),
    Pass::new(Stage::Manifest, "Pipfile", pipfile),
    Pass::new(Stage::Manifest, "setup.py", setup_py),
    Pass::new(Stage::Manifest, "setup.cfg", setup_cfg),
    Pass::new(Stage::Manifest, "conda", conda),
    Pass::new(Stage::Versions, "interpreter", interpreter),
    Pass::new(Stage::Scripts, "install", install),
    Pass::new(Stage::EntryPoint, "entry point", entry_point),
    Pass::new(Stage::EntryPoint, "alembic", alembic),
    Pass::new(Stage::Tests, "tests", tests),
    Pass::new(Stage::Services, "django settings", django_databases),
];

/// `stage/name` of each pass, in order.
pub fn passes() -> Vec<String> {
    pass::describe(PASSES)
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let d = Draft::new(&default_name(idx, dir), dir, "python");
    vec![pass::run(PASSES, idx, dir, d, Facts::default())]
}

fn pyproject(s: &mut Scan<'_>) {
    let path = s.path("pyproject.toml");
    let Some(text) = s.idx.read(&path) else { return };
    let doc = match toml::from_str::<toml::Table>(&text) {
        Ok(doc) => doc,
        Err(e) => {
            s.idx.warn(format!(
                "{path} is not valid TOML: {}",
                first_line(&e.to_string())
            ));
            return;
        }
    };
    if let Some(project) = doc.get("project").and_then(|v| v.as_table()) {
        pep621_project(s, &doc, project, &text, &path);
    }
    if let Some(groups) = doc.get("dependency-groups").and_then(|v| v.as_table()) {
        for (_, list) in groups {
            for dep in str_array(Some(list)) {
                if let Some(n) = requirement_name(&dep) {
                    s.d.deps.insert(n);
                }
            }
        }
    }
    let tool = doc.get("tool").and_then(|v| v.as_table());
    if let Some(poetry) = tool.and_then(|t| t.get("poetry")).and_then(|v| v.as_table()) {
        poetry_project(s, poetry, &text, &path);
    }
    let f = &mut s.facts;
    if tool.is_some_and(|t| t.contains_key("pytest")) {
        f.pytest_configured = true;
    }
    if doc.get("build-system").is_some() {
        f.installable = f.installable || !f.is_poetry || !f.poetry_no_package;
    }
}

/// PEP 621 `[project]`: name, dependencies, requires-python, scripts.
fn pep621_project(s: &mut Scan<'_>, doc: &toml::Table, project: &toml::Table, text: &str, path: &str) {
    // Without [build-system] a project is "virtual" (uv's default): its
    // dependencies are installed, not itself.
    if doc.get("build-system").is_some() {
        s.facts.installable = true;
    } else {
        s.facts.project_deps = str_array(project.get("dependencies"));
    }
    if let Some(name) = project.get("name").and_then(|v| v.as_str()) {
        s.d.c.name = name.to_owned();
    }
    for dep in str_array(project.get("dependencies")) {
        if let Some(n) = requirement_name(&dep) {
            s.d.deps.insert(n);
        }
    }
    if let Some(opt) = project.get("optional-dependencies").and_then(|v| v.as_table()) {
        for (_, list) in opt {
            for dep in str_array(Some(list)) {
                if let Some(n) = requirement_name(&dep) {
                    s.d.deps.insert(n);
                }
            }
        }
    }
    if let Some(rp) = project.get("requires-python").and_then(|v| v.as_str()) {
        s.facts.pins.push(VersionPin {
            file: path.to_owned(),
            line: find_line(text, "requires-python"),
            constraint: rp.trim().to_owned(),
            exact: None,
            weight: weight::MANIFEST * 0.9,
        });
    }
    classifier_pin(text, path, &mut s.facts.pins);
    if let Some(scripts) = project.get("scripts").and_then(|v| v.as_table()) {
        for (k, v) in scripts {
            s.facts
                .scripts
                .push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
        }
    }
}

/// `[tool.poetry]`: name, package mode, dependency tables, python, scripts.
fn poetry_project(s: &mut Scan<'_>, poetry: &toml::Table, text: &str, path: &str) {
    s.facts.is_poetry = true;
    if let Some(name) = poetry.get("name").and_then(|v| v.as_str()) {
        s.d.c.name = name.to_owned();
    }
    s.facts.poetry_no_package = !poetry
        .get("package-mode")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let mut tables = vec![poetry.get("dependencies"), poetry.get("dev-dependencies")];
    if let Some(groups) = poetry.get("group").and_then(|v| v.as_table()) {
        for (_, g) in groups {
            tables.push(g.get("dependencies"));
        }
    }
    for (i, t) in tables.into_iter().enumerate() {
        let Some(t) = t.and_then(|v| v.as_table()) else {
            continue;
        };
        for (k, v) in t {
            poetry_dependency(s, k, v, i == 0, text, path);
        }
    }
    if let Some(scripts) = poetry.get("scripts").and_then(|v| v.as_table()) {
        for (k, v) in scripts {
            s.facts
                .scripts
                .push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
        }
    }
    classifier_pin(text, path, &mut s.facts.pins);
}

/// One Poetry dependency; `python` is the interpreter constraint.
fn poetry_dependency(s: &mut Scan<'_>, name: &str, value: &toml::Value, main: bool, text: &str, path: &str) {
    let spec = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(t) => t
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("*")
            .to_owned(),
        _ => "*".into(),
    };
    if name == "python" {
        s.facts.pins.push(VersionPin {
            file: path.to_owned(),
            line: find_line(text, "python ="),
            constraint: poetry_to_pep440(&spec),
            exact: None,
            weight: weight::MANIFEST * 0.9,
        });
        return;
    }
    s.d.deps.insert(normalize(name));
    if main {
        s.facts.poetry_deps.push((name.to_owned(), spec));
    }
}

/// requirements*.txt and requirements/*.txt.
fn requirements(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let req_files: Vec<String> = idx
        .child_files(dir)
        .filter(|f| {
            let n = crate::index::file_name(f);
            n.starts_with("requirements") && n.ends_with(".txt")
        })
        .cloned()
        .collect();
    let req_dir_files: Vec<String> = idx
        .files_under(&s.path("requirements"))
        .filter(|f| f.ends_with(".txt") && crate::index::depth_below(dir, f) == 2)
        .cloned()
        .collect();
    for f in req_files.iter().chain(req_dir_files.iter()) {
        if let Some(text) = idx.read(f) {
            for line in text.lines().take(2000) {
                if let Some(n) = requirement_name(line) {
                    s.d.deps.insert(n);
                }
            }
        }
    }
    s.facts.main_requirements = if idx.has(&s.path("requirements.txt")) {
        Some("requirements.txt".to_owned())
    } else {
        [
            "requirements/base.txt",
            "requirements/prod.txt",
            "requirements/production.txt",
            "requirements/common.txt",
        ]
        .iter()
        .find(|r| idx.has(&s.path(r)))
        .map(|r| (*r).to_owned())
    };
}

fn pipfile(s: &mut Scan<'_>) {
    let pipfile = s.path("Pipfile");
    let Some(text) = s.idx.read(&pipfile) else { return };
    let doc = match toml::from_str::<toml::Table>(&text) {
        Ok(doc) => doc,
        Err(e) => {
            s.idx.warn(format!(
                "{pipfile} is not valid TOML: {}",
                first_line(&e.to_string())
            ));
            return;
        }
    };
    for (i, section) in ["packages", "dev-packages"].iter().enumerate() {
        if let Some(t) = doc.get(*section).and_then(|v| v.as_table()) {
            for (k, v) in t {
                s.d.deps.insert(normalize(k));
                if i == 0 {
                    let spec = v.as_str().unwrap_or("*").to_owned();
                    s.facts.pipenv_packages.push((k.clone(), spec));
                }
            }
        }
    }
    if let Some(v) = doc
        .get("requires")
        .and_then(|r| r.get("python_version").or_else(|| r.get("python_full_version")))
        .and_then(|v| v.as_str())
    {
        s.facts.pins.push(VersionPin {
            file: pipfile.clone(),
            line: find_line(&text, "python_"),
            constraint: exact_constraint(v),
            exact: Some(v.to_owned()),
            weight: weight::MANIFEST * 0.9,
        });
    }
}

fn setup_py(s: &mut Scan<'_>) {
    let setup_py = s.path("setup.py");
    let Some(text) = s.idx.read(&setup_py) else { return };
    s.facts.installable = true;
    if let Some(c) = SETUP_PY_REQ.as_ref().and_then(|re| re.captures(&text))
        && let Some(m) = c.get(1)
    {
        s.facts.pins.push(VersionPin {
            file: setup_py.clone(),
            line: line_of(&text, m.start()),
            constraint: m.as_str().to_owned(),
            exact: None,
            weight: weight::MANIFEST * 0.85,
        });
    }
    if let Some(start) = text.find("install_requires") {
        let rest = &text[start..];
        let end = rest.find(']').unwrap_or(rest.len());
        if let Some(re) = QUOTED.as_ref() {
            for c in re.captures_iter(&rest[..end]) {
                if let Some(n) = c.get(1).and_then(|m| requirement_name(m.as_str())) {
                    s.d.deps.insert(n);
                }
            }
        }
    }
    classifier_pin(&text, &setup_py, &mut s.facts.pins);
}

fn setup_cfg(s: &mut Scan<'_>) {
    let setup_cfg = s.path("setup.cfg");
    let Some(text) = s.idx.read(&setup_cfg) else {
        return;
    };
    let mut in_requires = false;
    for (i, line) in text.lines().enumerate().take(5000) {
        let trimmed = line.trim();
        if trimmed.starts_with("[tool:pytest]") {
            s.facts.pytest_configured = true;
        }
        if trimmed.starts_with("[metadata]") || trimmed.starts_with("[options]") {
            s.facts.installable = true;
        }
        if let Some(v) = trimmed.strip_prefix("python_requires") {
            let v = v.trim_start_matches([' ', '=']).trim();
            s.facts.pins.push(VersionPin {
                file: setup_cfg.clone(),
                line: i as u32 + 1,
                constraint: v.to_owned(),
                exact: None,
                weight: weight::MANIFEST * 0.85,
            });
        }
        if trimmed.starts_with("install_requires") {
            in_requires = true;
            continue;
        }
        if in_requires {
            if line.starts_with([' ', '\t']) && !trimmed.is_empty() {
                if let Some(n) = requirement_name(trimmed) {
                    s.d.deps.insert(n);
                }
            } else if !trimmed.is_empty() {
                in_requires = false;
            }
        }
    }
}

/// environment.yml: conda packages, pip packages and the python pin.
fn conda(s: &mut Scan<'_>) {
    for name in ["environment.yml", "environment.yaml"] {
        let f = s.path(name);
        let Some(text) = s.idx.read(&f) else { continue };
        s.facts.conda_file = Some(name.to_owned());
        match serde_norway::from_str::<serde_norway::Value>(&text) {
            Ok(doc) => {
                if let Some(list) = doc.get("dependencies").and_then(|v| v.as_sequence()) {
                    for item in list.iter().take(500) {
                        conda_item(s, item, &f, &text);
                    }
                }
            }
            Err(e) => s
                .idx
                .warn(format!("{f} is not valid YAML: {}", first_line(&e.to_string()))),
        }
        break;
    }
}

/// One entry of a conda `dependencies` list: `pkg=ver` or a `pip:` list.
fn conda_item(s: &mut Scan<'_>, item: &serde_norway::Value, f: &str, text: &str) {
    if let Some(spec) = item.as_str() {
        let (name, ver) = spec.split_once('=').map_or((spec, ""), |(n, v)| (n, v));
        let name = name.trim().trim_end_matches(['<', '>', '!', '~']);
        if name == "python" {
            let ver = ver.trim_start_matches('=');
            if !ver.is_empty() {
                s.facts.pins.push(VersionPin {
                    file: f.to_owned(),
                    line: find_line(text, spec),
                    constraint: exact_constraint(ver),
                    exact: Some(ver.trim_end_matches(".*").to_owned()),
                    weight: weight::MANIFEST * 0.9,
                });
            }
        } else if name != "pip" {
            s.d.deps.insert(normalize(name));
            s.facts.conda_pkgs.push(spec.to_owned());
        }
    } else if let Some(pip) = item.get("pip").and_then(|v| v.as_sequence()) {
        for dep in pip.iter().filter_map(|v| v.as_str()).take(500) {
            if let Some(n) = requirement_name(dep) {
                s.d.deps.insert(n);
            }
            s.facts.conda_pip.push(dep.to_owned());
        }
    }
}

/// .python-version and runtime.txt, then the constraint across all pins.
fn interpreter(s: &mut Scan<'_>) {
    let pv = s.path(".python-version");
    if let Some(text) = s.idx.read(&pv)
        && let Some((i, v)) = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i, l.trim()))
            .find(|(_, l)| l.starts_with(|c: char| c.is_ascii_digit()))
    {
        s.facts.pins.push(VersionPin {
            file: pv.clone(),
            line: i as u32 + 1,
            constraint: exact_constraint(v),
            exact: Some(v.to_owned()),
            weight: 0.9,
        });
    }
    let rt = s.path("runtime.txt");
    if let Some(text) = s.idx.read(&rt) {
        let v = text
            .trim()
            .trim_start_matches("python-")
            .trim_start_matches("python");
        if v.starts_with(|c: char| c.is_ascii_digit()) {
            s.facts.pins.push(VersionPin {
                file: rt.clone(),
                line: 1,
                constraint: exact_constraint(v),
                exact: Some(v.to_owned()),
                weight: 0.85,
            });
        }
    }
    decide_version(&mut s.d, &s.facts.pins);
}

/// Package manager and install command.
fn install(s: &mut Scan<'_>) {
    let (pm, pm_file, install) = installer(s);
    if !install.is_empty() {
        let file = if pm_file.is_empty() {
            s.dir.to_owned()
        } else {
            s.path(&pm_file)
        };
        if s.d.offer(ev(
            "install",
            &file,
            0,
            format!("{pm}: {install}"),
            weight::MANIFEST,
        )) {
            s.d.c.install = cmd(install);
        }
    }
    if let Some(conda_file) = &s.facts.conda_file
        && pm != "conda"
    {
        s.d.note(ev(
            "package_manager",
            &s.path(conda_file),
            0,
            "conda environment also present",
            0.2,
        ));
    }
    s.d.c.package_manager = pm.to_owned();
    if !pm_file.is_empty() {
        s.d.note(ev("package_manager", &s.path(&pm_file), 0, pm, weight::MANIFEST));
    }
}

/// (package manager, the file that says so, install command).
fn installer(s: &Scan<'_>) -> (&'static str, String, String) {
    let (idx, f) = (s.idx, &s.facts);
    let uv_lock = idx.has(&s.path("uv.lock")) || ancestors(s.dir).any(|a| idx.has(&join(a, "uv.lock")));
    let poetry_lock = idx.has(&s.path("poetry.lock"));
    if uv_lock {
        let install = match (&f.main_requirements, f.installable) {
            (_, true) => "pip install -e .".to_owned(),
            (Some(r), false) => format!("pip install -r {r}"),
            (None, false) => pip_install_list(&f.project_deps),
        };
        ("uv", "uv.lock".into(), install)
    } else if f.is_poetry || poetry_lock {
        let file = if poetry_lock {
            "poetry.lock"
        } else {
            "pyproject.toml"
        };
        ("poetry", file.into(), poetry_install(f))
    } else if idx.has(&s.path("Pipfile")) {
        ("pipenv", "Pipfile".into(), pipenv_install(f))
    } else if let Some(r) = &f.main_requirements {
        let mut install = format!("pip install -r {r}");
        if f.installable && idx.has(&s.path("setup.py")) {
            install.push_str(" && pip install -e .");
        }
        ("pip", "requirements.txt".into(), install)
    } else if !f.installable && !f.project_deps.is_empty() {
        ("pip", "pyproject.toml".into(), pip_install_list(&f.project_deps))
    } else if f.installable {
        let file = if idx.has(&s.path("pyproject.toml")) {
            "pyproject.toml"
        } else {
            "setup.py"
        };
        ("pip", file.into(), "pip install -e .".to_owned())
    } else if let Some(cf) = &f.conda_file {
        ("conda", cf.clone(), conda_install(f))
    } else {
        ("pip", String::new(), String::new())
    }
}

fn poetry_install(f: &Facts) -> String {
    if !f.poetry_no_package && f.installable {
        "pip install -e .".to_owned()
    } else if let Some(r) = &f.main_requirements {
        format!("pip install -r {r}")
    } else if !f.poetry_deps.is_empty() {
        format!("pip install {}", quoted_specs(&f.poetry_deps, poetry_to_pep440))
    } else {
        "pip install -e .".to_owned()
    }
}

fn pipenv_install(f: &Facts) -> String {
    if f.pipenv_packages.is_empty() {
        "pip install pipenv && pipenv install --dev --system".to_owned()
    } else {
        format!(
            "pip install {}",
            quoted_specs(&f.pipenv_packages, |s| if s == "*" {
                String::new()
            } else {
                s.to_owned()
            })
        )
    }
}

fn conda_install(f: &Facts) -> String {
    let mut pkgs: Vec<String> = f.conda_pkgs.iter().map(|s| conda_to_pip(s)).collect();
    pkgs.extend(f.conda_pip.iter().map(|s| shell_quote(s)));
    if pkgs.is_empty() {
        String::new()
    } else {
        format!("pip install {}", pkgs.join(" "))
    }
}

/// alembic.ini outside Django: migrate before start.
fn alembic(s: &mut Scan<'_>) {
    let alembic = s.path("alembic.ini");
    if s.idx.has(&alembic) && !s.d.has_framework("django") {
        s.d.offer(ev("setup", &alembic, 0, "alembic migrations", weight::MANIFEST));
        s.d.c.setup.push(reporunner_proto::common::v1::Command {
            run: "alembic upgrade head".into(),
            working_dir: String::new(),
            watch_mode: false,
        });
    }
}

/// pytest, tox, Django's runner (set with the entry point) or unittest.
fn tests(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let p = |name: &str| join(dir, name);
    let d = &mut s.d;
    // tox runs pytest in environments of its own, which it downloads; the
    // same pytest runs in the component's environment instead.
    let tox_runs_pytest = idx.read(&p("tox.ini")).is_some_and(|t| t.contains("pytest"));
    if s.facts.pytest_configured
        || d.has_any_dep(&["pytest", "pytest-django", "pytest-asyncio"])
        || idx.has(&p("pytest.ini"))
        || idx.has(&p("conftest.py"))
        || tox_runs_pytest
    {
        let f = if idx.has(&p("pytest.ini")) {
            p("pytest.ini")
        } else {
            pyproject_or(idx, dir)
        };
        if d.offer(ev("test", &f, 0, "pytest", weight::MANIFEST)) {
            d.c.test = cmd("python -m pytest");
        }
    } else if idx.has(&p("tox.ini")) {
        if d.offer(ev("test", &p("tox.ini"), 0, "tox", weight::MANIFEST * 0.9)) {
            d.c.test = cmd("tox");
        }
    } else if d.has_framework("django") {
        // set by the Django entry point
    } else if idx
        .files_under(&p("tests"))
        .any(|f| crate::index::file_name(f).starts_with("test"))
        && d.offer(ev(
            "test",
            &p("tests"),
            0,
            "tests/test_*.py, unittest discovery",
            weight::CONVENTION,
        ))
    {
        d.c.test = cmd("python -m unittest discover -s tests");
    } else if idx.has(&p("tests.py"))
        && d.offer(ev(
            "test",
            &p("tests.py"),
            0,
            "tests.py, unittest discovery",
            weight::CONVENTION,
        ))
    {
        // A single tests.py beside the app (Flask tutorials, microblog).
        d.c.test = cmd("python -m unittest discover -p \"test*.py\"");
    }
}

/// Databases named in the Django settings module.
fn django_databases(s: &mut Scan<'_>) {
    let Some((manage, settings)) = &s.facts.django_settings else {
        return;
    };
    use reporunner_proto::common::v1::BackingServiceKind as K;
    let base = crate::index::parent_of(manage);
    let path = settings.replace('.', "/");
    for cand in [
        join(base, &format!("{path}.py")),
        join(base, &format!("{path}/__init__.py")),
        join(base, &format!("{path}/base.py")),
    ] {
        let Some(st) = s.idx.read(&cand) else { continue };
        for (needle, kind) in [
            ("django.db.backends.postgresql", K::Postgresql),
            ("django.db.backends.mysql", K::Mysql),
            ("django_redis", K::Redis),
        ] {
            let line = find_line(&st, needle);
            if line > 0 {
                s.d.add_backing(
                    kind,
                    "",
                    ev("backing_service", &cand, line, needle, weight::MANIFEST),
                );
            }
        }
    }
}

/// An app object found in code: (file relative to the component, line, name).
type Found = (String, u32, String);

/// What the entry-point scan found in a component's sources.
#[derive(Debug, Default)]
struct Sources {
    /// (file, variable, line, `FastAPI` or `Starlette`).
    fastapi: Option<(String, String, u32, String)>,
    fastapi_built: Option<(String, String, u32, String)>,
    flask: Option<Found>,
    factory: Option<Found>,
    streamlit: Option<String>,
    gradio: Option<String>,
    main_script: Option<String>,
    run_port: Option<u32>,
    /// .flaskenv and its FLASK_APP value and line.
    flaskenv: String,
    flask_app_env: Option<(String, u32)>,
}

/// Conventional entry file names, most likely first.
const PREFERRED: [&str; 12] = [
    "main.py",
    "app.py",
    "server.py",
    "api.py",
    "asgi.py",
    "wsgi.py",
    "application.py",
    "run.py",
    "__init__.py",
    "streamlit_app.py",
    "Home.py",
    "ui.py",
];

/// A start rule: true when it decided the entry point.
type StartRule = fn(&mut Scan<'_>, &Sources) -> bool;

/// Entry points, strongest signal first; the first rule that applies wins.
const START_RULES: [StartRule; 7] = [
    fastapi_start,
    fastapi_factory_start,
    flask_start,
    streamlit_start,
    gradio_start,
    main_script_start,
    console_script_start,
];

fn entry_point(s: &mut Scan<'_>) {
    // Django first: manage.py is unambiguous.
    if django(s) {
        return;
    }
    let found = scan_sources(s.idx, s.dir);
    for rule in START_RULES {
        if rule(s, &found) {
            return;
        }
    }
}

/// manage.py: runserver, settings module, migrations and the test runner.
fn django(s: &mut Scan<'_>) -> bool {
    let (idx, dir) = (s.idx, s.dir);
    let manage = idx
        .files_under(dir)
        .filter(|f| crate::index::file_name(f) == "manage.py" && crate::index::depth_below(dir, f) <= 3)
        .min_by_key(|f| crate::index::depth_below(dir, f))
        .cloned();
    let Some(manage) = manage else { return false };
    if !(s.d.has_dep("django")
        || s.d.deps.is_empty()
        || idx.read(&manage).is_some_and(|t| t.contains("django")))
    {
        return false;
    }
    let d = &mut s.d;
    d.add_framework("django");
    let text = idx.read(&manage).unwrap_or_default();
    let rel = rel_to(dir, &manage).to_owned();
    d.set_start(
        ev(
            "start",
            &manage,
            0,
            format!("Django: python {rel} runserver"),
            weight::FRAMEWORK,
        ),
        cmd(format!("python {rel} runserver")),
        8000,
        "django-runserver",
    );
    d.set_kind(ComponentKind::Web);
    d.c.health_paths = vec!["/".into(), "/admin/".into()];
    django_settings_module(s, &manage, &text);
    django_migrate_and_test(s, &manage, &rel);
    true
}

/// DJANGO_SETTINGS_MODULE from manage.py: an env default, and the module the
/// services pass reads databases from.
fn django_settings_module(s: &mut Scan<'_>, manage: &str, text: &str) {
    let Some(m) = SETTINGS_MODULE
        .as_ref()
        .and_then(|re| re.captures(text))
        .and_then(|c| c.get(1))
    else {
        return;
    };
    let settings = m.as_str().to_owned();
    s.d.note(ev(
        "framework",
        manage,
        line_of(text, m.start()),
        format!("DJANGO_SETTINGS_MODULE={settings}"),
        weight::FRAMEWORK,
    ));
    s.d.add_env(reporunner_proto::common::v1::EnvVar {
        name: "DJANGO_SETTINGS_MODULE".into(),
        default_value: settings.clone(),
        required: false,
        secret: false,
        source: format!("{manage}:{}", line_of(text, m.start())),
    });
    s.facts.django_settings = Some((manage.to_owned(), settings));
}

fn django_migrate_and_test(s: &mut Scan<'_>, manage: &str, rel: &str) {
    let d = &mut s.d;
    let has_migrations = s
        .idx
        .files_under(s.dir)
        .any(|f| f.contains("/migrations/") && f.ends_with(".py"));
    if has_migrations {
        d.offer(ev(
            "setup",
            manage,
            0,
            "migrations/ present: migrate before start",
            weight::FRAMEWORK,
        ));
        d.c.setup.push(reporunner_proto::common::v1::Command {
            run: format!("python {rel} migrate"),
            working_dir: String::new(),
            watch_mode: false,
        });
    }
    if !d.has_any_dep(&["pytest", "pytest-django"])
        && d.offer(ev("test", manage, 0, "Django test runner", weight::FRAMEWORK))
    {
        d.c.test = cmd(format!("python {rel} test"));
    }
}

/// Reads .flaskenv and up to 80 source files, preferred names first.
fn scan_sources(idx: &RepoIndex, dir: &str) -> Sources {
    let files = source_files(idx, dir, &[".py"], &PREFERRED, 80);
    let mut found = Sources {
        flaskenv: join(dir, ".flaskenv"),
        ..Sources::default()
    };
    if let Some(text) = idx.read(&found.flaskenv) {
        for (i, line) in text.lines().enumerate() {
            if let Some(v) = line.trim().strip_prefix("FLASK_APP=") {
                found.flask_app_env = Some((v.trim().trim_matches(['"', '\'']).to_owned(), i as u32 + 1));
            }
        }
    }
    for f in &files {
        let Some(text) = idx.read_source(f) else { continue };
        let rel = rel_to(dir, f);
        found.scan_apps(rel, &text);
        found.scan_scripts(dir, f, rel, &text);
    }
    found
}

impl Sources {
    /// FastAPI / Starlette / Flask app objects and app factories.
    fn scan_apps(&mut self, rel: &str, text: &str) {
        if self.fastapi.is_none()
            && let Some(c) = FASTAPI_APP.as_ref().and_then(|re| re.captures(text))
            && let (Some(var), Some(kind)) = (c.get(1), c.get(2))
        {
            self.fastapi = Some((
                rel.to_owned(),
                var.as_str().to_owned(),
                line_of(text, var.start()),
                kind.as_str().to_owned(),
            ));
        }
        // `app = get_application()` in a module that builds a FastAPI app.
        if self.fastapi_built.is_none()
            && text.contains("FastAPI(")
            && let Some(m) = APP_ASSIGN
                .as_ref()
                .and_then(|re| re.captures(text))
                .and_then(|c| c.get(1))
        {
            self.fastapi_built = Some((
                rel.to_owned(),
                m.as_str().to_owned(),
                line_of(text, m.start()),
                "FastAPI".to_owned(),
            ));
        }
        if self.flask.is_none()
            && let Some(c) = FLASK_APP.as_ref().and_then(|re| re.captures(text))
            && let Some(var) = c.get(1)
        {
            self.flask = Some((
                rel.to_owned(),
                line_of(text, var.start()),
                var.as_str().to_owned(),
            ));
        }
        if self.factory.is_none()
            && let Some(c) = FACTORY.as_ref().and_then(|re| re.captures(text))
            && let Some(m) = c.get(1)
            && (text.contains("Flask(") || text.contains("FastAPI(") || text.contains("Quart("))
        {
            self.factory = Some((rel.to_owned(), line_of(text, m.start()), m.as_str().to_owned()));
        }
    }

    /// Streamlit and Gradio scripts, `__main__` entry files and `.run(port=…)`.
    fn scan_scripts(&mut self, dir: &str, file: &str, rel: &str, text: &str) {
        if self.streamlit.is_none() && STREAMLIT.as_ref().is_some_and(|re| re.is_match(text)) {
            self.streamlit = Some(rel.to_owned());
        }
        if self.gradio.is_none()
            && GRADIO.as_ref().is_some_and(|re| re.is_match(text))
            && text.contains(".launch(")
        {
            self.gradio = Some(rel.to_owned());
        }
        if self.main_script.is_none()
            && crate::index::depth_below(dir, file) == 1
            && MAIN_GUARD.as_ref().is_some_and(|re| re.is_match(text))
            && PREFERRED.contains(&crate::index::file_name(file))
        {
            self.main_script = Some(rel.to_owned());
        }
        if self.run_port.is_none()
            && let Some(p) = RUN_PORT
                .as_ref()
                .and_then(|re| re.captures(text))
                .and_then(|c| c.get(1))
        {
            self.run_port = p.as_str().parse().ok();
        }
    }
}

/// (module, ` --app-dir src` when the file is under src/).
fn src_layout(rel: &str) -> (String, String) {
    match rel.strip_prefix("src/") {
        Some(rest) => (module_of(rest), " --app-dir src".to_owned()),
        None => (module_of(rel), String::new()),
    }
}

fn fastapi_start(s: &mut Scan<'_>, found: &Sources) -> bool {
    let Some((rel, var, line, kind)) = found.fastapi.as_ref().or(found.fastapi_built.as_ref()) else {
        return false;
    };
    let d = &mut s.d;
    let fw = if kind == "Starlette" {
        "starlette"
    } else {
        "fastapi"
    };
    d.add_framework(fw);
    let (module, app_dir) = src_layout(rel);
    let run = format!("uvicorn {module}:{var} --host 0.0.0.0{app_dir}");
    let file = join(s.dir, rel);
    if d.set_start(
        ev(
            "start",
            &file,
            *line,
            format!("{var} = {kind}(...)"),
            weight::FRAMEWORK,
        ),
        cmd(run),
        8000,
        "flag:--port",
    ) {
        d.set_kind(ComponentKind::Web);
        d.c.health_paths = vec!["/health".into(), "/docs".into(), "/".into()];
    }
    if !d.has_dep("uvicorn") && !d.has_dep("fastapi") {
        d.warnings.push("uvicorn is not a declared dependency".into());
    }
    true
}

fn fastapi_factory_start(s: &mut Scan<'_>, found: &Sources) -> bool {
    let d = &mut s.d;
    if !d.has_any_dep(&["fastapi"]) {
        return false;
    }
    let Some((rel, line, fname)) = &found.factory else {
        return false;
    };
    d.add_framework("fastapi");
    let (module, app_dir) = src_layout(rel);
    let run = format!("uvicorn {module}:{fname} --factory --host 0.0.0.0{app_dir}");
    if d.set_start(
        ev(
            "start",
            &join(s.dir, rel),
            *line,
            format!("app factory {fname}()"),
            weight::FRAMEWORK,
        ),
        cmd(run),
        8000,
        "flag:--port",
    ) {
        d.set_kind(ComponentKind::Web);
    }
    true
}

fn flask_start(s: &mut Scan<'_>, found: &Sources) -> bool {
    let (d, dir) = (&mut s.d, s.dir);
    if !(d.has_any_dep(&["flask", "quart", "apiflask"])
        || found.flask.is_some()
        || found.flask_app_env.is_some())
    {
        return false;
    }
    d.add_framework(if d.has_dep("quart") { "quart" } else { "flask" });
    let port = found.run_port.unwrap_or(5000);
    if let Some((target, file, line, detail)) = flask_target(dir, found) {
        // The app goes in FLASK_APP, which every Flask reads; `--app` came
        // with Flask 2.2, and older ones (most unpinned apps of their era)
        // would fail the start and cost a heal.
        if d.set_start(
            ev("start", &file, line, detail, weight::FRAMEWORK),
            cmd("flask run --host 0.0.0.0".to_owned()),
            5000,
            "flag:--port",
        ) {
            d.set_kind(ComponentKind::Web);
            d.add_env(reporunner_proto::common::v1::EnvVar {
                name: "FLASK_APP".into(),
                default_value: target,
                required: false,
                secret: false,
                source: if line > 0 { format!("{file}:{line}") } else { file },
            });
        }
    } else if let Some(main) = &found.main_script {
        d.set_start(
            ev(
                "start",
                &join(dir, main),
                0,
                "Flask app run as a script",
                weight::FRAMEWORK_GUESS,
            ),
            cmd(format!("python {main}")),
            port,
            "",
        );
        d.set_kind(ComponentKind::Web);
    }
    true
}

/// The `--app` target: FLASK_APP, else an app factory, else the app object;
/// with (file, line, detail) for the evidence.
fn flask_target(dir: &str, found: &Sources) -> Option<(String, String, u32, String)> {
    if let Some((app, line)) = &found.flask_app_env {
        Some((
            app.clone(),
            found.flaskenv.clone(),
            *line,
            format!("FLASK_APP={app}"),
        ))
    } else if let Some((rel, line, fname)) = &found.factory {
        let module = src_layout(rel).0;
        Some((module, join(dir, rel), *line, format!("app factory {fname}()")))
    } else {
        found.flask.as_ref().map(|(rel, line, var)| {
            let module = src_layout(rel).0;
            let target = if var == "app" || var == "application" {
                module
            } else {
                format!("{module}:{var}")
            };
            (target, join(dir, rel), *line, format!("{var} = Flask(...)"))
        })
    }
}

fn streamlit_start(s: &mut Scan<'_>, found: &Sources) -> bool {
    let Some(rel) = &found.streamlit else { return false };
    let d = &mut s.d;
    d.add_framework("streamlit");
    d.set_start(
        ev(
            "start",
            &join(s.dir, rel),
            0,
            "imports streamlit",
            weight::FRAMEWORK,
        ),
        cmd(format!(
            "streamlit run {rel} --server.address 0.0.0.0 --server.headless true"
        )),
        8501,
        "flag:--server.port",
    );
    d.set_kind(ComponentKind::Web);
    d.c.health_paths = vec!["/_stcore/health".into(), "/".into()];
    true
}

fn gradio_start(s: &mut Scan<'_>, found: &Sources) -> bool {
    let Some(rel) = &found.gradio else { return false };
    let d = &mut s.d;
    d.add_framework("gradio");
    d.set_start(
        ev(
            "start",
            &join(s.dir, rel),
            0,
            "gradio app with .launch()",
            weight::FRAMEWORK,
        ),
        cmd(format!("python {rel}")),
        7860,
        "env:GRADIO_SERVER_PORT",
    );
    d.set_kind(ComponentKind::Web);
    d.add_env(reporunner_proto::common::v1::EnvVar {
        name: "GRADIO_SERVER_NAME".into(),
        default_value: "0.0.0.0".into(),
        required: false,
        secret: false,
        source: join(s.dir, rel),
    });
    true
}

fn main_script_start(s: &mut Scan<'_>, found: &Sources) -> bool {
    let Some(main) = &found.main_script else {
        return false;
    };
    let port = found.run_port.unwrap_or(0);
    s.d.set_start(
        ev(
            "start",
            &join(s.dir, main),
            0,
            "__main__ guard in a conventional entry file",
            weight::CONVENTION,
        ),
        cmd(format!("python {main}")),
        port,
        "",
    );
    if s.idx
        .read_source(&join(s.dir, main))
        .is_some_and(|text| serves_raw_tcp(&text))
    {
        s.d.set_kind(ComponentKind::Service);
    }
    true
}

/// Whether a script serves a protocol of its own over TCP (`socketserver`,
/// `asyncio.start_server`, a listening socket) and no HTTP: it is up when
/// its port accepts connections, an HTTP probe would never pass.
fn serves_raw_tcp(text: &str) -> bool {
    let tcp = text.contains("socketserver.")
        || text.contains("from socketserver import")
        || text.contains("asyncio.start_server(")
        || (text.contains("socket.socket(") && text.contains(".listen("));
    let http = [
        "http.server",
        "HTTPServer",
        "BaseHTTPRequestHandler",
        "wsgiref",
        "aiohttp",
        "HTTP/1.",
    ]
    .iter()
    .any(|marker| text.contains(marker));
    tcp && !http
}

fn console_script_start(s: &mut Scan<'_>, _found: &Sources) -> bool {
    let Some((name, target)) = s.facts.scripts.first() else {
        return false;
    };
    let file = pyproject_or(s.idx, s.dir);
    s.d.set_start(
        ev(
            "start",
            &file,
            find_line(&s.idx.read(&file).unwrap_or_default(), name),
            format!("console script {name} = {target}"),
            weight::MANIFEST * 0.8,
        ),
        cmd(name.clone()),
        0,
        "",
    );
    s.d.set_kind(ComponentKind::Cli);
    true
}

/// The directories above `dir`, nearest first, ending with the root ("").
fn ancestors(dir: &str) -> impl Iterator<Item = &str> {
    let mut cur = if dir.is_empty() { None } else { Some(dir) };
    std::iter::from_fn(move || {
        let d = cur?;
        let parent = crate::index::parent_of(d);
        cur = if parent.is_empty() { None } else { Some(parent) };
        Some(parent)
    })
    .take(16)
}

fn pyproject_or(idx: &RepoIndex, dir: &str) -> String {
    let f = join(dir, "pyproject.toml");
    if idx.has(&f) {
        f
    } else {
        join(dir, "requirements.txt")
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn str_array(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .take(1000)
                .collect()
        })
        .unwrap_or_default()
}

fn classifier_pin(text: &str, file: &str, pins: &mut Vec<VersionPin>) {
    let Some(re) = CLASSIFIER.as_ref() else { return };
    let mut versions: Vec<(u32, u32)> = re
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .filter_map(|m| {
            let (a, b) = m.as_str().split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    versions.sort();
    if let Some((a, b)) = versions.first() {
        pins.push(VersionPin {
            file: file.to_owned(),
            line: find_line(text, "Programming Language :: Python :: 3."),
            constraint: format!(">={a}.{b}"),
            exact: None,
            weight: 0.3,
        });
    }
}

/// `3.11` → `==3.11.*`, `3.11.4` → `==3.11.4`.
fn exact_constraint(v: &str) -> String {
    let v = v.trim().trim_end_matches(".*");
    if v.split('.').count() >= 3 {
        format!("=={v}")
    } else {
        format!("=={v}.*")
    }
}

/// Poetry's `^3.10` / `~3.10` / `>=3.8,<4` to PEP 440.
pub fn poetry_to_pep440(spec: &str) -> String {
    let spec = spec.trim();
    if spec == "*" || spec.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = spec
        .split(',')
        .map(|part| {
            let part = part.trim();
            if let Some(v) = part.strip_prefix('^') {
                let nums: Vec<u64> = v.split('.').filter_map(|n| n.parse().ok()).collect();
                let upper = match nums.as_slice() {
                    [0, 0, p, ..] => format!("0.0.{}", p + 1),
                    [0, m, ..] => format!("0.{}", m + 1),
                    [maj, ..] => format!("{}", maj + 1),
                    [] => return format!(">={v}"),
                };
                format!(">={v},<{upper}")
            } else if let Some(v) = part.strip_prefix('~').filter(|v| !v.starts_with('=')) {
                let nums: Vec<u64> = v.split('.').filter_map(|n| n.parse().ok()).collect();
                let upper = match nums.as_slice() {
                    [maj] => format!("{}", maj + 1),
                    [maj, min, ..] => format!("{maj}.{}", min + 1),
                    [] => return format!(">={v}"),
                };
                format!(">={v},<{upper}")
            } else if part.starts_with(|c: char| c.is_ascii_digit()) {
                format!("=={part}")
            } else {
                part.to_owned()
            }
        })
        .collect();
    parts.join(",")
}

/// `pip install 'a==1' 'b>=2'` for requirement strings (empty for none).
fn pip_install_list(reqs: &[String]) -> String {
    if reqs.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = reqs.iter().take(300).map(|r| shell_quote(r.trim())).collect();
    format!("pip install {}", quoted.join(" "))
}

fn quoted_specs(deps: &[(String, String)], conv: impl Fn(&str) -> String) -> String {
    deps.iter()
        .take(200)
        .map(|(name, spec)| shell_quote(&format!("{name}{}", conv(spec))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn conda_to_pip(s: &str) -> String {
    let s = s.trim();
    let out = match s.split_once('=') {
        Some((n, v)) if !v.starts_with('=') && !n.ends_with(['<', '>', '!']) => {
            format!("{n}=={}", v.trim_end_matches(".*").split('=').next().unwrap_or(v))
        }
        _ => s.to_owned(),
    };
    shell_quote(&out)
}

/// Picks the interpreter constraint; a pin outside a declared range is a
/// conflict: the range wins (installs would fail otherwise) and a warning says so.
fn decide_version(d: &mut Draft, pins: &[VersionPin]) {
    let mut ranges: Vec<&VersionPin> = pins
        .iter()
        .filter(|p| p.exact.is_none() && p.weight >= 0.5)
        .collect();
    ranges.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let mut sorted: Vec<&VersionPin> = pins.iter().collect();
    sorted.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let chosen = choose_pin(d, &sorted, &ranges);
    for pin in &sorted {
        let wins = chosen.is_some_and(|c| std::ptr::eq(c, *pin));
        record_pin(d, pin, wins, ranges.first().copied());
    }
    if d.c.runtime.is_none() {
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: "python".into(),
            version_constraint: String::new(),
            preferred_version: String::new(),
        });
    }
}

/// The strongest pin, skipping exact versions a range contradicts; warns
/// about the contradictions and about exact pins that disagree.
fn choose_pin<'p>(
    d: &mut Draft,
    sorted: &[&'p VersionPin],
    ranges: &[&VersionPin],
) -> Option<&'p VersionPin> {
    let mut chosen: Option<&VersionPin> = None;
    for pin in sorted {
        if let Some(exact) = &pin.exact {
            let conflicting = ranges.iter().find(|r| {
                let specs = pep440_rs::VersionSpecifiers::from_str(&r.constraint);
                let version = pep440_rs::Version::from_str(exact.trim_end_matches(".*"));
                matches!((specs, version), (Ok(s), Ok(v)) if !s.contains(&v))
            });
            if let Some(r) = conflicting {
                d.warnings.push(format!(
                    "{} pins Python {exact} but {} requires {}; using {}",
                    pin.file, r.file, r.constraint, r.constraint
                ));
                continue;
            }
            if let Some(c) = chosen
                && c.exact
                    .as_deref()
                    .is_some_and(|e| !e.starts_with(exact.as_str()) && !exact.starts_with(e))
            {
                d.warnings.push(format!(
                    "{} pins Python {} but {} pins {exact}",
                    c.file,
                    c.exact.as_deref().unwrap_or_default(),
                    pin.file
                ));
            }
        }
        if chosen.is_none() {
            chosen = Some(pin);
        }
    }
    chosen
}

/// One pin as evidence; the chosen one sets the runtime. A named version
/// from `.python-version`, `runtime.txt` or a Pipfile is a preference, with
/// the strongest range beside it (`hard`) as the constraint.
fn record_pin(d: &mut Draft, pin: &VersionPin, wins: bool, hard: Option<&VersionPin>) {
    let e = ev(
        "runtime",
        &pin.file,
        pin.line,
        format!("python {}", pin.constraint),
        pin.weight,
    );
    let preference = [".python-version", "runtime.txt", "Pipfile"]
        .iter()
        .any(|name| pin.file == *name || pin.file.ends_with(&format!("/{name}")));
    if wins
        && preference
        && let Some(exact) = &pin.exact
    {
        let hard = hard.map_or("", |r| r.constraint.as_str());
        let e = ev(
            "runtime",
            &pin.file,
            pin.line,
            format!(
                "python {exact} preferred{}",
                if hard.is_empty() {
                    String::new()
                } else {
                    format!(", {hard} required")
                }
            ),
            pin.weight,
        );
        if d.set_runtime(e, "python", hard)
            && let Some(runtime) = d.c.runtime.as_mut()
        {
            runtime.preferred_version = exact.trim_end_matches(".*").to_owned();
        }
    } else if wins {
        d.set_runtime(e, "python", &pin.constraint);
    } else {
        d.note(e);
    }
}

/// A module path from a file path: `app/main.py` → `app.main`.
fn module_of(rel: &str) -> String {
    let m = rel.trim_end_matches(".py");
    let m = m.strip_suffix("/__init__").unwrap_or(m);
    m.replace('/', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_run_from_manifests_to_services() {
        assert!(PASSES.windows(2).all(|w| w[0].stage <= w[1].stage));
        assert_eq!(
            passes().first().map(String::as_str),
            Some("manifest/pyproject.toml")
        );
        assert_eq!(
            passes().last().map(String::as_str),
            Some("services/django settings")
        );
    }

    #[test]
    fn a_name_ending_in_a_separator_is_no_requirement_and_no_panic() {
        // The analyzer's proptest found that pep508_rs panics on these.
        for line in ["U.", "a-", "x_", "U. ; python_version > '3'"] {
            assert_eq!(requirement_name(line), None, "{line}");
        }
        assert_eq!(requirement_name("U.S>=1").as_deref(), Some("u-s"));
    }

    #[test]
    fn an_extra_ending_in_a_separator_is_no_panic() {
        // The fuzz target `manifests` found that pep508_rs panics on these
        // too; the name still reads.
        for line in [
            "flask[async_]",
            "requests[socks, security-] >= 2",
            "x[a.,b]",
            "y [z-]",
        ] {
            let name = line.split(['[', ' ']).next().map(normalize);
            assert_eq!(requirement_name(line), name, "{line}");
        }
        // Markers and URLs are not parsed: the name is read before them.
        assert_eq!(
            requirement_name("pkg[a] @ https://example.com/p.whl ; extra == 'b_'").as_deref(),
            Some("pkg")
        );
    }

    #[test]
    fn requirement_names_are_normalised() {
        assert_eq!(
            requirement_name("Flask_SQLAlchemy>=3.0 ; python_version>'3.8'").as_deref(),
            Some("flask-sqlalchemy")
        );
        assert_eq!(
            requirement_name("psycopg2-binary==2.9.9").as_deref(),
            Some("psycopg2-binary")
        );
        assert_eq!(requirement_name("-r base.txt"), None);
        assert_eq!(requirement_name("# comment"), None);
        assert_eq!(requirement_name("uvicorn[standard]").as_deref(), Some("uvicorn"));
    }

    #[test]
    fn poetry_carets_become_pep440_ranges() {
        assert_eq!(poetry_to_pep440("^3.10"), ">=3.10,<4");
        assert_eq!(poetry_to_pep440("^0.4.1"), ">=0.4.1,<0.5");
        assert_eq!(poetry_to_pep440("~2.1"), ">=2.1,<2.2");
        assert_eq!(poetry_to_pep440(">=3.8,<3.12"), ">=3.8,<3.12");
        assert_eq!(poetry_to_pep440("*"), "");
    }

    #[test]
    fn modules_from_paths() {
        assert_eq!(module_of("app/main.py"), "app.main");
        assert_eq!(module_of("pkg/__init__.py"), "pkg");
    }
}
