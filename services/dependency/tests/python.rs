//! Python installs from PyPI into fresh venvs, over loopback gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use common::{agent, component, install, request, venv_python, write};
use reporunner_proto::common::v1::LogStream;

#[tokio::test]
async fn a_requirements_flask_app_gets_a_venv_where_flask_imports() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            ("requirements.txt", "flask\n"),
            ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
        ],
    );
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.8", "pip"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.exit_code, 0);
    assert!(result.tool.starts_with("uv 0."), "{}", result.tool);
    let venv = std::path::Path::new(&result.environment_path);
    assert!(venv.ends_with("run-1/app/.venv"), "{}", venv.display());
    assert_eq!(result.env["VIRTUAL_ENV"], result.environment_path);
    assert!(result.env["PATH"].starts_with(&format!("{}/bin:", result.environment_path)));
    assert!(!result.log_tail.is_empty() && result.log_tail.len() <= 50);

    // Every line is an install line, numbered from 1 without gaps.
    assert!(lines.iter().all(|l| l.source == "install"));
    let sequences: Vec<u64> = lines.iter().map(|l| l.sequence).collect();
    assert_eq!(sequences, (1..=lines.len() as u64).collect::<Vec<_>>());
    assert!(
        lines
            .iter()
            .any(|l| l.stream == LogStream::System as i32 && l.text.contains("uv"))
    );
    assert!(lines.iter().any(|l| l.text.contains("requirements.txt")));

    let out = venv_python(
        &result,
        "import flask, pkg_resources; print(flask.Flask.__name__)",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // What the venv provides, by module, for the resolver: Flask's own
    // module and those of its dependencies, each with its version.
    let version = |module: &str| {
        let code = format!("import importlib.metadata as m; print(m.version('{module}'))");
        String::from_utf8_lossy(&venv_python(&result, &code).stdout)
            .trim()
            .to_owned()
    };
    assert_eq!(result.packages["flask"], format!("Flask=={}", version("flask")));
    assert_eq!(
        result.packages["markupsafe"],
        format!("MarkupSafe=={}", version("markupsafe"))
    );
    assert!(result.packages.contains_key("werkzeug"), "{:?}", result.packages);

    // The workspace stays clean: the venv lives under the agent's env dir.
    assert!(!workspace.path().join(".venv").exists());

    // A second run of the same repository is served by the download cache.
    let mut again = request(
        workspace.path(),
        component("python", "python", ">=3.8", "pip"),
        None,
    );
    again.run_id = "run-2".into();
    let (lines, second) = install(&mut agent, again).await;
    assert!(second.success, "{second:?}");
    assert_ne!(second.environment_path, result.environment_path);
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("everything came from the download cache")),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    assert!(venv_python(&second, "import flask").status.success());
}

#[tokio::test]
async fn a_pep621_fastapi_project_is_installed_editable() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "pyproject.toml",
                r#"[project]
name = "tinyapi"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["fastapi>=0.100"]

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[tool.setuptools]
packages = ["tinyapi"]
"#,
            ),
            (
                "tinyapi/__init__.py",
                "from fastapi import FastAPI\napp = FastAPI()\n",
            ),
        ],
    );
    let (_, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.9", "pip"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    let out = venv_python(
        &result,
        "import tinyapi, os; print(os.path.dirname(tinyapi.__file__))",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Editable: the package is imported from the workspace itself.
    let imported = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected = workspace.path().canonicalize().unwrap().join("tinyapi");
    assert_eq!(std::path::Path::new(&imported), expected);
}

#[tokio::test]
async fn a_poetry_project_installs_the_lock_pins_without_poetry() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "pyproject.toml",
                r#"[tool.poetry]
name = "shop"
version = "0.1.0"
description = ""
authors = ["a <a@b.c>"]

[tool.poetry.dependencies]
python = "^3.9"
itsdangerous = "^2.0"

[tool.poetry.group.dev.dependencies]
six = "*"

[build-system]
requires = ["poetry-core"]
build-backend = "poetry.core.masonry.api"
"#,
            ),
            (
                "poetry.lock",
                r#"# This file is automatically @generated by Poetry 1.8.2 and should not be changed by hand.

[[package]]
name = "itsdangerous"
version = "2.1.2"
description = "Safely pass data to untrusted environments and back."
optional = false
python-versions = ">=3.7"
files = []

[[package]]
name = "six"
version = "1.16.0"
description = "Python 2 and 3 compatibility utilities"
optional = false
python-versions = ">=2.7"
files = []

[metadata]
lock-version = "2.0"
python-versions = "^3.9"
content-hash = "0"
"#,
            ),
            ("shop/__init__.py", "NAME = 'shop'\n"),
        ],
    );
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.9,<4", "poetry"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("poetry.lock as constraints"))
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.text.starts_with("$ ") && l.text.contains("poetry install"))
    );
    let out = venv_python(
        &result,
        "import importlib.metadata as m, importlib.util as u, shop; \
         print(m.version('itsdangerous'), u.find_spec('six') is None, shop.NAME)",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The lock's pin, not the newest 2.x; dev dependencies left out.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.1.2 True shop");
}

/// Old build backends (poetry's `poetry.masonry.api` before PEP 660) have no
/// `build_editable`: the project is installed as a regular package instead.
#[tokio::test]
async fn a_backend_without_editable_installs_installs_the_project_regularly() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "pyproject.toml",
                r#"[tool.poetry]
name = "oldshop"
version = "0.1.0"
description = ""
authors = ["a <a@b.c>"]

[tool.poetry.dependencies]
python = "^3.9"

[build-system]
requires = ["setuptools>=61"]
build-backend = "legacy_backend"
backend-path = ["_build"]
"#,
            ),
            // setuptools' PEP 517 hooks, without the PEP 660 ones.
            (
                "_build/legacy_backend.py",
                "from setuptools.build_meta import build_sdist, build_wheel, get_requires_for_build_wheel, prepare_metadata_for_build_wheel\n",
            ),
            (
                "setup.cfg",
                "[metadata]\nname = oldshop\nversion = 0.1.0\n\n[options]\npackages = oldshop\n",
            ),
            ("oldshop/__init__.py", "NAME = 'oldshop'\n"),
        ],
    );
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.9,<4", "poetry"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("cannot install it editable")),
        "the editable attempt failed first"
    );
    let out = venv_python(&result, "import oldshop; print(oldshop.NAME)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "oldshop");
}

/// A poetry app whose name matches no package (fastapi-realworld's `app/`)
/// cannot be built at all: its dependencies are installed and it runs from
/// its directory.
#[tokio::test]
async fn a_poetry_app_that_is_no_package_gets_its_dependencies() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "pyproject.toml",
                r#"[tool.poetry]
name = "realworld-example-app"
version = "0.0.0"
description = ""
authors = ["a <a@b.c>"]

[tool.poetry.dependencies]
python = "^3.9"
six = "^1.16"

[build-system]
requires = ["poetry-core"]
build-backend = "poetry.core.masonry.api"
"#,
            ),
            ("app/main.py", "import six\n"),
        ],
    );
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.9,<4", "poetry"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("cannot be built as a package")),
        "the project build failed and was reported"
    );
    let out = venv_python(&result, "import six; print(six.__name__)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn an_unsatisfiable_python_constraint_fails_with_the_interpreters_found() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(workspace.path(), &[("requirements.txt", "flask\n")]);
    let (_, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", "==2.5.*", "pip"),
            None,
        ),
    )
    .await;
    assert!(!result.success);
    let tail = result.log_tail.join("\n");
    assert!(
        tail.contains("no installed Python satisfies the constraint \"==2.5.*\""),
        "{tail}"
    );
    assert!(tail.contains("installed interpreters: 3."), "{tail}");
    assert!(tail.contains("never downloaded"), "{tail}");
}

#[tokio::test]
async fn a_disk_limit_stops_the_install_and_names_the_limit() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(workspace.path(), &[("requirements.txt", "flask\n")]);
    let limits = reporunner_proto::agents::dependency::v1::InstallLimits {
        timeout_seconds: 300,
        max_disk_bytes: 1_000_000,
    };
    let (_, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", "", "pip"),
            Some(limits),
        ),
    )
    .await;
    assert!(!result.success);
    let tail = result.log_tail.join("\n");
    assert!(
        tail.contains("disk limit exceeded") && tail.contains("1000000 bytes (max_disk_bytes)"),
        "{tail}"
    );
}

#[tokio::test]
async fn a_pipfile_lock_is_installed_pinned_with_its_markers() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "Pipfile",
                "[packages]\nitsdangerous = \"*\"\n\n[dev-packages]\nsix = \"*\"\n",
            ),
            (
                "Pipfile.lock",
                r#"{"_meta": {"requires": {"python_version": "3.11"}},
  "default": {
    "itsdangerous": {"hashes": [], "index": "pypi", "version": "==2.1.2"},
    "pywin32": {"hashes": [], "markers": "sys_platform == 'win32'", "version": "==306"}
  },
  "develop": {"six": {"hashes": [], "version": "==1.16.0"}}}"#,
            ),
        ],
    );
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.8", "pipenv"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("Pipfile.lock (2 pinned packages)"))
    );
    let out = venv_python(
        &result,
        "import importlib.metadata as m, importlib.util as u; \
         print(m.version('itsdangerous'), u.find_spec('six') is None)",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.1.2 True");
}

#[tokio::test]
async fn the_environment_names_the_interpreters_to_choose_from() {
    use reporunner_proto::common::v1::{Environment, Toolchain};

    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = String::from_utf8_lossy(&python.stdout).trim().to_owned();
    let mut request = request(workspace.path(), component("python", "python", "", "pip"), None);
    request.environment = Some(Environment {
        toolchains: vec![
            Toolchain {
                name: "python3".into(),
                version: String::new(),
                path: python.clone(),
            },
            Toolchain {
                name: "python3.99".into(),
                version: "3.99.0".into(),
                path: "/nonexistent/python3.99".into(),
            },
        ],
        ..Environment::default()
    });
    let (lines, result) = install(&mut agent, request).await;
    // No constraint: what python3 runs; the missing one is skipped.
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.starts_with("python 3.") && l.text.contains(&format!("at {python} "))),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_environment_without_python3_still_defaults_to_what_python3_runs() {
    use reporunner_proto::common::v1::{Environment, Toolchain};

    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    let default = std::process::Command::new("python3")
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output()
        .unwrap();
    let default = String::from_utf8_lossy(&default.stdout).trim().to_owned();
    let mut request = request(workspace.path(), component("python", "python", "", "pip"), None);
    // A detector whose python3 probe timed out lists only versioned tools.
    request.environment = Some(Environment {
        toolchains: vec![Toolchain {
            name: "python3.99".into(),
            version: "3.99.0".into(),
            path: "/nonexistent/python3.99".into(),
        }],
        ..Environment::default()
    });
    let (lines, result) = install(&mut agent, request).await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.starts_with(&format!("python {default} at "))),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
}

/// Real-repositories class 12: without a lockfile, dependencies are
/// resolved as of the repository's own date (`resolve_before`): tomli-w
/// 1.0.0 (December 2021), not today's release; and as of today when that
/// resolution fails.
#[tokio::test]
async fn an_unlocked_install_resolves_as_of_the_repositorys_date() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(workspace.path(), &[("requirements.txt", "tomli-w\n")]);
    // 2022-06-01T00:00:00Z
    let dated = common::as_of(
        request(
            workspace.path(),
            component("python", "python", ">=3.8", "pip"),
            None,
        ),
        1_654_041_600,
    );
    let (lines, result) = install(&mut agent, dated.clone()).await;
    assert!(result.success, "{result:?}");
    assert!(
        lines.iter().any(|l| l
            .text
            .contains("resolving dependencies as of the repository's date (2022-06-01T00:00:00Z")),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    let out = venv_python(
        &result,
        "import importlib.metadata as m; print(m.version('tomli-w'))",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");

    // Nothing of that date satisfies the requirement: today's resolution.
    write(workspace.path(), &[("requirements.txt", "tomli-w>=1.1\n")]);
    let (lines, result) = install(&mut agent, dated.clone()).await;
    assert!(result.success, "{result:?}");
    assert!(lines.iter().any(|l| l.text.contains("resolving as of today")));

    // The same install again in the same run (a heal's): the dated
    // resolution that failed is not tried again.
    let (lines, result) = install(&mut agent, dated.clone()).await;
    assert!(result.success, "{result:?}");
    assert!(
        lines.iter().any(|l| l
            .text
            .contains("failed on an earlier attempt of this run; resolving as of today")),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    let out = venv_python(
        &result,
        "import importlib.metadata as m; print(m.version('tomli-w'))",
    );
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");
}

/// On a host without uv, the first install puts it into the tools dir with
/// the interpreter's own pip (`--target`, no venv to make: seconds off
/// every cold first run), and uses it.
#[tokio::test]
async fn uv_is_installed_into_a_fresh_tools_dir_with_the_interpreters_pip() {
    let mut agent = common::fresh_agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(workspace.path(), &[("requirements.txt", "tomli-w\n")]);
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.8", "pip"),
            None,
        ),
    )
    .await;
    let texts: Vec<&String> = lines.iter().map(|l| &l.text).collect();
    assert!(result.success, "{result:?} {texts:?}");
    assert!(result.tool.starts_with("uv 0."), "{}", result.tool);
    assert!(
        texts.iter().any(
            |t| t.contains("pip install --disable-pip-version-check --no-input --target")
                && t.ends_with("(uv installed)")
        ),
        "{texts:?}"
    );
    assert!(agent.data.path().join("tools/uv/bin/uv").is_file());
}

/// uv's wheel needs Python 3.8 or later, so a component on an older
/// interpreter cannot fetch it with its own pip. uv still comes into the
/// tools dir (by the host's default interpreter) and installs for the old
/// one: pip's serial source builds of an old lock took 29 s where uv takes
/// a few.
#[tokio::test]
async fn a_component_on_python_older_than_uv_supports_still_installs_with_uv() {
    // This host's interpreters: pyenv's, as the agent finds them.
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pyenv")))
        .unwrap_or_default()
        .join("versions");
    let installed: Vec<String> = std::fs::read_dir(&pyenv)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let old = ["3.7", "3.6"]
        .into_iter()
        .find(|v| installed.iter().any(|i| i.starts_with(&format!("{v}."))));
    let Some(old) = old else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have a Python older than 3.8 (pyenv, as the machine image has)"
        );
        eprintln!("skipped: no Python older than 3.8 on this host");
        return;
    };
    let mut agent = common::fresh_agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(workspace.path(), &[("requirements.txt", "tomli-w==1.0.0\n")]);
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", &format!("=={old}.*"), "pip"),
            None,
        ),
    )
    .await;
    let texts: Vec<&String> = lines.iter().map(|l| &l.text).collect();
    assert!(result.success, "{result:?} {texts:?}");
    assert!(result.tool.starts_with("uv 0."), "{} {texts:?}", result.tool);
    let out = venv_python(&result, "import sys; print(sys.version_info[:2])");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("({}, {})", &old[..1], &old[2..]),
    );
}

/// A project that is no package (hatch finds nothing to ship, as in
/// miguelgrinberg/microblog-api) fails its own build whatever the date:
/// its dependencies are installed without it, still as of the
/// repository's date, with no resolution as of today in between.
#[tokio::test]
async fn a_project_whose_own_build_fails_keeps_its_dependencies_dated() {
    // A cache of its own: an older hatchling another test left in the
    // shared cache would build this project offline.
    let mut agent = common::agent_with_own_cache().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "pyproject.toml",
                "[project]\nname = \"notapackage\"\nversion = \"0.1.0\"\ndependencies = [\"tomli-w\"]\n\n\
                 [build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n",
            ),
            // A package named unlike the project: hatch ships nothing.
            ("api/__init__.py", ""),
            ("serve.py", "import api\n"),
        ],
    );
    // 2024-07-07T00:00:00Z: tomli-w 1.0.0 (1.1.0 came in October 2024).
    let dated = common::as_of(
        request(
            workspace.path(),
            component("python", "python", ">=3.8", "pip"),
            None,
        ),
        1_720_310_400,
    );
    let (lines, result) = install(&mut agent, dated).await;
    let texts: Vec<&String> = lines.iter().map(|l| &l.text).collect();
    assert!(result.success, "{result:?} {texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("the project itself could not be installed")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("resolving as of today")),
        "the project's own build failure was taken for the date's: {texts:?}"
    );
    let out = venv_python(
        &result,
        "import importlib.metadata as m; print(m.version('tomli-w'))",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");
}
