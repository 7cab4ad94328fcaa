//! Database initialisation the repository documents or defines, as setup
//! commands run once after install and before start: Flask CLI commands
//! that create the schema (`@app.cli.command("init-db")`), Flask-Migrate
//! migrations (`flask db upgrade`), and Makefile targets named for it. README
//! shell blocks are read by `readme.rs` and added through [`add_setup`].

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::{Command, Evidence};

use super::{
    util::{find_line, source_files},
    weight,
};
use crate::{
    draft::{Draft, ev},
    index::{RepoIndex, join},
};

/// The setup commands one component may be given here, at most.
const MAX_SETUP: usize = 6;

/// Names of CLI commands and make targets that initialise a database.
const INIT_NAMES: &[&str] = &[
    "init-db",
    "init_db",
    "initdb",
    "db-init",
    "db_init",
    "create-db",
    "create_db",
    "createdb",
    "create-tables",
    "create_tables",
    "db-create",
    "setup-db",
    "setup_db",
];

/// `@app.cli.command("name")`, `@app.cli.command()` then `def name(`, and
/// `@click.command("name")` (registered with `app.cli.add_command`).
static CLI_COMMAND: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"@(?:\w+\.cli|click)\.command\(\s*(?:["']([\w-]+)["'])?[^)]*\)\s*(?:@[^\n]*\n\s*)*def (\w+)\("#,
    )
    .ok()
});

/// Adds `run` to the component's setup commands unless it is there already.
pub(super) fn add_setup(d: &mut Draft, evidence: Evidence, run: &str) {
    let run = run.trim();
    if run.is_empty() || d.c.setup.len() >= MAX_SETUP || d.c.setup.iter().any(|c| same_command(&c.run, run)) {
        return;
    }
    d.offer(evidence);
    d.c.setup.push(Command {
        run: run.to_owned(),
        working_dir: String::new(),
        watch_mode: false,
    });
}

/// Two setup commands that do the same (`python manage.py migrate` with or
/// without `--noinput`, `init_db` or `init-db`).
fn same_command(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.replace("--noinput", "")
            .replace('_', "-")
            .split_whitespace()
            .skip_while(|w| matches!(*w, "python" | "python3"))
            .filter(|w| !w.starts_with("--app") && !w.contains(':'))
            .map(|w| w.trim_start_matches("./"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (a, b) = (norm(a), norm(b));
    a == b
        || (a.starts_with("flask") && b.starts_with("flask") && a.rsplit(' ').next() == b.rsplit(' ').next())
}

pub fn apply(idx: &RepoIndex, d: &mut Draft) {
    if d.c.language == "python" && d.has_framework("flask") {
        flask(idx, d);
    }
    if matches!(d.c.language.as_str(), "javascript" | "typescript") {
        node_scripts(idx, d);
    }
    makefile(idx, d);
}

/// Script names a Node project sets its database up with.
const NODE_SETUP_SCRIPTS: &[&str] = &[
    "setup",
    "db:setup",
    "setup:db",
    "db:migrate",
    "migrate",
    "db:push",
    "prisma:migrate",
];

/// A package.json script of those names whose body migrates, generates or
/// seeds a database (`prisma generate && prisma migrate deploy && prisma db
/// seed`): a `setup` that installs tools or copies files is not one.
fn node_scripts(idx: &RepoIndex, d: &mut Draft) {
    static DATABASE: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"(?i)\b(?:prisma|migrat\w*|seed\w*|knex|sequelize|typeorm|drizzle-kit|db:\w+)\b").ok()
    });
    let file = join(d.dir(), "package.json");
    let Some(text) = idx.read(&file) else { return };
    let Ok(package) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let Some(scripts) = package.get("scripts").and_then(|s| s.as_object()) else {
        return;
    };
    let Some(re) = DATABASE.as_ref() else { return };
    let Some((name, _)) = NODE_SETUP_SCRIPTS.iter().find_map(|name| {
        let body = scripts.get(*name)?.as_str()?;
        (re.is_match(body) && !body.contains("docker")).then_some((*name, body))
    }) else {
        return;
    };
    let manager = match d.c.package_manager.as_str() {
        "" => "npm",
        other => other,
    };
    let run = format!("{manager} run {name}");
    add_setup(
        d,
        ev(
            "setup",
            &file,
            find_line(&text, &format!("\"{name}\"")),
            format!("script {name}"),
            weight::SCRIPT,
        ),
        &run,
    );
}

/// `flask --app X` as the start command says it, else plain `flask` (the
/// plan's FLASK_APP, or Flask's own discovery).
fn flask_prefix(d: &Draft, fallback: Option<&str>) -> String {
    let start = d.c.start.as_ref().map(|c| c.run.as_str()).unwrap_or_default();
    let words: Vec<&str> = start.split_whitespace().collect();
    if let Some(i) = words.iter().position(|w| *w == "--app")
        && let Some(app) = words.get(i + 1)
    {
        return format!("flask --app {app}");
    }
    if let Some(app) = words.iter().find_map(|w| w.strip_prefix("--app=")) {
        return format!("flask --app {app}");
    }
    if d.c
        .env
        .iter()
        .any(|e| e.name == "FLASK_APP" && !e.default_value.is_empty())
    {
        return "flask".to_owned();
    }
    match fallback {
        Some(module) => format!("flask --app {module}"),
        None => "flask".to_owned(),
    }
}

/// The module a source file is, relative to the component (`app.py` → `app`,
/// `flaskr/__init__.py` → `flaskr`).
fn module_of(dir: &str, file: &str) -> String {
    let rel = super::util::rel_to(dir, file);
    let rel = rel.strip_prefix("src/").unwrap_or(rel);
    rel.trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".")
}

fn flask(idx: &RepoIndex, d: &mut Draft) {
    let dir = d.dir().to_owned();
    // Flask-Migrate keeps its Alembic set-up in migrations/.
    let migrations = join(&dir, "migrations/env.py");
    if d.has_any_dep(&["flask-migrate", "flask_migrate"]) && idx.has(&migrations) {
        let run = format!("{} db upgrade", flask_prefix(d, None));
        add_setup(
            d,
            ev(
                "setup",
                &migrations,
                0,
                "Flask-Migrate migrations",
                weight::FRAMEWORK,
            ),
            &run,
        );
        return;
    }
    let Some(re) = CLI_COMMAND.as_ref() else { return };
    for file in source_files(
        idx,
        &dir,
        &[".py"],
        &["__init__.py", "app.py", "db.py", "cli.py"],
        40,
    ) {
        let Some(text) = idx.read_source(&file) else {
            continue;
        };
        if !text.contains("command(") {
            continue;
        }
        for c in re.captures_iter(&text).take(50) {
            // Click names a command after its function, underscores as dashes.
            let name = c
                .get(1)
                .map_or_else(|| c[2].replace('_', "-"), |m| m.as_str().to_owned());
            if !INIT_NAMES.contains(&name.as_str()) {
                continue;
            }
            let module = module_of(&dir, &file);
            let run = format!("{} {name}", flask_prefix(d, Some(&module)));
            let line = find_line(&text, &format!("def {}(", &c[2]));
            add_setup(
                d,
                ev(
                    "setup",
                    &file,
                    line,
                    format!("Flask command {name}"),
                    weight::FRAMEWORK_GUESS,
                ),
                &run,
            );
            return;
        }
    }
}

/// A Makefile target named for database initialisation whose recipe does
/// not need Docker.
fn makefile(idx: &RepoIndex, d: &mut Draft) {
    let dir = d.dir().to_owned();
    let Some((file, text)) = ["Makefile", "makefile", "GNUmakefile"]
        .iter()
        .map(|n| join(&dir, n))
        .find_map(|f| idx.read(&f).map(|t| (f, t)))
    else {
        return;
    };
    let lines: Vec<&str> = text.lines().take(5000).collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((target, _)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with(['\t', ' ', '#', '.'])
            || line.contains(":=")
            || !INIT_NAMES.contains(&target.trim())
        {
            continue;
        }
        let needs_docker = lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with('\t'))
            .take(50)
            .any(|l| l.contains("docker") || l.contains("podman"));
        if needs_docker {
            continue;
        }
        let run = format!("make {}", target.trim());
        add_setup(
            d,
            ev(
                "setup",
                &file,
                i as u32 + 1,
                format!("make target {}", target.trim()),
                weight::CONVENTION,
            ),
            &run,
        );
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::same_command;

    #[test]
    fn one_setup_command_written_two_ways_is_the_same() {
        assert!(same_command(
            "python manage.py migrate",
            "./manage.py migrate --noinput"
        ));
        assert!(same_command("flask --app app init-db", "flask init_db"));
        assert!(!same_command(
            "python manage.py migrate",
            "python manage.py load_initial_data"
        ));
    }
}
