//! Shallow clones of a real repository over file:// URLs.
#![allow(clippy::unwrap_used)]

mod common;

use std::{fs, path::Path};

use common::{Env, git};
use reporunner_error::ServiceError;
use reporunner_proto::agents::source::v1::FetchLimits;
use reporunner_source::{FetchSpec, SourceAgent, SourceSpec};
use tonic::Code;

/// A repository with two commits on main (tagged v1 at the first), and a
/// branch `feature` with a third. Returns (dir, first sha, second sha, feature sha).
fn repo() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    git(r, &["init", "-q"]);
    fs::write(r.join("README.md"), "v1\n").unwrap();
    fs::write(r.join(".gitignore"), "build/\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", r.join("evil-link")).unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "first"]);
    let first = git(r, &["rev-parse", "HEAD"]);
    git(r, &["tag", "v1"]);
    fs::write(r.join("README.md"), "v2\n").unwrap();
    git(r, &["commit", "-q", "-am", "second"]);
    let second = git(r, &["rev-parse", "HEAD"]);
    git(r, &["checkout", "-q", "-b", "feature"]);
    fs::write(r.join("feature.txt"), "new\n").unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "feature"]);
    let feature = git(r, &["rev-parse", "HEAD"]);
    git(r, &["checkout", "-q", "main"]);
    (dir, first, second, feature)
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn spec(url: &str, reference: &str) -> FetchSpec {
    FetchSpec {
        owner_id: "alice".into(),
        source: SourceSpec::Git {
            url: url.into(),
            reference: reference.into(),
        },
        limits: None,
    }
}

fn readme(path: &str) -> String {
    fs::read_to_string(Path::new(path).join("README.md")).unwrap()
}

#[tokio::test]
async fn clones_default_branch_branch_tag_and_commit() {
    let (repo, first, second, feature) = repo();
    let env = Env::new();
    let url = url(repo.path());

    let main = env.source.fetch(spec(&url, "")).await.unwrap();
    assert_eq!(main.workspace.commit, second);
    // The commit's date is the content's date.
    let committed: i64 = git(repo.path(), &["log", "-1", "--format=%ct", &second])
        .parse()
        .unwrap();
    assert_eq!(main.workspace.content_time.map(|t| t.seconds), Some(committed));
    assert_eq!(readme(&main.workspace.path), "v2\n");
    assert_eq!(main.workspace.origin, url);
    let path = Path::new(&main.workspace.path);
    assert!(!path.join(".git").exists(), "the workspace holds no .git");
    assert!(
        fs::symlink_metadata(path.join("evil-link")).is_err(),
        "escaping symlinks are dropped"
    );
    assert_eq!(main.workspace.file_count, 2);

    let branch = env.source.fetch(spec(&url, "feature")).await.unwrap();
    assert_eq!(branch.workspace.commit, feature);
    assert!(Path::new(&branch.workspace.path).join("feature.txt").exists());
    assert_eq!(branch.workspace.origin, format!("{url}#feature"));

    let tag = env.source.fetch(spec(&url, "v1")).await.unwrap();
    assert_eq!(tag.workspace.commit, first);
    assert_eq!(readme(&tag.workspace.path), "v1\n");

    let by_sha = env.source.fetch(spec(&url, &first)).await.unwrap();
    assert_eq!(by_sha.workspace.commit, first);
    assert_eq!(by_sha.workspace.id, tag.workspace.id, "same tree, same id");
    assert!(by_sha.reused);

    let again = env.source.fetch(spec(&url, "")).await.unwrap();
    assert!(again.reused);
    assert_eq!(again.workspace.id, main.workspace.id);
    env.assert_nothing_escaped(&["alice"]);
}

#[tokio::test]
async fn a_missing_ref_or_repository_is_not_found() {
    let (repo, ..) = repo();
    let env = Env::new();
    let err = env
        .source
        .fetch(spec(&url(repo.path()), "no-such-branch"))
        .await
        .unwrap_err();
    let status = err.to_status();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("no-such-branch"),
        "{}",
        status.message()
    );

    let missing_sha = "0123456789abcdef0123456789abcdef01234567";
    let err = env
        .source
        .fetch(spec(&url(repo.path()), missing_sha))
        .await
        .unwrap_err();
    assert_eq!(err.to_status().code(), Code::NotFound, "{err}");

    let gone = repo.path().join("nope");
    let err = env.source.fetch(spec(&url(&gone), "")).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::NotFound, "{err}");
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn file_urls_are_refused_unless_configured() {
    let (repo, ..) = repo();
    let env = Env::with(|c| c.allow_file_urls = false);
    for url in [url(repo.path()), repo.path().display().to_string()] {
        let err = env.source.fetch(spec(&url, "")).await.unwrap_err();
        let status = err.to_status();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("not allowed"), "{}", status.message());
    }
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn dangerous_urls_and_refs_never_reach_git() {
    // A "git" that records each start: it must never be started.
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let started = bin.path().join("started");
    let fake = bin.path().join("git");
    fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", started.display()),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let env = Env::with(|c| c.git_binary = fake.clone());
    for (url, reference) in [
        ("ext::sh -c touch% /tmp/pwned", ""),
        ("--upload-pack=touch /tmp/pwned", ""),
        ("file:///tmp/x", "--upload-pack=x"),
    ] {
        let err = env.source.fetch(spec(url, reference)).await.unwrap_err();
        assert_eq!(err.to_status().code(), Code::InvalidArgument, "{url}: {err}");
    }
    assert!(
        !started.exists(),
        "git was started: {}",
        fs::read_to_string(&started).unwrap_or_default()
    );
    env.assert_nothing_escaped(&[]);

    // The same fake does record a fetch that is allowed, so its silence above
    // means something.
    let _ = env.source.fetch(spec("file:///tmp/x", "")).await;
    assert!(started.exists(), "the recording git was not used");
}

#[tokio::test]
async fn a_checkout_over_the_limits_is_refused() {
    let (repo, ..) = repo();
    let env = Env::new();
    let mut request = spec(&url(repo.path()), "");
    request.limits = Some(FetchLimits {
        max_files: 1,
        ..FetchLimits::default()
    });
    let err = env.source.fetch(request).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("limit of 1 files"), "{err}");
    env.assert_nothing_escaped(&[]);
}

/// A "git" that starts a helper and hangs, standing in for a remote that
/// never answers; the helper's pid is written to `<dir>/helper.pid`.
fn hanging_git(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let fake = dir.join("git");
    let script = format!(
        "#!/bin/sh\nsleep 30 &\necho $! > {}/helper.pid\nwait\n",
        dir.display()
    );
    fs::write(&fake, script).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead; it waits only for its (new) parent to reap it.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_hanging_remote_times_out_and_its_helpers_die() {
    let bin = tempfile::tempdir().unwrap();
    let fake = hanging_git(bin.path());
    let env = Env::with(|c| c.git_binary = fake.clone());
    let mut request = spec("https://example.invalid/repo.git", "");
    request.limits = Some(FetchLimits {
        timeout_seconds: 1,
        ..FetchLimits::default()
    });
    let started = std::time::Instant::now();
    let err = env.source.fetch(request).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let pid = fs::read_to_string(bin.path().join("helper.pid")).unwrap();
    let pid = pid.trim();
    let mut waited = 0;
    while alive(pid) && waited < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(!alive(pid), "git's helper {pid} outlived the timeout");
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn fetches_beyond_the_concurrency_limit_wait_their_turn() {
    let bin = tempfile::tempdir().unwrap();
    let fake = hanging_git(bin.path());
    let env = Env::with(|c| {
        c.git_binary = fake.clone();
        c.max_concurrent_fetches = 1;
        c.allowed_local_roots = vec![std::env::temp_dir()];
    });
    let mut hanging = spec("https://example.invalid/repo.git", "");
    hanging.limits = Some(FetchLimits {
        timeout_seconds: 3,
        ..FetchLimits::default()
    });
    let source = std::sync::Arc::clone(&env.source);
    let first = tokio::spawn(async move { source.fetch(hanging).await });
    // Let the first fetch take the only permit.
    while !bin.path().join("helper.pid").exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let project = tempfile::tempdir().unwrap();
    fs::write(project.path().join("a.txt"), "a").unwrap();
    let local = |timeout_seconds| FetchSpec {
        owner_id: "alice".into(),
        source: SourceSpec::Local {
            path: project.path().into(),
        },
        limits: Some(FetchLimits {
            timeout_seconds,
            ..FetchLimits::default()
        }),
    };
    let err = env.source.fetch(local(1)).await.unwrap_err();
    assert_eq!(err.to_status().code(), Code::DeadlineExceeded, "{err}");
    // Once the first fetch gives up, the permit is free again.
    let first = first.await.unwrap().unwrap_err();
    assert_eq!(first.to_status().code(), Code::DeadlineExceeded);
    env.source.fetch(local(5)).await.unwrap();
}
