//! Self-healing through the whole mesh: fixtures with deliberate faults
//! reach RUNNING only because the orchestrator provisions what they need
//! and applies the resolver's patches. Each test names the rule that fired
//! (`HealEvent.cause`) and the patch that was applied
//! (`plan.applied_patches`), or the backing service that was provisioned,
//! and that StopRun releases it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reporunner_node::ServiceName;
use reporunner_proto::{
    common::v1::{BackingServiceKind, PlanPatch, plan_patch::Change},
    orchestrator::v1::{
        CreateRunRequest, HealEvent, RepoSource, Run, RunEvent, RunGoal, RunState, Step, StepEvent,
        StepStatus, StopRunRequest, orchestrator_service_client::OrchestratorServiceClient,
        repo_source::Source, run_event,
    },
};
use reporunner_tests::Sandbox;
use tonic::transport::Channel;

/// A cold install, a failure, a second install and a start on two shared
/// cores.
mod common;

use common::{create_start, events, fixture, get, http_get};

const UP_WITHIN: Duration = Duration::from_secs(480);

/// Every service hosted, once; a crashing component fails at once (no
/// restarts) so that the resolver sees it quickly.
async fn mesh() -> Sandbox {
    mesh_with(|_| {}).await
}

/// [`mesh`] with more settings changed by `edit`.
async fn mesh_with(edit: impl FnOnce(&mut reporunner_node::Settings)) -> Sandbox {
    Sandbox::builder()
        .with_all(ServiceName::ALL)
        .settings(|settings| {
            settings.orchestrator.max_restarts = 0;
            settings.orchestrator.status_poll_ms = 500;
            edit(settings);
        })
        .start()
        .await
        .unwrap()
}

fn heals(events: &[RunEvent]) -> Vec<HealEvent> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(run_event::Event::Heal(heal)) => Some(heal.clone()),
            _ => None,
        })
        .collect()
}

fn steps(events: &[RunEvent], step: Step) -> Vec<&StepEvent> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(run_event::Event::Step(s)) if s.step() == step => Some(s),
            _ => None,
        })
        .collect()
}

/// Polls until the run is RUNNING; panics with its error and events.
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
            let trail: Vec<String> = events(mesh, client, id, false)
                .await
                .iter()
                .map(|e| format!("{:?}", e.event))
                .collect();
            panic!(
                "run {id} is {state:?} after {:?}: {}\n{}",
                started.elapsed(),
                run.error,
                trail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn stop(mesh: &Sandbox, client: &mut OrchestratorServiceClient<Channel>, id: &str) {
    let stopped = client
        .stop_run(mesh.request(StopRunRequest { run_id: id.into() }))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(stopped.state(), RunState::Stopped);
}

fn applied(run: &Run) -> Vec<PlanPatch> {
    run.plan
        .as_ref()
        .map(|p| p.applied_patches.clone())
        .unwrap_or_default()
}

/// Asserts that exactly one heal happened, by `cause`, retrying from `retry_from`.
fn assert_one_heal(events: &[RunEvent], cause: &str, retry_from: Step) {
    let heals = heals(events);
    assert_eq!(heals.len(), 1, "{heals:?}");
    assert_eq!(heals[0].cause, cause, "{heals:?}");
    assert_eq!(heals[0].retry_from(), retry_from, "{heals:?}");
}

/// Asserts that some heal was by `cause`, retrying from `retry_from`.
fn assert_healed_by(events: &[RunEvent], cause: &str, retry_from: Step) {
    let heals = heals(events);
    assert!(
        heals
            .iter()
            .any(|h| h.cause == cause && h.retry_from() == retry_from),
        "{heals:?}"
    );
}

/// Asserts that the run's plan holds an applied patch whose change passes `wanted`.
fn assert_applied(run: &Run, wanted: impl Fn(&Change) -> bool) {
    let patches = applied(run);
    assert!(
        patches.iter().any(|p| p.change.as_ref().is_some_and(&wanted)),
        "{patches:?}"
    );
}

/// Runs `fixture` to RUNNING and checks its page; the run and its events.
async fn heal_to_running(
    mesh: &Sandbox,
    client: &mut OrchestratorServiceClient<Channel>,
    name: &str,
    page: &str,
) -> (Run, Vec<RunEvent>, String) {
    let created = create_start(mesh, client, name).await;
    let run = until_running(mesh, client, &created.id).await;
    let answer = http_get(&run.components[0].url);
    assert!(answer.contains(page), "{answer}");
    let events = events(mesh, client, &run.id, false).await;
    (run, events, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_python_package_is_added_and_installed() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(&mesh, &mut client, "heal-missing-dep", "heal-missing-dep").await;
    assert_one_heal(&events, "python.missing_module", Step::Install);
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::AddPackage(add) if add.name == "python-dotenv"
        )
    });
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

/// Real-repositories class: code written against an older release line of
/// an unpinned dependency imports a name today's release dropped. No table
/// knows the pair: the install says which distribution ships the module and
/// at which version, and the release line below it is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_an_unpinned_dependency_dropped_gets_its_earlier_release_line() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(
        &mesh,
        &mut client,
        "heal-version-skew",
        "hello from heal-version-skew: Name",
    )
    .await;
    assert_one_heal(&events, "python.version_skew", Step::Install);
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::AddPackage(add) if add.name == "WTForms" && add.version_spec == "<3"
        )
    });
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

/// Real-repositories class: Heroku-era code keys on the `postgres://`
/// scheme Heroku gives (bakerydemo adds `django.contrib.postgres` only
/// then); the provisioned URL is given in the scheme the code names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_url_comes_in_the_scheme_the_code_names() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(
        &mesh,
        &mut client,
        "postgres-heroku-scheme",
        "hello from postgres-heroku-scheme: postgres://",
    )
    .await;
    assert!(heals(&events).is_empty(), "{:?}", heals(&events));
    let plan = run.plan.as_ref().unwrap();
    assert_eq!(plan.components[0].backing_services[0].url_scheme, "postgres");
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_env_var_is_set() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(&mesh, &mut client, "heal-missing-env", "heal-missing-env").await;
    assert_one_heal(&events, "env.missing_var", Step::Setup);
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::SetEnvVar(set) if set.name == "SECRET_KEY" && !set.value.is_empty()
        )
    });
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

/// Issue 15, class 7: settings read at import with no default in code take
/// their values from where the repository keeps them (compose `env_file`,
/// app.json, devcontainer, CI), and the one kept nowhere gets a placeholder
/// guessed from its name, which the run's events call a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_the_repository_keeps_is_used_and_the_rest_is_guessed() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(
        &mesh,
        &mut client,
        "env-from-repo",
        "env-from-repo hello-from-env-file title-from-app-json theme-from-devcontainer region-from-ci \
         hosts=localhost,127.0.0.1 upstream=http://127.0.0.1:9",
    )
    .await;
    assert_one_heal(&events, "env.missing_var", Step::Setup);
    let heal = &heals(&events)[0];
    assert!(heal.summary.contains("placeholder is guessed"), "{heal:?}");
    assert!(
        heal.patches
            .iter()
            .any(|p| p.reason.contains("guessed from its name")
                && p.reason.contains("--env UPSTREAM_API_URL=")),
        "{heal:?}"
    );
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::SetEnvVar(set) if set.name == "UPSTREAM_API_URL" && set.value == "http://127.0.0.1:9"
        )
    });
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

/// Issue 15, class 8: the database initialisation a repository documents
/// (its README's set-up script) or defines (the app's own `init-db` Flask
/// command) runs as a setup step before the first start: the first start
/// serves, with no heal and no start-up grace waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_initialisation_a_repository_documents_runs_before_the_first_start() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    for (fixture, page) in [
        (
            "db-init-flask-command",
            "db-init-flask-command hello from an initialised database",
        ),
        ("db-init-readme", "db-init-readme 2 notes"),
    ] {
        let (run, events, _) = heal_to_running(&mesh, &mut client, fixture, page).await;
        assert!(heals(&events).is_empty(), "{fixture}: {:?}", heals(&events));
        let setup = steps(&events, Step::Setup);
        assert!(
            setup.iter().any(|s| s.status() == StepStatus::Finished),
            "{fixture}: {setup:?}"
        );
        stop(&mesh, &mut client, &run.id).await;
    }
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_moves_the_component_to_a_free_one() {
    // The fixture listens on APP_PORT, 47613 by default, which the analyzer
    // plans as its fixed port. Someone else holds it for the whole run.
    let holder = match std::net::TcpListener::bind(("127.0.0.1", 47613)) {
        Ok(listener) => Some(listener),
        // Held already: the collision is there either way.
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(err) => panic!("bind 127.0.0.1:47613: {err}"),
    };
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) =
        heal_to_running(&mesh, &mut client, "heal-port-collision", "heal-port-collision").await;
    assert_one_heal(&events, "port.in_use", Step::Setup);
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::SetPort(set) if set.port == 0 && set.binding == "env:APP_PORT"
        )
    });
    assert_ne!(run.components[0].port, 47613, "{:?}", run.components[0]);
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dotenv_file_is_created_from_the_template() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, answer) = heal_to_running(
        &mesh,
        &mut client,
        "heal-missing-dotenv",
        "from heal-missing-dotenv",
    )
    .await;
    // GREETING came from .env.example's default.
    assert!(answer.contains("hello from heal-missing-dotenv"), "{answer}");
    let heals = heals(&events);
    assert_eq!(heals.len(), 1, "{heals:?}");
    assert_eq!(heals[0].cause, "env.dotenv_missing");
    let patches = applied(&run);
    let created = patches
        .iter()
        .find_map(|p| match &p.change {
            Some(Change::CreateFile(file)) if file.path == ".env" => Some(file.content.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no .env was created: {patches:?}"));
    assert!(created.contains("GREETING=hello"), "{created}");
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("SECRET_KEY="))
        .unwrap_or_else(|| panic!("no SECRET_KEY in {created}"));
    assert!(secret.len() >= 32, "a generated secret, not empty: {created}");
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

fn psql(query: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            query,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_is_provisioned_and_released() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, answer) = heal_to_running(&mesh, &mut client, "heal-postgres", "db=rr_").await;
    let provision = steps(&events, Step::Provision);
    let finished = provision
        .iter()
        .find(|s| s.status() == StepStatus::Finished)
        .unwrap_or_else(|| panic!("{provision:?}"));
    assert!(finished.detail.starts_with("postgresql:"), "{}", finished.detail);
    assert!(finished.detail.contains(":***@"), "{}", finished.detail);
    let database = answer
        .lines()
        .find_map(|l| l.strip_prefix("db="))
        .unwrap()
        .trim()
        .to_owned();
    assert!(database.starts_with("rr_"), "{database}");
    let exists = format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'");
    assert_eq!(psql(&exists), "1");
    stop(&mesh, &mut client, &run.id).await;
    assert_eq!(psql(&exists), "0", "Release dropped {database}");
    mesh.stop().await.unwrap();
}

/// PostgreSQL that the analyzer cannot see (the driver is an extra of
/// SQLAlchemy, the URL's name is built at run time): the app fails to
/// connect, the resolver adds the service, and Release drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_added_provisioned_and_released() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, answer) = heal_to_running(&mesh, &mut client, "heal-postgres-unseen", "hits=").await;
    assert_healed_by(&events, "db.postgres_unreachable", Step::Provision);
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::AddBackingService(add)
                if add.service.as_ref().is_some_and(|s| s.kind == BackingServiceKind::Postgresql as i32)
        )
    });
    let database = answer
        .lines()
        .find_map(|l| l.strip_prefix("db="))
        .unwrap_or_else(|| panic!("{answer}"))
        .trim()
        .to_owned();
    let exists = format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'");
    assert_eq!(psql(&exists), "1");
    stop(&mesh, &mut client, &run.id).await;
    assert_eq!(psql(&exists), "0", "Release dropped {database}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_database_is_provisioned_and_released() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, answer) = heal_to_running(&mesh, &mut client, "heal-redis", "redis-db=").await;
    let provision = steps(&events, Step::Provision);
    assert!(
        provision
            .iter()
            .any(|s| s.status() == StepStatus::Finished && s.detail.starts_with("redis:")),
        "{provision:?}"
    );
    let db = answer
        .lines()
        .find_map(|l| l.strip_prefix("redis-db="))
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(db, "0", "the run gets a database of its own");
    assert!(redis_claim(&db).starts_with(&run.id), "{}", redis_claim(&db));
    stop(&mesh, &mut client, &run.id).await;
    assert!(
        !redis_claim(&db).starts_with(&run.id),
        "Release dropped the claim: {}",
        redis_claim(&db)
    );
    mesh.stop().await.unwrap();
}

/// Who holds Redis database `db` of the shared server, as the provisioner
/// records it (`reporunner:provisioner:db:<n>` in database 0).
fn redis_claim(db: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "-n", "0", "GET"])
        .arg(format!("reporunner:provisioner:db:{db}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapplied_django_migrations_get_a_setup_command() {
    let mesh = Sandbox::builder()
        .with_all(ServiceName::ALL)
        .settings(|settings| {
            settings.orchestrator.max_restarts = 0;
            settings.orchestrator.status_poll_ms = 500;
            settings.orchestrator.startup_grace_seconds = 15;
        })
        .start()
        .await
        .unwrap();
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(&mesh, &mut client, "heal-django-migrate", "notes=0").await;
    assert_healed_by(&events, "db.not_migrated", Step::Setup);
    assert_applied(&run, |change| {
        matches!(
            change,
            Change::AddSetupCommand(add)
                if add.command.as_ref().is_some_and(|c| c.run.contains("manage.py migrate"))
        )
    });
    let setup = steps(&events, Step::Setup);
    assert!(
        setup
            .iter()
            .any(|s| s.status() == StepStatus::Finished && s.detail.contains("-setup-1: exit code 0")),
        "{setup:?}"
    );
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_the_resolver_fails_as_before() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let created = client
        .create_run(mesh.request(CreateRunRequest {
            source: Some(RepoSource {
                source: Some(Source::LocalPath(fixture("heal-missing-env"))),
                r#ref: String::new(),
            }),
            goal: RunGoal::Start.into(),
            skip_agents: vec!["resolver".into()],
            ..CreateRunRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let started = Instant::now();
    let run = loop {
        let run = get(&mesh, &mut client, &created.id).await;
        if run.state() == RunState::Failed || started.elapsed() > UP_WITHIN {
            break run;
        }
        assert_ne!(run.state(), RunState::Running, "not healed, not running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(run.state(), RunState::Failed, "{}", run.error);
    assert!(run.error.contains("SECRET_KEY"), "{}", run.error);
    let events = events(&mesh, &mut client, &run.id, false).await;
    assert!(heals(&events).is_empty());
    assert!(applied(&run).is_empty());
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_added_provisioned_and_released() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, answer) = heal_to_running(&mesh, &mut client, "heal-redis-unseen", "hits=").await;
    assert_healed_by(&events, "db.redis_unreachable", Step::Provision);
    let patches = applied(&run);
    assert!(
        patches
            .iter()
            .any(|p| matches!(&p.change, Some(Change::AddBackingService(_)))),
        "{patches:?}"
    );
    let provision = steps(&events, Step::Provision);
    assert!(
        provision
            .iter()
            .any(|s| s.status() == StepStatus::Finished && s.detail.starts_with("redis:")),
        "{provision:?}"
    );
    // The added service is the run's own database, released with the run.
    let db = answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix("redis-db="))
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned();
    assert_ne!(db, "0", "the run gets a database of its own");
    assert!(redis_claim(&db).starts_with(&run.id), "{}", redis_claim(&db));
    stop(&mesh, &mut client, &run.id).await;
    assert!(
        !redis_claim(&db).starts_with(&run.id),
        "Release dropped the claim: {}",
        redis_claim(&db)
    );
    mesh.stop().await.unwrap();
}

/// Real-repositories class: a Flask older than 2.2 has no `--app` option.
/// The app is named in FLASK_APP, which every Flask reads, so such an app
/// comes up at the first start instead of after a failed start and a heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flask_older_than_2_2_starts_without_a_heal() {
    let mesh = mesh().await;
    let mut client = mesh.orchestrator();
    let (run, events, _) = heal_to_running(
        &mesh,
        &mut client,
        "flask-before-2-2",
        "hello from flask-before-2-2",
    )
    .await;
    assert!(heals(&events).is_empty(), "{:?}", heals(&events));
    stop(&mesh, &mut client, &run.id).await;
    mesh.stop().await.unwrap();
}

/// The caller's tier bounds the heals of a run (`max_heal_attempts`): a
/// tier that allows none fails a run the resolver could heal, naming the
/// limit, and applies no patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_with_no_heal_attempts_fails_a_healable_run_naming_the_limit() {
    use reporunner_proto::common::v1::Tier;
    let mesh = mesh_with(|settings| {
        for policy in &mut settings.auth.tiers {
            if policy.tier == Tier::Free {
                policy.max_heal_attempts = 0;
            }
        }
    })
    .await;
    let mut client = mesh.orchestrator();
    // The sandbox's user is a Free user.
    let created = create_start(&mesh, &mut client, "heal-missing-dep").await;
    let started = Instant::now();
    let run = loop {
        let run = get(&mesh, &mut client, &created.id).await;
        if matches!(
            run.state(),
            RunState::Failed
                | RunState::Running
                | RunState::Succeeded
                | RunState::Stopped
                | RunState::Interrupted
        ) {
            break run;
        }
        assert!(started.elapsed() < UP_WITHIN, "{run:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(run.state(), RunState::Failed, "{run:?}");
    assert!(
        run.error
            .contains("not healed: your tier allows 0 heal attempt(s) per run"),
        "{}",
        run.error
    );
    assert!(applied(&run).is_empty(), "{:?}", applied(&run));
    let events = events(&mesh, &mut client, &run.id, false).await;
    assert!(heals(&events).is_empty(), "{:?}", heals(&events));
    mesh.stop().await.unwrap();
}
