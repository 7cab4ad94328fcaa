//! The run store on SQLite and PostgreSQL: the same behaviour on both.
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use common::TestDb;
use reporunner_orchestrator::{
    OrchestratorError, RunStore,
    store::{Created, Lease, NewRun, RunChange, RunComponent},
};
use reporunner_proto::{
    common::v1::{Command, Component, RunPlan, Workspace},
    orchestrator::v1::{
        ComponentHealth, RepoSource, Run, RunEvent, RunGoal, RunState, Step, StepEvent, StepStatus,
        repo_source, run_event,
    },
};
use sea_orm::ConnectionTrait as _;

/// Runs `$test(db)` once on SQLite and once on a fresh PostgreSQL database.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(super::common::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::common::postgres().await {
                    super::$test(db).await;
                }
            }
        }
    )*};
}

on_both_databases!(
    sequences_are_gap_free_under_concurrent_writers,
    nothing_is_written_after_a_terminal_state,
    the_concurrent_run_limit_holds_under_concurrent_creations,
    listing_pages_newest_first_by_owner_and_state,
    workspaces_are_found_only_for_the_user_who_fetched_them,
    a_run_is_taken_over_only_when_its_lease_expired_or_at_its_owners_restart,
    of_replicas_sweeping_at_once_exactly_one_takes_each_run,
    runs_round_trip_their_messages,
    components_are_kept_with_the_run,
    a_finished_run_is_read_from_memory_and_an_unfinished_one_from_the_database,
);

fn new_run(owner: &str) -> NewRun {
    NewRun {
        owner_id: owner.to_owned(),
        goal: RunGoal::Analyze,
        source: RepoSource {
            source: Some(repo_source::Source::GitUrl(
                "https://example.invalid/app.git".into(),
            )),
            r#ref: "main".into(),
        },
        workspace: None,
    }
}

async fn create(store: &RunStore, owner: &str) -> Run {
    match store.create_run(new_run(owner), 1_000).await.unwrap() {
        Created::Run(run, event) => {
            assert_eq!(event.sequence, 1);
            assert_eq!(
                event.event,
                Some(run_event::Event::State(RunState::Pending.into()))
            );
            *run
        }
        Created::AtLimit { .. } => panic!("no limit here"),
    }
}

/// Moves run `id` to `state` with no other change; the run must not have
/// ended yet.
async fn move_to(store: &RunStore, id: &str, state: RunState) -> (Run, RunEvent) {
    store
        .transition(id, state, RunChange::default())
        .await
        .unwrap()
        .unwrap()
}

/// A step event that names itself in its detail.
fn step(name: &str) -> run_event::Event {
    run_event::Event::Step(StepEvent {
        step: Step::Fetch.into(),
        status: StepStatus::Started.into(),
        detail: name.to_owned(),
        duration_ms: 0,
    })
}

async fn sequences_are_gap_free_under_concurrent_writers(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let run = create(&store, "alice").await;
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let id = run.id.clone();
            tokio::spawn(async move {
                store
                    .append(&id, RunChange::default(), step(&format!("s{i}")))
                    .await
                    .unwrap()
                    .unwrap()
                    .1
                    .sequence
            })
        })
        .collect();
    let mut got = Vec::new();
    for writer in writers {
        got.push(writer.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (2..=17).collect::<Vec<u64>>(),
        "each writer got its own next number"
    );
    let events = store.events_after(&run.id, 0, 100).await.unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=17).collect::<Vec<u64>>());
    assert!(events.iter().all(|e| e.run_id == run.id && e.time.is_some()));
    let tail = store.events_after(&run.id, 15, 100).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![16, 17]);
}

async fn nothing_is_written_after_a_terminal_state(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let run = create(&store, "alice").await;
    let (stopped, event) = move_to(&store, &run.id, RunState::Stopped).await;
    assert_eq!(stopped.state(), RunState::Stopped);
    assert_eq!(event.sequence, 2);
    assert!(
        store
            .append(&run.id, RunChange::default(), step("late"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .transition(&run.id, RunState::Succeeded, RunChange::default())
            .await
            .unwrap()
            .is_none(),
        "a stopped run cannot succeed afterwards"
    );
    assert_eq!(
        store.get_run(&run.id).await.unwrap().unwrap().state(),
        RunState::Stopped
    );
    assert_eq!(store.events_after(&run.id, 0, 10).await.unwrap().len(), 2);
    assert!(
        store
            .append("no-such-run", RunChange::default(), step("x"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_finished_run_is_read_from_memory_and_an_unfinished_one_from_the_database(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let open = create(&store, "alice").await;
    let done = create(&store, "alice").await;
    move_to(&store, &done.id, RunState::Succeeded).await;
    let other = RunStore::connect(&db.url).await.unwrap();
    let finished_elsewhere = create(&other, "bob").await;
    move_to(&other, &finished_elsewhere.id, RunState::Failed).await;
    // Read once by this store, which keeps it from then on.
    assert_eq!(
        store
            .get_run(&finished_elsewhere.id)
            .await
            .unwrap()
            .unwrap()
            .state(),
        RunState::Failed
    );
    // What another replica changes in an unfinished run is seen at once.
    move_to(&other, &open.id, RunState::Running).await;
    assert_eq!(
        store.get_run(&open.id).await.unwrap().unwrap().state(),
        RunState::Running
    );
    // With the database closed, the finished runs still answer (the one this
    // store finished, and the one another finished and this one read); the
    // unfinished run needs the database.
    store.db().close().await.unwrap();
    assert_eq!(
        store.get_run(&done.id).await.unwrap().unwrap().state(),
        RunState::Succeeded
    );
    assert_eq!(
        store
            .get_run(&finished_elsewhere.id)
            .await
            .unwrap()
            .unwrap()
            .owner_id,
        "bob"
    );
    assert!(
        store.get_run(&open.id).await.is_err(),
        "an unfinished run is read again"
    );
}

async fn the_concurrent_run_limit_holds_under_concurrent_creations(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create_run(new_run("alice"), 2).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Created::Run(..) => created += 1,
            Created::AtLimit { active } => assert_eq!(active, 2),
        }
    }
    assert_eq!(created, 2, "exactly the limit");
    assert_eq!(store.count_active("alice").await.unwrap(), 2);
    // Another owner has their own count; a finished run frees a slot.
    assert!(matches!(
        store.create_run(new_run("bob"), 2).await.unwrap(),
        Created::Run(..)
    ));
    let (runs, _) = store.list_runs(Some("alice"), &[], 10, "").await.unwrap();
    move_to(&store, &runs[0].id, RunState::Failed).await;
    assert!(matches!(
        store.create_run(new_run("alice"), 2).await.unwrap(),
        Created::Run(..)
    ));
}

async fn listing_pages_newest_first_by_owner_and_state(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let mut alice = Vec::new();
    for _ in 0..7 {
        alice.push(create(&store, "alice").await.id);
        // Distinct creation times for most; equal ones are ordered by id.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for _ in 0..2 {
        create(&store, "bob").await;
    }
    move_to(&store, &alice[1], RunState::Succeeded).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let (runs, next) = store.list_runs(Some("alice"), &[], 3, &token).await.unwrap();
        pages.push(runs.len());
        seen.extend(runs.into_iter().map(|r| r.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, vec![3, 3, 1]);
    let newest_first: Vec<String> = alice.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every run once, newest first");

    let (all, next) = store.list_runs(None, &[], 0, "").await.unwrap();
    assert_eq!(
        (all.len(), next.as_str()),
        (9, ""),
        "everyone's runs for the admin"
    );
    let (done, _) = store
        .list_runs(Some("alice"), &[RunState::Succeeded], 0, "")
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![alice[1].as_str()]
    );
    assert!(matches!(
        store.list_runs(None, &[], 3, "bm90LW91cnM").await,
        Err(OrchestratorError::InvalidPageToken)
    ));
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len());
}

fn workspace(id: &str, owner: &str) -> Workspace {
    Workspace {
        id: id.to_owned(),
        owner_id: owner.to_owned(),
        path: format!("/srv/workspaces/{owner}/{id}"),
        origin: "https://example.invalid/app.git".into(),
        commit: "0123abcd".into(),
        size_bytes: 42,
        file_count: 3,
        created_at: None,
        content_time: None,
    }
}

async fn workspaces_are_found_only_for_the_user_who_fetched_them(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let id = format!("sha256:{}", "ab".repeat(32));
    let run = create(&store, "alice").await;
    let change = RunChange {
        workspace: Some(workspace(&id, "alice")),
        ..RunChange::default()
    };
    store
        .append(&run.id, change, step("fetch"))
        .await
        .unwrap()
        .unwrap();
    let found = store.find_workspace("alice", &id).await.unwrap().unwrap();
    assert_eq!(found, workspace(&id, "alice"));
    assert_eq!(store.find_workspace("bob", &id).await.unwrap(), None);
    assert_eq!(store.find_workspace("alice", "sha256:other").await.unwrap(), None);
}

/// The store `db` writing as `replica`, with leases of `ttl`.
async fn replica(db: &TestDb, replica: &str, ttl: Duration) -> RunStore {
    RunStore::connect(&db.url).await.unwrap().leased_by(Lease {
        replica: replica.to_owned(),
        ttl,
    })
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn a_run_is_taken_over_only_when_its_lease_expired_or_at_its_owners_restart(db: TestDb) {
    let long = Duration::from_secs(60);
    let a = replica(&db, "a", long).await;
    let b = replica(&db, "b", long).await;
    let held = create(&a, "alice").await;
    let done = create(&a, "alice").await;
    move_to(&a, &done.id, RunState::Succeeded).await;
    // A live replica's run is nobody else's, not even at their start-up.
    assert!(b.claim_unheld(false).await.unwrap().is_empty());
    assert!(b.claim_unheld(true).await.unwrap().is_empty());
    assert!(a.claim_unheld(false).await.unwrap().is_empty());
    // Its own restart takes it at once; a finished run is never claimed.
    assert_eq!(a.claim_unheld(true).await.unwrap(), vec![held.id.clone()]);
    assert_eq!(
        a.renew_leases(&[held.id.clone(), done.id.clone()]).await.unwrap(),
        1
    );

    // A replica that stops renewing loses its runs once the lease expires.
    let short = replica(&db, "a", Duration::from_millis(300)).await;
    let dying = create(&short, "alice").await;
    assert!(b.claim_unheld(false).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.claim_unheld(false).await.unwrap(), vec![dying.id.clone()]);
    // The old owner sees it lost the run and cannot renew it any more.
    assert_eq!(
        short
            .leased_elsewhere(&[dying.id.clone(), held.id.clone()])
            .await
            .unwrap(),
        vec![dying.id.clone()]
    );
    assert_eq!(
        short.renew_leases(std::slice::from_ref(&dying.id)).await.unwrap(),
        0
    );
    assert!(
        b.leased_elsewhere(std::slice::from_ref(&dying.id))
            .await
            .unwrap()
            .is_empty()
    );

    // A run from before leases (no owner) goes to the first replica that
    // sweeps.
    a.db()
        .write()
        .execute_unprepared(&format!(
            "UPDATE runs SET lease_owner = NULL, lease_until = 0 WHERE id = '{}'",
            held.id
        ))
        .await
        .unwrap();
    assert_eq!(b.claim_unheld(false).await.unwrap(), vec![held.id.clone()]);
    assert!(a.claim_unheld(true).await.unwrap().is_empty());
}

async fn of_replicas_sweeping_at_once_exactly_one_takes_each_run(db: TestDb) {
    let dead = replica(&db, "dead", Duration::from_millis(300)).await;
    let mut runs = Vec::new();
    for _ in 0..12 {
        runs.push(create(&dead, "alice").await.id);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut sweeps = Vec::new();
    for name in ["r1", "r2", "r3", "r4"] {
        let sweeper = replica(&db, name, Duration::from_secs(60)).await;
        sweeps.push(tokio::spawn(async move { sweeper.claim_unheld(false).await }));
    }
    let mut all = Vec::new();
    for sweep in sweeps {
        all.extend(sweep.await.unwrap().unwrap());
    }
    assert_eq!(sorted(all.clone()), sorted(runs), "each run taken once: {all:?}");
}

async fn runs_round_trip_their_messages(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let run = create(&store, "alice").await;
    assert_eq!(run.state(), RunState::Pending);
    assert_eq!(run.goal(), RunGoal::Analyze);
    assert_eq!(run.source, Some(new_run("alice").source));
    let plan = RunPlan {
        workspace_id: "sha256:x".into(),
        components: vec![Component {
            name: "web".into(),
            start: Some(Command {
                run: "flask --app app run".into(),
                ..Command::default()
            }),
            ..Component::default()
        }],
        ..RunPlan::default()
    };
    let change = RunChange {
        plan: Some(plan.clone()),
        error: Some("analyze failed: nothing".into()),
        attempts: Some(1),
        ..RunChange::default()
    };
    let (after, _) = store
        .transition(&run.id, RunState::Failed, change)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.plan, Some(plan));
    assert_eq!(after.attempts, 1);
    assert_eq!(after.error, "analyze failed: nothing");
    assert_eq!(after.created_at, run.created_at);
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap(), after);
    assert_eq!(store.get_run("missing").await.unwrap(), None);
}

async fn components_are_kept_with_the_run(db: TestDb) {
    let store = RunStore::connect(&db.url).await.unwrap();
    let running = create(&store, "alice").await;
    let starting = create(&store, "alice").await;
    let web = RunComponent {
        name: "web".into(),
        url: "http://127.0.0.1:4242".into(),
        health: ComponentHealth::Healthy.into(),
        port: 4242,
        process_id: "proc-1".into(),
        pid: 77,
        kind: 1,
        health_paths: vec!["/health".into()],
    };
    let change = RunChange {
        components: Some(vec![web.clone()]),
        ..RunChange::default()
    };
    let (run, _) = store
        .transition(&running.id, RunState::Running, change)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.components, vec![web.status()]);
    assert_eq!(run.components[0].url, "http://127.0.0.1:4242");
    move_to(&store, &starting.id, RunState::Starting).await;
    assert_eq!(store.components(&running.id).await.unwrap(), vec![web.clone()]);
    assert!(store.components(&starting.id).await.unwrap().is_empty());

    // Stored with the run: what a replica taking it over reads back.
    let (again, _) = store
        .append(&running.id, RunChange::default(), step("still"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.components, vec![web.status()]);
    assert_eq!(store.components(&running.id).await.unwrap(), vec![web]);
}

/// The default store is `<data_dir>/orchestrator.db`: the directory is
/// created 0700 and the database 0600 (and a loose existing one tightened).
#[cfg(unix)]
#[tokio::test]
async fn the_default_sqlite_store_is_private() {
    use std::os::unix::fs::PermissionsExt;

    use reporunner_orchestrator::{OrchestratorConfig, OrchestratorImpl};
    use sea_orm::ConnectionTrait;

    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let config = OrchestratorConfig::default();
    let store = OrchestratorImpl::open_store(&config, &data_dir).await.unwrap();
    assert_eq!(mode(&data_dir), 0o700);
    let db = data_dir.join("orchestrator.db");
    assert_eq!(mode(&db), 0o600);
    // SQLite gives -wal and -shm the database's mode.
    store
        .db()
        .write()
        .execute_unprepared("PRAGMA journal_mode=WAL")
        .await
        .unwrap();
    store
        .db()
        .write()
        .execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    for companion in ["orchestrator.db-wal", "orchestrator.db-shm"] {
        assert_eq!(mode(&data_dir.join(companion)), 0o600, "{companion}");
    }
    drop(store);

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(OrchestratorImpl::open_store(&config, &data_dir).await.unwrap());
    assert_eq!(mode(&db), 0o600);
}
