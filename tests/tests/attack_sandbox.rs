//! The sandbox attacks on `reporunner serve`, through the mesh as `serve`
//! wires it, as a Free user:
//! - a repository whose install script (npm preinstall), build script,
//!   setup command (Procfile `release:`), start command and test command
//!   each try to read the signing keys, the server's environment (with a
//!   `REPORUNNER_ADMIN__PASSWORD` set), `/root`, `/etc/shadow` and a
//!   root-only file the test plants where the sandbox can see it, and to
//!   write outside the workspace. Nothing may leak into any log or file, no
//!   write may land, and every step's processes must run under a host uid
//!   other than 0 (seen from outside, in `/proc/<pid>/status`);
//! - a bounded fork bomb and a 4 GiB allocation at start, each stopped by
//!   the Free tier's limits with a notice naming the limit.
//!
//! The server's environment is this test process's: the first test runs
//! itself again as a child with the secret variables set (the workspace
//! forbids the `unsafe` `set_var`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{create, events, every_service, get};
use reporunner_proto::orchestrator::v1::{RunGoal, RunState, run_event::Event};

const ADMIN_PASSWORD: &str = "admin-password-that-must-never-leak-7f3a";
const PLANTED: &str = "root-only-planted-secret-5c1e";
const INNER: &str = "REPORUNNER_ATTACK_INNER";

fn sandbox_usable() -> bool {
    let bwrap = reporunner_host::which("bwrap", &std::env::var_os("PATH").unwrap_or_default()).is_some();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if bwrap && root {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "the sandbox attack tests need root and bubblewrap (bwrap: {bwrap}, root: {root})"
    );
    eprintln!("skipped: needs root and bubblewrap");
    false
}

/// The uids of processes whose command line holds `marker`, by step, seen
/// from outside every sandbox until `stop`.
fn watch_uids(marker: &'static str, stop: Arc<AtomicBool>) -> Arc<Mutex<BTreeMap<String, BTreeSet<u32>>>> {
    let seen: Arc<Mutex<BTreeMap<String, BTreeSet<u32>>>> = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let path = entry.path();
                let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
                    continue;
                };
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let Some(at) = args.iter().position(|a| a == marker) else {
                    continue;
                };
                let Some(step) = args.get(at + 1) else {
                    continue;
                };
                let Ok(status) = std::fs::read_to_string(path.join("status")) else {
                    continue;
                };
                let uid = status
                    .lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|u| u.parse::<u32>().ok());
                if let Some(uid) = uid {
                    out.lock().unwrap().entry(step.clone()).or_default().insert(uid);
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    seen
}

#[test]
fn every_step_of_a_hostile_repository_is_confined() {
    if !sandbox_usable() {
        return;
    }
    // Again, as a child whose environment holds the server's secrets.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hostile_repository_inner", "--ignored", "--nocapture"])
        .env(INNER, "1")
        .env("REPORUNNER_ADMIN__PASSWORD", ADMIN_PASSWORD)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the hostile repository's run broke out (see above)"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by every_step_of_a_hostile_repository_is_confined, with the server's secrets set"]
async fn hostile_repository_inner() {
    if std::env::var(INNER).as_deref() != Ok("1") {
        eprintln!("skipped: runs only through every_step_of_a_hostile_repository_is_confined");
        return;
    }
    assert_eq!(
        std::env::var("REPORUNNER_ADMIN__PASSWORD").as_deref(),
        Ok(ADMIN_PASSWORD)
    );
    // A root-owned 0600 file where every step can see it (the root is
    // bound read-only), and a directory outside the workspace.
    let planted_dir = tempfile::Builder::new()
        .prefix("rr-attack-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(planted_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = planted_dir.path().join("secret");
    std::fs::write(&planted, PLANTED).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outside = planted_dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mesh = every_service().start().await.unwrap();
    let data = mesh.data_dir().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let uids = watch_uids("probe.sh", stop.clone());
    let mut client = mesh.orchestrator();
    let env = [
        ("PROBE_DATA_DIR", data.display().to_string()),
        ("PROBE_SECRET", planted.display().to_string()),
        ("PROBE_OUTSIDE", outside.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = create(&mesh, &mut client, "attack-node", RunGoal::StartAndTest, &env).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let run = loop {
        let run = get(&mesh, &mut client, &run.id).await;
        let tested = run.state() == RunState::Running && !run.test_results.is_empty();
        let over = matches!(
            run.state(),
            RunState::Failed | RunState::Stopped | RunState::Interrupted | RunState::Succeeded
        );
        if tested || over {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not end: {run:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let events = events(&mesh, &mut client, &run.id, true).await;
    let log: String = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Log(line)) => Some(format!("[{}] {}\n", line.source, line.text)),
            Some(other) => Some(format!("{other:?}\n")),
            None => None,
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(run.state(), RunState::Running, "{}\n{log}", run.error);

    // Each step ran its probe, which left what it saw in the workspace.
    let probes = find_probe_logs(&data.join("workspaces"));
    for step in ["install", "build", "setup", "start", "test"] {
        assert!(
            probes.contains_key(step),
            "no probe ran in the {step} step: {:?}\n{log}",
            probes.keys()
        );
        assert!(
            probes[step].contains(&format!("probe {step} done")),
            "{}",
            probes[step]
        );
    }
    // Nothing secret in any log or probe file.
    let jwt_key = std::fs::read(data.join("jwt.key")).unwrap();
    let jwt_key = String::from_utf8_lossy(&jwt_key[..jwt_key.len().min(24)]).into_owned();
    let shadow_first = std::fs::read_to_string("/etc/shadow")
        .unwrap()
        .lines()
        .next()
        .unwrap_or("root:")
        .to_owned();
    let everything = format!(
        "{log}\n{}",
        probes.values().cloned().collect::<Vec<_>>().join("\n")
    );
    for (what, secret) in [
        ("the signing key", jwt_key.as_str()),
        ("the admin password", ADMIN_PASSWORD),
        ("the planted root-only file", PLANTED),
        ("/etc/shadow", shadow_first.as_str()),
        ("the server's cargo environment", "CARGO_MANIFEST_DIR"),
        ("the test harness's variable", INNER),
    ] {
        assert!(!secret.is_empty());
        assert!(!everything.contains(secret), "{what} leaked:\n{everything}");
    }
    assert!(
        !everything.contains("WROTE "),
        "a write outside the workspace landed:\n{everything}"
    );
    // And the writes really are not there.
    for step in ["install", "build", "setup", "start", "test"] {
        for path in [
            PathBuf::from(format!("/etc/pwned-{step}")),
            data.join(format!("pwned-{step}")),
            PathBuf::from(format!("/root/pwned-{step}")),
            outside.join(format!("pwned-{step}")),
        ] {
            assert!(!path.exists(), "{} was written", path.display());
        }
    }
    // Seen from outside: install, start and test (and build and setup)
    // ran under a host uid other than 0.
    let uids = uids.lock().unwrap().clone();
    for step in ["install", "build", "setup", "start", "test"] {
        let seen = uids
            .get(step)
            .unwrap_or_else(|| panic!("no {step} process seen in /proc: {uids:?}"));
        assert!(seen.iter().all(|uid| *uid != 0), "{step} ran as root: {seen:?}");
        assert!(
            seen.iter()
                .any(|uid| probes[step].contains(&format!("uid={uid}"))),
            "{}",
            probes[step]
        );
    }
    eprintln!(
        "confined: every step ran as {uids:?}; what the start step saw:\n{}",
        probes["start"]
    );
    mesh.stop().await.unwrap();
}

/// `.probe/<step>.log` files under `root`, by step.
fn find_probe_logs(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut budget = 100_000;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            budget -= 1;
            assert!(budget > 0, "too many files under {}", root.display());
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && path.file_name().is_some_and(|n| n != "node_modules") {
                stack.push(path);
            } else if kind.is_file()
                && path
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n == ".probe")
                && let Some(step) = path.file_stem()
            {
                found.insert(
                    step.to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                );
            }
        }
    }
    found
}

/// Starts `attack-limits` in `mode` and waits for the run to fail; its
/// notices and error.
async fn run_into_limit(mode: &str) -> (RunState, Vec<String>, String) {
    let mesh = every_service().start().await.unwrap();
    let mut client = mesh.orchestrator();
    let run = create(
        &mesh,
        &mut client,
        "attack-limits",
        RunGoal::Start,
        &[("LIMITS_MODE", mode)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let run = loop {
        let run = get(&mesh, &mut client, &run.id).await;
        if matches!(
            run.state(),
            RunState::Failed | RunState::Running | RunState::Succeeded
        ) {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not end: {run:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let notices = events(&mesh, &mut client, &run.id, false)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::Notice(text)) => Some(text),
            _ => None,
        })
        .collect();
    mesh.stop().await.unwrap();
    (run.state(), notices, run.error)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bounded_fork_bomb_is_stopped_by_the_process_limit() {
    if !sandbox_usable() {
        return;
    }
    let (state, notices, error) = run_into_limit("fork").await;
    assert_eq!(state, RunState::Failed, "{error}");
    assert!(!error.contains("forked all 2000"), "{error}");
    assert!(
        notices.iter().any(|n| n.contains("processes limit (512)")),
        "no notice names the process limit: {notices:?}\n{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4_gib_allocation_is_stopped_by_the_memory_limit() {
    if !sandbox_usable() {
        return;
    }
    let (state, notices, error) = run_into_limit("alloc").await;
    assert_eq!(state, RunState::Failed, "{error}");
    assert!(!error.contains("allocated"), "{error}");
    assert!(
        notices.iter().any(|n| n.contains("memory limit (2 GiB)")),
        "no notice names the memory limit: {notices:?}\n{error}"
    );
}
