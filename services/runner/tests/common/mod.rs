//! Shared helpers: a runner served over gRPC on loopback, with a data
//! directory and two sibling workspaces in a tempdir outside /tmp.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use reporunner_proto::{
    agents::runner::v1::{
        LogsRequest, ProcessState, ProcessStatus, ResourceLimits, RestartPolicy, StartRequest, StatusRequest,
        StopRequest, runner_service_client::RunnerServiceClient,
    },
    common::v1::{Command as PlanCommand, Component, ComponentKind, LogLine},
};
use reporunner_runner::{LocalRunner, RunnerConfig, RunnerGrpc};
use reporunner_server::{CancellationToken, GrpcServer};
use tonic::transport::Channel;

pub struct Served {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    /// `<tmp>/workspaces/alice/one`: where components run.
    pub workspace: PathBuf,
    /// `<tmp>/workspaces/alice/two`: a sibling the sandbox must hide.
    pub sibling: PathBuf,
    pub runner: Arc<LocalRunner>,
    pub client: RunnerServiceClient<Channel>,
    shutdown: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn serve() -> Served {
    serve_with(|_| {}).await
}

pub async fn serve_with(tweak: impl FnOnce(&mut RunnerConfig)) -> Served {
    // Outside /tmp, so that the sandbox's own /tmp does not hide these by chance.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let data = root.join("data");
    let workspace = root.join("workspaces/alice/one");
    let sibling = root.join("workspaces/alice/two");
    for dir in [&data, &workspace, &sibling] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(sibling.join("secret.txt"), "sibling secret\n").unwrap();
    let mut config = RunnerConfig {
        restart_backoff_initial: Duration::from_millis(50),
        restart_backoff_max: Duration::from_millis(200),
        cgroup_parent: None,
        ..RunnerConfig::default()
    };
    tweak(&mut config);
    let config = config.resolve(&data);
    let runner = Arc::new(LocalRunner::new(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new().add_service(RunnerGrpc::new(Arc::clone(&runner)).into_server());
    tokio::spawn(server.serve(listener, shutdown.clone()));
    let client = RunnerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Served {
        tmp,
        data,
        workspace,
        sibling,
        runner,
        client,
        shutdown,
    }
}

/// The real python3 (not a pyenv shim), found once.
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by these tests");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A web component running `run` in `path`.
pub fn component(name: &str, run: &str, port_binding: &str) -> Component {
    Component {
        name: name.into(),
        path: ".".into(),
        kind: ComponentKind::Web.into(),
        start: Some(PlanCommand {
            run: run.into(),
            working_dir: String::new(),
            watch_mode: false,
        }),
        port_binding: port_binding.into(),
        ..Component::default()
    }
}

pub fn start_request(served: &Served, component: Component) -> StartRequest {
    StartRequest {
        run_id: "run-1".into(),
        workspace_path: served.workspace.display().to_string(),
        component: Some(component),
        restart_policy: RestartPolicy::Never.into(),
        ..StartRequest::default()
    }
}

pub fn limits(tweak: impl FnOnce(&mut ResourceLimits)) -> Option<ResourceLimits> {
    let mut limits = ResourceLimits::default();
    tweak(&mut limits);
    Some(limits)
}

impl Served {
    pub async fn start(&mut self, request: StartRequest) -> ProcessStatus {
        self.client
            .start(request)
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    pub async fn status(&mut self, id: &str) -> ProcessStatus {
        self.client
            .status(StatusRequest {
                process_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    pub async fn stop(&mut self, id: &str, grace_seconds: u32) -> ProcessStatus {
        self.client
            .stop(StopRequest {
                process_id: id.into(),
                grace_seconds,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// Polls Status until `done` holds (or panics after `within`).
    pub async fn wait_for(
        &mut self,
        id: &str,
        within: Duration,
        done: impl Fn(&ProcessStatus) -> bool,
    ) -> ProcessStatus {
        let end = Instant::now() + within;
        loop {
            let status = self.status(id).await;
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < end, "timed out waiting; last status {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a terminal state.
    pub async fn wait_ended(&mut self, id: &str, within: Duration) -> ProcessStatus {
        self.wait_for(id, within, |s| {
            matches!(
                s.state(),
                ProcessState::Exited | ProcessState::Failed | ProcessState::Stopped
            )
        })
        .await
    }

    /// Every line so far (no follow).
    pub async fn logs(&mut self, id: &str, after_sequence: u64, follow: bool) -> Vec<LogLine> {
        let stream = self
            .client
            .logs(LogsRequest {
                process_id: id.into(),
                follow,
                after_sequence,
            })
            .await
            .unwrap()
            .into_inner();
        stream.map(|r| r.unwrap().line.unwrap()).collect().await
    }

    pub async fn log_text(&mut self, id: &str) -> String {
        self.logs(id, 0, false)
            .await
            .into_iter()
            .map(|l| l.text + "\n")
            .collect()
    }

    /// The log file of a component of run-1.
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.data
            .join("runner/logs/run-1")
            .join(format!("{component}.log"))
    }
}

/// A plain HTTP/1.0 GET, retried until something answers (or `within`).
pub fn http_get(url: &str, within: Duration) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let end = Instant::now() + within;
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
            let mut response = String::new();
            if stream.read_to_string(&mut response).is_ok() && !response.is_empty() {
                return response;
            }
        }
        assert!(Instant::now() < end, "nothing answered on {url}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes an executable-free script (run with python) into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

/// A tiny HTTP server: answers every GET with its own argv, the host and
/// port it listens on. Takes the port from `--port`, `-p`, `runserver
/// HOST:PORT`, or `$PORT`, and the host from `--host`, `$HOST`.
pub const SERVER_PY: &str = r#"
import http.server, os, sys
args = sys.argv[1:]
host = os.environ.get("HOST", "127.0.0.1")
port = os.environ.get("PORT")
i = 0
while i < len(args):
    a = args[i]
    if a in ("--port", "-p"):
        port = args[i + 1]; i += 1
    elif a.startswith("--port="):
        port = a.split("=", 1)[1]
    elif a == "--host":
        host = args[i + 1]; i += 1
    elif a == "runserver" and i + 1 < len(args):
        host, port = args[i + 1].rsplit(":", 1); i += 1
    i += 1
port = int(port)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello argv={args} host={host} port={port}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *a):
        print("served", self.path, flush=True)

print(f"listening on {host}:{port}", flush=True)
print("to stderr", file=sys.stderr, flush=True)
http.server.HTTPServer((host, port), Handler).serve_forever()
"#;
