//! Builds that need a compiler or system library, Java, Go, wrapper scripts
//! that are not executable, and start commands that exit at once (or print
//! their usage: a command-line program started without its subcommand).

use reporunner_proto::{agents::resolver::v1::Phase, common::v1::CommandSlot};

use super::{Context, Finding, Hit, Rule, Situation, lazy_regex};

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule {
            cause: "build.pg_config_missing",
            pattern: r"pg_config executable not found|pg_config: (?:command )?not found|Error: pg_config",
            rank: 85,
            confidence: 0.9,
            phases: &[],
            check: pg_config,
        },
        Rule {
            cause: "build.mysql_config_missing",
            pattern: r"mysql_config(?::)? (?:command )?not found|OSError: mysql_config not found|Can not find valid pkg-config name",
            rank: 85,
            confidence: 0.85,
            phases: &[],
            check: mysql_config,
        },
        Rule {
            cause: "build.python_headers_missing",
            pattern: r"fatal error: Python\.h: No such file or directory",
            rank: 80,
            confidence: 0.9,
            phases: &[],
            check: |_, _| {
                Some(Finding::new(
                    "a C extension needs the Python headers (Debian package python3-dev)",
                ))
            },
        },
        Rule {
            cause: "build.libffi_missing",
            pattern: r"fatal error: ffi\.h: No such file or directory|No package 'libffi' found",
            rank: 80,
            confidence: 0.9,
            phases: &[],
            check: |_, _| {
                Some(Finding::new(
                    "a C extension needs libffi (Debian package libffi-dev)",
                ))
            },
        },
        Rule {
            cause: "build.openssl_headers_missing",
            pattern: r"fatal error: openssl/\w+\.h: No such file or directory",
            rank: 80,
            confidence: 0.9,
            phases: &[],
            check: |_, _| {
                Some(Finding::new(
                    "a native build needs the OpenSSL headers (Debian package libssl-dev)",
                ))
            },
        },
        Rule {
            cause: "build.compiler_missing",
            pattern: r"\b(?:gcc|cc|g\+\+|x86_64-linux-gnu-gcc|make): (?:command )?not found|error: command '[\w/.+-]*gcc' failed: No such file or directory|unable to execute '[\w/.+-]*gcc'|linker `cc` not found|No CMAKE_C_COMPILER could be found",
            rank: 75,
            confidence: 0.85,
            phases: &[],
            check: compiler_missing,
        },
        Rule {
            cause: "java.home_missing",
            pattern: r"JAVA_HOME is not set|JAVA_HOME is set to an invalid directory|JAVA_HOME is not defined correctly",
            rank: 75,
            confidence: 0.85,
            phases: &[],
            check: java_home,
        },
        Rule {
            cause: "go.no_main_module",
            pattern: r"go: cannot find main module|go\.mod file not found in current directory or any parent directory",
            rank: 75,
            confidence: 0.6,
            phases: &[],
            check: go_module,
        },
        Rule {
            cause: "misc.script_not_executable",
            pattern: r"(?P<script>\./[A-Za-z0-9_.-]+): Permission denied",
            rank: 70,
            confidence: 0.9,
            phases: &[],
            check: not_executable,
        },
    ]
}

pub(super) fn situations() -> Vec<Situation> {
    vec![
        Situation {
            cause: "start.exited_immediately",
            rank: 10,
            confidence: 0.7,
            check: exited_immediately,
        },
        Situation {
            cause: "start.printed_usage",
            rank: 12,
            confidence: 0.75,
            check: printed_usage,
        },
    ]
}

/// Subcommands that start a long-running server, most likely first.
const SERVE_SUBCOMMANDS: &[&str] = &["serve", "server", "runserver", "web", "start", "run", "up"];

lazy_regex!(USAGE_LINE, r"^\s*(?i:usage):\s+\S+");
lazy_regex!(
    COMMANDS_HEADER,
    r"^\s*(?i:commands|subcommands|available commands|available subcommands|positional arguments):?\s*$"
);
lazy_regex!(
    COMMAND_ENTRY,
    r"^\s{1,8}(?P<name>[a-z][a-z0-9_-]{0,30})(?:\s{2,}\S.*|\s*)$"
);
lazy_regex!(BRACED, r"\{(?P<names>[a-z][a-z0-9_-]*(?:,[a-z][a-z0-9_-]*)+)\}");

/// The subcommands a usage text lists: argparse's `{a,b}` and the entries
/// under a `Commands:` header (clap, click, cobra), in order.
fn usage_subcommands(lines: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_section = false;
    for line in lines {
        if let Some(caps) = BRACED.captures(line) {
            names.extend(caps["names"].split(',').map(str::to_owned));
        }
        if COMMANDS_HEADER.is_match(line) {
            in_section = true;
            continue;
        }
        if in_section {
            match COMMAND_ENTRY.captures(line) {
                Some(caps) => names.push(caps["name"].to_owned()),
                None if line.trim().is_empty() => {}
                None => in_section = false,
            }
        }
    }
    names.dedup();
    names
}

/// The start command with `sub` appended, as an argument of the program
/// (after `--` for `cargo run`).
fn with_subcommand(run: &str, sub: &str) -> String {
    let run = run.trim_end();
    let cargo = run.starts_with("cargo run") && !run.split_whitespace().any(|w| w == "--");
    if cargo {
        format!("{run} -- {sub}")
    } else {
        format!("{run} {sub}")
    }
}

/// The start command ended at once printing its usage: a command-line
/// program that wants a subcommand or arguments. When its usage lists a
/// subcommand that serves (`serve`, `runserver`, ...), start with it.
fn printed_usage(ctx: &Context<'_>) -> Option<Finding> {
    let short = ctx.lines.iter().filter(|l| !l.trim().is_empty()).count() <= 60;
    if ctx.phase != Phase::Start || !short || !ctx.lines.iter().any(|l| USAGE_LINE.is_match(l)) {
        return None;
    }
    let current = ctx.command(CommandSlot::Start).map(|c| c.run.trim().to_owned());
    let listed = usage_subcommands(&ctx.lines);
    let serving = SERVE_SUBCOMMANDS
        .iter()
        .find(|sub| listed.iter().any(|l| l == *sub))
        .copied();
    let summary = format!(
        "the start command printed its usage and exited with status {}: the program wants a subcommand \
         or other arguments to run as a server",
        ctx.exit_code
    );
    match (current, serving) {
        (Some(run), Some(sub)) if !run.split_whitespace().any(|w| w == sub) => Some(
            Finding::new(format!("{summary}; its usage lists `{sub}`")).patch(ctx.replace(
                CommandSlot::Start,
                &with_subcommand(&run, sub),
                format!("the program's usage lists the `{sub}` subcommand"),
            )),
        ),
        // Exit 0 is `start.exited_immediately`'s, with the plan's other
        // candidates; a usage that offers nothing to serve adds nothing.
        _ if ctx.exit_code == 0 => None,
        _ => Some(
            Finding::new(format!(
                "{summary}, and its usage lists no subcommand that serves"
            ))
            .confidence(0.6),
        ),
    }
}

lazy_regex!(
    PSYCOPG2_PIN,
    r"(?i)\bpsycopg2(?P<pin>==[A-Za-z0-9.]+)?(?:\s|$|\))"
);
lazy_regex!(
    MYSQLCLIENT_PIN,
    r"(?i)\bmysqlclient(?P<pin>==[A-Za-z0-9.]+)?(?:\s|$|\))"
);

/// The pin of a package the log names (`==x` or ""), preferring a line with a pin.
fn pinned(ctx: &Context<'_>, re: &regex::Regex) -> Option<String> {
    let mut found = None;
    for caps in ctx.lines.iter().filter_map(|l| re.captures(l)) {
        match caps.name("pin") {
            Some(pin) => return Some(pin.as_str().to_owned()),
            None => found = Some(String::new()),
        }
    }
    found
}

fn pg_config(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let summary = "building psycopg2 needs pg_config (Debian package libpq-dev)";
    let pin = pinned(ctx, &PSYCOPG2_PIN);
    Some(match pin {
        Some(pin) => {
            Finding::new(format!("{summary}; psycopg2-binary ships prebuilt wheels")).patch(ctx.relax_pin(
                "psycopg2",
                &pin,
                &format!("psycopg2-binary{pin}"),
                "swap: psycopg2-binary is the same driver with wheels, no pg_config needed",
            ))
        }
        None => Finding::new(summary).confidence(0.7),
    })
}

fn mysql_config(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let summary =
        "building mysqlclient needs mysql_config (Debian packages default-libmysqlclient-dev and pkg-config)";
    let pin = pinned(ctx, &MYSQLCLIENT_PIN);
    Some(match pin {
        Some(pin) => Finding::new(format!(
            "{summary}; PyMySQL is a pure-Python driver (code importing MySQLdb needs pymysql.install_as_MySQLdb())"
        ))
        .patch(ctx.relax_pin(
            "mysqlclient",
            &pin,
            "PyMySQL",
            "swap: PyMySQL needs no compiler or MySQL client library",
        ))
        .confidence(0.6),
        None => Finding::new(summary).confidence(0.7),
    })
}

fn compiler_missing(_: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(Finding::new(
        "the build needs a C compiler that is not installed (Debian package build-essential)",
    ))
}

fn java_home(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let java = ctx.toolchains.iter().find(|t| t.name == "java");
    let home = java
        .and_then(|t| t.path.strip_suffix("/bin/java"))
        .filter(|h| !h.is_empty());
    Some(match home {
        Some(home) => Finding::new("JAVA_HOME is not set; a JDK is installed").patch(ctx.set_env(
            "JAVA_HOME",
            home,
            format!("the installed java is {}", java.map_or("", |t| t.path.as_str())),
        )),
        None => Finding::new("JAVA_HOME is not set and no JDK is installed (Debian package default-jdk)")
            .confidence(0.6),
    })
}

fn go_module(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let name = ctx
        .component_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect::<String>();
    let name = if name.is_empty() { "app".to_owned() } else { name };
    let run = format!("test -f go.mod || go mod init example.invalid/{name}; go mod tidy");
    Some(
        Finding::new("the Go code has no go.mod (a GOPATH-era repository)").patch(ctx.replace(
            CommandSlot::Install,
            &run,
            "creates a module for a GOPATH-era repository and resolves its imports",
        )),
    )
}

fn not_executable(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let script = hit.get("script");
    let summary = format!("{script} is not executable (its mode bit was lost)");
    let slots = [
        ctx.phase_slot(),
        CommandSlot::Install,
        CommandSlot::Build,
        CommandSlot::Start,
        CommandSlot::Test,
    ];
    let found = slots.into_iter().find_map(|slot| {
        let command = ctx.command(slot)?;
        let words: Vec<&str> = command.run.split_whitespace().collect();
        let at = words.iter().position(|w| *w == script)?;
        if at > 0 && matches!(words[at - 1], "sh" | "bash") {
            return None;
        }
        let mut fixed = words.clone();
        fixed.insert(at, "sh");
        Some((slot, fixed.join(" ")))
    });
    Some(match found {
        Some((slot, run)) => {
            Finding::new(summary).patch(ctx.replace(slot, &run, format!("runs {script} through sh")))
        }
        None => Finding::new(summary).confidence(0.6),
    })
}

lazy_regex!(PROCFILE, r"^[\w-]+:\s+(?P<run>.+)$");
lazy_regex!(
    LAUNCHER,
    r"^(?:python3?|node|npm|npx|yarn|pnpm|bun|deno|gunicorn|uvicorn|flask|hypercorn|daphne|waitress-serve|celery|streamlit|cargo|go|java|mvn|gradle|sh|bash|make|ruby|rails|bundle|php|dotnet|\./\S+)$"
);

/// The command an evidence detail names, if it names one.
fn evidence_command(detail: &str) -> Option<String> {
    let detail = detail.trim();
    let run = detail.strip_prefix("CMD ").unwrap_or(detail);
    let run = PROCFILE
        .captures(run)
        .and_then(|c| c.name("run").map(|m| m.as_str()))
        .unwrap_or(run)
        .trim();
    let first = run.split_whitespace().next()?;
    (LAUNCHER.is_match(first)
        && (run.split_whitespace().count() > 1 || first.starts_with("./"))
        && run.len() <= 512)
        .then(|| run.to_owned())
}

fn exited_immediately(ctx: &Context<'_>) -> Option<Finding> {
    let short = ctx.lines.iter().filter(|l| !l.trim().is_empty()).count() <= 30;
    if ctx.phase != Phase::Start || ctx.exit_code != 0 || !short {
        return None;
    }
    let current = ctx
        .command(CommandSlot::Start)
        .map(|c| c.run.trim().to_owned())
        .unwrap_or_default();
    let mut evidence: Vec<_> = ctx
        .component
        .map(|c| c.evidence.iter().filter(|e| e.field == "start").collect())
        .unwrap_or_default();
    evidence.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let next = evidence.into_iter().find_map(|e| {
        evidence_command(&e.detail)
            .filter(|run| *run != current)
            .map(|run| (run, e))
    });
    let summary = "the start command exited at once with status 0: it is not a long-running server";
    Some(match next {
        Some((run, e)) => Finding::new(summary).patch(ctx.replace(
            CommandSlot::Start,
            &run,
            format!("the next start candidate, from {}", e.file),
        )),
        None => Finding::new(format!("{summary}, and the plan has no other candidate")).confidence(0.5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_texts_list_their_subcommands() {
        let clap = [
            "Creates a book from markdown files",
            "",
            "Usage: mdbook [COMMAND]",
            "",
            "Commands:",
            "  init         Creates the boilerplate structure and files for a new book",
            "  build        Builds a book from its markdown files",
            "  serve        Serves a book at http://localhost:3000, and rebuilds it on changes",
            "  help         Print this message or the help of the given subcommand(s)",
            "",
            "Options:",
            "  -h, --help     Print help",
        ];
        assert_eq!(usage_subcommands(&clap), ["init", "build", "serve", "help"]);
        let argparse = [
            "usage: tool [-h] {sync,serve} ...",
            "tool: error: the following arguments are required: command",
        ];
        assert_eq!(usage_subcommands(&argparse), ["sync", "serve"]);
        let click = [
            "Usage: app [OPTIONS] COMMAND [ARGS]...",
            "",
            "Options:",
            "  --help  Show this message and exit.",
            "",
            "Commands:",
            "  init-db",
            "  run      Run the development server.",
        ];
        assert_eq!(usage_subcommands(&click), ["init-db", "run"]);
        assert!(usage_subcommands(&["Usage: cat [OPTION]... [FILE]..."]).is_empty());
    }

    #[test]
    fn a_subcommand_goes_to_the_program_not_to_cargo() {
        assert_eq!(with_subcommand("cargo run", "serve"), "cargo run -- serve");
        assert_eq!(with_subcommand("cargo run --", "serve"), "cargo run -- serve");
        assert_eq!(
            with_subcommand("cargo run -- --port 8080", "serve"),
            "cargo run -- --port 8080 serve"
        );
        assert_eq!(
            with_subcommand("python manage.py", "runserver"),
            "python manage.py runserver"
        );
    }

    #[test]
    fn evidence_details_become_commands() {
        assert_eq!(
            evidence_command("web: gunicorn app:app").as_deref(),
            Some("gunicorn app:app")
        );
        assert_eq!(
            evidence_command("CMD python server.py").as_deref(),
            Some("python server.py")
        );
        assert_eq!(evidence_command("index.html with no build"), None);
        assert_eq!(evidence_command("flask"), None);
    }
}
