//! Components served over real ports, started and inspected over gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{SERVER_PY, component, http_get, python, script, serve, start_request};
use reporunner_proto::{
    agents::runner::v1::{ProcessState, StatusRequest, StopRequest},
    common::v1::{Command as PlanCommand, ComponentKind, EnvVar, LogStream},
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn env_port_server_answers_http_on_the_allocated_port() {
    let mut served = serve().await;
    script(&served.workspace, "server.py", SERVER_PY);
    let run = format!("{} server.py", python());
    let status = served
        .start(start_request(&served, component("web", &run, "env:PORT")))
        .await;
    assert_eq!(status.state(), ProcessState::Running);
    assert_ne!(status.port, 0);
    assert_ne!(status.pid, 0);
    assert_eq!(status.url, format!("http://127.0.0.1:{}", status.port));
    let body = http_get(&status.url, WAIT);
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(
        body.contains(&format!("host=127.0.0.1 port={}", status.port)),
        "{body}"
    );
    let stopped = served.stop(&status.process_id, 2).await;
    assert_eq!(stopped.state(), ProcessState::Stopped);
}

#[tokio::test]
async fn flag_port_is_appended_and_host_any_is_rewritten() {
    let mut served = serve().await;
    script(&served.workspace, "server.py", SERVER_PY);
    let run = format!("{} server.py --host 0.0.0.0", python());
    let status = served
        .start(start_request(&served, component("api", &run, "flag:--port")))
        .await;
    let body = http_get(&status.url, WAIT);
    assert!(
        body.contains(&format!("'--host', '127.0.0.1', '--port', '{}'", status.port)),
        "{body}"
    );
    assert!(body.contains("host=127.0.0.1"), "{body}");
}

#[tokio::test]
async fn short_port_flag_replaces_the_one_in_the_command() {
    let mut served = serve().await;
    script(&served.workspace, "server.py", SERVER_PY);
    let run = format!("{} server.py -p 1", python());
    let status = served
        .start(start_request(&served, component("api", &run, "flag:-p")))
        .await;
    let body = http_get(&status.url, WAIT);
    assert!(
        body.contains(&format!("argv=['-p', '{}']", status.port)),
        "{body}"
    );
}

#[tokio::test]
async fn django_runserver_gets_host_and_port() {
    let mut served = serve().await;
    std::fs::create_dir(served.workspace.join("site")).unwrap();
    script(&served.workspace.join("site"), "manage.py", SERVER_PY);
    let run = format!("{} manage.py runserver 0.0.0.0:8000", python());
    let mut web = component("site", &run, "django-runserver");
    web.path = "site".into();
    let status = served.start(start_request(&served, web)).await;
    let body = http_get(&status.url, WAIT);
    assert!(
        body.contains(&format!("argv=['runserver', '127.0.0.1:{}']", status.port)),
        "{body}"
    );
}

#[tokio::test]
async fn env_comes_from_plan_defaults_and_request_and_port_from_the_runner() {
    let mut served = serve().await;
    let mut worker = component(
        "env",
        r#"echo "A=$A B=$B PORT=$PORT HOST=$HOST LEAK=${CARGO_MANIFEST_DIR:-unset}""#,
        "",
    );
    worker.kind = ComponentKind::Worker.into();
    worker.port = 0;
    worker.env = vec![
        EnvVar {
            name: "A".into(),
            default_value: "plan".into(),
            ..EnvVar::default()
        },
        EnvVar {
            name: "B".into(),
            default_value: "plan".into(),
            ..EnvVar::default()
        },
    ];
    let mut request = start_request(&served, worker);
    request.env.insert("B".into(), "request".into());
    request.env.insert("PORT".into(), "1".into());
    let status = served.start(request).await;
    assert_eq!(status.port, 0, "a worker gets no port");
    assert!(status.url.is_empty());
    let ended = served.wait_ended(&status.process_id, WAIT).await;
    assert_eq!(ended.state(), ProcessState::Exited);
    let text = served.log_text(&status.process_id).await;
    // The service's own environment never reaches the process.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    assert!(
        text.contains("A=plan B=request PORT=1 HOST=127.0.0.1 LEAK=unset"),
        "{text}"
    );
}

#[tokio::test]
async fn logs_follow_over_grpc_until_the_process_ends() {
    let mut served = serve().await;
    let run = "for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.2; done";
    let mut worker = component("loop", run, "");
    worker.kind = ComponentKind::Worker.into();
    let status = served.start(start_request(&served, worker)).await;
    let lines = served.logs(&status.process_id, 0, true).await;
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let outs: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream() == LogStream::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(outs, ["out 1", "out 2", "out 3"], "{texts:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.stream() == LogStream::Stderr && l.text == "err 3")
    );
    assert!(lines.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(lines.iter().all(|l| l.source == "loop"));
    // The stream ended because the process did.
    let state = served.status(&status.process_id).await.state();
    assert_eq!(state, ProcessState::Exited);
    // Resuming after a sequence gives only what came later.
    let third = lines.iter().find(|l| l.text == "out 3").unwrap().sequence;
    let rest = served.logs(&status.process_id, third, true).await;
    assert!(rest.iter().all(|l| l.sequence > third) && !rest.is_empty());
    // And everything is in the log file.
    let file = std::fs::read_to_string(served.log_file("loop")).unwrap();
    assert!(
        file.contains(" out out 2\n") && file.contains(" err err 3\n"),
        "{file}"
    );
}

#[tokio::test]
async fn a_component_without_start_command_is_a_failed_precondition() {
    let mut served = serve().await;
    let mut library = component("lib", "", "");
    library.kind = ComponentKind::Library.into();
    let err = served
        .client
        .start(start_request(&served, library.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("\"lib\""), "{}", err.message());
    library.start = None;
    let err = served
        .client
        .start(start_request(&served, library))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn bad_requests_have_their_codes() {
    let mut served = serve().await;
    let web = component("web", "true", "");
    let mut relative = start_request(&served, web.clone());
    relative.workspace_path = "workspaces/alice/one".into();
    assert_eq!(
        served.client.start(relative).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut missing = start_request(&served, web.clone());
    missing.workspace_path = served.workspace.join("nope").display().to_string();
    let err = served.client.start(missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut escaping = web.clone();
    escaping.start = Some(PlanCommand {
        run: "true".into(),
        working_dir: "../two".into(),
        watch_mode: false,
    });
    let err = served
        .client
        .start(start_request(&served, escaping))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut bad_run = start_request(&served, web.clone());
    bad_run.run_id = "../x".into();
    assert_eq!(
        served.client.start(bad_run).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut bad_binding = web.clone();
    bad_binding.port_binding = "flag:$(reboot)".into();
    let err = served
        .client
        .start(start_request(&served, bad_binding))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    for code in [
        served
            .client
            .status(StatusRequest {
                process_id: "proc-nope".into(),
            })
            .await
            .unwrap_err()
            .code(),
        served
            .client
            .stop(StopRequest {
                process_id: "proc-nope".into(),
                grace_seconds: 0,
            })
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }
}

#[tokio::test]
async fn a_component_runs_once_per_run() {
    let mut served = serve().await;
    let status = served
        .start(start_request(&served, component("web", "sleep 30", "")))
        .await;
    let err = served
        .client
        .start(start_request(&served, component("web", "sleep 30", "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&status.process_id));
    served.stop(&status.process_id, 1).await;
    let again = served
        .start(start_request(&served, component("web", "sleep 30", "")))
        .await;
    assert_ne!(again.process_id, status.process_id);
    served.stop(&again.process_id, 1).await;
}

#[tokio::test]
async fn ports_come_from_the_configured_range() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut served = common::serve_with(|c| {
        c.port_range_start = free;
        c.port_range_end = free;
    })
    .await;
    let status = served
        .start(start_request(&served, component("web", "sleep 30", "")))
        .await;
    assert_eq!(status.port, u32::from(free));
    let mut other = start_request(&served, component("web2", "sleep 30", ""));
    other.run_id = "run-2".into();
    // The one port is free again (nothing listens), so it is handed out again;
    // hold it to see the range run out.
    let _held = std::net::TcpListener::bind(("127.0.0.1", free)).unwrap();
    let err = served.client.start(other).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    served.stop(&status.process_id, 1).await;
}

#[tokio::test]
async fn the_ring_keeps_the_newest_lines_and_the_file_keeps_them_all() {
    let mut served = common::serve_with(|c| c.log_buffer_lines = 100).await;
    let mut worker = component("chatty", "seq 1 20000", "");
    worker.kind = ComponentKind::Worker.into();
    let status = served.start(start_request(&served, worker)).await;
    served.wait_ended(&status.process_id, WAIT).await;
    let lines = served.logs(&status.process_id, 0, false).await;
    assert_eq!(lines.len(), 100);
    assert!(lines.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
    let last_out = lines
        .iter()
        .rev()
        .find(|l| l.stream() == LogStream::Stdout)
        .unwrap();
    assert_eq!(last_out.text, "20000");
    // Everything reached the file (the writer flushes shortly after).
    let end = std::time::Instant::now() + WAIT;
    loop {
        let file = std::fs::read_to_string(served.log_file("chatty")).unwrap_or_default();
        let outs = file.lines().filter(|l| l.contains(" out ")).count();
        if outs == 20000 {
            assert!(file.contains(" out 1\n") && file.contains(" out 20000\n"));
            break;
        }
        assert!(std::time::Instant::now() < end, "{outs} lines in the file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
