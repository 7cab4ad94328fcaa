//! Goal START through the whole mesh: real installs from the registries,
//! real processes (sandboxed where bubblewrap works), real health probes.
//! Each fixture reaches RUNNING with a healthy component whose URL answers
//! HTTP, and StopRun leaves none of the run's processes behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use reporunner_node::{ServiceName, Settings, start_node};
use reporunner_proto::{
    common::v1::LogLine,
    orchestrator::v1::{
        ComponentHealth, CreateRunRequest, GetRunLogsRequest, RepoSource, Run, RunGoal, RunState, Step,
        StepStatus, StopRunRequest, orchestrator_service_client::OrchestratorServiceClient,
        repo_source::Source, run_event,
    },
};
use reporunner_server::CancellationToken;
use reporunner_tests::Sandbox;
use tonic::transport::{Channel, Endpoint};

/// Long enough for a cold `pip`/`pnpm` install or an axum compile on two
/// shared cores.
mod common;

use common::{create, create_start, events, every_service, fixture, get, http_get, until_over};

const UP_WITHIN: Duration = Duration::from_secs(420);

async fn logs(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    id: &str,
    source: &str,
) -> Vec<LogLine> {
    logs_after(mesh, client, id, source, 0).await
}

async fn logs_after(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    id: &str,
    source: &str,
    after_sequence: u64,
) -> Vec<LogLine> {
    let stream = client
        .get_run_logs(mesh.request(GetRunLogsRequest {
            run_id: id.into(),
            source: source.into(),
            follow: false,
            after_sequence,
        }))
        .await
        .unwrap()
        .into_inner();
    stream.map(|m| m.unwrap().line.unwrap()).collect::<Vec<_>>().await
}

/// Polls until the run is RUNNING; panics with its error and last lines
/// when it ends or takes too long.
async fn until_running(mesh: &Sandbox, client: &mut OrchestratorServiceClient<Channel>, id: &str) -> Run {
    let started = Instant::now();
    loop {
        let run = get(mesh, client, id).await;
        let state = run.state();
        if state == RunState::Running {
            eprintln!("run {id} RUNNING after {:.1} s", started.elapsed().as_secs_f64());
            return run;
        }
        if matches!(
            state,
            RunState::Failed | RunState::Stopped | RunState::Interrupted | RunState::Succeeded
        ) || started.elapsed() > UP_WITHIN
        {
            let lines = logs(mesh, client, id, "").await;
            let tail: Vec<String> = lines
                .iter()
                .rev()
                .take(40)
                .rev()
                .map(|l| format!("[{}] {}", l.source, l.text))
                .collect();
            panic!(
                "run {id} is {state:?} after {:?}: {}\n{}",
                started.elapsed(),
                run.error,
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Processes the runner started for `run_id`: each gets
/// `TMPDIR=<data>/runner/tmp/<run_id>`.
fn run_pids(run_id: &str) -> Vec<u32> {
    let suffix = format!("/runner/tmp/{run_id}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        // Sandboxed, TMPDIR is the short bind of that dir; HOME lies in it.
        let home = format!("{suffix}/home");
        if environ.split(|b| *b == 0).any(|var| {
            (var.starts_with(b"TMPDIR=") && var.ends_with(suffix.as_bytes()))
                || (var.starts_with(b"HOME=") && var.ends_with(home.as_bytes()))
        }) {
            pids.push(pid);
        }
    }
    pids
}

/// Stops the run and checks that its processes are gone.
async fn stop_leaves_nothing(mesh: &Sandbox, client: &mut OrchestratorServiceClient<Channel>, run: &Run) {
    let before = run_pids(&run.id);
    assert!(
        !before.is_empty(),
        "the run's processes are visible before the stop"
    );
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
    assert!(
        stopped
            .components
            .iter()
            .all(|c| c.health() == ComponentHealth::Stopped),
        "{:?}",
        stopped.components
    );
    let left: Vec<u32> = run_pids(&run.id)
        .into_iter()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(
        left.is_empty(),
        "processes left after StopRun: {left:?} (were {before:?})"
    );
    for pid in before {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")),
            "pid {pid} still alive"
        );
    }
}

/// START for `name`: RUNNING, a healthy component answering HTTP with
/// `expect`, install lines and the component's output in GetRunLogs, then a
/// clean stop.
async fn start_fixture(name: &str, expect: &str) {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let began = Instant::now();
    let created = create_start(&mesh, &mut client, name).await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    eprintln!("{name}: healthy in {:.1} s", began.elapsed().as_secs_f64());
    assert_eq!(run.components.len(), 1, "{:?}", run.components);
    let component = &run.components[0];
    assert_eq!(component.health(), ComponentHealth::Healthy);
    assert!(component.port > 0 && component.url.ends_with(&component.port.to_string()));
    let answer = http_get(&component.url);
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    assert!(answer.contains(expect), "{answer}");

    let events = events(&mesh, &mut client, &run.id, true).await;
    let steps: Vec<(Step, StepStatus)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(run_event::Event::Step(s)) => Some((s.step(), s.status())),
            _ => None,
        })
        .collect();
    for step in [Step::Install, Step::Start, Step::Probe] {
        assert!(
            steps.contains(&(step, StepStatus::Finished)),
            "{step:?}: {steps:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e.event == Some(run_event::Event::Url(component.url.clone()))),
        "a url event"
    );
    let install = logs(&mesh, &mut client, &run.id, "install").await;
    assert!(!install.is_empty(), "install lines are kept");
    assert!(install.iter().all(|l| l.source == "install"));
    let first = install[0].sequence;
    let later = logs_after(&mesh, &mut client, &run.id, "install", first).await;
    assert_eq!(
        later,
        install[1..].to_vec(),
        "after_sequence resumes after a line"
    );
    let output = logs(&mesh, &mut client, &run.id, &component.name).await;
    assert!(
        output.iter().all(|l| l.source == component.name) && !output.is_empty(),
        "the component's output: {output:?}"
    );

    stop_leaves_nothing(&mesh, &mut client, &run).await;
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_from_requirements_runs_healthy_and_stops_clean() {
    start_fixture("run-flask", "hello from run-flask").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_from_pyproject_runs_healthy_and_stops_clean() {
    start_fixture("run-fastapi", "run-fastapi").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_with_a_pnpm_lock_runs_healthy_and_stops_clean() {
    start_fixture("run-express-pnpm", "hello from run-express-pnpm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_built_with_cargo_runs_healthy_and_stops_clean() {
    start_fixture("run-axum", "hello from run-axum").await;
}

/// Real-repositories class: sqlx's `query!` macros check each query against
/// the database while the crate compiles, and the repository ships no
/// offline query data. The build runs against the run's own PostgreSQL with
/// the migrations applied; the app, which migrates the database itself,
/// then finds it empty and migrates it once (one note, not two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_checked_queries_build_against_the_runs_migrated_database() {
    start_fixture(
        "rust-sqlx-checked-queries",
        "hello from rust-sqlx-checked-queries (note 1)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_reaches_running_with_one_of_two_runners_not_serving() {
    let mut mesh = Sandbox::builder()
        .with_all(ServiceName::ALL.into_iter().filter(|s| *s != ServiceName::Runner))
        .replicas(ServiceName::Runner, 2)
        .start()
        .await
        .unwrap();
    mesh.nodes(ServiceName::Runner)[0].set_serving(false).await;
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    let answer = http_get(&run.components[0].url);
    assert!(answer.contains("hello from run-flask"), "{answer}");
    stop_leaves_nothing(&mesh, &mut client, &run).await;
    mesh.stop().await.unwrap();
}

/// Two runners, both serving: calls about a process (status, logs, stop)
/// go to the runner that started it, not round robin to one that never
/// heard of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_two_serving_runners_is_watched_and_stopped_through_the_runner_that_started_it() {
    let mesh = Sandbox::builder()
        .with_all(ServiceName::ALL.into_iter().filter(|s| *s != ServiceName::Runner))
        .replicas(ServiceName::Runner, 2)
        .settings(|s| s.orchestrator.status_poll_ms = 150)
        .start()
        .await
        .unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    // Many status polls later, with both runners in the pool, still RUNNING.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = get(&mesh, &mut client, &run.id).await;
    assert_eq!(later.state(), RunState::Running, "{}", later.error);
    let app = logs(&mesh, &mut client, &run.id, &run.components[0].name).await;
    assert!(!app.is_empty(), "the app's output is read from its runner");
    stop_leaves_nothing(&mesh, &mut client, &later).await;
    mesh.stop().await.unwrap();
}

/// Two orchestrators on one PostgreSQL: the one that drives a RUNNING run
/// dies (its node stops; the runner and the app stay), and the other takes
/// the run over once the lease expired: still RUNNING, monitored again, and
/// stopped clean by the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_orchestrator_driving_a_run_dies_the_other_replica_takes_it_over() {
    let Some(db) = reporunner_testdb::postgres("orchestrator_test").await else {
        return;
    };
    let url = db.url.clone();
    let mut mesh = every_service()
        .settings(|s| {
            s.orchestrator.database_url = Some(url.clone());
            s.orchestrator.replica_id = "replica-a".into();
            s.orchestrator.run_lease_ms = 2_000;
        })
        .start()
        .await
        .unwrap();
    let mut beside = settings_beside(&mesh, mesh.data_dir().to_path_buf());
    beside.orchestrator.database_url = Some(url.clone());
    beside.orchestrator.replica_id = "replica-b".into();
    beside.orchestrator.run_lease_ms = 2_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = start_node(
        &beside,
        &[ServiceName::Orchestrator],
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut on_b = OrchestratorServiceClient::new(
        Endpoint::from_shared(format!("http://{}", b.addr))
            .unwrap()
            .connect_lazy(),
    );

    let mut on_a = mesh.orchestrator();
    let created = create_start(&mesh, &mut on_a, "run-flask").await;
    let run = until_running(&mesh, &mut on_a, &created.id).await;
    let pids = run_pids(&run.id);
    assert!(!pids.is_empty());
    // B sees it through the store and leaves it alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(&mesh, &mut on_b, &run.id).await.state(), RunState::Running);
    let before = events(&mesh, &mut on_b, &run.id, true).await;
    assert!(
        !before
            .iter()
            .any(|e| matches!(&e.event, Some(run_event::Event::Notice(n)) if n.contains("monitored again"))),
        "B took over a live replica's run: {before:?}"
    );

    // A dies.
    mesh.nodes(ServiceName::Orchestrator)[0].stop().await.unwrap();
    assert_eq!(run_pids(&run.id), pids, "the app outlives its orchestrator");
    let died = Instant::now();
    loop {
        let now = events(&mesh, &mut on_b, &run.id, true).await;
        if now
            .iter()
            .any(|e| matches!(&e.event, Some(run_event::Event::Notice(n)) if n.contains("monitored again")))
        {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(40),
            "B never took the run over: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = get(&mesh, &mut on_b, &run.id).await;
    assert_eq!(after.state(), RunState::Running, "{}", after.error);
    let answer = http_get(&run.components[0].url);
    assert!(answer.contains("hello from run-flask"), "{answer}");
    stop_leaves_nothing(&mesh, &mut on_b, &after).await;
    b.stop().await.unwrap();
    mesh.stop().await.unwrap();
    drop(db);
}

/// Settings for a node beside `mesh`, over `data_dir`, reaching its services.
fn settings_beside(mesh: &Sandbox, data_dir: PathBuf) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        data_dir,
        ..Settings::default()
    };
    settings.client.connect_timeout = Duration::from_millis(1_000);
    settings.stop_timeout = Duration::from_millis(200);
    let uri = |s| vec![format!("http://{}", mesh.addr(s).unwrap())];
    settings.endpoints.auth = uri(ServiceName::Auth);
    settings.endpoints.env_detector = uri(ServiceName::EnvDetector);
    settings.endpoints.source = uri(ServiceName::Source);
    settings.endpoints.analyzer = uri(ServiceName::Analyzer);
    settings.endpoints.dependency = uri(ServiceName::Dependency);
    settings.endpoints.runner = uri(ServiceName::Runner);
    settings.endpoints.health = uri(ServiceName::Health);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_survives_an_orchestrator_restart() {
    let shared = tempfile::tempdir().unwrap();
    let data_dir = shared.path().to_path_buf();
    let mut mesh = every_service()
        .settings(|s| s.data_dir = data_dir.clone())
        .start()
        .await
        .unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    let before = events(&mesh, &mut client, &run.id, true).await;
    let install_before = logs(&mesh, &mut client, &run.id, "install").await;
    let pids = run_pids(&run.id);
    assert!(!pids.is_empty());

    // The orchestrator goes away; the runner (and the app) stay.
    mesh.nodes(ServiceName::Orchestrator)[0].stop().await.unwrap();
    assert_eq!(run_pids(&run.id), pids, "the app outlives the orchestrator");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = start_node(
        &settings_beside(&mesh, data_dir.clone()),
        &[ServiceName::Orchestrator],
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        node.in_process_agents.is_empty(),
        "an orchestrator alone reaches its agents over the network"
    );
    let mut client = OrchestratorServiceClient::new(
        Endpoint::from_shared(format!("http://{}", node.addr))
            .unwrap()
            .connect_lazy(),
    );

    // Still RUNNING, with every earlier event and the install lines.
    let after = get(&mesh, &mut client, &run.id).await;
    assert_eq!(after.state(), RunState::Running, "{}", after.error);
    assert_eq!(after.components, run.components);
    let now = events(&mesh, &mut client, &run.id, true).await;
    assert_eq!(&now[..before.len()], &before[..]);
    let resumed = now[before.len()..]
        .iter()
        .any(|e| matches!(&e.event, Some(run_event::Event::Notice(n)) if n.contains("monitored again")));
    assert!(resumed, "{:?}", &now[before.len()..]);
    assert_eq!(logs(&mesh, &mut client, &run.id, "install").await, install_before);
    let answer = http_get(&run.components[0].url);
    assert!(answer.contains("hello from run-flask"), "{answer}");

    // The new orchestrator stops what the old one started.
    stop_leaves_nothing(&mesh, &mut client, &after).await;
    node.stop().await.unwrap();
    mesh.stop().await.unwrap();
}

/// A RUNNING run whose app died while no orchestrator watched it (its
/// runner went down with it) becomes INTERRUPTED at the takeover, and its
/// components show as stopped, never with the health they had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_at_a_takeover_shows_its_components_stopped() {
    let shared = tempfile::tempdir().unwrap();
    let data_dir = shared.path().to_path_buf();
    let mut mesh = every_service()
        .settings(|s| s.data_dir = data_dir.clone())
        .start()
        .await
        .unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    assert!(
        run.components
            .iter()
            .all(|c| c.health() == ComponentHealth::Healthy),
        "{run:?}"
    );

    let mut beside = settings_beside(&mesh, data_dir.clone());
    beside.orchestrator.runner_deadline_ms = 2_000;
    // The orchestrator, the runner and the app go away (the host's crash).
    mesh.nodes(ServiceName::Orchestrator)[0].stop().await.unwrap();
    mesh.nodes(ServiceName::Runner)[0].stop().await.unwrap();
    for pid in run_pids(&run.id) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let stopped = Instant::now();
    while run_pids(&run.id)
        .iter()
        .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")))
    {
        assert!(stopped.elapsed() < Duration::from_secs(20), "the app did not die");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = start_node(
        &beside,
        &[ServiceName::Orchestrator],
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut client = OrchestratorServiceClient::new(
        Endpoint::from_shared(format!("http://{}", node.addr))
            .unwrap()
            .connect_lazy(),
    );
    let over = until_over(&mesh, &mut client, &run.id).await;
    assert_eq!(over.state(), RunState::Interrupted, "{}", over.error);
    assert!(over.error.contains("cannot be found"), "{}", over.error);
    assert!(!over.components.is_empty());
    assert!(
        over.components
            .iter()
            .all(|c| c.health() == ComponentHealth::Stopped),
        "{:?}",
        over.components
    );
    node.stop().await.unwrap();
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goal_test_succeeds_on_exit_zero_and_fails_with_the_output_otherwise() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let passing = create(&mesh, &mut client, "run-node-test", RunGoal::Test, &[]).await;
    let passed = until_over(&mesh, &mut client, &passing.id).await;
    assert_eq!(passed.state(), RunState::Succeeded, "{}", passed.error);
    let output = logs(&mesh, &mut client, &passing.id, "test").await;
    assert!(
        output.iter().any(|l| l.text.contains("all checks passed")),
        "{output:?}"
    );
    assert!(run_pids(&passing.id).is_empty());

    // The user's env reaches the test command.
    let failing = create(
        &mesh,
        &mut client,
        "run-node-test",
        RunGoal::Test,
        &[("RUN_TEST_FAIL", "1")],
    )
    .await;
    let failed = until_over(&mesh, &mut client, &failing.id).await;
    assert_eq!(failed.state(), RunState::Failed);
    assert!(
        failed
            .error
            .contains("test failed: run-node-test (node:test): failed"),
        "{}",
        failed.error
    );
    let result = &failed.test_results[0];
    assert_eq!(result.counts.unwrap().failed, 1, "{result:?}");
    let output = logs(&mesh, &mut client, &failing.id, "test").await;
    assert!(
        output.iter().any(|l| l.text.contains("failing on request")),
        "{output:?}"
    );
    mesh.stop().await.unwrap();
}

/// Real-repositories class 6: a component that cannot be installed (Go,
/// which this host does not install) is left down, its sibling comes up,
/// and the run is DEGRADED naming the one that is down and why; it stops
/// clean like a running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monorepo_with_one_component_down_is_degraded_not_failed() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "monorepo-partial").await;
    let started = Instant::now();
    let run = loop {
        let run = get(&mesh, &mut client, &created.id).await;
        let over = matches!(
            run.state(),
            RunState::Failed | RunState::Stopped | RunState::Interrupted | RunState::Succeeded
        );
        if run.state() == RunState::Degraded || over || started.elapsed() > UP_WITHIN {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(run.state(), RunState::Degraded, "{}", run.error);
    assert!(
        run.error
            .starts_with("degraded: 1 of 2 components are down; api: ")
            && run.error.contains("go components is not supported"),
        "{}",
        run.error
    );
    assert_eq!(run.components.len(), 1, "{:?}", run.components);
    let web = &run.components[0];
    assert_eq!(web.name, "shop-web");
    assert_eq!(web.health(), ComponentHealth::Healthy, "{web:?}");
    let answer = http_get(&web.url);
    assert!(answer.contains("<h1>Shop</h1>"), "{answer}");
    stop_leaves_nothing(&mesh, &mut client, &run).await;
    mesh.stop().await.unwrap();
}

/// Real-repositories class 11: an app that answers 500 with a traceback in
/// its log fails the probe with that traceback as soon as it is seen, not
/// after the start-up grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_with_a_traceback_fails_the_probe_with_its_cause() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-500-traceback").await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Failed, "{}", run.error);
    assert!(
        run.error.contains("answers with a server error")
            && run.error.contains("the settings table is empty"),
        "{}",
        run.error
    );
    assert!(!run.error.contains("start-up grace"), "{}", run.error);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_clearly_when_the_plan_has_nothing_to_start() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "run-node-test", RunGoal::Start, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Failed);
    assert!(
        run.error.contains("no component of the plan can be started") && run.error.contains("library"),
        "{}",
        run.error
    );
    let events = events(&mesh, &mut client, &run.id, true).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Some(run_event::Event::Notice(n)) if n.contains("is not started"))),
        "{events:?}"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_keeps_crashing_fails_the_run_with_its_last_lines() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "run-crash", RunGoal::Start, &[]).await;
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Failed);
    assert!(run.error.contains("failed with exit code"), "{}", run.error);
    assert!(run.error.contains("DATABASE_URL is not set"), "{}", run.error);
    assert!(run_pids(&run.id).is_empty(), "nothing is left running");
    mesh.stop().await.unwrap();
}

/// The run's processes whose command line contains `needle`.
fn run_pids_running(run_id: &str, needle: &str) -> Vec<u32> {
    run_pids(run_id)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_app_that_dies_for_good_fails_the_run() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    // Kill the app each time the runner restarts it, until its restarts
    // are spent.
    let started = Instant::now();
    let over = loop {
        for pid in run_pids_running(&run.id, "flask run") {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let now = get(&mesh, &mut client, &run.id).await;
        if now.state() != RunState::Running {
            break now;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "still running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(over.state(), RunState::Failed, "{}", over.error);
    assert!(over.error.contains("failed with exit code"), "{}", over.error);
    assert!(over.error.contains("restart"), "{}", over.error);
    assert!(run_pids(&run.id).is_empty(), "nothing is left running");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_the_health_agent_counts_a_running_process_as_up() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = client
        .create_run(mesh.request(CreateRunRequest {
            source: Some(RepoSource {
                source: Some(Source::LocalPath(fixture("run-flask"))),
                r#ref: String::new(),
            }),
            goal: RunGoal::Start.into(),
            skip_agents: vec!["health".into()],
            ..CreateRunRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let run = until_running(&mesh, &mut client, &created.id).await;
    assert_eq!(run.components[0].health(), ComponentHealth::Unprobed);
    let events = events(&mesh, &mut client, &run.id, true).await;
    assert!(
        events.iter().any(|e| matches!(
            &e.event,
            Some(run_event::Event::Step(s)) if s.step() == Step::Probe && s.status() == StepStatus::Skipped
        )),
        "{events:?}"
    );
    stop_leaves_nothing(&mesh, &mut client, &run).await;
    mesh.stop().await.unwrap();
}

/// A server of its own protocol (no HTTP) is up once its port accepts
/// connections: an HTTP probe waited out its grace and failed the run
/// (tokio-rs/mini-redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_no_http_is_up_when_its_port_answers() {
    for fixture in ["rust-tcp-service", "python-tcp-service"] {
        pong_service_runs(fixture).await;
    }
}

async fn pong_service_runs(fixture: &str) {
    use std::io::{BufRead as _, Write as _};
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, fixture).await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    let component = &run.components[0];
    assert_eq!(component.health(), ComponentHealth::Healthy);
    assert!(component.url.starts_with("tcp://127.0.0.1:"), "{}", component.url);
    let address = component.url.trim_start_matches("tcp://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(answer, "+PONG\r\n");
    stop_leaves_nothing(&mesh, &mut client, &run).await;
    mesh.stop().await.unwrap();
}

/// `run --logs` (WatchRun with logs) and `runs logs` after the run show the
/// app's own output, not only install and build lines: the components'
/// output is part of the run's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_output_is_in_the_runs_history_after_the_stop() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    let component = run.components[0].clone();
    let url = component.url.clone();
    tokio::task::spawn_blocking(move || http_get(&url)).await.unwrap();
    let request_line = |text: &str| text.contains("\"GET / HTTP/1.0\" 200");
    // Recorded as it is written: seen live by a watcher with logs.
    let recorded = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let seen = events(&mesh, &mut client, &run.id, true).await;
            if seen.iter().any(|e| {
                matches!(&e.event, Some(run_event::Event::Log(l)) if l.source == component.name && request_line(&l.text))
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        recorded.is_ok(),
        "WatchRun with logs shows the app's request line"
    );
    stop_leaves_nothing(&mesh, &mut client, &run).await;
    // After the stop, from the run's history alone.
    let lines = logs(&mesh, &mut client, &run.id, &component.name).await;
    assert!(lines.iter().any(|l| request_line(&l.text)), "{lines:?}");
    assert!(lines.iter().all(|l| l.source == component.name));
    // Sequences resume: nothing at or before the last one comes again.
    let last = lines.last().unwrap().sequence;
    assert!(
        logs_after(&mesh, &mut client, &run.id, &component.name, last)
            .await
            .is_empty()
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_follow_the_components_output_until_the_stop() {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let created = create_start(&mesh, &mut client, "run-flask").await;
    let run = until_running(&mesh, &mut client, &created.id).await;
    let component = run.components[0].clone();
    let mut follow = client
        .get_run_logs(mesh.request(GetRunLogsRequest {
            run_id: run.id.clone(),
            source: component.name.clone(),
            follow: true,
            after_sequence: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    // A request the app logs after the stream opened.
    let url = component.url.clone();
    tokio::task::spawn_blocking(move || http_get(&url)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(message) = follow.next().await {
            let line = message.unwrap().line.unwrap();
            assert_eq!(line.source, component.name);
            if line.text.contains("\"GET / HTTP/1.0\" 200") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen, "the request line was followed");
    stop_leaves_nothing(&mesh, &mut client, &run).await;
    // The process ended: the followed stream ends too.
    let rest = tokio::time::timeout(Duration::from_secs(20), follow.collect::<Vec<_>>()).await;
    assert!(rest.is_ok(), "the follow ends after StopRun");
    mesh.stop().await.unwrap();
}
