//! The rule catalog against realistic log excerpts (`tests/logs/*.log`):
//! each case asserts the first diagnosis's cause, its confidence and the
//! exact typed patches.
#![allow(clippy::unwrap_used)]

use reporunner_proto::{
    agents::resolver::v1::{DiagnoseRequest, DiagnosisSource, Phase},
    common::v1::{
        AddBackingService, AddPackage, AddSetupCommand, BackingService, BackingServiceKind, Command,
        CommandSlot, Component, EnvVar, Environment, Evidence, PlanPatch, RelaxPin, ReplaceCommand, RunPlan,
        Runtime, SetEnvVar, SetPort, SetRuntimeVersion, Toolchain, plan_patch::Change,
    },
};
use reporunner_resolver::{Resolver as _, ResolverConfig, RuleResolver};

/// What one proposed patch must be.
#[derive(Debug)]
enum Expect {
    Exact(Change),
    /// A SetEnvVar of this name with a random 48-character secret.
    Secret(&'static str),
    /// A CreateFile at this path whose content has these lines.
    File(&'static str, &'static [&'static str]),
}

fn add(name: &str, spec: &str) -> Expect {
    Expect::Exact(Change::AddPackage(AddPackage {
        name: name.into(),
        version_spec: spec.into(),
    }))
}

fn env(name: &str, value: &str) -> Expect {
    Expect::Exact(Change::SetEnvVar(SetEnvVar {
        name: name.into(),
        value: value.into(),
    }))
}

fn runtime(version: &str) -> Expect {
    Expect::Exact(Change::SetRuntimeVersion(SetRuntimeVersion {
        version: version.into(),
    }))
}

fn replace(slot: CommandSlot, run: &str) -> Expect {
    Expect::Exact(Change::ReplaceCommand(ReplaceCommand {
        slot: slot as i32,
        command: Some(Command {
            run: run.into(),
            ..Command::default()
        }),
    }))
}

fn setup(run: &str) -> Expect {
    Expect::Exact(Change::AddSetupCommand(AddSetupCommand {
        command: Some(Command {
            run: run.into(),
            ..Command::default()
        }),
    }))
}

fn service(kind: BackingServiceKind, vars: &[&str]) -> Expect {
    Expect::Exact(Change::AddBackingService(AddBackingService {
        service: Some(BackingService {
            kind: kind as i32,
            env_vars: vars.iter().map(|v| (*v).to_owned()).collect(),
            ..BackingService::default()
        }),
    }))
}

fn relax(package: &str, from: &str, to: &str) -> Expect {
    Expect::Exact(Change::RelaxPin(RelaxPin {
        package: package.into(),
        from_spec: from.into(),
        to_spec: to.into(),
    }))
}

fn port0() -> Expect {
    Expect::Exact(Change::SetPort(SetPort {
        port: 0,
        binding: String::new(),
    }))
}

fn none() -> Vec<Expect> {
    Vec::new()
}

fn command(run: &str) -> Option<Command> {
    Some(Command {
        run: run.into(),
        ..Command::default()
    })
}

fn var(name: &str, default: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        default_value: default.into(),
        source: ".env.example:1".into(),
        ..EnvVar::default()
    }
}

struct Case {
    log: &'static str,
    phase: Phase,
    exit_code: i32,
    /// Changes the default component (python, pip, start `python app.py`).
    setup: fn(&mut Component, &mut Vec<String>),
    /// (name, version, path) of installed toolchains.
    tools: &'static [(&'static str, &'static str, &'static str)],
    cause: &'static str,
    confidence: f64,
    patches: fn() -> Vec<Expect>,
}

fn python(_: &mut Component, _: &mut Vec<String>) {}

fn flask_app_option(c: &mut Component, _: &mut Vec<String>) {
    c.start = command("flask --app server:webapp run --host 0.0.0.0");
}

fn node(c: &mut Component, _: &mut Vec<String>) {
    c.language = "javascript".into();
    c.package_manager = "npm".into();
    c.install = command("npm ci");
    c.start = command("npm start");
    c.test = command("npm test");
}

fn cases() -> Vec<Case> {
    use BackingServiceKind as K;
    use CommandSlot as S;
    use Phase as P;
    let c = |log, phase, exit_code, setup, tools, cause, confidence, patches| Case {
        log,
        phase,
        exit_code,
        setup,
        tools,
        cause,
        confidence,
        patches,
    };
    const PYTHONS_36_313: &[(&str, &str, &str)] = &[
        ("python3.13", "3.13.0", "/root/.pyenv/versions/3.13.0/bin/python3"),
        ("python3.12", "3.12.1", "/root/.pyenv/versions/3.12.1/bin/python3"),
        ("python3.11", "3.11.7", "/root/.pyenv/versions/3.11.7/bin/python3"),
        (
            "python3.10",
            "3.10.13",
            "/root/.pyenv/versions/3.10.13/bin/python3",
        ),
        ("python3.9", "3.9.18", "/root/.pyenv/versions/3.9.18/bin/python3"),
        ("python3.6", "3.6.15", "/root/.pyenv/versions/3.6.15/bin/python3"),
    ];
    const PY311_312: &[(&str, &str, &str)] = &[
        ("python3.12", "3.12.1", "/usr/bin/python3.12"),
        ("python3.11", "3.11.9", "/usr/bin/python3.11"),
    ];
    const PY_312_310: &[(&str, &str, &str)] = &[
        ("python3.12", "3.12.1", "/usr/bin/python3.12"),
        ("python3.10", "3.10.13", "/usr/local/bin/python3.10"),
    ];
    const PY_312_39: &[(&str, &str, &str)] = &[
        ("python3.12", "3.12.1", "/usr/bin/python3.12"),
        ("python3.9", "3.9.18", "/usr/local/bin/python3.9"),
    ];
    const PY_312: &[(&str, &str, &str)] = &[("python3.12", "3.12.1", "/usr/bin/python3.12")];
    vec![
        // Python
        c(
            "py_flask_no_app_option",
            P::Start,
            2,
            flask_app_option,
            &[],
            "python.flask_app_option",
            0.9,
            || {
                vec![
                    env("FLASK_APP", "server:webapp"),
                    replace(S::Start, "flask run --host 0.0.0.0"),
                ]
            },
        ),
        c(
            "py_missing_yaml",
            P::Start,
            1,
            python,
            &[],
            "python.missing_module",
            0.85,
            || vec![add("PyYAML", "")],
        ),
        c(
            "py_missing_submodule",
            P::Start,
            3,
            python,
            &[],
            "python.missing_module",
            0.85,
            || vec![add("python-dateutil", "")],
        ),
        c(
            "py_missing_protobuf",
            P::Start,
            1,
            python,
            &[],
            "python.missing_module",
            0.85,
            || vec![add("protobuf", "")],
        ),
        c(
            "py_own_package",
            P::Setup,
            1,
            |_, files| files.push("shop/__init__.py".into()),
            &[],
            "python.missing_module",
            0.7,
            || vec![env("PYTHONPATH", ".")],
        ),
        c(
            "node_dist_missing",
            P::Start,
            1,
            |c, f| {
                node(c, f);
                c.package_manager = "pnpm".into();
            },
            &[],
            "node.build_missing",
            0.85,
            || vec![replace(S::Build, "pnpm run build")],
        ),
        c(
            "py_pkg_resources",
            P::Start,
            1,
            python,
            &[],
            "python.setuptools_missing",
            0.95,
            || vec![add("setuptools", "<81")],
        ),
        c(
            "py_distutils",
            P::Install,
            1,
            python,
            PY311_312,
            "python.distutils_removed",
            0.9,
            || vec![add("setuptools", "<81"), runtime("3.11")],
        ),
        c(
            "py_requires_python",
            P::Install,
            1,
            python,
            PY_312_310,
            "python.interpreter_mismatch",
            0.9,
            || vec![runtime("3.10")],
        ),
        c(
            "py_numpy_pin",
            P::Install,
            1,
            python,
            PY_312_39,
            "python.interpreter_mismatch",
            0.75,
            || vec![runtime("3.9")],
        ),
        c(
            "py_numpy_pin",
            P::Install,
            1,
            python,
            PY_312,
            "python.interpreter_mismatch",
            0.75,
            || vec![relax("numpy", "==1.19.5", ">=1.19.5")],
        ),
        c(
            "py_uv_python",
            P::Install,
            1,
            python,
            PY_312_310,
            "python.interpreter_mismatch",
            0.9,
            || vec![runtime("3.10")],
        ),
        c(
            "py_pg_config",
            P::Install,
            1,
            python,
            &[],
            "build.pg_config_missing",
            0.9,
            || vec![relax("psycopg2", "==2.9.3", "psycopg2-binary==2.9.3")],
        ),
        c(
            "py_mysql_config",
            P::Install,
            1,
            python,
            &[],
            "build.mysql_config_missing",
            0.6,
            || vec![relax("mysqlclient", "==2.1.1", "PyMySQL")],
        ),
        c(
            "py_python_h",
            P::Install,
            1,
            python,
            &[],
            "build.python_headers_missing",
            0.9,
            none,
        ),
        c(
            "py_gcc",
            P::Install,
            1,
            python,
            &[],
            "build.compiler_missing",
            0.85,
            none,
        ),
        c(
            "py_libffi",
            P::Install,
            1,
            python,
            &[],
            "build.libffi_missing",
            0.9,
            none,
        ),
        c(
            "py_openssl_h",
            P::Install,
            1,
            python,
            &[],
            "build.openssl_headers_missing",
            0.9,
            none,
        ),
        c(
            "py_werkzeug",
            P::Start,
            1,
            python,
            &[],
            "python.version_skew",
            0.9,
            || vec![add("werkzeug", "<2.1")],
        ),
        c(
            "py_markupsafe",
            P::Start,
            1,
            python,
            &[],
            "python.version_skew",
            0.9,
            || vec![add("markupsafe", "<2.1")],
        ),
        c(
            "py_jinja2_escape",
            P::Start,
            1,
            python,
            &[],
            "python.version_skew",
            0.9,
            || vec![add("jinja2", "<3.1")],
        ),
        c(
            "py_numpy_float",
            P::Test,
            1,
            python,
            &[],
            "python.numpy_alias_removed",
            0.9,
            || vec![add("numpy", "<1.24")],
        ),
        c(
            "py_gunicorn",
            P::Start,
            127,
            python,
            &[],
            "python.command_missing",
            0.85,
            || vec![add("gunicorn", "")],
        ),
        c(
            "py_uvicorn",
            P::Start,
            127,
            python,
            &[],
            "python.command_missing",
            0.85,
            || vec![add("uvicorn", "")],
        ),
        c(
            "flask_app",
            P::Start,
            2,
            |_, files| files.push("wsgi.py".into()),
            &[],
            "flask.app_not_found",
            0.8,
            || vec![env("FLASK_APP", "wsgi")],
        ),
        c(
            "django_host",
            P::Probe,
            0,
            |c, _| c.env.push(var("DJANGO_ALLOWED_HOSTS", "")),
            &[],
            "django.disallowed_host",
            0.8,
            || vec![env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")],
        ),
        c(
            "django_settings",
            P::Setup,
            1,
            |_, files| files.push("mysite/settings.py".into()),
            &[],
            "django.settings_not_configured",
            0.8,
            || vec![env("DJANGO_SETTINGS_MODULE", "mysite.settings")],
        ),
        c(
            "pip_root",
            P::Install,
            1,
            python,
            &[],
            "python.pip_as_root",
            0.3,
            || vec![env("PIP_ROOT_USER_ACTION", "ignore")],
        ),
        // Environment
        c(
            "env_keyerror_secret",
            P::Start,
            1,
            python,
            &[],
            "env.missing_var",
            0.8,
            || vec![Expect::Secret("SECRET_KEY")],
        ),
        // No default known: a placeholder from the name's shape (class 7).
        c(
            "env_guess_url",
            P::Start,
            1,
            python,
            &[],
            "env.missing_var",
            0.8,
            || vec![env("UPSTREAM_API_URL", "http://127.0.0.1:9")],
        ),
        // `os.environ.get("X").split(...)` with X unset.
        c(
            "env_none_split",
            P::Start,
            1,
            python,
            &[],
            "env.missing_var",
            0.75,
            || vec![env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")],
        ),
        c(
            "env_node_missing",
            P::Start,
            1,
            node,
            &[],
            "env.missing_var",
            0.85,
            || vec![env("NODE_ENV", "development")],
        ),
        c(
            "env_pydantic",
            P::Start,
            1,
            python,
            &[],
            "env.missing_var",
            0.75,
            || vec![service(K::Postgresql, &["DATABASE_URL"])],
        ),
        c(
            "env_decouple",
            P::Start,
            1,
            python,
            &[],
            "env.missing_var",
            0.85,
            || vec![env("DEBUG", "1")],
        ),
        c(
            "env_dotenv",
            P::Start,
            1,
            |c, _| {
                c.env.push(var("SECRET_KEY", ""));
                c.env.push(var("DEBUG", "True"));
                c.env.push(var("PORT", ""));
                c.port = 5000;
            },
            &[],
            "env.dotenv_missing",
            0.85,
            || vec![Expect::File(".env", &["DEBUG=True", "PORT=5000"])],
        ),
        // Ports
        c(
            "node_eaddrinuse",
            P::Start,
            1,
            node,
            &[],
            "port.in_use",
            0.9,
            || vec![port0()],
        ),
        // .python-version pins 3.12.2; 3.12.1 is installed.
        c(
            "py_exact_patch_pin",
            P::Install,
            -1,
            python,
            &[
                ("python3.13", "3.13.0", "/root/.pyenv/versions/3.13.0/bin/python3"),
                ("python3.12", "3.12.1", "/root/.pyenv/versions/3.12.1/bin/python3"),
            ],
            "python.interpreter_mismatch",
            0.85,
            || vec![runtime("3.12")],
        ),
        // Old pins on a new interpreter: an older installed one that the
        // project allows (>=3.9,<4 here) is chosen.
        c(
            "py_greenlet_build_311",
            P::Install,
            1,
            |c, _| {
                c.runtime = Some(Runtime {
                    name: "python".into(),
                    version_constraint: ">=3.9,<4".into(),
                    preferred_version: String::new(),
                });
            },
            PYTHONS_36_313,
            "python.interpreter_too_new",
            0.7,
            || vec![runtime("3.10")],
        ),
        c(
            "py_collections_iterator_311",
            P::Setup,
            1,
            python,
            PYTHONS_36_313,
            "python.interpreter_too_new",
            0.85,
            || vec![runtime("3.9")],
        ),
        c(
            "py_classcell_django110_39",
            P::Setup,
            1,
            python,
            &[
                (
                    "python3.9",
                    "3.9.18",
                    "/root/.pyenv/versions/3.9.18/bin/python3.9",
                ),
                (
                    "python3.7",
                    "3.7.16",
                    "/root/.pyenv/versions/3.7.16/bin/python3.7",
                ),
                (
                    "python3.6",
                    "3.6.15",
                    "/root/.pyenv/versions/3.6.15/bin/python3.6",
                ),
            ],
            "python.interpreter_too_new",
            0.85,
            || vec![runtime("3.7")],
        ),
        c(
            "py_genexp_django110_39",
            P::Setup,
            1,
            python,
            PYTHONS_36_313,
            "python.interpreter_too_new",
            0.85,
            || vec![runtime("3.6")],
        ),
        // The program reads APP_PORT (default: the taken port), not PORT.
        c(
            "node_eaddrinuse_app_port",
            P::Start,
            1,
            |c, _| {
                node(c, &mut Vec::new());
                c.port = 47613;
                c.env.push(var("APP_PORT", "47613"));
            },
            &[],
            "port.in_use",
            0.9,
            || {
                vec![Expect::Exact(Change::SetPort(SetPort {
                    port: 0,
                    binding: "env:APP_PORT".into(),
                }))]
            },
        ),
        c(
            "py_address_in_use",
            P::Start,
            1,
            python,
            &[],
            "port.in_use",
            0.9,
            || vec![port0()],
        ),
        // Databases
        c(
            "django_no_such_table",
            P::Probe,
            0,
            |c, _| c.frameworks.push("django".into()),
            &[],
            "db.not_migrated",
            0.85,
            || vec![setup("python manage.py migrate --noinput")],
        ),
        c(
            "django_unapplied",
            P::Start,
            0,
            python,
            &[],
            "db.not_migrated",
            0.85,
            || vec![setup("python manage.py migrate --noinput")],
        ),
        c(
            "flask_relation",
            P::Probe,
            0,
            |c, _| c.frameworks.push("flask".into()),
            &[],
            "db.not_migrated",
            0.85,
            || vec![setup("flask db upgrade")],
        ),
        c(
            "alembic_behind",
            P::Setup,
            1,
            python,
            &[],
            "db.not_migrated",
            0.9,
            || vec![setup("alembic upgrade head")],
        ),
        c(
            "pg_refused",
            P::Start,
            1,
            |c, _| c.env.push(var("DATABASE_URL", "")),
            &[],
            "db.postgres_unreachable",
            0.85,
            || vec![service(K::Postgresql, &["DATABASE_URL"])],
        ),
        c(
            "redis_refused",
            P::Start,
            1,
            node,
            &[],
            "db.redis_unreachable",
            0.85,
            || vec![service(K::Redis, &["REDIS_URL"])],
        ),
        c(
            "mongo_refused",
            P::Start,
            1,
            |c, f| {
                node(c, f);
                c.env.push(var("MONGO_URL", ""));
            },
            &[],
            "db.mongodb_unreachable",
            0.85,
            || vec![service(K::Mongodb, &["MONGO_URL"])],
        ),
        c(
            "amqp_refused",
            P::Start,
            1,
            python,
            &[],
            "db.rabbitmq_unreachable",
            0.8,
            || vec![service(K::Rabbitmq, &["AMQP_URL"])],
        ),
        c(
            "mysql_refused",
            P::Start,
            1,
            python,
            &[],
            "db.mysql_unreachable",
            0.85,
            || vec![service(K::Mysql, &["DATABASE_URL"])],
        ),
        // Node.js
        c(
            "npm_ci_sync",
            P::Install,
            1,
            node,
            &[],
            "node.lockfile_out_of_sync",
            0.95,
            || vec![replace(S::Install, "npm install")],
        ),
        c(
            "npm_eresolve",
            P::Install,
            1,
            node,
            &[],
            "node.peer_dependency_conflict",
            0.9,
            || vec![replace(S::Install, "npm install --legacy-peer-deps")],
        ),
        c(
            "npm_ebadengine",
            P::Install,
            1,
            node,
            &[
                ("node", "16.20.2", "/usr/bin/node"),
                ("node-20", "20.11.1", "/opt/node-20/bin/node"),
            ],
            "node.engine_mismatch",
            0.85,
            || vec![runtime("20")],
        ),
        c(
            "yarn_engine",
            P::Install,
            1,
            |c, f| {
                node(c, f);
                c.package_manager = "yarn".into();
            },
            &[("node", "16.20.2", "/usr/bin/node")],
            "node.engine_mismatch",
            0.6,
            || vec![replace(S::Install, "yarn install --ignore-engines")],
        ),
        c(
            "corepack",
            P::Install,
            1,
            node,
            &[],
            "node.corepack_package_manager",
            0.85,
            || {
                vec![
                    env("COREPACK_ENABLE_STRICT", "0"),
                    env("npm_config_manage_package_manager_versions", "false"),
                ]
            },
        ),
        c(
            "node_cannot_find_module",
            P::Start,
            1,
            node,
            &[],
            "node.missing_module",
            0.8,
            || vec![add("express", "")],
        ),
        c(
            "tsc_missing",
            P::Build,
            127,
            node,
            &[],
            "node.command_missing",
            0.85,
            || vec![add("typescript", "")],
        ),
        c(
            "ts_node_missing",
            P::Start,
            127,
            node,
            &[],
            "node.command_missing",
            0.85,
            || vec![add("ts-node", ""), add("typescript", "")],
        ),
        c(
            "openssl_legacy",
            P::Start,
            1,
            node,
            &[],
            "node.openssl_legacy",
            0.9,
            || vec![env("NODE_OPTIONS", "--openssl-legacy-provider")],
        ),
        c(
            "heap_oom",
            P::Build,
            134,
            node,
            &[],
            "node.heap_out_of_memory",
            0.8,
            || vec![env("NODE_OPTIONS", "--max-old-space-size=4096")],
        ),
        c(
            "vitest_watch",
            P::Test,
            124,
            |c, f| {
                node(c, f);
                c.test = command("npx vitest");
            },
            &[],
            "test.watch_mode",
            0.9,
            || vec![replace(S::Test, "npx vitest run")],
        ),
        c(
            "jest_timeout",
            P::Test,
            124,
            |c, f| {
                node(c, f);
                c.test = Some(Command {
                    run: "jest --watch".into(),
                    watch_mode: true,
                    ..Command::default()
                });
            },
            &[],
            "test.watch_mode",
            0.8,
            || vec![replace(S::Test, "CI=true jest --watchAll=false")],
        ),
        c(
            "puppeteer_root",
            P::Test,
            1,
            node,
            &[],
            "node.chrome_sandbox_root",
            0.6,
            || vec![env("CHROMIUM_FLAGS", "--no-sandbox")],
        ),
        c(
            "npm_eacces",
            P::Install,
            1,
            node,
            &[],
            "node.npm_root_permissions",
            0.6,
            || vec![env("npm_config_unsafe_perm", "true")],
        ),
        c(
            "next_build",
            P::Start,
            1,
            node,
            &[],
            "node.build_missing",
            0.85,
            || vec![replace(S::Build, "npm run build")],
        ),
        // Rust
        c(
            "cargo_edition2024",
            P::Build,
            101,
            python,
            &[
                ("rustc", "1.80.1", "/usr/bin/rustc"),
                ("rustc-1.86", "1.86.0", "/root/.cargo/bin/rustc"),
            ],
            "rust.toolchain_too_old",
            0.95,
            || vec![runtime("1.86.0"), env("RUSTUP_TOOLCHAIN", "1.86.0")],
        ),
        c(
            "cargo_msrv",
            P::Build,
            101,
            python,
            &[("rustc", "1.70.0", "/usr/bin/rustc")],
            "rust.toolchain_too_old",
            0.6,
            none,
        ),
        c(
            "openssl_sys",
            P::Build,
            101,
            python,
            &[],
            "rust.openssl_sys",
            0.85,
            none,
        ),
        // Java, Go, scripts, start
        c(
            "java_home",
            P::Build,
            1,
            python,
            &[("java", "17.0.10", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java")],
            "java.home_missing",
            0.85,
            || vec![env("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")],
        ),
        c(
            "go_main_module",
            P::Build,
            1,
            python,
            &[],
            "go.no_main_module",
            0.6,
            || {
                vec![replace(
                    S::Install,
                    "test -f go.mod || go mod init example.invalid/app; go mod tidy",
                )]
            },
        ),
        c(
            "gradlew",
            P::Build,
            126,
            |c, _| c.build = command("./gradlew build -x test"),
            &[],
            "misc.script_not_executable",
            0.9,
            || vec![replace(S::Build, "sh ./gradlew build -x test")],
        ),
        c(
            "start_exit0",
            P::Start,
            0,
            |c, _| {
                c.start = command("python main.py");
                c.evidence.push(Evidence {
                    field: "start".into(),
                    file: "README.md".into(),
                    line: 12,
                    detail: "python main.py".into(),
                    weight: 0.4,
                });
                c.evidence.push(Evidence {
                    field: "start".into(),
                    file: "Procfile".into(),
                    line: 1,
                    detail: "web: gunicorn app:app".into(),
                    weight: 0.95,
                });
            },
            &[],
            "start.exited_immediately",
            0.7,
            || vec![replace(S::Start, "gunicorn app:app")],
        ),
        c(
            "start_usage_clap",
            P::Start,
            2,
            |c, _| {
                c.language = "rust".into();
                c.package_manager = "cargo".into();
                c.start = command("cargo run");
            },
            &[],
            "start.printed_usage",
            0.75,
            || vec![replace(S::Start, "cargo run -- serve")],
        ),
        c(
            "start_usage_no_serve",
            P::Start,
            2,
            |c, _| c.start = command("python convert.py"),
            &[],
            "start.printed_usage",
            0.6,
            none,
        ),
        c(
            "uv_git_unreachable",
            P::Install,
            1,
            python,
            &[],
            "net.host_unreachable",
            0.8,
            none,
        ),
        c(
            "npm_enotfound",
            P::Install,
            1,
            node,
            &[],
            "net.host_unreachable",
            0.8,
            none,
        ),
        c(
            "fonts_unreachable",
            P::Build,
            1,
            |c, f| {
                node(c, f);
                c.build = command("npm run build");
            },
            &[],
            "net.host_unreachable",
            0.8,
            none,
        ),
    ]
}

fn request(case: &Case) -> DiagnoseRequest {
    let text = std::fs::read_to_string(format!(
        "{}/tests/logs/{}.log",
        env!("CARGO_MANIFEST_DIR"),
        case.log
    ))
    .unwrap();
    let mut component = Component {
        name: "app".into(),
        path: ".".into(),
        language: "python".into(),
        package_manager: "pip".into(),
        install: command("pip install -r requirements.txt"),
        start: command("python app.py"),
        test: command("pytest"),
        ..Component::default()
    };
    let mut files = vec!["requirements.txt".to_owned()];
    (case.setup)(&mut component, &mut files);
    DiagnoseRequest {
        phase: case.phase as i32,
        component: "app".into(),
        exit_code: case.exit_code,
        log_tail: text.lines().map(str::to_owned).collect(),
        plan: Some(RunPlan {
            components: vec![component],
            files_considered: files,
            ..RunPlan::default()
        }),
        environment: Some(Environment {
            toolchains: case
                .tools
                .iter()
                .map(|(name, version, path)| Toolchain {
                    name: (*name).into(),
                    version: (*version).into(),
                    path: (*path).into(),
                })
                .collect(),
            ..Environment::default()
        }),
        tried: Vec::new(),
        packages: std::collections::HashMap::new(),
    }
}

fn check_patch(case: &str, expect: &Expect, patch: &PlanPatch) {
    assert_eq!(patch.component, "app", "{case}: component");
    assert!(!patch.reason.is_empty(), "{case}: every patch says why");
    match (expect, patch.change.as_ref().unwrap()) {
        (Expect::Exact(want), got) => assert_eq!(want, got, "{case}"),
        (Expect::Secret(name), Change::SetEnvVar(v)) => {
            assert_eq!(v.name, *name, "{case}");
            assert_eq!(v.value.len(), 48, "{case}: secret length");
            assert!(
                v.value.chars().all(|c| c.is_ascii_alphanumeric()),
                "{case}: secret alphabet"
            );
        }
        (Expect::File(path, lines), Change::CreateFile(f)) => {
            assert_eq!(f.path, *path, "{case}");
            for line in *lines {
                assert!(
                    f.content.lines().any(|l| l == *line),
                    "{case}: {line} missing in {}",
                    f.content
                );
            }
        }
        (want, got) => panic!("{case}: expected {want:?}, got {got:?}"),
    }
}

async fn resolver() -> RuleResolver {
    RuleResolver::new(ResolverConfig::default()).unwrap()
}

#[tokio::test]
async fn every_catalog_case_gives_its_cause_confidence_and_patches() {
    let resolver = resolver().await;
    let cases = cases();
    let mut causes: Vec<&str> = cases.iter().map(|c| c.cause).collect();
    causes.sort_unstable();
    causes.dedup();
    assert!(
        causes.len() >= 25,
        "the table covers only {} failure classes",
        causes.len()
    );
    for case in &cases {
        let response = resolver.diagnose(request(case)).await.unwrap();
        let first = response
            .diagnoses
            .first()
            .unwrap_or_else(|| panic!("{}: no diagnosis", case.log));
        assert_eq!(first.cause, case.cause, "{}: {:?}", case.log, response.diagnoses);
        assert!(
            (first.confidence - case.confidence).abs() < 1e-9,
            "{}: confidence {}",
            case.log,
            first.confidence
        );
        assert_eq!(first.source, DiagnosisSource::Rule as i32);
        assert!(
            !first.summary.is_empty() && !first.matched_line.is_empty(),
            "{}",
            case.log
        );
        let expected = (case.patches)();
        assert_eq!(
            first.patches.len(),
            expected.len(),
            "{}: {:?}",
            case.log,
            first.patches
        );
        for (want, got) in expected.iter().zip(&first.patches) {
            check_patch(case.log, want, got);
        }
    }
}

fn case(log: &str) -> Case {
    cases().into_iter().find(|c| c.log == log).unwrap()
}

#[tokio::test]
async fn a_log_no_rule_knows_gives_no_diagnosis() {
    let mut case = case("py_gcc");
    case.log = "no_match";
    let response = resolver().await.diagnose(request(&case)).await.unwrap();
    assert!(response.diagnoses.is_empty(), "{:?}", response.diagnoses);
}

#[tokio::test]
async fn the_most_specific_rule_owns_a_line_and_ranks_first() {
    // "No module named 'pkg_resources'" is a missing module too, but only the
    // setuptools rule speaks for that line.
    let response = resolver()
        .await
        .diagnose(request(&case("py_pkg_resources")))
        .await
        .unwrap();
    let causes: Vec<&str> = response.diagnoses.iter().map(|d| d.cause.as_str()).collect();
    assert_eq!(causes, ["python.setuptools_missing"]);

    // Two failures on two lines: version skew outranks a missing module.
    let mut multi = case("py_markupsafe");
    multi.log = "ranked_multi";
    let response = resolver().await.diagnose(request(&multi)).await.unwrap();
    let causes: Vec<&str> = response.diagnoses.iter().map(|d| d.cause.as_str()).collect();
    assert_eq!(causes, ["python.version_skew", "python.missing_module"]);
}

#[tokio::test]
async fn tried_patches_are_not_proposed_again() {
    let resolver = resolver().await;
    let tried = |change: Change| PlanPatch {
        component: "app".into(),
        reason: "an earlier attempt".into(),
        change: Some(change),
    };

    // The only fix was tried: the diagnosis stays, without a patch.
    let mut request_ = request(&case("py_pkg_resources"));
    request_.tried.push(tried(Change::AddPackage(AddPackage {
        name: "setuptools".into(),
        version_spec: "<81".into(),
    })));
    let response = resolver.diagnose(request_).await.unwrap();
    assert_eq!(response.diagnoses[0].cause, "python.setuptools_missing");
    assert!(response.diagnoses[0].patches.is_empty());
    assert!(response.diagnoses[0].summary.contains("already tried"));

    // With one of two fixes tried, the other remains.
    let mut request_ = request(&case("py_distutils"));
    request_.tried.push(tried(Change::AddPackage(AddPackage {
        name: "setuptools".into(),
        version_spec: "<81".into(),
    })));
    let response = resolver.diagnose(request_).await.unwrap();
    let patches = &response.diagnoses[0].patches;
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].change,
        Some(Change::SetRuntimeVersion(SetRuntimeVersion {
            version: "3.11".into()
        }))
    );

    // A generated secret counts as tried by name, whatever its value was.
    let mut request_ = request(&case("env_keyerror_secret"));
    request_.tried.push(tried(Change::SetEnvVar(SetEnvVar {
        name: "SECRET_KEY".into(),
        value: "something-else".into(),
    })));
    let response = resolver.diagnose(request_).await.unwrap();
    assert!(response.diagnoses[0].patches.is_empty());
}

#[tokio::test]
async fn an_empty_request_is_refused_and_a_huge_log_is_bounded() {
    let resolver = resolver().await;
    let status = resolver.diagnose(DiagnoseRequest::default()).await.unwrap_err();
    assert!(status.to_string().contains("nothing to diagnose"));

    // 100k lines of noise, one long line, and the key line last: found, fast.
    let mut request_ = request(&case("node_eaddrinuse"));
    let mut tail: Vec<String> = (0..100_000).map(|i| format!("noise line {i}")).collect();
    tail.push("x".repeat(1_000_000));
    tail.append(&mut request_.log_tail);
    request_.log_tail = tail;
    let started = std::time::Instant::now();
    let response = resolver.diagnose(request_).await.unwrap();
    assert_eq!(response.diagnoses[0].cause, "port.in_use");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// An unreachable host names the host, in the summary the run ends with;
/// a registry's outage and a git dependency's bad ref are not that class.
#[tokio::test]
async fn an_unreachable_host_is_named_and_a_registry_outage_or_a_bad_ref_is_not_one() {
    let resolver = resolver().await;
    for (log, host) in [
        ("uv_git_unreachable", "github.com"),
        ("npm_enotfound", "download.cypress.io"),
        ("fonts_unreachable", "fonts.googleapis.com"),
    ] {
        let response = resolver.diagnose(request(&case(log))).await.unwrap();
        let d = &response.diagnoses[0];
        assert!(
            d.summary
                .contains(&format!("needs {host}, which this host cannot reach")),
            "{log}: {}",
            d.summary
        );
    }
    for log in ["npm_registry_down", "git_dep_bad_ref"] {
        let mut case = case("npm_enotfound");
        case.log = log;
        let response = resolver.diagnose(request(&case)).await.unwrap();
        assert!(
            response.diagnoses.iter().all(|d| !d.cause.starts_with("net.")),
            "{log}: {:?}",
            response.diagnoses
        );
    }
}

#[tokio::test]
async fn a_start_that_exits_zero_without_a_candidate_is_diagnosed_without_a_patch() {
    let response = resolver()
        .await
        .diagnose(DiagnoseRequest {
            phase: Phase::Start as i32,
            component: "cli".into(),
            exit_code: 0,
            log_tail: vec!["usage: tool [-h] {sync,serve}".into()],
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    let d = &response.diagnoses[0];
    assert_eq!(d.cause, "start.exited_immediately");
    assert!(d.patches.is_empty());
    assert!((d.confidence - 0.5).abs() < 1e-9);
    assert_eq!(d.matched_line, "usage: tool [-h] {sync,serve}");
}

/// Old code against today's release of an unpinned dependency: a name the
/// installed distribution no longer has. No table knows the pair; the
/// environment says which distribution ships the module and at which
/// version, and the release line below it is tried, then the one below
/// that.
#[tokio::test]
async fn a_name_an_installed_distribution_lost_asks_for_its_earlier_release_line() {
    let resolver = resolver().await;
    let mut request_ = request(&case("py_werkzeug"));
    request_.log_tail = std::fs::read_to_string(format!(
        "{}/tests/logs/py_skew_unlisted.log",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect();

    // Without knowing the environment, nothing is guessed.
    let response = resolver.diagnose(request_.clone()).await.unwrap();
    assert!(
        response.diagnoses.iter().all(|d| d.patches.is_empty()),
        "{:?}",
        response.diagnoses
    );

    request_.packages = [
        ("wtforms".to_owned(), "WTForms==3.2.1".to_owned()),
        ("flask".to_owned(), "Flask==3.1.2".to_owned()),
    ]
    .into();
    let response = resolver.diagnose(request_.clone()).await.unwrap();
    let first = &response.diagnoses[0];
    assert_eq!(first.cause, "python.version_skew");
    assert!(first.summary.contains("WTForms 3.2.1"), "{}", first.summary);
    assert_eq!(first.patches.len(), 1);
    check_patch("py_skew_unlisted", &add("WTForms", "<3"), &first.patches[0]);

    // Still missing in 2.x: one release line further down.
    request_.tried.push(first.patches[0].clone());
    request_
        .packages
        .insert("wtforms".into(), "WTForms==2.3.3".into());
    let response = resolver.diagnose(request_.clone()).await.unwrap();
    check_patch(
        "py_skew_unlisted",
        &add("WTForms", "<2"),
        &response.diagnoses[0].patches[0],
    );

    // A 0.x line steps by minor; an attribute removed from a module is the
    // same class; the standard library and the repository's own modules are
    // not in the environment, and get no patch.
    request_.tried.clear();
    request_.log_tail =
        vec!["AttributeError: module 'jose.jwt' has no attribute 'get_unverified_headers'".into()];
    request_
        .packages
        .insert("jose".into(), "python-jose==0.14.2".into());
    let response = resolver.diagnose(request_.clone()).await.unwrap();
    check_patch(
        "py_skew_attr",
        &add("python-jose", "<0.14"),
        &response.diagnoses[0].patches[0],
    );
    // A third-party Django app's system check fails: its release line below.
    request_.log_tail = std::fs::read_to_string(format!(
        "{}/tests/logs/django_package_check.log",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect();
    request_
        .packages
        .insert("treebeard".into(), "django-treebeard==5.3.1".into());
    let response = resolver.diagnose(request_.clone()).await.unwrap();
    check_patch(
        "django_package_check",
        &add("django-treebeard", "<5"),
        &response.diagnoses[0].patches[0],
    );
    request_.log_tail = vec!["AttributeError: module 'settings' has no attribute 'DEBUG'".into()];
    let response = resolver.diagnose(request_).await.unwrap();
    assert!(
        response.diagnoses.iter().all(|d| d.patches.is_empty()),
        "{:?}",
        response.diagnoses
    );
}
