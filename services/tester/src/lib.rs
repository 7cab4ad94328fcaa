//! The tester agent: runs a repository's own tests and reports counts.
//!
//! [`LocalTester`] runs a component's `test` command once, with a time
//! limit, in the shared sandbox with the runner's settings (it launches
//! through `reporunner_sandbox::process`: one process group, bubblewrap, the
//! owner's uid, a scrubbed environment, rlimits or a cgroup, the run's own
//! install environments and the owner's caches writable), forced out of
//! watch mode (see [`command`]), and reads the counts from its output (see
//! [`parse`]). How it ended:
//!
//! - TIMED_OUT: the limit passed; the whole process group was killed;
//! - NO_TESTS: the framework ran and found nothing to run (also when every
//!   test was skipped), never a success;
//! - UNPARSED: no known summary in the output, whatever the exit code;
//! - FAILED: a test failed or errored, or the command exited non-zero even
//!   though the counts say all passed;
//! - PASSED: otherwise.
//!
//! The domain lives behind [`Tester`]; [`grpc`] is a thin adapter.
#![forbid(unsafe_code)]

pub mod command;
pub mod config;
pub mod error;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod metrics;
pub mod parse;

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Component as PathPart, Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use config::TesterConfig;
pub use error::{Result, TesterError};
use parse::{Counts, Found, Framework};
use reporunner_proto::{
    agents::tester::v1::{RunTestsResponse, TestCounts, TestOutcome},
    common::v1::Component,
};
use reporunner_sandbox::{
    Limits, Sandbox,
    process::{self, LaunchSpec, ProcessSettings, StopSignal},
};
use tokio::{
    io::AsyncReadExt as _,
    sync::{Semaphore, mpsc},
};

/// One test run to make.
#[derive(Clone, Debug, Default)]
pub struct TestSpec {
    pub run_id: String,
    /// The workspace root (absolute).
    pub workspace_path: PathBuf,
    /// Its `test` command runs in `test.working_dir`, else its `path`.
    pub component: Component,
    /// Over the plan's defaults; `CI=true` goes over it.
    pub env: BTreeMap<String, String>,
    /// 0: the agent's default.
    pub timeout_seconds: u32,
    /// Whose sandbox uid the tests run as; empty: the server's own (only
    /// the embedded single user).
    pub owner_id: String,
    /// The tier's step limits; zero fields take the runner's defaults.
    pub limits: reporunner_proto::common::v1::StepLimits,
}

/// The tester agent's domain.
pub trait Tester: Send + Sync + 'static {
    /// Runs the component's tests once and reports how they ended.
    fn run_tests(&self, spec: TestSpec) -> impl Future<Output = Result<RunTestsResponse>> + Send;
}

/// Runs tests as host processes in the shared sandbox.
#[derive(Debug)]
pub struct LocalTester {
    config: Arc<TesterConfig>,
    settings: ProcessSettings,
    sandbox: Sandbox,
    slots: Semaphore,
}

impl LocalTester {
    /// `settings` are the sandbox settings of the runner agent's processes
    /// (resolved; `RunnerConfig::process_settings`): the same sandbox,
    /// hidden paths, per-run tmp dirs, passed variables and default limits.
    pub fn new(config: TesterConfig, settings: ProcessSettings) -> Result<Self> {
        config.validate()?;
        settings
            .validate()
            .map_err(|e| TesterError::InvalidConfig(format!("the sandbox settings: {e}")))?;
        metrics::describe();
        Ok(Self {
            slots: Semaphore::new(config.max_concurrent),
            config: Arc::new(config),
            sandbox: Sandbox::new(settings.sandbox_config()),
            settings,
        })
    }
}

/// A directory inside `workspace` named by a relative path without `..`.
async fn working_dir(workspace: &Path, relative: &str) -> Result<PathBuf> {
    let relative = Path::new(relative);
    if relative.is_absolute() || relative.components().any(|c| matches!(c, PathPart::ParentDir)) {
        return Err(TesterError::InvalidArgument(format!(
            "the working directory {} must be relative to the workspace, without `..`",
            relative.display()
        )));
    }
    let dir = tokio::fs::canonicalize(workspace.join(relative))
        .await
        .map_err(|_| {
            TesterError::NotFound(format!(
                "the working directory {} does not exist in the workspace",
                relative.display()
            ))
        })?;
    if !dir.starts_with(workspace) || !dir.is_dir() {
        return Err(TesterError::InvalidArgument(format!(
            "the working directory {} is not a directory inside the workspace",
            relative.display()
        )));
    }
    Ok(dir)
}

/// The `test` script of `dir/package.json`, when there is one.
async fn package_test_script(dir: &Path) -> Option<String> {
    let path = dir.join("package.json");
    let meta = tokio::fs::metadata(&path).await.ok()?;
    if meta.len() > 1024 * 1024 {
        return None;
    }
    let text = tokio::fs::read_to_string(&path).await.ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("scripts")?.get("test")?.as_str().map(str::to_owned)
}

/// The output as the tester keeps it: a tail for the response, and the
/// lines the parsers may need, both bounded.
#[derive(Debug)]
struct Output {
    tail: VecDeque<String>,
    tail_lines: usize,
    summary: VecDeque<String>,
    summary_lines: usize,
}

impl Output {
    fn new(config: &TesterConfig) -> Self {
        Self {
            tail: VecDeque::with_capacity(config.tail_lines),
            tail_lines: config.tail_lines,
            summary: VecDeque::new(),
            summary_lines: config.max_summary_lines,
        }
    }

    fn push(&mut self, raw: &str) {
        let line = parse::strip_ansi(raw);
        if parse::interesting(&line) {
            if self.summary.len() == self.summary_lines {
                self.summary.pop_front();
            }
            self.summary.push_back(line.clone());
        }
        if line.trim().is_empty() && self.tail.back().is_some_and(|l| l.trim().is_empty()) {
            return;
        }
        if self.tail.len() == self.tail_lines {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// Reads `reader` into lines (split at `\n` and `\r`, cut at `max` bytes)
/// sent to `lines`.
async fn read_lines(mut reader: impl tokio::io::AsyncRead + Unpin, max: usize, lines: mpsc::Sender<String>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut chunk = [0_u8; 8 * 1024];
    let mut after_cr = false;
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &chunk[..n] {
            // `\r\n` ends one line; a lone `\r` (progress redraws) ends one too.
            if byte == b'\n' && after_cr {
                after_cr = false;
                continue;
            }
            after_cr = byte == b'\r';
            if byte == b'\n' || byte == b'\r' {
                let line = String::from_utf8_lossy(&buffer).into_owned();
                buffer.clear();
                if lines.send(line).await.is_err() {
                    return;
                }
            } else if buffer.len() < max {
                buffer.push(byte);
            }
        }
    }
    if !buffer.is_empty() {
        let _ = lines.send(String::from_utf8_lossy(&buffer).into_owned()).await;
    }
}

/// How a run ended, before it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    TimedOut,
}

/// The outcome, the counts, the framework's name and a summary in words.
pub fn decide(
    kind: &command::Kind,
    found: &[Found],
    ending: Ending,
) -> (TestOutcome, Counts, String, String) {
    let counts = parse::total(found);
    let found_names = || {
        let mut names: Vec<&str> = found.iter().map(|f| f.framework.name()).collect();
        names.dedup();
        names.join(" + ")
    };
    let framework = match kind {
        command::Kind::Framework(f) => f.name().to_owned(),
        command::Kind::Make if found.is_empty() => "make test".to_owned(),
        command::Kind::Make => format!("make test ({})", found_names()),
        command::Kind::Unknown if found.is_empty() => "unknown".to_owned(),
        command::Kind::Unknown => found_names(),
    };
    let exit_code = match ending {
        Ending::TimedOut => {
            let seen = if found.is_empty() {
                String::new()
            } else {
                format!(" ({} before the limit)", counts.describe())
            };
            return (
                TestOutcome::TimedOut,
                counts,
                framework,
                format!("the tests did not finish in time and were killed{seen}"),
            );
        }
        Ending::Exited(code) => code,
    };
    let said_none = found.iter().any(|f| f.no_tests);
    // pytest exits 5 when it collected nothing.
    let pytest_empty = kind.framework() == Some(Framework::Pytest) && exit_code == 5;
    if found.is_empty() && *kind == command::Kind::Make {
        // A Makefile's test target is the project's own suite; what it
        // prints is its own, and its exit status is its verdict.
        let passed = exit_code == 0;
        let counts = parse::Counts {
            passed: u32::from(passed),
            failed: u32::from(!passed),
            ..parse::Counts::default()
        };
        let outcome = if passed {
            TestOutcome::Passed
        } else {
            TestOutcome::Failed
        };
        let said = format!(
            "the test target exited with code {exit_code} and printed no per-test summary this agent reads: counted as one {} suite",
            if passed { "passed" } else { "failed" }
        );
        return (outcome, counts, framework, said);
    }
    if found.is_empty() {
        if pytest_empty {
            return (
                TestOutcome::NoTests,
                counts,
                framework,
                "no tests ran (pytest collected nothing)".into(),
            );
        }
        return (
            TestOutcome::Unparsed,
            counts,
            framework,
            format!("the command exited with code {exit_code} and printed no test summary this agent reads"),
        );
    }
    if counts.ran() == 0 {
        let why = if counts.skipped > 0 {
            format!("no tests ran ({} skipped)", counts.skipped)
        } else if said_none || pytest_empty {
            "no tests ran (the test runner found none)".to_owned()
        } else {
            "no tests ran".to_owned()
        };
        return (TestOutcome::NoTests, counts, framework, why);
    }
    if counts.failed > 0 || counts.errors > 0 {
        return (TestOutcome::Failed, counts, framework, counts.describe());
    }
    if exit_code != 0 {
        return (
            TestOutcome::Failed,
            counts,
            framework,
            format!(
                "{}, but the command exited with code {exit_code}",
                counts.describe()
            ),
        );
    }
    (TestOutcome::Passed, counts, framework, counts.describe())
}

fn outcome_label(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::NoTests => "no_tests",
        TestOutcome::TimedOut => "timed_out",
        TestOutcome::Unparsed | TestOutcome::Unspecified => "unparsed",
    }
}

/// The checks of a request that need no file system; returns its test command.
fn check_spec(spec: &TestSpec) -> Result<&reporunner_proto::common::v1::Command> {
    let component = &spec.component;
    process::check_segment("run_id", &spec.run_id).map_err(TesterError::InvalidArgument)?;
    process::check_segment("component name", &component.name).map_err(TesterError::InvalidArgument)?;
    let test = component
        .test
        .as_ref()
        .filter(|t| !t.run.trim().is_empty())
        .ok_or_else(|| {
            TesterError::InvalidArgument(format!(
                "component {} has no test command; nothing to run",
                component.name
            ))
        })?;
    if test.run.contains('\0') {
        return Err(TesterError::InvalidArgument(
            "the test command contains a NUL byte".into(),
        ));
    }
    if !spec.workspace_path.is_absolute() {
        return Err(TesterError::InvalidArgument(
            "workspace_path must be absolute".into(),
        ));
    }
    Ok(test)
}

impl LocalTester {
    async fn prepare(&self, spec: &TestSpec) -> Result<(LaunchSpec, command::Kind)> {
        let component = &spec.component;
        let test = check_spec(spec)?;
        let workspace = tokio::fs::canonicalize(&spec.workspace_path)
            .await
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                TesterError::NotFound(format!(
                    "the workspace {} does not exist",
                    spec.workspace_path.display()
                ))
            })?;
        self.settings
            .check_workspace(&workspace)
            .map_err(TesterError::InvalidArgument)?;
        let relative = if test.working_dir.is_empty() {
            component.path.as_str()
        } else {
            test.working_dir.as_str()
        };
        let working_dir = working_dir(&workspace, relative).await?;
        let script = match command::test_script_runner(&test.run) {
            Some(_) => package_test_script(&working_dir).await,
            None => None,
        };
        let kind = match (command::detect(&test.run), &script) {
            (command::Kind::Unknown, Some(script)) => command::detect(script),
            (kind, _) => kind,
        };
        let command_line = command::one_shot(&test.run, script.as_deref());

        let tmp_dir = self.settings.tmp_dir.join(&spec.run_id);
        let home = tmp_dir.join("home");
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| TesterError::Spawn(format!("cannot create the run's tmp dir: {e}")))?;
        let passed = self
            .settings
            .pass_env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)));
        let defaults = component
            .env
            .iter()
            .filter(|var| !var.default_value.is_empty())
            .map(|var| (var.name.clone(), var.default_value.clone()));
        let own: [(String, String); 4] = [
            ("CI".into(), "true".into()),
            ("TMPDIR".into(), tmp_dir.display().to_string()),
            ("NO_COLOR".into(), "1".into()),
            ("FORCE_COLOR".into(), "0".into()),
        ];
        let env =
            process::environment(passed, defaults, &spec.env, own).map_err(TesterError::InvalidArgument)?;
        let timeout = self.config.timeout(spec.timeout_seconds);
        let d = &self.settings.default_limits;
        let asked = &spec.limits;
        let pick = |asked: u64, default: u64| if asked == 0 { default } else { asked };
        let pick32 = |asked: u32, default: u32| if asked == 0 { default } else { asked };
        let launch = LaunchSpec {
            process_id: format!("test-{}", uuid::Uuid::new_v4().simple()),
            run_id: spec.run_id.clone(),
            component: component.name.clone(),
            command: command_line,
            workspace,
            working_dir,
            env,
            limits: Limits {
                memory_bytes: pick(asked.memory_bytes, d.memory_bytes),
                cpu_millis: pick32(asked.cpu_millis, d.cpu_millis),
                max_processes: pick32(asked.max_processes, d.max_processes),
                max_open_files: pick32(asked.max_open_files, d.max_open_files),
                max_file_bytes: pick(asked.max_file_bytes, d.max_file_bytes),
                // A little over the limit: our own timer kills first.
                max_runtime_seconds: u32::try_from(timeout.as_secs() + 30).unwrap_or(u32::MAX),
            },
            tmp_dir,
            owner: (!spec.owner_id.is_empty()).then(|| spec.owner_id.clone()),
        };
        Ok((launch, kind))
    }
}

impl Tester for LocalTester {
    async fn run_tests(&self, spec: TestSpec) -> Result<RunTestsResponse> {
        let (launch, kind) = self.prepare(&spec).await?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TesterError::Spawn("the tester is shutting down".into()))?;
        let timeout = self.config.timeout(spec.timeout_seconds);
        let started = Instant::now();
        tracing::info!(run_id = %spec.run_id, component = %spec.component.name, command = %launch.command, "tests starting");
        let mut spawned = process::spawn(&self.sandbox, &self.settings, &launch).await?;
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        let mut readers = Vec::new();
        if let Some(stdout) = spawned.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                stdout,
                self.config.max_line_bytes,
                tx.clone(),
            )));
        }
        if let Some(stderr) = spawned.stderr.take() {
            readers.push(tokio::spawn(read_lines(
                stderr,
                self.config.max_line_bytes,
                tx.clone(),
            )));
        }
        drop(tx);
        let mut output = Output::new(&self.config);
        if !spawned.note.is_empty() {
            output.push(&format!("[tester] {}", spawned.note));
        }
        let process = &mut spawned.process;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut lines_open = true;
        let ending = loop {
            tokio::select! {
                line = rx.recv(), if lines_open => match line {
                    Some(line) => output.push(&line),
                    None => lines_open = false,
                },
                code = process.wait_exit() => {
                    break Ending::Exited(code.map_err(|e| TesterError::Spawn(e.to_string()))?);
                }
                () = &mut deadline => {
                    process.signal(StopSignal::Terminate);
                    let grace = self.config.kill_grace;
                    if tokio::time::timeout(grace, process.wait_exit()).await.is_err() {
                        process.signal(StopSignal::Kill);
                        let _ = tokio::time::timeout(Duration::from_secs(5), process.wait_exit()).await;
                    }
                    break Ending::TimedOut;
                }
            }
        };
        process.cleanup().await;
        // The rest of the output: the pipes close once the group is gone.
        let drain = async {
            while let Some(line) = rx.recv().await {
                output.push(&line);
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
            output.push("[tester] output still open 5 s after the tests ended; the rest is not read");
        }
        for reader in readers {
            reader.abort();
        }
        let summary_lines: Vec<String> = output.summary.into_iter().collect();
        let found = parse::parse(&summary_lines, kind.framework());
        let (outcome, counts, framework, summary) = decide(&kind, &found, ending);
        let elapsed = started.elapsed();
        metrics::finished(&framework, outcome_label(outcome), elapsed.as_secs_f64());
        tracing::info!(
            run_id = %spec.run_id,
            component = %spec.component.name,
            framework = %framework,
            outcome = outcome_label(outcome),
            passed = counts.passed,
            failed = counts.failed,
            "tests ended"
        );
        Ok(RunTestsResponse {
            outcome: outcome.into(),
            counts: Some(TestCounts {
                passed: counts.passed,
                failed: counts.failed,
                skipped: counts.skipped,
                errors: counts.errors,
            }),
            framework,
            exit_code: match ending {
                Ending::Exited(code) => code,
                Ending::TimedOut => -1,
            },
            duration_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            log_tail: output.tail.into(),
            command: launch.command,
            summary,
            sandboxed: spawned.sandboxed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(framework: Framework, passed: u32, failed: u32, skipped: u32, no_tests: bool) -> Found {
        Found {
            framework,
            counts: Counts {
                passed,
                failed,
                skipped,
                errors: 0,
            },
            no_tests,
        }
    }

    #[test]
    fn outcomes_follow_counts_and_exit_codes() {
        let pytest = command::Kind::Framework(Framework::Pytest);
        let ok = [found(Framework::Pytest, 3, 0, 1, false)];
        assert_eq!(decide(&pytest, &ok, Ending::Exited(0)).0, TestOutcome::Passed);
        // All passing but a non-zero exit: failed.
        let (outcome, _, _, summary) = decide(&pytest, &ok, Ending::Exited(1));
        assert_eq!(outcome, TestOutcome::Failed);
        assert!(summary.contains("exited with code 1"), "{summary}");
        let bad = [found(Framework::Pytest, 3, 1, 0, false)];
        assert_eq!(decide(&pytest, &bad, Ending::Exited(1)).0, TestOutcome::Failed);
        // 0 tests is never a success, whatever the exit code.
        let none = [found(Framework::Unittest, 0, 0, 0, true)];
        let unittest = command::Kind::Framework(Framework::Unittest);
        assert_eq!(
            decide(&unittest, &none, Ending::Exited(0)).0,
            TestOutcome::NoTests
        );
        let skipped = [found(Framework::Pytest, 0, 0, 4, false)];
        let (outcome, _, _, summary) = decide(&pytest, &skipped, Ending::Exited(0));
        assert_eq!(outcome, TestOutcome::NoTests);
        assert!(summary.contains("4 skipped"), "{summary}");
        assert_eq!(decide(&pytest, &[], Ending::Exited(5)).0, TestOutcome::NoTests);
        // Nothing readable: unparsed, even with exit code 0.
        let (outcome, _, framework, _) = decide(&command::Kind::Unknown, &[], Ending::Exited(0));
        assert_eq!((outcome, framework.as_str()), (TestOutcome::Unparsed, "unknown"));
        assert_eq!(decide(&pytest, &ok, Ending::TimedOut).0, TestOutcome::TimedOut);
    }

    #[test]
    fn make_names_what_it_ran() {
        let both = [
            found(Framework::Pytest, 2, 0, 0, false),
            found(Framework::CargoTest, 3, 0, 1, false),
        ];
        let (outcome, counts, framework, _) = decide(&command::Kind::Make, &both, Ending::Exited(0));
        assert_eq!(outcome, TestOutcome::Passed);
        assert_eq!(counts.passed, 5);
        assert_eq!(framework, "make test (pytest + cargo test)");
    }

    #[test]
    fn a_make_test_target_without_a_summary_is_one_suite_judged_by_its_exit() {
        let (outcome, counts, framework, said) = decide(&command::Kind::Make, &[], Ending::Exited(0));
        assert_eq!(outcome, TestOutcome::Passed);
        assert_eq!((counts.passed, counts.failed), (1, 0));
        assert_eq!(framework, "make test");
        assert!(said.contains("counted as one passed suite"), "{said}");
        let (outcome, counts, ..) = decide(&command::Kind::Make, &[], Ending::Exited(2));
        assert_eq!(outcome, TestOutcome::Failed);
        assert_eq!((counts.passed, counts.failed), (0, 1));
        // Any other command without a summary stays unparsed.
        let (outcome, ..) = decide(&command::Kind::Unknown, &[], Ending::Exited(0));
        assert_eq!(outcome, TestOutcome::Unparsed);
    }

    #[test]
    fn output_is_bounded_and_stripped() {
        let config = TesterConfig {
            tail_lines: 2,
            max_summary_lines: 1,
            ..TesterConfig::default()
        };
        let mut output = Output::new(&config);
        for line in [
            "a",
            "\x1b[32m1 passed\x1b[0m in 0.01s",
            "",
            "",
            "3 passed in 0.02s",
        ] {
            output.push(line);
        }
        assert_eq!(output.tail, ["", "3 passed in 0.02s"]);
        assert_eq!(output.summary, ["3 passed in 0.02s"]);
    }
}
