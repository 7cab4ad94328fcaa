//! Runs end to end: the orchestrator behind the auth layer, the real auth
//! service, source agent, env-detector and analyzer, over loopback gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use common::{Mesh, User, as_user, test_config};
use reporunner_proto::auth::v1::UsageKind;
use reporunner_proto::{
    common::v1::Tier,
    orchestrator::v1::{
        CreateRunRequest, ListRunsRequest, RepoSource, Run, RunEvent, RunGoal, RunState, Step, StepEvent,
        StepStatus, StopRunRequest, repo_source::Source, run_event,
    },
};
use tonic::Code;

fn states(events: &[RunEvent]) -> Vec<RunState> {
    events
        .iter()
        .filter_map(|e| match e.event {
            Some(run_event::Event::State(s)) => RunState::try_from(s).ok(),
            _ => None,
        })
        .collect()
}

fn steps(events: &[RunEvent]) -> Vec<StepEvent> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(run_event::Event::Step(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn assert_gap_free(events: &[RunEvent], from: u64) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (from..from + events.len() as u64).collect();
    assert_eq!(sequences, expected, "no gaps, no duplicates");
}

async fn local(mesh: &Mesh, user: &User, fixture: &str) -> Run {
    mesh.create(user, Source::LocalPath(mesh.flask_fixture(fixture)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyze_run_of_a_flask_app_fetches_detects_analyzes_and_succeeds() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let alice = mesh.user("alice").await;
    let run = local(&mesh, &alice, "flask").await;
    assert_eq!(
        run.state(),
        RunState::Pending,
        "returned at once, before the pipeline"
    );
    assert_eq!(run.owner_id, alice.id);
    assert_eq!(
        run.goal(),
        RunGoal::Analyze,
        "UNSPECIFIED would also mean ANALYZE"
    );

    let events = mesh.watch(&alice, &run.id, 0).await.unwrap();
    assert_gap_free(&events, 1);
    assert_eq!(
        states(&events),
        vec![
            RunState::Pending,
            RunState::Fetching,
            RunState::Detecting,
            RunState::Analyzing,
            RunState::Succeeded
        ]
    );
    let trail_steps = steps(&events);
    let trail: Vec<(Step, StepStatus)> = trail_steps.iter().map(|s| (s.step(), s.status())).collect();
    assert_eq!(
        trail,
        vec![
            (Step::Fetch, StepStatus::Started),
            (Step::Fetch, StepStatus::Finished),
            (Step::Detect, StepStatus::Started),
            (Step::Detect, StepStatus::Finished),
            (Step::Analyze, StepStatus::Started),
            (Step::Analyze, StepStatus::Finished),
        ]
    );
    assert!(
        trail_steps[1].detail.contains("sha256:"),
        "{}",
        trail_steps[1].detail
    );
    assert!(
        trail_steps[5].detail.contains("component"),
        "{}",
        trail_steps[5].detail
    );

    let done = mesh.get(&alice, &run.id).await.unwrap();
    assert_eq!(done.state(), RunState::Succeeded);
    assert_eq!(done.error, "");
    assert_eq!(done.attempts, 1);
    let workspace = done.workspace.clone().unwrap();
    assert!(workspace.id.starts_with("sha256:"));
    assert!(std::path::Path::new(&workspace.path).join("app.py").is_file());
    let plan = done.plan.clone().unwrap();
    assert_eq!(plan.workspace_id, workspace.id);
    let web = plan
        .components
        .iter()
        .find(|c| c.frameworks.iter().any(|f| f == "flask"))
        .unwrap_or_else(|| panic!("a flask component in {plan:?}"));
    let start = web.start.clone().unwrap().run;
    assert!(start.starts_with("flask run"), "{start}");
    assert!(
        web.env
            .iter()
            .any(|e| e.name == "FLASK_APP" && e.default_value == "app"),
        "{:?}",
        web.env
    );

    // The same workspace can be analyzed again by id, without fetching.
    let again = mesh
        .create(&alice, Source::WorkspaceId(workspace.id.clone()))
        .await
        .unwrap();
    let events = mesh.watch(&alice, &again.id, 0).await.unwrap();
    let fetch = &steps(&events)[0];
    assert_eq!((fetch.step(), fetch.status()), (Step::Fetch, StepStatus::Skipped));
    assert!(fetch.detail.contains(&workspace.id), "{}", fetch.detail);
    assert!(
        !states(&events).contains(&RunState::Fetching),
        "a reused workspace is not fetched again"
    );
    let again = mesh.get(&alice, &again.id).await.unwrap();
    assert_eq!(again.state(), RunState::Succeeded);
    assert_eq!(again.plan.unwrap().components.len(), plan.components.len());

    // Another user cannot use it: not found, like a workspace never fetched.
    let bob = mesh.user("bob").await;
    let status = mesh
        .create(&bob, Source::WorkspaceId(workspace.id.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = mesh
        .create(&alice, Source::WorkspaceId(format!("sha256:{}", "0".repeat(64))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_from_a_sequence_then_follows_without_gaps_or_duplicates() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let alice = mesh.user("alice").await;
    let run = local(&mesh, &alice, "watched").await;

    // Several watchers at once, started while the run is in progress, from
    // different points: each sees exactly the events after its point.
    let (all, from_two, from_three) = tokio::join!(
        mesh.watch(&alice, &run.id, 0),
        mesh.watch(&alice, &run.id, 2),
        mesh.watch(&alice, &run.id, 3),
    );
    let all = all.unwrap();
    assert_gap_free(&all, 1);
    assert_eq!(from_two.unwrap(), all[2..].to_vec());
    assert_eq!(from_three.unwrap(), all[3..].to_vec());
    assert_eq!(states(&all).last(), Some(&RunState::Succeeded));

    // After the end: replay only, then the stream closes.
    let last = all.last().unwrap().sequence;
    let tail = mesh.watch(&alice, &run.id, last - 2).await.unwrap();
    assert_eq!(tail, all[all.len() - 2..].to_vec());
    assert!(mesh.watch(&alice, &run.id, last).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_git_url_fails_the_run_with_a_message_naming_it() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let alice = mesh.user("alice").await;
    let missing = format!("file://{}/no-such-repo.git", mesh.dir.path().display());
    let run = mesh
        .create(&alice, Source::GitUrl(missing.clone()))
        .await
        .unwrap();
    let events = mesh.watch(&alice, &run.id, 0).await.unwrap();
    assert_eq!(
        states(&events),
        vec![RunState::Pending, RunState::Fetching, RunState::Failed]
    );
    let failed = steps(&events).pop().unwrap();
    assert_eq!(
        (failed.step(), failed.status()),
        (Step::Fetch, StepStatus::Failed)
    );
    let run = mesh.get(&alice, &run.id).await.unwrap();
    assert_eq!(run.state(), RunState::Failed);
    assert!(run.error.starts_with("fetch failed:"), "{}", run.error);
    assert!(run.error.contains("no-such-repo.git"), "{}", run.error);
    assert_eq!(failed.detail, run.error);

    // Malformed sources never become runs.
    for (source, needle) in [
        (Source::GitUrl("not a url".into()), "git_url"),
        (Source::GitUrl(String::new()), "git_url"),
        (Source::LocalPath("relative/dir".into()), "absolute"),
        (Source::WorkspaceId("abc".into()), "sha256:"),
    ] {
        let status = mesh.create(&alice, source).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(needle), "{status:?}");
    }
    let status = mesh
        .create_with(&alice, CreateRunRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_run_is_not_found_but_the_admin_sees_every_run() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let alice = mesh.user("alice").await;
    let bob = mesh.user("bob").await;
    let run = local(&mesh, &alice, "private").await;
    mesh.finished(&alice, &run.id).await;

    let status = mesh.get(&bob, &run.id).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = mesh.watch(&bob, &run.id, 0).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // The run's recorded output (its app's own lines among it) is no more
    // visible than the run, followed or not.
    for follow in [false, true] {
        let status = mesh
            .client
            .clone()
            .get_run_logs(as_user(
                &bob,
                reporunner_proto::orchestrator::v1::GetRunLogsRequest {
                    run_id: run.id.clone(),
                    source: String::new(),
                    follow,
                    after_sequence: 0,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let status = mesh
        .client
        .clone()
        .stop_run(as_user(
            &bob,
            StopRunRequest {
                run_id: run.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let unknown = mesh
        .get(&bob, "00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(
        status.message().replace(&run.id, "ID"),
        unknown
            .message()
            .replace("00000000-0000-0000-0000-000000000000", "ID"),
        "the same answer for someone else's run and no run"
    );
    let list = |user: &User| {
        let client = mesh.client.clone();
        let request = as_user(user, ListRunsRequest::default());
        async move { client.clone().list_runs(request).await.unwrap().into_inner().runs }
    };
    assert!(list(&bob).await.is_empty());

    let admin = mesh.admin().await;
    assert_eq!(mesh.get(&admin, &run.id).await.unwrap().owner_id, alice.id);
    assert!(!mesh.watch(&admin, &run.id, 0).await.unwrap().is_empty());
    let bobs = local(&mesh, &bob, "bobs").await;
    let everyone: HashSet<String> = list(&admin).await.into_iter().map(|r| r.id).collect();
    assert!(everyone.contains(&run.id) && everyone.contains(&bobs.id));
    let mine: Vec<String> = list(&alice).await.into_iter().map(|r| r.id).collect();
    assert_eq!(mine, vec![run.id.clone()]);
}

/// A git "server" that accepts connections and never answers: a fetch from
/// it stays in FETCHING until stopped (or the source agent's timeout).
async fn silent_git_url() -> String {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/stuck.git", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    url
}

async fn until_state(mesh: &Mesh, user: &User, run_id: &str, state: RunState) {
    for _ in 0..200 {
        if mesh.get(user, run_id).await.unwrap().state() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} never reached {state:?}");
}

async fn stop(mesh: &Mesh, user: &User, run_id: &str) -> Result<Run, tonic::Status> {
    mesh.client
        .clone()
        .stop_run(as_user(
            user,
            StopRunRequest {
                run_id: run_id.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().run.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiers_concurrent_run_limit_is_enforced_and_stop_frees_a_slot() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let carol = mesh.user("carol").await; // Free: one run at a time.
    let dave = mesh.user("dave").await;
    let stuck = mesh
        .create(&carol, Source::GitUrl(silent_git_url().await))
        .await
        .unwrap();
    until_state(&mesh, &carol, &stuck.id, RunState::Fetching).await;

    let status = mesh
        .create(&carol, Source::LocalPath(mesh.flask_fixture("second")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the Free tier allows 1 at once"),
        "{status:?}"
    );
    // Someone else is not limited by Carol's runs.
    let theirs = local(&mesh, &dave, "daves").await;
    assert_eq!(
        mesh.finished(&dave, &theirs.id).await.state(),
        RunState::Succeeded
    );

    assert_eq!(
        stop(&mesh, &carol, &stuck.id).await.unwrap().state(),
        RunState::Stopped
    );
    let next = local(&mesh, &carol, "third").await;
    assert_eq!(mesh.finished(&carol, &next.id).await.state(), RunState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_run_cancels_the_pipeline_and_is_idempotent() {
    let db = common::sqlite();
    // One pipeline at a time: Bob's stuck fetch holds it, Alice's run waits.
    let config = reporunner_orchestrator::OrchestratorConfig {
        max_concurrent_pipelines: 1,
        ..test_config()
    };
    let mesh = Mesh::start(&db, config).await;
    let alice = mesh.user("alice").await;
    let bob = mesh.user("bob").await;
    let stuck = mesh
        .create(&bob, Source::GitUrl(silent_git_url().await))
        .await
        .unwrap();
    until_state(&mesh, &bob, &stuck.id, RunState::Fetching).await;
    let waiting = local(&mesh, &alice, "waiting").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mesh.get(&alice, &waiting.id).await.unwrap().state(),
        RunState::Pending
    );

    let stopped = stop(&mesh, &bob, &stuck.id).await.unwrap();
    assert_eq!(stopped.state(), RunState::Stopped);
    assert!(stopped.error.contains("stopped by bob"), "{}", stopped.error);
    let events = mesh.watch(&bob, &stuck.id, 0).await.unwrap();
    assert_eq!(
        states(&events),
        vec![RunState::Pending, RunState::Fetching, RunState::Stopped]
    );
    let trail: Vec<(Step, StepStatus)> = steps(&events).iter().map(|s| (s.step(), s.status())).collect();
    assert_eq!(
        trail,
        vec![(Step::Fetch, StepStatus::Started)],
        "a stopped step leaves no finish"
    );
    assert_eq!(
        stop(&mesh, &bob, &stuck.id).await.unwrap(),
        stopped,
        "stopping a stopped run changes nothing"
    );

    // The freed slot lets the waiting run through to the end.
    let done = mesh.finished(&alice, &waiting.id).await;
    assert_eq!(done.state(), RunState::Succeeded);
    let again = stop(&mesh, &alice, &waiting.id).await.unwrap();
    assert_eq!(again, done, "a finished run stays as it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_runs_pages_newest_first_and_filters_by_state() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let erin = mesh.user("erin").await;
    mesh.set_tier(&erin, Tier::Premium).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let run = local(&mesh, &erin, &format!("app{i}")).await;
        mesh.finished(&erin, &run.id).await;
        created.push(run.id);
    }
    let bad = mesh
        .create(&erin, Source::GitUrl("file:///nonexistent/repo.git".into()))
        .await
        .unwrap();
    mesh.finished(&erin, &bad.id).await;
    created.push(bad.id.clone());

    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = mesh
            .client
            .clone()
            .list_runs(as_user(
                &erin,
                ListRunsRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    states: Vec::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.runs.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    created.reverse();
    assert_eq!((pages, seen), (2, created));

    let failed = mesh
        .client
        .clone()
        .list_runs(as_user(
            &erin,
            ListRunsRequest {
                states: vec![RunState::Failed.into()],
                ..ListRunsRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(failed.into_iter().map(|r| r.id).collect::<Vec<_>>(), vec![bad.id]);
    let status = mesh
        .client
        .clone()
        .list_runs(as_user(
            &erin,
            ListRunsRequest {
                page_token: "garbage".into(),
                ..ListRunsRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_progress_when_the_orchestrator_restarts_become_interrupted() {
    let db = common::sqlite();
    let config = reporunner_orchestrator::OrchestratorConfig {
        max_concurrent_pipelines: 1,
        ..test_config()
    };
    let mut mesh = Mesh::start(&db, config.clone()).await;
    let alice = mesh.user("alice").await;
    mesh.set_tier(&alice, Tier::Premium).await;
    // A fetch that never ends holds the slot; a second run waits in PENDING.
    let fetching = mesh
        .create(&alice, Source::GitUrl(silent_git_url().await))
        .await
        .unwrap();
    until_state(&mesh, &alice, &fetching.id, RunState::Fetching).await;
    let pending = local(&mesh, &alice, "pending").await;
    assert_eq!(
        mesh.get(&alice, &pending.id).await.unwrap().state(),
        RunState::Pending
    );

    mesh.restart_orchestrator(&db, config).await;
    for run in [&fetching, &pending] {
        let run = mesh.get(&alice, &run.id).await.unwrap();
        assert_eq!(run.state(), RunState::Interrupted, "{run:?}");
        assert!(run.error.contains("restarted"), "{}", run.error);
        let events = mesh.watch(&alice, &run.id, 0).await.unwrap();
        assert_eq!(states(&events).last(), Some(&RunState::Interrupted));
    }
    // The restarted orchestrator serves new runs.
    let fresh = local(&mesh, &alice, "fresh").await;
    assert_eq!(
        mesh.finished(&alice, &fresh.id).await.state(),
        RunState::Succeeded
    );
}

/// Two orchestrators on one PostgreSQL: a starting replica never touches
/// the runs of a live one; when the one driving a run dies (it stops
/// renewing its leases), the other takes the run over once the lease
/// expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_orchestrator_leaves_a_live_replicas_runs_and_takes_over_a_dead_ones() {
    let Some(db) = common::postgres().await else {
        return;
    };
    let lease = Duration::from_millis(1_500);
    let as_replica = |name: &str| reporunner_orchestrator::OrchestratorConfig {
        replica_id: name.to_owned(),
        run_lease_ms: 1_500,
        ..test_config()
    };
    let mesh = Mesh::start(&db, as_replica("a")).await;
    let alice = mesh.user("alice").await;
    mesh.set_tier(&alice, Tier::Premium).await;
    let fetching = mesh
        .create(&alice, Source::GitUrl(silent_git_url().await))
        .await
        .unwrap();
    until_state(&mesh, &alice, &fetching.id, RunState::Fetching).await;

    // B starts and sweeps for several lease periods: A's run stays A's.
    let b = mesh.replica(&db, as_replica("b")).await;
    tokio::time::sleep(lease * 3).await;
    let run = mesh.get(&alice, &fetching.id).await.unwrap();
    assert_eq!(run.state(), RunState::Fetching, "{run:?}");

    // A dies: no more renewals, its pipeline gone, the run left as it was.
    mesh.orchestrator.shutdown();
    let died = std::time::Instant::now();
    let taken = loop {
        let run = mesh.store.get_run(&fetching.id).await.unwrap().unwrap();
        if run.state() != RunState::Fetching {
            break run;
        }
        assert!(
            died.elapsed() < lease * 4,
            "B did not take the run over within {:?}",
            lease * 4
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        died.elapsed() >= lease / 2,
        "taken over before A's lease could expire ({:?})",
        died.elapsed()
    );
    assert_eq!(taken.state(), RunState::Interrupted, "{taken:?}");
    assert!(taken.error.contains("stopped or restarted"), "{}", taken.error);
    let events = mesh.store.events_after(&fetching.id, 0, 100).await.unwrap();
    assert_gap_free(&events, 1);
    assert_eq!(states(&events).last(), Some(&RunState::Interrupted));
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goals_and_indexing_beyond_this_pipeline_are_refused_up_front() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let frank = mesh.user("frank").await;
    let source = Some(RepoSource {
        source: Some(Source::LocalPath(mesh.flask_fixture("goals"))),
        r#ref: String::new(),
    });
    // This orchestrator has no dependency, runner, health or tester endpoint.
    for goal in [RunGoal::Start, RunGoal::Test, RunGoal::StartAndTest] {
        let status = mesh
            .create_with(
                &frank,
                CreateRunRequest {
                    source: source.clone(),
                    goal: goal.into(),
                    ..CreateRunRequest::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("endpoints.dependency"), "{status:?}");
    }
    let with_model = CreateRunRequest {
        source: source.clone(),
        index: true,
        embedding_model: "all-MiniLM-L6-v2".into(),
        ..CreateRunRequest::default()
    };
    let status = mesh.create_with(&frank, with_model.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "indexing with embeddings needs the Advanced tier or higher; you are on the Free tier"
    );
    mesh.set_tier(&frank, Tier::Advanced).await;
    let status = mesh.create_with(&frank, with_model).await.unwrap_err();
    // This orchestrator has no indexer endpoint.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("endpoints.indexer"), "{status:?}");
    // None of these became a run.
    let runs = mesh
        .client
        .clone()
        .list_runs(as_user(&frank, ListRunsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty(), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyze_run_succeeds_on_postgresql_too() {
    let Some(db) = common::postgres().await else {
        return;
    };
    let mesh = Mesh::start(&db, test_config()).await;
    let alice = mesh.user("alice").await;
    let run = local(&mesh, &alice, "flask").await;
    let events = mesh.watch(&alice, &run.id, 0).await.unwrap();
    assert_gap_free(&events, 1);
    assert_eq!(states(&events).last(), Some(&RunState::Succeeded));
    let run = mesh.get(&alice, &run.id).await.unwrap();
    assert!(
        run.plan
            .unwrap()
            .components
            .iter()
            .any(|c| { c.start.as_ref().is_some_and(|s| s.run.starts_with("flask run")) })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiers_workspace_size_and_run_time_limits_reach_the_pipeline() {
    let db = common::sqlite();
    let mut tiers = reporunner_auth::config::default_tiers();
    for policy in &mut tiers {
        if policy.tier == Tier::Free {
            policy.max_workspace_bytes = 64;
            policy.max_run_seconds = 1;
        }
    }
    let mesh = Mesh::start_with_tiers(&db, test_config(), tiers).await;
    let gina = mesh.user("gina").await;

    // The Flask fixture is well above 64 bytes: the source agent refuses it.
    let big = local(&mesh, &gina, "big").await;
    let big = mesh.finished(&gina, &big.id).await;
    assert_eq!(big.state(), RunState::Failed);
    assert!(big.error.starts_with("fetch failed:"), "{}", big.error);
    assert!(big.error.contains("64"), "the limit is named: {}", big.error);

    // A fetch that never ends is cut at the tier's run time.
    let slow = mesh
        .create(&gina, Source::GitUrl(silent_git_url().await))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let slow = mesh.finished(&gina, &slow.id).await;
    assert_eq!(slow.state(), RunState::Failed);
    assert_eq!(slow.error, "the run exceeded your tier's limit of 1 s per run");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_created_run_spends_one_run_created_unit_and_refusals_spend_none() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let hank = mesh.user("hank").await;
    let run = local(&mesh, &hank, "one").await;
    mesh.finished(&hank, &run.id).await;
    assert_eq!(mesh.spent(&hank, UsageKind::RunCreated).await, 1);
    let status = mesh
        .create(&hank, Source::LocalPath("relative".into()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = mesh
        .create_with(
            &hank,
            CreateRunRequest {
                source: Some(RepoSource {
                    source: Some(Source::LocalPath(mesh.flask_fixture("two"))),
                    r#ref: String::new(),
                }),
                goal: RunGoal::StartAndTest.into(),
                ..CreateRunRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        mesh.spent(&hank, UsageKind::RunCreated).await,
        1,
        "refused requests create no run and spend no run unit"
    );
    assert_eq!(
        mesh.spent(&hank, UsageKind::MeteredRequest).await,
        3,
        "the layer meters every CreateRun"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_driven_by_another_process_is_watched_and_stopped_through_the_store() {
    use reporunner_orchestrator::store::{Created, NewRun, RunChange};
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let alice = mesh.user("alice").await;
    // Another replica's runs: written straight to the shared store, with no
    // live feed in this orchestrator.
    let elsewhere = |_: ()| NewRun {
        owner_id: alice.id.clone(),
        goal: RunGoal::Analyze,
        source: RepoSource {
            source: Some(Source::GitUrl("https://example.invalid/app.git".into())),
            r#ref: String::new(),
        },
        workspace: None,
    };
    let Created::Run(run, _) = mesh.store.create_run(elsewhere(()), 10).await.unwrap() else {
        panic!("under the limit");
    };
    let writer = async {
        for step in [Step::Fetch, Step::Detect, Step::Analyze] {
            tokio::time::sleep(Duration::from_millis(120)).await;
            let event = run_event::Event::Step(StepEvent {
                step: step.into(),
                status: StepStatus::Finished.into(),
                detail: String::new(),
                duration_ms: 1,
            });
            mesh.store
                .append(&run.id, RunChange::default(), event)
                .await
                .unwrap()
                .unwrap();
        }
        mesh.store
            .transition(&run.id, RunState::Succeeded, RunChange::default())
            .await
            .unwrap()
            .unwrap();
    };
    let (events, ()) = tokio::join!(mesh.watch(&alice, &run.id, 1), writer);
    let events = events.unwrap();
    assert_gap_free(&events, 2);
    assert_eq!(states(&events), vec![RunState::Succeeded]);
    assert_eq!(steps(&events).len(), 3);

    let Created::Run(other, _) = mesh.store.create_run(elsewhere(()), 10).await.unwrap() else {
        panic!("under the limit");
    };
    let (events, stopped) = tokio::join!(mesh.watch(&alice, &other.id, 0), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stop(&mesh, &alice, &other.id).await.unwrap()
    });
    assert_eq!(stopped.state(), RunState::Stopped);
    assert_eq!(
        states(&events.unwrap()),
        vec![RunState::Pending, RunState::Stopped]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_gets_the_replay_at_once_and_live_events_without_polling() {
    use reporunner_proto::orchestrator::v1::WatchRunRequest;
    use tokio_stream::StreamExt as _;
    let db = common::sqlite();
    // Polling so slow that only the replay and the live feed can explain
    // what the watcher sees within the test's time.
    let config = reporunner_orchestrator::OrchestratorConfig {
        watch_poll_ms: 60_000,
        ..test_config()
    };
    let mesh = Mesh::start(&db, config).await;
    let ivy = mesh.user("ivy").await;
    let stuck = mesh
        .create(&ivy, Source::GitUrl(silent_git_url().await))
        .await
        .unwrap();
    until_state(&mesh, &ivy, &stuck.id, RunState::Fetching).await;
    let mut stream = mesh
        .client
        .clone()
        .watch_run(as_user(
            &ivy,
            WatchRunRequest {
                run_id: stuck.id.clone(),
                after_sequence: 0,
                without_logs: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event within seconds, not a poll interval")
            .map(|item| item.unwrap().event.unwrap())
    };
    let replayed = vec![
        next().await.unwrap(),
        next().await.unwrap(),
        next().await.unwrap(),
    ];
    assert_eq!(states(&replayed), vec![RunState::Pending, RunState::Fetching]);
    assert_gap_free(&replayed, 1);

    stop(&mesh, &ivy, &stuck.id).await.unwrap();
    let live = next().await.unwrap();
    assert_eq!(live.sequence, 4);
    assert_eq!(
        live.event,
        Some(run_event::Event::State(RunState::Stopped.into()))
    );
    assert!(next().await.is_none(), "the stream ends with the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_the_env_detector_still_analyzes() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let jack = mesh.user("jack").await;
    let run = mesh
        .create_with(
            &jack,
            CreateRunRequest {
                source: Some(RepoSource {
                    source: Some(Source::LocalPath(mesh.flask_fixture("skip"))),
                    r#ref: String::new(),
                }),
                skip_agents: vec!["env-detector".into()],
                ..CreateRunRequest::default()
            },
        )
        .await
        .unwrap();
    let events = mesh.watch(&jack, &run.id, 0).await.unwrap();
    let detect: Vec<StepStatus> = steps(&events)
        .iter()
        .filter(|s| s.step() == Step::Detect)
        .map(|s| s.status())
        .collect();
    assert_eq!(detect, vec![StepStatus::Skipped], "a skipped step never starts");
    let run = mesh.get(&jack, &run.id).await.unwrap();
    assert_eq!(run.state(), RunState::Succeeded);
    assert!(!run.plan.unwrap().components.is_empty());
}

/// `--skip-agents bogus` used to be accepted and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_an_agent_no_run_can_skip_is_refused_by_name() {
    let db = common::sqlite();
    let mesh = Mesh::start(&db, test_config()).await;
    let jack = mesh.user("jack").await;
    for agent in ["bogus", "runner", "source"] {
        let status = mesh
            .create_with(
                &jack,
                CreateRunRequest {
                    source: Some(RepoSource {
                        source: Some(Source::LocalPath(mesh.flask_fixture("skip-bad"))),
                        r#ref: String::new(),
                    }),
                    skip_agents: vec!["health".into(), agent.into()],
                    ..CreateRunRequest::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{agent}");
        let message = status.message();
        assert!(
            message.contains(&format!("`{agent}`"))
                && message.contains("provisioner, dependency, health, resolver"),
            "{message}"
        );
    }
}
