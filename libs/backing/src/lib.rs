//! Which part of a backing service's connection an environment variable
//! name asks for. The provisioner (the values of a run) and the compose
//! export (the values of an exported stack) both answer names by it.
#![forbid(unsafe_code)]

/// A part of a connection, as a variable's name asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The connection URL in the service's usual scheme: `*URL`, `*URI`,
    /// `*DSN`, and any name that says nothing more specific.
    Url,
    /// A JDBC URL (`*JDBC*URL`): for SQL servers.
    JdbcUrl,
    /// A SQLAlchemy asyncpg URL (`*ASYNCPG*URL`): for PostgreSQL.
    AsyncpgUrl,
    Host,
    Port,
    User,
    Password,
    Database,
}

/// The part `name` asks for (case does not matter).
pub fn part_for(name: &str) -> Part {
    let upper = name.to_ascii_uppercase();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| upper.ends_with(s));
    if ends(&["URL", "URI", "DSN"]) {
        if upper.contains("JDBC") {
            Part::JdbcUrl
        } else if upper.contains("ASYNCPG") {
            Part::AsyncpgUrl
        } else {
            Part::Url
        }
    } else if ends(&["HOST", "HOSTNAME", "SERVER"]) {
        Part::Host
    } else if ends(&["PORT"]) {
        Part::Port
    } else if ends(&["USER", "USERNAME"]) {
        Part::User
    } else if ends(&["PASSWORD", "PASS", "PASSWD", "PWD"]) {
        Part::Password
    } else if ends(&["DB", "DATABASE", "NAME", "DBNAME", "INDEX"]) {
        Part::Database
    } else {
        Part::Url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ask_for_their_part() {
        for (name, part) in [
            ("DATABASE_URL", Part::Url),
            ("mongo_uri", Part::Url),
            ("SENTRY_DSN", Part::Url),
            ("SPRING_DATASOURCE_JDBC_URL", Part::JdbcUrl),
            ("ASYNCPG_DATABASE_URL", Part::AsyncpgUrl),
            ("PGHOST", Part::Host),
            ("DB_SERVER", Part::Host),
            ("REDIS_PORT", Part::Port),
            ("POSTGRES_USER", Part::User),
            ("DB_PASSWD", Part::Password),
            ("PGDATABASE", Part::Database),
            ("DB_NAME", Part::Database),
            ("REDIS_INDEX", Part::Database),
            ("CACHE", Part::Url),
        ] {
            assert_eq!(part_for(name), part, "{name}");
        }
    }
}
