//! Tools on PATH and their versions.
//!
//! [`find_tools`] walks PATH (a blocking, bounded file walk); [`detect_toolchains`]
//! then runs each tool's version command with a timeout, a few at once, and
//! [`extract_version`] reads the version out of what it printed.

use std::{
    collections::{BTreeMap, HashSet},
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use futures::{StreamExt, stream};
use regex::Regex;
use reporunner_exec::{Bounds, run_bounded};
use reporunner_host::{MAX_PATH_DIRS, pyenv};
use reporunner_proto::common::v1::Toolchain;
use tokio::process::Command;

use crate::host::under;

/// The tools looked for on PATH, besides every `python3.N`.
pub const TOOLS: &[&str] = &[
    "python3",
    "uv",
    "pip",
    "pip3",
    "node",
    "npm",
    "pnpm",
    "yarn",
    "bun",
    "cargo",
    "rustc",
    "go",
    "java",
    "mvn",
    "gradle",
    "gcc",
    "g++",
    "make",
    "cmake",
    "git",
    "psql",
    "pg_ctl",
    "initdb",
    "redis-server",
    "mysqld",
    "mariadbd",
    "docker",
    "bwrap",
    "nvidia-smi",
];

/// Tools that PostgreSQL packages install outside PATH, under
/// `/usr/lib/postgresql/<major>/bin`.
const POSTGRES_TOOLS: &[&str] = &["pg_ctl", "initdb"];

/// Version commands run at once.
pub const VERSION_CONCURRENCY: usize = 8;
/// Bytes kept of a version command's stdout and of its stderr.
pub const MAX_VERSION_OUTPUT: usize = 4 * 1024;
/// Directory entries looked at per PATH entry when looking for `python3.N`.
const MAX_DIR_ENTRIES: usize = 20_000;

/// A tool found on PATH, before its version is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundTool {
    pub name: String,
    pub path: PathBuf,
}

/// The arguments that make `name` print its version.
pub fn version_args(name: &str) -> &'static [&'static str] {
    match name {
        "go" => &["version"],
        "java" => &["-version"],
        _ => &["--version"],
    }
}

/// Whether `name` is a versioned interpreter name such as "python3.11".
pub fn is_versioned_python(name: &str) -> bool {
    name.strip_prefix("python3.").is_some_and(|minor| {
        !minor.is_empty() && minor.len() <= 3 && minor.bytes().all(|b| b.is_ascii_digit())
    })
}

pub use reporunner_host::which;

/// Finds every tool of [`TOOLS`] and every `python3.N` on `path`, first on
/// PATH wins; `pg_ctl` and `initdb` are also looked for under
/// `root/usr/lib/postgresql/*/bin` (newest major first).
///
/// Interpreters that resolve to the same file are listed once: when `python3`
/// is a link to `python3.11`, only `python3.11` is kept.
///
/// Blocking (a bounded directory walk); call it from `spawn_blocking`.
pub fn find_tools(root: &Path, path: &OsStr) -> Vec<FoundTool> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for name in TOOLS {
        if let Some(exe) = which(name, path) {
            found.insert((*name).to_owned(), exe);
        }
    }
    for name in versioned_pythons(path) {
        if let Some(exe) = which(&name, path) {
            found.entry(name).or_insert(exe);
        }
    }
    // pyenv's `python3.N` shims fail unless that version is selected, so a
    // shim is replaced by the interpreter it would run, and installed
    // versions that are not on PATH at all are listed too.
    // Only when pyenv is in use on this PATH.
    let pyenv = pyenv::root().filter(|root| pyenv::on_path(root, path));
    let installed = pyenv.as_deref().map(pyenv::newest_per_minor).unwrap_or_default();
    for (name, exe) in installed {
        let shim = found
            .get(&name)
            .is_none_or(|p| p.parent().is_some_and(|d| d.ends_with("shims")));
        if shim {
            found.insert(name, exe);
        }
    }
    // A venv's python (the server started from inside one) is somebody's
    // environment: the interpreter it stands for is the one to report.
    for (name, exe) in found.iter_mut() {
        if (name == "python3" || is_versioned_python(name))
            && let Some(base) = reporunner_host::venv_base(exe)
        {
            *exe = base;
        }
    }
    for name in POSTGRES_TOOLS {
        if !found.contains_key(*name)
            && let Some(exe) = postgres_tool(root, name)
        {
            found.insert((*name).to_owned(), exe);
        }
    }
    dedupe_pythons(found)
}

/// The `python3.N` names present in the directories of `path`.
fn versioned_pythons(path: &OsStr) -> Vec<String> {
    let mut names = HashSet::new();
    for dir in std::env::split_paths(path)
        .take(MAX_PATH_DIRS)
        .filter(|dir| dir.is_absolute())
    {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
            if let Some(name) = entry.file_name().to_str()
                && is_versioned_python(name)
            {
                names.insert(name.to_owned());
            }
        }
    }
    let mut names: Vec<_> = names.into_iter().collect();
    names.sort();
    names
}

/// Drops `python3` (and any python3.N) that is the same file as a `python3.N`
/// listed under another name.
fn dedupe_pythons(found: BTreeMap<String, PathBuf>) -> Vec<FoundTool> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // Versioned names claim their file first, so they win over "python3".
    let mut pythons: Vec<(&String, &PathBuf)> = found
        .iter()
        .filter(|(name, _)| *name == "python3" || is_versioned_python(name))
        .collect();
    pythons.sort_by_key(|(name, _)| (*name == "python3", (*name).clone()));
    let mut seen = HashSet::new();
    let mut dropped = HashSet::new();
    for (name, path) in pythons {
        if !seen.insert(canonical(path)) {
            dropped.insert(name.clone());
        }
    }
    found
        .into_iter()
        .filter(|(name, _)| !dropped.contains(name))
        .map(|(name, path)| FoundTool { name, path })
        .collect()
}

/// `root/usr/lib/postgresql/<newest major>/bin/<name>`, when executable.
fn postgres_tool(root: &Path, name: &str) -> Option<PathBuf> {
    let base = under(root, "/usr/lib/postgresql");
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(&base)
        .ok()?
        .take(256)
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path()))
        })
        .collect();
    majors.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    majors
        .into_iter()
        .map(|(_, dir)| dir.join("bin").join(name))
        .find(|exe| reporunner_host::is_executable(exe))
}

/// Finds the tools on `path` (see [`find_tools`]) and asks each for its
/// version, [`VERSION_CONCURRENCY`] at once, each within `timeout`. A tool
/// whose version command fails or times out is listed with an empty version.
/// Sorted by name.
pub async fn detect_toolchains(root: PathBuf, path: OsString, timeout: Duration) -> Vec<Toolchain> {
    let search_path = path.clone();
    let found = match tokio::task::spawn_blocking(move || find_tools(&root, &search_path)).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(error = %err, "toolchain scan did not finish");
            return Vec::new();
        }
    };
    versions(found, Some(path), timeout).await
}

/// Runs the version command of each tool (see [`detect_toolchains`]). When
/// `child_path` is given it is the PATH the commands see (so that `npm`
/// finds the `node` next to it).
pub async fn versions(
    found: Vec<FoundTool>,
    child_path: Option<OsString>,
    timeout: Duration,
) -> Vec<Toolchain> {
    let child_path = child_path.as_deref();
    let mut toolchains: Vec<Toolchain> = stream::iter(found)
        .map(|tool| async move {
            let mut command = Command::new(&tool.path);
            command.args(version_args(&tool.name));
            if let Some(path) = child_path {
                command.env("PATH", path);
            }
            let bounds = Bounds::within(timeout).max_output(MAX_VERSION_OUTPUT);
            let version = match run_bounded(command, &bounds).await {
                Ok(out) if out.success() => {
                    extract_version(&format!("{}\n{}", out.stdout_text(), out.stderr_text()))
                        .unwrap_or_default()
                }
                Ok(out) => {
                    tracing::debug!(tool = %tool.name, stderr = %out.stderr_text().trim(), "version command failed");
                    String::new()
                }
                Err(err) => {
                    tracing::debug!(tool = %tool.name, error = %err, "version command did not run");
                    String::new()
                }
            };
            Toolchain {
                name: tool.name,
                version,
                path: tool.path.to_string_lossy().into_owned(),
            }
        })
        .buffer_unordered(VERSION_CONCURRENCY)
        .collect()
        .await;
    toolchains.sort_by(|a, b| a.name.cmp(&b.name));
    toolchains
}

static VERSION_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]+(?:\.[0-9]+)+").expect("a literal pattern, checked by the tests"));

/// The first dotted number ("3.11.7", "1.95.0") in a tool's version output,
/// skipping words that contain a `/` (paths, "linux/amd64") so that a
/// directory name never passes for a version.
pub fn extract_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .filter(|word| !word.contains('/'))
        .find_map(|word| VERSION_RE.find(word))
        .map(|m| m.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Started from inside a venv (its bin first on PATH), the host's
    /// interpreter is the venv's base, not the venv.
    #[test]
    fn a_venv_first_on_path_reports_its_base_interpreter() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("usr/bin");
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        for exe in [base.join("python3.11"), venv.join("bin/python3")] {
            std::fs::write(&exe, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            venv.join("pyvenv.cfg"),
            format!("home = {}\nversion = 3.11.4\n", base.display()),
        )
        .unwrap();
        let path = std::env::join_paths([venv.join("bin"), base.clone()]).unwrap();
        let found = find_tools(dir.path(), &path);
        let pythons: Vec<&FoundTool> = found.iter().filter(|t| t.name.starts_with("python3")).collect();
        assert!(pythons.iter().all(|t| !t.path.starts_with(&venv)), "{pythons:?}");
        assert!(
            pythons.iter().any(|t| t.path == base.join("python3.11")),
            "{pythons:?}"
        );
    }

    #[test]
    fn versions_are_extracted_from_real_outputs() {
        let cases = [
            ("Python 3.11.7", "3.11.7"),
            ("git version 2.47.3", "2.47.3"),
            ("v20.20.2", "20.20.2"),
            ("cargo 1.95.0 (f2d3ce0bd 2025-03-11)", "1.95.0"),
            ("rustc 1.95.0 (17067e9ac 2025-05-09)", "1.95.0"),
            ("go version go1.22.1 linux/amd64", "1.22.1"),
            (
                "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)",
                "17.0.15",
            ),
            ("uv 0.5.1", "0.5.1"),
            (
                "pip 23.2.1 from /usr/lib/python3/dist-packages/pip (python 3.11)",
                "23.2.1",
            ),
            ("psql (PostgreSQL) 15.19", "15.19"),
            (
                "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=9a2a4c8e6e3c5b4d",
                "7.0.15",
            ),
            (
                "gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0\nCopyright (C) 2021 Free Software Foundation, Inc.",
                "11.4.0",
            ),
            ("Apache Maven 3.8.7\nMaven home: /usr/share/maven", "3.8.7"),
            (
                "\n------------------------------------------------------------\nGradle 8.5\n",
                "8.5",
            ),
            (
                "/opt/mysql-8.0/bin/mysqld  Ver 8.0.35 for Linux on x86_64",
                "8.0.35",
            ),
            ("Docker version 24.0.5, build ced0996", "24.0.5"),
            ("bubblewrap 0.8.0", "0.8.0"),
        ];
        for (output, version) in cases {
            assert_eq!(extract_version(output).as_deref(), Some(version), "{output}");
        }
    }

    #[test]
    fn output_without_a_dotted_number_has_no_version() {
        assert_eq!(extract_version(""), None);
        assert_eq!(extract_version("GNU Make 4"), None);
    }

    #[test]
    fn version_commands_follow_each_tool() {
        assert_eq!(version_args("go"), ["version"]);
        assert_eq!(version_args("java"), ["-version"]);
        assert_eq!(version_args("python3.11"), ["--version"]);
    }

    #[test]
    fn versioned_python_names() {
        assert!(is_versioned_python("python3.11"));
        assert!(is_versioned_python("python3.9"));
        assert!(!is_versioned_python("python3"));
        assert!(!is_versioned_python("python3.11-config"));
        assert!(!is_versioned_python("python3."));
        assert!(!is_versioned_python("python2.7"));
    }
}
