//! Environment: variables the component needs and a missing `.env` file.

use reporunner_proto::common::v1::BackingServiceKind;

use super::{Context, Finding, Hit, Rule, random_secret};

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule {
            cause: "env.missing_var",
            pattern: r"KeyError: '(?P<key>[A-Z][A-Z0-9_]{2,63})'",
            rank: 65,
            confidence: 0.8,
            phases: &[],
            check: key_error,
        },
        Rule {
            cause: "env.missing_var",
            pattern: r#"(?i:environment variable|env var(?:iable)?)s?[:\s]+['"`]?(?P<a>[A-Z][A-Z0-9_]{2,63})['"`]?(?i:\s+(?:is|was) (?:not set|missing|required|not defined|undefined))|(?i:missing (?:required )?env(?:ironment)?(?: var(?:iable)?)?s?):?\s+['"`]?(?P<b>[A-Z][A-Z0-9_]{2,63})|(?P<c>[A-Z][A-Z0-9_]{2,63})(?i: environment variable (?:is )?(?:not set|missing|required|undefined))|Set the (?P<d>[A-Z][A-Z0-9_]{2,63}) environment variable|UndefinedValueError: (?P<e>[A-Z][A-Z0-9_]{2,63}) not found"#,
            rank: 66,
            confidence: 0.85,
            phases: &[],
            check: named_var,
        },
        Rule {
            cause: "env.missing_var",
            pattern: r"^\s*(?:Field required \[type=missing|field required \(type=value_error\.missing\))",
            rank: 64,
            confidence: 0.75,
            phases: &[],
            check: pydantic_field,
        },
        Rule {
            // `os.environ.get("X").split(",")` with X unset: Python quotes the
            // line above the error.
            cause: "env.missing_var",
            pattern: r"^\s*AttributeError: 'NoneType' object has no attribute",
            rank: 63,
            confidence: 0.75,
            phases: &[],
            check: none_from_getenv,
        },
        Rule {
            cause: "env.dotenv_missing",
            pattern: r#"No such file or directory: '(?:[^']*/)?\.env'|ENOENT: no such file or directory, open '[^']*\.env'|(?i:could not find|missing) \.env file|\.env file (?i:not found)|open \.env: no such file or directory|\[dotenv@[0-9.]+\]\[DEBUG\] Failed to load [^ ]*\.env"#,
            rank: 75,
            confidence: 0.85,
            phases: &[],
            check: dotenv_missing,
        },
    ]
}

/// A service whose address a variable names.
fn service_for(name: &str) -> Option<(BackingServiceKind, &'static str)> {
    let services = [
        ("REDIS", BackingServiceKind::Redis, "Redis"),
        ("MONGO", BackingServiceKind::Mongodb, "MongoDB"),
        ("AMQP", BackingServiceKind::Rabbitmq, "RabbitMQ"),
        ("RABBIT", BackingServiceKind::Rabbitmq, "RabbitMQ"),
        ("BROKER_URL", BackingServiceKind::Rabbitmq, "RabbitMQ"),
        ("MYSQL", BackingServiceKind::Mysql, "MySQL"),
        ("POSTGRES", BackingServiceKind::Postgresql, "PostgreSQL"),
        ("DATABASE_URL", BackingServiceKind::Postgresql, "PostgreSQL"),
    ];
    services
        .into_iter()
        .find(|(hint, _, _)| name.contains(hint) && (name.ends_with("_URL") || name.ends_with("_URI")))
        .map(|(_, kind, label)| (kind, label))
}

fn is_secret(name: &str) -> bool {
    ["SECRET", "KEY", "TOKEN", "PASSWORD", "PASSWD", "SALT", "PEPPER"]
        .iter()
        .any(|s| name.contains(s))
}

/// A value for `name` and why: the plan's default, a random secret, a
/// sensible value for well-known names, else a placeholder guessed from the
/// name ([`GUESS`]).
pub(crate) fn default_value(ctx: &Context<'_>, name: &str) -> (String, &'static str) {
    if let Some(declared) = ctx.component.and_then(|c| {
        c.env
            .iter()
            .find(|e| e.name == name && !e.default_value.is_empty())
    }) {
        return (declared.default_value.clone(), "the plan's default");
    }
    if is_secret(name) {
        return (random_secret(), "a random secret generated for this run");
    }
    let port = ctx.component.filter(|c| c.port != 0).map_or_else(
        || {
            if ctx.language() == "python" {
                "8000".to_owned()
            } else {
                "3000".to_owned()
            }
        },
        |c| c.port.to_string(),
    );
    let known = match name {
        "DEBUG" | "FLASK_DEBUG" => "1",
        "PORT" | "APP_PORT" | "HTTP_PORT" | "SERVER_PORT" => return (port, "the component's port"),
        "HOST" | "APP_HOST" | "BIND_HOST" | "SERVER_HOST" => "0.0.0.0",
        "NODE_ENV" => "development",
        "ENV" | "APP_ENV" | "FLASK_ENV" | "ENVIRONMENT" | "RAILS_ENV" => "development",
        "LOG_LEVEL" => "info",
        "ALLOWED_HOSTS" | "DJANGO_ALLOWED_HOSTS" => "localhost,127.0.0.1,[::1]",
        "TZ" => "UTC",
        "SERVER_NAME" => return (format!("127.0.0.1:{port}"), "the component's own address"),
        _ => return guess(name),
    };
    (known.to_owned(), "a sensible default for local runs")
}

/// What a placeholder for `name` says when it is a guess: the run's events
/// show it, and the user overrides it.
pub(crate) const GUESS: &str = "a placeholder guessed from its name; set your own with --env";

/// A neutral placeholder from the shape of `name` (a URL, a host or a list
/// of hosts, a name, a port, a path, an address): enough for code that only
/// reads a variable at start-up to start.
fn guess(name: &str) -> (String, &'static str) {
    let ends = |suffixes: &[&str]| {
        suffixes
            .iter()
            .any(|s| name == s.trim_start_matches('_') || name.ends_with(s))
    };
    let value = if ends(&["_URL", "_URI", "_ENDPOINT"]) {
        "http://127.0.0.1:9"
    } else if ends(&["_ORIGIN", "_ORIGINS"]) {
        "http://127.0.0.1"
    } else if ends(&["_HOSTS", "_DOMAINS"]) {
        // Whatever the separator the code splits on, one `*` is one item.
        "*"
    } else if ends(&["_HOST", "_HOSTNAME", "_DOMAIN", "_ADDR", "_ADDRESS", "_SERVER"]) {
        "127.0.0.1"
    } else if ends(&["_PORT"]) {
        "9"
    } else if ends(&["_DIR", "_PATH", "_FOLDER", "_ROOT"]) {
        "/tmp"
    } else if ends(&["_FILE"]) {
        "/dev/null"
    } else if ends(&["_EMAIL", "_MAIL"]) {
        "dev@example.com"
    } else if ends(&[
        "_NAME",
        "_USER",
        "_USERNAME",
        "_ID",
        "_REGION",
        "_BUCKET",
        "_PROJECT",
    ]) {
        "reporunner"
    } else {
        "placeholder"
    };
    (value.to_owned(), GUESS)
}

fn var_finding(ctx: &Context<'_>, name: &str) -> Finding {
    if let Some((kind, label)) = service_for(name) {
        return Finding::new(format!(
            "the environment variable {name} is not set; it names a {label} server"
        ))
        .patch(ctx.add_service(
            kind,
            vec![name.to_owned()],
            format!("provides {label} and sets {name}"),
        ));
    }
    let summary = format!("the environment variable {name} is not set");
    let (value, why) = default_value(ctx, name);
    if why == GUESS {
        // A guess still lets code that only reads the variable start; the
        // events say it is one and how to give the real value.
        return Finding::new(format!(
            "{summary}; no default is known, so a placeholder is guessed"
        ))
        .patch(ctx.set_env(
            name,
            &value,
            format!("{name}: a placeholder guessed from its name; set your own with --env {name}=..."),
        ));
    }
    Finding::new(summary).patch(ctx.set_env(name, &value, format!("{name}: {why}")))
}

fn key_error(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let name = hit.get("key");
    let environ = ctx.lines[hit.line.saturating_sub(8)..hit.line]
        .iter()
        .any(|l| l.contains("environ") || l.contains("getenv") || l.contains("env["));
    let finding = var_finding(ctx, name);
    Some(if environ { finding } else { finding.confidence(0.6) })
}

static GETENV_CALL: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r#"(?:os\.environ\.get|os\.getenv|environ\.get)\(\s*['"]([A-Z][A-Z0-9_]{1,63})['"]\s*\)\s*\."#,
    )
    .ok()
});

/// The variable read without a default on one of the quoted source lines just
/// above the error, whose value was used as if set.
fn none_from_getenv(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let re = GETENV_CALL.as_ref()?;
    let name = ctx.lines[hit.line.saturating_sub(4)..hit.line]
        .iter()
        .rev()
        .find_map(|line| re.captures(line).and_then(|c| c.get(1)))?
        .as_str();
    Some(var_finding(ctx, name))
}

fn named_var(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let name = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|g| hit.get(g))
        .find(|s| !s.is_empty())?;
    Some(var_finding(ctx, name))
}

fn pydantic_field(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    // pydantic prints the field's name on the line above; settings fields are
    // read from the upper-cased environment variable.
    let field = ctx.lines.get(hit.line.checked_sub(1)?)?.trim();
    let valid = !field.is_empty()
        && field.len() <= 64
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid
        || !ctx.lines[..hit.line]
            .iter()
            .rev()
            .take(12)
            .any(|l| l.contains("validation error for"))
    {
        return None;
    }
    Some(var_finding(ctx, &field.to_ascii_uppercase()))
}

fn dotenv_missing(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let path = ctx.component_file(".env");
    let vars = ctx.component.map(|c| c.env.as_slice()).unwrap_or_default();
    let mut content = String::from("# Created by Repo Runner from the variables the plan found.\n");
    for var in vars {
        let (value, _) = default_value(ctx, &var.name);
        content.push_str(&format!("{}={}\n", var.name, value));
    }
    let source = vars.iter().find(|v| !v.source.is_empty()).map_or_else(
        || "the plan's variables".to_owned(),
        |v| v.source.split(':').next().unwrap_or("").to_owned(),
    );
    Some(
        Finding::new(format!("the component reads {path}, which does not exist")).patch(ctx.create_file(
            &path,
            content,
            format!("built from {source} with safe defaults"),
        )),
    )
}
