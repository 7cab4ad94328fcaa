//! Restarts, run time limits, stopping whole process groups, and rlimits.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{component, limits, python, serve, start_request};
use reporunner_proto::{
    agents::runner::v1::{ProcessState, RestartPolicy},
    common::v1::LogStream,
};
use reporunner_runner::backend::group_members;

const WAIT: Duration = Duration::from_secs(20);

fn pgid(pid: u32) -> i32 {
    i32::try_from(pid).unwrap()
}

/// Waits until the group has at least `n` live members.
async fn wait_members(pgid: i32, n: usize) -> Vec<i32> {
    let end = Instant::now() + WAIT;
    loop {
        let members = group_members(pgid);
        if members.len() >= n {
            return members;
        }
        assert!(Instant::now() < end, "group {pgid} has {members:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_failure_restarts_up_to_max_restarts_and_sequences_go_on() {
    let mut served = serve().await;
    let mut request = start_request(&served, component("flaky", "echo attempt; exit 3", ""));
    request.restart_policy = RestartPolicy::OnFailure.into();
    request.max_restarts = 2;
    let status = served.start(request).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(ended.state(), ProcessState::Failed);
    assert_eq!(ended.restarts, 2);
    assert_eq!(ended.exit_code, 3);
    let lines = served.logs(&status.process_id, 0, false).await;
    let attempts: Vec<u64> = lines
        .iter()
        .filter(|l| l.stream() == LogStream::Stdout && l.text == "attempt")
        .map(|l| l.sequence)
        .collect();
    assert_eq!(attempts.len(), 3, "{lines:?}");
    assert!(attempts.windows(2).all(|w| w[0] < w[1]));
    assert!(lines.iter().any(|l| l.text.contains("restart 2 of 2")));
    assert!(lines.last().unwrap().text.contains("no restarts left"));
}

#[tokio::test]
async fn on_failure_does_not_restart_a_clean_exit_but_always_does() {
    let mut served = serve().await;
    let mut request = start_request(&served, component("once", "echo done", ""));
    request.restart_policy = RestartPolicy::OnFailure.into();
    let status = served.start(request).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(
        (ended.state(), ended.restarts, ended.exit_code),
        (ProcessState::Exited, 0, 0)
    );

    let mut request = start_request(&served, component("again", "echo done", ""));
    request.restart_policy = RestartPolicy::Always.into();
    request.max_restarts = 1;
    let status = served.start(request).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!((ended.state(), ended.restarts), (ProcessState::Exited, 1));
}

#[tokio::test]
async fn max_runtime_kills_the_group() {
    let mut served = serve().await;
    let mut request = start_request(&served, component("slow", "sleep 1000 & sleep 1000; wait", ""));
    request.limits = limits(|l| l.max_runtime_seconds = 1);
    request.restart_policy = RestartPolicy::Always.into();
    let began = Instant::now();
    let status = served.start(request).await;
    wait_members(pgid(status.pid), 2).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(ended.state(), ProcessState::Failed);
    assert_eq!(ended.restarts, 0, "the run time limit is final");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(group_members(pgid(status.pid)).is_empty());
    let text = served.log_text(&status.process_id).await;
    assert!(text.contains("run time limit"), "{text}");
}

#[tokio::test]
async fn stop_kills_every_member_of_the_group_and_is_idempotent() {
    let mut served = serve().await;
    let status = served
        .start(start_request(
            &served,
            component("forks", "sleep 1000 & sleep 1000 & wait", ""),
        ))
        .await;
    let members = wait_members(pgid(status.pid), 3).await;
    assert!(members.len() >= 3, "{members:?}");
    let stopped = served.stop(&status.process_id, 2).await;
    assert_eq!(stopped.state(), ProcessState::Stopped);
    assert_eq!(stopped.pid, 0);
    assert!(
        group_members(pgid(status.pid)).is_empty(),
        "left: {:?}",
        group_members(pgid(status.pid))
    );
    for pid in members {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "{pid} lives: {stat}");
    }
    let again = served.stop(&status.process_id, 2).await;
    assert_eq!(again, stopped);
}

#[tokio::test]
async fn members_that_ignore_sigterm_are_killed_after_the_grace() {
    let mut served = serve().await;
    let status = served
        .start(start_request(
            &served,
            component("stubborn", "trap '' TERM; sleep 1000 & wait; sleep 1000", ""),
        ))
        .await;
    wait_members(pgid(status.pid), 2).await;
    let began = Instant::now();
    let stopped = served.stop(&status.process_id, 1).await;
    let took = began.elapsed();
    assert_eq!(stopped.state(), ProcessState::Stopped);
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL came before the grace ended: {took:?}"
    );
    let left: Vec<String> = group_members(pgid(status.pid))
        .into_iter()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn open_file_limit_is_enforced() {
    let mut served = serve().await;
    let open = format!(
        r#"{} -c "fs = [open('/dev/null') for _ in range(200)]; print('opened', len(fs))""#,
        python()
    );
    let mut limited = start_request(&served, component("files", &open, ""));
    limited.limits = limits(|l| l.max_open_files = 32);
    let status = served.start(limited).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(ended.state(), ProcessState::Failed);
    let text = served.log_text(&status.process_id).await;
    assert!(text.contains("Too many open files"), "{text}");
    // The same program without the limit opens them all.
    let mut free = start_request(&served, component("files2", &open, ""));
    free.limits = limits(|l| l.max_open_files = 1024);
    let status = served.start(free).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(ended.state(), ProcessState::Exited);
    assert!(served.log_text(&status.process_id).await.contains("opened 200"));
}

#[tokio::test]
async fn memory_limit_is_enforced() {
    let mut served = serve().await;
    // Touch the memory so that it counts wherever it is measured.
    let grab = format!(
        r#"{} -c "b = bytearray(512 * 1024 * 1024); b[::4096] = b'x' * (len(b) // 4096); print('got it')""#,
        python()
    );
    let mut limited = start_request(&served, component("mem", &grab, ""));
    limited.limits = limits(|l| l.memory_bytes = 128 * 1024 * 1024);
    let status = served.start(limited).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(ended.state(), ProcessState::Failed);
    let text = served.log_text(&status.process_id).await;
    assert!(text.contains("MemoryError"), "{text}");
    assert!(!text.contains("\ngot it\n"), "{text}");
}

#[tokio::test]
async fn dropping_the_runner_kills_its_process_groups() {
    use reporunner_runner::{LocalRunner, Runner, RunnerConfig, StartSpec};
    let served = serve().await;
    let config = RunnerConfig {
        cgroup_parent: None,
        ..RunnerConfig::default()
    }
    .resolve(&served.data.join("second"));
    let runner = LocalRunner::new(config).unwrap();
    let status = runner
        .start(StartSpec {
            run_id: "run-9".into(),
            workspace_path: served.workspace.clone(),
            component: component("bg", "sleep 1000 & sleep 1000 & wait", ""),
            env: Default::default(),
            limits: None,
            restart_policy: RestartPolicy::Never,
            max_restarts: 0,
            bind_host: String::new(),
            owner_id: String::new(),
        })
        .await
        .unwrap();
    wait_members(pgid(status.pid), 3).await;
    drop(runner);
    let end = Instant::now() + WAIT;
    while !group_members(pgid(status.pid)).is_empty() {
        assert!(Instant::now() < end, "{:?}", group_members(pgid(status.pid)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
