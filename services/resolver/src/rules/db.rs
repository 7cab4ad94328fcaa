//! Databases: schemas not migrated, and backing services that do not answer.

use reporunner_proto::common::v1::BackingServiceKind;

use super::{Context, Finding, Hit, Rule};

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule {
            cause: "db.not_migrated",
            pattern: r#"no such table: (?P<table>\w+)|You have (?P<count>[0-9]+) unapplied migration|relation "(?P<relation>[\w.]+)" does not exist|Table '(?P<mysql>[\w.]+)' doesn't exist|The table `(?P<prisma>[\w.]+)` does not exist in the current database"#,
            rank: 70,
            confidence: 0.85,
            phases: &[],
            check: not_migrated,
        },
        Rule {
            cause: "db.not_migrated",
            pattern: r"Target database is not up to date",
            rank: 71,
            confidence: 0.9,
            phases: &[],
            check: alembic_behind,
        },
        Rule {
            cause: "db.postgres_unreachable",
            pattern: r"(?i)(?:could not connect to server|connection to server at .*(?:failed|refused)|ECONNREFUSED [0-9.:\[\]a-f]*:5432\b|connect ECONNREFUSED .*:5432|Is the server running on host .* and accepting\s+TCP/IP connections on port 5432)",
            rank: 60,
            confidence: 0.85,
            phases: &[],
            check: postgres,
        },
        Rule {
            cause: "db.mysql_unreachable",
            pattern: r"Can't connect to (?:local )?MySQL server|ECONNREFUSED [0-9.:\[\]a-f]*:3306\b",
            rank: 60,
            confidence: 0.85,
            phases: &[],
            check: mysql,
        },
        Rule {
            cause: "db.redis_unreachable",
            pattern: r"redis\.exceptions\.ConnectionError|Error [0-9]+ connecting to [\w.-]+:6379|ECONNREFUSED [0-9.:\[\]a-f]*:6379\b|Could not connect to Redis",
            rank: 60,
            confidence: 0.85,
            phases: &[],
            check: redis,
        },
        Rule {
            cause: "db.mongodb_unreachable",
            pattern: r"MongoNetworkError|MongooseServerSelectionError|MongoServerSelectionError|pymongo\.errors\.ServerSelectionTimeoutError|ECONNREFUSED [0-9.:\[\]a-f]*:27017\b",
            rank: 60,
            confidence: 0.85,
            phases: &[],
            check: mongodb,
        },
        Rule {
            cause: "db.rabbitmq_unreachable",
            pattern: r"pika\.exceptions\.AMQPConnectionError|kombu\.exceptions\.OperationalError|amqp.*Connection refused|ECONNREFUSED [0-9.:\[\]a-f]*:5672\b",
            rank: 60,
            confidence: 0.8,
            phases: &[],
            check: rabbitmq,
        },
    ]
}

fn not_migrated(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let what = ["table", "relation", "mysql", "prisma"]
        .into_iter()
        .map(|g| hit.get(g))
        .find(|s| !s.is_empty());
    let summary = match (what, hit.get("count")) {
        (Some(table), _) => format!("the database schema is not migrated: table `{table}` does not exist"),
        (None, count) => format!("the database schema is not migrated: {count} unapplied migration(s)"),
    };
    let prisma = !hit.get("prisma").is_empty() || ctx.has_framework("prisma");
    let command = if prisma {
        Some("npx prisma migrate deploy")
    } else if ctx.has_framework("django") || ctx.mentions("django") || !hit.get("count").is_empty() {
        Some("python manage.py migrate --noinput")
    } else if ctx.has_framework("alembic") || ctx.mentions("alembic") {
        Some("alembic upgrade head")
    } else if ctx.has_framework("flask") {
        Some("flask db upgrade")
    } else {
        None
    };
    let finding = Finding::new(summary);
    Some(match command {
        Some(run) => finding.patch(ctx.add_setup(run, "applies the migrations before the app starts")),
        None => finding.confidence(0.5),
    })
}

fn alembic_behind(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let run = if ctx.has_framework("flask") && !ctx.has_framework("alembic") {
        "flask db upgrade"
    } else {
        "alembic upgrade head"
    };
    Some(
        Finding::new("the database is behind the Alembic migrations")
            .patch(ctx.add_setup(run, "applies the Alembic migrations before the app starts")),
    )
}

/// The env var names the component reads a service from: those the plan
/// declares that contain one of `hints`, else `default`.
fn env_names(ctx: &Context<'_>, hints: &[&str], default: &str) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .component
        .map(|c| {
            c.env
                .iter()
                .map(|e| e.name.clone())
                .filter(|n| hints.iter().any(|h| n.contains(h)))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.push(default.to_owned());
    }
    names
}

fn unreachable(ctx: &Context<'_>, kind: BackingServiceKind, label: &str, env_vars: Vec<String>) -> Finding {
    let planned = ctx
        .component
        .is_some_and(|c| c.backing_services.iter().any(|s| s.kind == kind as i32));
    if planned {
        return Finding::new(format!(
            "{label} does not answer, though the plan provides it: it may not be ready yet or the component reads another address"
        ))
        .confidence(0.5);
    }
    let vars = env_vars.join(", ");
    Finding::new(format!("the component needs {label}, and none is running")).patch(ctx.add_service(
        kind,
        env_vars,
        format!("provides {label} and passes its address in {vars}"),
    ))
}

fn postgres(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let line = hit.caps.get(0).map_or("", |m| m.as_str());
    // "could not connect to server" alone is PostgreSQL's wording, but check
    // that nothing points to another engine.
    if ctx.mentions("3306")
        || ctx.mentions("MySQL")
        || (!ctx.mentions("5432")
            && !ctx.mentions("postgres")
            && !ctx.mentions("psycopg")
            && !line.contains("5432"))
    {
        return None;
    }
    let vars = env_names(ctx, &["DATABASE_URL", "POSTGRES", "PG", "DB_"], "DATABASE_URL");
    Some(unreachable(
        ctx,
        BackingServiceKind::Postgresql,
        "PostgreSQL",
        vars,
    ))
}

fn mysql(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let vars = env_names(ctx, &["DATABASE_URL", "MYSQL", "DB_"], "DATABASE_URL");
    Some(unreachable(ctx, BackingServiceKind::Mysql, "MySQL", vars))
}

fn redis(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let vars = env_names(ctx, &["REDIS"], "REDIS_URL");
    Some(unreachable(ctx, BackingServiceKind::Redis, "Redis", vars))
}

fn mongodb(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let vars = env_names(ctx, &["MONGO"], "MONGODB_URI");
    Some(unreachable(ctx, BackingServiceKind::Mongodb, "MongoDB", vars))
}

fn rabbitmq(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let vars = env_names(ctx, &["AMQP", "RABBIT", "BROKER"], "AMQP_URL");
    Some(unreachable(ctx, BackingServiceKind::Rabbitmq, "RabbitMQ", vars))
}
