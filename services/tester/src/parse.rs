//! Reading test counts out of a test runner's output. Pure functions, no I/O.
//!
//! Each parser looks for the summary its framework prints, in the formats of
//! the versions in use (see the tests for the excerpts):
//!
//! | framework | what is read |
//! |---|---|
//! | pytest | the final `N passed, M failed, ... in 0.12s` line (`=`-framed or `-q`); `no tests ran` |
//! | unittest, Django | `Ran N tests` then `OK (skipped=K)` / `FAILED (failures=F, errors=E, ...)`; `NO TESTS RAN` |
//! | jest | `Tests:  1 failed, 2 skipped, 5 passed, 8 total`; `Test Suites:` for suites that did not run |
//! | vitest | `Tests  3 passed \| 1 skipped (4)`; `Errors  1 error` |
//! | mocha | `N passing`, `M failing`, `K pending` |
//! | cargo test | every `test result:` line (each test binary and the doc tests), summed |
//! | go test | `--- PASS/FAIL/SKIP:` lines (`-v`; subtests included) or `-json` actions |
//! | node:test | `ℹ tests 3` / `# pass 2` / `# fail 1` ... (spec and TAP reporters) |
//! | CTest | `100% tests passed, 0 tests failed out of 7`; `Not Run` lines are errors, `Skipped` lines skipped |
//! | AVA | `35 tests passed`, `2 tests failed`, `1 test skipped`, `1 known failure`, `1 uncaught exception` |
//! | Automake | `# PASS:  3` / `# FAIL:  1` / `# SKIP:` / `# XFAIL:` / `# ERROR:` of `make check`'s test-suite summary |
//! | TAP | `ok N` / `not ok N` lines (`# SKIP` and `# TODO` directives skipped), the last plan's run |
//!
//! Mapped onto passed / failed / skipped / errors: pytest's xfailed counts
//! as skipped and xpassed as passed (both are expected by the suite),
//! deselected tests did not run and are not counted; unittest's expected
//! failures are skipped and unexpected successes failed; jest's and vitest's
//! todo tests are skipped, mocha's pending tests are skipped.
//!
//! Several frameworks in one output (a `make test` that runs pytest and
//! cargo test) are summed.

use std::sync::LazyLock;

use regex::Regex;

/// Counts of one test run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub errors: u32,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed = self.passed.saturating_add(other.passed);
        self.failed = self.failed.saturating_add(other.failed);
        self.skipped = self.skipped.saturating_add(other.skipped);
        self.errors = self.errors.saturating_add(other.errors);
    }

    /// Tests that ran (skipped ones did not).
    pub fn ran(&self) -> u32 {
        self.passed
            .saturating_add(self.failed)
            .saturating_add(self.errors)
    }

    /// "1 failed, 4 passed, 2 skipped", leaving out zeros.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.failed, "failed"),
            (self.errors, "errors"),
            (self.passed, "passed"),
            (self.skipped, "skipped"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "0 tests".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A framework whose output we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Framework {
    Pytest,
    Unittest,
    Django,
    Jest,
    Vitest,
    Mocha,
    CargoTest,
    GoTest,
    NodeTest,
    Ctest,
    Automake,
    Tap,
    Ava,
}

impl Framework {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pytest => "pytest",
            Self::Unittest => "unittest",
            Self::Django => "django",
            Self::Jest => "jest",
            Self::Vitest => "vitest",
            Self::Mocha => "mocha",
            Self::CargoTest => "cargo test",
            Self::GoTest => "go test",
            Self::NodeTest => "node:test",
            Self::Ctest => "ctest",
            Self::Automake => "automake",
            Self::Tap => "tap",
            Self::Ava => "ava",
        }
    }

    /// The parser that reads this framework's output (Django prints
    /// unittest's summary).
    fn parser(self) -> Framework {
        match self {
            Self::Django => Self::Unittest,
            other => other,
        }
    }
}

/// What one framework's summary said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub framework: Framework,
    pub counts: Counts,
    /// The framework said in words that it found nothing to run.
    pub no_tests: bool,
}

/// Removes ANSI escape sequences (colours, cursor moves, OSC titles).
pub fn strip_ansi(line: &str) -> String {
    static ANSI: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]").ok()
    });
    match ANSI.as_ref() {
        Some(re) if line.contains('\x1b') => re.replace_all(line, "").into_owned(),
        _ => line.to_owned(),
    }
}

fn re(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

fn number(text: &str) -> u32 {
    text.parse().unwrap_or(u32::MAX)
}

/// Whether a line can matter to any parser; the tester keeps only these
/// (bounded) besides the output's tail.
pub fn interesting(line: &str) -> bool {
    const WORDS: [&str; 24] = [
        "passed",
        "failed",
        "error",
        "no tests ran",
        "Ran ",
        "OK",
        "FAILED",
        "NO TESTS RAN",
        "Tests",
        "Test Suites",
        "Test Files",
        "No tests found",
        "No test files found",
        "passing",
        "failing",
        "pending",
        "test result:",
        "--- ",
        "\"Action\"",
        "no test files",
        "no tests to run",
        "skipped",
        "known failure",
        "uncaught exception",
    ];
    let trimmed = line.trim_start();
    // TAP results: `ok 1`, `not ok 2`.
    let tap = trimmed
        .strip_prefix("not ")
        .unwrap_or(trimmed)
        .strip_prefix("ok ")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    WORDS.iter().any(|w| line.contains(w)) || trimmed.starts_with("# ") || trimmed.starts_with("ℹ ") || tap
}

/// pytest's final summary line: `===== 1 failed, 2 passed in 0.12s =====`,
/// `3 passed, 1 warning in 0.05s` (`-q`), `2 passed in 0.01 seconds`
/// (pytest < 5), `no tests ran in 0.01s`.
pub fn pytest(lines: &[String]) -> Option<Found> {
    static SUMMARY: LazyLock<Option<Regex>> = LazyLock::new(|| {
        re(
            r"^=*\s*((?:\d+ [a-z]+(?:, )?)+|no tests ran)\s+in\s+[\d.]+\s*(?:s|seconds)\b(?:\s*\([\d:]+\))?\s*=*$",
        )
    });
    let summary = SUMMARY.as_ref()?;
    let line = lines.iter().rev().find_map(|l| {
        let caps = summary.captures(l.trim())?;
        Some(caps.get(1)?.as_str().to_owned())
    })?;
    if line == "no tests ran" {
        return Some(Found {
            framework: Framework::Pytest,
            counts: Counts::default(),
            no_tests: true,
        });
    }
    let mut counts = Counts::default();
    for part in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (n, word) = part.split_once(' ')?;
        let n = number(n);
        match word {
            "passed" | "xpassed" => counts.passed = counts.passed.saturating_add(n),
            "failed" => counts.failed = counts.failed.saturating_add(n),
            "skipped" | "xfailed" => counts.skipped = counts.skipped.saturating_add(n),
            "error" | "errors" => counts.errors = counts.errors.saturating_add(n),
            "deselected" | "warning" | "warnings" | "rerun" | "reruns" => {}
            _ => return None,
        }
    }
    Some(Found {
        framework: Framework::Pytest,
        counts,
        no_tests: false,
    })
}

/// unittest (and Django's runner): `Ran 5 tests in 0.002s`, then `OK`,
/// `OK (skipped=1)`, `FAILED (failures=1, errors=1, skipped=2)`, or
/// `NO TESTS RAN` (Python 3.12+). Several runs (e.g. per app) are summed.
pub fn unittest(lines: &[String]) -> Option<Found> {
    static RAN: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"^Ran (\d+) tests? in [\d.]+s$"));
    static VERDICT: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^(OK|FAILED|NO TESTS RAN)(?: \(([a-z =0-9,]*)\))?$"));
    let ran = RAN.as_ref()?;
    let verdict = VERDICT.as_ref()?;
    let mut total = Counts::default();
    let mut found = false;
    let mut no_tests = false;
    let mut i = 0;
    while i < lines.len() {
        let Some(caps) = ran.captures(lines[i].trim()) else {
            i += 1;
            continue;
        };
        found = true;
        let n = caps.get(1).map_or(0, |m| number(m.as_str()));
        let mut counts = Counts::default();
        let mut failed_total = 0_u32;
        let mut seen_verdict = false;
        // The verdict follows within a few lines (a blank line between).
        for line in lines.iter().skip(i + 1).take(4) {
            let Some(v) = verdict.captures(line.trim()) else {
                continue;
            };
            seen_verdict = true;
            if &v[1] == "NO TESTS RAN" {
                no_tests = true;
            }
            for item in v.get(2).map_or("", |m| m.as_str()).split(',') {
                let Some((key, value)) = item.trim().split_once('=') else {
                    continue;
                };
                let value = number(value.trim());
                match key.trim() {
                    "failures" | "unexpected successes" => {
                        counts.failed = counts.failed.saturating_add(value);
                    }
                    "errors" => counts.errors = counts.errors.saturating_add(value),
                    "skipped" | "expected failures" => {
                        counts.skipped = counts.skipped.saturating_add(value);
                    }
                    _ => {}
                }
                failed_total = failed_total.saturating_add(value);
            }
            break;
        }
        if n == 0 {
            no_tests = true;
        }
        if seen_verdict || n == 0 {
            counts.passed = n.saturating_sub(failed_total);
        } else {
            // Interrupted before its verdict: the ran tests are not known to pass.
            counts.errors = counts.errors.saturating_add(1);
        }
        total.add(counts);
        i += 1;
    }
    found.then_some(Found {
        framework: Framework::Unittest,
        counts: total,
        no_tests: no_tests && total.ran() == 0,
    })
}

/// Splits `1 failed, 2 skipped, 5 passed, 8 total` (jest) or
/// `1 failed | 3 passed | 1 skipped (5)` (vitest) into (n, word) pairs.
fn tally(text: &str, separator: char) -> Vec<(u32, String)> {
    text.split(separator)
        .filter_map(|part| {
            let part = part.trim();
            let part = part.split(" (").next().unwrap_or(part);
            let (n, word) = part.split_once(' ')?;
            Some((n.trim().parse().ok()?, word.trim().to_owned()))
        })
        .collect()
}

/// jest: `Tests:       1 failed, 2 skipped, 5 passed, 8 total` (jest 24–30),
/// `Test Suites: 1 failed, 1 total` with `Tests: 0 total` when a suite
/// could not run (counted as errors), `No tests found, exiting with code 1`.
pub fn jest(lines: &[String]) -> Option<Found> {
    let mut counts = Counts::default();
    let mut seen = false;
    let mut suites_failed = 0;
    let mut no_tests = false;
    for line in lines {
        let line = line.trim();
        if line.starts_with("No tests found") {
            no_tests = true;
        } else if let Some(rest) = line.strip_prefix("Test Suites:") {
            for (n, word) in tally(rest, ',') {
                if word == "failed" {
                    suites_failed = n;
                }
            }
        } else if let Some(rest) = line.strip_prefix("Tests:") {
            seen = true;
            counts = Counts::default();
            for (n, word) in tally(rest, ',') {
                match word.as_str() {
                    "passed" => counts.passed = n,
                    "failed" => counts.failed = n,
                    "skipped" | "todo" | "pending" => counts.skipped = counts.skipped.saturating_add(n),
                    _ => {}
                }
            }
        }
    }
    if !seen && !no_tests {
        return None;
    }
    // A suite that failed without a failed test did not run (syntax error,
    // missing module): an error each.
    if suites_failed > 0 && counts.failed == 0 {
        counts.errors = suites_failed;
    }
    Some(Found {
        framework: Framework::Jest,
        counts,
        no_tests: no_tests && counts.ran() == 0,
    })
}

/// vitest: ` Tests  1 failed | 3 passed | 1 skipped (5)` (0.x to 3.x, one
/// or more spaces), ` Errors  1 error`, `No test files found, exiting
/// with code 1`.
pub fn vitest(lines: &[String]) -> Option<Found> {
    static TESTS: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^Tests\s+(\d+ [a-z ]+(?:\s*\|\s*\d+ [a-z ]+)*)\s*\((\d+)\)$"));
    static ERRORS: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"^Errors\s+(\d+) errors?"));
    let tests = TESTS.as_ref()?;
    let errors = ERRORS.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    let mut no_tests = false;
    let mut error_count = 0;
    for line in lines {
        let line = line.trim();
        if line.starts_with("No test files found") || line.starts_with("No test suite found") {
            no_tests = true;
        } else if let Some(caps) = tests.captures(line) {
            seen = true;
            counts = Counts::default();
            for (n, word) in tally(&caps[1], '|') {
                match word.as_str() {
                    "passed" => counts.passed = n,
                    "failed" => counts.failed = n,
                    "skipped" | "todo" => counts.skipped = counts.skipped.saturating_add(n),
                    _ => {}
                }
            }
        } else if let Some(caps) = errors.captures(line) {
            error_count = number(&caps[1]);
        }
    }
    if !seen && !no_tests {
        return None;
    }
    counts.errors = error_count;
    Some(Found {
        framework: Framework::Vitest,
        counts,
        no_tests: no_tests && counts.ran() == 0,
    })
}

/// mocha's spec reporter: `  3 passing (12ms)`, `  1 pending`,
/// `  2 failing`; `Error: No test files found`.
pub fn mocha(lines: &[String]) -> Option<Found> {
    static LINE: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^(\d+) (passing|failing|pending)(?: \([\d.]+m?s\))?$"));
    let line_re = LINE.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    let mut no_tests = false;
    for line in lines {
        let line = line.trim();
        if line.contains("No test files found") {
            no_tests = true;
        }
        let Some(caps) = line_re.captures(line) else {
            continue;
        };
        let n = number(&caps[1]);
        match &caps[2] {
            "passing" => {
                // A new run's summary starts with its passing line.
                seen = true;
                counts = Counts {
                    passed: n,
                    ..Counts::default()
                };
            }
            "failing" => counts.failed = n,
            _ => counts.skipped = n,
        }
    }
    if !seen && !no_tests {
        return None;
    }
    Some(Found {
        framework: Framework::Mocha,
        counts,
        no_tests: counts.ran() == 0,
    })
}

/// cargo test: every `test result: ok. 3 passed; 0 failed; 1 ignored; 0
/// measured; 0 filtered out; finished in 0.00s` line, summed over the test
/// binaries and the doc tests. A build that failed (`error: could not
/// compile`) before any result is one error.
pub fn cargo_test(lines: &[String]) -> Option<Found> {
    static RESULT: LazyLock<Option<Regex>> = LazyLock::new(|| {
        re(r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured")
    });
    let result = RESULT.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    let mut build_failed = false;
    for line in lines {
        let line = line.trim();
        if let Some(caps) = result.captures(line) {
            seen = true;
            counts.add(Counts {
                passed: number(&caps[1]),
                failed: number(&caps[2]),
                skipped: number(&caps[3]),
                errors: 0,
            });
        } else if line.starts_with("error: could not compile") {
            build_failed = true;
        }
    }
    if build_failed {
        counts.errors = counts.errors.saturating_add(1);
        seen = true;
    }
    seen.then_some(Found {
        framework: Framework::CargoTest,
        counts,
        no_tests: false,
    })
}

/// go test: `--- PASS: TestX (0.00s)` / `--- FAIL:` / `--- SKIP:` lines of
/// `-v` (subtests, indented, count too), or `-json` events (`"Action":"pass"`
/// with a `"Test"`). Without either, only `ok  pkg` / `FAIL pkg` lines
/// appear and the counts are unknown: that is not a result. `[no test
/// files]` and `testing: warning: no tests to run` mean nothing ran.
pub fn go_test(lines: &[String]) -> Option<Found> {
    static VERBOSE: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"^--- (PASS|FAIL|SKIP): \S+ \([\d.]+s\)"));
    static JSON: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r#"^\{.*"Action":"(pass|fail|skip)".*"Test":"[^"]+""#));
    static PACKAGE: LazyLock<Option<Regex>> = LazyLock::new(|| {
        re(
            r"^(?:ok|FAIL|\?)\s+\S+\s+(?:[\d.]+s|\(cached\)|\[no test files\]|\[build failed\]|\[setup failed\])",
        )
    });
    let verbose = VERBOSE.as_ref()?;
    let json = JSON.as_ref()?;
    let package = PACKAGE.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    let mut packages = false;
    let mut no_tests = false;
    let mut build_failed = 0_u32;
    for line in lines {
        let trimmed = line.trim();
        let action = verbose
            .captures(trimmed)
            .map(|c| c[1].to_ascii_lowercase())
            .or_else(|| json.captures(trimmed).map(|c| c[1].to_owned()));
        if let Some(action) = action {
            seen = true;
            match action.as_str() {
                "pass" => counts.passed = counts.passed.saturating_add(1),
                "fail" => counts.failed = counts.failed.saturating_add(1),
                _ => counts.skipped = counts.skipped.saturating_add(1),
            }
            continue;
        }
        if package.is_match(trimmed) {
            packages = true;
            if trimmed.contains("[no test files]") {
                no_tests = true;
            }
            if trimmed.contains("[build failed]") || trimmed.contains("[setup failed]") {
                build_failed = build_failed.saturating_add(1);
            }
        }
        if trimmed.contains("no tests to run") {
            no_tests = true;
        }
    }
    counts.errors = build_failed;
    if !seen && build_failed == 0 && !(packages && no_tests) {
        return None;
    }
    Some(Found {
        framework: Framework::GoTest,
        counts,
        no_tests: no_tests && counts.ran() == 0,
    })
}

/// Node's built-in test runner (`node --test`, Node 18–23): the totals its
/// spec reporter prints as `ℹ tests 3`, `ℹ pass 2`, `ℹ fail 1`, `ℹ skipped 0`,
/// `ℹ todo 0`, `ℹ cancelled 0`, and its TAP reporter as `# tests 3`, ...
pub fn node_test(lines: &[String]) -> Option<Found> {
    static TOTAL: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^(?:ℹ|#) (tests|pass|fail|skipped|todo|cancelled) (\d+)$"));
    let total = TOTAL.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    for line in lines {
        let Some(caps) = total.captures(line.trim()) else {
            continue;
        };
        let n = number(&caps[2]);
        match &caps[1] {
            // A new summary (another run) starts with its total.
            "tests" => {
                seen = true;
                counts = Counts::default();
            }
            "pass" => counts.passed = n,
            "fail" => counts.failed = n,
            "cancelled" => counts.errors = n,
            _ => counts.skipped = counts.skipped.saturating_add(n),
        }
    }
    seen.then_some(Found {
        framework: Framework::NodeTest,
        counts,
        no_tests: counts.ran() == 0,
    })
}

/// CTest's `N% tests passed, F tests failed out of T`, with the
/// `***Not Run` (errors) and `***Skipped` lines of its list.
pub fn ctest(lines: &[String]) -> Option<Found> {
    static SUMMARY: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^\d+% tests passed,\s+(\d+) tests? failed out of (\d+)"));
    let summary = SUMMARY.as_ref()?;
    let (failed, total) = lines.iter().rev().find_map(|line| {
        let caps = summary.captures(line.trim())?;
        Some((number(&caps[1]), number(&caps[2])))
    })?;
    let count =
        |mark: &str| u32::try_from(lines.iter().filter(|l| l.contains(mark)).count()).unwrap_or(u32::MAX);
    let skipped = count("***Skipped").min(total);
    let errors = count("***Not Run").min(failed);
    let counts = Counts {
        passed: total.saturating_sub(failed).saturating_sub(skipped),
        failed: failed - errors,
        skipped,
        errors,
    };
    Some(Found {
        framework: Framework::Ctest,
        counts,
        no_tests: total == 0,
    })
}

/// AVA's closing summary lines.
pub fn ava(lines: &[String]) -> Option<Found> {
    static ROW: LazyLock<Option<Regex>> = LazyLock::new(|| {
        re(
            r"^(\d+) (tests? passed|tests? failed|tests? skipped|tests? todo|known failures?|uncaught exceptions?|unhandled rejections?)$",
        )
    });
    let row = ROW.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    for line in lines {
        let Some(caps) = row.captures(line.trim()) else {
            continue;
        };
        seen = true;
        let n = number(&caps[1]);
        let what = &caps[2];
        if what.ends_with("passed") {
            counts.passed = n;
        } else if what.ends_with("failed") {
            counts.failed = n;
        } else if what.starts_with("test") || what.starts_with("known") {
            counts.skipped = counts.skipped.saturating_add(n);
        } else {
            counts.errors = counts.errors.saturating_add(n);
        }
    }
    seen.then_some(Found {
        framework: Framework::Ava,
        counts,
        no_tests: false,
    })
}

/// The test-suite summary of Automake's `make check`.
pub fn automake(lines: &[String]) -> Option<Found> {
    static ROW: LazyLock<Option<Regex>> =
        LazyLock::new(|| re(r"^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):\s+(\d+)$"));
    let row = ROW.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    for line in lines {
        let Some(caps) = row.captures(line.trim()) else {
            continue;
        };
        let n = number(&caps[2]);
        match &caps[1] {
            "TOTAL" => {
                seen = true;
                counts = Counts::default();
            }
            "PASS" | "XPASS" => counts.passed = counts.passed.saturating_add(n),
            "SKIP" | "XFAIL" => counts.skipped = counts.skipped.saturating_add(n),
            "FAIL" => counts.failed = n,
            _ => counts.errors = n,
        }
    }
    seen.then_some(Found {
        framework: Framework::Automake,
        counts,
        no_tests: counts.ran() == 0,
    })
}

/// TAP: `ok` / `not ok` lines. Read only when no other summary is found
/// (node:test's TAP reporter prints its own totals too).
pub fn tap(lines: &[String]) -> Option<Found> {
    static RESULT: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"^(not )?ok \d+\b(.*)$"));
    let result = RESULT.as_ref()?;
    let mut counts = Counts::default();
    let mut seen = false;
    for line in lines {
        let Some(caps) = result.captures(line.trim()) else {
            continue;
        };
        seen = true;
        let directive = caps.get(2).map_or("", |m| m.as_str()).to_ascii_uppercase();
        if directive.contains("# SKIP") || directive.contains("# TODO") {
            counts.skipped = counts.skipped.saturating_add(1);
        } else if caps.get(1).is_some() {
            counts.failed = counts.failed.saturating_add(1);
        } else {
            counts.passed = counts.passed.saturating_add(1);
        }
    }
    seen.then_some(Found {
        framework: Framework::Tap,
        counts,
        no_tests: false,
    })
}

const ALL: [Framework; 11] = [
    Framework::Pytest,
    Framework::Unittest,
    Framework::Jest,
    Framework::Vitest,
    Framework::Mocha,
    Framework::CargoTest,
    Framework::GoTest,
    Framework::NodeTest,
    Framework::Ctest,
    Framework::Automake,
    Framework::Ava,
];

fn run_parser(framework: Framework, lines: &[String]) -> Option<Found> {
    match framework.parser() {
        Framework::Pytest => pytest(lines),
        Framework::Unittest | Framework::Django => unittest(lines),
        Framework::Jest => jest(lines),
        Framework::Vitest => vitest(lines),
        Framework::Mocha => mocha(lines),
        Framework::CargoTest => cargo_test(lines),
        Framework::GoTest => go_test(lines),
        Framework::NodeTest => node_test(lines),
        Framework::Ctest => ctest(lines),
        Framework::Automake => automake(lines),
        Framework::Tap => tap(lines),
        Framework::Ava => ava(lines),
    }
}

/// Every framework summary in `lines` (ANSI-stripped). With `expected`
/// (known from the command) its parser alone is tried first; when it finds
/// nothing, every parser is (a script may run another framework).
pub fn parse(lines: &[String], expected: Option<Framework>) -> Vec<Found> {
    if let Some(framework) = expected
        && let Some(mut found) = run_parser(framework, lines)
    {
        found.framework = framework;
        return vec![found];
    }
    let found: Vec<Found> = ALL.into_iter().filter_map(|f| run_parser(f, lines)).collect();
    if found.is_empty() {
        return tap(lines).into_iter().collect();
    }
    found
}

/// The sum of what the parsers found.
pub fn total(found: &[Found]) -> Counts {
    let mut counts = Counts::default();
    for f in found {
        counts.add(f.counts);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(strip_ansi).collect()
    }

    fn counts(passed: u32, failed: u32, skipped: u32, errors: u32) -> Counts {
        Counts {
            passed,
            failed,
            skipped,
            errors,
        }
    }

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[32m\x1b[1m3 passed\x1b[0m\x1b[32m in 0.01s\x1b[0m"),
            "3 passed in 0.01s"
        );
        assert_eq!(strip_ansi("\x1b]0;title\x07plain"), "plain");
        assert_eq!(strip_ansi("no escapes"), "no escapes");
    }

    #[test]
    fn pytest_summaries_of_several_versions() {
        // pytest 8, default verbosity, coloured.
        let out = lines(
            "============================= test session starts ==============================\n\
             collected 7 items\n\n\
             tests/test_calc.py ..F.sxX                                              [100%]\n\n\
             =========================== short test summary info ============================\n\
             FAILED tests/test_calc.py::test_div - ZeroDivisionError\n\
             \x1b[31m=== \x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m4 passed\x1b[0m, \x1b[33m1 skipped\x1b[0m, \x1b[33m1 xfailed\x1b[0m, \x1b[33m1 xpassed\x1b[0m\x1b[31m in 0.12s\x1b[0m\x1b[31m ===\x1b[0m",
        );
        let found = pytest(&out).unwrap();
        assert_eq!(found.counts, counts(5, 1, 2, 0));
        // -q and a warning, errors and deselected.
        let out = lines("..E.\n1 error, 3 passed, 2 deselected, 1 warning in 0.05s");
        assert_eq!(pytest(&out).unwrap().counts, counts(3, 0, 0, 1));
        // pytest < 5 said "seconds"; long runs add (h:mm:ss).
        let out = lines("========== 2 passed in 0.01 seconds ==========");
        assert_eq!(pytest(&out).unwrap().counts, counts(2, 0, 0, 0));
        let out = lines("===== 10 passed, 2 errors in 75.20s (0:01:15) =====");
        assert_eq!(pytest(&out).unwrap().counts, counts(10, 0, 0, 2));
        let out = lines(
            "collected 0 items\n\n============================ no tests ran in 0.01s =============================",
        );
        let found = pytest(&out).unwrap();
        assert!(found.no_tests);
        assert_eq!(found.counts.ran(), 0);
        // Not a pytest summary.
        assert_eq!(pytest(&lines("all 3 passed in time")), None);
        assert_eq!(pytest(&lines("3 exploded in 0.1s")), None);
    }

    #[test]
    fn unittest_and_django_summaries() {
        let out = lines(
            "..s.\n----------------------------------------------------------------------\n\
             Ran 4 tests in 0.002s\n\nOK (skipped=1)",
        );
        assert_eq!(unittest(&out).unwrap().counts, counts(3, 0, 1, 0));
        let out = lines(
            "F.E.s\n======================================================================\n\
             FAIL: test_x (tests.T.test_x)\n----------------------------------------------------------------------\n\
             Ran 5 tests in 0.010s\n\nFAILED (failures=1, errors=1, skipped=1)",
        );
        assert_eq!(unittest(&out).unwrap().counts, counts(2, 1, 1, 1));
        let out = lines("Ran 3 tests in 0.001s\n\nFAILED (expected failures=1, unexpected successes=1)");
        assert_eq!(unittest(&out).unwrap().counts, counts(1, 1, 1, 0));
        // Django: its own lines around unittest's.
        let out = lines(
            "Found 6 test(s).\nCreating test database for alias 'default'...\n\
             System check identified no issues (0 silenced).\n......\n\
             ----------------------------------------------------------------------\n\
             Ran 6 tests in 0.031s\n\nOK\nDestroying test database for alias 'default'...",
        );
        assert_eq!(unittest(&out).unwrap().counts, counts(6, 0, 0, 0));
        // 0 tests: "OK" before Python 3.12, "NO TESTS RAN" after.
        for text in [
            "\n----------------------------------------------------------------------\nRan 0 tests in 0.000s\n\nOK",
            "Ran 0 tests in 0.000s\n\nNO TESTS RAN",
        ] {
            let found = unittest(&lines(text)).unwrap();
            assert!(found.no_tests, "{text}");
            assert_eq!(found.counts.ran(), 0);
        }
        assert_eq!(unittest(&lines("OK\nall good")), None);
    }

    #[test]
    fn jest_summaries() {
        let out = lines(
            " PASS  src/a.test.js\n FAIL  src/b.test.js\n\
             Test Suites: 1 failed, 1 passed, 2 total\n\
             Tests:       1 failed, 2 skipped, 5 passed, 8 total\n\
             Snapshots:   0 total\nTime:        1.234 s\nRan all test suites.",
        );
        assert_eq!(jest(&out).unwrap().counts, counts(5, 1, 2, 0));
        let out = lines("Tests:       2 todo, 3 passed, 5 total");
        assert_eq!(jest(&out).unwrap().counts, counts(3, 0, 2, 0));
        // A suite that could not run: no test failed, the suite did.
        let out = lines(
            " FAIL  src/broken.test.js\n  ● Test suite failed to run\n\
             Test Suites: 1 failed, 1 total\nTests:       0 total",
        );
        assert_eq!(jest(&out).unwrap().counts, counts(0, 0, 0, 1));
        let out =
            lines("No tests found, exiting with code 1\nRun with `--passWithNoTests` to exit with code 0");
        assert!(jest(&out).unwrap().no_tests);
    }

    #[test]
    fn vitest_summaries() {
        // vitest 1.x–3.x.
        let out = lines(
            " ✓ src/sum.test.ts (3 tests | 1 skipped) 2ms\n\n\
             \x1b[2m Test Files \x1b[22m \x1b[1m\x1b[32m1 passed\x1b[39m\x1b[22m\x1b[90m (1)\x1b[39m\n\
             \x1b[2m      Tests \x1b[22m \x1b[1m\x1b[32m3 passed\x1b[39m\x1b[22m\x1b[2m | \x1b[22m\x1b[33m1 skipped\x1b[39m\x1b[90m (4)\x1b[39m\n\
             \x1b[2m   Start at \x1b[22m 12:00:00\n\x1b[2m   Duration \x1b[22m 312ms",
        );
        assert_eq!(vitest(&out).unwrap().counts, counts(3, 0, 1, 0));
        // 0.x and a failure with an unhandled error.
        let out = lines(
            "Test Files  1 failed | 2 passed (3)\n     Tests  1 failed | 6 passed | 2 todo (9)\n      Errors  1 error\n",
        );
        assert_eq!(vitest(&out).unwrap().counts, counts(6, 1, 2, 1));
        let out =
            lines("No test files found, exiting with code 1\n\ninclude: **/*.{test,spec}.?(c|m)[jt]s?(x)");
        assert!(vitest(&out).unwrap().no_tests);
        // jest's line is not vitest's.
        assert_eq!(vitest(&lines("Tests:       5 passed, 5 total")), None);
    }

    #[test]
    fn mocha_summaries() {
        let out = lines(
            "  calc\n    ✔ adds\n    1) divides\n\n\n  3 passing (12ms)\n  1 pending\n  2 failing\n\n  1) calc\n",
        );
        assert_eq!(mocha(&out).unwrap().counts, counts(3, 2, 1, 0));
        let out = lines("\n  0 passing (1ms)\n");
        assert!(mocha(&out).unwrap().no_tests);
        assert!(
            mocha(&lines("Error: No test files found: \"test\""))
                .unwrap()
                .no_tests
        );
    }

    #[test]
    fn cargo_test_sums_every_binary_and_the_doc_tests() {
        let out = lines(
            "   Compiling calc v0.1.0 (/w)\n    Finished `test` profile [unoptimized + debuginfo] target(s) in 1.2s\n\
             \x20    Running unittests src/lib.rs (target/debug/deps/calc-1)\n\nrunning 3 tests\n\
             test tests::adds ... ok\ntest tests::slow ... ignored\n\n\
             test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n\
             \x20    Running tests/more.rs (target/debug/deps/more-2)\n\n\
             test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\n\
             \x20  Doc-tests calc\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s\n",
        );
        assert_eq!(cargo_test(&out).unwrap().counts, counts(4, 1, 1, 0));
        // Older cargo: no "finished in".
        let out = lines("test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!(cargo_test(&out).unwrap().counts, counts(5, 0, 0, 0));
        let out = lines(
            "error[E0425]: cannot find value `x`\nerror: could not compile `calc` (lib test) due to 1 previous error",
        );
        assert_eq!(cargo_test(&out).unwrap().counts, counts(0, 0, 0, 1));
        assert_eq!(cargo_test(&lines("running 0 tests")), None);
    }

    #[test]
    fn go_test_verbose_and_json() {
        let out = lines(
            "=== RUN   TestAdd\n--- PASS: TestAdd (0.00s)\n=== RUN   TestTable\n=== RUN   TestTable/one\n\
             \x20   --- PASS: TestTable/one (0.00s)\n--- PASS: TestTable (0.00s)\n=== RUN   TestDiv\n\
             \x20   calc_test.go:20: want 2, got 3\n--- FAIL: TestDiv (0.00s)\n=== RUN   TestSkip\n\
             \x20   calc_test.go:25: skipped\n--- SKIP: TestSkip (0.00s)\nFAIL\nFAIL\texample.com/calc\t0.004s\n\
             ok  \texample.com/calc/other\t(cached)\n",
        );
        assert_eq!(go_test(&out).unwrap().counts, counts(3, 1, 1, 0));
        let out = lines(
            "{\"Time\":\"2024-01-01T00:00:00Z\",\"Action\":\"run\",\"Package\":\"m\",\"Test\":\"TestA\"}\n\
             {\"Time\":\"2024-01-01T00:00:00Z\",\"Action\":\"output\",\"Package\":\"m\",\"Test\":\"TestA\",\"Output\":\"--- PASS: TestA (0.00s)\\n\"}\n\
             {\"Time\":\"2024-01-01T00:00:00Z\",\"Action\":\"pass\",\"Package\":\"m\",\"Test\":\"TestA\",\"Elapsed\":0}\n\
             {\"Time\":\"2024-01-01T00:00:00Z\",\"Action\":\"fail\",\"Package\":\"m\",\"Test\":\"TestB\",\"Elapsed\":0}\n\
             {\"Time\":\"2024-01-01T00:00:00Z\",\"Action\":\"fail\",\"Package\":\"m\",\"Elapsed\":0.01}\n",
        );
        assert_eq!(go_test(&out).unwrap().counts, counts(1, 1, 0, 0));
        let out = lines("?   \texample.com/empty\t[no test files]\n");
        assert!(go_test(&out).unwrap().no_tests);
        // Without -v the counts are unknown.
        assert_eq!(go_test(&lines("ok  \texample.com/calc\t0.004s\n")), None);
        let out = lines("FAIL\texample.com/calc [build failed]\n");
        assert_eq!(go_test(&out).unwrap().counts, counts(0, 0, 0, 1));
    }

    #[test]
    fn ctest_summaries() {
        let out = lines(
            "Test project /w/build\n    Start 1: example\n1/3 Test #1: example ..........   Passed    0.01 sec\n2/3 Test #2: big ..............***Skipped   0.00 sec\n3/3 Test #3: bad ..............***Failed    0.02 sec\n\n67% tests passed, 1 tests failed out of 3\n",
        );
        let found = ctest(&out).unwrap();
        assert_eq!(found.counts, counts(1, 1, 1, 0));
        let all =
            lines("100% tests passed, 0 tests failed out of 7\n\nTotal Test time (real) =   0.05 sec\n");
        assert_eq!(ctest(&all).unwrap().counts, counts(7, 0, 0, 0));
        assert!(ctest(&lines("No tests were found!!!\n")).is_none());
    }

    #[test]
    fn ava_summaries() {
        let out = lines(
            "  ✔ styles\n  ✔ nesting\n  ─\n\n  35 tests passed\n  2 tests skipped\n  1 known failure\n",
        );
        assert_eq!(ava(&out).unwrap().counts, counts(35, 0, 3, 0));
        let out =
            lines("  ✘ [fail] level\n  ─\n\n  1 test failed\n  1 test passed\n  1 uncaught exception\n");
        assert_eq!(ava(&out).unwrap().counts, counts(1, 1, 0, 1));
        // CTest's summary is not AVA's.
        assert!(ava(&lines("100% tests passed, 0 tests failed out of 7\n")).is_none());
    }

    #[test]
    fn automake_and_tap_summaries() {
        let out = lines(
            "============================================================================\nTestsuite summary for hello 1.0\n============================================================================\n# TOTAL: 5\n# PASS:  3\n# SKIP:  1\n# XFAIL: 0\n# FAIL:  1\n# XPASS: 0\n# ERROR: 0\n",
        );
        assert_eq!(automake(&out).unwrap().counts, counts(3, 1, 1, 0));
        let out = lines("1..4\nok 1 - adds\nnot ok 2 - subtracts\nok 3 # SKIP no float\nok 4\n");
        assert_eq!(tap(&out).unwrap().counts, counts(2, 1, 1, 0));
        assert!(tap(&lines("looks ok to me\n")).is_none());
        assert!(interesting("ok 1 - adds") && interesting("not ok 2 - subtracts"));
        assert!(!interesting("ok then"));
    }

    #[test]
    fn node_test_runner_summaries() {
        // Spec reporter (Node 20+ on a terminal, 23+ always).
        let out = lines(
            "✔ adds (0.5ms)\n✖ divides (1.1ms)\nℹ tests 4\nℹ suites 0\nℹ pass 2\nℹ fail 1\n\
             ℹ cancelled 0\nℹ skipped 1\nℹ todo 0\nℹ duration_ms 41.2",
        );
        assert_eq!(node_test(&out).unwrap().counts, counts(2, 1, 1, 0));
        // TAP reporter (Node 18–22 when piped).
        let out = lines(
            "TAP version 13\nok 1 - adds\n1..1\n# tests 1\n# suites 0\n# pass 1\n# fail 0\n# cancelled 0\n# skipped 0\n# todo 0\n# duration_ms 30.1",
        );
        assert_eq!(node_test(&out).unwrap().counts, counts(1, 0, 0, 0));
        let out = lines("# tests 0\n# pass 0\n# fail 0");
        assert!(node_test(&out).unwrap().no_tests);
        assert_eq!(node_test(&lines("# a markdown heading")), None);
    }

    #[test]
    fn several_frameworks_are_summed_and_the_expected_one_is_tried_first() {
        let out = lines(
            "===== 3 passed in 0.10s =====\n\
             test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n",
        );
        let found = parse(&out, None);
        assert_eq!(found.len(), 2);
        assert_eq!(total(&found), counts(5, 0, 1, 0));
        let found = parse(&out, Some(Framework::CargoTest));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].framework, Framework::CargoTest);
        let found = parse(&lines("Ran 2 tests in 0.01s\n\nOK"), Some(Framework::Django));
        assert_eq!(found[0].framework, Framework::Django);
        assert_eq!(found[0].counts, counts(2, 0, 0, 0));
        assert!(parse(&lines("hello\nworld"), None).is_empty());
    }

    #[test]
    fn summaries_read_as_interesting() {
        for line in [
            "===== 3 passed in 0.10s =====",
            "Ran 2 tests in 0.01s",
            "OK (skipped=1)",
            "Tests:       5 passed, 5 total",
            "      Tests  3 passed (3)",
            "  3 passing (12ms)",
            "test result: ok. 2 passed; 0 failed",
            "--- PASS: TestA (0.00s)",
            "?   \tm\t[no test files]",
        ] {
            assert!(interesting(line), "{line}");
        }
        assert!(!interesting("Compiling calc v0.1.0"));
        assert_eq!(counts(4, 1, 2, 0).describe(), "1 failed, 4 passed, 2 skipped");
        assert_eq!(Counts::default().describe(), "0 tests");
    }
}
