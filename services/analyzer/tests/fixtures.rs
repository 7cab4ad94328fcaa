//! One test per fixture repository under `tests/fixtures/` at the workspace
//! root: each asserts the plan fields a runner depends on.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use reporunner_analyzer::{AnalyzerConfig, analyze_dir};
use reporunner_proto::common::v1::{BackingServiceKind as B, Component, ComponentKind as K, RunPlan};

fn plan(name: &str) -> RunPlan {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let dir = std::fs::canonicalize(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    analyze_dir(&dir, None, &AnalyzerConfig::default()).unwrap()
}

fn only(plan: &RunPlan) -> &Component {
    assert_eq!(
        plan.components.len(),
        1,
        "{:#?}",
        plan.components.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    &plan.components[0]
}

fn at<'a>(plan: &'a RunPlan, path: &str) -> &'a Component {
    plan.components
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no component at {path}"))
}

fn start(c: &Component) -> &str {
    c.start.as_ref().map_or("", |s| s.run.as_str())
}

fn install(c: &Component) -> &str {
    c.install.as_ref().map_or("", |s| s.run.as_str())
}

fn test_cmd(c: &Component) -> &str {
    c.test.as_ref().map_or("", |s| s.run.as_str())
}

fn runtime(c: &Component) -> (&str, &str) {
    c.runtime
        .as_ref()
        .map_or(("", ""), |r| (r.name.as_str(), r.version_constraint.as_str()))
}

fn kinds(c: &Component) -> Vec<B> {
    let mut k: Vec<B> = c
        .backing_services
        .iter()
        .map(|b| B::try_from(b.kind).unwrap())
        .collect();
    k.sort_by_key(|k| *k as i32);
    k
}

fn backing(c: &Component, kind: B) -> &reporunner_proto::common::v1::BackingService {
    c.backing_services
        .iter()
        .find(|b| b.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?}"))
}

fn env<'a>(c: &'a Component, name: &str) -> &'a reporunner_proto::common::v1::EnvVar {
    c.env
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no env {name}: {:?}", c.env))
}

/// The file of the strongest start evidence.
fn start_file(c: &Component) -> &str {
    c.evidence
        .iter()
        .filter(|e| e.field == "start")
        .max_by(|a, b| a.weight.total_cmp(&b.weight))
        .map_or("", |e| e.file.as_str())
}

#[test]
fn flask_factory_uses_flaskenv_and_reads_env_template() {
    let p = plan("flask-factory");
    let c = only(&p);
    // The app goes in FLASK_APP, which every Flask reads (`--app` came with 2.2).
    assert_eq!(start(c), "flask run --host 0.0.0.0");
    assert_eq!(env(c, "FLASK_APP").default_value, "app");
    assert_eq!((c.port, c.port_binding.as_str()), (5000, "flag:--port"));
    assert_eq!(c.package_manager, "pip");
    assert_eq!(install(c), "pip install -r requirements.txt");
    assert_eq!(start_file(c), ".flaskenv");
    assert_eq!(test_cmd(c), "python -m pytest");
    assert_eq!(kinds(c), [B::Postgresql]);
    assert_eq!(backing(c, B::Postgresql).env_vars, ["DATABASE_URL"]);
    let secret = env(c, "SECRET_KEY");
    assert!(secret.required && secret.secret && secret.default_value.is_empty());
    assert_eq!(env(c, "LOG_LEVEL").default_value, "info");
    assert_eq!(env(c, "LOG_LEVEL").source, ".env.example:4");
    assert_eq!(c.kind, K::Web as i32);
    assert!(p.files_considered.contains(&"requirements.txt".to_owned()));
}

#[test]
fn fastapi_src_layout_with_uv() {
    let p = plan("fastapi-src-uv");
    let c = only(&p);
    assert_eq!(c.package_manager, "uv");
    assert_eq!(start(c), "uvicorn myapi.main:app --host 0.0.0.0 --app-dir src");
    assert_eq!((c.port, c.port_binding.as_str()), (8000, "flag:--port"));
    assert_eq!(runtime(c), ("python", ">=3.10"));
    assert_eq!(start_file(c), "src/myapi/main.py");
    assert_eq!(install(c), "pip install -e .");
    assert_eq!(kinds(c), [B::Redis]);
    assert_eq!(env(c, "REDIS_URL").default_value, "redis://localhost:6379/0");
    assert_eq!(test_cmd(c), "python -m pytest");
    assert_eq!(c.frameworks, ["fastapi"]);
}

#[test]
fn django_migrates_then_runs_with_runserver_binding() {
    let p = plan("django-postgres");
    let c = only(&p);
    assert_eq!(start(c), "python manage.py runserver");
    assert_eq!(c.port_binding, "django-runserver");
    assert_eq!(c.port, 8000);
    assert_eq!(
        c.setup.iter().map(|s| s.run.as_str()).collect::<Vec<_>>(),
        ["python manage.py migrate"]
    );
    // runtime.txt names a version the repository prefers, not a hard pin.
    assert_eq!(runtime(c), ("python", ""));
    assert_eq!(c.runtime.as_ref().unwrap().preferred_version, "3.12.3");
    assert_eq!(kinds(c), [B::Postgresql]);
    assert_eq!(env(c, "DJANGO_SETTINGS_MODULE").default_value, "mysite.settings");
    let key = env(c, "DJANGO_SECRET_KEY");
    assert!(key.secret && !key.required);
    assert_eq!(test_cmd(c), "python manage.py test");
    assert_eq!(start_file(c), "manage.py");
}

#[test]
fn django_with_requirements_dir_and_manage_py_in_src() {
    let p = plan("django-nested-manage");
    let c = only(&p);
    assert_eq!(c.path, ".");
    assert_eq!(start(c), "python src/manage.py runserver");
    assert_eq!(install(c), "pip install -r requirements/base.txt");
    assert_eq!(test_cmd(c), "python -m pytest");
    assert_eq!(kinds(c), [B::Redis]);
    assert!(c.setup.is_empty(), "no migrations directory");
}

#[test]
fn streamlit_binds_its_own_port_flag() {
    let c = only(&plan("streamlit-app")).clone();
    assert_eq!(
        start(&c),
        "streamlit run streamlit_app.py --server.address 0.0.0.0 --server.headless true"
    );
    assert_eq!((c.port, c.port_binding.as_str()), (8501, "flag:--server.port"));
    assert_eq!(c.health_paths[0], "/_stcore/health");
}

#[test]
fn gradio_uses_its_env_port() {
    let c = only(&plan("gradio-app")).clone();
    assert_eq!(start(&c), "python app.py");
    assert_eq!(
        (c.port, c.port_binding.as_str()),
        (7860, "env:GRADIO_SERVER_PORT")
    );
    assert_eq!(env(&c, "GRADIO_SERVER_NAME").default_value, "0.0.0.0");
}

#[test]
fn poetry_project_installs_with_pip_and_finds_the_asgi_app() {
    let p = plan("poetry-fastapi");
    let c = only(&p);
    assert_eq!(c.package_manager, "poetry");
    assert_eq!(install(c), "pip install -e .");
    assert_eq!(runtime(c), ("python", ">=3.11,<4"));
    assert_eq!(start(c), "uvicorn shop.api:app --host 0.0.0.0");
    assert_eq!(test_cmd(c), "python -m pytest");
    assert_eq!(kinds(c), [B::Mongodb]);
    assert_eq!(c.name, "shop");
}

#[test]
fn poetry_without_package_mode_installs_its_dependencies() {
    let p = plan("poetry-no-package");
    let c = only(&p);
    assert_eq!(c.package_manager, "poetry");
    assert_eq!(install(c), "pip install pika 'requests>=2.31,<3'");
    assert_eq!(runtime(c), ("python", ">=3.9,<3.13"));
    assert_eq!(start(c), "python main.py");
    assert_eq!(kinds(c), [B::Rabbitmq]);
    assert_eq!(backing(c, B::Rabbitmq).env_vars, ["AMQP_URL"]);
}

#[test]
fn pipenv_flask_with_a_non_default_app_variable() {
    let c = only(&plan("pipenv-flask")).clone();
    assert_eq!(c.package_manager, "pipenv");
    assert_eq!(install(&c), "pip install flask 'redis>=4'");
    // The Pipfile's python_version is a preference.
    assert_eq!(runtime(&c), ("python", ""));
    assert_eq!(c.runtime.as_ref().unwrap().preferred_version, "3.10");
    assert_eq!(start(&c), "flask run --host 0.0.0.0");
    assert_eq!(env(&c, "FLASK_APP").default_value, "server:webapp");
    assert_eq!(kinds(&c), [B::Redis]);
}

#[test]
fn conda_environment_translates_to_pip() {
    let c = only(&plan("conda-script")).clone();
    assert_eq!(c.package_manager, "conda");
    assert_eq!(runtime(&c), ("python", "==3.9.*"));
    assert_eq!(install(&c), "pip install numpy==1.26 flask-cors");
    assert_eq!(start(&c), "python run.py");
    assert_eq!(c.kind, K::Cli as i32);
}

#[test]
fn console_script_is_a_cli_tested_with_tox() {
    let c = only(&plan("pyproject-cli")).clone();
    assert_eq!(start(&c), "mytool");
    assert_eq!(c.kind, K::Cli as i32);
    assert_eq!(test_cmd(&c), "tox");
    assert_eq!(runtime(&c), ("python", ">=3.8"));
    assert!(
        c.evidence
            .iter()
            .any(|e| e.field == "runtime" && e.detail.contains(">=3.8") && e.weight < 0.5),
        "classifier evidence"
    );
}

#[test]
fn python_version_conflict_is_a_warning_and_the_range_wins() {
    let p = plan("python-version-conflict");
    let c = only(&p);
    assert_eq!(runtime(c), ("python", ">=3.10"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains(".python-version") && w.contains("3.8") && w.contains(">=3.10")),
        "{:?}",
        p.warnings
    );
    assert_eq!(start(c), "uvicorn newlib.web:application --host 0.0.0.0");
    assert_eq!(c.frameworks, ["starlette"]);
}

#[test]
fn setup_py_library_has_no_start_and_uses_unittest() {
    let c = only(&plan("setup-py-lib")).clone();
    assert_eq!(c.kind, K::Library as i32);
    assert!(c.start.is_none());
    assert_eq!(install(&c), "pip install -e .");
    assert_eq!(runtime(&c), ("python", ">=3.7"));
    assert_eq!(test_cmd(&c), "python -m unittest discover -s tests");
    assert_eq!(kinds(&c), [B::Mysql]);
}

#[test]
fn procfile_web_overrides_the_flask_default() {
    let c = only(&plan("procfile-override")).clone();
    assert_eq!(start(&c), "gunicorn app:app --bind 0.0.0.0:$PORT --workers 2");
    assert_eq!(c.port_binding, "env:PORT");
    assert_eq!(start_file(&c), "Procfile");
    assert_eq!(
        c.setup.iter().map(|s| s.run.as_str()).collect::<Vec<_>>(),
        ["flask --app app db upgrade"]
    );
    assert!(c.confidence >= 0.9);
    // The framework default is still there as weaker evidence.
    assert!(
        c.evidence
            .iter()
            .any(|e| e.field == "start" && e.file == "app.py")
    );
}

#[test]
fn readme_only_repository_runs_the_readme_command_with_low_confidence() {
    let c = only(&plan("readme-only")).clone();
    assert_eq!(start(&c), "python3 server.py");
    assert_eq!(c.port, 8080);
    assert_eq!(start_file(&c), "README.md");
    assert!(c.confidence <= 0.3, "{}", c.confidence);
    assert_eq!(c.language, "python");
}

#[test]
fn express_with_nvmrc_lockfile_and_watch_tests() {
    let c = only(&plan("express-mongo")).clone();
    assert_eq!(c.package_manager, "npm");
    assert_eq!(install(&c), "npm ci");
    assert_eq!(start(&c), "npm start");
    assert!(!c.start.as_ref().unwrap().watch_mode);
    assert_eq!((c.port, c.port_binding.as_str()), (4000, "env:PORT"));
    assert_eq!(runtime(&c), ("node", "20.11.1"));
    assert!(c.test.as_ref().unwrap().watch_mode, "jest --watch");
    assert_eq!(kinds(&c), [B::Redis, B::Mongodb]);
    assert_eq!(backing(&c, B::Mongodb).env_vars, ["MONGODB_URI"]);
    assert_eq!(c.frameworks, ["express"]);
}

#[test]
fn next_with_pnpm_and_engines() {
    let c = only(&plan("next-pnpm")).clone();
    assert_eq!(c.package_manager, "pnpm");
    assert_eq!(install(&c), "pnpm install");
    assert_eq!(c.build.as_ref().unwrap().run, "pnpm run build");
    assert_eq!(start(&c), "pnpm run start");
    assert_eq!((c.port, c.port_binding.as_str()), (3000, "env:PORT"));
    assert_eq!(runtime(&c), ("node", ">=18.17"));
    assert_eq!(c.language, "typescript");
}

#[test]
fn vite_dev_server_is_watch_mode_and_takes_a_port_flag() {
    let c = only(&plan("vite-yarn")).clone();
    assert_eq!(c.package_manager, "yarn");
    assert_eq!(start(&c), "yarn dev --host 0.0.0.0");
    assert!(c.start.as_ref().unwrap().watch_mode);
    assert_eq!((c.port, c.port_binding.as_str()), (5173, "flag:--port"));
    assert_eq!(test_cmd(&c), "yarn test");
    assert!(c.test.as_ref().unwrap().watch_mode, "vitest without run");
}

#[test]
fn nest_reads_port_from_main_ts() {
    let c = only(&plan("nest-api")).clone();
    assert_eq!(c.package_manager, "npm");
    assert_eq!(start(&c), "npm start");
    assert_eq!((c.port, c.port_binding.as_str()), (3000, "env:PORT"));
    assert_eq!(c.frameworks, ["nest"]);
    assert!(!c.test.as_ref().unwrap().watch_mode);
    assert_eq!(kinds(&c), [B::Postgresql]);
    let jwt = env(&c, "JWT_SECRET");
    assert!(
        jwt.required && jwt.secret && jwt.default_value.is_empty(),
        "changeme is a template value"
    );
    assert!(
        c.evidence
            .iter()
            .any(|e| e.field == "port" && e.file == "src/main.ts")
    );
}

#[test]
fn bun_project_uses_bun_runtime() {
    let c = only(&plan("bun-app")).clone();
    assert_eq!(c.package_manager, "bun");
    assert_eq!(runtime(&c).0, "bun");
    assert_eq!(install(&c), "bun install");
    assert_eq!(start(&c), "bun run start");
}

#[test]
fn pnpm_workspace_yields_one_component_per_member() {
    let p = plan("pnpm-workspace");
    assert_eq!(
        p.components.len(),
        3,
        "{:?}",
        p.components.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    let web = at(&p, "apps/web");
    assert_eq!(web.name, "web");
    assert_eq!(start(web), "pnpm run start");
    assert_eq!(web.install.as_ref().unwrap().working_dir, ".");
    assert_eq!(install(web), "pnpm install");
    let api = at(&p, "apps/api");
    assert_eq!((api.port, api.port_binding.as_str()), (8787, "env:PORT"));
    assert_eq!(kinds(api), [B::Redis]);
    assert!(!api.test.as_ref().unwrap().watch_mode, "vitest run");
    let ui = at(&p, "packages/ui");
    assert_eq!(ui.kind, K::Library as i32);
    assert!(ui.start.is_none());
}

#[test]
fn npm_workspaces_install_at_the_root() {
    let p = plan("npm-workspaces");
    assert_eq!(p.components.len(), 2);
    let server = at(&p, "packages/server");
    assert_eq!(install(server), "npm ci");
    assert_eq!(server.install.as_ref().unwrap().working_dir, ".");
    assert_eq!(server.port, 3001);
    assert_eq!(kinds(server), [B::Mysql, B::Rabbitmq]);
    let client = at(&p, "packages/client");
    assert_eq!(client.port, 5173);
    assert!(client.start.as_ref().unwrap().watch_mode);
}

/// Code that names `postgres://` (Heroku's scheme) gets its PostgreSQL URL
/// in that scheme; code that does not keeps the provisioner's.
#[test]
fn code_naming_the_heroku_postgres_scheme_asks_for_it() {
    let p = plan("postgres-heroku-scheme");
    assert_eq!(backing(only(&p), B::Postgresql).url_scheme, "postgres");
    let p = plan("monorepo-compose");
    assert_eq!(backing(at(&p, "backend"), B::Postgresql).url_scheme, "");
}

#[test]
fn monorepo_with_compose_postgres_and_redis() {
    let p = plan("monorepo-compose");
    assert_eq!(p.components.len(), 2);
    let backend = at(&p, "backend");
    assert_eq!(start(backend), "uvicorn app.main:app --host 0.0.0.0");
    assert_eq!(backend.port, 8000);
    assert_eq!(kinds(backend), [B::Postgresql, B::Redis]);
    assert_eq!(backing(backend, B::Postgresql).version, "15");
    assert_eq!(backing(backend, B::Redis).version, "7.2");
    assert_eq!(backing(backend, B::Postgresql).env_vars, ["DATABASE_URL"]);
    assert!(
        backing(backend, B::Postgresql)
            .evidence
            .iter()
            .any(|e| e.file == "docker-compose.yml")
    );
    assert_eq!(env(backend, "REDIS_URL").default_value, "redis://cache:6379/0");
    let frontend = at(&p, "frontend");
    assert_eq!(frontend.port, 5173);
    assert_eq!(install(frontend), "npm ci");
    assert!(
        frontend.backing_services.is_empty(),
        "frontend does not depend on db"
    );
    assert!(
        !start(frontend).contains("docker"),
        "README docker compose must not win"
    );
}

#[test]
fn rust_axum_binary_with_toolchain_and_sqlx_postgres() {
    let c = only(&plan("rust-axum")).clone();
    assert_eq!(start(&c), "cargo run");
    assert_eq!(c.port, 3000);
    assert_eq!(runtime(&c), ("rust", "1.78"));
    assert_eq!(c.package_manager, "cargo");
    assert_eq!(kinds(&c), [B::Postgresql]);
    assert_eq!(c.frameworks, ["axum"]);
    assert_eq!(c.kind, K::Web as i32);
}

/// A command-line tool whose web server is an optional dependency behind a
/// `serve` feature (mdBook): started bare it prints its usage and exits, so
/// it is a program (not started, tests still run), not a web component.
#[test]
fn a_server_framework_behind_a_feature_does_not_make_a_cli_a_web_app() {
    let c = only(&plan("rust-cli-optional-server")).clone();
    assert_eq!(c.kind(), K::Cli, "{c:#?}");
    assert_eq!(c.port, 0, "{c:#?}");
    assert_eq!(test_cmd(&c), "cargo test");
    // The same framework as a plain dependency still makes a web app.
    assert_eq!(only(&plan("rust-axum")).kind(), K::Web);
}

#[test]
fn cargo_workspace_server_is_an_example() {
    let c = only(&plan("rust-workspace-example")).clone();
    assert_eq!(start(&c), "cargo run -p kvstore --example http_server");
    assert_eq!(c.port, 8080);
    assert_eq!(runtime(&c), ("rust", ">=1.75"));
    assert_eq!(start_file(&c), "crates/kvstore/examples/http_server.rs");
    assert_eq!(test_cmd(&c), "cargo test --workspace");
}

#[test]
fn a_rust_version_inherited_from_the_workspace_is_the_runtime_minimum() {
    let c = only(&plan("rust-workspace-inherited-msrv")).clone();
    assert_eq!(runtime(&c), ("rust", ">=1.99"));
}

#[test]
fn actix_default_run_bin_among_several() {
    let c = only(&plan("rust-actix-bins")).clone();
    assert_eq!(start(&c), "cargo run");
    assert_eq!(c.port, 8088);
    assert_eq!(runtime(&c), ("rust", "stable"));
    assert_eq!(kinds(&c), [B::Redis]);
}

#[test]
fn go_server_under_cmd() {
    let c = only(&plan("go-gin-cmd")).clone();
    assert_eq!(start(&c), "go run ./cmd/server");
    assert_eq!(c.port, 8080);
    assert_eq!(runtime(&c), ("go", ">=1.22"));
    assert_eq!(c.frameworks, ["gin"]);
    assert_eq!(kinds(&c), [B::Postgresql]);
    assert_eq!(install(&c), "go mod download");
}

#[test]
fn go_root_main_with_port_env() {
    let c = only(&plan("go-root-nethttp")).clone();
    assert_eq!(start(&c), "go run .");
    assert_eq!((c.port, c.port_binding.as_str()), (9000, "env:PORT"));
    assert_eq!(runtime(&c), ("go", "1.22.2"));
}

#[test]
fn spring_boot_maven_with_properties() {
    let c = only(&plan("spring-maven")).clone();
    assert_eq!(c.package_manager, "maven");
    assert_eq!(start(&c), "./mvnw -B spring-boot:run");
    assert_eq!((c.port, c.port_binding.as_str()), (8081, "env:SERVER_PORT"));
    assert_eq!(runtime(&c), ("java", "17"));
    assert_eq!(c.name, "petclinic");
    assert_eq!(kinds(&c), [B::Postgresql]);
    assert_eq!(
        env(&c, "DATABASE_URL").default_value,
        "jdbc:postgresql://localhost:5432/petclinic"
    );
    assert!(env(&c, "DB_PASSWORD").required && env(&c, "DB_PASSWORD").secret);
}

#[test]
fn spring_boot_gradle_kotlin_dsl() {
    let c = only(&plan("spring-gradle-kts")).clone();
    assert_eq!(c.package_manager, "gradle");
    assert_eq!(start(&c), "./gradlew --no-daemon bootRun");
    assert_eq!(runtime(&c), ("java", "21"));
    assert_eq!(c.port, 8080);
    assert_eq!(kinds(&c), [B::Redis]);
}

#[test]
fn c_makefile_run_target() {
    let c = only(&plan("c-makefile")).clone();
    assert_eq!(c.language, "c");
    assert_eq!(c.package_manager, "make");
    assert_eq!(c.build.as_ref().unwrap().run, "make");
    assert_eq!(start(&c), "make run");
    assert_eq!(test_cmd(&c), "make test");
}

#[test]
fn cpp_cmake_executable() {
    let c = only(&plan("cpp-cmake")).clone();
    assert_eq!(c.language, "cpp");
    assert_eq!(c.package_manager, "cmake");
    assert_eq!(start(&c), "./build/hello");
    assert_eq!(start_file(&c), "CMakeLists.txt");
}

#[test]
fn static_site_is_served_without_a_build() {
    let c = only(&plan("static-site")).clone();
    assert_eq!(c.kind, K::Static as i32);
    assert_eq!(runtime(&c).0, "static");
    assert!(start(&c).starts_with("python3 -m http.server ${PORT:-8000}"));
    assert_eq!(c.port_binding, "env:PORT");
    assert!(c.build.is_none());
}

#[test]
fn dockerfile_cmd_starts_a_frameworkless_python_program() {
    let c = only(&plan("dockerfile-python-bot")).clone();
    assert_eq!(start(&c), "python bot.py");
    assert_eq!(start_file(&c), "Dockerfile");
    assert_eq!(runtime(&c), ("python", "==3.12.*"));
    assert_eq!(env(&c, "LOG_LEVEL").default_value, "debug");
    let token = env(&c, "BOT_TOKEN");
    assert!(token.required && token.secret);
}

#[test]
fn devcontainer_gives_the_port_when_code_does_not() {
    let c = only(&plan("devcontainer-node")).clone();
    assert_eq!(c.port, 3300);
    assert!(
        c.evidence
            .iter()
            .any(|e| e.field == "port" && e.file == ".devcontainer/devcontainer.json")
    );
    assert_eq!(
        install(&c),
        "npm install",
        "the manifest outranks postCreateCommand"
    );
}

#[test]
fn node_version_conflict_is_a_warning() {
    let p = plan("node-version-conflict");
    let c = only(&p);
    assert_eq!(runtime(c), ("node", ">=20"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains(".nvmrc") && w.contains(">=20")),
        "{:?}",
        p.warnings
    );
    assert!(c.test.as_ref().unwrap().watch_mode);
    assert_eq!(c.port, 8081);
}

#[test]
fn compose_and_dockerfile_support_a_node_service() {
    let c = only(&plan("compose-dockerfile-node")).clone();
    assert_eq!(
        start(&c),
        "npm start",
        "the start script outranks the Dockerfile CMD"
    );
    assert_eq!(c.port, 7000);
    assert_eq!(runtime(&c), ("node", "18"));
    assert_eq!(kinds(&c), [B::Mongodb, B::Rabbitmq]);
    assert_eq!(backing(&c, B::Rabbitmq).version, "3.13");
    assert_eq!(env(&c, "AMQP_URL").default_value, "amqp://rabbit:5672");
    assert!(env(&c, "API_KEY").secret);
}

#[test]
fn malformed_manifests_are_warnings_not_errors() {
    let p = plan("malformed-manifests");
    for f in [
        "package.json",
        "pyproject.toml",
        "Cargo.toml",
        "docker-compose.yml",
    ] {
        assert!(
            p.warnings.iter().any(|w| w.starts_with(f)),
            "{f}: {:?}",
            p.warnings
        );
    }
    assert!(p.components.iter().all(|c| c.start.is_none()));
    assert!(p.generator.starts_with("reporunner-analyzer "));
}

#[test]
fn missing_and_non_directory_paths_are_errors_naming_the_path() {
    let err = analyze_dir(
        std::path::Path::new("/nonexistent/ws-42"),
        None,
        &AnalyzerConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ws-42"));
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = analyze_dir(file.path(), None, &AnalyzerConfig::default()).unwrap_err();
    assert!(err.to_string().contains("not a directory"));
    let err = analyze_dir(
        std::path::Path::new("relative/x"),
        None,
        &AnalyzerConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("absolute"));
}

#[test]
fn vendored_and_gitignored_directories_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"app","scripts":{"start":"node index.js"}}"#,
    )
    .unwrap();
    std::fs::write(root.join(".gitignore"), "generated/\n").unwrap();
    for vendored in ["node_modules/left-pad", "generated/api", ".venv/lib"] {
        std::fs::create_dir_all(root.join(vendored)).unwrap();
        std::fs::write(
            root.join(vendored).join("package.json"),
            r#"{"name":"x","scripts":{"start":"x"}}"#,
        )
        .unwrap();
        std::fs::write(root.join(vendored).join("requirements.txt"), "flask\n").unwrap();
    }
    let p = analyze_dir(root, None, &AnalyzerConfig::default()).unwrap();
    assert_eq!(
        p.components.len(),
        1,
        "{:?}",
        p.components.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    assert!(
        p.files_considered
            .iter()
            .all(|f| !f.contains("node_modules") && !f.contains("generated"))
    );
}

#[test]
fn environment_prefers_host_versions() {
    use reporunner_proto::common::v1::{Environment, Toolchain};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fastapi-src-uv");
    let dir = std::fs::canonicalize(dir).unwrap();
    let env = Environment {
        toolchains: vec![
            Toolchain {
                name: "python3.9".into(),
                version: "3.9.18".into(),
                path: "/usr/bin/python3.9".into(),
            },
            Toolchain {
                name: "python3.11".into(),
                version: "3.11.7".into(),
                path: "/usr/bin/python3.11".into(),
            },
        ],
        ..Default::default()
    };
    let p = analyze_dir(&dir, Some(&env), &AnalyzerConfig::default()).unwrap();
    let c = only(&p);
    assert!(
        c.evidence
            .iter()
            .any(|e| e.field == "runtime" && e.detail.contains("3.11.7")),
        "{:?}",
        c.evidence
    );
    let old = Environment {
        toolchains: vec![Toolchain {
            name: "python3".into(),
            version: "3.8.10".into(),
            path: "/usr/bin/python3".into(),
        }],
        ..Default::default()
    };
    let p = analyze_dir(&dir, Some(&old), &AnalyzerConfig::default()).unwrap();
    assert!(
        p.warnings.iter().any(|w| w.contains("3.8.10")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn uv_workspace_member_with_an_app_factory_call_and_alembic() {
    let p = plan("uv-workspace-factory");
    let c = only(&p);
    assert_eq!(c.path, "services/api");
    assert_eq!(c.package_manager, "uv", "uv.lock at the workspace root");
    assert_eq!(start(c), "uvicorn app.main:app --host 0.0.0.0");
    assert_eq!(start_file(c), "services/api/app/main.py");
    assert_eq!(
        c.setup.iter().map(|s| s.run.as_str()).collect::<Vec<_>>(),
        ["alembic upgrade head"]
    );
    assert_eq!(runtime(c), ("python", ">=3.11"));
    assert_eq!(kinds(c), [B::Postgresql]);
}

#[test]
fn library_whose_servers_live_in_an_examples_workspace() {
    let c = only(&plan("rust-examples-workspace")).clone();
    assert_eq!(start(&c), "cargo run -p example-hello-world");
    assert_eq!(c.start.as_ref().unwrap().working_dir, "examples");
    assert_eq!(c.port, 3000);
}

#[test]
fn a_build_watcher_dev_script_is_not_a_start_command() {
    let c = only(&plan("node-lib-dev-watcher")).clone();
    assert_eq!(c.kind, K::Library as i32);
    assert!(
        c.start.is_none(),
        "tsc --watch rebuilds a library; README `npm start` names no script"
    );
    assert_eq!(c.package_manager, "pnpm");
    assert_eq!(test_cmd(&c), "pnpm run test");
}

#[test]
fn go_framework_runs_its_base_example_with_the_readme_subcommand() {
    let c = only(&plan("go-framework-example")).clone();
    assert_eq!(start(&c), "go run ./examples/base serve");
    assert_eq!(start_file(&c), "examples/base/main.go");
    assert!(c.confidence < 0.6, "{}", c.confidence);
    assert_eq!(runtime(&c), ("go", ">=1.23"));
}

#[test]
fn evidence_files_in_fixture_trees_do_not_speak_for_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("go.mod"), "module example.com/svc\n\ngo 1.22\n").unwrap();
    std::fs::write(
        root.join("main.go"),
        "package main\n\nimport \"net/http\"\n\nfunc main() { http.ListenAndServe(\":7070\", nil) }\n",
    )
    .unwrap();
    let fixture = root.join("tests/fixtures/flask");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("Procfile"), "web: gunicorn app:app\n").unwrap();
    std::fs::write(
        fixture.join("Dockerfile"),
        "FROM python:3.12\nCMD [\"python\", \"app.py\"]\n",
    )
    .unwrap();
    std::fs::write(fixture.join("requirements.txt"), "flask\n").unwrap();
    let p = analyze_dir(root, None, &AnalyzerConfig::default()).unwrap();
    let c = only(&p);
    assert_eq!(start(c), "go run .");
    assert_eq!(c.port, 7070);
}

#[test]
fn a_content_addressed_workspace_root_is_named_app_not_by_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir
        .path()
        .join("0b371b5110c5083ec3d48f441c4af275407530a2a51f5fcdebb75b3bd6dd3a4f");
    std::fs::create_dir(&workspace).unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/flask-factory");
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), workspace.join(entry.file_name())).unwrap();
        }
    }
    let plan = analyze_dir(&workspace, None, &AnalyzerConfig::default()).unwrap();
    assert_eq!(only(&plan).name, "app");
}

#[test]
fn a_single_tests_py_beside_a_flask_app_is_run_with_unittest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("requirements.txt"), "flask\n").unwrap();
    std::fs::write(
        root.join("app.py"),
        "from flask import Flask\napp = Flask(__name__)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("tests.py"),
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_x(self):\n        pass\n",
    )
    .unwrap();
    let p = analyze_dir(root, None, &AnalyzerConfig::default()).unwrap();
    let c = only(&p);
    assert_eq!(test_cmd(c), r#"python -m unittest discover -p "test*.py""#);
}

/// Real-repositories class 3: a library's README shows how its users
/// start their apps, with files the library does not have; that is no start
/// command of the library's, which is tested, not started.
#[test]
fn lib_readme_usage_is_a_library_not_the_readmes_app() {
    let p = plan("lib-readme-usage");
    let c = only(&p);
    assert_eq!(start(c), "", "{:#?}", c.evidence);
    assert_eq!(c.kind(), K::Library);
    assert_eq!(test_cmd(c), "python -m pytest");
}

/// Class 3 for Node: an index.js that only exports, in a package with a
/// test script and no start script, is a library's entry, not a server.
#[test]
fn node_lib_entry_is_a_library_and_its_tests_run() {
    let p = plan("node-lib-entry");
    let c = only(&p);
    assert_eq!(start(c), "", "{:#?}", c.evidence);
    assert_eq!(c.kind(), K::Library);
    assert_eq!(test_cmd(c), "npm test");
}

/// Real-repositories class 4: a `configure` script beside CMakeLists.txt
/// (zlib's layout) builds with `./configure && make`, which needs no
/// CMake, and tests with the Makefile's `test` target.
#[test]
fn c_configure_and_cmake_builds_with_configure_and_make() {
    let c = only(&plan("c-configure-and-cmake")).clone();
    assert_eq!(c.package_manager, "make");
    assert_eq!(c.build.as_ref().unwrap().run, "./configure && make");
    assert_eq!(test_cmd(&c), "make test");
    assert_eq!(start(&c), "");
}

/// Class 7: values the repository keeps outside the code (compose
/// `env_file`, app.json, devcontainer `containerEnv`, a CI workflow's
/// `env:`) become the plan's; expressions, `${localEnv:…}` and generators
/// are not values.
#[test]
fn env_from_repo() {
    let plan = plan("env-from-repo");
    let c = only(&plan);
    let value = |name: &str| {
        c.env
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:#?}", c.env))
    };
    assert_eq!(value("GREETING").default_value, "hello-from-env-file");
    assert_eq!(value("GREETING").source, ".env.dev:2");
    assert_eq!(value("APP_ALLOWED_HOSTS").default_value, "localhost 127.0.0.1");
    assert_eq!(value("SITE_TITLE").default_value, "title-from-app-json");
    let secret = value("SESSION_SECRET");
    assert!(
        secret.default_value.is_empty() && secret.required && secret.secret,
        "{secret:?}"
    );
    assert_eq!(value("UI_THEME").default_value, "theme-from-devcontainer");
    assert!(
        c.env
            .iter()
            .all(|e| e.name != "GITHUB_TOKEN" || e.default_value.is_empty())
    );
    assert_eq!(value("STORAGE_REGION").default_value, "region-from-ci");
    assert_eq!(value("STORAGE_REGION").source, ".github/workflows/ci.yml:9");
    let upstream = value("UPSTREAM_API_URL");
    assert!(
        upstream.default_value.is_empty() && upstream.required,
        "{upstream:?}"
    );
    assert!(
        c.env.iter().all(|e| e.name != "FORCE_COLOR"),
        "CI-only variables stay out"
    );
    assert!(
        c.env.iter().all(|e| !e.default_value.contains("/data/")),
        "a path in the container's volume is no value here: {:#?}",
        c.env
    );
}

fn setup_runs(c: &Component) -> Vec<&str> {
    c.setup.iter().map(|s| s.run.as_str()).collect()
}

/// Class 8: the app's own Flask command that creates the schema runs as a
/// setup step, with the start command's app (in FLASK_APP).
#[test]
fn db_init_flask_command() {
    let plan = plan("db-init-flask-command");
    let c = only(&plan);
    assert!(start(c).starts_with("flask run"), "{c:#?}");
    assert_eq!(env(c, "FLASK_APP").default_value, "app");
    assert_eq!(setup_runs(c), ["flask init-db"]);
}

/// Class 8: a database set-up script the README documents runs as a setup
/// step; the README's install and start lines are not set-up.
#[test]
fn db_init_readme() {
    let plan = plan("db-init-readme");
    let c = only(&plan);
    assert_eq!(setup_runs(c), ["python create_db.py"], "{c:#?}");
}

/// Class 8, Node: a `setup` script that migrates and seeds runs as a setup
/// step; `prepare` is no database set-up.
#[test]
fn db_init_node_script() {
    let plan = plan("db-init-node-script");
    let c = only(&plan);
    assert_eq!(setup_runs(c), ["npm run setup"], "{c:#?}");
}

/// A server whose port is its argument parser's `--port` (clap): the plan
/// passes the port that way, to the program (after `--`), not to cargo.
#[test]
fn rust_clap_port() {
    let plan = plan("rust-clap-port");
    let c = only(&plan);
    assert_eq!(c.port_binding, "flag:--port", "{c:#?}");
    assert!(
        start(c).starts_with("cargo run") && start(c).ends_with(" --"),
        "{}",
        start(c)
    );
}

/// A server that listens on a port but speaks no HTTP (no HTTP framework,
/// no HTTP in its source): a service probed by connecting, with its port
/// from `PORT`. A hand-written HTTP server on a bare listener
/// (rust-clap-port) stays a web component.
#[test]
fn rust_tcp_service() {
    let service = plan("rust-tcp-service");
    let c = only(&service);
    assert_eq!(c.kind(), K::Service, "{c:#?}");
    assert_eq!(c.port_binding, "env:PORT", "{c:#?}");
    assert_eq!(only(&plan("rust-clap-port")).kind(), K::Web);
    // The same class in Node: `net.createServer`, no HTTP module.
    let node = plan("node-tcp-service");
    let c = only(&node);
    assert_eq!(c.kind(), K::Service, "{c:#?}");
    assert_eq!((c.port, c.port_binding.as_str()), (6390, "env:PORT"), "{c:#?}");
    assert_eq!(start(c), "npm start");
    // And in Python: `asyncio.start_server`, no HTTP.
    let python = plan("python-tcp-service");
    let c = only(&python);
    assert_eq!(c.kind(), K::Service, "{c:#?}");
    assert_eq!((c.port, c.port_binding.as_str()), (6391, "env:PORT"), "{c:#?}");
}

/// A C library whose only Makefile runs its tests, beside an inert clib
/// package.json: one C component at the root, tested with `make -C tests`.
#[test]
fn c_tests_dir() {
    let plan = plan("c-tests-dir");
    let c = only(&plan);
    assert_eq!(c.language, "c", "{c:#?}");
    assert_eq!(test_cmd(c), "make -C tests");
    assert_eq!(c.kind(), K::Library);
}
