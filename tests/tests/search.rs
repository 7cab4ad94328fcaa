//! Indexing and search through the orchestrator over real gRPC, with the
//! tier policy: Free gets text with a fallback reason (PERMISSION_DENIED
//! when strict), Advanced gets vectors only where the env-detector
//! recommends them, Premium gets hybrid, and with no model installed
//! everyone gets text with the reason.
//!
//! The env-detector reads its host from a fixture root (`/proc/meminfo`,
//! `/proc/cpuinfo`), so its recommendation is decided by the test, not by
//! the machine. The model is all-MiniLM-L6-v2 from `make models`
//! (`.models/`, or `REPORUNNER_MODEL_DIR`): without it these tests skip
//! locally and fail in CI (`CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use reporunner_node::ServiceName;
use reporunner_proto::{
    auth::v1::{
        LoginRequest, RegisterRequest, SetTierRequest, admin_service_client::AdminServiceClient,
        auth_service_client::AuthServiceClient,
    },
    common::v1::{IndexMode, Tier},
    orchestrator::v1::{
        CreateRunRequest, GetRecommendationsRequest, GetRunRequest, IndexWorkspaceRequest,
        IndexWorkspaceResponse, RepoSource, Run, RunGoal, RunState, SearchRequest, SearchResponse, Step,
        StepStatus, WatchRunRequest, repo_source::Source, run_event,
    },
};
use reporunner_tests::{FRONT_DOOR, SANDBOX_PASSWORD, Sandbox};
use tonic::Code;

const MODEL: &str = "all-MiniLM-L6-v2";
const ADMIN: &str = "root-admin";

/// The test model's directory, or `None` (skip) locally when it is missing.
fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("REPORUNNER_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.models")
                .join(MODEL)
        });
    if ["config.json", "tokenizer.json", "model.safetensors"]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Some(dir.canonicalize().unwrap());
    }
    let message = format!(
        "the embedding model is missing at {} (run `make models` or set REPORUNNER_MODEL_DIR)",
        dir.display()
    );
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{message}; CI must run the search tests"
    );
    eprintln!("skipped: {message}");
    None
}

/// A host root for the env-detector: `available_mib` of memory, 4 CPUs.
fn host_root(dir: &Path, available_mib: u64) -> PathBuf {
    let root = dir.join("host");
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(
        root.join("proc/meminfo"),
        format!(
            "MemTotal:       16777216 kB\nMemFree:        {0} kB\nMemAvailable:   {0} kB\n",
            available_mib * 1024
        ),
    )
    .unwrap();
    let cpus: String = (0..4).map(|i| format!("processor\t: {i}\n\n")).collect();
    std::fs::write(root.join("proc/cpuinfo"), cpus).unwrap();
    root
}

/// The search mesh: auth (with an admin), env-detector reading `host`,
/// source, analyzer, indexer and orchestrator; `model` linked into
/// `<data>/models` when given.
async fn mesh(host: &Path, model: Option<&Path>) -> Sandbox {
    let host = host.to_path_buf();
    let model = model.map(Path::to_path_buf);
    Sandbox::builder()
        .with_all(FRONT_DOOR)
        .with(ServiceName::Indexer)
        .settings(move |s| {
            let models = s.data_dir.join("models");
            std::fs::create_dir_all(&models).unwrap();
            if let Some(model) = model {
                std::os::unix::fs::symlink(model, models.join(MODEL)).unwrap();
            }
            s.env_detector.root = host;
            s.env_detector.model_dir = Some(models);
            s.admin.username = Some(ADMIN.into());
            s.admin.password = Some(SANDBOX_PASSWORD.into());
        })
        .start()
        .await
        .unwrap()
}

/// A user of the mesh with their token; `set_tier` moves them.
struct User {
    id: String,
    name: String,
    token: String,
}

async fn login(mesh: &Sandbox, name: &str) -> (String, String) {
    let login = AuthServiceClient::new(mesh.channel(ServiceName::Auth))
        .login(LoginRequest {
            username: name.into(),
            password: SANDBOX_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (login.user.unwrap().id, login.tokens.unwrap().access_token)
}

async fn user(mesh: &Sandbox, name: &str) -> User {
    AuthServiceClient::new(mesh.channel(ServiceName::Auth))
        .register(RegisterRequest {
            username: name.into(),
            password: SANDBOX_PASSWORD.into(),
        })
        .await
        .unwrap();
    let (id, token) = login(mesh, name).await;
    User {
        id,
        name: name.into(),
        token,
    }
}

fn as_user<T>(user: &User, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", user.token).parse().unwrap());
    request
}

async fn set_tier(mesh: &Sandbox, user: &mut User, tier: Tier) {
    let (_, admin) = login(mesh, ADMIN).await;
    let mut request = tonic::Request::new(SetTierRequest {
        user_id: user.id.clone(),
        tier: tier.into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    AdminServiceClient::new(mesh.channel(ServiceName::Auth))
        .set_tier(request)
        .await
        .unwrap();
    user.token = login(mesh, &user.name).await.1;
}

/// An ANALYZE run of the flask fixture, waited for to its end.
async fn analyzed(mesh: &Sandbox, user: &User, index: bool) -> Run {
    let mut client = mesh.orchestrator();
    let run = client
        .create_run(as_user(
            user,
            CreateRunRequest {
                source: Some(RepoSource {
                    source: Some(Source::LocalPath(common::fixture("flask-factory"))),
                    r#ref: String::new(),
                }),
                goal: RunGoal::Analyze.into(),
                index,
                ..CreateRunRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let started = Instant::now();
    loop {
        let run = client
            .get_run(as_user(
                user,
                GetRunRequest {
                    run_id: run.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap();
        if matches!(run.state(), RunState::Succeeded | RunState::Failed) {
            assert_eq!(run.state(), RunState::Succeeded, "{run:?}");
            return run;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "{run:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Indexes the run's workspace; every message, the last one `done`.
async fn index(mesh: &Sandbox, user: &User, run_id: &str, mode: IndexMode) -> Vec<IndexWorkspaceResponse> {
    let mut stream = mesh
        .orchestrator()
        .index_workspace(as_user(
            user,
            IndexWorkspaceRequest {
                run_id: run_id.into(),
                mode: mode.into(),
                ..IndexWorkspaceRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(300), stream.next())
        .await
        .expect("indexing went quiet")
    {
        messages.push(message.unwrap());
    }
    assert!(messages.last().is_some_and(|m| m.done), "{messages:?}");
    messages
}

async fn search(
    mesh: &Sandbox,
    user: &User,
    run_id: &str,
    mode: IndexMode,
    strict: bool,
) -> Result<SearchResponse, tonic::Status> {
    mesh.orchestrator()
        .search(as_user(
            user,
            SearchRequest {
                run_id: run_id.into(),
                query: "create the flask application".into(),
                mode: mode.into(),
                limit: 5,
                strict,
                ..SearchRequest::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn recommended(mesh: &Sandbox, user: &User) -> bool {
    mesh.orchestrator()
        .get_recommendations(as_user(user, GetRecommendationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .recommendations
        .unwrap()
        .vector_index
}

fn served(response: &SearchResponse) -> IndexMode {
    IndexMode::try_from(response.mode).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_choose_the_mode_where_vectors_are_recommended() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(&host_root(dir.path(), 12 * 1024), Some(&model)).await;
    let mut dana = user(&mesh, "dana").await;
    assert!(
        recommended(&mesh, &dana).await,
        "a 12 GiB, 4 CPU host with a model"
    );

    // Indexing as a step of a run: Free gets the text index, and the run
    // records the step.
    let run = analyzed(&mesh, &dana, true).await;
    let mut stream = mesh
        .orchestrator()
        .watch_run(as_user(
            &dana,
            WatchRunRequest {
                run_id: run.id.clone(),
                after_sequence: 0,
                without_logs: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    // The run is over: its stream ends after the terminal state.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        events.extend(message.unwrap().event);
    }
    let finished = events.iter().find_map(|e| match &e.event {
        Some(run_event::Event::Step(step))
            if step.step() == Step::Index && step.status() == StepStatus::Finished =>
        {
            Some(step.detail.clone())
        }
        _ => None,
    });
    let finished = finished.unwrap_or_else(|| panic!("no finished index step in {events:?}"));
    assert!(finished.contains("(text)"), "{finished}");
    let free = search(&mesh, &dana, &run.id, IndexMode::Text, false)
        .await
        .unwrap();
    assert_eq!(served(&free), IndexMode::Text);
    assert!(
        free.hits.iter().any(|h| h.path.starts_with("app/")),
        "{:?}",
        free.hits
    );

    // Premium: hybrid, the index built with vectors.
    set_tier(&mesh, &mut dana, Tier::Premium).await;
    let messages = index(&mesh, &dana, &run.id, IndexMode::Unspecified).await;
    let done = messages.last().unwrap();
    assert_eq!(done.mode(), IndexMode::Hybrid, "{done:?}");
    assert!(done.fallback_reason.is_empty(), "{done:?}");
    assert!(done.modes.contains(&(IndexMode::Vector as i32)), "{done:?}");
    assert_eq!(done.model, MODEL);
    assert!(done.progress.unwrap().chunks_embedded > 0, "{done:?}");
    let premium = search(&mesh, &dana, &run.id, IndexMode::Unspecified, false)
        .await
        .unwrap();
    assert_eq!(served(&premium), IndexMode::Hybrid, "{premium:?}");
    assert!(premium.fallback_reason.is_empty());
    assert!(!premium.hits.is_empty());

    // Advanced: vectors, since they are recommended here; hybrid degrades.
    set_tier(&mesh, &mut dana, Tier::Advanced).await;
    let advanced = search(&mesh, &dana, &run.id, IndexMode::Vector, false)
        .await
        .unwrap();
    assert_eq!(served(&advanced), IndexMode::Vector, "{advanced:?}");
    assert!(advanced.fallback_reason.is_empty());
    let hybrid = search(&mesh, &dana, &run.id, IndexMode::Hybrid, false)
        .await
        .unwrap();
    assert_eq!(served(&hybrid), IndexMode::Vector, "{hybrid:?}");
    assert!(
        hybrid.fallback_reason.contains("Advanced"),
        "{}",
        hybrid.fallback_reason
    );

    // Free: text with the reason, or PERMISSION_DENIED when insisting.
    set_tier(&mesh, &mut dana, Tier::Free).await;
    let free = search(&mesh, &dana, &run.id, IndexMode::Vector, false)
        .await
        .unwrap();
    assert_eq!(served(&free), IndexMode::Text, "{free:?}");
    assert!(
        free.fallback_reason
            .contains("Free tier does not include vector search"),
        "{}",
        free.fallback_reason
    );
    assert!(!free.hits.is_empty());
    let denied = search(&mesh, &dana, &run.id, IndexMode::Vector, true)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("needs the Advanced tier"),
        "{}",
        denied.message()
    );

    // The workspace by id; another user's is not found, and their run too.
    let workspace_id = run.workspace.unwrap().id;
    let by_id = mesh
        .orchestrator()
        .search(as_user(
            &dana,
            SearchRequest {
                workspace_id: workspace_id.clone(),
                query: "create_app".into(),
                path_glob: "app/**".into(),
                language: "python".into(),
                ..SearchRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(by_id.hits.iter().all(|h| h.path.starts_with("app/")), "{by_id:?}");
    let erin = user(&mesh, "erin").await;
    for request in [
        SearchRequest {
            workspace_id,
            query: "create_app".into(),
            ..SearchRequest::default()
        },
        SearchRequest {
            run_id: run.id.clone(),
            query: "create_app".into(),
            ..SearchRequest::default()
        },
    ] {
        let status = mesh
            .orchestrator()
            .search(as_user(&erin, request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let empty = search(&mesh, &erin, "", IndexMode::Text, false)
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let status = mesh
        .orchestrator()
        .index_workspace(as_user(
            &erin,
            IndexWorkspaceRequest {
                run_id: run.id.clone(),
                ..IndexWorkspaceRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_gets_text_where_vectors_are_not_recommended() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 1 GiB available: below what a vector index needs.
    let mesh = mesh(&host_root(dir.path(), 1024), Some(&model)).await;
    let mut fay = user(&mesh, "fay").await;
    assert!(!recommended(&mesh, &fay).await, "a 1 GiB host");
    let run = analyzed(&mesh, &fay, false).await;

    // Premium needs no recommendation.
    set_tier(&mesh, &mut fay, Tier::Premium).await;
    let done = index(&mesh, &fay, &run.id, IndexMode::Hybrid).await;
    assert_eq!(done.last().unwrap().mode(), IndexMode::Hybrid);

    set_tier(&mesh, &mut fay, Tier::Advanced).await;
    let advanced = search(&mesh, &fay, &run.id, IndexMode::Vector, false)
        .await
        .unwrap();
    assert_eq!(served(&advanced), IndexMode::Text, "{advanced:?}");
    assert!(
        advanced.fallback_reason.contains("recommend"),
        "{}",
        advanced.fallback_reason
    );
    let denied = search(&mesh, &fay, &run.id, IndexMode::Vector, true)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("needs the Premium tier"),
        "{}",
        denied.message()
    );

    // A model the indexer lacks (though the env-detector sees one): the
    // workspace is indexed for text, and the reason names the model.
    set_tier(&mesh, &mut fay, Tier::Premium).await;
    let mut stream = mesh
        .orchestrator()
        .index_workspace(as_user(
            &fay,
            IndexWorkspaceRequest {
                run_id: run.id.clone(),
                mode: IndexMode::Vector.into(),
                embedding_model: "missing-model".into(),
                ..IndexWorkspaceRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .unwrap()
    {
        last = Some(message.unwrap());
    }
    let last = last.unwrap();
    assert!(last.done && last.mode() == IndexMode::Text, "{last:?}");
    assert!(
        last.fallback_reason.contains("missing-model") && last.fallback_reason.contains("text search only"),
        "{}",
        last.fallback_reason
    );
    assert_eq!(last.modes, vec![IndexMode::Text as i32]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_everyone_gets_text_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(&host_root(dir.path(), 12 * 1024), None).await;
    let mut gil = user(&mesh, "gil").await;
    let run = analyzed(&mesh, &gil, false).await;
    set_tier(&mesh, &mut gil, Tier::Premium).await;
    let done = index(&mesh, &gil, &run.id, IndexMode::Vector).await;
    let done = done.last().unwrap();
    assert_eq!(done.mode(), IndexMode::Text, "{done:?}");
    assert!(done.fallback_reason.contains("model"), "{done:?}");
    assert_eq!(done.modes, vec![IndexMode::Text as i32]);
    for tier in [Tier::Premium, Tier::Advanced, Tier::Free] {
        set_tier(&mesh, &mut gil, tier).await;
        for mode in [IndexMode::Vector, IndexMode::Hybrid] {
            let response = search(&mesh, &gil, &run.id, mode, false).await.unwrap();
            assert_eq!(served(&response), IndexMode::Text, "{tier:?} {response:?}");
            assert!(
                !response.fallback_reason.is_empty(),
                "{tier:?} {mode:?}: no reason"
            );
            assert!(!response.hits.is_empty(), "{tier:?}");
        }
    }
    // Premium's reason is the model itself.
    set_tier(&mesh, &mut gil, Tier::Premium).await;
    let premium = search(&mesh, &gil, &run.id, IndexMode::Vector, false)
        .await
        .unwrap();
    assert!(
        premium
            .fallback_reason
            .contains("no embedding model is installed"),
        "{}",
        premium.fallback_reason
    );
    // Nonsense is INVALID_ARGUMENT naming the field.
    for (request, field) in [
        (
            SearchRequest {
                run_id: run.id.clone(),
                query: "x".into(),
                mode: 99,
                ..SearchRequest::default()
            },
            "mode",
        ),
        (
            SearchRequest {
                run_id: run.id.clone(),
                workspace_id: run.workspace.clone().unwrap().id,
                query: "x".into(),
                ..SearchRequest::default()
            },
            "not both",
        ),
        (
            SearchRequest {
                workspace_id: "sha256:nope".into(),
                query: "x".into(),
                ..SearchRequest::default()
            },
            "workspace_id",
        ),
    ] {
        let status = mesh
            .orchestrator()
            .search(as_user(&gil, request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_without_an_indexer_says_which_endpoint_is_missing() {
    let mesh = Sandbox::builder().with_all(FRONT_DOOR).start().await.unwrap();
    let status = mesh
        .orchestrator()
        .search(mesh.request(SearchRequest {
            run_id: "r".into(),
            query: "x".into(),
            ..SearchRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("endpoints.indexer"), "{status:?}");
}
