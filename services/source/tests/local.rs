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

/// Without `.git`, `.gitignore` means nothing (as to git): a copied tree
/// keeps what its `.gitignore` matches, as its archive would. uthash tracks
/// `tests/keystat.c` under a `keystat.*` rule, and its tests need it.
#[tokio::test]
async fn a_tree_without_git_keeps_what_its_gitignore_matches() {
    let project = make_project();
    fs::remove_dir_all(project.path().join(".git")).unwrap();
    fs::write(project.path().join("keystat.c"), "int main(void) { return 0; }\n").unwrap();
    fs::write(project.path().join(".gitignore"), "*.log\nbuild/\nkeystat.*\n").unwrap();
    let env = Env::local();
    let fetched = env.source.fetch(spec("alice", project.path())).await.unwrap();
    let ws = Path::new(&fetched.workspace.path);
    for kept in ["keystat.c", "debug.log", "build/out.bin", "src/main.py"] {
        assert!(ws.join(kept).is_file(), "{kept} is kept");
    }
    // Dependency and build directories are still left out.
    for skipped in ["node_modules", ".venv", "target", "src/__pycache__"] {
        assert!(!ws.join(skipped).exists(), "{skipped} is skipped");
    }
}

#[tokio::test]
async fn copies_respect_gitignore_and_skip_dependency_dirs() {
    let project = make_project();
    let env = Env::local();
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
    let env = Env::local();
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
    let env = Env::local();
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
    let env = Env::local();
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

/// A stand-in for the server's data directory: a key and a user database.
fn make_data_dir(at: &Path) {
    fs::create_dir_all(at.join("auth")).unwrap();
    fs::write(at.join("jwt.key"), "secret").unwrap();
    fs::write(at.join("auth/auth.db"), "users").unwrap();
}

#[tokio::test]
async fn no_allowed_root_means_no_local_path() {
    let project = make_project();
    // `allowed_local_roots` left empty, as `reporunner serve` ships.
    let env = Env::new();
    for path in [project.path(), Path::new("/etc"), Path::new("/no/such/dir")] {
        let status = env
            .source
            .fetch(spec("alice", path))
            .await
            .unwrap_err()
            .to_status();
        assert_eq!(status.code(), Code::FailedPrecondition, "{path:?}: {status:?}");
        assert!(
            status.message().contains("source.allowed_local_roots"),
            "{path:?}: {status:?}"
        );
    }
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn forbidden_roots_are_refused_even_below_an_allowed_root() {
    let data = tempfile::tempdir().unwrap();
    make_data_dir(data.path());
    let links = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(data.path().join("auth"), links.path().join("innocent")).unwrap();
    let env = Env::with(|c| {
        c.allowed_local_roots = vec!["/".into()];
        c.forbidden_local_roots = vec![data.path().to_path_buf()];
    });
    for path in [
        data.path().to_path_buf(),
        data.path().join("auth"),
        // Through a symlink elsewhere: refused once resolved.
        links.path().join("innocent"),
    ] {
        let status = env
            .source
            .fetch(spec("alice", &path))
            .await
            .unwrap_err()
            .to_status();
        assert_eq!(status.code(), Code::PermissionDenied, "{path:?}: {status:?}");
        assert!(
            status.message().contains(&path.display().to_string())
                && status.message().contains("source.forbidden_local_roots"),
            "{path:?}: {status:?}"
        );
    }
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn a_parent_of_a_forbidden_root_is_copied_without_it() {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join("project")).unwrap();
    fs::write(home.path().join("project/a.txt"), "a").unwrap();
    make_data_dir(&home.path().join("data"));
    let env = Env::with(|c| {
        c.allowed_local_roots = vec![home.path().to_path_buf()];
        c.forbidden_local_roots = vec![home.path().join("data")];
    });
    let fetched = env.source.fetch(spec("alice", home.path())).await.unwrap();
    let ws = Path::new(&fetched.workspace.path);
    assert!(ws.join("project/a.txt").is_file());
    assert!(!ws.join("data").exists(), "the forbidden root was copied");
    assert_eq!(fetched.workspace.file_count, 1);
}

#[tokio::test]
async fn proc_sys_and_dev_are_not_repository_directories() {
    let links = tempfile::tempdir().unwrap();
    let me = links.path().join("me");
    std::os::unix::fs::symlink("/proc/self", &me).unwrap();
    let env = Env::with(|c| c.allowed_local_roots = vec!["/".into()]);
    for path in [
        Path::new("/proc/self"),
        Path::new("/proc"),
        Path::new("/sys"),
        Path::new("/dev"),
        Path::new("/dev/shm"),
        &me,
    ] {
        let status = env
            .source
            .fetch(spec("alice", path))
            .await
            .unwrap_err()
            .to_status();
        assert_eq!(status.code(), Code::InvalidArgument, "{path:?}: {status:?}");
        assert_eq!(
            status.message(),
            format!("local path {} is not a repository directory", path.display())
        );
    }
    // Not even where no local path is allowed: the answer is the same.
    let status = Env::new()
        .source
        .fetch(spec("alice", Path::new("/proc/self")))
        .await
        .unwrap_err()
        .to_status();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    env.assert_nothing_escaped(&[]);
}

/// A local copy's content date is its newest file's modification time.
#[tokio::test]
async fn a_copy_is_dated_by_its_newest_file() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    fs::write(p.join("old.py"), "x = 1\n").unwrap();
    fs::write(p.join("new.py"), "y = 2\n").unwrap();
    for (file, at) in [("old.py", "@1500000000"), ("new.py", "@1600000000")] {
        let status = std::process::Command::new("touch")
            .args(["-m", "-d", at])
            .arg(p.join(file))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let env = Env::local();
    let fetched = env.source.fetch(spec("alice", p)).await.unwrap();
    assert_eq!(
        fetched.workspace.content_time.map(|t| t.seconds),
        Some(1_600_000_000)
    );
}
