//! README shell blocks: a last resort, ranked below every structured source.

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::{Command, ComponentKind};

use super::{
    util::{default_name, is_watch, language_of, port_in, runtime_of},
    weight,
};
use crate::{
    draft::{Draft, ev},
    index::{RepoIndex, join},
};

static START: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"^python3? manage\.py runserver",
        r"^(?:uvicorn|gunicorn|hypercorn|daphne) \S+",
        r"^(?:flask (?:--app \S+ )?run|streamlit run \S+)",
        r"^(?:uv run |poetry run |pipenv run )?python3? (?:-m \w[\w.]*|\S+\.py)(?: .*)?$",
        r"^(?:npm (?:run )?(?:start|dev|serve)|yarn (?:start|dev|serve)|pnpm (?:run )?(?:start|dev)|bun (?:run )?(?:start|dev)|node \S+\.m?js)",
        r"^cargo run",
        r"^go run",
        r"^(?:\./mvnw|mvn) spring-boot:run|^(?:\./gradlew|gradle) bootRun|^java -jar \S+",
        r"^make (?:run|serve|start|dev)",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});
static INSTALL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?:pip3? install (?:-r \S+|-e \.|\.)|poetry install|uv sync|pipenv install|npm (?:install|ci)|yarn(?: install)?$|pnpm install|bun install)").ok()
});
/// Commands a README documents to initialise a database before the first
/// start: migrations, schema creation, seed data. Interactive ones
/// (`createsuperuser`) are not.
static INIT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:(?:uv|poetry|pipenv) run )?(?:",
        r"flask (?:--app \S+ )?(?:db upgrade|init-db|init_db|initdb|create-db|create_db|createdb|create-tables|create_tables|forge|seed|deploy)$",
        r"|python3? (?:\S+/)?(?:create_db|init_db|initdb|db_create|db_init|create_tables|setup_db|seed|seed_db)\.py$",
        r"|(?:python3? )?(?:\./)?manage\.py (?:migrate|db upgrade|(?:load|seed|init|create)[\w-]*(?: [\w./-]+)?)(?: --noinput)?$",
        r"|alembic upgrade head$",
        r"|(?:npx )?prisma (?:migrate deploy|db push)$",
        r"|(?:npm|yarn|pnpm|bun) (?:run )?(?:migrate|db:migrate|db:push|db:setup|seed|db:seed)$",
        r")"
    ))
    .ok()
});
static LOCALHOST: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0):(\d{2,5})").ok());

/// Modules a README may start that live outside the repository.
const RUNNABLE_MODULES: &[&str] = &[
    "http.server",
    "SimpleHTTPServer",
    "flask",
    "django",
    "uvicorn",
    "gunicorn",
    "hypercorn",
    "streamlit",
    "gradio",
    "mkdocs",
];

/// Whether the file or module a README start command names is in the
/// repository: a library's README shows how *its users* start their apps
/// (`uvicorn main:app`, `python -m app`, `node server.js`), with files the
/// library does not have.
fn names_what_exists(idx: &RepoIndex, dir: &str, command: &str) -> bool {
    let words: Vec<&str> = command
        .split_whitespace()
        .skip_while(|w| matches!(*w, "uv" | "poetry" | "pipenv" | "run"))
        .collect();
    let file = |name: &str| idx.has(&join(dir, name)) || idx.has(&join(dir, &format!("src/{name}")));
    let module = |name: &str| {
        let path = name.replace('.', "/");
        RUNNABLE_MODULES.contains(&name)
            || file(&format!("{path}.py"))
            || file(&format!("{path}/__init__.py"))
            || file(&format!("{path}/__main__.py"))
    };
    match words.as_slice() {
        [server, rest @ ..] if matches!(*server, "uvicorn" | "gunicorn" | "hypercorn" | "daphne") => {
            // `module:app`; an app factory's `'module:create_app()'` too.
            let target = rest
                .iter()
                .find(|w| w.contains(':'))
                .map(|w| w.trim_matches(['\'', '"']));
            target.is_none_or(|target| module(target.split(':').next().unwrap_or(target)))
        }
        [python, "-m", name, ..] if python.starts_with("python") => module(name),
        [python, script, ..] if python.starts_with("python") && script.ends_with(".py") => file(script),
        ["node", script, ..] => file(script),
        ["streamlit", "run", script, ..] => file(script),
        _ => true,
    }
}

/// (line, command) of shell lines in fenced blocks.
fn shell_lines(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut shell = false;
    for (i, raw) in text.lines().enumerate().take(5000) {
        let t = raw.trim();
        if let Some(lang) = t.strip_prefix("```").or_else(|| t.strip_prefix("~~~")) {
            if in_block {
                in_block = false;
            } else {
                in_block = true;
                let lang = lang.trim().to_ascii_lowercase();
                shell = matches!(
                    lang.as_str(),
                    "" | "sh"
                        | "bash"
                        | "shell"
                        | "console"
                        | "zsh"
                        | "shell-session"
                        | "shellsession"
                        | "terminal"
                        | "cmd"
                        | "powershell"
                );
            }
            continue;
        }
        if let Some(rst) = t.strip_prefix("$ ") {
            out.push((i as u32 + 1, rst.trim().to_owned()));
            continue;
        }
        if in_block && shell && !t.is_empty() && !t.starts_with('#') {
            let t = t.split(" #").next().unwrap_or(t).trim();
            out.push((i as u32 + 1, t.trim_start_matches("> ").to_owned()));
        }
    }
    out
}

pub fn apply(idx: &RepoIndex, drafts: &mut Vec<Draft>) {
    let names = [
        "README.md",
        "README.rst",
        "README",
        "README.txt",
        "readme.md",
        "Readme.md",
    ];
    let mut dirs: Vec<String> = drafts.iter().map(|d| d.dir().to_owned()).collect();
    if !dirs.iter().any(|d| d.is_empty()) {
        dirs.push(String::new());
    }
    for dir in dirs {
        let Some(file) = names.iter().map(|n| join(&dir, n)).find(|f| idx.has(f)) else {
            continue;
        };
        let Some(text) = idx.read(&file) else { continue };
        let lines = commands_for(drafts, &dir, &text);
        let start = lines.iter().find_map(|(l, c)| {
            START
                .iter()
                .position(|re| re.is_match(c))
                .filter(|_| names_what_exists(idx, &dir, c))
                .map(|rank| (rank, *l, c.clone()))
        });
        let install = lines
            .iter()
            .find(|(_, c)| INSTALL.as_ref().is_some_and(|re| re.is_match(c)))
            .cloned();
        let port = LOCALHOST
            .as_ref()
            .and_then(|re| re.captures(&text))
            .and_then(|c| c.get(1))
            .and_then(|m| m.as_str().parse::<u32>().ok());
        let start = start.map(|(_, line, c)| (line, c));
        let init: Vec<(u32, String)> = lines
            .iter()
            .filter(|(_, c)| {
                INIT.as_ref().is_some_and(|re| re.is_match(c)) && names_what_exists(idx, &dir, c)
            })
            .take(3)
            .cloned()
            .collect();
        let Some(d) = target(idx, drafts, &dir, start.as_ref()) else {
            continue;
        };
        if let Some((line, c)) = start {
            readme_start(d, &file, line, c, port);
        }
        for (line, c) in init {
            super::init::add_setup(d, ev("setup", &file, line, c.clone(), weight::README), &c);
        }
        if let Some((line, c)) = install
            && d.offer(ev("install", &file, line, c.clone(), weight::README))
        {
            d.c.install = Some(Command {
                run: c,
                working_dir: String::new(),
                watch_mode: false,
            });
        }
        if let Some(p) = port
            && d.c.port == 0
            && d.c.start.is_some()
        {
            d.set_port(
                ev(
                    "port",
                    &file,
                    0,
                    format!("README mentions localhost:{p}"),
                    weight::README,
                ),
                p,
            );
        }
    }
}

/// The README's shell commands that fit the component at `dir`: scripts it
/// has, and its own language (a command for another language is about
/// another part of the repository).
fn commands_for(drafts: &[Draft], dir: &str, text: &str) -> Vec<(u32, String)> {
    let scripts: Option<std::collections::BTreeSet<String>> = drafts
        .iter()
        .find(|d| d.dir() == dir)
        .map(|d| d.scripts.clone())
        .filter(|s| !s.is_empty());
    let script_exists = |c: &str| -> bool {
        let words: Vec<&str> = c.split_whitespace().collect();
        let name = match words.as_slice() {
            ["npm", "start", ..] | ["yarn", "start", ..] => Some("start"),
            ["npm" | "pnpm" | "bun", "run", s, ..] => Some(*s),
            ["yarn" | "pnpm", s, ..]
                if !matches!(*s, "install" | "add" | "i" | "dlx" | "exec" | "create") =>
            {
                Some(*s)
            }
            _ => None,
        };
        match (name, &scripts) {
            (Some(n), Some(s)) => s.contains(n),
            (Some(_), None) => drafts.iter().all(|d| d.dir() != dir),
            _ => true,
        }
    };
    let language = drafts
        .iter()
        .find(|d| d.dir() == dir)
        .map(|d| d.c.language.clone())
        .unwrap_or_default();
    let same_language = |c: &str| -> bool {
        let l = language_of(c);
        l.is_empty()
            || language.is_empty()
            || l == language
            || (l == "javascript" && language == "typescript")
            || (l == "python" && language == "html")
    };
    shell_lines(text)
        .into_iter()
        .filter(|(_, c)| script_exists(c) && same_language(c))
        .collect()
}

/// The component the README at `dir` speaks for; at the root of a
/// repository with no component, a new one when the README says how to start.
fn target<'a>(
    idx: &RepoIndex,
    drafts: &'a mut Vec<Draft>,
    dir: &str,
    start: Option<&(u32, String)>,
) -> Option<&'a mut Draft> {
    let pos = drafts
        .iter()
        .position(|d| d.dir() == dir)
        .or_else(|| (dir.is_empty() && drafts.len() == 1).then_some(0));
    match pos {
        Some(p) => drafts.get_mut(p),
        None if dir.is_empty() && drafts.is_empty() && start.is_some() => {
            let cmd_text = start.map(|s| s.1.clone()).unwrap_or_default();
            let language = language_of(&cmd_text);
            let name = default_name(idx, "");
            let mut d = Draft::new(&name, "", if language.is_empty() { "shell" } else { language });
            d.from_readme = true;
            d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
                name: runtime_of(language).into(),
                version_constraint: String::new(),
                preferred_version: String::new(),
            });
            drafts.push(d);
            drafts.last_mut()
        }
        None => None,
    }
}

/// A README start command, weakest of all evidence.
fn readme_start(d: &mut Draft, file: &str, line: u32, c: String, port: Option<u32>) {
    let uses_port = c.contains("$PORT");
    let p = if d.c.port != 0 {
        d.c.port
    } else {
        port.or_else(|| port_in(&c)).unwrap_or(0)
    };
    if d.set_start(
        ev("start", file, line, c.clone(), weight::README),
        Some(Command {
            run: c.clone(),
            working_dir: String::new(),
            watch_mode: is_watch(&c),
        }),
        p,
        if uses_port { "env:PORT" } else { "" },
    ) {
        d.c.port = p;
        if p != 0 && d.kind() == ComponentKind::Unspecified {
            d.set_kind(ComponentKind::Web);
        }
        if c.contains("runserver") {
            d.c.port_binding = "django-runserver".into();
            d.c.port = 8000;
        }
    }
}
