//! Python installs: an interpreter chosen from those installed, a fresh venv,
//! and uv (or pip) fed with requirements translated from whatever the
//! project uses.
//!
//! The venv is `<env_dir>/<run_id>/<component>/.venv`, outside the
//! workspace (workspaces are content-addressed and shared between runs). The
//! result's `env` gives `VIRTUAL_ENV` and a `PATH` with the venv's `bin`
//! first.
//!
//! What is installed, by the first that applies:
//! - Poetry (`[tool.poetry]` or `poetry.lock`): the main dependencies of
//!   `[tool.poetry.dependencies]` (and `[project].dependencies`) as
//!   requirements, every `poetry.lock` pin as a constraint, then the project
//!   itself with `--no-deps -e .` when it is a package. Never
//!   `poetry install` (it fails behind registry proxies).
//! - Pipenv (`Pipfile`): `Pipfile.lock`'s default packages pinned, with their
//!   markers; without a lock, `[packages]` of the Pipfile.
//! - Otherwise requirements files (`requirements.txt`, or
//!   `requirements/{prod,production,base,common}.txt`), `uv.lock`'s pins as
//!   constraints, plus the project:
//!   `-e .` for a PEP 621 project with a `[build-system]` or a setup.py /
//!   setup.cfg; a PEP 621 project without `[build-system]` gets its
//!   `[project].dependencies` only.
//!
//! Fresh venvs get `setuptools<81` and wheel first (uv venvs have none, and
//! old packages import `pkg_resources`, gone from setuptools 82).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    str::FromStr as _,
    time::{Duration, Instant},
};

use pep440_rs::{Version, VersionSpecifiers};
use reporunner_proto::common::v1::Environment;

use crate::{
    Failure, Job, Report, Step,
    exec::{self, Cmd, LogSink},
    python_manifest::{
        pipfile_lock_requirements, pipfile_requirement, poetry_lock_constraints, poetry_requirement,
        poetry_spec, strings, uv_lock_constraints,
    },
    python_test_deps,
};

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_SCRIPT: &str =
    "import sys; print('%d.%d.%d' % tuple(sys.version_info[:3])); print(sys.executable)";
/// What fresh venvs get first: setuptools 81 deprecates and 82 removes `pkg_resources`, which
/// old packages still import.
const SETUPTOOLS: &str = "setuptools<81";

/// An installed interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub version: Version,
    /// The real executable (a pyenv shim resolved to what it runs).
    pub path: PathBuf,
    /// Whether this is what `python3` runs.
    pub default: bool,
}

/// The interpreters of the Environment (or, without one, `python3` and
/// every `python3.N` on `path_var`), plus pyenv's installed versions, each
/// checked by running it. Newest first.
pub async fn interpreters(
    environment: Option<&Environment>,
    path_var: &str,
    cache: &ProbeCache,
) -> Vec<Interpreter> {
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(environment) = environment {
        for tool in &environment.toolchains {
            let name = tool.name.as_str();
            let versioned = name
                .strip_prefix("python3.")
                .is_some_and(|m| m.parse::<u32>().is_ok());
            if (name == "python3" || versioned) && !tool.path.is_empty() {
                candidates.push((PathBuf::from(&tool.path), name == "python3"));
            }
        }
    }
    // The default is what `python3` runs here, also when the Environment
    // lacks it (a detector's probe that timed out drops the tool).
    if !candidates.iter().any(|(_, default)| *default)
        && let Some(path) = exec::which("python3", path_var)
    {
        candidates.insert(0, (path, true));
    }
    if candidates.len() <= 1 {
        // pyenv's versioned shims fail unless their version is selected;
        // the versions themselves are looked at below.
        for minor in 6..=20 {
            if let Some(path) = exec::which(&format!("python3.{minor}"), path_var)
                && !path.parent().is_some_and(|d| d.ends_with("shims"))
            {
                candidates.push((path, false));
            }
        }
    }
    if let Some(root) = reporunner_host::pyenv::root() {
        for installed in reporunner_host::pyenv::installed(&root) {
            candidates.push((installed.python3(), false));
        }
    }
    // A venv's python stands for its base interpreter: an app's environment
    // is never built from somebody else's venv.
    for (path, _) in &mut candidates {
        if let Some(base) = reporunner_host::venv_base(path) {
            *path = base;
        }
    }
    let probes = candidates.iter().map(|(path, default)| async move {
        let probed = match cache.get(path) {
            Some(probed) => probed,
            None => {
                let probed = probe(path).await;
                cache.put(path, probed.clone());
                probed
            }
        };
        probed.map(|i| Interpreter {
            default: *default,
            ..i
        })
    });
    // The default (`python3`, usually a pyenv shim) is probed first and alone:
    // a dozen shims started at once can fail, and the default is the one that
    // decides an install without a constraint.
    let mut probes: Vec<_> = probes.collect();
    let first = match candidates.iter().position(|(_, default)| *default) {
        Some(index) => vec![probes.remove(index).await],
        None => Vec::new(),
    };
    let rest = futures::future::join_all(probes).await;
    let mut found: Vec<Interpreter> = Vec::new();
    for interpreter in first.into_iter().chain(rest).flatten() {
        let real = interpreter
            .path
            .canonicalize()
            .unwrap_or_else(|_| interpreter.path.clone());
        if let Some(known) = found
            .iter_mut()
            .find(|k| k.path.canonicalize().unwrap_or_else(|_| k.path.clone()) == real)
        {
            known.default |= interpreter.default;
        } else {
            found.push(interpreter);
        }
    }
    // A pyenv shim is a shell script that can fail when many run at once; the
    // env-detector has already said which version `python3` is: mark that one.
    if !found.iter().any(|i| i.default)
        && let Some(version) = environment
            .and_then(|e| e.toolchains.iter().find(|t| t.name == "python3"))
            .and_then(|t| Version::from_str(t.version.trim()).ok())
        && let Some(default) = found.iter_mut().find(|i| i.version == version)
    {
        default.default = true;
    }
    found.sort_by(|a, b| b.version.cmp(&a.version));
    found
}

/// Runs `path` to learn its version and real executable.
async fn probe(path: &Path) -> Option<Interpreter> {
    let out = exec::capture(path, &["-c", PROBE_SCRIPT], Path::new("/"), PROBE_TIMEOUT).await?;
    let mut lines = out.lines();
    let version = Version::from_str(lines.next()?.trim()).ok()?;
    let executable = lines
        .next()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map_or_else(|| path.to_owned(), PathBuf::from);
    Some(Interpreter {
        version,
        path: executable,
        default: false,
    })
}

/// Interpreter probes of the last few minutes: running a dozen interpreters
/// (pyenv shims are shell scripts) costs about a second.
#[derive(Debug)]
pub struct ProbeCache {
    entries: std::sync::Mutex<HashMap<PathBuf, (Instant, Option<Interpreter>)>>,
    ttl: Duration,
}

impl ProbeCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: std::sync::Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn get(&self, path: &Path) -> Option<Option<Interpreter>> {
        let entries = self.entries.lock().ok()?;
        let (at, probed) = entries.get(path)?;
        (at.elapsed() < self.ttl).then(|| probed.clone())
    }

    fn put(&self, path: &Path, probed: Option<Interpreter>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 1_024 {
                entries.clear();
            }
            entries.insert(path.to_owned(), (Instant::now(), probed));
        }
    }
}

/// Reads a Python version constraint: PEP 440, or a bare version ("3.10"
/// means 3.10.*), or Poetry's `^` and `~`.
pub fn parse_constraint(constraint: &str) -> Result<VersionSpecifiers, String> {
    let c = constraint.trim();
    if let Ok(specs) = VersionSpecifiers::from_str(c) {
        return Ok(specs);
    }
    let bare = c.trim_end_matches(".x").trim_end_matches(".*");
    let translated = if !bare.is_empty() && bare.chars().all(|ch| ch.is_ascii_digit() || ch == '.') {
        if bare.matches('.').count() >= 2 {
            format!("=={bare}")
        } else {
            format!("=={bare}.*")
        }
    } else {
        poetry_spec(c)
    };
    VersionSpecifiers::from_str(&translated)
        .map_err(|e| format!("cannot read the Python version constraint {constraint:?}: {e}"))
}

/// The host's default interpreter (what `python3` runs) when it satisfies
/// `constraint`, else the newest one that does. The default comes first
/// because it is the one packages were most likely tested with: the newest
/// release is where pinned C extensions (greenlet, uvloop, numpy) most often
/// have no wheel and fail to compile. The error names the constraint and what
/// was found.
pub fn choose<'a>(constraint: &str, found: &'a [Interpreter]) -> Result<&'a Interpreter, String> {
    if constraint.trim().is_empty() {
        return found
            .iter()
            .find(|i| i.default)
            .or_else(|| found.first())
            .ok_or_else(|| "no Python interpreter is installed on this host".to_owned());
    }
    let specs = parse_constraint(constraint)?;
    let default = found.iter().find(|i| i.default && specs.contains(&i.version));
    default.or_else(|| found.iter().find(|i| specs.contains(&i.version))).ok_or_else(|| {
        let list = if found.is_empty() {
            "none".to_owned()
        } else {
            found
                .iter()
                .map(|i| format!("{} ({})", i.version, i.path.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "no installed Python satisfies the constraint {constraint:?}; installed interpreters: {list}. \
             Interpreters are never downloaded: install a matching one or relax the constraint"
        )
    })
}

/// Like [`choose`], when the repository also names a version it prefers
/// (`.python-version`, `runtime.txt`): an installed interpreter of that
/// version the constraint allows wins; else the installed one nearest to
/// it (the oldest newer one, else the newest older one) that the constraint
/// allows, with a notice saying so. Only the hard constraint can fail.
pub fn choose_preferring<'a>(
    constraint: &str,
    preferred: &str,
    found: &'a [Interpreter],
) -> Result<(&'a Interpreter, Option<String>), String> {
    let preferred = preferred.trim();
    let wanted = (!preferred.is_empty())
        .then(|| parse_constraint(preferred).ok())
        .flatten();
    let (Some(wanted), Ok(floor)) = (wanted, Version::from_str(preferred.trim_end_matches(".*"))) else {
        return choose(constraint, found).map(|i| (i, None));
    };
    // Fails, naming what was found, when nothing satisfies the constraint.
    choose(constraint, found)?;
    let hard = if constraint.trim().is_empty() {
        None
    } else {
        Some(parse_constraint(constraint)?)
    };
    let allowed: Vec<&Interpreter> = found
        .iter()
        .filter(|i| hard.as_ref().is_none_or(|h| h.contains(&i.version)))
        .collect();
    let exact = allowed
        .iter()
        .find(|i| i.default && wanted.contains(&i.version))
        .or_else(|| allowed.iter().find(|i| wanted.contains(&i.version)));
    if let Some(exact) = exact {
        return Ok((exact, None));
    }
    // `found` is newest first.
    let nearest = allowed
        .iter()
        .rev()
        .find(|i| i.version > floor)
        .or_else(|| allowed.iter().find(|i| i.version < floor))
        .copied()
        .ok_or_else(|| "no Python interpreter is installed on this host".to_owned())?;
    let within = if constraint.trim().is_empty() {
        String::new()
    } else {
        format!(" that satisfies {constraint:?}")
    };
    Ok((
        nearest,
        Some(format!(
            "the repository prefers Python {preferred}, which is not installed; using {}, the nearest installed version{within} (interpreters are never downloaded)",
            nearest.version
        )),
    ))
}

/// What to install into the venv.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PyPlan {
    /// What was read, for the log.
    pub source: String,
    /// Requirements files of the project (absolute).
    pub requirement_files: Vec<PathBuf>,
    /// Requirement lines made from the project's manifests.
    pub requirements: Vec<String>,
    /// Constraint lines (lock pins).
    pub constraints: Vec<String>,
    /// Install the project itself (`-e <dir>`).
    pub project: Option<Project>,
    /// Whether the project's requirements name setuptools themselves.
    pub names_setuptools: bool,
    /// `[project].dependencies`, installed instead of the project when it
    /// cannot be built.
    pub project_requirements: Vec<String>,
}

/// How the project itself is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Project {
    /// Its dependencies came from a lock already.
    pub no_deps: bool,
}

fn read_toml(path: &Path) -> Result<Option<toml::Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Value>()
            .map(Some)
            .map_err(|e| format!("cannot parse {}: {e}", path.display())),
        Err(_) => Ok(None),
    }
}

/// Decides what to install for the project in `dir`.
pub fn plan(dir: &Path, package_manager: &str) -> Result<PyPlan, String> {
    let pyproject = read_toml(&dir.join("pyproject.toml"))?;
    let get = |path: &[&str]| -> Option<&toml::Value> {
        let mut value = pyproject.as_ref()?;
        for key in path {
            value = value.get(key)?;
        }
        Some(value)
    };
    let has_build_system = get(&["build-system"]).is_some();
    let project_deps = strings(get(&["project", "dependencies"]));
    let mut plan = PyPlan::default();

    let poetry_lock = dir.join("poetry.lock");
    if get(&["tool", "poetry"]).is_some() || poetry_lock.is_file() || package_manager == "poetry" {
        if let Some(deps) = get(&["tool", "poetry", "dependencies"]).and_then(toml::Value::as_table) {
            plan.requirements.extend(
                deps.iter()
                    .filter(|(n, _)| *n != "python")
                    .filter_map(|(n, v)| poetry_requirement(n, v, dir)),
            );
        }
        plan.requirements.extend(project_deps);
        let mut source = "pyproject.toml (poetry)".to_owned();
        if let Some(lock) = read_toml(&poetry_lock)? {
            plan.constraints = poetry_lock_constraints(&lock);
            source = format!(
                "pyproject.toml (poetry) with {} pins of poetry.lock as constraints",
                plan.constraints.len()
            );
        }
        plan.source = source;
        let package_mode =
            get(&["tool", "poetry", "package-mode"]).and_then(toml::Value::as_bool) != Some(false);
        if has_build_system && package_mode {
            plan.project = Some(Project { no_deps: true });
        }
        plan.names_setuptools = names_setuptools(&plan);
        return Ok(plan);
    }

    let pipfile = dir.join("Pipfile");
    if pipfile.is_file() || package_manager == "pipenv" {
        let lock = dir.join("Pipfile.lock");
        if let Ok(text) = std::fs::read_to_string(&lock) {
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", lock.display()))?;
            plan.requirements = pipfile_lock_requirements(&json, dir);
            plan.source = format!("Pipfile.lock ({} pinned packages)", plan.requirements.len());
        } else if let Some(pipfile) = read_toml(&pipfile)? {
            if let Some(packages) = pipfile.get("packages").and_then(toml::Value::as_table) {
                plan.requirements = packages
                    .iter()
                    .filter_map(|(n, v)| pipfile_requirement(n, v, dir))
                    .collect();
            }
            plan.source = "Pipfile [packages] (no Pipfile.lock)".into();
        }
        plan.names_setuptools = names_setuptools(&plan);
        return Ok(plan);
    }

    let mut sources = Vec::new();
    let files = ["requirements.txt"];
    let nested = [
        "requirements/prod.txt",
        "requirements/production.txt",
        "requirements/base.txt",
        "requirements/common.txt",
    ];
    if let Some(file) = files
        .iter()
        .chain(nested.iter())
        .map(|f| dir.join(f))
        .find(|f| f.is_file())
    {
        sources.push(file.strip_prefix(dir).unwrap_or(&file).display().to_string());
        plan.requirement_files.push(file);
    }
    if pyproject.is_some() && get(&["project"]).is_some() {
        if let Some(lock) = read_toml(&dir.join("uv.lock"))? {
            plan.constraints = uv_lock_constraints(&lock);
            sources.push(format!(
                "{} pins of uv.lock as constraints",
                plan.constraints.len()
            ));
        }
        if has_build_system {
            sources.push("pyproject.toml (the project, editable)".into());
            plan.project = Some(Project { no_deps: false });
            plan.project_requirements = project_deps;
        } else {
            sources.push("pyproject.toml [project].dependencies (no build-system)".into());
            plan.requirements = project_deps;
        }
    } else if dir.join("setup.py").is_file()
        || describes_a_package(&dir.join("setup.cfg"))
        || has_build_system
    {
        sources.push("setup.py (the project, editable)".into());
        plan.project = Some(Project { no_deps: false });
    }
    plan.source = if sources.is_empty() {
        "nothing: no requirements file or project manifest".into()
    } else {
        sources.join(" + ")
    };
    plan.names_setuptools = names_setuptools(&plan);
    Ok(plan)
}

/// Whether a setup.cfg describes a package (`[metadata]` or `[options]`),
/// rather than holding only tools' settings (`[flake8]`, `[tool:pytest]`).
fn describes_a_package(setup_cfg: &Path) -> bool {
    std::fs::read_to_string(setup_cfg).is_ok_and(|text| {
        text.lines()
            .map(str::trim)
            .any(|l| l == "[metadata]" || l == "[options]")
    })
}

/// Whether a requirement line or requirements file names setuptools.
fn names_setuptools(plan: &PyPlan) -> bool {
    let names = |text: &str| text.to_ascii_lowercase().contains("setuptools");
    plan.requirements
        .iter()
        .chain(&plan.constraints)
        .any(|r| names(r))
        || plan
            .requirement_files
            .iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| names(&t)))
}

/// uv, found or installed.
#[derive(Clone, Debug)]
struct Uv {
    path: PathBuf,
    /// "uv 0.5.1".
    version: String,
}

async fn uv_at(path: &Path) -> Option<Uv> {
    let out = exec::capture(path, &["--version"], Path::new("/"), PROBE_TIMEOUT).await?;
    let version = out.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    version.starts_with("uv ").then(|| Uv {
        path: path.to_owned(),
        version,
    })
}

/// The interpreters that may install uv into the tools dir, in the order
/// they are tried: the host's default, then the one the component uses,
/// then the others, newest first. uv is one static binary, so which
/// interpreter fetches it does not matter, but uv's wheel needs Python 3.8
/// or later: a component on an older interpreter (its pip finds no uv at
/// all) must not fall back to pip, whose serial source builds take many
/// times as long.
fn uv_installers<'a>(chosen: &'a Interpreter, found: &'a [Interpreter]) -> Vec<&'a Path> {
    let mut order: Vec<&Path> = Vec::new();
    let default = found.iter().find(|i| i.default);
    for i in default.into_iter().chain([chosen]).chain(found) {
        if !order.contains(&i.path.as_path()) {
            order.push(&i.path);
        }
    }
    order
}

/// uv from PATH, else from the tools dir, else installed there from PyPI
/// with the first of `installers` whose pip can. `None` when it cannot be
/// had: pip is used instead.
async fn ensure_uv(job: &Job, sink: &mut LogSink, report: &Report, installers: &[&Path]) -> Step<Option<Uv>> {
    if let Some(path) = exec::which("uv", &job.base_path)
        && let Some(uv) = uv_at(&path).await
    {
        return Ok(Some(uv));
    }
    let home = job.config.tools_dir.join("uv");
    let binary = home.join("bin/uv");
    if let Some(uv) = uv_at(&binary).await {
        return Ok(Some(uv));
    }
    let _lock = job.tool_lock.lock().await;
    // Other processes share the tools dir (agents of other nodes, parallel
    // test processes): the install is theirs to see whole or not at all.
    let _file_lock = match exec::tools_lock(&job.config.tools_dir, "uv").await {
        Ok(lock) => lock,
        Err(e) => {
            sink.system(
                "install",
                format!("the tools dir cannot be locked ({e}); using pip"),
            )
            .await;
            return Ok(None);
        }
    };
    if let Some(uv) = uv_at(&binary).await {
        return Ok(Some(uv));
    }
    sink.system(
        "install",
        "uv is not installed; installing it from PyPI into the tools dir",
    )
    .await;
    let staging = job.config.tools_dir.join(format!(".uv-{}", std::process::id()));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    // The quick way: the interpreter's own pip puts uv's wheel into a
    // directory of its own (uv is one static binary; no venv to make, which
    // costs seconds). An interpreter without a usable pip makes a venv.
    let pip_cache = job.cache("pip").display().to_string();
    for python in installers {
        let target = Cmd::new(python, &job.config.tools_dir, "install")
            .tool()
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--target",
            ])
            .arg(staging.as_os_str())
            .arg("uv")
            .envs(&[("PIP_CACHE_DIR".to_owned(), pip_cache.clone())].into());
        if exec::run_quiet(job.command(&target).await?, job.deadline).await
            && uv_at(&staging.join("bin/uv")).await.is_some()
        {
            sink.system("install", format!("$ {} (uv installed)", target.display()))
                .await;
            let _ = tokio::fs::remove_dir_all(&home).await;
            if tokio::fs::rename(&staging, &home).await.is_ok()
                && let Some(uv) = uv_at(&binary).await
            {
                return Ok(Some(uv));
            }
        }
        let _ = tokio::fs::remove_dir_all(&staging).await;
    }
    let Some(python) = installers.first() else {
        return Ok(None);
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let venv = Cmd::new(python, &job.config.tools_dir, "install")
        .args(["-m".as_ref(), "venv".as_ref(), staging.as_os_str()])
        .tool();
    let pip = Cmd::new(staging.join("bin/python"), &job.config.tools_dir, "install")
        .tool()
        .args(["-m", "pip", "install", "--disable-pip-version-check", "uv"])
        .envs(&[("PIP_CACHE_DIR".to_owned(), pip_cache)].into());
    let installed = match job.step(sink, report, &venv).await {
        Ok(()) => job.step(sink, report, &pip).await,
        Err(e) => Err(e),
    };
    match installed {
        Err(failure) if failure.fatal => Err(failure),
        Err(failure) => {
            sink.system(
                "install",
                format!("uv could not be installed ({}); using pip", failure.message),
            )
            .await;
            let _ = tokio::fs::remove_dir_all(&staging).await;
            Ok(None)
        }
        Ok(()) => {
            let _ = tokio::fs::remove_dir_all(&home).await;
            if let Err(e) = tokio::fs::rename(&staging, &home).await {
                sink.system(
                    "install",
                    format!("uv could not be moved into the tools dir ({e}); using pip"),
                )
                .await;
                return Ok(None);
            }
            Ok(uv_at(&binary).await)
        }
    }
}

/// Installs the component's Python dependencies.
pub(crate) async fn install(job: &Job, sink: &mut LogSink, report: &mut Report) -> Step {
    let constraint = job
        .component
        .runtime
        .as_ref()
        .map(|r| r.version_constraint.trim().to_owned())
        .unwrap_or_default();
    let preferred = job
        .component
        .runtime
        .as_ref()
        .map(|r| r.preferred_version.trim().to_owned())
        .unwrap_or_default();
    let found = interpreters(job.environment.as_ref(), &job.base_path, &job.probes).await;
    let (python, notice) = choose_preferring(&constraint, &preferred, &found).map_err(Failure::new)?;
    let python = python.clone();
    if let Some(notice) = notice {
        sink.system("install", notice).await;
    }
    let wanted = if constraint.is_empty() {
        "none".to_owned()
    } else {
        constraint.clone()
    };
    sink.system(
        "install",
        format!(
            "python {} at {} (constraint: {wanted}; installed: {})",
            python.version,
            python.path.display(),
            found
                .iter()
                .map(|i| format!("{}{}", i.version, if i.default { " (default)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await;
    let plan = plan(&job.dir, &job.component.package_manager).map_err(Failure::new)?;
    sink.system("install", format!("dependencies from {}", plan.source))
        .await;

    let venv = job.env_root.join(".venv");
    if tokio::fs::symlink_metadata(&venv).await.is_ok() {
        tokio::fs::remove_dir_all(&venv)
            .await
            .map_err(|e| Failure::new(format!("cannot remove the old venv {}: {e}", venv.display())))?;
    }
    let bin = venv.join("bin");
    report.environment_path.clone_from(&venv);
    report.disk_paths = vec![venv.clone()];
    report
        .env
        .insert("VIRTUAL_ENV".into(), venv.display().to_string());
    report
        .env
        .insert("PATH".into(), format!("{}:{}", bin.display(), job.base_path));
    let mut env = report.env.clone();
    for (key, value) in [
        ("UV_CACHE_DIR", job.cache("uv").display().to_string()),
        ("UV_PYTHON_DOWNLOADS", "never".to_owned()),
        ("UV_NO_PROGRESS", "1".to_owned()),
        ("PIP_CACHE_DIR", job.cache("pip").display().to_string()),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1".to_owned()),
        ("PIP_NO_INPUT", "1".to_owned()),
    ] {
        env.insert(key.into(), value);
    }
    if !in_git_checkout(&job.dir, &job.workspace) {
        // setuptools-scm and hatch-vcs read the version from git; a
        // repository handed over as an archive or a copy has none.
        env.insert("SETUPTOOLS_SCM_PRETEND_VERSION".into(), PRETEND_VERSION.into());
    }

    let uv = if job.config.use_uv {
        ensure_uv(job, sink, report, &uv_installers(&python, &found)).await?
    } else {
        None
    };
    let venv_python = bin.join("python");
    let installer = |args: Vec<String>| match &uv {
        Some(uv) => Cmd::new(&uv.path, &job.dir, "install")
            .args([
                "pip".as_ref(),
                "install".as_ref(),
                "--python".as_ref(),
                venv_python.as_os_str(),
            ])
            .args(args)
            .envs(&env),
        None => Cmd::new(&venv_python, &job.dir, "install")
            .args(["-m", "pip", "install"])
            .args(args)
            .envs(&env),
    };
    let create = match &uv {
        Some(uv) => Cmd::new(&uv.path, &job.dir, "install")
            .args([
                "venv".as_ref(),
                "-p".as_ref(),
                python.path.as_os_str(),
                venv.as_os_str(),
            ])
            .envs(&env),
        None => Cmd::new(&python.path, &job.dir, "install")
            .args(["-m".as_ref(), "venv".as_ref(), venv.as_os_str()])
            .envs(&env),
    };
    job.step(sink, report, &create).await?;
    report.tool = match &uv {
        Some(uv) => uv.version.clone(),
        None => exec::capture(&venv_python, &["-m", "pip", "--version"], &job.dir, PROBE_TIMEOUT)
            .await
            .map_or_else(
                || "pip".to_owned(),
                |v| v.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            ),
    };
    // setuptools and wheel go into the same resolution, unless the project
    // asks for a setuptools of its own.
    let mut args: Vec<String> = Vec::new();
    if !plan.names_setuptools {
        args.extend([SETUPTOOLS.into(), "wheel".into()]);
    }
    for file in &plan.requirement_files {
        args.extend(["-r".into(), file.display().to_string()]);
    }
    if !plan.requirements.is_empty() {
        let file = job.env_root.join("requirements.generated.txt");
        write_lines(&file, &plan.requirements).await?;
        args.extend(["-r".into(), file.display().to_string()]);
    }
    if plan.project.is_some_and(|p| !p.no_deps) {
        args.extend(["-e".into(), job.dir.display().to_string()]);
    }
    if !plan.constraints.is_empty() && !args.is_empty() {
        let file = job.env_root.join("constraints.generated.txt");
        write_lines(&file, &plan.constraints).await?;
        args.extend(["-c".into(), file.display().to_string()]);
    }
    let mut batches = vec![args];
    if plan.project.is_some_and(|p| p.no_deps) {
        batches.push(vec![
            "--no-deps".into(),
            "-e".into(),
            job.dir.display().to_string(),
        ]);
    }
    let project_dir = job.dir.display().to_string();
    // No lock: what the repository was written against, as of its date
    // (uv only; pip has no such option).
    let locked = !plan.constraints.is_empty() || job.dir.join("Pipfile.lock").is_file();
    let dated = if locked || uv.is_none() {
        None
    } else {
        job.resolve_date()
    };
    if let Some(date) = &dated {
        sink.system(
            "install",
            format!(
                "no lockfile: resolving dependencies as of the repository's date ({date}, uv --exclude-newer)"
            ),
        )
        .await;
    }
    let with_date = |args: &[String]| -> Vec<String> {
        match &dated {
            Some(date) => [dated_args(date), args.to_vec()].concat(),
            None => args.to_vec(),
        }
    };
    for args in batches.into_iter().filter(|a| !a.is_empty()) {
        // With uv, the download cache is tried alone first: a warm install
        // then needs no index round trips. A miss costs one quick, silent
        // attempt, and the online install follows.
        if uv.is_some() {
            let offline = installer([vec!["--offline".to_owned()], with_date(&args)].concat());
            if exec::run_quiet(job.command(&offline).await?, job.deadline).await {
                sink.system(
                    "install",
                    format!(
                        "$ {} (everything came from the download cache)",
                        offline.display()
                    ),
                )
                .await;
                continue;
            }
        }
        let editable_project = args.first().is_some_and(|a| a == "--no-deps");
        let with_project = !editable_project && args.contains(&project_dir);
        let outcome = match &dated {
            Some(date) => {
                let (dated_cmd, today) = (installer(with_date(&args)), installer(args.clone()));
                // When the project itself fails to build, the date is not
                // why: its dependencies are installed without it, still as
                // of the date (below), not resolved again as of today.
                job.dated_or_today_unless(sink, report, date, (&dated_cmd, &today), |tail| {
                    with_project && project_build_failed(tail, &project_dir)
                })
                .await
            }
            None => job.step(sink, report, &installer(args.clone())).await,
        };
        let legacy = match &outcome {
            Err(failure) if !failure.fatal => legacy_setuptools(&sink.tail()),
            _ => None,
        };
        if let (Err(_), Some(legacy)) = (&outcome, legacy) {
            // An old `setup.py` uses what setuptools has since removed:
            // its build gets the newest setuptools that still has it,
            // in the venv (pip builds there without isolation) and in
            // isolated build environments (a build constraint).
            sink.system(
                "install",
                format!(
                    "an old package's setup.py needs {} ({}); installing again with it",
                    legacy.cap, legacy.cause
                ),
            )
            .await;
            let file = job.env_root.join("build-constraints.generated.txt");
            write_lines(&file, &[legacy.cap.to_owned()]).await?;
            let constrained = |args: Vec<String>| {
                let mut cmd = installer(args);
                let var = if uv.is_some() {
                    "UV_BUILD_CONSTRAINT"
                } else {
                    "PIP_CONSTRAINT"
                };
                cmd.env.insert(var.to_owned(), file.display().to_string());
                cmd
            };
            job.step(sink, report, &constrained(vec![legacy.cap.to_owned()]))
                .await?;
            match &dated {
                Some(date) => {
                    let (dated_cmd, today) = (constrained(with_date(&args)), constrained(args.clone()));
                    job.dated_or_today(sink, report, date, &dated_cmd, &today).await?;
                }
                None => job.step(sink, report, &constrained(args.clone())).await?,
            }
            continue;
        }
        match outcome {
            Err(failure) if !failure.fatal && vcs_unreachable(&sink.tail()) => {
                let Some(registry) = registry_instead_of_vcs(job, &args, &plan).await? else {
                    return Err(failure);
                };
                sink.system(
                    "install",
                    format!(
                        "a requirement fetched with git could not be fetched ({}); using the same packages from \
                         the registry: {}",
                        failure.message,
                        registry.replaced.join(", ")
                    ),
                )
                .await;
                job.step(sink, report, &installer(registry.args)).await?;
            }
            Err(failure) if with_project && !failure.fatal => {
                // A directory with a manifest is not always a package
                // (several top-level modules in a flat layout, nothing for
                // hatch to ship, a version read from git): its dependencies
                // are installed without it, and it runs from its directory.
                let mut without: Vec<String> = Vec::with_capacity(args.len());
                let mut iter = args.iter().peekable();
                while let Some(arg) = iter.next() {
                    if arg == "-e" && iter.peek().is_some_and(|next| **next == project_dir) {
                        iter.next();
                        continue;
                    }
                    without.push(arg.clone());
                }
                if !plan.project_requirements.is_empty() {
                    let file = job.env_root.join("requirements.project.generated.txt");
                    write_lines(&file, &plan.project_requirements).await?;
                    without.extend(["-r".into(), file.display().to_string()]);
                }
                sink.system(
                    "install",
                    format!(
                        "the project itself could not be installed ({}); installing its dependencies without it",
                        failure.message
                    ),
                )
                .await;
                let installed = match &dated {
                    Some(date) => {
                        let (dated_cmd, today) = (installer(with_date(&without)), installer(without));
                        job.dated_or_today(sink, report, date, &dated_cmd, &today).await
                    }
                    None => job.step(sink, report, &installer(without)).await,
                };
                match installed {
                    Ok(()) => {
                        sink.system(
                            "install",
                            "its dependencies are installed; the project runs from its directory".to_owned(),
                        )
                        .await;
                    }
                    Err(second) if second.fatal => return Err(second),
                    Err(_) => return Err(failure),
                }
            }
            Err(failure) if editable_project && !failure.fatal => {
                // Old build backends (poetry's `poetry.masonry.api`, old
                // setuptools) cannot build editable installs (PEP 660); an
                // app runs as well from a regular install of itself.
                sink.system(
                    "install",
                    "the project's build backend cannot install it editable; installing it as a regular package"
                        .to_owned(),
                )
                .await;
                let regular: Vec<String> = args.into_iter().filter(|a| a != "-e").collect();
                match job.step(sink, report, &installer(regular)).await {
                    // Its dependencies are in; many apps (poetry projects
                    // whose name matches no package) are never meant to be
                    // built and run from their directory.
                    Err(failure) if !failure.fatal => {
                        sink.system(
                            "install",
                            format!(
                                "the project itself cannot be built as a package ({}); its dependencies are installed and it runs from its directory",
                                failure.message
                            ),
                        )
                        .await;
                    }
                    other => other?,
                }
            }
            Err(failure) if !failure.fatal && !with_project && conflicting_freeze(&plan, &sink.tail()) => {
                install_freeze(job, sink, report, &plan, failure, &installer).await?;
            }
            other => other?,
        }
    }
    if job.with_tests {
        let pyproject = read_toml(&job.dir.join("pyproject.toml")).ok().flatten();
        let test_command = job
            .component
            .test
            .as_ref()
            .map(|c| c.run.as_str())
            .unwrap_or_default();
        let installed = plan.project.is_some_and(|p| !p.no_deps);
        let tests = python_test_deps::read(&job.dir, pyproject.as_ref(), installed, test_command);
        let date = dated.as_deref();
        install_test_deps(job, sink, report, (&plan, date), &tests, test_command, installer).await?;
    }
    job.custom_install(sink, report).await?;
    job.build(sink, report, None).await
}

/// Build backends, which old sdists get in their build environments
/// (`setuptools>=40.8.0` by default): these come as of today, whatever
/// the repository's date.
const BUILD_TOOLS: &[&str] = &[
    "setuptools",
    "wheel",
    "setuptools-scm",
    "hatchling",
    "hatch-vcs",
    "flit-core",
    "poetry-core",
    "pdm-backend",
];

/// uv's arguments resolving as of `date`, build backends excepted.
fn dated_args(date: &str) -> Vec<String> {
    let now =
        humantime_serde::re::humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut args = vec!["--exclude-newer".to_owned(), date.to_owned()];
    for tool in BUILD_TOOLS {
        args.extend(["--exclude-newer-package".to_owned(), format!("{tool}={now}")]);
    }
    args
}

/// A line `pip freeze` writes on Debian and Ubuntu for a distribution that
/// does not exist.
const BOGUS_FREEZE_LINE: &str = "pkg-resources==0.0.0";

/// Whether the requirements are a `pip freeze` (every line an exact pin)
/// that the resolver found contradictory: pip's old resolver installed such
/// sets as they were, and the repository ran with them.
fn conflicting_freeze(plan: &PyPlan, tail: &[String]) -> bool {
    let conflict = tail.iter().any(|l| {
        l.contains("unsatisfiable") || l.contains("ResolutionImpossible") || l.contains(BOGUS_FREEZE_LINE)
    });
    conflict
        && plan.project.is_none()
        && plan.requirements.is_empty()
        && !plan.requirement_files.is_empty()
        && plan.requirement_files.iter().all(|f| {
            std::fs::read_to_string(f).is_ok_and(|text| {
                let mut pins = text
                    .lines()
                    .map(|l| l.split('#').next().unwrap_or_default().trim())
                    .filter(|l| !l.is_empty())
                    .peekable();
                pins.peek().is_some() && pins.all(|l| l.contains("==") && !l.starts_with('-'))
            })
        })
}

/// Installs a contradictory freeze as pip's old resolver did: each pin as
/// it is, without resolving (`--no-deps`), leaving out the bogus
/// `pkg-resources==0.0.0`. Fails with the resolver's own failure when that
/// fails too.
async fn install_freeze(
    job: &Job,
    sink: &mut LogSink,
    report: &Report,
    plan: &PyPlan,
    failure: Failure,
    installer: impl Fn(Vec<String>) -> Cmd,
) -> Step {
    let mut pins: Vec<String> = Vec::new();
    for file in &plan.requirement_files {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| Failure::new(format!("cannot read {}: {e}", file.display())))?;
        pins.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
                .filter(|l| !l.is_empty() && !l.eq_ignore_ascii_case(BOGUS_FREEZE_LINE)),
        );
    }
    sink.system(
        "install",
        "the requirements are a freeze whose pins contradict each other; installing each pin as it is (--no-deps), as pip's old resolver did",
    )
    .await;
    let file = job.env_root.join("requirements.freeze.generated.txt");
    write_lines(&file, &pins).await?;
    let args = vec![
        "--no-deps".to_owned(),
        SETUPTOOLS.to_owned(),
        "wheel".to_owned(),
        "-r".to_owned(),
        file.display().to_string(),
    ];
    match job.step(sink, report, &installer(args)).await {
        Ok(()) => Ok(()),
        Err(second) if second.fatal => Err(second),
        Err(_) => Err(failure),
    }
}

/// The version setuptools-scm and hatch-vcs are told outside a git checkout.
const PRETEND_VERSION: &str = "0.0.0";

/// Whether `dir` or a parent of it up to `workspace` holds `.git`.
fn in_git_checkout(dir: &Path, workspace: &Path) -> bool {
    dir.ancestors()
        .take_while(|d| d.starts_with(workspace))
        .any(|d| d.join(".git").exists())
}

/// Installs what the tests need, after the project's own dependencies and
/// under the same lock pins. When that fails, the runner the test command
/// names is tried alone; neither failing fails the install (the test step
/// then says what is missing, and is healed like any other step).
async fn install_test_deps(
    job: &Job,
    sink: &mut LogSink,
    report: &Report,
    (plan, dated): (&PyPlan, Option<&str>),
    tests: &python_test_deps::TestDeps,
    test_command: &str,
    installer: impl Fn(Vec<String>) -> Cmd,
) -> Step {
    if tests.is_empty() {
        sink.system("install", "the tests need nothing more that this agent can read")
            .await;
        return Ok(());
    }
    sink.system(
        "install",
        format!("test dependencies from {}", tests.sources.join(" + ")),
    )
    .await;
    let mut args: Vec<String> = Vec::new();
    for file in &tests.requirement_files {
        args.extend(["-r".into(), file.display().to_string()]);
    }
    if !tests.requirements.is_empty() {
        let file = job.env_root.join("requirements-tests.generated.txt");
        write_lines(&file, &tests.requirements).await?;
        args.extend(["-r".into(), file.display().to_string()]);
    }
    if !tests.extras.is_empty() {
        args.extend([
            "-e".into(),
            format!("{}[{}]", job.dir.display(), tests.extras.join(",")),
        ]);
    }
    if !plan.constraints.is_empty() {
        let file = job.env_root.join("constraints.generated.txt");
        write_lines(&file, &plan.constraints).await?;
        args.extend(["-c".into(), file.display().to_string()]);
    }
    let outcome = match dated {
        Some(date) => {
            let dated_args = [dated_args(date), args.clone()].concat();
            job.dated_or_today(sink, report, date, &installer(dated_args), &installer(args))
                .await
        }
        None => job.step(sink, report, &installer(args)).await,
    };
    let failure = match outcome {
        Err(failure) if !failure.fatal => failure,
        other => return other,
    };
    let runner = python_test_deps::names_pytest(test_command)
        && (tests.requirements.len() > 1 || !tests.requirement_files.is_empty() || !tests.extras.is_empty());
    sink.system(
        "install",
        format!(
            "the test dependencies could not be installed ({}){}",
            failure.message,
            if runner {
                "; installing the test runner alone"
            } else {
                ""
            }
        ),
    )
    .await;
    if runner {
        match job.step(sink, report, &installer(vec!["pytest".into()])).await {
            Err(failure) if !failure.fatal => {
                sink.system(
                    "install",
                    format!("pytest could not be installed either ({})", failure.message),
                )
                .await;
            }
            other => other?,
        }
    }
    Ok(())
}

/// What an old `setup.py` needs of setuptools, read from a failed build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LegacySetuptools {
    /// The requirement its build gets, e.g. `setuptools<58`.
    cap: &'static str,
    /// What it uses that newer releases removed.
    cause: &'static str,
}

/// Build failures of old `setup.py` files, by what they use that setuptools
/// removed, strictest cap first: `Feature` (gone in 46), `use_2to3` (58),
/// the `test` command (72).
const LEGACY_SETUPTOOLS: &[(&str, LegacySetuptools)] = &[
    (
        "cannot import name 'Feature' from 'setuptools'",
        LegacySetuptools {
            cap: "setuptools<46",
            cause: "setuptools.Feature, removed in setuptools 46",
        },
    ),
    (
        "use_2to3 is invalid",
        LegacySetuptools {
            cap: "setuptools<58",
            cause: "use_2to3, removed in setuptools 58",
        },
    ),
    (
        "No module named 'setuptools.command.test'",
        LegacySetuptools {
            cap: "setuptools<72",
            cause: "the test command, removed in setuptools 72",
        },
    ),
    (
        "cannot import name 'test' from 'setuptools.command'",
        LegacySetuptools {
            cap: "setuptools<72",
            cause: "the test command, removed in setuptools 72",
        },
    ),
];

/// The strictest setuptools cap the failed install's output asks for.
fn legacy_setuptools(tail: &[String]) -> Option<LegacySetuptools> {
    LEGACY_SETUPTOOLS
        .iter()
        .find(|(marker, _)| tail.iter().any(|line| line.contains(marker)))
        .map(|(_, legacy)| *legacy)
}

/// Whether an install failed building the project in `project_dir` itself
/// (uv: ``Failed to build `name @ file://<dir>` ``; pip: its editable
/// metadata or build step did not run), rather than resolving or building
/// a dependency.
fn project_build_failed(tail: &[String], project_dir: &str) -> bool {
    let own = format!("@ file://{project_dir}");
    tail.iter().any(|line| {
        line.contains("Failed to build `") && line.trim_end().trim_end_matches('`').ends_with(&own)
            || line.contains("editable")
                && (line.contains("did not run successfully")
                    || line.contains("Getting requirements to build"))
    })
}

/// Whether an install failed fetching a requirement with git.
fn vcs_unreachable(tail: &[String]) -> bool {
    tail.iter().any(|line| {
        let l = line.to_ascii_lowercase();
        l.contains("git")
            && [
                "unable to access",
                "could not resolve host",
                "failed to clone",
                "git operation failed",
                "failed to fetch",
                "could not read from remote",
                "repository not found",
            ]
            .iter()
            .any(|m| l.contains(m))
    })
}

/// An install's arguments with every git requirement replaced by the same
/// package from the registry, and what was replaced.
struct Registry {
    args: Vec<String>,
    replaced: Vec<String>,
}

/// `args` with the git requirements of the plan's generated requirements
/// (Pipfile, Pipfile.lock, pyproject) replaced by [`from_registry`]; `None`
/// when there is none. The project's own requirement files are not read
/// again: install code has run since the plan was made, and the agent reads
/// nothing in the workspace after that.
async fn registry_instead_of_vcs(job: &Job, args: &[String], plan: &PyPlan) -> Step<Option<Registry>> {
    let generated = job
        .env_root
        .join("requirements.generated.txt")
        .display()
        .to_string();
    let mut replaced = Vec::new();
    let rewritten: Vec<String> = plan
        .requirements
        .iter()
        .map(|line| match from_registry(line) {
            Some(registry) => {
                replaced.push(format!("{} → {registry}", line.trim()));
                registry
            }
            None => line.clone(),
        })
        .collect();
    if replaced.is_empty() {
        return Ok(None);
    }
    let copy = job.env_root.join("requirements.registry.generated.txt");
    write_lines(&copy, &rewritten).await?;
    let args = args
        .iter()
        .map(|arg| {
            if *arg == generated {
                copy.display().to_string()
            } else {
                arg.clone()
            }
        })
        .collect();
    Ok(Some(Registry { args, replaced }))
}

/// A requirement fetched with git (`name[extras] @ git+URL@ref; markers`,
/// or the legacy `[-e] git+URL@ref#egg=name`) as the same package from the
/// registry: pinned to the ref when the ref is a version tag (`v1.2.3`),
/// else unpinned. `None` for any other line.
pub(crate) fn from_registry(line: &str) -> Option<String> {
    static VERSION_TAG: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^v?(\d+(?:\.\d+){0,3}(?:(?:a|b|rc|\.post|\.dev)\d+)?)$").ok()
    });
    let line = line.trim();
    let (requirement, markers) = match line.split_once(';') {
        Some((r, m)) => (r.trim(), Some(m.trim())),
        None => (line, None),
    };
    let (name, url) = if let Some((name, url)) = requirement.split_once(" @ ") {
        (name.trim().to_owned(), url.trim())
    } else {
        let url = requirement.trim_start_matches("-e ").trim();
        let egg = url.split_once("#egg=")?.1;
        (egg.split('&').next().unwrap_or(egg).trim().to_owned(), url)
    };
    let url = url.strip_prefix("git+")?;
    let url = url.split('#').next().unwrap_or(url);
    // The ref is after the last `@` of the path (not the `user@` of the host).
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let reference = path
        .rsplit_once('@')
        .map(|(_, r)| r)
        .filter(|r| !r.contains('/') && !r.contains(':'));
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-[],".contains(c));
    if !valid {
        return None;
    }
    let pin = reference
        .and_then(|r| VERSION_TAG.as_ref()?.captures(r))
        .map(|c| format!("=={}", &c[1]))
        .unwrap_or_default();
    Some(match markers {
        Some(markers) => format!("{name}{pin}; {markers}"),
        None => format!("{name}{pin}"),
    })
}

async fn write_lines(file: &Path, lines: &[String]) -> Step {
    let mut text = lines.join("\n");
    text.push('\n');
    tokio::fs::write(file, text)
        .await
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_setup_py_gets_the_strictest_setuptools_it_names() {
        let tail = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            legacy_setuptools(&tail(&[
                "      error in anyjson setup command: use_2to3 is invalid."
            ]))
            .map(|l| l.cap),
            Some("setuptools<58")
        );
        assert_eq!(
            legacy_setuptools(&tail(&[
                "error in anyjson setup command: use_2to3 is invalid.",
                "ImportError: cannot import name 'Feature' from 'setuptools' (/v/setuptools/__init__.py)",
            ]))
            .map(|l| l.cap),
            Some("setuptools<46"),
            "two old packages: the cap both can build with"
        );
        assert_eq!(
            legacy_setuptools(&tail(&[
                "ModuleNotFoundError: No module named 'setuptools.command.test'"
            ]))
            .map(|l| l.cap),
            Some("setuptools<72")
        );
        assert_eq!(
            legacy_setuptools(&tail(&["error: Failed to build `cffi==1.11.2`"])),
            None
        );
    }

    #[test]
    fn a_failed_build_of_the_project_itself_is_told_from_a_dependencys() {
        let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
        let own = lines(
            "Resolved 38 packages in 5.28s\n\
             error: Failed to build `microblog-api @ file:///w/ws/3470a8`\n  \
             cause: The build backend returned an error",
        );
        assert!(project_build_failed(&own, "/w/ws/3470a8"));
        let dependency =
            lines("error: Failed to build `markupsafe==1.0`\n  cause: The build backend returned an error");
        assert!(!project_build_failed(&dependency, "/w/ws/3470a8"));
        let other_dir = lines("error: Failed to build `lib @ file:///w/ws/3470a8/vendor/lib`");
        assert!(!project_build_failed(&other_dir, "/w/ws/3470a8"));
        let pip = lines("  × Preparing editable metadata (pyproject.toml) did not run successfully.");
        assert!(project_build_failed(&pip, "/w/ws/3470a8"));
    }

    #[test]
    fn git_requirements_become_the_same_packages_from_the_registry() {
        assert_eq!(
            from_registry("markupsafe @ git+https://github.com/pallets/markupsafe.git@2.1.5").as_deref(),
            Some("markupsafe==2.1.5")
        );
        assert_eq!(
            from_registry("requests[socks] @ git+ssh://git@github.com/psf/requests.git@v2.31.0; python_version >= \"3.8\"")
                .as_deref(),
            Some("requests[socks]==2.31.0; python_version >= \"3.8\"")
        );
        assert_eq!(
            from_registry("-e git+https://github.com/benjaminp/six.git@1a2b3c4d#egg=six").as_deref(),
            Some("six"),
            "a commit is no version: unpinned"
        );
        assert_eq!(
            from_registry("git+https://example.com/x/attrs.git#egg=attrs&subdirectory=src").as_deref(),
            Some("attrs")
        );
        assert_eq!(from_registry("flask==3.0.0"), None);
        assert_eq!(from_registry("lib @ https://example.com/lib-1.0.tar.gz"), None);
        assert_eq!(from_registry("git+https://example.com/no-egg.git"), None);
        assert!(vcs_unreachable(&[
            "  × Failed to download and build `markupsafe @ git+https://127.0.0.1:9/m.git@2.1.5`".into(),
            "  ╰─▶ Git operation failed".into(),
        ]));
        assert!(!vcs_unreachable(&[
            "ERROR: No matching distribution found for nope".into()
        ]));
    }

    fn interp(version: &str, default: bool) -> Interpreter {
        Interpreter {
            version: Version::from_str(version).unwrap(),
            path: PathBuf::from(format!("/usr/bin/python{version}")),
            default,
        }
    }

    #[test]
    fn the_default_then_the_newest_matching_interpreter_wins_and_a_miss_names_everything() {
        let found = [
            interp("3.13.0", false),
            interp("3.11.7", true),
            interp("3.10.13", false),
        ];
        assert_eq!(
            choose(">=3.10,<3.13", &found).unwrap().version.to_string(),
            "3.11.7"
        );
        assert_eq!(choose("", &found).unwrap().version.to_string(), "3.11.7");
        assert_eq!(choose("3.10", &found).unwrap().version.to_string(), "3.10.13");
        assert_eq!(
            choose("^3.11", &found).unwrap().version.to_string(),
            "3.11.7",
            "the default wins when it satisfies an open constraint"
        );
        assert_eq!(choose(">=3.12", &found).unwrap().version.to_string(), "3.13.0");
        let miss = choose("==3.8.*", &found).unwrap_err();
        assert!(
            miss.contains("\"==3.8.*\"") && miss.contains("3.13.0") && miss.contains("3.10.13"),
            "{miss}"
        );
        assert!(choose("nonsense!", &found).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn a_preferred_version_is_used_when_installed_else_the_nearest_allowed() {
        let found = vec![
            interp("3.13.1", false),
            interp("3.12.4", false),
            interp("3.11.9", true),
            interp("3.9.18", false),
        ];
        let pick = |c: &str, p: &str| {
            choose_preferring(c, p, &found).map(|(i, notice)| (i.version.to_string(), notice.is_some()))
        };
        assert_eq!(pick("", "3.12"), Ok(("3.12.4".into(), false)));
        // .python-version 3.14, requires-python >=3.13: 3.13 with a notice.
        assert_eq!(pick(">=3.13", "3.14"), Ok(("3.13.1".into(), true)));
        // The nearest newer one before any older one.
        assert_eq!(pick("", "3.10"), Ok(("3.11.9".into(), true)));
        assert_eq!(pick("", "3.7"), Ok(("3.9.18".into(), true)));
        assert_eq!(pick("<3.11", "3.10.2"), Ok(("3.9.18".into(), true)));
        // Only the hard constraint fails.
        assert!(
            pick(">=3.14", "3.14")
                .unwrap_err()
                .contains("no installed Python satisfies")
        );
        assert_eq!(pick(">=3.9", ""), Ok(("3.11.9".into(), false)));
    }

    #[test]
    fn poetry_constraints_become_pep440() {
        assert_eq!(poetry_spec("^1.2.3"), ">=1.2.3,<2");
        assert_eq!(poetry_spec("^0.2.3"), ">=0.2.3,<0.3");
        assert_eq!(poetry_spec("^0.0.3"), ">=0.0.3,<0.0.4");
        assert_eq!(poetry_spec("~1.2.3"), ">=1.2.3,<1.3");
        assert_eq!(poetry_spec("~1"), ">=1,<2");
        assert_eq!(poetry_spec("*"), "");
        assert_eq!(poetry_spec("1.2.3"), "==1.2.3");
        assert_eq!(poetry_spec(">= 1.2, < 2"), ">=1.2,<2");
        assert_eq!(poetry_spec("^1 || ^2"), ">=1,<2");
        assert_eq!(poetry_spec("~=1.4"), "~=1.4");
    }

    #[test]
    fn poetry_tables_keep_extras_markers_and_sources_and_drop_optionals() {
        let deps: toml::Value = toml::from_str(
            r#"
            uvicorn = {extras = ["standard"], version = "^0.29.0"}
            colorama = {version = "*", markers = "sys_platform == 'win32'"}
            lib = {git = "https://example.com/lib.git", rev = "abc"}
            local = {path = "libs/local", develop = true}
            extra = {version = "^1", optional = true}
            "#,
        )
        .unwrap();
        let dir = Path::new("/w");
        let line = |n: &str| poetry_requirement(n, &deps[n], dir);
        assert_eq!(line("uvicorn").unwrap(), "uvicorn[standard]>=0.29.0,<0.30");
        assert_eq!(line("colorama").unwrap(), "colorama; sys_platform == 'win32'");
        assert_eq!(line("lib").unwrap(), "lib @ git+https://example.com/lib.git@abc");
        assert_eq!(line("local").unwrap(), "-e /w/libs/local");
        assert_eq!(line("extra"), None);
    }

    #[test]
    fn poetry_lock_pins_registry_packages() {
        let lock: toml::Value = toml::from_str(
            r#"
            [[package]]
            name = "anyio"
            version = "4.3.0"
            [[package]]
            name = "mylib"
            version = "0.1.0"
            [package.source]
            type = "git"
            url = "https://example.com/mylib.git"
            "#,
        )
        .unwrap();
        assert_eq!(poetry_lock_constraints(&lock), ["anyio==4.3.0"]);
    }

    #[test]
    fn uv_lock_pins_registry_packages_locked_once() {
        let lock: toml::Value = toml::from_str(
            r#"
            version = 1
            [[package]]
            name = "anyio"
            version = "4.3.0"
            source = { registry = "https://pypi.org/simple" }
            [[package]]
            name = "numpy"
            version = "1.26.4"
            source = { registry = "https://pypi.org/simple" }
            [[package]]
            name = "numpy"
            version = "2.1.0"
            source = { registry = "https://pypi.org/simple" }
            [[package]]
            name = "myapi"
            version = "0.1.0"
            source = { editable = "." }
            "#,
        )
        .unwrap();
        assert_eq!(uv_lock_constraints(&lock), ["anyio==4.3.0"]);
    }

    #[test]
    fn pipfile_lock_default_packages_are_pinned_with_markers() {
        let lock = serde_json::json!({
            "default": {
                "flask": {"version": "==3.0.0", "hashes": []},
                "colorama": {"version": "==0.4.6", "markers": "platform_system == 'Windows'"},
                "app": {"editable": true, "path": "."}
            },
            "develop": {"pytest": {"version": "==8.0.0"}}
        });
        let lines = pipfile_lock_requirements(&lock, Path::new("/w"));
        assert_eq!(lines.len(), 3);
        assert!(lines.contains(&"flask==3.0.0".to_owned()));
        assert!(lines.contains(&"colorama==0.4.6; platform_system == 'Windows'".to_owned()));
        assert!(lines.contains(&"-e /w/.".to_owned()));
    }

    #[test]
    fn the_repository_fixtures_are_planned_by_their_manager() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let poetry = plan(&fixtures.join("poetry-fastapi"), "poetry").unwrap();
        assert!(
            poetry.requirements.iter().any(|r| r == "fastapi>=0.110.0,<0.111"),
            "{poetry:?}"
        );
        assert!(!poetry.requirements.iter().any(|r| r.starts_with("pytest")));
        assert_eq!(poetry.project, Some(Project { no_deps: true }));
        let pipenv = plan(&fixtures.join("pipenv-flask"), "pipenv").unwrap();
        assert_eq!(pipenv.requirements, ["flask", "redis>=4"]);
        let uv = plan(&fixtures.join("fastapi-src-uv"), "uv").unwrap();
        assert_eq!(uv.project, Some(Project { no_deps: false }));
        assert!(uv.source.contains("uv.lock"), "{uv:?}");
        let setup = plan(&fixtures.join("setup-py-lib"), "pip").unwrap();
        assert_eq!(setup.project, Some(Project { no_deps: false }));
    }
}
