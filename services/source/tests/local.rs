//! Copies of local directories.
#![allow(clippy::unwrap_used)]

mod common;

use std::{fs, path::Path};

use common::Env;
use reporunner_error::ServiceError;
use reporunner_source::{FetchSpec, SourceAgent, SourceSpec};
use tonic::Code;

fn spec(owner: &str, path: &Path) -> FetchSpec {
    FetchSpec {
        owner_id: owner.into(),
        source: SourceSpec::Local { path: path.into() },
        limits: None,
    }
}

/// A project with ignored, skipped and linked files.
fn make_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::create_dir_all(p.join("src")).unwrap();
    fs::write(p.join("src/main.py"), "print('hi')\n").unwrap();
    fs::write(p.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    fs::write(p.join("debug.log"), "noise").unwrap();
    fs::create_dir_all(p.join("build")).unwrap();
    fs::write(p.join("build/out.bin"), "artifact").unwrap();
    for skipped in [
        "node_modules/left-pad",
        ".git",
        ".venv/lib",
        "src/__pycache__",
        "target/debug",
    ] {
        fs::create_dir_all(p.join(skipped)).unwrap();
        fs::write(p.join(skipped).join("x"), "skip me").unwrap();
    }
    std::os::unix::fs::symlink("src/main.py", p.join("entry.py")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.join("passwd")).unwrap();
    std::os::unix::fs::symlink("../../..", p.join("src/up")).unwrap();
    dir
}

#[tokio::test]
async fn copies_respect_gitignore_and_skip_dependency_dirs() {
    let project = make_project();
    let env = Env::new();
    let fetched = env.source.fetch(spec("alice", project.path())).await.unwrap();
    let ws = Path::new(&fetched.workspace.path);
    let mut found: Vec<String> = Vec::new();
    let mut stack = vec![ws.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(ws).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            found.push(rel);
        }
    }
    found.sort();
    assert_eq!(found, [".gitignore", "entry.py", "src", "src/main.py"]);
    assert_eq!(
        fs::read_link(ws.join("entry.py")).unwrap(),
        Path::new("src/main.py")
    );
    assert_eq!(fetched.workspace.file_count, 3);
    assert_eq!(
        fetched.workspace.origin,
        fs::canonicalize(project.path()).unwrap().display().to_string()
    );
    env.assert_nothing_escaped(&["alice"]);
}

#[tokio::test]
async fn same_content_is_reused_and_owners_are_separate() {
    let project = make_project();
    let env = Env::new();
    let first = env.source.fetch(spec("alice", project.path())).await.unwrap();
    assert!(!first.reused);
    let second = env.source.fetch(spec("alice", project.path())).await.unwrap();
    assert!(second.reused);
    assert_eq!(second.workspace.id, first.workspace.id);
    assert_eq!(second.workspace.path, first.workspace.path);

    // An identical copy elsewhere has the same id.
    let twin = make_project();
    let third = env.source.fetch(spec("alice", twin.path())).await.unwrap();
    assert_eq!(third.workspace.id, first.workspace.id);
    assert!(third.reused);

    let bob = env.source.fetch(spec("bob", project.path())).await.unwrap();
    assert!(!bob.reused);
    assert_eq!(bob.workspace.id, first.workspace.id);
    assert_ne!(bob.workspace.path, first.workspace.path);
    assert!(bob.workspace.path.contains("/bob/"));

    fs::write(project.path().join("src/main.py"), "print('changed')\n").unwrap();
    let changed = env.source.fetch(spec("alice", project.path())).await.unwrap();
    assert_ne!(changed.workspace.id, first.workspace.id);
    env.assert_nothing_escaped(&["alice", "bob"]);
}

#[tokio::test]
async fn missing_disallowed_and_inside_root_paths_are_refused() {
    let env = Env::new();
    let missing = env.tmp.path().join("no-such-dir");
    let err = env.source.fetch(spec("alice", &missing)).await.unwrap_err();
    let status = err.to_status();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("no-such-dir"), "{}", status.message());

    let err = env.source.fetch(spec("alice", &env.root())).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::PermissionDenied, "{err}");

    let err = env
        .source
        .fetch(spec("alice", Path::new("relative/dir")))
        .await
        .unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument, "{err}");

    let allowed = tempfile::tempdir().unwrap();
    let env = Env::with(|c| c.allowed_local_roots = vec![allowed.path().to_path_buf()]);
    let project = make_project();
    let err = env.source.fetch(spec("alice", project.path())).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::PermissionDenied, "{err}");
    let inside = allowed.path().join("proj");
    fs::create_dir(&inside).unwrap();
    fs::write(inside.join("a.txt"), "a").unwrap();
    env.source.fetch(spec("alice", &inside)).await.unwrap();

    // A configured root that does not exist allows nothing (not everything).
    let env_missing = Env::with(|c| c.allowed_local_roots = vec!["/no/such/root".into()]);
    let err = env_missing
        .source
        .fetch(spec("alice", &inside))
        .await
        .unwrap_err();
    assert_eq!(err.to_status().code(), Code::PermissionDenied, "{err}");

    let err = env.source.fetch(spec("a/b", &inside)).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument, "{err}");
    env.assert_nothing_escaped(&["alice"]);
}

#[tokio::test]
async fn local_copies_obey_limits() {
    let project = make_project();
    let env = Env::new();
    let mut request = spec("alice", project.path());
    request.limits = Some(reporunner_proto::agents::source::v1::FetchLimits {
        max_total_bytes: 5,
        ..Default::default()
    });
    let err = env.source.fetch(request).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("limit of 5 bytes"), "{err}");
    env.assert_nothing_escaped(&[]);
}
