//! The tester agent over real gRPC on loopback, running real test runners
//! (Python's unittest, cargo test, and a watch-mode command) in the
//! runner's sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, sync::Arc, time::Duration};

use reporunner_proto::{
    agents::tester::v1::{
        RunTestsRequest, RunTestsResponse, TestCounts, TestOutcome,
        tester_service_client::TesterServiceClient,
    },
    common::v1::{Command, Component, ComponentKind},
};
use reporunner_sandbox::process::ProcessSettings;
use reporunner_server::{CancellationToken, GrpcServer};
use reporunner_tester::{LocalTester, TesterConfig, grpc::TesterGrpc};
use tonic::{Code, transport::Channel};

struct Agent {
    client: TesterServiceClient<Channel>,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn agent() -> Agent {
    let data = tempfile::tempdir().unwrap();
    let sandbox = ProcessSettings::default().resolve(data.path());
    let config = TesterConfig {
        kill_grace: Duration::from_secs(1),
        ..TesterConfig::default()
    };
    let tester = LocalTester::new(config, sandbox).unwrap();
    let (addr, shutdown) = GrpcServer::new()
        .add_service(TesterGrpc::new(Arc::new(tester)).into_server())
        .spawn_on_loopback()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    Agent {
        client: TesterServiceClient::new(channel),
        shutdown,
        _data: data,
    }
}

fn component(test: &str) -> Component {
    Component {
        name: "lib".into(),
        path: ".".into(),
        kind: ComponentKind::Library.into(),
        test: Some(Command {
            run: test.into(),
            ..Command::default()
        }),
        ..Component::default()
    }
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

async fn run(
    agent: &mut Agent,
    workspace: &Path,
    test: &str,
    env: &[(&str, &str)],
    timeout_seconds: u32,
) -> Result<RunTestsResponse, tonic::Status> {
    agent
        .client
        .run_tests(RunTestsRequest {
            run_id: "run-1".into(),
            workspace_path: workspace.display().to_string(),
            component: Some(component(test)),
            env: env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            timeout_seconds,
            ..RunTestsRequest::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn counts(passed: u32, failed: u32, skipped: u32, errors: u32) -> Option<TestCounts> {
    Some(TestCounts {
        passed,
        failed,
        skipped,
        errors,
    })
}

const UNITTEST_SUITE: &str = r#"
import os
import unittest


class Calc(unittest.TestCase):
    def test_add(self):
        self.assertEqual(1 + 1, 2)

    def test_sub(self):
        self.assertEqual(3 - 1, 2)

    @unittest.skip("later")
    def test_pow(self):
        pass

    def test_env(self):
        self.assertEqual(os.environ.get("CI"), "true")
        self.assertNotEqual(os.environ.get("BREAK"), "1", "failing on request")
"#;

#[tokio::test]
async fn unittest_counts_are_exact_and_a_failure_fails() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), &[("tests/test_calc.py", UNITTEST_SUITE)]);
    let command = "python3 -m unittest discover -s tests";
    let passing = run(&mut agent, ws.path(), command, &[], 60).await.unwrap();
    assert_eq!(passing.outcome(), TestOutcome::Passed, "{passing:?}");
    assert_eq!(passing.framework, "unittest");
    assert_eq!(passing.counts, counts(3, 0, 1, 0), "{passing:?}");
    assert_eq!(passing.exit_code, 0);

    let failing = run(&mut agent, ws.path(), command, &[("BREAK", "1")], 60)
        .await
        .unwrap();
    assert_eq!(failing.outcome(), TestOutcome::Failed, "{failing:?}");
    assert_eq!(failing.counts, counts(2, 1, 1, 0), "{failing:?}");
    assert!(
        failing.log_tail.iter().any(|l| l.contains("failing on request")),
        "{failing:?}"
    );
}

#[tokio::test]
async fn zero_tests_and_unreadable_output_are_never_a_success() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), &[("tests/helpers.py", "X = 1\n")]);
    let none = run(
        &mut agent,
        ws.path(),
        "python3 -m unittest discover -s tests",
        &[],
        60,
    )
    .await
    .unwrap();
    assert_eq!(none.outcome(), TestOutcome::NoTests, "{none:?}");
    assert!(none.summary.contains("no tests ran"), "{none:?}");

    let unparsed = run(&mut agent, ws.path(), "echo all good", &[], 60)
        .await
        .unwrap();
    assert_eq!(unparsed.outcome(), TestOutcome::Unparsed, "{unparsed:?}");
    assert_eq!(unparsed.exit_code, 0);
    assert_eq!(unparsed.log_tail.last().map(String::as_str), Some("all good"));

    // All counts passing but a non-zero exit: failed.
    write(ws.path(), &[("tests/test_calc.py", UNITTEST_SUITE)]);
    let exited = run(
        &mut agent,
        ws.path(),
        "python3 -m unittest discover -s tests; exit 3",
        &[],
        60,
    )
    .await
    .unwrap();
    assert_eq!(exited.outcome(), TestOutcome::Failed, "{exited:?}");
    assert!(exited.summary.contains("exited with code 3"), "{exited:?}");
}

#[tokio::test]
async fn a_run_past_its_limit_is_killed_with_its_group() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    let marker = ws.path().join("late");
    let command = format!("echo started; (sleep 4; touch {}) & sleep 60", marker.display());
    let started = std::time::Instant::now();
    let timed_out = run(&mut agent, ws.path(), &command, &[], 1).await.unwrap();
    assert_eq!(timed_out.outcome(), TestOutcome::TimedOut, "{timed_out:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(timed_out.log_tail.iter().any(|l| l == "started"), "{timed_out:?}");
    // The background member of the group went with it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!marker.exists(), "a process of the group outlived the timeout");
}

#[tokio::test]
async fn a_watching_command_is_run_once() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    // A stand-in for vitest: watches forever unless told `run`, then prints
    // vitest's summary.
    write(
        ws.path(),
        &[(
            "bin/vitest",
            "#!/bin/sh\nif [ \"$1\" != run ]; then echo watching; while true; do sleep 1; done; fi\n\
             echo ' Test Files  1 passed (1)'\necho '      Tests  3 passed | 1 skipped (4)'\n",
        )],
    );
    let script = ws.path().join("bin/vitest");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        ws.path().join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let once = run(&mut agent, ws.path(), "vitest", &[("PATH", &path)], 30)
        .await
        .unwrap();
    assert_eq!(once.outcome(), TestOutcome::Passed, "{once:?}");
    assert_eq!(once.command, "vitest run");
    assert_eq!(once.framework, "vitest");
    assert_eq!(once.counts, counts(3, 0, 1, 0));
}

#[tokio::test]
async fn cargo_test_sums_unit_and_doc_tests() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/test-cargo-lib");
    for file in ["Cargo.toml", "src/lib.rs"] {
        let text = std::fs::read_to_string(fixture.join(file)).unwrap();
        write(ws.path(), &[(file, &text)]);
    }
    let result = run(&mut agent, ws.path(), "cargo test --offline", &[], 600)
        .await
        .unwrap();
    assert_eq!(result.outcome(), TestOutcome::Passed, "{result:?}");
    assert_eq!(result.framework, "cargo test");
    // 3 unit tests and the doc test passed; 1 ignored.
    assert_eq!(result.counts, counts(4, 0, 1, 0), "{result:?}");
}

#[tokio::test]
async fn requests_that_cannot_run_have_their_codes() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    let status = run(&mut agent, ws.path(), "  ", &[], 10).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("no test command"), "{status:?}");
    let status = run(&mut agent, Path::new("/nonexistent/ws"), "pytest", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let mut outside = component("pytest");
    outside.path = "../..".into();
    let status = agent
        .client
        .run_tests(RunTestsRequest {
            run_id: "run-1".into(),
            workspace_path: ws.path().display().to_string(),
            component: Some(outside),
            ..RunTestsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = agent
        .client
        .run_tests(RunTestsRequest {
            run_id: "../escape".into(),
            workspace_path: ws.path().display().to_string(),
            component: Some(component("pytest")),
            ..RunTestsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn make_test_sums_every_framework_it_runs() {
    let mut agent = agent().await;
    let ws = tempfile::tempdir().unwrap();
    write(
        ws.path(),
        &[
            ("tests/test_calc.py", UNITTEST_SUITE),
            (
                "js/add.test.js",
                "const test = require(\"node:test\");\nconst assert = require(\"assert\");\n\
                 test(\"adds\", () => assert.strictEqual(1 + 1, 2));\n\
                 test(\"later\", { skip: true }, () => {});\n",
            ),
            (
                "Makefile",
                "test:\n\tpython3 -m unittest discover -s tests\n\tnode --test js/\n",
            ),
        ],
    );
    let result = run(&mut agent, ws.path(), "make test", &[], 120).await.unwrap();
    assert_eq!(result.outcome(), TestOutcome::Passed, "{result:?}");
    assert_eq!(result.framework, "make test (unittest + node:test)");
    // unittest: 3 passed, 1 skipped; node:test: 1 passed, 1 skipped.
    assert_eq!(result.counts, counts(4, 0, 2, 0), "{result:?}");
}
