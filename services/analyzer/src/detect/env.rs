//! Env vars: templates (.env.example, .env.sample, ...), app.json, getenv
//! calls in code (os.environ/os.getenv, process.env.X, std::env::var,
//! os.Getenv, System.getenv), values the CI workflows give the variables the
//! code reads, and the backing services env names and dependency names
//! imply. (Compose `environment:` and `env_file:` are read by `compose.rs`,
//! devcontainer `containerEnv` by `docker.rs`.)

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::{BackingServiceKind, EnvVar};

use super::{
    util::{line_of, source_files},
    weight,
};
use crate::{
    draft::{Draft, backing_from_dep, backing_from_env, ev, is_secret_name},
    index::{RepoIndex, join},
};

const TEMPLATES: &[&str] = &[
    ".env.example",
    ".env.sample",
    ".env.template",
    ".env.dist",
    "env.example",
    ".env.local.example",
    ".env.development.example",
    "example.env",
    "sample.env",
    ".env.defaults",
    ".env",
];

static PY_GET: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?:os\.environ\.get|os\.getenv|environ\.get|env\.str|env\.int|env\.bool|config)\(\s*['"]([A-Z][A-Z0-9_]*)['"]\s*(?:,\s*(?:default\s*=\s*)?(?:['"]([^'"]*)['"]|(\d+)|(True|False)))?"#).ok()
});
static PY_INDEX: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"os\.environ\[\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\]"#).ok());
static JS_ENV: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"process\.env(?:\.([A-Z][A-Z0-9_]*)|\[\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\])(?:\s*(?:\|\||\?\?)\s*(?:['"`]([^'"`]*)['"`]|(\d+)))?"#).ok()
});
static RS_ENV: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"env::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"\s*\)"#).ok());
static GO_ENV: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"os\.(?:Getenv|LookupEnv)\(\s*"([A-Z][A-Z0-9_]*)"\s*\)"#).ok());
static JAVA_ENV: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"System\.getenv\(\s*"([A-Z][A-Z0-9_]*)"\s*\)"#).ok());

/// Template values such as "changeme" or "<your-key>" mean "supply your own".
fn is_template_value(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    l.is_empty()
        || l.starts_with('<') && l.ends_with('>')
        || l.contains("your")
        || l.contains("changeme")
        || l.contains("change_me")
        || l.contains("replace")
        || l.contains("xxxx")
        || l == "..."
        || l == "todo"
        || l.starts_with("sk-...")
}

/// Ignored names: set by the runner or the shell, not by the user.
fn ignored(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "USER" | "PWD" | "SHELL" | "TERM" | "CI" | "LANG" | "TZ" | "HOSTNAME"
    )
}

pub fn apply(idx: &RepoIndex, d: &mut Draft) {
    let dir = d.dir().to_owned();
    templates(idx, d, &dir);
    app_json(idx, d, &dir);
    code_reads(idx, d, &dir);
    ci_values(idx, d);
    dependency_backing(d);
    if d.names_postgres_scheme
        && let Some(postgres) =
            d.c.backing_services
                .iter_mut()
                .find(|b| b.kind == BackingServiceKind::Postgresql as i32)
    {
        // Heroku-style code keys on `postgres://` (`startswith`, a scheme
        // check that adds django.contrib.postgres): it gets that scheme.
        postgres.url_scheme = "postgres".into();
    }
}

/// A browser-only app or a library does not connect to databases itself.
fn is_server_side(d: &Draft) -> bool {
    let browser_only = ["vite", "create-react-app", "angular", "vue", "svelte", "react"]
        .iter()
        .any(|f| d.has_framework(f))
        && ![
            "next",
            "nuxt",
            "remix",
            "express",
            "fastify",
            "koa",
            "hono",
            "nest",
            "sveltekit",
            "astro",
        ]
        .iter()
        .any(|f| d.has_framework(f));
    d.c.start.is_some() && !browser_only
}

/// Templates in the component's directory; the root's apply to a root
/// component, or to every component when none sits at the root.
fn templates(idx: &RepoIndex, d: &mut Draft, dir: &str) {
    let mut dirs = vec![dir.to_owned()];
    if !dir.is_empty() {
        dirs.push(String::new());
    }
    let server_side = is_server_side(d);
    for (n, base) in dirs.iter().enumerate() {
        let own = n == 0;
        for t in TEMPLATES {
            let file = join(base, t);
            let Some(text) = idx.read(&file) else { continue };
            for (i, raw) in text.lines().enumerate().take(2000) {
                template_line(d, &file, i as u32 + 1, raw, own || server_side);
            }
            d.note(ev("env", &file, 0, "env template", weight::MANIFEST));
            break;
        }
        if n == 0 && d.c.env.iter().any(|e| e.source.starts_with(&join(dir, ".env"))) && !dir.is_empty() {
            break;
        }
    }
}

/// One `KEY=value` line of a template; its URL may name a backing service.
pub(super) fn template_line(d: &mut Draft, file: &str, line_no: u32, raw: &str, backing: bool) {
    let line = raw.trim().trim_start_matches("export ").trim();
    if line.starts_with('#') || line.is_empty() {
        return;
    }
    let Some((k, v)) = line.split_once('=') else {
        return;
    };
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return;
    }
    let v = v.split(" #").next().unwrap_or(v).trim().trim_matches(['"', '\'']);
    let template_value = is_template_value(v);
    if let Some(kind) = backing_from_env(k, v).filter(|_| backing) {
        d.add_backing(
            kind,
            "",
            ev(
                "backing_service",
                file,
                line_no,
                format!("{k}={v}"),
                weight::MANIFEST * 0.9,
            ),
        );
    }
    d.add_env(EnvVar {
        name: k.to_owned(),
        default_value: if template_value {
            String::new()
        } else {
            v.to_owned()
        },
        required: template_value && k != "PORT",
        secret: is_secret_name(k),
        source: format!("{file}:{line_no}"),
    });
}

/// `app.json` (the Heroku app manifest) in the component's directory, else
/// at the root: `"env": {"NAME": "value"}` or `{"value": ..., "required":
/// ..., "generator": "secret"}`.
fn app_json(idx: &RepoIndex, d: &mut Draft, dir: &str) {
    let Some((file, text)) = [join(dir, "app.json"), "app.json".to_owned()]
        .into_iter()
        .find_map(|f| idx.read(&f).map(|t| (f, t)))
    else {
        return;
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let Some(env) = doc.get("env").and_then(|e| e.as_object()) else {
        return;
    };
    for (name, spec) in env.iter().take(200) {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let (value, required) = match spec {
            serde_json::Value::String(v) => (v.clone(), false),
            serde_json::Value::Object(o) => (
                o.get("value")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                o.get("required").and_then(|v| v.as_bool()).unwrap_or(true),
            ),
            _ => continue,
        };
        let value = if is_template_value(&value) {
            String::new()
        } else {
            value
        };
        d.add_env(EnvVar {
            name: name.clone(),
            required: required && value.is_empty(),
            secret: is_secret_name(name),
            source: format!("{file}:{}", find_key_line(&text, name)),
            default_value: value,
        });
    }
}

/// The 1-based line where `"name"` first appears, 0 when it does not.
fn find_key_line(text: &str, name: &str) -> u32 {
    let quoted = format!("\"{name}\"");
    text.lines()
        .position(|l| l.contains(&quoted))
        .map_or(0, |i| i as u32 + 1)
}

/// The workflows' `env:` (top level, per job, per step) give values to the
/// variables the plan already has without one: CI is where many projects
/// keep what their tests and apps need. Secrets and expressions (`${{ }}`)
/// are not values.
fn ci_values(idx: &RepoIndex, d: &mut Draft) {
    let wanting: Vec<String> =
        d.c.env
            .iter()
            .filter(|e| e.default_value.is_empty())
            .map(|e| e.name.clone())
            .collect();
    if wanting.is_empty() {
        return;
    }
    let workflows: Vec<String> = idx
        .files()
        .filter(|f| f.starts_with(".github/workflows/") && (f.ends_with(".yml") || f.ends_with(".yaml")))
        .take(20)
        .cloned()
        .collect();
    for file in workflows {
        let Some(text) = idx.read(&file) else { continue };
        let Ok(doc) = serde_norway::from_str::<serde_norway::Value>(&text) else {
            continue;
        };
        let mut maps: Vec<&serde_norway::Value> = doc.get("env").into_iter().collect();
        if let Some(jobs) = doc.get("jobs").and_then(|j| j.as_mapping()) {
            for job in jobs.values().take(50) {
                maps.extend(job.get("env"));
                if let Some(steps) = job.get("steps").and_then(|s| s.as_sequence()) {
                    maps.extend(steps.iter().take(200).filter_map(|step| step.get("env")));
                }
            }
        }
        for map in maps.iter().filter_map(|m| m.as_mapping()) {
            for (k, v) in map.iter().take(200) {
                let Some(name) = k.as_str().filter(|n| wanting.iter().any(|w| w == n)) else {
                    continue;
                };
                let value = match v {
                    serde_norway::Value::String(s) => s.clone(),
                    serde_norway::Value::Number(n) => n.to_string(),
                    serde_norway::Value::Bool(b) => b.to_string(),
                    _ => continue,
                };
                if value.is_empty() || value.contains("${{") || is_template_value(&value) {
                    continue;
                }
                d.add_env(EnvVar {
                    name: name.to_owned(),
                    default_value: value,
                    required: false,
                    secret: is_secret_name(name),
                    source: format!("{file}:{}", super::util::find_line(&text, &format!("{name}:"))),
                });
            }
        }
    }
}

/// Env reads in the component's source files.
fn code_reads(idx: &RepoIndex, d: &mut Draft, dir: &str) {
    let exts: &[&str] = match d.c.language.as_str() {
        "python" => &[".py"],
        "javascript" | "typescript" => &[".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx"],
        "rust" => &[".rs"],
        "go" => &[".go"],
        "java" | "kotlin" => &[".java", ".kt"],
        _ => &[],
    };
    if exts.is_empty() || idx.expired() {
        return;
    }
    let preferred = [
        "settings.py",
        "config.py",
        "main.py",
        "app.py",
        "config.ts",
        "config.js",
        "index.ts",
        "index.js",
        "server.js",
        "main.rs",
        "main.go",
        "config.go",
    ];
    for f in source_files(idx, dir, exts, &preferred, 24)
        .into_iter()
        .filter(|f| !f.ends_with("build.rs"))
    {
        let Some(text) = idx.read_source(&f) else { continue };
        scan_code(d, &f, &text);
    }
}

/// Backing services implied by dependency names.
fn dependency_backing(d: &mut Draft) {
    let deps: Vec<String> = d.deps.iter().cloned().collect();
    for dep in deps {
        if let Some(kind) = backing_from_dep(&dep) {
            // "redis" as a dependency name is ambiguous only in name, never in meaning.
            d.add_backing(
                kind,
                "",
                ev(
                    "backing_service",
                    d.dir(),
                    0,
                    format!("dependency {dep}"),
                    weight::MANIFEST * 0.8,
                ),
            );
        }
    }
}

fn scan_code(d: &mut Draft, file: &str, text: &str) {
    d.names_postgres_scheme |= ["\"postgres://", "'postgres://", "`postgres://"]
        .iter()
        .any(|quoted| text.contains(quoted));
    // name, default, has_default, line, required (a read that fails without it)
    let mut found: Vec<(String, String, bool, u32, bool)> = Vec::new();
    let mut push = |name: &str, default: Option<&str>, pos: usize, required: bool| {
        found.push((
            name.to_owned(),
            default.unwrap_or_default().to_owned(),
            default.is_some(),
            line_of(text, pos),
            required,
        ));
    };
    if let Some(re) = PY_GET.as_ref() {
        for c in re.captures_iter(text).take(200) {
            if let Some(n) = c.get(1) {
                let def = c
                    .get(2)
                    .or_else(|| c.get(3))
                    .or_else(|| c.get(4))
                    .map(|m| m.as_str());
                push(n.as_str(), def, n.start(), false);
            }
        }
    }
    for (re, required) in [
        (PY_INDEX.as_ref(), true),
        (RS_ENV.as_ref(), false),
        (GO_ENV.as_ref(), false),
        (JAVA_ENV.as_ref(), false),
    ] {
        let Some(re) = re else { continue };
        for c in re.captures_iter(text).take(200) {
            if let Some(n) = c.get(1) {
                push(n.as_str(), None, n.start(), required);
            }
        }
    }
    if let Some(re) = JS_ENV.as_ref() {
        for c in re.captures_iter(text).take(200) {
            if let Some(n) = c.get(1).or_else(|| c.get(2)) {
                let def = c.get(3).or_else(|| c.get(4)).map(|m| m.as_str());
                push(n.as_str(), def, n.start(), false);
            }
        }
    }
    for (name, default, has_default, line, required) in found {
        if ignored(&name) || name.starts_with("CARGO_") || name == "OUT_DIR" {
            continue;
        }
        if let Some(kind) = backing_from_env(&name, &default) {
            d.add_backing(
                kind,
                "",
                ev(
                    "backing_service",
                    file,
                    line,
                    format!("reads {name}"),
                    weight::FRAMEWORK_GUESS,
                ),
            );
        }
        d.add_env(EnvVar {
            name: name.clone(),
            required: required && !has_default && name != "PORT" && !file.contains("prod"),
            secret: is_secret_name(&name),
            default_value: default,
            source: format!("{file}:{line}"),
        });
    }
}
