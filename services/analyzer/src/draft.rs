//! A component being decided: the proto message plus the weight of the
//! evidence behind each field, so that stronger evidence wins.

use std::collections::{BTreeMap, BTreeSet};

use reporunner_proto::common::v1::{
    BackingService, BackingServiceKind, Command, Component, ComponentKind, EnvVar, Evidence, Runtime,
};

/// One component under construction.
#[derive(Debug, Default)]
pub struct Draft {
    pub c: Component,
    /// Field → weight of the evidence behind its current value.
    weights: BTreeMap<&'static str, f64>,
    /// Normalised dependency names (lower case) from every manifest.
    pub deps: BTreeSet<String>,
    /// Warnings specific to this component.
    pub warnings: Vec<String>,
    /// True when the component was found only through a README.
    pub from_readme: bool,
    /// package.json script names, to check README commands against.
    pub scripts: BTreeSet<String>,
    /// The code names `postgres://` (Heroku's scheme) in a string.
    pub names_postgres_scheme: bool,
}

/// Evidence for `field` from `file` at `line` (0 = whole file).
pub fn ev(field: &str, file: &str, line: u32, detail: impl Into<String>, weight: f64) -> Evidence {
    let mut detail: String = detail.into();
    if detail.len() > 200 {
        let mut cut = 200;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push('…');
    }
    Evidence {
        field: field.to_owned(),
        file: file.to_owned(),
        line,
        detail,
        weight,
    }
}

pub fn cmd(run: impl Into<String>) -> Option<Command> {
    Some(Command {
        run: run.into(),
        working_dir: String::new(),
        watch_mode: false,
    })
}

pub fn cmd_in(run: impl Into<String>, working_dir: &str) -> Option<Command> {
    Some(Command {
        run: run.into(),
        working_dir: working_dir.to_owned(),
        watch_mode: false,
    })
}

pub fn watch_cmd(run: impl Into<String>, watch: bool) -> Option<Command> {
    Some(Command {
        run: run.into(),
        working_dir: String::new(),
        watch_mode: watch,
    })
}

impl Draft {
    pub fn new(name: &str, path: &str, language: &str) -> Self {
        let mut d = Self::default();
        d.c.name = name.to_owned();
        d.c.path = if path.is_empty() {
            ".".into()
        } else {
            path.to_owned()
        };
        d.c.language = language.to_owned();
        d
    }

    /// The component's directory as an index prefix ("" for the root).
    pub fn dir(&self) -> &str {
        if self.c.path == "." { "" } else { &self.c.path }
    }

    pub fn weight(&self, field: &str) -> f64 {
        self.weights.get(field).copied().unwrap_or(0.0)
    }

    /// Records `evidence`; true when its weight beats the field's current
    /// value, in which case the caller sets the field.
    pub fn offer(&mut self, evidence: Evidence) -> bool {
        let field: &'static str = field_key(&evidence.field);
        let wins = evidence.weight > self.weight(field);
        if wins {
            self.weights.insert(field, evidence.weight);
        }
        if self.c.evidence.len() < 64 {
            self.c.evidence.push(evidence);
        }
        wins
    }

    /// Records evidence that supports without deciding anything.
    pub fn note(&mut self, evidence: Evidence) {
        if self.c.evidence.len() < 64 {
            self.c.evidence.push(evidence);
        }
    }

    pub fn set_start(
        &mut self,
        evidence: Evidence,
        command: Option<Command>,
        port: u32,
        binding: &str,
    ) -> bool {
        let port = if port > 65535 { 0 } else { port };
        let weight = evidence.weight;
        if self.offer(evidence) {
            self.c.start = command;
            if port != 0 {
                // The start command's own port outranks weaker port hints.
                let w = self.weight("port").max(weight);
                self.weights.insert("port", w);
            }
            if port != 0 || !binding.is_empty() {
                self.c.port = port;
                self.c.port_binding = binding.to_owned();
            }
            true
        } else {
            false
        }
    }

    pub fn set_runtime(&mut self, evidence: Evidence, name: &str, constraint: &str) -> bool {
        if self.offer(evidence) {
            self.c.runtime = Some(Runtime {
                name: name.to_owned(),
                version_constraint: constraint.to_owned(),
                preferred_version: String::new(),
            });
            true
        } else {
            false
        }
    }

    pub fn set_port(&mut self, evidence: Evidence, port: u32) -> bool {
        if port == 0 || port > 65535 {
            return false;
        }
        if self.offer(evidence) {
            self.c.port = port;
            true
        } else {
            false
        }
    }

    pub fn add_framework(&mut self, name: &str) {
        if !self.c.frameworks.iter().any(|f| f == name) {
            self.c.frameworks.push(name.to_owned());
        }
    }

    pub fn has_framework(&self, name: &str) -> bool {
        self.c.frameworks.iter().any(|f| f == name)
    }

    pub fn add_env(&mut self, var: EnvVar) {
        if let Some(existing) = self.c.env.iter_mut().find(|e| e.name == var.name) {
            // A value found later fills a name found without one, and says
            // where it came from.
            if existing.default_value.is_empty() && !var.default_value.is_empty() {
                existing.default_value = var.default_value;
                existing.required = var.required;
                existing.source = var.source;
            }
            return;
        }
        if self.c.env.len() < 200 {
            self.c.env.push(var);
        }
    }

    pub fn add_backing(&mut self, kind: BackingServiceKind, version: &str, evidence: Evidence) {
        if let Some(existing) = self.c.backing_services.iter_mut().find(|b| b.kind == kind as i32) {
            if existing.version.is_empty() && !version.is_empty() {
                existing.version = version.to_owned();
            }
            if existing.evidence.len() < 8 {
                existing.evidence.push(evidence);
            }
            return;
        }
        self.c.backing_services.push(BackingService {
            kind: kind as i32,
            version: version.to_owned(),
            env_vars: Vec::new(),
            evidence: vec![evidence],
            url_scheme: String::new(),
        });
    }

    pub fn set_kind(&mut self, kind: ComponentKind) {
        self.c.kind = kind as i32;
    }

    pub fn kind(&self) -> ComponentKind {
        ComponentKind::try_from(self.c.kind).unwrap_or(ComponentKind::Unspecified)
    }

    pub fn has_dep(&self, name: &str) -> bool {
        self.deps.contains(name)
    }

    pub fn has_any_dep(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.deps.contains(*n))
    }
}

/// Fields have static keys so the weight map needs no allocation per offer.
fn field_key(field: &str) -> &'static str {
    match field {
        "start" => "start",
        "install" => "install",
        "build" => "build",
        "test" => "test",
        "port" => "port",
        "runtime" => "runtime",
        "package_manager" => "package_manager",
        "setup" => "setup",
        "kind" => "kind",
        "health" => "health",
        _ => "other",
    }
}

/// True for env var names that hold keys, passwords and tokens.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE",
        "CREDENTIAL",
        "_KEY",
        "SALT",
        "DSN",
    ]
    .iter()
    .any(|p| upper.contains(p))
        || upper.ends_with("_PASS")
}

/// Which backing service an env var name or URL points to.
pub fn backing_from_env(name: &str, value: &str) -> Option<BackingServiceKind> {
    let v = value.to_ascii_lowercase();
    if v.starts_with("postgres://") || v.starts_with("postgresql://") || v.starts_with("postgresql+") {
        return Some(BackingServiceKind::Postgresql);
    }
    if v.starts_with("mysql://") || v.starts_with("mysql+") || v.starts_with("mariadb://") {
        return Some(BackingServiceKind::Mysql);
    }
    if v.starts_with("redis://") || v.starts_with("rediss://") {
        return Some(BackingServiceKind::Redis);
    }
    if v.starts_with("mongodb://") || v.starts_with("mongodb+srv://") {
        return Some(BackingServiceKind::Mongodb);
    }
    if v.starts_with("amqp://") || v.starts_with("amqps://") {
        return Some(BackingServiceKind::Rabbitmq);
    }
    let n = name.to_ascii_uppercase();
    if n.starts_with("POSTGRES") || n.starts_with("PGHOST") || n.starts_with("PGDATABASE") {
        Some(BackingServiceKind::Postgresql)
    } else if n.starts_with("MYSQL") || n.starts_with("MARIADB") {
        Some(BackingServiceKind::Mysql)
    } else if n.starts_with("REDIS") {
        Some(BackingServiceKind::Redis)
    } else if n.starts_with("MONGO") {
        Some(BackingServiceKind::Mongodb)
    } else if n.starts_with("RABBITMQ") || n.starts_with("AMQP") {
        Some(BackingServiceKind::Rabbitmq)
    } else {
        None
    }
}

/// The conventional env var a component reads a backing service from.
pub fn default_env_for(kind: BackingServiceKind) -> &'static str {
    match kind {
        BackingServiceKind::Postgresql | BackingServiceKind::Mysql => "DATABASE_URL",
        BackingServiceKind::Redis => "REDIS_URL",
        BackingServiceKind::Mongodb => "MONGODB_URI",
        BackingServiceKind::Rabbitmq => "AMQP_URL",
        BackingServiceKind::Unspecified => "",
    }
}

/// Backing service implied by a dependency name of any ecosystem.
pub fn backing_from_dep(dep: &str) -> Option<BackingServiceKind> {
    use BackingServiceKind as K;
    let kind = match dep {
        "psycopg"
        | "psycopg2"
        | "psycopg2-binary"
        | "psycopg-binary"
        | "asyncpg"
        | "pg8000"
        | "pg"
        | "postgres"
        | "pg-promise"
        | "tokio-postgres"
        | "deadpool-postgres"
        | "github.com/lib/pq"
        | "github.com/jackc/pgx/v5"
        | "github.com/jackc/pgx/v4"
        | "gorm.io/driver/postgres"
        | "org.postgresql:postgresql"
        | "postgresql" => K::Postgresql,
        "mysqlclient"
        | "pymysql"
        | "mysql-connector-python"
        | "aiomysql"
        | "mysql"
        | "mysql2"
        | "github.com/go-sql-driver/mysql"
        | "gorm.io/driver/mysql"
        | "com.mysql:mysql-connector-j"
        | "mysql:mysql-connector-java"
        | "mysql_async" => K::Mysql,
        "redis"
        | "ioredis"
        | "aioredis"
        | "bull"
        | "bullmq"
        | "django-redis"
        | "rq"
        | "github.com/go-redis/redis/v8"
        | "github.com/redis/go-redis/v9"
        | "github.com/gomodule/redigo"
        | "spring-boot-starter-data-redis"
        | "deadpool-redis"
        | "fred" => K::Redis,
        "pymongo"
        | "motor"
        | "mongoengine"
        | "beanie"
        | "mongodb"
        | "mongoose"
        | "go.mongodb.org/mongo-driver"
        | "spring-boot-starter-data-mongodb"
        | "odmantic" => K::Mongodb,
        "pika"
        | "aio-pika"
        | "amqplib"
        | "amqp-connection-manager"
        | "lapin"
        | "github.com/streadway/amqp"
        | "github.com/rabbitmq/amqp091-go"
        | "spring-boot-starter-amqp"
        | "amqpstorm" => K::Rabbitmq,
        _ => return None,
    };
    Some(kind)
}

/// A version from an image tag: `postgres:15-alpine` → `15`, `redis:7.2` → `7.2`.
pub fn version_from_tag(tag: &str) -> String {
    let v: String = tag
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    v.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stronger_evidence_wins_and_weaker_is_kept_as_evidence() {
        let mut d = Draft::new("app", "", "python");
        assert!(d.set_start(
            ev("start", "README.md", 3, "python app.py", 0.3),
            cmd("python app.py"),
            0,
            ""
        ));
        assert!(d.set_start(
            ev("start", "Procfile", 1, "web: gunicorn", 0.95),
            cmd("gunicorn app:app"),
            0,
            "env:PORT"
        ));
        assert!(!d.set_start(
            ev("start", "app.py", 1, "flask", 0.8),
            cmd("flask run"),
            5000,
            "flag:--port"
        ));
        assert_eq!(
            d.c.start.as_ref().map(|c| c.run.as_str()),
            Some("gunicorn app:app")
        );
        assert_eq!(d.c.port_binding, "env:PORT");
        assert_eq!(d.c.evidence.len(), 3);
    }

    #[test]
    fn classifies_env_names_and_urls() {
        assert!(is_secret_name("STRIPE_API_KEY"));
        assert!(is_secret_name("DB_PASSWORD"));
        assert!(!is_secret_name("PORT"));
        assert_eq!(
            backing_from_env("DATABASE_URL", "postgres://u@h/db"),
            Some(BackingServiceKind::Postgresql)
        );
        assert_eq!(
            backing_from_env("CACHE", "redis://localhost:6379"),
            Some(BackingServiceKind::Redis)
        );
        assert_eq!(backing_from_env("DEBUG", "1"), None);
        assert_eq!(version_from_tag("15-alpine"), "15");
        assert_eq!(version_from_tag("7.2.4"), "7.2.4");
        assert_eq!(version_from_tag("latest"), "");
    }
}
