//! The repository's own analyzer fixtures (`tests/fixtures/*`), installed
//! for real with the components the analyzer plans for them. Slow and
//! large (Next.js, Vite): run with
//! `cargo nextest run -p reporunner-dependency --run-ignored only`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{agent, assert_refused_before, component, install, request};

/// Copies a fixture into a tempdir (installs write node_modules there).
fn fixture(name: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let to = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", from.display()),
            &to.path().display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    to
}

#[tokio::test]
#[ignore = "installs a real FastAPI app with uvicorn[standard] and motor from PyPI"]
async fn the_poetry_fastapi_fixture_installs_and_imports() {
    let mut agent = agent().await;
    let workspace = fixture("poetry-fastapi");
    let (_, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.11,<4", "poetry"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    let out = common::venv_python(&result, "import fastapi, uvicorn, motor, shop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
#[ignore = "installs Vite and React from npm with yarn 1"]
async fn the_vite_yarn_fixture_installs_with_yarn() {
    let mut agent = agent().await;
    let workspace = fixture("vite-yarn");
    let (_, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("typescript", "node", "", "yarn"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(result.tool.starts_with("yarn 1."), "{}", result.tool);
    assert!(workspace.path().join("node_modules/.bin/vite").exists());
}

#[tokio::test]
#[ignore = "installs Next.js from npm with pnpm"]
async fn the_next_pnpm_fixture_installs_with_pnpm() {
    let mut agent = agent().await;
    let workspace = fixture("next-pnpm");
    let (_, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("typescript", "node", ">=18.17", "pnpm"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(workspace.path().join("node_modules/.bin/next").exists());
}

/// Real-repositories class 10: a pyproject.toml and a setup.cfg that hold
/// only tools' settings are no package; the requirements are installed and
/// no editable build of the flat layout is tried.
#[tokio::test]
async fn a_tool_config_only_project_is_not_built_as_a_package() {
    let mut agent = agent().await;
    let workspace = fixture("tool-config-flat");
    let (lines, result) = install(
        &mut agent,
        request(workspace.path(), component("python", "python", "", "pip"), None),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        !lines.iter().any(|l| l.text.contains("-e ")),
        "no editable install: {:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    let out = common::venv_python(&result, "import tomli_w");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Class 10, the other way round: a manifest with a build backend that
/// cannot build the directory (nothing for hatch to ship) gets its
/// dependencies installed without the project, which runs from its
/// directory.
#[tokio::test]
async fn a_project_that_cannot_be_built_gets_its_dependencies() {
    let mut agent = agent().await;
    let workspace = fixture("hatch-nothing-to-ship");
    let (lines, result) = install(
        &mut agent,
        request(workspace.path(), component("python", "python", "", "uv"), None),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("installing its dependencies without it")),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    let out = common::venv_python(&result, "import tomli_w");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Real-repositories class 12 (old repositories): a `pip freeze` whose
/// pins contradict each other (made by pip's old resolver) and hold
/// Debian's bogus `pkg-resources==0.0.0` is installed pin by pin, as it
/// was, instead of failing resolution.
#[tokio::test]
async fn a_contradictory_freeze_is_installed_as_it_was() {
    let mut agent = agent().await;
    let workspace = fixture("frozen-conflict");
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", ">=3.8,<3.12", "pip"),
            None,
        ),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("pins contradict each other")),
        "{:?}",
        lines.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    let out = common::venv_python(
        &result,
        "import importlib.metadata as m; print(m.version('jinja2'), m.version('flask'))",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.11.3 2.0.2");
}

/// Real-repositories class 9: a dependency whose install script downloads
/// from a host this network cannot reach fails `npm install`; the install
/// goes on without that one script, and every other script (a dependency's
/// postinstall, the project's own) still runs.
#[tokio::test]
async fn a_dependency_whose_install_script_cannot_download_goes_without_it() {
    let mut agent = agent().await;
    let workspace = fixture("node-script-offline");
    let (lines, result) = install(
        &mut agent,
        request(workspace.path(), component("javascript", "node", "", "npm"), None),
    )
    .await;
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert!(result.success, "{result:?}\n{}", text.join("\n"));
    assert!(
        text.iter()
            .any(|l| l.contains("install script of the dependency fetches-binary failed")),
        "{text:?}"
    );
    assert!(text.iter().any(|l| l.contains("--ignore-scripts")), "{text:?}");
    let dir = workspace.path();
    assert!(dir.join("node_modules/fetches-binary/index.js").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("node_modules/builds-locally/built.txt")).unwrap(),
        "built-by-its-own-script",
        "the other dependency's postinstall ran"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("root-postinstall.txt")).unwrap(),
        "ran",
        "the project's own postinstall ran"
    );
}

/// Real-repositories class 9: a Pipfile.lock entry pinned to a git URL on
/// a host this network cannot reach is installed from the registry, at the
/// version its tag names, and the log says so.
#[tokio::test]
async fn a_git_pin_on_an_unreachable_host_comes_from_the_registry() {
    let mut agent = agent().await;
    let workspace = fixture("pipfile-git-unreachable");
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("python", "python", "", "pipenv"),
            None,
        ),
    )
    .await;
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert!(result.success, "{result:?}\n{}", text.join("\n"));
    assert!(
        text.iter()
            .any(|l| l.contains("from the registry") && l.contains("markupsafe==2.1.5")),
        "{text:?}"
    );
    let out = common::venv_python(
        &result,
        "import markupsafe, itsdangerous; print(markupsafe.__version__, itsdangerous.__version__)",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.1.5 2.1.2");
}

/// Real-repositories class 13: node-sass 4, which cannot be built on this
/// Node, is replaced by its maintained drop-in `sass` under the same name,
/// so the build's `require("node-sass").renderSync(...)` still compiles.
#[tokio::test]
async fn node_sass_that_cannot_build_is_replaced_by_sass() {
    let mut agent = agent().await;
    let workspace = fixture("node-sass-legacy");
    let mut component = component("javascript", "node", "", "npm");
    component.build = Some(reporunner_proto::common::v1::Command {
        run: "npm run build".into(),
        working_dir: String::new(),
        watch_mode: false,
    });
    let (lines, result) = install(&mut agent, request(workspace.path(), component, None)).await;
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert!(result.success, "{result:?}\n{}", text.join("\n"));
    assert!(
        text.iter()
            .any(|l| l.contains("node-sass cannot be built") && l.contains("drop-in sass")),
        "{text:?}"
    );
    let css = std::fs::read_to_string(workspace.path().join("public/site.css")).unwrap();
    assert_eq!(css.trim(), "body a{color:#c0ffee}");
    let installed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.path().join("node_modules/node-sass/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(installed["name"], "sass", "{installed}");
}

/// Real-repositories class 11: `engines.node` that only a newer Node than
/// the host's satisfies is refused before anything is installed, naming
/// the range and the host's version.
#[tokio::test]
async fn an_engines_range_above_the_hosts_node_is_refused_before_install() {
    let mut agent = agent().await;
    let workspace = fixture("node-engines-unmet");
    let (lines, result) = install(
        &mut agent,
        request(workspace.path(), component("javascript", "node", "", "npm"), None),
    )
    .await;
    assert_refused_before(
        &lines,
        &result,
        "npm",
        &["engines.node is >=99.0.0", "older than any version"],
    );
    assert!(
        !workspace.path().join("node_modules").exists(),
        "nothing was installed"
    );
}

/// Real-repositories class: old repositories pin sdists whose `setup.py`
/// uses what setuptools has since removed (`use_2to3`, `Feature`). The
/// install fails, names the cause, and installs again with the newest
/// setuptools that still has it, in the venv and in the isolated build.
#[tokio::test]
async fn an_old_setup_py_is_built_with_the_setuptools_it_needs() {
    // A cache of its own: a wheel built by an earlier run would be served
    // from the shared one, and nothing would be built.
    let mut agent = common::agent_with_own_cache().await;
    let workspace = fixture("python-legacy-setup-py");
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
    assert!(
        texts
            .iter()
            .any(|t| t.contains("an old package's setup.py needs setuptools<58 (use_2to3")),
        "{texts:?}"
    );
    let out = common::venv_python(&result, "import anyjson; print(anyjson.serialize([1]))");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[1]");
}

/// ripgrep 15.2 asks for rustc 1.96 through `[workspace.package]`: a host
/// Rust older than a workspace's rust-version is refused before cargo
/// resolves or builds anything, naming both versions.
#[tokio::test]
async fn a_rust_version_above_the_hosts_rust_is_refused_before_building() {
    let mut agent = agent().await;
    let workspace = fixture("rust-workspace-inherited-msrv");
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("rust", "rust", ">=1.99", "cargo"),
            None,
        ),
    )
    .await;
    assert_refused_before(
        &lines,
        &result,
        "cargo",
        &["rust-version is 1.99", "this host's Rust is 1."],
    );
    assert!(
        !std::path::Path::new(&result.environment_path)
            .join("debug")
            .exists()
    );
}
