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

/// A safe default for `name`: the plan's default, a random secret, or a
/// sensible value for well-known names. `None` when nothing sensible is known.
pub(crate) fn default_value(ctx: &Context<'_>, name: &str) -> Option<(String, &'static str)> {
    if let Some(declared) = ctx.component.and_then(|c| {
        c.env
            .iter()
            .find(|e| e.name == name && !e.default_value.is_empty())
    }) {
        return Some((declared.default_value.clone(), "the plan's default"));
    }
    if is_secret(name) {
        return Some((random_secret(), "a random secret generated for this run"));
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
        "PORT" | "APP_PORT" | "HTTP_PORT" | "SERVER_PORT" => return Some((port, "the component's port")),
        "HOST" | "APP_HOST" | "BIND_HOST" | "SERVER_HOST" => "0.0.0.0",
        "NODE_ENV" => "development",
        "ENV" | "APP_ENV" | "FLASK_ENV" | "ENVIRONMENT" | "RAILS_ENV" => "development",
        "LOG_LEVEL" => "info",
        "ALLOWED_HOSTS" | "DJANGO_ALLOWED_HOSTS" => "localhost,127.0.0.1,[::1]",
        "TZ" => "UTC",
        _ => return None,
    };
    Some((known.to_owned(), "a sensible default for local runs"))
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
    match default_value(ctx, name) {
        Some((value, why)) => {
            Finding::new(summary).patch(ctx.set_env(name, &value, format!("{name}: {why}")))
        }
        None => Finding::new(format!(
            "{summary}; no safe default is known, the user must supply it"
        ))
        .confidence(0.6),
    }
}

fn key_error(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let name = hit.get("key");
    let environ = ctx.lines[hit.line.saturating_sub(8)..hit.line]
        .iter()
        .any(|l| l.contains("environ") || l.contains("getenv") || l.contains("env["));
    let finding = var_finding(ctx, name);
    Some(if environ { finding } else { finding.confidence(0.6) })
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
        let value = default_value(ctx, &var.name).map(|(v, _)| v).unwrap_or_default();
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
