//! Goals TEST and START_AND_TEST through the whole mesh: the tester agent
//! runs each fixture's own tests (installed by the dependency agent) and the
//! orchestrator records exact counts in `Run.test_results`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{create, events, every_service, until, until_over};
use reporunner_proto::{
    agents::tester::v1::{TestCounts, TestOutcome},
    orchestrator::v1::{ComponentHealth, Run, RunGoal, RunState, StopRunRequest, TestResult, run_event},
};

fn counts(passed: u32, failed: u32, skipped: u32, errors: u32) -> Option<TestCounts> {
    Some(TestCounts {
        passed,
        failed,
        skipped,
        errors,
    })
}

fn only_result(run: &Run) -> &TestResult {
    assert_eq!(run.test_results.len(), 1, "{:?}", run.test_results);
    &run.test_results[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_pytest_library_reports_exact_counts_and_a_failure_fails_the_run() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-pytest-lib", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.framework, "pytest");
    assert_eq!(result.outcome(), TestOutcome::Passed);
    // 5 passed; 1 skipped and 1 xfailed count as skipped.
    assert_eq!(result.counts, counts(5, 0, 2, 0), "{result:?}");
    let seen = events(&mesh, &mut client, &run.id, true).await;
    assert!(
        seen.iter()
            .any(|e| matches!(&e.event, Some(run_event::Event::Test(t)) if t == result)),
        "a TestResult event"
    );
    assert!(
        seen.iter().any(|e| matches!(&e.event,
            Some(run_event::Event::Log(l)) if l.source == "test" && l.text.contains("5 passed"))),
        "the output's last lines are test log lines"
    );

    let created = create(
        &mesh,
        &mut client,
        "test-pytest-lib",
        RunGoal::Test,
        &[("CALC_BREAK", "1")],
    )
    .await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Failed);
    let result = only_result(&run);
    assert_eq!(result.outcome(), TestOutcome::Failed);
    assert_eq!(result.counts, counts(4, 1, 2, 0), "{result:?}");
    assert!(
        run.error.contains("test failed") && run.error.contains("1 failed"),
        "{}",
        run.error
    );
    // Test failures are not healed.
    let heals = events(&mesh, &mut client, &run.id, false).await;
    assert!(
        !heals
            .iter()
            .any(|e| matches!(&e.event, Some(run_event::Event::Heal(_)))),
        "{heals:?}"
    );
    mesh.stop().await.unwrap();
}

/// Real-repositories class 1: what the tests need is installed with the
/// project when the goal runs tests: a PEP 735 group (with an include) and
/// tox.ini's deps; the runner and the test-only imports are nowhere else.
/// Both fixtures are versioned from git (hatch-vcs, setuptools-scm) and
/// arrive without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_installs_test_dependency_groups_and_tox_deps() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    for (fixture, source) in [
        ("test-deps-groups", "[dependency-groups] tests"),
        ("test-deps-tox", "tox.ini [testenv] deps"),
    ] {
        let created = create(&mesh, &mut client, fixture, RunGoal::Test, &[]).await;
        let run = until_over(&mesh, &mut client, &created.id).await;
        assert_eq!(run.state(), RunState::Succeeded, "{fixture}: {}", run.error);
        let result = only_result(&run);
        assert_eq!(result.framework, "pytest", "{fixture}");
        assert_eq!(result.counts, counts(2, 0, 0, 0), "{fixture}: {result:?}");
        let said = events(&mesh, &mut client, &run.id, true).await;
        assert!(
            said.iter().any(|e| matches!(&e.event,
                Some(run_event::Event::Log(l)) if l.text.contains("test dependencies from") && l.text.contains(source))),
            "{fixture}: the install says where the test dependencies came from"
        );
    }
    mesh.stop().await.unwrap();
}

/// Tests that cannot run for want of a module are healed like a set-up
/// step (the resolver's missing-module rule); a failing assertion is not
/// (see the pytest library test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_tests_missing_a_module_are_healed_and_run_again() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-heal-missing-module", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    assert_eq!(
        only_result(&run).counts,
        counts(1, 0, 0, 0),
        "{:?}",
        run.test_results
    );
    let heals: Vec<_> = events(&mesh, &mut client, &run.id, false)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(run_event::Event::Heal(heal)) => Some(heal),
            _ => None,
        })
        .collect();
    assert_eq!(heals.len(), 1, "{heals:?}");
    assert_eq!(heals[0].cause, "python.missing_module", "{heals:?}");
    mesh.stop().await.unwrap();
}

/// Real-repositories class 5: `.python-version` names a version this host
/// lacks; it is a preference, and the nearest installed interpreter that
/// requires-python allows runs the tests, with a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_a_preferred_python_that_is_missing_is_no_hard_pin() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "python-preference", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    assert_eq!(
        only_result(&run).counts,
        counts(1, 0, 0, 0),
        "{:?}",
        run.test_results
    );
    let said = events(&mesh, &mut client, &run.id, true).await;
    assert!(
        said.iter().any(|e| matches!(&e.event,
            Some(run_event::Event::Log(l)) if l.text.contains("prefers Python 3.99, which is not installed"))),
        "the install says which interpreter it used instead"
    );
    mesh.stop().await.unwrap();
}

/// Real-repositories class 4: a C library is built with its own make and
/// `make test` runs; the TAP its test program prints is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_a_c_library_is_built_with_make_and_its_tap_counted() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "c-make-test", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.framework, "make test (tap)", "{result:?}");
    assert_eq!(result.counts, counts(2, 0, 0, 0), "{result:?}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_cargo_library_counts_unit_and_doc_tests() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-cargo-lib", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.framework, "cargo test");
    // 3 unit tests and 1 doc test passed, 1 ignored.
    assert_eq!(result.counts, counts(4, 0, 1, 0), "{result:?}");
    mesh.stop().await.unwrap();
}

/// A C library whose tests live in `tests/Makefile` (no root build file):
/// `make -C tests`, judged by its exit status as one suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_c_library_tests_in_a_tests_makefile() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "c-tests-dir", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.command, "make -C tests", "{result:?}");
    assert_eq!(result.counts, counts(1, 0, 0, 0), "{result:?}");
    mesh.stop().await.unwrap();
}

/// Real-repositories class 2: a dev-dependency from crates.io is fetched
/// and built in the install step (`cargo test --no-run`), so the test step,
/// whose cargo home the sandbox keeps read-only, neither downloads nor
/// compiles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_cargo_dev_dependencies_are_built_before_the_test_step() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-cargo-dev-deps", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.framework, "cargo test");
    assert_eq!(result.counts, counts(2, 0, 0, 0), "{result:?}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_vitest_in_watch_mode_runs_once_and_finishes() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-vitest-watch", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.framework, "vitest");
    assert_eq!(result.command, "npm test -- --run");
    assert_eq!(result.counts, counts(3, 0, 1, 0), "{result:?}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_zero_tests_is_no_tests_and_the_run_fails() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-no-tests", RunGoal::Test, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Failed);
    let result = only_result(&run);
    assert_eq!(result.outcome(), TestOutcome::NoTests, "{result:?}");
    assert_eq!(result.counts, counts(0, 0, 0, 0));
    assert!(run.error.contains("no tests"), "{}", run.error);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tester_start_and_test_keeps_the_app_running_with_its_results() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-flask-app", RunGoal::StartAndTest, &[]).await;
    let run = until(&mesh, &mut client, &created.id, |r| {
        r.state() == RunState::Running && !r.test_results.is_empty()
    })
    .await;
    assert_eq!(run.state(), RunState::Running, "{}", run.error);
    let result = only_result(&run);
    assert_eq!(result.outcome(), TestOutcome::Passed, "{result:?}");
    // The tests reached the running app through APP_URL.
    assert_eq!(result.counts, counts(2, 0, 0, 0), "{result:?}");
    assert_eq!(run.components.len(), 1);
    assert_eq!(run.components[0].health(), ComponentHealth::Healthy);
    let answer = common::http_get(&run.components[0].url);
    assert!(answer.contains("hello from test-flask-app"), "{answer}");
    let stopped = client
        .stop_run(mesh.request(StopRunRequest {
            run_id: run.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(stopped.state(), RunState::Stopped);
    assert_eq!(stopped.test_results, run.test_results, "results survive the stop");
    mesh.stop().await.unwrap();
}
