//! bubblewrap: a process sees and writes only its own workspace. These tests
//! need `bwrap`; without it they check that the status says so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{SERVER_PY, component, http_get, python, script, serve, serve_with, start_request};
use reporunner_proto::agents::runner::v1::ProcessState;
use reporunner_runner::SandboxMode;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn bwrap_installed() -> bool {
    std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn a_sandboxed_process_writes_only_its_workspace_and_sees_no_sibling() {
    let mut served = serve().await;
    let outside = served.tmp.path().canonicalize().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let var_tmp = format!("/var/tmp/reporunner-runner-escape-{}", std::process::id());
    let run = format!(
        r#"echo inside > inside.txt && echo wrote-inside
echo x > {outside}/escape.txt || echo outside-refused
echo x > {var_tmp} || echo root-refused
echo x > "$TMPDIR/scratch" && echo tmp-ok
cat {sibling}/secret.txt || echo sibling-hidden
ls {data} | grep -q . && echo data-visible || echo data-hidden"#,
        outside = outside.display(),
        sibling = served.sibling.display(),
        data = served.data.display(),
    );
    let status = served
        .start(start_request(&served, component("box", &run, "")))
        .await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    let text = served.log_text(&status.process_id).await;
    if !bwrap_installed() {
        assert!(!status.sandboxed);
        assert!(
            status.sandbox_note.contains("not installed"),
            "{}",
            status.sandbox_note
        );
        return;
    }
    assert!(status.sandboxed, "{}", status.sandbox_note);
    assert_eq!(ended.state(), ProcessState::Exited, "{text}");
    assert!(text.contains("wrote-inside"), "{text}");
    assert_eq!(
        std::fs::read_to_string(served.workspace.join("inside.txt")).unwrap(),
        "inside\n"
    );
    assert!(text.contains("outside-refused"), "{text}");
    assert!(!outside.join("escape.txt").exists());
    assert!(text.contains("root-refused"), "{text}");
    assert!(!std::path::Path::new(&var_tmp).exists());
    assert!(text.contains("tmp-ok"), "{text}");
    assert!(
        text.contains("sibling-hidden") && !text.contains("sibling secret"),
        "{text}"
    );
    assert!(text.contains("data-hidden"), "{text}");
}

#[tokio::test]
async fn a_sandboxed_server_is_reachable_on_its_port() {
    let mut served = serve().await;
    script(&served.workspace, "server.py", SERVER_PY);
    let run = format!("{} server.py", python());
    let status = served
        .start(start_request(&served, component("web", &run, "env:PORT")))
        .await;
    assert_eq!(status.sandboxed, bwrap_installed(), "{}", status.sandbox_note);
    let body = http_get(&status.url, WAIT);
    assert!(body.contains("200 OK"), "{body}");
    let stopped = served.stop(&status.process_id, 5).await;
    assert_eq!(stopped.state(), ProcessState::Stopped);
    // The server got SIGTERM itself and ended within the grace, so it
    // was not SIGKILLed: python reports SIGTERM as 128 + 15 through sh.
    assert!(reporunner_runner::backend::group_members(i32::try_from(status.pid).unwrap()).is_empty());
}

#[tokio::test]
async fn sandbox_off_runs_unsandboxed_and_says_so() {
    let mut served = serve_with(|c| c.sandbox = SandboxMode::Off).await;
    let status = served
        .start(start_request(&served, component("plain", "true", "")))
        .await;
    assert!(!status.sandboxed);
    assert!(
        status.sandbox_note.contains("turned off"),
        "{}",
        status.sandbox_note
    );
}

#[tokio::test]
async fn sandbox_required_without_bwrap_refuses_to_start() {
    let mut served = serve_with(|c| {
        c.sandbox = SandboxMode::Required;
        c.bwrap_binary = "/nonexistent/bwrap".into();
    })
    .await;
    let err = served
        .client
        .start(start_request(&served, component("plain", "true", "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("not installed"), "{}", err.message());
}

/// A server that ends cleanly on SIGTERM.
const GRACEFUL_PY: &str = r#"
import signal, sys, time
def bye(*_):
    print("graceful exit", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"#;

#[tokio::test]
async fn stop_lets_the_program_end_gracefully_in_and_out_of_the_sandbox() {
    for mode in [SandboxMode::Auto, SandboxMode::Off] {
        let mut served = serve_with(|c| c.sandbox = mode).await;
        script(&served.workspace, "graceful.py", GRACEFUL_PY);
        let run = format!("{} graceful.py", python());
        let status = served
            .start(start_request(&served, component("g", &run, "")))
            .await;
        served.wait_for(&status.process_id, WAIT, |_| true).await;
        // Wait until it handles signals.
        let end = std::time::Instant::now() + WAIT;
        while !served.log_text(&status.process_id).await.contains("\nready\n") {
            assert!(std::time::Instant::now() < end);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let began = std::time::Instant::now();
        let stopped = served.stop(&status.process_id, 10).await;
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{mode:?}: waited for SIGKILL"
        );
        assert_eq!(stopped.state(), ProcessState::Stopped);
        // (The exit code is the `sh -c` wrapper's, which SIGTERM ends at once.)
        let text = served.log_text(&status.process_id).await;
        assert!(
            text.contains("graceful exit"),
            "{mode:?} sandboxed={}: {text}",
            status.sandboxed
        );
    }
}

#[tokio::test]
async fn a_sandboxed_process_uses_its_install_environment_from_the_data_dir() {
    let mut served = serve().await;
    // Where the dependency agent keeps venvs: under the (hidden) data dir.
    let venv = served.data.join("dependency/envs/run-1/app/.venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    script(&venv.join("bin"), "hello-tool", "#!/bin/sh\necho tool-ran\n");
    let mut perms = std::fs::metadata(venv.join("bin/hello-tool"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(venv.join("bin/hello-tool"), perms).unwrap();
    let other = served.data.join("dependency/envs/run-2/app/.venv");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "other run\n").unwrap();
    let run = format!(
        r#"hello-tool
echo made > "$VIRTUAL_ENV/written.txt" && echo venv-writable
cat {other}/secret.txt || echo other-env-hidden"#,
        other = other.display()
    );
    let mut request = start_request(&served, component("app", &run, ""));
    request
        .env
        .insert("VIRTUAL_ENV".into(), venv.display().to_string());
    request.env.insert(
        "PATH".into(),
        format!("{}:/usr/local/bin:/usr/bin:/bin", venv.join("bin").display()),
    );
    let status = served.start(request).await;
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    let text = served.log_text(&status.process_id).await;
    assert_eq!(ended.state(), ProcessState::Exited, "{text}");
    assert!(text.contains("tool-ran"), "{text}");
    assert!(text.contains("venv-writable"), "{text}");
    assert!(venv.join("written.txt").exists());
    if bwrap_installed() {
        assert!(status.sandboxed, "{}", status.sandbox_note);
        assert!(
            text.contains("other-env-hidden") && !text.contains("other run"),
            "{text}"
        );
    }
}
