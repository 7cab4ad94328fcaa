//! What a Python project's tests need beyond its own dependencies, for runs
//! whose goal runs tests (`InstallRequest.with_tests`).
//!
//! Read from where projects keep it, each source that applies adding to the
//! list:
//! - extras of `[project.optional-dependencies]` named for tests (`test`,
//!   `tests`, `testing`; `dev` only when none of those exists), installed as
//!   `-e .[tests]` when the project itself is installed;
//! - PEP 735 `[dependency-groups]` by the same names, `include-group`
//!   expanded;
//! - Poetry's `[tool.poetry.group.<name>.dependencies]` and
//!   `[tool.poetry.dev-dependencies]`;
//! - a Pipfile's `[dev-packages]` (`Pipfile.lock`'s `develop` when locked);
//! - hatch's test environments (`[tool.hatch.envs.<test>]` and
//!   `hatch-test`) `dependencies` and `extra-dependencies`;
//! - requirements files named for tests or development
//!   (`requirements-dev.txt`, `requirements-test*.txt`,
//!   `test-requirements.txt`, `requirements/test.txt`, ...);
//! - tox's `[testenv]` (in `tox.ini`, `setup.cfg` or pyproject's
//!   `legacy_tox_ini`): `deps`, `extras` and `dependency_groups`, with
//!   `{[section]key}` references followed once and factor-conditional lines
//!   left out.
//!
//! Lines that point outside the registries (`git+`, URLs) are left out: this
//! network cannot reach them, and the same tests mostly run without them.
//! Last, the runner the test command names (`pytest`) is added when nothing
//! above brings it.

use std::path::{Path, PathBuf};

use crate::python_manifest::{pipfile_lock_section, pipfile_requirement, poetry_requirement};

/// Group, extra and environment names that mean "for the tests", most
/// specific first.
const TEST_NAMES: &[&str] = &["test", "tests", "testing", "hatch-test"];
/// Used only when no name of [`TEST_NAMES`] is found.
const DEV_NAMES: &[&str] = &["dev", "develop", "development"];
/// Requirements files for tests, relative to the component.
const TEST_FILES: &[&str] = &[
    "requirements-test.txt",
    "requirements-tests.txt",
    "requirements-testing.txt",
    "requirements_test.txt",
    "requirements_tests.txt",
    "test-requirements.txt",
    "test_requirements.txt",
    "tests-requirements.txt",
    "requirements/test.txt",
    "requirements/tests.txt",
    "requirements/testing.txt",
    "tests/requirements.txt",
];
/// Requirements files for development, used when no test file exists.
const DEV_FILES: &[&str] = &[
    "requirements-dev.txt",
    "requirements_dev.txt",
    "dev-requirements.txt",
    "dev_requirements.txt",
    "requirements/dev.txt",
    "requirements/development.txt",
    "requirements/local.txt",
];
/// `include-group` nesting followed at most.
const MAX_GROUP_DEPTH: usize = 8;
/// Lines read from one tox `deps` value at most.
const MAX_TOX_LINES: usize = 200;

/// What the tests need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestDeps {
    /// Requirement lines.
    pub requirements: Vec<String>,
    /// Requirements files (absolute).
    pub requirement_files: Vec<PathBuf>,
    /// Extras of the project itself (`-e .[extras]`).
    pub extras: Vec<String>,
    /// What was read, for the log.
    pub sources: Vec<String>,
    /// The requirements the extras bring.
    extra_lines: Vec<String>,
}

impl TestDeps {
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && self.requirement_files.is_empty() && self.extras.is_empty()
    }

    fn add(&mut self, source: String, lines: impl IntoIterator<Item = String>) {
        let before = self.requirements.len();
        for line in lines {
            if !self.requirements.contains(&line) {
                self.requirements.push(line);
            }
        }
        if self.requirements.len() > before {
            self.sources.push(source);
        }
    }

    /// Whether some line or file names `package`.
    fn names(&self, package: &str) -> bool {
        let named = |line: &str| requirement_name(line).is_some_and(|n| n == package);
        self.requirements
            .iter()
            .chain(&self.extra_lines)
            .any(|l| named(l))
            || self
                .requirement_files
                .iter()
                .any(|f| std::fs::read_to_string(f).is_ok_and(|text| text.lines().any(named)))
    }
}

/// Normalised (PEP 503) name of a group, extra or package.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The distribution a requirement line names, normalised; `None` for
/// options (`-r`, `-e`) and comments.
fn requirement_name(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with(['-', '#']) {
        return None;
    }
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(line.len());
    Some(normalise(&line[..end])).filter(|n| !n.is_empty())
}

/// Whether a requirement can come from a registry (not a VCS or URL).
fn from_registry(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    !(lower.contains("git+") || lower.contains("://") || lower.starts_with("-e") || lower.starts_with('.'))
}

/// The keys of `table` that name tests, else the ones that name
/// development; each as it is spelt in `table`.
fn test_keys(table: &toml::value::Table) -> Vec<&String> {
    for names in [TEST_NAMES, DEV_NAMES] {
        let found: Vec<&String> = table
            .keys()
            .filter(|k| names.contains(&normalise(k).as_str()))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// Reads what the tests of the project in `dir` need. `pyproject` is its
/// parsed pyproject.toml; `project_installed` says whether the project is
/// installed (so its extras can be asked for); `test_command` is the plan's.
pub fn read(
    dir: &Path,
    pyproject: Option<&toml::Value>,
    project_installed: bool,
    test_command: &str,
) -> TestDeps {
    let mut deps = TestDeps::default();
    let get = |path: &[&str]| -> Option<&toml::Value> {
        let mut value = pyproject?;
        for key in path {
            value = value.get(key)?;
        }
        Some(value)
    };
    let groups = get(&["dependency-groups"]).and_then(toml::Value::as_table);

    if let Some(optional) = get(&["project", "optional-dependencies"]).and_then(toml::Value::as_table) {
        for key in test_keys(optional) {
            if project_installed {
                deps.extras.push(key.clone());
                deps.extra_lines.extend(strings(optional.get(key)));
                deps.sources.push(format!("the project's [{key}] extra"));
            } else {
                let lines = strings(optional.get(key))
                    .into_iter()
                    .filter(|l| from_registry(l));
                deps.add(format!("[project.optional-dependencies] {key}"), lines);
            }
        }
    }
    if let Some(groups) = groups {
        for key in test_keys(groups) {
            let lines = group(groups, key, 0);
            deps.add(format!("[dependency-groups] {key}"), lines);
        }
    }
    poetry(&mut deps, dir, get(&["tool", "poetry"]));
    pipfile(&mut deps, dir);
    if let Some(envs) = get(&["tool", "hatch", "envs"]).and_then(toml::Value::as_table) {
        for key in test_keys(envs) {
            let env = &envs[key.as_str()];
            let mut lines = strings(env.get("dependencies"));
            lines.extend(strings(env.get("extra-dependencies")));
            let lines = lines.into_iter().filter(|l| from_registry(l));
            deps.add(format!("[tool.hatch.envs.{key}]"), lines);
        }
    }
    for names in [TEST_FILES, DEV_FILES] {
        let files: Vec<PathBuf> = names
            .iter()
            .map(|f| dir.join(f))
            .filter(|f| f.is_file())
            .collect();
        if !files.is_empty() {
            for file in files {
                deps.sources
                    .push(file.strip_prefix(dir).unwrap_or(&file).display().to_string());
                deps.requirement_files.push(file);
            }
            break;
        }
    }
    tox(
        &mut deps,
        dir,
        get(&["tool", "tox", "legacy_tox_ini"]),
        groups,
        project_installed,
    );
    if let Some(optional) = get(&["project", "optional-dependencies"]).and_then(toml::Value::as_table) {
        for extra in &deps.extras {
            deps.extra_lines.extend(strings(optional.get(extra.as_str())));
        }
    }

    if names_pytest(test_command) && !deps.names("pytest") {
        deps.add("the test command (pytest)".into(), ["pytest".to_owned()]);
    }
    deps
}

/// Whether the test command runs pytest.
pub fn names_pytest(command: &str) -> bool {
    command
        .split(|c: char| c.is_whitespace() || c == ';' || c == '&')
        .any(|word| word == "pytest" || word == "py.test" || word.ends_with("/pytest"))
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    value
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A PEP 735 group's requirements, `include-group` followed.
fn group(groups: &toml::value::Table, name: &str, depth: usize) -> Vec<String> {
    let Some(items) = groups.get(name).and_then(toml::Value::as_array) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for item in items {
        match item {
            toml::Value::String(line) if from_registry(line) => lines.push(line.clone()),
            toml::Value::Table(table) if depth < MAX_GROUP_DEPTH => {
                if let Some(included) = table.get("include-group").and_then(toml::Value::as_str) {
                    lines.extend(group(groups, included, depth + 1));
                }
            }
            _ => {}
        }
    }
    lines
}

/// Poetry's test (or dev) groups.
fn poetry(deps: &mut TestDeps, dir: &Path, poetry: Option<&toml::Value>) {
    let Some(poetry) = poetry else { return };
    let mut tables: Vec<(String, &toml::value::Table)> = Vec::new();
    if let Some(groups) = poetry.get("group").and_then(toml::Value::as_table) {
        for key in test_keys(groups) {
            if let Some(table) = groups[key.as_str()]
                .get("dependencies")
                .and_then(toml::Value::as_table)
            {
                tables.push((format!("[tool.poetry.group.{key}]"), table));
            }
        }
    }
    if tables.is_empty()
        && let Some(table) = poetry.get("dev-dependencies").and_then(toml::Value::as_table)
    {
        tables.push(("[tool.poetry.dev-dependencies]".into(), table));
    }
    for (source, table) in tables {
        let lines = table
            .iter()
            .filter_map(|(name, value)| poetry_requirement(name, value, dir))
            .filter(|l| from_registry(l));
        deps.add(source, lines.collect::<Vec<_>>());
    }
}

/// A Pipfile's development packages.
fn pipfile(deps: &mut TestDeps, dir: &Path) {
    let lock = dir.join("Pipfile.lock");
    if let Ok(text) = std::fs::read_to_string(&lock)
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let lines = pipfile_lock_section(&json, "develop", dir);
        deps.add(
            "Pipfile.lock develop".into(),
            lines.into_iter().filter(|l| from_registry(l)),
        );
        return;
    }
    let Ok(text) = std::fs::read_to_string(dir.join("Pipfile")) else {
        return;
    };
    let Ok(pipfile) = text.parse::<toml::Value>() else {
        return;
    };
    if let Some(packages) = pipfile.get("dev-packages").and_then(toml::Value::as_table) {
        let lines = packages
            .iter()
            .filter_map(|(n, v)| pipfile_requirement(n, v, dir))
            .filter(|l| from_registry(l));
        deps.add("Pipfile [dev-packages]".into(), lines.collect::<Vec<_>>());
    }
}

/// tox's `[testenv]`: from tox.ini, setup.cfg's `[tox:testenv]` or
/// pyproject's `legacy_tox_ini`.
fn tox(
    deps: &mut TestDeps,
    dir: &Path,
    legacy: Option<&toml::Value>,
    groups: Option<&toml::value::Table>,
    project_installed: bool,
) {
    let (text, prefix, source) = if let Ok(text) = std::fs::read_to_string(dir.join("tox.ini")) {
        (text, "", "tox.ini")
    } else if let Some(text) = legacy.and_then(toml::Value::as_str) {
        (text.to_owned(), "", "pyproject.toml legacy_tox_ini")
    } else if let Ok(text) = std::fs::read_to_string(dir.join("setup.cfg"))
        && text.contains("[tox:testenv]")
    {
        (text, "tox:", "setup.cfg")
    } else {
        return;
    };
    let ini = Ini::parse(&text);
    let section = format!("{prefix}testenv");
    let value = |key: &str| ini.get(&section, key).map(|v| ini.expand(v));
    let mut lines = Vec::new();
    let mut files = Vec::new();
    for line in unconditional(value("deps").as_deref()) {
        if let Some(file) = line.strip_prefix("-r").map(str::trim) {
            let file = dir.join(file);
            if file.is_file() && !deps.requirement_files.contains(&file) {
                files.push(file);
            }
        } else if from_registry(&line) && !line.contains('{') {
            lines.push(line);
        }
    }
    let found_files = !files.is_empty();
    deps.requirement_files.extend(files);
    let before = deps.sources.len();
    deps.add(format!("{source} [{section}] deps"), lines);
    if found_files && deps.sources.len() == before {
        deps.sources.push(format!("{source} [{section}] deps"));
    }
    if project_installed {
        for extra in unconditional(value("extras").as_deref()) {
            if !deps.extras.contains(&extra) {
                deps.sources.push(format!("{source} [{section}] extras {extra}"));
                deps.extras.push(extra);
            }
        }
    }
    if let Some(groups) = groups {
        for name in unconditional(value("dependency_groups").as_deref()) {
            deps.add(
                format!("{source} [{section}] dependency group {name}"),
                group(groups, &name, 0),
            );
        }
    }
}

/// The lines of a tox value (one item per line, or comma-separated) without
/// factor conditions (`py38: x`) or comments; `tests: tests` keeps `tests`.
fn unconditional(value: Option<&str>) -> Vec<String> {
    let Some(value) = value else { return Vec::new() };
    let mut out = Vec::new();
    for line in value.lines().take(MAX_TOX_LINES) {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.split_once(": ") {
            // A factor that names tests still applies to the test env.
            Some((factor, rest)) if !factor.contains(['=', '<', '>', '[', ' ']) => {
                if factor
                    .split(',')
                    .any(|f| TEST_NAMES.contains(&normalise(f).as_str()))
                {
                    rest.trim()
                } else {
                    continue;
                }
            }
            _ => line,
        };
        for item in line.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            // A comma inside a specifier (`x>=1,<2`) belongs to the item.
            if item.starts_with(['<', '>', '=', '!', '~']) {
                if let Some(last) = out.last_mut() {
                    let last: &mut String = last;
                    last.push(',');
                    last.push_str(item);
                }
            } else {
                out.push(item.to_owned());
            }
        }
    }
    out
}

/// Just enough INI for tox: sections, `key = value` with indented
/// continuation lines.
struct Ini {
    entries: Vec<(String, String, String)>,
}

impl Ini {
    fn parse(text: &str) -> Self {
        let mut entries: Vec<(String, String, String)> = Vec::new();
        let mut section = String::new();
        for raw in text.lines() {
            let trimmed = raw.trim();
            if trimmed.starts_with('[') && trimmed.ends_with(']') {
                section = trimmed[1..trimmed.len() - 1].trim().to_owned();
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
                continue;
            }
            let indented = raw.starts_with([' ', '\t']);
            match (indented, entries.last_mut()) {
                (true, Some((s, _, value))) if *s == section => {
                    value.push('\n');
                    value.push_str(trimmed);
                }
                _ => {
                    if let Some((key, value)) = trimmed.split_once('=') {
                        entries.push((section.clone(), key.trim().to_owned(), value.trim().to_owned()));
                    }
                }
            }
        }
        Self { entries }
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// `{[section]key}` replaced by that value (once, not recursively).
    fn expand(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("{[") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(close) = after.find(']') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let section = &after[..close];
            let Some(end) = after[close + 1..].find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let key = &after[close + 1..close + 1 + end];
            out.push_str(self.get(section, key).unwrap_or_default());
            rest = &after[close + 2 + end..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> toml::Value {
        text.parse().expect("toml")
    }

    #[test]
    fn dependency_groups_for_tests_are_read_with_their_includes() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject = toml(
            r#"
            [dependency-groups]
            dev = ["ruff", "tox"]
            tests = ["pytest>9", "hypothesis", {include-group = "extra"}]
            extra = ["cloudpickle; platform_python_implementation == 'CPython'"]
            docs = ["sphinx"]
            "#,
        );
        let deps = read(dir.path(), Some(&pyproject), true, "python -m pytest");
        assert_eq!(
            deps.requirements,
            [
                "pytest>9",
                "hypothesis",
                "cloudpickle; platform_python_implementation == 'CPython'"
            ]
        );
        assert_eq!(deps.sources, ["[dependency-groups] tests"]);
    }

    #[test]
    fn test_extras_are_asked_of_the_installed_project_and_dev_only_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject = toml(
            r#"
            [project.optional-dependencies]
            tests = ["pytest", "pytest-cov"]
            dev = ["black"]
            "#,
        );
        let deps = read(dir.path(), Some(&pyproject), true, "pytest");
        assert_eq!(deps.extras, ["tests"]);
        assert!(deps.requirements.is_empty(), "{deps:?}");

        let dev_only = toml("[project.optional-dependencies]\ndev = [\"pytest\", \"black\"]\n");
        let deps = read(dir.path(), Some(&dev_only), false, "pytest");
        assert_eq!(deps.requirements, ["pytest", "black"]);
        assert!(deps.extras.is_empty());
    }

    #[test]
    fn tox_deps_follow_references_and_leave_out_factors_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject = toml(
            r#"
            [tool.tox]
            legacy_tox_ini = """
            [core]
            deps=
                pytest
                pytest-timeout
                git+https://github.com/someone/nbval
            [testenv]
            deps=
                {[core]deps}
                numpy
                tf: tensorflow!=2.5.0
                tests: hypothesis
            """
            "#,
        );
        let deps = read(
            dir.path(),
            Some(&pyproject),
            true,
            "python -m pytest -k 'not perf'",
        );
        assert_eq!(
            deps.requirements,
            ["pytest", "pytest-timeout", "numpy", "hypothesis"]
        );
        assert_eq!(deps.sources, ["pyproject.toml legacy_tox_ini [testenv] deps"]);
    }

    #[test]
    fn tox_ini_dependency_groups_extras_and_requirement_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements-ci.txt"), "pytest\n").unwrap();
        std::fs::write(
            dir.path().join("tox.ini"),
            "[tox]\nenvlist = py3\n\n[testenv]\nextras = testing\ndependency_groups =\n    tests: tests\n    mypy: mypy\ndeps =\n    -r requirements-ci.txt\n    attrs>=20,<30\n",
        )
        .unwrap();
        let pyproject = toml("[dependency-groups]\ntests = [\"hypothesis\"]\nmypy = [\"mypy\"]\n");
        let deps = read(dir.path(), Some(&pyproject), true, "pytest");
        assert_eq!(deps.requirements, ["hypothesis", "attrs>=20,<30"]);
        assert_eq!(deps.requirement_files, [dir.path().join("requirements-ci.txt")]);
        assert_eq!(deps.extras, ["testing"]);
        assert!(
            !deps.requirements.iter().any(|r| r == "pytest"),
            "pytest comes from the file"
        );
    }

    #[test]
    fn requirements_files_for_tests_win_over_dev_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements-dev.txt"), "black\n").unwrap();
        std::fs::create_dir(dir.path().join("requirements")).unwrap();
        std::fs::write(dir.path().join("requirements/test.txt"), "pytest==8.0\n").unwrap();
        let deps = read(dir.path(), None, false, "pytest");
        assert_eq!(deps.requirement_files, [dir.path().join("requirements/test.txt")]);
        assert!(
            deps.requirements.is_empty(),
            "pytest is named by the file: {deps:?}"
        );
    }

    #[test]
    fn poetry_and_pipfile_dev_packages() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject = toml(
            r#"
            [tool.poetry.group.test.dependencies]
            pytest = "^8.0"
            [tool.poetry.group.docs.dependencies]
            mkdocs = "*"
            "#,
        );
        let deps = read(dir.path(), Some(&pyproject), false, "pytest");
        assert_eq!(deps.requirements, ["pytest>=8.0,<9"]);

        std::fs::write(
            dir.path().join("Pipfile"),
            "[packages]\nflask = \"*\"\n[dev-packages]\npytest = \"*\"\nfactory-boy = \">=3\"\n",
        )
        .unwrap();
        let deps = read(dir.path(), None, false, "pytest");
        assert_eq!(deps.requirements, ["factory-boy>=3", "pytest"]);
    }

    #[test]
    fn the_runner_the_command_names_is_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(dir.path(), None, false, "python -m pytest tests").requirements,
            ["pytest"]
        );
        assert_eq!(
            read(dir.path(), None, false, "cd src && pytest").requirements,
            ["pytest"]
        );
        assert!(read(dir.path(), None, false, "python -m unittest discover").is_empty());
    }
}
