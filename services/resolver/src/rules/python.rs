//! Python: missing modules and the distributions that provide them,
//! setuptools and distutils, interpreter/pin mismatches, version skew
//! between Flask's family of packages, missing entry points, Flask and
//! Django settings.

use reporunner_proto::{agents::resolver::v1::Phase, common::v1::CommandSlot};

use super::{Context, Finding, Hit, Rule};
use crate::versions::{Constraint, Version, pythons};

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule {
            cause: "python.flask_app_option",
            pattern: r"No such option: --app\b",
            rank: 80,
            confidence: 0.9,
            phases: &[Phase::Start, Phase::Setup],
            check: flask_app_option,
        },
        Rule {
            cause: "python.setuptools_missing",
            pattern: r"No module named '?(?:pkg_resources|setuptools)\b|Cannot import 'setuptools\.build_meta'",
            rank: 90,
            confidence: 0.95,
            phases: &[],
            check: setuptools_missing,
        },
        Rule {
            cause: "python.distutils_removed",
            pattern: r"No module named '?distutils\b",
            rank: 90,
            confidence: 0.9,
            phases: &[],
            check: distutils_removed,
        },
        Rule {
            cause: "python.missing_module",
            pattern: r"(?:ModuleNotFoundError: No module named '(?P<m>[A-Za-z_][A-Za-z0-9_.]*)'|ImportError: No module named '?(?P<n>[A-Za-z_][A-Za-z0-9_.]*))",
            rank: 50,
            confidence: 0.85,
            phases: &[],
            check: missing_module,
        },
        Rule {
            cause: "python.version_skew",
            pattern: r"ImportError: cannot import name '(?P<name>[A-Za-z0-9_]+)' from '(?P<module>[A-Za-z0-9_.]+)'",
            rank: 80,
            confidence: 0.9,
            phases: &[],
            check: version_skew,
        },
        Rule {
            cause: "python.version_skew",
            pattern: r"AttributeError: module '(?P<module>[A-Za-z0-9_.]+)' has no attribute '(?P<name>[A-Za-z0-9_]+)'",
            rank: 50,
            confidence: 0.7,
            phases: &[],
            check: version_skew,
        },
        Rule {
            cause: "python.version_skew",
            pattern: r"\((?P<module>[a-z_][a-z0-9_]{1,40})\.E[0-9]{3}\) ",
            rank: 55,
            confidence: 0.65,
            phases: &[],
            check: failing_package_check,
        },
        Rule {
            cause: "python.numpy_alias_removed",
            pattern: r"module 'numpy' has no attribute '(?P<alias>float|int|bool|object|complex|str|long|unicode)'",
            rank: 80,
            confidence: 0.9,
            phases: &[],
            check: numpy_alias,
        },
        Rule {
            cause: "python.interpreter_mismatch",
            pattern: r"requires a different Python: (?P<cur>[0-9]+\.[0-9]+(?:\.[0-9]+)?) not in '(?P<spec>[^']+)'",
            rank: 85,
            confidence: 0.9,
            phases: &[],
            check: different_python,
        },
        Rule {
            cause: "python.interpreter_mismatch",
            pattern: r"current Python version \((?P<cur>[0-9]+\.[0-9]+(?:\.[0-9]+)?)\) does not satisfy Python(?P<spec>[<>=!~][^ ]*)",
            rank: 85,
            confidence: 0.9,
            phases: &[],
            check: different_python,
        },
        Rule {
            cause: "python.interpreter_mismatch",
            pattern: r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) (?P<pkg>[A-Za-z0-9][A-Za-z0-9._-]{0,99})(?:\[[^\]]*\])?==(?P<ver>[0-9]+(?:\.[0-9]+)*)",
            rank: 84,
            confidence: 0.75,
            phases: &[],
            check: no_distribution_for_pin,
        },
        Rule {
            cause: "python.interpreter_mismatch",
            pattern: r#"no installed Python satisfies the constraint "(?P<spec>[^"]{1,40})""#,
            rank: 86,
            confidence: 0.85,
            phases: &[],
            check: pinned_patch_release,
        },
        Rule {
            cause: "python.interpreter_too_new",
            pattern: r"cannot import name '(?P<coll>Iterator|Iterable|Mapping|MutableMapping|Sequence|MutableSequence|Callable|Set|MutableSet|Hashable|Sized|Container|Generator|Awaitable|Coroutine|AsyncIterator|AsyncIterable|KeysView|ItemsView|ValuesView)' from 'collections'|module 'collections' has no attribute '(?P<attr>Iterator|Iterable|Mapping|MutableMapping|Sequence|MutableSequence|Callable|Set|MutableSet|Hashable)'|module 'inspect' has no attribute '(?P<insp>getargspec|formatargspec)'|module 'asyncio' has no attribute '(?P<aio>coroutine)'|No module named '(?P<gone312>imp|asynchat|asyncore|smtpd)'|No module named '(?P<gone313>cgi|cgitb|pipes|crypt|telnetlib|nntplib|imghdr|sndhdr|audioop|chunk|mailcap|nis|spwd|sunau|uu|xdrlib|msilib|ossaudiodev)'|SyntaxError: (?P<genexp>Generator expression must be parenthesized)|RuntimeError: (?P<classcell>__class__ not set defining)",
            rank: 92,
            confidence: 0.85,
            phases: &[],
            check: stdlib_removed,
        },
        Rule {
            cause: "python.interpreter_too_new",
            pattern: r"Failed to build `?(?P<pkg>[A-Za-z0-9][A-Za-z0-9._-]{0,99})(?:==(?P<ver>[0-9][0-9A-Za-z.]*))?`?|Failed building wheel for (?P<wheel>[A-Za-z0-9][A-Za-z0-9._-]{0,99})|hint: `(?P<hint>[A-Za-z0-9][A-Za-z0-9._-]{0,99})` \(v[0-9][0-9A-Za-z.]*\) was included because",
            rank: 45,
            confidence: 0.7,
            phases: &[Phase::Install, Phase::Build],
            check: extension_build_failed,
        },
        Rule {
            cause: "python.command_missing",
            pattern: r"\b(?P<cmd>gunicorn|uvicorn|flask|celery|daphne|hypercorn|waitress-serve|pytest|alembic|streamlit)(?:: (?:command )?not found|'?: No such file or directory|: executable file not found)",
            rank: 60,
            confidence: 0.85,
            phases: &[],
            check: command_missing,
        },
        Rule {
            cause: "flask.app_not_found",
            pattern: r"Could not locate a Flask application|Failed to find Flask application or factory",
            rank: 70,
            confidence: 0.8,
            phases: &[],
            check: flask_app,
        },
        Rule {
            cause: "django.disallowed_host",
            pattern: r"DisallowedHost|Invalid HTTP_HOST header",
            rank: 70,
            confidence: 0.8,
            phases: &[],
            check: disallowed_host,
        },
        Rule {
            cause: "django.settings_not_configured",
            pattern: r"define the environment variable DJANGO_SETTINGS_MODULE",
            rank: 70,
            confidence: 0.8,
            phases: &[],
            check: django_settings,
        },
        Rule {
            cause: "python.pip_as_root",
            pattern: r"Running pip as the 'root' user",
            rank: 5,
            confidence: 0.3,
            phases: &[Phase::Install],
            check: pip_root,
        },
    ]
}

fn setuptools_missing(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let reason = "pkg_resources comes with setuptools, which fresh venvs (uv's) lack; setuptools 81 drops pkg_resources";
    Some(
        Finding::new("setuptools (pkg_resources) is not installed in the environment")
            .patch(ctx.add_package("setuptools", "<81", reason)),
    )
}

fn distutils_removed(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let mut finding = Finding::new("distutils was removed from Python 3.12; old packages still import it")
        .patch(ctx.add_package(
            "setuptools",
            "<81",
            "setuptools provides a distutils shim on Python 3.12+",
        ));
    if let Some(older) = pythons(ctx.toolchains)
        .into_iter()
        .find(|p| p.version < Version(3, 12, 0))
    {
        let version = minor(older.version);
        finding = finding.patch(ctx.set_runtime(
            &version,
            format!("Python {version} (installed) still ships distutils"),
        ));
    }
    Some(finding)
}

/// Import names whose distribution has another name.
const DISTRIBUTIONS: &[(&str, &str)] = &[
    ("yaml", "PyYAML"),
    ("cv2", "opencv-python-headless"),
    ("PIL", "Pillow"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
    ("bs4", "beautifulsoup4"),
    ("dotenv", "python-dotenv"),
    ("jwt", "PyJWT"),
    ("psycopg2", "psycopg2-binary"),
    ("MySQLdb", "mysqlclient"),
    ("dateutil", "python-dateutil"),
    ("attr", "attrs"),
    ("Crypto", "pycryptodome"),
    ("Cryptodome", "pycryptodomex"),
    ("magic", "python-magic"),
    ("serial", "pyserial"),
    ("usb", "pyusb"),
    ("OpenSSL", "pyOpenSSL"),
    ("docx", "python-docx"),
    ("pptx", "python-pptx"),
    ("telegram", "python-telegram-bot"),
    ("discord", "discord.py"),
    ("jose", "python-jose"),
    ("multipart", "python-multipart"),
    ("socketio", "python-socketio"),
    ("engineio", "python-engineio"),
    ("slugify", "python-slugify"),
    ("Levenshtein", "python-Levenshtein"),
    ("fitz", "PyMuPDF"),
    ("zmq", "pyzmq"),
    ("gi", "PyGObject"),
    ("rest_framework", "djangorestframework"),
    ("corsheaders", "django-cors-headers"),
    ("environ", "django-environ"),
    ("decouple", "python-decouple"),
    ("debug_toolbar", "django-debug-toolbar"),
    ("crispy_forms", "django-crispy-forms"),
    ("django_filters", "django-filter"),
    ("storages", "django-storages"),
    ("ldap", "python-ldap"),
    ("Bio", "biopython"),
    ("nacl", "PyNaCl"),
    ("kafka", "kafka-python"),
    ("git", "GitPython"),
    ("github", "PyGithub"),
    ("googleapiclient", "google-api-python-client"),
    ("websocket", "websocket-client"),
    ("dns", "dnspython"),
    ("sentry_sdk", "sentry-sdk"),
    ("faiss", "faiss-cpu"),
    ("cairo", "pycairo"),
    ("grpc", "grpcio"),
    ("snappy", "python-snappy"),
    ("markdown", "Markdown"),
    ("pydantic_settings", "pydantic-settings"),
    ("flask_sqlalchemy", "Flask-SQLAlchemy"),
    ("flask_migrate", "Flask-Migrate"),
    ("flask_cors", "Flask-Cors"),
    ("flask_login", "Flask-Login"),
    ("flask_wtf", "Flask-WTF"),
];

/// Import names under a namespace package, matched by prefix.
const NAMESPACED: &[(&str, &str)] = &[
    ("google.protobuf", "protobuf"),
    ("google.cloud.storage", "google-cloud-storage"),
    ("google.generativeai", "google-generativeai"),
    ("google.auth", "google-auth"),
    ("google.oauth2", "google-auth"),
];

/// Standard-library modules that a Python built without a system library lacks.
const STDLIB_NATIVE: &[(&str, &str)] = &[
    ("tkinter", "python3-tk"),
    ("_tkinter", "python3-tk"),
    ("_sqlite3", "libsqlite3-dev"),
    ("_ctypes", "libffi-dev"),
    ("_ssl", "libssl-dev"),
    ("_bz2", "libbz2-dev"),
    ("_lzma", "liblzma-dev"),
];

/// The distribution that provides `module` (a submodule maps by its top level).
pub(crate) fn distribution(module: &str) -> String {
    if let Some((_, dist)) = NAMESPACED
        .iter()
        .find(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}.")))
    {
        return (*dist).to_owned();
    }
    let top = module.split('.').next().unwrap_or(module);
    DISTRIBUTIONS
        .iter()
        .find(|(import, _)| *import == top)
        .map_or_else(|| top.to_owned(), |(_, dist)| (*dist).to_owned())
}

fn missing_module(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let module = match hit.get("m") {
        "" => hit.get("n"),
        m => m,
    };
    let top = module.split('.').next().unwrap_or(module);
    if top.is_empty() {
        return None;
    }
    if let Some((_, debian)) = STDLIB_NATIVE.iter().find(|(m, _)| *m == top) {
        return Some(
            Finding::new(format!(
                "the Python interpreter was built without `{top}` (Debian package {debian}); use another interpreter"
            ))
            .confidence(0.7),
        );
    }
    let own = ctx.plan.is_some_and(|p| {
        let package = ctx.component_file(&format!("{top}/__init__.py"));
        let single = ctx.component_file(&format!("{top}.py"));
        p.files_considered.iter().any(|f| *f == package || *f == single)
    });
    if own {
        return Some(
            Finding::new(format!(
                "`{top}` is the repository's own package, but it is not on the import path"
            ))
            .patch(ctx.set_env(
                "PYTHONPATH",
                ".",
                format!("`{top}` lives in the component's directory"),
            ))
            .confidence(0.7),
        );
    }
    let dist = distribution(module);
    let summary = if dist == top {
        format!("the Python module `{module}` is not installed")
    } else {
        format!("the Python module `{module}` is not installed (it comes with the distribution {dist})")
    };
    Some(Finding::new(summary).patch(ctx.add_package(&dist, "", format!("provides the module `{top}`"))))
}

/// (module, imported name, distribution, upper bound, why).
const SKEW: &[(&str, &str, &str, &str)] = &[
    ("werkzeug.security", "safe_str_cmp", "werkzeug", "<2.1"),
    ("werkzeug.urls", "url_quote", "werkzeug", "<3"),
    ("werkzeug.urls", "url_parse", "werkzeug", "<3"),
    ("werkzeug.urls", "url_encode", "werkzeug", "<3"),
    ("werkzeug.urls", "url_decode", "werkzeug", "<3"),
    ("werkzeug", "cached_property", "werkzeug", "<1.0"),
    ("werkzeug", "secure_filename", "werkzeug", "<1.0"),
    ("markupsafe", "soft_unicode", "markupsafe", "<2.1"),
    ("jinja2", "escape", "jinja2", "<3.1"),
    ("jinja2", "Markup", "jinja2", "<3.1"),
    ("jinja2", "contextfunction", "jinja2", "<3.1"),
    ("jinja2", "environmentfilter", "jinja2", "<3.1"),
    ("itsdangerous", "json", "itsdangerous", "<2.1"),
    (
        "itsdangerous",
        "TimedJSONWebSignatureSerializer",
        "itsdangerous",
        "<2.1",
    ),
    ("flask", "_app_ctx_stack", "flask", "<2.3"),
    ("flask", "_request_ctx_stack", "flask", "<2.3"),
    ("flask.json", "JSONEncoder", "flask", "<2.3"),
    ("django.utils.encoding", "force_text", "django", "<4"),
    ("django.utils.encoding", "smart_text", "django", "<4"),
    ("django.conf.urls", "url", "django", "<4"),
    ("django.utils.translation", "ugettext_lazy", "django", "<4"),
    ("django.utils.translation", "ugettext", "django", "<4"),
    ("pydantic", "BaseSettings", "pydantic", "<2"),
    ("sqlalchemy", "_BindParamClause", "sqlalchemy", "<1.4"),
];

fn version_skew(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let (module, name) = (hit.get("module"), hit.get("name"));
    if let Some((_, _, dist, bound)) = SKEW
        .iter()
        .find(|(m, n, _, _)| m.eq_ignore_ascii_case(module) && *n == name)
    {
        return Some(
            Finding::new(format!(
                "`{name}` was removed from {module}; the code needs an older {dist} ({dist}{bound})"
            ))
            .patch(ctx.add_package(
                dist,
                bound,
                format!("{dist}{bound} still has `{module}.{name}`"),
            )),
        );
    }
    // Any other name an installed distribution no longer has: the code was
    // written against an older release line. The one below the installed
    // one is tried (a major, or a minor of a 0.x); a later attempt, if the
    // name is still missing, goes one further down.
    let (dist, version) = ctx.package_of(module)?;
    let bound = below_release_line(version)?;
    Some(
        Finding::new(format!(
            "`{name}` is not in {module} as {dist} {version} ships it; the code was written against an older \
             {dist} ({dist}{bound})"
        ))
        .confidence(0.7)
        .patch(ctx.add_package(
            dist,
            &bound,
            format!("{dist} {version} has no `{module}.{name}`; its earlier release line may"),
        )),
    )
}

/// A Django system check of a third-party app fails (`(treebeard.E001)`):
/// a newer release of the app checks for what the code, written against an
/// older one, does not do. The app's release line below the installed one
/// is tried. Django's own checks (`fields.E304`, `admin.E108`) name no
/// installed module, and get no patch.
fn failing_package_check(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let module = hit.get("module");
    let (dist, version) = ctx.package_of(module)?;
    if dist.eq_ignore_ascii_case("django") {
        return None;
    }
    let bound = below_release_line(version)?;
    Some(
        Finding::new(format!(
            "a system check of {dist} {version} fails ({module}.E…); the code was written against an older \
             {dist} ({dist}{bound})"
        ))
        .confidence(0.65)
        .patch(ctx.add_package(
            dist,
            &bound,
            format!("{dist} {version} adds a check the code fails; its earlier release line may not have it"),
        )),
    )
}

/// The bound below `version`'s release line: `<3` for 3.2.1, `<0.14` for
/// 0.14.1; none for 0.0.x.
fn below_release_line(version: &str) -> Option<String> {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
            .ok()
    });
    let major = parts.next()??;
    if major > 0 {
        return Some(format!("<{major}"));
    }
    let minor = parts.next()??;
    (minor > 0).then(|| format!("<0.{minor}"))
}

fn numpy_alias(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let alias = hit.get("alias");
    Some(
        Finding::new(format!(
            "`np.{alias}` was removed in numpy 1.24; the code needs numpy<1.24"
        ))
        .patch(ctx.add_package(
            "numpy",
            "<1.24",
            format!("numpy 1.24 removed the alias np.{alias}"),
        )),
    )
}

fn minor(v: Version) -> String {
    format!("{}.{}", v.0, v.1)
}

fn different_python(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let current = Version::parse(hit.get("cur"))?;
    let spec = hit.get("spec");
    let constraint = Constraint::parse(spec)?;
    let summary = format!("a package requires Python {spec}, and the interpreter is {current}");
    let choice = pythons(ctx.toolchains)
        .into_iter()
        .find(|p| minor(p.version) != minor(current) && constraint.allows(p.version));
    Some(match choice {
        Some(p) => {
            let version = minor(p.version);
            Finding::new(summary).patch(ctx.set_runtime(
                &version,
                format!("Python {} is installed and satisfies {spec}", p.version),
            ))
        }
        None => Finding::new(format!("{summary}; no installed interpreter satisfies it")).confidence(0.6),
    })
}

/// The repository pins an exact interpreter (`.python-version` 3.12.2,
/// `runtime.txt`) the host lacks; another patch release of the same minor is
/// installed and is compatible by CPython's policy.
fn pinned_patch_release(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let spec = hit.get("spec").trim();
    let exact = spec.trim_start_matches("==").trim_end_matches(".*");
    let wanted = Version::parse(exact)?;
    let summary = format!("the repository pins Python {exact}, which is not installed");
    let same_minor = pythons(ctx.toolchains)
        .into_iter()
        .find(|p| minor(p.version) == minor(wanted));
    Some(match same_minor {
        Some(p) if exact.matches('.').count() == 2 => {
            let version = minor(wanted);
            Finding::new(summary).patch(ctx.set_runtime(
                &version,
                format!(
                    "Python {} is installed; patch releases of {version} are compatible",
                    p.version
                ),
            ))
        }
        _ => Finding::new(format!(
            "{summary}; no installed interpreter of that minor version"
        ))
        .confidence(0.6),
    })
}

/// The interpreter minor (3, N) the failing log ran under: a venv's
/// `lib/python3.N/`, headers' `include/python3.N/`, or the dependency agent's
/// `python 3.N.P at ...` line.
fn python_in_log(ctx: &Context<'_>) -> Option<Version> {
    let found = ctx.lines.iter().rev().find_map(|line| {
        for marker in ["/python3.", "python 3."] {
            if let Some(at) = line.find(marker) {
                let rest = &line[at + marker.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(minor) = digits.parse::<u64>() {
                    return Some(Version(3, minor, 0));
                }
            }
        }
        None
    });
    found.or_else(|| {
        // The interpreter the plan asked for, when the log does not say.
        let constraint = ctx.component?.runtime.as_ref()?.version_constraint.clone();
        let exact = constraint.trim_start_matches("==").trim_end_matches(".*");
        Version::parse(exact).map(|v| Version(v.0, v.1, 0))
    })
}

/// The newest installed Python older than `below` that the component's own
/// constraint allows (an unparsable or unmet constraint is ignored: the
/// repository's code already says it needs an older interpreter).
fn older_python<'t>(ctx: &Context<'t>, below: Version) -> Option<crate::versions::Installed<'t>> {
    let constraint = ctx
        .component
        .and_then(|c| c.runtime.as_ref())
        .map(|r| r.version_constraint.trim())
        .filter(|c| !c.is_empty() && !c.starts_with("=="))
        .and_then(Constraint::parse);
    let older: Vec<_> = pythons(ctx.toolchains)
        .into_iter()
        .filter(|p| (p.version.0, p.version.1) < (below.0, below.1))
        .collect();
    let allowed = older
        .iter()
        .position(|p| constraint.as_ref().is_none_or(|c| c.allows(p.version)));
    match allowed {
        Some(i) => older.into_iter().nth(i),
        None => older.into_iter().next(),
    }
}

fn stdlib_removed(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let (what, removed_in) = if !hit.get("coll").is_empty() || !hit.get("attr").is_empty() {
        let name = [hit.get("coll"), hit.get("attr")].concat();
        (format!("`collections.{name}` (moved to collections.abc)"), 10)
    } else if !hit.get("insp").is_empty() {
        (format!("`inspect.{}`", hit.get("insp")), 11)
    } else if !hit.get("aio").is_empty() {
        ("`@asyncio.coroutine`".to_owned(), 11)
    } else if !hit.get("gone312").is_empty() {
        (format!("the `{}` module", hit.get("gone312")), 12)
    } else if !hit.get("gone313").is_empty() {
        (format!("the `{}` module", hit.get("gone313")), 13)
    } else if !hit.get("classcell").is_empty() {
        // Metaclasses that drop `__classcell__` (Django < 1.11): a
        // DeprecationWarning until 3.7, an error since 3.8.
        ("metaclasses that drop `__classcell__`".to_owned(), 8)
    } else {
        // `f(x for x in y, )` in old packages (Django < 1.11.17).
        ("unparenthesized generator arguments".to_owned(), 7)
    };
    let removed = Version(3, removed_in, 0);
    let summary = format!("the code uses {what}, which Python 3.{removed_in} removed");
    if python_in_log(ctx).is_some_and(|current| (current.0, current.1) < (3, removed_in)) {
        // Not the interpreter's doing.
        return None;
    }
    Some(match older_python(ctx, removed) {
        Some(p) => Finding::new(summary).patch(ctx.set_runtime(
            &minor(p.version),
            format!(
                "Python {} is the newest installed interpreter that still has {what}",
                p.version
            ),
        )),
        None => Finding::new(format!("{summary}; no older interpreter is installed")).confidence(0.6),
    })
}

/// A pinned package with a C extension failed to build: old releases do not
/// compile against newer CPython headers and have no wheels for them. An
/// older interpreter that the project allows usually has wheels.
fn extension_build_failed(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let package = [hit.get("pkg"), hit.get("wheel"), hit.get("hint")].concat();
    let compiled = ctx.lines.iter().any(|l| {
        l.contains("/include/python3.")
            || l.contains("Python.h")
            || l.contains("error: command '") && (l.contains("gcc") || l.contains("cc'"))
    });
    if !compiled {
        return None;
    }
    let current = python_in_log(ctx)?;
    let summary = format!(
        "{package} does not compile against the Python {}.{} headers",
        current.0, current.1
    );
    let choice = older_python(ctx, current)?;
    Some(Finding::new(summary).patch(ctx.set_runtime(
        &minor(choice.version),
        format!(
            "Python {} is installed and older; the pinned {package} has wheels or builds there",
            choice.version
        ),
    )))
}

/// (distribution, major, minor, the newest Python minor it has wheels for).
const NEWEST_PYTHON: &[(&str, u64, u64, u64)] = &[
    ("numpy", 1, 16, 7),
    ("numpy", 1, 17, 8),
    ("numpy", 1, 18, 8),
    ("numpy", 1, 19, 9),
    ("numpy", 1, 20, 9),
    ("numpy", 1, 21, 10),
    ("numpy", 1, 22, 10),
    ("numpy", 1, 23, 11),
    ("numpy", 1, 24, 11),
    ("numpy", 1, 25, 11),
    ("numpy", 1, 26, 12),
    ("pandas", 1, 0, 8),
    ("pandas", 1, 1, 9),
    ("pandas", 1, 2, 9),
    ("pandas", 1, 3, 10),
    ("pandas", 1, 4, 10),
    ("pandas", 1, 5, 11),
    ("pandas", 2, 0, 11),
    ("pandas", 2, 1, 12),
    ("scipy", 1, 5, 9),
    ("scipy", 1, 6, 9),
    ("scipy", 1, 7, 10),
    ("scipy", 1, 8, 10),
    ("scipy", 1, 9, 11),
    ("scipy", 1, 10, 11),
    ("scipy", 1, 11, 12),
];

fn no_distribution_for_pin(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let (package, pinned) = (hit.get("pkg"), hit.get("ver"));
    let version = Version::parse(pinned)?;
    let newest = NEWEST_PYTHON
        .iter()
        .find(|(p, major, minor, _)| {
            p.eq_ignore_ascii_case(package) && *major == version.0 && *minor == version.1
        })
        .map(|(_, _, _, py)| *py);
    let summary = format!("{package}=={pinned} has no distribution for this Python");
    if let Some(newest) = newest {
        let fits = pythons(ctx.toolchains)
            .into_iter()
            .find(|p| p.version.0 == 3 && p.version.1 <= newest && p.version.1 >= newest.saturating_sub(3));
        if let Some(p) = fits {
            let v = minor(p.version);
            return Some(
                Finding::new(format!("{summary}: it supports Python up to 3.{newest}")).patch(
                    ctx.set_runtime(
                        &v,
                        format!(
                            "{package} {pinned} has wheels up to Python 3.{newest}; Python {} is installed",
                            p.version
                        ),
                    ),
                ),
            );
        }
    }
    Some(
        Finding::new(format!("{summary}, and no installed interpreter fits the pin")).patch(ctx.relax_pin(
            package,
            &format!("=={pinned}"),
            &format!(">={pinned}"),
            format!("a newer {package} release has distributions for the installed Python"),
        )),
    )
}

/// Flask before 2.2 has no `--app` option: the app goes in `FLASK_APP`,
/// which every Flask reads.
fn flask_app_option(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let slot = ctx.phase_slot();
    let slot = if slot == CommandSlot::Unspecified {
        CommandSlot::Start
    } else {
        slot
    };
    let run = ctx.command(slot)?.run.trim().to_owned();
    let words: Vec<&str> = run.split_whitespace().collect();
    let at = words.windows(2).position(|w| w[0] == "--app")?;
    let app = words[at + 1];
    if !app
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:/()-".contains(c))
    {
        return None;
    }
    let rest: Vec<&str> = words[..at].iter().chain(&words[at + 2..]).copied().collect();
    Some(
        Finding::new("this Flask is older than 2.2 and has no --app option")
            .patch(ctx.set_env("FLASK_APP", app, "Flask before 2.2 finds the app in FLASK_APP"))
            .patch(ctx.replace(slot, &rest.join(" "), "the same command without --app")),
    )
}

/// Commands and the distributions that install them.
const PYTHON_COMMANDS: &[(&str, &str)] = &[
    ("gunicorn", "gunicorn"),
    ("uvicorn", "uvicorn"),
    ("flask", "Flask"),
    ("celery", "celery"),
    ("daphne", "daphne"),
    ("hypercorn", "hypercorn"),
    ("waitress-serve", "waitress"),
    ("pytest", "pytest"),
    ("alembic", "alembic"),
    ("streamlit", "streamlit"),
];

fn command_missing(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let command = hit.get("cmd");
    let (_, dist) = PYTHON_COMMANDS.iter().find(|(c, _)| *c == command)?;
    Some(
        Finding::new(format!(
            "the command `{command}` is not installed in the environment"
        ))
        .patch(ctx.add_package(dist, "", format!("installs the `{command}` command"))),
    )
}

fn flask_app(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let candidates = [
        "app.py",
        "wsgi.py",
        "application.py",
        "main.py",
        "run.py",
        "server.py",
    ];
    let file = ctx.plan.and_then(|p| {
        candidates
            .iter()
            .find(|c| p.files_considered.iter().any(|f| *f == ctx.component_file(c)))
    });
    let value = file.map_or("app", |f| f.trim_end_matches(".py"));
    Some(
        Finding::new("Flask could not find the application to run; FLASK_APP is not set").patch(ctx.set_env(
            "FLASK_APP",
            value,
            match file {
                Some(f) => format!("{f} is the likely application module"),
                None => "the usual module name; no app.py or wsgi.py was seen".to_owned(),
            },
        )),
    )
}

fn disallowed_host(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let reason = "Repo Runner reaches the app on localhost and 127.0.0.1";
    let declared: Vec<&str> = ctx
        .component
        .map(|c| {
            c.env
                .iter()
                .map(|e| e.name.as_str())
                .filter(|n| n.contains("ALLOWED_HOSTS"))
                .collect()
        })
        .unwrap_or_default();
    let finding = Finding::new("Django refused the request's Host header (ALLOWED_HOSTS)");
    Some(if declared.is_empty() {
        finding
            .patch(ctx.set_env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]", reason))
            .patch(ctx.set_env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]", reason))
            .confidence(0.6)
    } else {
        finding.patches(
            declared
                .into_iter()
                .map(|n| ctx.set_env(n, "localhost,127.0.0.1,[::1]", reason)),
        )
    })
}

fn django_settings(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let module = ctx.plan.and_then(|p| {
        let prefix = ctx.component_file("");
        p.files_considered.iter().find_map(|f| {
            let relative = f.strip_prefix(prefix.as_str())?;
            let dotted = relative.strip_suffix("/settings.py")?;
            (!dotted.is_empty() && !dotted.contains(".."))
                .then(|| format!("{}.settings", dotted.replace('/', ".")))
        })
    });
    let finding = Finding::new("Django settings are not configured: DJANGO_SETTINGS_MODULE is not set");
    Some(match module {
        Some(m) => {
            let reason = format!(
                "{} holds the settings",
                ctx.component_file(&format!("{}.py", m.replace('.', "/")))
            );
            finding.patch(ctx.set_env("DJANGO_SETTINGS_MODULE", &m, reason))
        }
        None => finding.confidence(0.5),
    })
}

fn pip_root(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(
        Finding::new("pip runs as root; its warning is harmless but noisy").patch(ctx.set_env(
            "PIP_ROOT_USER_ACTION",
            "ignore",
            "installs go into the component's own environment",
        )),
    )
}
