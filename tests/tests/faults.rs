//! Faults a deployment meets: the database going away under the services,
//! and agent replicas dying in the middle of a run.
//!
//! The auth and orchestrator stores on a PostgreSQL server of the test's own
//! (`initdb` and `pg_ctl`), which the test stops for 30 s while users log
//! in, register and create, read and list runs. And a mesh with two
//! replicas of every agent, one of each stopped while a run's tests run on
//! one of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{create, events, until, until_over};
use reporunner_node::ServiceName;
use reporunner_proto::{
    auth::v1::{LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient},
    orchestrator::v1::{
        CreateRunRequest, GetRunRequest, ListRunsRequest, RepoSource, Run, RunGoal, RunState,
        orchestrator_service_client::OrchestratorServiceClient, repo_source::Source, run_event,
    },
};
use reporunner_testdb::{PrivatePostgres, table_checksums};
use reporunner_tests::{FRONT_DOOR, Sandbox, fixtures_dir};
use tonic::{Code, Status, transport::Channel};

const PASSWORD: &str = "meadow-copper-signal-58";
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// The longest any one call may take while it is down: a call fails, it
/// does not hang.
const CALL_BOUND: Duration = Duration::from_secs(20);
/// How soon after the database is back every call works again, with no
/// restart of any service.
const RECOVERY: Duration = Duration::from_secs(20);

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn analyze_request() -> CreateRunRequest {
    CreateRunRequest {
        source: Some(RepoSource {
            source: Some(Source::LocalPath(
                fixtures_dir().join("run-flask").display().to_string(),
            )),
            r#ref: String::new(),
        }),
        goal: RunGoal::Analyze.into(),
        ..CreateRunRequest::default()
    }
}

async fn login(auth: &mut AuthServiceClient<Channel>, username: &str) -> Result<String, Status> {
    let tokens = auth
        .login(LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner()
        .tokens
        .expect("a login returns tokens");
    Ok(tokens.access_token)
}

async fn analyzed(orchestrator: &mut OrchestratorServiceClient<Channel>, token: &str) -> Result<Run, Status> {
    let created = orchestrator
        .create_run(bearer(token, analyze_request()))
        .await?
        .into_inner()
        .run
        .expect("a created run");
    let started = Instant::now();
    loop {
        let run = orchestrator
            .get_run(bearer(
                token,
                GetRunRequest {
                    run_id: created.id.clone(),
                },
            ))
            .await?
            .into_inner()
            .run
            .expect("a run");
        if run.state() == RunState::Succeeded {
            return Ok(run);
        }
        assert!(
            !matches!(
                run.state(),
                RunState::Failed | RunState::Interrupted | RunState::Stopped
            ),
            "the analysis ended {:?}: {}",
            run.state(),
            run.error
        );
        assert!(started.elapsed() < Duration::from_secs(60), "{run:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What each kind of call met while the database was down.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    unavailable: usize,
}

/// A call made while the database is down: it must end within
/// [`CALL_BOUND`], and fail only as UNAVAILABLE with a message that says
/// which database and to retry (never INTERNAL, never a driver's text).
fn judge<T>(what: &str, took: Duration, result: &Result<T, Status>, seen: &mut Seen) {
    assert!(
        took < CALL_BOUND,
        "{what} took {took:?} while the database was down"
    );
    match result {
        Ok(_) => seen.ok += 1,
        Err(status) => {
            assert_eq!(
                status.code(),
                Code::Unavailable,
                "{what} while the database was down: {status:?}"
            );
            let message = status.message();
            assert!(
                message.contains("database cannot be reached") && message.contains("retry"),
                "{what}: {message}"
            );
            assert!(
                !message.contains("127.0.0.1"),
                "{what} leaks the address: {message}"
            );
            seen.unavailable += 1;
        }
    }
}

/// The auth and run stores' PostgreSQL stops for 30 s while users log in,
/// register, and create, read and list runs: every call fails UNAVAILABLE
/// within a bound with a message that says to retry; once the server is
/// back, the same services (no restart) log in and run again, and every
/// row written before the outage is there, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_database_outage_fails_calls_unavailable_then_recovers_with_no_row_lost() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let auth_url = pg.database("auth").await;
    let runs_url = pg.database("runs").await;
    let mesh = Sandbox::builder()
        .with_all(FRONT_DOOR)
        .settings(|s| {
            s.auth.database_url = auth_url.clone();
            s.orchestrator.database_url = Some(runs_url.clone());
        })
        .start()
        .await
        .unwrap();
    let mut auth = AuthServiceClient::new(mesh.channel(ServiceName::Auth));
    let mut orchestrator = mesh.orchestrator();

    // Before: three users, each with a finished run.
    let users = ["ada", "brian", "chen"];
    let mut runs = Vec::new();
    for user in users {
        auth.register(RegisterRequest {
            username: user.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
        let token = login(&mut auth, user).await.unwrap();
        runs.push((token.clone(), analyzed(&mut orchestrator, &token).await.unwrap()));
    }
    let auth_before = table_checksums(&auth_url).await;
    let runs_before = table_checksums(&runs_url).await;
    assert!(
        auth_before.get("users").is_some_and(|(n, _)| *n >= 4),
        "{auth_before:?}"
    );
    assert!(
        runs_before.get("runs").is_some_and(|(n, _)| *n >= 3),
        "{runs_before:?}"
    );

    pg.stop();
    let down = Instant::now();
    let mut logins = Seen::default();
    let mut registers = Seen::default();
    let mut creates = Seen::default();
    let mut reads = Seen::default();
    let mut lists = Seen::default();
    let (token, run) = &runs[0];
    let mut attempt = 0;
    while down.elapsed() < OUTAGE {
        attempt += 1;
        let at = Instant::now();
        let result = login(&mut auth, "ada").await;
        judge("Login", at.elapsed(), &result, &mut logins);

        let at = Instant::now();
        let result = auth
            .register(RegisterRequest {
                username: format!("during-{attempt}"),
                password: PASSWORD.into(),
            })
            .await;
        judge("Register", at.elapsed(), &result, &mut registers);

        let at = Instant::now();
        let result = orchestrator.create_run(bearer(token, analyze_request())).await;
        judge("CreateRun", at.elapsed(), &result, &mut creates);

        let at = Instant::now();
        let result = orchestrator
            .get_run(bearer(
                token,
                GetRunRequest {
                    run_id: run.id.clone(),
                },
            ))
            .await;
        judge("GetRun", at.elapsed(), &result, &mut reads);

        let at = Instant::now();
        let result = orchestrator
            .list_runs(bearer(token, ListRunsRequest::default()))
            .await;
        judge("ListRuns", at.elapsed(), &result, &mut lists);
    }
    eprintln!(
        "while down: logins {logins:?}, registers {registers:?}, creates {creates:?}, \
         reads {reads:?}, lists {lists:?}"
    );
    // Everything that needs the database was refused, not faked.
    for (what, seen) in [
        ("Login", &logins),
        ("Register", &registers),
        ("CreateRun", &creates),
        ("GetRun", &reads),
        ("ListRuns", &lists),
    ] {
        assert!(
            seen.unavailable > 0,
            "{what} never failed while the database was down: {seen:?}"
        );
    }
    assert_eq!(
        registers.ok + creates.ok,
        0,
        "a write succeeded without a database"
    );

    // Back: nothing restarted, the rows are as they were.
    pg.start_again();
    assert_eq!(
        table_checksums(&auth_url).await,
        auth_before,
        "the auth rows changed"
    );
    assert_eq!(
        table_checksums(&runs_url).await,
        runs_before,
        "the run rows changed"
    );
    let back = Instant::now();
    let token = loop {
        match login(&mut auth, "ada").await {
            Ok(token) => break token,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    back.elapsed() < RECOVERY,
                    "no login {RECOVERY:?} after the database came back"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let again = analyzed(&mut orchestrator, &token).await.unwrap();
    assert!(again.plan.is_some(), "{again:?}");
    for (token, run) in &runs {
        let read = orchestrator
            .get_run(bearer(
                token,
                GetRunRequest {
                    run_id: run.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap();
        assert_eq!(read.state(), RunState::Succeeded);
        assert_eq!(read.plan, run.plan, "run {} changed", run.id);
    }
    eprintln!("recovered {:?} after the database came back", back.elapsed());
    mesh.stop().await.unwrap();
}

/// Two replicas of every agent. The run's tests (one of them takes 8 s)
/// run on the tester replica 0, the only one serving at first; while they
/// run, replica 1 starts serving and replica 0 of every agent is stopped.
/// The orchestrator takes the test step again on the survivor, says so,
/// and the run succeeds with the full counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_of_each_agent_mid_run_the_run_still_succeeds() {
    let agents: Vec<ServiceName> = ServiceName::ALL
        .into_iter()
        .filter(|s| !matches!(s, ServiceName::Auth | ServiceName::Orchestrator))
        .collect();
    let mut builder = Sandbox::builder()
        .with(ServiceName::Auth)
        .with(ServiceName::Orchestrator);
    for agent in &agents {
        builder = builder.replicas(*agent, 2);
    }
    let mut mesh = builder.start().await.unwrap();
    mesh.nodes(ServiceName::Tester)[1].set_serving(false).await;
    let mut client = mesh.orchestrator();
    let created = create(&mesh, &mut client, "test-pytest-slow", RunGoal::Test, &[]).await;
    let testing = until(&mesh, &mut client, &created.id, |run| {
        run.state() == RunState::Testing
    })
    .await;
    assert_eq!(
        testing.state(),
        RunState::Testing,
        "the run ended before its tests ran: {testing:?}"
    );
    // The 8-s test is running on tester replica 0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    mesh.nodes(ServiceName::Tester)[1].set_serving(true).await;
    for agent in &agents {
        mesh.nodes(*agent)[0].stop().await.unwrap();
    }
    let run = until_over(&mesh, &mut client, &created.id).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    assert_eq!(run.test_results.len(), 1, "{:?}", run.test_results);
    let counts = run.test_results[0].counts.as_ref().unwrap();
    assert_eq!((counts.passed, counts.failed), (2, 0), "{counts:?}");
    let seen = events(&mesh, &mut client, &run.id, false).await;
    assert!(
        seen.iter().any(|e| matches!(&e.event,
            Some(run_event::Event::Notice(n)) if n.starts_with("test failed because its tester agent could not be reached"))),
        "the orchestrator says it took the step again: {seen:?}"
    );
    mesh.stop().await.unwrap();
}
