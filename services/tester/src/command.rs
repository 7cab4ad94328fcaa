//! The test command as it is run: the framework it invokes (from the command
//! line, or from the `package.json` script it names) and the same command
//! forced out of watch mode. No I/O here; the caller reads `package.json`.
//!
//! Watch mode never ends, so it is taken away where the command shows it:
//! - `CI=true` is always set (jest, vitest, react-scripts and most others
//!   run once under CI);
//! - `vitest` without `run`/`--run` becomes `vitest run`; `vitest watch` /
//!   `vitest dev` become `vitest run`;
//! - `jest --watch`/`--watchAll` and `react-scripts test` get
//!   `--watchAll=false`;
//! - mocha's `--watch`/`-w` is dropped;
//! - `npm test` / `npm run test` whose script is a watching vitest or jest
//!   gets `-- --run` / `-- --watchAll=false` (npm passes them to the script);
//! - a bare `go test` gets `-v`, so that each test's result is printed
//!   (`-json` is read too when the command asks for it).

use std::sync::LazyLock;

use regex::Regex;

use crate::parse::Framework;

/// What the command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A known framework.
    Framework(Framework),
    /// `make test` (or `make check`): whatever the Makefile runs.
    Make,
    /// Something else (a script, a shell line): every parser is tried.
    Unknown,
}

impl Kind {
    pub fn framework(&self) -> Option<Framework> {
        match self {
            Self::Framework(f) => Some(*f),
            Self::Make | Self::Unknown => None,
        }
    }
}

fn re(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

fn word(text: &str, w: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|' || c == '(' || c == ')')
        .any(|part| part == w || part.ends_with(&format!("/{w}")))
}

/// The framework a command line (or a package.json script) invokes.
pub fn detect(command: &str) -> Kind {
    let c = command.trim();
    let framework = if word(c, "pytest") || c.contains("-m pytest") || word(c, "py.test") {
        Some(Framework::Pytest)
    } else if c.contains("manage.py test") || c.contains("django-admin test") {
        Some(Framework::Django)
    } else if c.contains("-m unittest") {
        Some(Framework::Unittest)
    } else if word(c, "vitest") {
        Some(Framework::Vitest)
    } else if word(c, "jest") || c.contains("react-scripts test") {
        Some(Framework::Jest)
    } else if word(c, "mocha") {
        Some(Framework::Mocha)
    } else if c.contains("cargo test") || c.contains("cargo nextest") {
        Some(Framework::CargoTest)
    } else if c.contains("go test") {
        Some(Framework::GoTest)
    } else if c.contains("node --test") {
        Some(Framework::NodeTest)
    } else if word(c, "ctest") {
        Some(Framework::Ctest)
    } else if word(c, "ava") {
        Some(Framework::Ava)
    } else {
        None
    };
    match framework {
        Some(f) => Kind::Framework(f),
        None if Regex::new(r"(^|[\s;&|])make(?:\s+-C\s+\S+|\s+-\S+)*(?:\s+(?:test|check)\b|\s*$)")
            .is_ok_and(|r| r.is_match(c)) =>
        {
            Kind::Make
        }
        None => Kind::Unknown,
    }
}

/// Whether `command` runs the package manager's `test` script, and which
/// package manager: `npm test`, `npm run test`, `yarn test`, `pnpm test`,
/// `bun run test`.
pub fn test_script_runner(command: &str) -> Option<&'static str> {
    static SCRIPT: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^(npm|yarn|pnpm|bun)(?:\s+run)?\s+test(?:\s|$)"));
    let caps = SCRIPT.as_ref()?.captures(command.trim())?;
    match &caps[1] {
        "npm" => Some("npm"),
        "yarn" => Some("yarn"),
        "pnpm" => Some("pnpm"),
        _ => Some("bun"),
    }
}

/// Whether a vitest invocation watches: no `run` subcommand and no `--run`.
fn vitest_watches(text: &str) -> bool {
    static VITEST: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"(?:^|[\s/])vitest(?:\s+(run|watch|dev|bench|related|--run))?"));
    let Some(re) = VITEST.as_ref() else {
        return false;
    };
    re.captures(text)
        .is_some_and(|caps| !matches!(caps.get(1).map(|m| m.as_str()), Some("run" | "--run" | "bench")))
        && !text.contains("--run")
}

fn jest_watches(text: &str) -> bool {
    (word(text, "jest") || text.contains("react-scripts test"))
        && !text.contains("--watchAll=false")
        && !text.contains("--watch=false")
        && (text.contains("--watch") || text.contains("react-scripts test"))
}

/// `command` forced out of watch mode. `script` is the package.json `test`
/// script when the command runs it.
pub fn one_shot(command: &str, script: Option<&str>) -> String {
    static VITEST_MODE: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"((?:^|[\s/])vitest)(\s+(?:watch|dev))?(\s|$)"));
    static MOCHA_WATCH: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"\s(?:--watch|-w)(?:\s|$)"));
    static GO_TEST: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"(^|[\s;&|])go test(\s|$)"));
    let mut c = command.trim().to_owned();
    if vitest_watches(&c)
        && let Some(re) = VITEST_MODE.as_ref()
    {
        c = re.replacen(&c, 1, "${1} run${3}").into_owned();
    }
    if jest_watches(&c) {
        c = c.replace("--watchAll ", "").replace("--watch ", "");
        for flag in ["--watchAll", "--watch"] {
            if c.ends_with(flag) {
                c.truncate(c.len() - flag.len());
            }
        }
        c = format!("{} --watchAll=false", c.trim_end());
    }
    if word(&c, "mocha")
        && let Some(re) = MOCHA_WATCH.as_ref()
    {
        while re.is_match(&c) {
            c = re.replacen(&c, 1, " ").into_owned();
        }
        c = c.trim().to_owned();
    }
    if !c.contains("-json")
        && !c.contains(" -v")
        && let Some(re) = GO_TEST.as_ref()
    {
        c = re.replacen(&c, 1, "${1}go test -v${2}").into_owned();
    }
    if let (Some("npm"), Some(script)) = (test_script_runner(&c), script) {
        if vitest_watches(script) {
            c.push_str(" -- --run");
        } else if jest_watches(script) {
            c.push_str(" -- --watchAll=false");
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frameworks_are_read_from_the_command() {
        for (command, framework) in [
            ("pytest", Framework::Pytest),
            ("python -m pytest -q tests", Framework::Pytest),
            (".venv/bin/pytest", Framework::Pytest),
            ("python manage.py test", Framework::Django),
            ("python -m unittest discover -s tests", Framework::Unittest),
            ("vitest", Framework::Vitest),
            ("npx jest --ci", Framework::Jest),
            ("react-scripts test", Framework::Jest),
            ("mocha test/*.js", Framework::Mocha),
            ("cargo test --workspace", Framework::CargoTest),
            ("go test ./...", Framework::GoTest),
            ("node --test", Framework::NodeTest),
        ] {
            assert_eq!(detect(command), Kind::Framework(framework), "{command}");
        }
        assert_eq!(detect("make test"), Kind::Make);
        assert_eq!(detect("make -C tests"), Kind::Make, "a test directory's Makefile");
        assert_eq!(detect("make -j2 check"), Kind::Make);
        assert_eq!(detect("make -C tests install"), Kind::Unknown);
        assert_eq!(detect("make -j2 check"), Kind::Make);
        assert_eq!(detect("npm test"), Kind::Unknown);
        assert_eq!(detect("./run-tests.sh"), Kind::Unknown);
    }

    #[test]
    fn watch_mode_is_taken_away() {
        assert_eq!(one_shot("vitest", None), "vitest run");
        assert_eq!(
            one_shot("npx vitest --coverage", None),
            "npx vitest run --coverage"
        );
        assert_eq!(one_shot("vitest watch", None), "vitest run");
        assert_eq!(one_shot("vitest run", None), "vitest run");
        assert_eq!(one_shot("vitest --run", None), "vitest --run");
        assert_eq!(one_shot("jest --watch", None), "jest --watchAll=false");
        assert_eq!(
            one_shot("jest --watchAll --coverage", None),
            "jest --coverage --watchAll=false"
        );
        assert_eq!(one_shot("jest --ci", None), "jest --ci");
        assert_eq!(
            one_shot("react-scripts test", None),
            "react-scripts test --watchAll=false"
        );
        assert_eq!(one_shot("mocha --watch test", None), "mocha test");
        assert_eq!(one_shot("mocha -w", None), "mocha");
        assert_eq!(one_shot("go test ./...", None), "go test -v ./...");
        assert_eq!(one_shot("go test -json ./...", None), "go test -json ./...");
        assert_eq!(one_shot("pytest -q", None), "pytest -q");
    }

    #[test]
    fn npm_scripts_get_their_flags_after_a_double_dash() {
        assert_eq!(test_script_runner("npm test"), Some("npm"));
        assert_eq!(test_script_runner("npm run test"), Some("npm"));
        assert_eq!(test_script_runner("pnpm test"), Some("pnpm"));
        assert_eq!(test_script_runner("npm run testing"), None);
        assert_eq!(one_shot("npm test", Some("vitest")), "npm test -- --run");
        assert_eq!(one_shot("npm test", Some("vitest run")), "npm test");
        assert_eq!(
            one_shot("npm run test", Some("jest --watch")),
            "npm run test -- --watchAll=false"
        );
        // pnpm, yarn and bun rely on CI=true.
        assert_eq!(one_shot("pnpm test", Some("vitest")), "pnpm test");
    }
}
