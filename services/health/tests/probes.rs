//! The health agent over real gRPC on loopback, probing real sockets and
//! processes.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use reporunner_health::{HealthAgent, HealthConfig, grpc::HealthGrpc};
use reporunner_proto::agents::health::v1::{
    HealthState, HttpProbe, LogProbe, ProbeRequest, ProbeSpec, ProcessProbe, TcpProbe, WatchRequest,
    WatchResponse, health_service_client::HealthServiceClient, probe_spec,
};
use reporunner_server::GrpcServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

async fn agent() -> (HealthServiceClient<Channel>, CancellationToken) {
    let agent = HealthAgent::new(HealthConfig::default(), None).unwrap();
    let (addr, shutdown) = GrpcServer::new()
        .add_service(HealthGrpc::new(Arc::new(agent)).into_server())
        .spawn_on_loopback()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    (HealthServiceClient::new(channel), shutdown)
}

/// A tiny HTTP/1.1 server: `answer(path)` gives the status code; `up`
/// switches it off (connections are then closed without an answer).
async fn http_server(answer: fn(&str) -> u16, up: Arc<AtomicBool>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let up = up.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") && read < buffer.len() {
                    match socket.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                if !up.load(Ordering::SeqCst) {
                    return;
                }
                let request = String::from_utf8_lossy(&buffer[..read]);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let status = answer(&path);
                let response =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

fn http(base_url: &str, paths: &[&str]) -> ProbeSpec {
    ProbeSpec {
        probe: Some(probe_spec::Probe::Http(HttpProbe {
            base_url: base_url.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        })),
        timeout_ms: 2_000,
    }
}

#[tokio::test]
async fn http_probes_take_the_first_path_below_500_then_root() {
    let (mut client, shutdown) = agent().await;
    let (base, _server) = http_server(
        |path| if path == "/health" { 503 } else { 404 },
        Arc::new(AtomicBool::new(true)),
    )
    .await;
    let result = client
        .probe(ProbeRequest {
            probes: vec![http(&base, &["/health"])],
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.state, HealthState::Healthy as i32, "{result:?}");
    assert!(result.detail.contains("GET / -> 404"), "{}", result.detail);

    let (broken, _server) = http_server(|_| 500, Arc::new(AtomicBool::new(true))).await;
    let result = client
        .probe(ProbeRequest {
            probes: vec![http(&broken, &["/health"])],
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.state, HealthState::Unhealthy as i32);
    assert!(result.detail.contains("500"), "{}", result.detail);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let result = client
        .probe(ProbeRequest {
            probes: vec![http(&dead, &["/a", "/b"])],
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.state, HealthState::Unhealthy as i32);
    assert!(result.detail.contains("cannot connect"), "{}", result.detail);
    shutdown.cancel();
}

#[tokio::test]
async fn tcp_and_process_probes_see_listeners_and_live_processes() {
    let (mut client, shutdown) = agent().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = u32::from(listener.local_addr().unwrap().port());
    let mut child = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let both = vec![
        ProbeSpec {
            probe: Some(probe_spec::Probe::Tcp(TcpProbe {
                host: "127.0.0.1".into(),
                port,
            })),
            timeout_ms: 0,
        },
        ProbeSpec {
            probe: Some(probe_spec::Probe::Process(ProcessProbe { pid })),
            timeout_ms: 0,
        },
    ];
    let result = client
        .probe(ProbeRequest { probes: both.clone() })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.state, HealthState::Healthy as i32, "{}", result.detail);

    child.kill().await.unwrap();
    drop(listener);
    let result = client
        .probe(ProbeRequest { probes: both })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.state, HealthState::Unhealthy as i32);
    assert!(
        result.detail.contains(&format!("process {pid}")),
        "{}",
        result.detail
    );

    // The closed port alone: unhealthy, and the detail names the address.
    let result = client
        .probe(ProbeRequest {
            probes: vec![ProbeSpec {
                probe: Some(probe_spec::Probe::Tcp(TcpProbe {
                    host: "127.0.0.1".into(),
                    port,
                })),
                timeout_ms: 0,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.state, HealthState::Unhealthy as i32, "{}", result.detail);
    assert!(
        result.detail.contains(&format!("tcp 127.0.0.1:{port}: ")) && result.detail.contains("refused"),
        "{}",
        result.detail
    );
    shutdown.cancel();
}

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch message within 10 s")
        .expect("the stream is open")
        .expect("a message")
}

#[tokio::test]
async fn watch_reports_starting_then_healthy_then_unhealthy_after_the_threshold() {
    let (mut client, shutdown) = agent().await;
    let up = Arc::new(AtomicBool::new(false));
    let (base, _server) = http_server(|_| 200, up.clone()).await;
    let mut stream = client
        .watch(WatchRequest {
            component: "web".into(),
            probes: vec![http(&base, &["/health"])],
            startup_grace_seconds: 30,
            interval_ms: 100,
            failure_threshold: 3,
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.component, "web");
    assert_eq!(
        first.result.unwrap().state,
        HealthState::Starting as i32,
        "failures in the grace do not count"
    );
    up.store(true, Ordering::SeqCst);
    let healthy = next(&mut stream).await.result.unwrap();
    assert_eq!(healthy.state, HealthState::Healthy as i32, "{}", healthy.detail);
    up.store(false, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let unhealthy = next(&mut stream).await.result.unwrap();
    assert_eq!(unhealthy.state, HealthState::Unhealthy as i32);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "three failures, 100 ms apart"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let (mut client, shutdown) = agent().await;
    let status = client.probe(ProbeRequest { probes: vec![] }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .probe(ProbeRequest {
            probes: vec![ProbeSpec {
                probe: Some(probe_spec::Probe::Tcp(TcpProbe {
                    host: "127.0.0.1".into(),
                    port: 0,
                })),
                timeout_ms: 0,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("port 0"), "{}", status.message());
    let status = client
        .probe(ProbeRequest {
            probes: vec![ProbeSpec {
                probe: Some(probe_spec::Probe::Log(LogProbe {
                    process_id: "p1".into(),
                    patterns: vec![],
                })),
                timeout_ms: 0,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "no runner configured");
    let status = client
        .watch(WatchRequest {
            component: "web".into(),
            probes: vec![http("http://127.0.0.1:1", &[])],
            startup_grace_seconds: 0,
            interval_ms: 1,
            failure_threshold: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("interval_ms"), "{}", status.message());
    shutdown.cancel();
}
