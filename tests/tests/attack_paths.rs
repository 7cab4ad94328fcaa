//! The local-path attack on `reporunner serve`, through the mesh as `serve`
//! wires it: a Free user's `CreateRun {local_path, goal: ANALYZE, index:
//! true}` once copied `/etc`, `/root` or the server's own data directory
//! (jwt.key, auth.db, every user's workspaces) into a workspace.
//!
//! The orchestrator cannot judge a path (the source agent's host and
//! settings decide), so the run is created and its fetch step fails: each
//! test asserts the run ends FAILED with the source agent's words, that the
//! source agent answers the same path with the expected code, and that
//! nothing was copied (no workspace under `<data_dir>/workspaces`, empty
//! staging).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use reporunner_node::{ServiceName, Settings};
use reporunner_proto::{
    agents::source::v1::{
        FetchRequest, LocalSource, fetch_request, source_service_client::SourceServiceClient,
    },
    orchestrator::v1::{
        CreateRunRequest, GetRunRequest, RepoSource, Run, RunGoal, RunState, repo_source::Source,
    },
};
use reporunner_tests::{FRONT_DOOR, Sandbox, fixtures_dir};
use tonic::{Code, Status};

/// The front door and the indexer (the attack asked for `index: true`),
/// with `edit` applied to the settings.
async fn mesh(edit: impl FnOnce(&mut Settings)) -> Sandbox {
    Sandbox::builder()
        .with_all(FRONT_DOOR)
        .with(ServiceName::Indexer)
        .settings(edit)
        .start()
        .await
        .unwrap()
}

/// `CreateRun {local_path: path, goal: ANALYZE, index: true}` as the
/// sandbox's Free user, waited for to its end.
async fn run_to_end(mesh: &Sandbox, path: &Path) -> Run {
    let mut client = mesh.orchestrator();
    let created = client
        .create_run(mesh.request(CreateRunRequest {
            source: Some(RepoSource {
                source: Some(Source::LocalPath(path.display().to_string())),
                r#ref: String::new(),
            }),
            goal: RunGoal::Analyze.into(),
            index: true,
            ..CreateRunRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let started = Instant::now();
    loop {
        let run = client
            .get_run(mesh.request(GetRunRequest {
                run_id: created.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap();
        if matches!(run.state(), RunState::Succeeded | RunState::Failed) {
            return run;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "{run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The run failed at its fetch step with a message containing each of `words`.
fn assert_refused(run: &Run, path: &Path, words: &[&str]) {
    assert_eq!(run.state(), RunState::Failed, "{path:?}: {run:?}");
    assert!(run.error.starts_with("fetch failed: "), "{path:?}: {}", run.error);
    for word in words {
        assert!(
            run.error.contains(word),
            "{path:?}: {word:?} not in {}",
            run.error
        );
    }
    assert!(run.workspace.is_none(), "{path:?}: {run:?}");
}

/// What the mesh's source agent answers when asked to copy `path`.
async fn source_refusal(mesh: &Sandbox, path: &Path) -> Status {
    SourceServiceClient::new(mesh.agent_channel(ServiceName::Source, "orchestrator"))
        .fetch(FetchRequest {
            owner_id: "probe".into(),
            source: Some(fetch_request::Source::Local(LocalSource {
                path: path.display().to_string(),
            })),
            limits: None,
        })
        .await
        .expect_err("the source agent copied a refused path")
}

/// The workspaces under the data directory, and what staging holds.
fn copied(mesh: &Sandbox) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let root = mesh.data_dir().join("workspaces");
    let list = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let workspaces = list(&root)
        .into_iter()
        .filter(|p| !p.ends_with(".staging"))
        .flat_map(|owner| list(&owner))
        .collect();
    (workspaces, list(&root.join(".staging")))
}

fn assert_nothing_copied(mesh: &Sandbox) {
    let (workspaces, staging) = copied(mesh);
    assert!(workspaces.is_empty(), "workspaces were made: {workspaces:?}");
    assert!(staging.is_empty(), "staging is not empty: {staging:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_allowed_root_serve_copies_no_local_path() {
    // `reporunner serve` as shipped: `source.allowed_local_roots` empty.
    let mesh = mesh(|s| s.source.allowed_local_roots.clear()).await;
    let flask = fixtures_dir().join("flask-factory");
    for path in [Path::new("/etc"), Path::new("/root/x"), flask.as_path()] {
        let run = run_to_end(&mesh, path).await;
        assert_refused(
            &run,
            path,
            &["local paths are disabled", "source.allowed_local_roots"],
        );
        let status = source_refusal(&mesh, path).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{path:?}: {status:?}");
    }
    assert_nothing_copied(&mesh);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_refused_even_below_an_allowed_root() {
    // Allowing everything, as the embedded mode does, still keeps the
    // server's own data out.
    let mesh = mesh(|s| s.source.allowed_local_roots = vec!["/".into()]).await;
    let data_dir = mesh.data_dir().to_path_buf();
    assert!(
        data_dir.join("jwt.key").is_file(),
        "the sandbox keeps its key in its data dir"
    );
    for (path, why) in [
        (data_dir.clone(), "source.forbidden_local_roots"),
        (data_dir.join("workspaces"), "inside the workspace root"),
    ] {
        let run = run_to_end(&mesh, &path).await;
        assert_refused(&run, &path, &[&path.display().to_string(), "is not allowed", why]);
        let status = source_refusal(&mesh, &path).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{path:?}: {status:?}");
    }
    assert_nothing_copied(&mesh);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_paths_inside_the_allowed_roots_are_copied() {
    let allowed = tempfile::tempdir().unwrap();
    let project = allowed.path().join("app");
    copy_dir(&fixtures_dir().join("flask-factory"), &project);
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("secret.txt"), "not yours").unwrap();
    let allowed_root = allowed.path().to_path_buf();
    let mesh = mesh(move |s| s.source.allowed_local_roots = vec![allowed_root]).await;

    let run = run_to_end(&mesh, elsewhere.path()).await;
    assert_refused(
        &run,
        elsewhere.path(),
        &[
            "is not allowed",
            "outside every allowed local root",
            "source.allowed_local_roots",
        ],
    );
    let status = source_refusal(&mesh, elsewhere.path()).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_nothing_copied(&mesh);

    // Inside the allowed root the same request reaches its goal.
    let run = run_to_end(&mesh, &project).await;
    assert_eq!(run.state(), RunState::Succeeded, "{}", run.error);
    assert!(run.plan.is_some(), "{run:?}");
    let (workspaces, staging) = copied(&mesh);
    assert_eq!(workspaces.len(), 1, "{workspaces:?}");
    assert!(staging.is_empty(), "{staging:?}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_self_is_invalid_argument_not_internal() {
    let mesh = mesh(|s| s.source.allowed_local_roots = vec!["/".into()]).await;
    let path = Path::new("/proc/self");
    let run = run_to_end(&mesh, path).await;
    assert_refused(
        &run,
        path,
        &[
            "refused the request",
            "local path /proc/self is not a repository directory",
        ],
    );
    let status = source_refusal(&mesh, path).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_nothing_copied(&mesh);
    mesh.stop().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
