//! Helpers shared by the run and heal mesh tests: fixtures, every service
//! hosted, and the orchestrator calls the tests make over and over.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use reporunner_node::ServiceName;
use reporunner_proto::orchestrator::v1::{
    CreateRunRequest, GetRunRequest, RepoSource, Run, RunEvent, RunGoal, RunState, WatchRunRequest,
    orchestrator_service_client::OrchestratorServiceClient, repo_source::Source,
};
use reporunner_tests::{Sandbox, SandboxBuilder};
use tonic::transport::Channel;

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Every service hosted, once.
pub fn every_service() -> SandboxBuilder {
    Sandbox::builder().with_all(ServiceName::ALL)
}

pub async fn create_start(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    name: &str,
) -> Run {
    create(mesh, client, name, RunGoal::Start, &[]).await
}

/// A run of fixture `name` with `goal` and extra env for every component.
pub async fn create(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    name: &str,
    goal: RunGoal,
    env: &[(&str, &str)],
) -> Run {
    client
        .create_run(
            mesh.request(CreateRunRequest {
                source: Some(RepoSource {
                    source: Some(Source::LocalPath(fixture(name))),
                    r#ref: String::new(),
                }),
                goal: goal.into(),
                env: env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..CreateRunRequest::default()
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

pub async fn get(mesh: &Sandbox, client: &mut OrchestratorServiceClient<Channel>, id: &str) -> Run {
    client
        .get_run(mesh.request(GetRunRequest { run_id: id.into() }))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

/// The run's stored events (the run may not be over, so the watch is cut
/// when nothing comes for a moment).
pub async fn events(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    id: &str,
    with_logs: bool,
) -> Vec<RunEvent> {
    let mut stream = client
        .watch_run(mesh.request(WatchRunRequest {
            run_id: id.into(),
            after_sequence: 0,
            without_logs: !with_logs,
        }))
        .await
        .unwrap()
        .into_inner();
    // The replay arrives at once; after it a live run goes on (with logs, a
    // running app's output, its health probes' requests among it, never
    // stops): what came within a few seconds.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut events = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
        events.extend(message.event);
        if tokio::time::Instant::now() > until {
            break;
        }
    }
    events
}

/// A plain HTTP/1.0 GET of `/`; the whole answer.
pub fn http_get(url: &str) -> String {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET / HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// Installs (pip, npm, cargo) on a cold cache on 2 shared cores.
const OVER_WITHIN: Duration = Duration::from_secs(600);

/// Polls until `done` says so (or the run is over), within [`OVER_WITHIN`].
pub async fn until(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    id: &str,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let started = Instant::now();
    loop {
        let run = get(mesh, client, id).await;
        let over = matches!(
            run.state(),
            RunState::Failed | RunState::Stopped | RunState::Interrupted | RunState::Succeeded
        );
        if over || done(&run) {
            return run;
        }
        assert!(started.elapsed() < OVER_WITHIN, "{run:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls until the run is over (FAILED, STOPPED, INTERRUPTED, SUCCEEDED).
pub async fn until_over(mesh: &Sandbox, client: &mut OrchestratorServiceClient<Channel>, id: &str) -> Run {
    until(mesh, client, id, |_| false).await
}
