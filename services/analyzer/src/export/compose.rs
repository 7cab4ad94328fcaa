//! The compose export: the app built from the exported Dockerfile, its
//! backing services with healthchecks, and the app's connection variables
//! named and shaped as the provisioner injects them in a run
//! (services/provisioner/src/env.rs), pointing at the compose services.

use serde::Serialize;
use serde_norway::{Mapping, Value};

use super::{env_name_ok, upsert};
use crate::error::{AnalyzerError, Result};
use reporunner_proto::common::v1::{BackingService, BackingServiceKind, Component};

/// A backing service kind as a compose service.
#[derive(Debug)]
struct Kind {
    kind: BackingServiceKind,
    /// The service name, which is also the host the app connects to.
    service: &'static str,
    image: &'static str,
    default_tag: &'static str,
    port: u16,
    scheme: &'static str,
    /// The credentials the container is started with; empty where the
    /// service has none. For local use only.
    user: &'static str,
    password: &'static str,
    database: &'static str,
    container_env: &'static [(&'static str, &'static str)],
    healthcheck: &'static [&'static str],
    /// The names the provisioner always sets for this kind.
    usual: &'static [&'static str],
}

const KINDS: &[Kind] = &[
    Kind {
        kind: BackingServiceKind::Postgresql,
        service: "postgres",
        image: "postgres",
        default_tag: "16",
        port: 5432,
        scheme: "postgresql",
        user: "app",
        password: "app",
        database: "app",
        container_env: &[
            ("POSTGRES_USER", "app"),
            ("POSTGRES_PASSWORD", "app"),
            ("POSTGRES_DB", "app"),
        ],
        healthcheck: &["CMD", "pg_isready", "-U", "app", "-d", "app"],
        usual: &[
            "DATABASE_URL",
            "POSTGRES_HOST",
            "POSTGRES_PORT",
            "POSTGRES_USER",
            "POSTGRES_PASSWORD",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "POSTGRES_DB",
            "PGDATABASE",
        ],
    },
    Kind {
        kind: BackingServiceKind::Mysql,
        service: "mysql",
        image: "mysql",
        default_tag: "8.4",
        port: 3306,
        scheme: "mysql",
        user: "app",
        password: "app",
        database: "app",
        container_env: &[
            ("MYSQL_DATABASE", "app"),
            ("MYSQL_USER", "app"),
            ("MYSQL_PASSWORD", "app"),
            ("MYSQL_ROOT_PASSWORD", "app"),
        ],
        healthcheck: &["CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "-uapp", "-papp"],
        usual: &[
            "DATABASE_URL",
            "MYSQL_HOST",
            "MYSQL_PORT",
            "MYSQL_USER",
            "MYSQL_PASSWORD",
            "MYSQL_DATABASE",
            "DB_HOST",
            "DB_PORT",
            "DB_USER",
            "DB_PASSWORD",
            "DB_DATABASE",
        ],
    },
    Kind {
        kind: BackingServiceKind::Redis,
        service: "redis",
        image: "redis",
        default_tag: "7",
        port: 6379,
        scheme: "redis",
        user: "",
        password: "",
        database: "0",
        container_env: &[],
        healthcheck: &["CMD", "redis-cli", "ping"],
        usual: &["REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB"],
    },
    Kind {
        kind: BackingServiceKind::Mongodb,
        service: "mongodb",
        image: "mongo",
        default_tag: "7",
        port: 27017,
        scheme: "mongodb",
        user: "",
        password: "",
        database: "app",
        container_env: &[],
        healthcheck: &["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping')"],
        usual: &["MONGODB_URI"],
    },
    Kind {
        kind: BackingServiceKind::Rabbitmq,
        service: "rabbitmq",
        image: "rabbitmq",
        default_tag: "3",
        port: 5672,
        scheme: "amqp",
        user: "app",
        password: "app",
        database: "",
        container_env: &[("RABBITMQ_DEFAULT_USER", "app"), ("RABBITMQ_DEFAULT_PASS", "app")],
        healthcheck: &["CMD", "rabbitmq-diagnostics", "-q", "ping"],
        usual: &["AMQP_URL"],
    },
];

impl Kind {
    fn of(service: &BackingService) -> Option<&'static Self> {
        KINDS.iter().find(|k| k.kind as i32 == service.kind)
    }

    /// The repository's tag when it is one (`16`, `7-alpine`), else ours.
    fn image(&self, version: &str) -> String {
        let v = version.trim();
        let is_tag = !v.is_empty()
            && v.len() <= 128
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        format!("{}:{}", self.image, if is_tag { v } else { self.default_tag })
    }

    fn url_with(&self, scheme: &str) -> String {
        let auth = if self.user.is_empty() {
            String::new()
        } else {
            format!("{}:{}@", self.user, self.password)
        };
        let path = if self.database.is_empty() {
            String::new()
        } else {
            format!("/{}", self.database)
        };
        format!("{scheme}://{auth}{}:{}{path}", self.service, self.port)
    }

    /// The value a variable name asks for, by the provisioner's rules: a
    /// URL for `*URL`/`*URI`/`*DSN` and unknown names, else the part.
    fn value_for(&self, name: &str) -> String {
        use reporunner_backing::Part;
        let sql = matches!(
            self.kind,
            BackingServiceKind::Postgresql | BackingServiceKind::Mysql
        );
        match reporunner_backing::part_for(name) {
            Part::JdbcUrl if sql => format!(
                "jdbc:{}://{}:{}/{}?user={}&password={}",
                self.scheme, self.service, self.port, self.database, self.user, self.password
            ),
            Part::AsyncpgUrl if self.kind == BackingServiceKind::Postgresql => {
                self.url_with("postgresql+asyncpg")
            }
            Part::Url | Part::JdbcUrl | Part::AsyncpgUrl => self.url_with(self.scheme),
            Part::Host => self.service.to_owned(),
            Part::Port => self.port.to_string(),
            Part::User => self.user.to_owned(),
            Part::Password => self.password.to_owned(),
            Part::Database => self.database.to_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
struct App {
    build: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<Port>,
    #[serde(skip_serializing_if = "Mapping::is_empty")]
    environment: Mapping,
    #[serde(skip_serializing_if = "Mapping::is_empty")]
    depends_on: Mapping,
}

/// The long port syntax: `"80:80"` in the short one is a base-60 number
/// to YAML 1.1 readers when both sides are under 60.
#[derive(Debug, Serialize)]
struct Port {
    target: u32,
    published: String,
}

#[derive(Debug, Serialize)]
struct Backing {
    image: String,
    #[serde(skip_serializing_if = "Mapping::is_empty")]
    environment: Mapping,
    healthcheck: Healthcheck,
}

#[derive(Debug, Serialize)]
struct Healthcheck {
    test: &'static [&'static str],
    interval: &'static str,
    timeout: &'static str,
    retries: u32,
    start_period: &'static str,
}

#[derive(Debug, Serialize)]
struct Compose {
    services: Mapping,
}

/// The docker-compose.yml for `c`. The caller has checked that it has a
/// start command.
pub(super) fn compose(c: &Component, generator: &str) -> Result<String> {
    let mut kinds: Vec<(&'static Kind, &BackingService)> = Vec::new();
    for b in &c.backing_services {
        if let Some(kind) = Kind::of(b)
            && !kinds.iter().any(|(k, _)| k.kind == kind.kind)
        {
            kinds.push((kind, b));
        }
    }
    let (environment, required) = app_env(c, &kinds);
    let mut depends_on = Mapping::new();
    for (kind, _) in &kinds {
        let mut condition = Mapping::new();
        condition.insert(text("condition"), text("service_healthy"));
        depends_on.insert(text(kind.service), Value::Mapping(condition));
    }
    let app = App {
        build: ".",
        ports: if c.port == 0 {
            Vec::new()
        } else {
            vec![Port {
                target: c.port,
                published: c.port.to_string(),
            }]
        },
        environment: to_mapping(&environment),
        depends_on,
    };
    let mut services = Mapping::new();
    services.insert(text(&app_service_name(c)), to_value(&app)?);
    for (kind, b) in &kinds {
        let env: Vec<(String, String)> = kind
            .container_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let backing = Backing {
            image: kind.image(&b.version),
            environment: to_mapping(&env),
            healthcheck: Healthcheck {
                test: kind.healthcheck,
                interval: "5s",
                timeout: "5s",
                retries: 20,
                start_period: "10s",
            },
        };
        services.insert(text(kind.service), to_value(&backing)?);
    }
    let body =
        serde_norway::to_string(&Compose { services }).map_err(|e| AnalyzerError::Render(e.to_string()))?;
    Ok(format!("{}{body}", header(c, generator, &required)))
}

fn header(c: &Component, generator: &str, required: &[String]) -> String {
    let mut out = format!(
        "# Generated by {} for the component `{}`.\n\
         # `docker compose up --build` builds the app from the Dockerfile that\n\
         # `reporunner analyze --export dockerfile` writes, next to this file.\n",
        comment_text(generator),
        comment_text(&c.name)
    );
    if !c.backing_services.is_empty() {
        out.push_str("# The backing services' credentials are for local use only.\n");
    }
    if !required.is_empty() {
        out.push_str(&format!(
            "# Set in the shell or an .env file before `up`: {}.\n",
            required.join(", ")
        ));
    }
    out
}

/// `text` as it may stand in a YAML comment: on one line, without the
/// characters YAML refuses (a plan's generator and names are the caller's;
/// the fuzz target `analyzer_request` found a newline and a control
/// character breaking the file).
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|ch| {
            if ch.is_control() || matches!(ch, '\u{feff}' | '\u{fffe}' | '\u{ffff}') {
                ' '
            } else {
                ch
            }
        })
        .collect()
}

/// The app's environment: the plan's defaults, the port, the connection
/// variables of its backing services (which replace the plan's
/// localhost defaults), and the secrets and required values to be given.
fn app_env(
    c: &Component,
    kinds: &[(&'static Kind, &BackingService)],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut required = Vec::new();
    for e in c.env.iter().filter(|e| env_name_ok(&e.name)) {
        if e.secret || (e.required && e.default_value.is_empty()) {
            required.push(e.name.clone());
        } else if !e.default_value.is_empty() {
            upsert(&mut env, &e.name, &e.default_value.replace('$', "$$"));
        }
    }
    if c.port != 0 {
        let port = c.port.to_string();
        if let Some(name) = c.port_binding.strip_prefix("env:") {
            upsert(&mut env, name, &port);
        }
        upsert(&mut env, "PORT", &port);
    }
    for (kind, b) in kinds {
        let requested = b.env_vars.iter().filter(|n| env_name_ok(n));
        for name in kind.usual.iter().copied().chain(requested.map(String::as_str)) {
            let default = c
                .env
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.default_value.as_str());
            let value = keep_driver(kind.value_for(name), default);
            upsert(&mut env, name, &value.replace('$', "$$"));
        }
    }
    required.retain(|n| !env.iter().any(|(name, _)| name == n));
    required.dedup();
    for name in &required {
        upsert(
            &mut env,
            name,
            &format!("${{{name}:?set {name} in the shell or an .env file}}"),
        );
    }
    (env, required)
}

/// A URL in the scheme the plan's own default uses when it is a driver of
/// the same service (`postgresql+asyncpg://`, `mysql+pymysql://`,
/// `postgres://`), so that the app's client still understands it.
fn keep_driver(value: String, default: Option<&str>) -> String {
    let Some((theirs, _)) = default.and_then(|d| d.split_once("://")) else {
        return value;
    };
    let Some((ours, rest)) = value.split_once("://") else {
        return value;
    };
    let base = theirs.split('+').next().unwrap_or(theirs);
    let same = base == ours || (ours == "postgresql" && base == "postgres");
    let plain = theirs
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "+.-".contains(ch));
    if same && plain && theirs != ours {
        format!("{theirs}://{rest}")
    } else {
        value
    }
}

/// The component's name as a compose service name, `app` when it has none
/// or it is taken by a backing service.
fn app_service_name(c: &Component) -> String {
    let name: String = c
        .name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(['-', '_']).to_owned();
    if name.is_empty() || KINDS.iter().any(|k| k.service == name) {
        "app".to_owned()
    } else {
        name
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn to_mapping(pairs: &[(String, String)]) -> Mapping {
    pairs.iter().map(|(k, v)| (text(k), text(v))).collect()
}

fn to_value<T: Serialize>(value: &T) -> Result<Value> {
    serde_norway::to_value(value).map_err(|e| AnalyzerError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::{ComponentKind, EnvVar};

    use super::*;

    #[test]
    fn names_in_the_header_cannot_break_the_yaml() {
        let mut c = web();
        c.name = "api\nservices:\n  evil:\n    image: x\u{1}".into();
        let text = compose(&c, "gen\r\n# \u{85}\u{feff}").unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let services = doc.get("services").and_then(Value::as_mapping).unwrap();
        assert!(!services.contains_key("evil"), "{text}");
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with("# Generated by gen ") && first.contains("evil:"),
            "{first}"
        );
    }

    fn web() -> Component {
        Component {
            name: "api".into(),
            kind: ComponentKind::Web as i32,
            port: 5000,
            port_binding: "flag:--port".into(),
            env: vec![
                EnvVar {
                    name: "DATABASE_URL".into(),
                    default_value: "postgresql://localhost/dev".into(),
                    ..Default::default()
                },
                EnvVar {
                    name: "SECRET_KEY".into(),
                    secret: true,
                    required: true,
                    ..Default::default()
                },
                EnvVar {
                    name: "GREETING".into(),
                    default_value: "yes".into(),
                    ..Default::default()
                },
            ],
            backing_services: vec![
                BackingService {
                    kind: BackingServiceKind::Postgresql as i32,
                    version: "15-alpine".into(),
                    env_vars: vec!["DATABASE_URL".into(), "SQLALCHEMY_ASYNCPG_URL".into()],
                    ..Default::default()
                },
                BackingService {
                    kind: BackingServiceKind::Redis as i32,
                    version: ">=6".into(),
                    env_vars: vec!["CELERY_BROKER_URL".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn parsed(c: &Component) -> (String, Value) {
        let text = compose(c, "test").unwrap_or_else(|e| panic!("{e}"));
        let doc: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (text, doc)
    }

    fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
        path.iter()
            .fold(v, |v, k| v.get(*k).unwrap_or_else(|| panic!("no {k} in {v:?}")))
    }

    #[test]
    fn the_app_gets_its_backing_services_healthchecked_and_connected() {
        let (text, doc) = parsed(&web());
        let app = get(&doc, &["services", "api"]);
        assert_eq!(get(app, &["build"]).as_str(), Some("."), "{text}");
        assert_eq!(get(app, &["ports"])[0]["target"].as_u64(), Some(5000), "{text}");
        assert_eq!(
            get(app, &["ports"])[0]["published"].as_str(),
            Some("5000"),
            "{text}"
        );
        let env = get(app, &["environment"]);
        assert_eq!(
            get(env, &["DATABASE_URL"]).as_str(),
            Some("postgresql://app:app@postgres:5432/app"),
            "the provisioner's URL replaces the plan's localhost default"
        );
        assert_eq!(get(env, &["PGHOST"]).as_str(), Some("postgres"));
        assert_eq!(get(env, &["PGPORT"]).as_str(), Some("5432"));
        assert_eq!(
            get(env, &["SQLALCHEMY_ASYNCPG_URL"]).as_str(),
            Some("postgresql+asyncpg://app:app@postgres:5432/app")
        );
        assert_eq!(get(env, &["REDIS_URL"]).as_str(), Some("redis://redis:6379/0"));
        assert_eq!(
            get(env, &["CELERY_BROKER_URL"]).as_str(),
            Some("redis://redis:6379/0")
        );
        assert_eq!(get(env, &["GREETING"]).as_str(), Some("yes"), "{text}");
        assert_eq!(get(env, &["PORT"]).as_str(), Some("5000"));
        assert_eq!(
            get(env, &["SECRET_KEY"]).as_str(),
            Some("${SECRET_KEY:?set SECRET_KEY in the shell or an .env file}")
        );
        for db in ["postgres", "redis"] {
            assert_eq!(
                get(app, &["depends_on", db, "condition"]).as_str(),
                Some("service_healthy"),
                "{text}"
            );
            assert!(get(&doc, &["services", db, "healthcheck", "test"]).is_sequence());
        }
        assert_eq!(
            get(&doc, &["services", "postgres", "image"]).as_str(),
            Some("postgres:15-alpine")
        );
        assert_eq!(
            get(&doc, &["services", "redis", "image"]).as_str(),
            Some("redis:7")
        );
        assert_eq!(
            get(
                &doc,
                &["services", "postgres", "environment", "POSTGRES_PASSWORD"]
            )
            .as_str(),
            Some("app")
        );
        assert!(text.contains("SECRET_KEY"), "{text}");
    }

    #[test]
    fn a_driver_named_in_the_plan_s_url_is_kept() {
        let mut c = web();
        c.env[0].default_value = "postgresql+asyncpg://dev:dev@localhost:5432/dev".into();
        c.env[2].name = "REDIS_URL".into();
        c.env[2].default_value = "rediss://cache.example:6380/0".into();
        let (text, doc) = parsed(&c);
        let env = get(&doc, &["services", "api", "environment"]);
        assert_eq!(
            get(env, &["DATABASE_URL"]).as_str(),
            Some("postgresql+asyncpg://app:app@postgres:5432/app"),
            "{text}"
        );
        assert_eq!(
            get(env, &["REDIS_URL"]).as_str(),
            Some("redis://redis:6379/0"),
            "the compose redis has no TLS"
        );
    }

    #[test]
    fn values_that_yaml_or_compose_would_misread_are_kept_as_written() {
        let mut c = web();
        c.backing_services.clear();
        c.name = "redis".into();
        c.port = 0;
        c.env = [
            "on",
            "0755",
            "null",
            "a: b",
            "- x",
            "#x",
            "cost $5",
            "\"q\" 'q'",
            "1e3",
            "~",
        ]
        .iter()
        .enumerate()
        .map(|(i, v)| EnvVar {
            name: format!("V{i}"),
            default_value: (*v).into(),
            ..Default::default()
        })
        .collect();
        let (text, doc) = parsed(&c);
        let env = get(&doc, &["services", "app", "environment"]);
        for (i, v) in [
            "on",
            "0755",
            "null",
            "a: b",
            "- x",
            "#x",
            "cost $$5",
            "\"q\" 'q'",
            "1e3",
            "~",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(get(env, &[&format!("V{i}")]).as_str(), Some(*v), "{text}");
        }
        assert!(get(&doc, &["services", "app"]).get("depends_on").is_none());
    }

    #[test]
    fn mysql_mongodb_and_rabbitmq_have_images_and_urls() {
        let mut c = web();
        c.env.clear();
        c.backing_services = [
            BackingServiceKind::Mysql,
            BackingServiceKind::Mongodb,
            BackingServiceKind::Rabbitmq,
        ]
        .iter()
        .map(|k| BackingService {
            kind: *k as i32,
            env_vars: if *k == BackingServiceKind::Mysql {
                vec!["SPRING_DATASOURCE_JDBC_URL".into()]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
        let (text, doc) = parsed(&c);
        let env = get(&doc, &["services", "api", "environment"]);
        assert_eq!(
            get(env, &["DATABASE_URL"]).as_str(),
            Some("mysql://app:app@mysql:3306/app")
        );
        assert_eq!(get(env, &["DB_HOST"]).as_str(), Some("mysql"));
        assert_eq!(
            get(env, &["MONGODB_URI"]).as_str(),
            Some("mongodb://mongodb:27017/app")
        );
        assert_eq!(
            get(env, &["AMQP_URL"]).as_str(),
            Some("amqp://app:app@rabbitmq:5672")
        );
        assert_eq!(
            get(env, &["SPRING_DATASOURCE_JDBC_URL"]).as_str(),
            Some("jdbc:mysql://mysql:3306/app?user=app&password=app"),
            "{text}"
        );
        for (service, image) in [
            ("mysql", "mysql:8.4"),
            ("mongodb", "mongo:7"),
            ("rabbitmq", "rabbitmq:3"),
        ] {
            assert_eq!(
                get(&doc, &["services", service, "image"]).as_str(),
                Some(image),
                "{text}"
            );
        }
    }
}
