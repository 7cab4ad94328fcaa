//! Node.js: lockfiles, peer dependencies, engines, corepack, missing modules
//! and binaries, OpenSSL 3 with old webpack, heap size, watch-mode tests,
//! Chrome and npm as root, a missing production build.

use reporunner_proto::{agents::resolver::v1::Phase, common::v1::CommandSlot};

use super::{Context, Finding, Hit, Rule, Situation, lazy_regex};
use crate::versions::{Constraint, Version, nodes};

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule {
            cause: "node.lockfile_out_of_sync",
            pattern: r"can only install packages when your package\.json and package-lock\.json (?:or npm-shrinkwrap\.json )?are in sync|ERR_PNPM_OUTDATED_LOCKFILE|Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`|YN0028: .*lockfile would have been modified",
            rank: 80,
            confidence: 0.95,
            phases: &[],
            check: lockfile,
        },
        Rule {
            cause: "node.peer_dependency_conflict",
            pattern: r"npm (?:ERR!|error) code ERESOLVE|ERESOLVE (?:unable to resolve dependency tree|could not resolve)",
            rank: 75,
            confidence: 0.9,
            phases: &[],
            check: peer_conflict,
        },
        Rule {
            cause: "node.engine_mismatch",
            pattern: r#"The engine "node" is incompatible with this module\. Expected version "(?P<spec>[^"]+)"\. Got "(?P<cur>[^"]+)""#,
            rank: 78,
            confidence: 0.9,
            phases: &[],
            check: engine_mismatch,
        },
        Rule {
            cause: "node.engine_mismatch",
            pattern: r#"npm (?:ERR!|error) (?:code )?EBADENGINE|ERR_PNPM_UNSUPPORTED_ENGINE"#,
            rank: 77,
            confidence: 0.85,
            phases: &[],
            check: engine_mismatch,
        },
        // npm only warns by default: a likely cause, not a certain one.
        Rule {
            cause: "node.engine_mismatch",
            pattern: r#"npm (?:WARN|warn) EBADENGINE"#,
            rank: 40,
            confidence: 0.5,
            phases: &[],
            check: engine_mismatch,
        },
        Rule {
            cause: "node.corepack_package_manager",
            pattern: r#"This project is configured to use (?:pnpm|yarn|npm)|This project's package\.json defines "packageManager"|Corepack must currently be enabled"#,
            rank: 80,
            confidence: 0.85,
            phases: &[],
            check: corepack,
        },
        Rule {
            cause: "node.missing_module",
            pattern: r"(?:Error: Cannot find module|Cannot find package|Module not found: Error: Can't resolve) '(?P<module>[^']+)'",
            rank: 50,
            confidence: 0.8,
            phases: &[],
            check: missing_module,
        },
        Rule {
            cause: "node.command_missing",
            pattern: r"\b(?P<cmd>tsc|ts-node|ts-node-dev|tsx|vite|next|react-scripts|nodemon|webpack|jest|vitest|nest|concurrently|rimraf|cross-env|eslint|parcel): (?:command )?not found|command not found: (?P<zsh>tsc|ts-node|tsx|vite|next|react-scripts|nodemon|jest|vitest)\b",
            rank: 60,
            confidence: 0.85,
            phases: &[],
            check: command_missing,
        },
        Rule {
            cause: "node.openssl_legacy",
            pattern: r"digital envelope routines::unsupported|ERR_OSSL_EVP_UNSUPPORTED",
            rank: 80,
            confidence: 0.9,
            phases: &[],
            check: openssl_legacy,
        },
        Rule {
            cause: "node.heap_out_of_memory",
            pattern: r"JavaScript heap out of memory|Reached heap limit Allocation failed",
            rank: 70,
            confidence: 0.8,
            phases: &[],
            check: heap,
        },
        Rule {
            cause: "test.watch_mode",
            pattern: r"Waiting for file changes|Watching for file changes|press h to show help, press q to quit|Watch Usage|No tests found related to files changed since last commit",
            rank: 80,
            confidence: 0.9,
            phases: &[Phase::Test],
            check: watch_mode_line,
        },
        Rule {
            cause: "node.chrome_sandbox_root",
            pattern: r"Running as root without --no-sandbox is not supported",
            rank: 80,
            confidence: 0.6,
            phases: &[],
            check: chrome_root,
        },
        Rule {
            cause: "node.npm_root_permissions",
            pattern: r#"npm (?:ERR!|error) code EACCES|gyp WARN EACCES current user \("nobody"\)|npm (?:ERR!|error) Error: EACCES: permission denied"#,
            rank: 60,
            confidence: 0.6,
            phases: &[],
            check: npm_root,
        },
        Rule {
            cause: "node.build_missing",
            pattern: r"Could not find a production build in the '?\.next'? directory|Cannot find module '[^']*/(?:dist|build)/[^']+'",
            rank: 65,
            confidence: 0.85,
            phases: &[Phase::Start, Phase::Probe, Phase::Test],
            check: build_missing,
        },
    ]
}

pub(super) fn situations() -> Vec<Situation> {
    vec![Situation {
        cause: "test.watch_mode",
        rank: 79,
        confidence: 0.8,
        check: watch_mode_timeout,
    }]
}

/// The package manager the log or the plan names.
fn manager(ctx: &Context<'_>) -> &'static str {
    match ctx.package_manager() {
        "pnpm" => "pnpm",
        "yarn" => "yarn",
        "bun" => "bun",
        _ => "npm",
    }
}

fn lockfile(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let line = hit.caps.get(0).map_or("", |m| m.as_str());
    let (run, who) = if line.contains("PNPM") {
        ("pnpm install --no-frozen-lockfile", "pnpm")
    } else if line.contains("YN0028") {
        ("yarn install --no-immutable", "yarn")
    } else if line.contains("yarn") {
        ("yarn install", "yarn")
    } else {
        ("npm install", "npm")
    };
    Some(
        Finding::new(format!("the {who} lockfile is out of sync with package.json")).patch(ctx.replace(
            CommandSlot::Install,
            run,
            "installs from package.json and updates the lockfile instead of refusing",
        )),
    )
}

fn peer_conflict(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(
        Finding::new("npm could not resolve conflicting peer dependencies (ERESOLVE)").patch(ctx.replace(
            CommandSlot::Install,
            "npm install --legacy-peer-deps",
            "npm 6 semantics: peer dependency conflicts do not stop the install",
        )),
    )
}

lazy_regex!(
    REQUIRED_NODE,
    r#"(?:Required|wanted): \{[^}]*"?node"?:\s*"(?P<spec>[^"]+)""#
);
lazy_regex!(
    CURRENT_NODE,
    r#"(?:Actual|current): \{[^}]*"?node"?:\s*"v?(?P<cur>[^"]+)""#
);
lazy_regex!(PNPM_EXPECTED, r"Expected version: (?P<spec>.+)$");
lazy_regex!(PNPM_GOT, r"Got: v?(?P<cur>\S+)");

fn engine_mismatch(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let spec = match hit.get("spec") {
        "" => ctx
            .find(&REQUIRED_NODE)
            .or_else(|| ctx.find(&PNPM_EXPECTED))
            .and_then(|c| c.name("spec").map(|m| m.as_str().trim().to_owned()))?,
        s => s.to_owned(),
    };
    let current = match hit.get("cur") {
        "" => ctx
            .find(&CURRENT_NODE)
            .or_else(|| ctx.find(&PNPM_GOT))
            .and_then(|c| c.name("cur").and_then(|m| Version::parse(m.as_str()))),
        c => Version::parse(c),
    };
    let constraint = Constraint::parse(&spec)?;
    if current.is_some_and(|c| constraint.allows(c)) {
        return None;
    }
    let summary = match current {
        Some(c) => format!("a package requires Node.js {spec}, and the runtime is {c}"),
        None => format!("a package requires Node.js {spec}"),
    };
    let choice = nodes(ctx.toolchains)
        .into_iter()
        .find(|n| Some(n.version) != current && constraint.allows(n.version));
    if let Some(n) = choice {
        let version = n.version.0.to_string();
        return Some(Finding::new(summary).patch(ctx.set_runtime(
            &version,
            format!("Node.js {} is installed and satisfies {spec}", n.version),
        )));
    }
    let reason = "no installed Node.js satisfies the engines field; install anyway";
    let finding = Finding::new(format!("{summary}; no installed Node.js satisfies it")).confidence(0.6);
    Some(match manager(ctx) {
        "yarn" => finding.patch(ctx.replace(CommandSlot::Install, "yarn install --ignore-engines", reason)),
        "pnpm" => finding.patch(ctx.set_env("npm_config_engine_strict", "false", reason)),
        _ => finding.patch(ctx.set_env("npm_config_engine_strict", "false", reason)),
    })
}

fn corepack(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let reason = "the installed package manager is used instead of the version packageManager pins";
    Some(
        Finding::new(
            "corepack refuses the package manager because package.json pins another (packageManager)",
        )
        .patch(ctx.set_env("COREPACK_ENABLE_STRICT", "0", reason))
        .patch(ctx.set_env("npm_config_manage_package_manager_versions", "false", reason)),
    )
}

/// The npm package an import specifier names, if it names one.
pub(crate) fn package_of(specifier: &str) -> Option<String> {
    if specifier.starts_with(['.', '/', '~', '#'])
        || specifier.starts_with("node:")
        || specifier.contains(':')
    {
        return None;
    }
    let mut parts = specifier.split('/');
    let first = parts.next()?;
    let name = if first.starts_with('@') {
        format!("{first}/{}", parts.next()?)
    } else {
        first.to_owned()
    };
    let bare = name.rsplit('/').next().unwrap_or("");
    let valid = bare.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.len() <= 214
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/'));
    valid.then_some(name)
}

fn missing_module(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let specifier = hit.get("module");
    let package = package_of(specifier)?;
    Some(
        Finding::new(format!("the Node.js package `{package}` is not installed")).patch(ctx.add_package(
            &package,
            "",
            format!("provides the module `{specifier}`"),
        )),
    )
}

/// Binaries and the packages that provide them (all development tools).
const NODE_COMMANDS: &[(&str, &str)] = &[
    ("tsc", "typescript"),
    ("ts-node", "ts-node"),
    ("ts-node-dev", "ts-node-dev"),
    ("tsx", "tsx"),
    ("vite", "vite"),
    ("next", "next"),
    ("react-scripts", "react-scripts"),
    ("nodemon", "nodemon"),
    ("webpack", "webpack-cli"),
    ("jest", "jest"),
    ("vitest", "vitest"),
    ("nest", "@nestjs/cli"),
    ("concurrently", "concurrently"),
    ("rimraf", "rimraf"),
    ("cross-env", "cross-env"),
    ("eslint", "eslint"),
    ("parcel", "parcel"),
];

fn command_missing(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let command = match hit.get("cmd") {
        "" => hit.get("zsh"),
        c => c,
    };
    let (_, package) = NODE_COMMANDS.iter().find(|(c, _)| *c == command)?;
    let mut finding = Finding::new(format!(
        "the command `{command}` is not installed (package {package}, a dev dependency)"
    ))
    .patch(ctx.add_package(package, "", format!("installs `{command}` as a dev dependency")));
    if command == "ts-node" || command == "ts-node-dev" {
        finding =
            finding.patch(ctx.add_package("typescript", "", "ts-node needs typescript as a dev dependency"));
    }
    Some(finding)
}

fn openssl_legacy(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(
        Finding::new("Node.js 17+ uses OpenSSL 3, which refuses the MD4 hash that webpack 4 uses").patch(
            ctx.set_env(
                "NODE_OPTIONS",
                "--openssl-legacy-provider",
                "enables OpenSSL's legacy algorithms for old webpack",
            ),
        ),
    )
}

fn heap(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(Finding::new("Node.js ran out of heap memory").patch(ctx.set_env(
        "NODE_OPTIONS",
        "--max-old-space-size=4096",
        "raises the V8 heap limit to 4 GiB",
    )))
}

lazy_regex!(WATCH_FLAG, r"\s--watch(?:All)?(?:=true)?\b");

/// The non-watch form of a test command.
fn non_watch(run: &str) -> String {
    let trimmed = WATCH_FLAG.replace_all(run.trim(), "").into_owned();
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    if let Some(i) = words.iter().position(|w| *w == "vitest") {
        let next = words.get(i + 1).copied();
        if !matches!(next, Some("run")) {
            let mut out = words.clone();
            out.insert(i + 1, "run");
            return out.join(" ");
        }
        return trimmed;
    }
    if words.iter().any(|w| *w == "jest" || *w == "react-scripts") {
        return format!("CI=true {trimmed} --watchAll=false");
    }
    if words.contains(&"ng") {
        return format!("{trimmed} --watch=false");
    }
    format!("CI=true {trimmed}")
}

fn watch_fix(ctx: &Context<'_>, summary: &str) -> Finding {
    let current = ctx.command(CommandSlot::Test).map(|c| c.run.as_str());
    let finding = Finding::new(summary);
    match current {
        Some(run) => {
            let fixed = non_watch(run);
            if fixed == run.trim() {
                return finding.patch(ctx.set_env("CI", "true", "test runners disable watch mode under CI"));
            }
            finding.patch(ctx.replace(
                CommandSlot::Test,
                &fixed,
                "runs the tests once instead of watching files",
            ))
        }
        None => finding.patch(ctx.set_env("CI", "true", "test runners disable watch mode under CI")),
    }
}

fn watch_mode_line(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(watch_fix(
        ctx,
        "the test command runs in watch mode and never exits",
    ))
}

fn watch_mode_timeout(ctx: &Context<'_>) -> Option<Finding> {
    if ctx.phase != Phase::Test || ctx.exit_code != 124 {
        return None;
    }
    let test = ctx.command(CommandSlot::Test)?;
    let watching = test.watch_mode || WATCH_FLAG.is_match(&format!(" {}", test.run)) || {
        let words: Vec<&str> = test.run.split_whitespace().collect();
        words.last() == Some(&"vitest")
    };
    watching.then(|| watch_fix(ctx, "the test command timed out in watch mode"))
}

fn chrome_root(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    let summary = "Chrome refuses to run as root with its sandbox; the tests run as root here";
    let finding = Finding::new(summary);
    Some(if ctx.mentions("electron") || ctx.mentions("Electron") {
        finding.patch(ctx.set_env(
            "ELECTRON_DISABLE_SANDBOX",
            "1",
            "Electron runs without its sandbox as root",
        ))
    } else {
        finding.patch(ctx.set_env(
            "CHROMIUM_FLAGS",
            "--no-sandbox",
            "Debian's chromium wrapper adds these flags; launchers that bring their own Chrome need --no-sandbox in their config",
        ))
    })
}

fn npm_root(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(
        Finding::new("npm lifecycle scripts lost permissions because npm runs as root").patch(ctx.set_env(
            "npm_config_unsafe_perm",
            "true",
            "lifecycle scripts keep root's permissions",
        )),
    )
}

fn build_missing(ctx: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    if ctx.command(CommandSlot::Build).is_some() {
        return Some(
            Finding::new("the production build is missing although the plan builds").confidence(0.5),
        );
    }
    let run = format!("{} run build", manager(ctx));
    Some(
        Finding::new("the production build is missing: the plan has no build step").patch(ctx.replace(
            CommandSlot::Build,
            &run,
            "the start command serves the output of `build`",
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_commands_become_one_shot() {
        assert_eq!(non_watch("vitest"), "vitest run");
        assert_eq!(non_watch("npx vitest --watch"), "npx vitest run");
        assert_eq!(non_watch("jest --watch"), "CI=true jest --watchAll=false");
        assert_eq!(
            non_watch("react-scripts test"),
            "CI=true react-scripts test --watchAll=false"
        );
        assert_eq!(non_watch("npm test"), "CI=true npm test");
    }

    #[test]
    fn specifiers_name_packages() {
        assert_eq!(package_of("express").as_deref(), Some("express"));
        assert_eq!(package_of("lodash/fp").as_deref(), Some("lodash"));
        assert_eq!(package_of("@nestjs/core/dist/x").as_deref(), Some("@nestjs/core"));
        assert_eq!(package_of("./routes"), None);
        assert_eq!(package_of("node:fs"), None);
    }
}
