//! Test: the tester runs each testable component's test command once, in
//! the sandbox, and reads the counts. Each result is a `TestResult` event
//! and part of `Run.test_results`; the output's last lines are "test" log
//! lines. Each component gets its install's env, its backing services' and
//! the user's; START_AND_TEST adds `APP_URL` and `APP_PORT` of the running
//! app.
//!
//! TEST succeeds only when every component's tests PASSED; NO_TESTS,
//! FAILED, TIMED_OUT and UNPARSED fail it, naming each. START_AND_TEST
//! stays RUNNING and says in a notice which did not. Test failures are
//! results: they never go to the resolver. Tests that could not run for
//! want of a module or a command (`No module named pytest`) are not a
//! verdict: that failure is healed like any set-up step's.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reporunner_proto::{
    agents::{
        resolver::v1::Phase,
        tester::v1::{RunTestsRequest, TestOutcome},
    },
    common::v1::{Component, LogLine},
    orchestrator::v1::{RunState, TestResult, run_event},
};

use crate::{
    heal::Failure,
    run::{
        Engine, Flow, Halt, RunContext, Step, failure_message, quote_tail,
        steps::{dependency, provision},
    },
    store::{RunChange, RunComponent},
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    let running = ctx.monitor.as_ref().map(|m| m.components.clone());
    match running {
        Some(running) => Box::pin(against_running(engine, ctx, &running)).await,
        None => Box::pin(alone(engine, ctx)).await,
    }
}

/// TEST (and START_AND_TEST with nothing to start): the tests of the
/// components installed by the steps before; the run fails unless all
/// passed.
async fn alone(engine: &Engine, ctx: &mut RunContext) -> Flow {
    let mut results = Vec::with_capacity(ctx.components().len());
    for component in ctx.components().to_vec() {
        let env = test_env(
            ctx,
            &component,
            ctx.installed.get(&component.name).cloned().unwrap_or_default(),
            &[],
        );
        results.push(run_one(engine, ctx, &component, env).await?);
    }
    match verdict(&results) {
        None => Ok(()),
        Some(message) => {
            if let Some((result, tail)) = results.iter().find(|(r, tail)| missing_something(r, tail)) {
                // Not a test's verdict: the tests could not run. The
                // resolver's missing-module rules apply, as for any step.
                ctx.failed(Failure {
                    phase: Phase::Test as i32,
                    component: result.component.clone(),
                    exit_code: result.exit_code,
                    log_tail: tail.clone(),
                });
            }
            // The first component that did not pass, in its own words.
            let tail = results
                .iter()
                .find(|(r, _)| r.outcome() != TestOutcome::Passed)
                .map(|(_, tail)| {
                    let keep = tail.len().saturating_sub(engine.config.log_tail_lines);
                    tail[keep..].to_vec()
                })
                .unwrap_or_default();
            Err(Halt::Failed(format!("{message}{}", quote_tail(&tail))))
        }
    }
}

/// START_AND_TEST, once every component is up: each testable component's
/// tests against the running app (a library beside it is provisioned and
/// installed for its tests here). The run stays RUNNING whatever they say.
async fn against_running(engine: &Engine, ctx: &mut RunContext, running: &[RunComponent]) -> Flow {
    let run_id = ctx.run_id.clone();
    let plan = ctx.plan.clone().unwrap_or_default();
    let testable: Vec<Component> = plan.components.into_iter().filter(provision::testable).collect();
    if testable.is_empty() {
        let why = "no component of the plan has a test command";
        return engine
            .step(
                &run_id,
                Step::Test,
                StepStatus::Skipped,
                why.into(),
                Duration::ZERO,
            )
            .await;
    }
    let mut results = Vec::with_capacity(testable.len());
    for component in &testable {
        let installed = match ctx.installed.get(&component.name) {
            Some(env) => env.clone(),
            None => {
                provision::provision(engine, ctx, std::slice::from_ref(component)).await?;
                dependency::install_and_build(engine, ctx, component).await?.env
            }
        };
        let env = test_env(ctx, component, installed, running);
        results.push(run_one(engine, ctx, component, env).await?);
    }
    let change = RunChange {
        components: Some(running.to_vec()),
        ..RunChange::default()
    };
    engine.enter(&run_id, RunState::Running, change).await?;
    if let Some(message) = verdict(&results) {
        engine
            .notice(&run_id, format!("{message}; the components keep running"))
            .await?;
    }
    Ok(())
}

/// Whether a result that did not pass says the tests could not run for
/// want of a module or a command (and no test failed on its own).
fn missing_something(result: &TestResult, tail: &[String]) -> bool {
    const MISSING: &[&str] = &[
        "No module named",
        "ModuleNotFoundError",
        "command not found",
        "Cannot find module",
        "ERR_MODULE_NOT_FOUND",
    ];
    result.outcome() != TestOutcome::Passed
        && result.counts.is_none_or(|c| c.failed == 0)
        && tail.iter().any(|line| MISSING.iter().any(|m| line.contains(m)))
}

/// A component's test env: its install's, its backing services', the
/// running components' URLs (`APP_URL` and `APP_PORT`: its own when it
/// runs, else the first one with a URL), then the user's.
fn test_env(
    ctx: &RunContext,
    component: &Component,
    installed: BTreeMap<String, String>,
    running: &[RunComponent],
) -> BTreeMap<String, String> {
    let mut env = installed;
    env.extend(ctx.backing_env(component));
    let app = running
        .iter()
        .find(|c| c.name == component.name && !c.url.is_empty())
        .or_else(|| running.iter().find(|c| !c.url.is_empty()));
    if let Some(app) = app {
        env.insert("APP_URL".into(), app.url.clone());
        env.insert("APP_PORT".into(), app.port.to_string());
    }
    env.extend(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Runs one component's tests through the tester and records the result.
/// A failing test is a result, not a halt; a tester that cannot run them
/// halts the run.
async fn run_one(
    engine: &Engine,
    ctx: &mut RunContext,
    component: &Component,
    env: BTreeMap<String, String>,
) -> Flow<(TestResult, Vec<String>)> {
    let run_id = ctx.run_id.clone();
    let name = component.name.clone();
    engine
        .enter(&run_id, RunState::Testing, RunChange::default())
        .await?;
    let started = Instant::now();
    let command = component.test.as_ref().map_or("", |t| t.run.as_str());
    engine
        .step(
            &run_id,
            Step::Test,
            StepStatus::Started,
            format!("{name}: {command}"),
            Duration::ZERO,
        )
        .await?;
    let request = RunTestsRequest {
        run_id: run_id.clone(),
        workspace_path: ctx.workspace_path()?,
        component: Some(component.clone()),
        env: env.into_iter().collect(),
        timeout_seconds: engine.config.test_timeout_seconds,
        owner_id: ctx.owner_id.clone(),
        limits: Some(ctx.step_limits),
    };
    // Dropping the call (cancellation) ends the tests at the tester.
    let response = crate::run::until_cancel(&ctx.cancel, async {
        engine.clients.tester.run_tests(request).await.map_err(|err| {
            ctx.note(&err);
            Halt::Failed(failure_message(Step::Test, &err))
        })
    })
    .await;
    let response = match response {
        Ok(response) => response,
        Err(Halt::Failed(message)) => {
            return Err(engine
                .step_failed(&run_id, Step::Test, message, started.elapsed())
                .await);
        }
        Err(other) => return Err(other),
    };
    for (index, text) in response.log_tail.iter().enumerate() {
        // Numbered from 1: GetRunLogs returns lines after a sequence.
        let line = LogLine {
            source: "test".into(),
            text: text.clone(),
            sequence: index as u64 + 1,
            ..LogLine::default()
        };
        engine
            .emit(&run_id, RunChange::default(), run_event::Event::Log(line))
            .await?;
    }
    let result = TestResult {
        component: name.clone(),
        framework: response.framework.clone(),
        outcome: response.outcome,
        counts: response.counts,
        duration_ms: response.duration_ms,
        exit_code: response.exit_code,
        command: response.command.clone(),
        summary: response.summary.clone(),
    };
    // A component's tests run again after a heal: its latest result stands.
    ctx.test_results.retain(|r| r.component != result.component);
    ctx.test_results.push(result.clone());
    let change = RunChange {
        test_results: Some(ctx.test_results.clone()),
        ..RunChange::default()
    };
    engine
        .emit(&run_id, change, run_event::Event::Test(result.clone()))
        .await?;
    let passed = result.outcome() == TestOutcome::Passed;
    if !passed
        && let Some(hit) =
            reporunner_sandbox::limit_hit(response.exit_code, &response.log_tail, &ctx.sandbox_limits())
    {
        engine.notice(&run_id, format!("{name}: tests {hit}")).await?;
    }
    let detail = format!("{name}: {}: {}", outcome_name(result.outcome()), result.summary);
    let status = if passed {
        StepStatus::Finished
    } else {
        StepStatus::Failed
    };
    engine
        .step(&run_id, Step::Test, status, detail, started.elapsed())
        .await?;
    Ok((result, response.log_tail))
}

/// The outcome as the user reads it.
pub fn outcome_name(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::NoTests => "no tests",
        TestOutcome::TimedOut => "timed out",
        TestOutcome::Unparsed => "unparsed",
        TestOutcome::Unspecified => "unknown",
    }
}

/// Why the tests of a run did not all pass, naming each component that did
/// not; `None` when every one PASSED.
pub(crate) fn verdict(results: &[(TestResult, Vec<String>)]) -> Option<String> {
    let bad: Vec<String> = results
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.outcome() != TestOutcome::Passed)
        .map(|r| {
            let framework = if r.framework.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.framework)
            };
            format!(
                "{}{framework}: {}: {}",
                r.component,
                outcome_name(r.outcome()),
                r.summary
            )
        })
        .collect();
    (!bad.is_empty()).then(|| format!("test failed: {}", bad.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passed_tests_pass_and_each_other_is_named() {
        let result = |component: &str, outcome: TestOutcome, summary: &str| {
            (
                TestResult {
                    component: component.into(),
                    framework: "pytest".into(),
                    outcome: outcome.into(),
                    summary: summary.into(),
                    ..TestResult::default()
                },
                Vec::new(),
            )
        };
        assert_eq!(verdict(&[result("api", TestOutcome::Passed, "3 passed")]), None);
        let verdict = verdict(&[
            result("api", TestOutcome::Passed, "3 passed"),
            result("lib", TestOutcome::NoTests, "no tests ran"),
            result("web", TestOutcome::Unparsed, "no summary"),
        ])
        .unwrap();
        assert!(verdict.starts_with("test failed: "), "{verdict}");
        assert!(!verdict.contains("api"), "{verdict}");
        assert!(
            verdict.contains("lib (pytest): no tests: no tests ran"),
            "{verdict}"
        );
        assert!(verdict.contains("web (pytest): unparsed"), "{verdict}");
    }
}
