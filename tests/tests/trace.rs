//! One trace id through the real mesh: a GetEnvironment call that arrives at
//! the orchestrator with a W3C `traceparent` is authorized by the auth
//! service and answered by the env-detector agent, and the call spans of all
//! three (logged as JSON when they close) carry the caller's trace id.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use reporunner_proto::orchestrator::v1::GetEnvironmentRequest;
use reporunner_server::trace::{TRACEPARENT, TraceContextLayer};
use reporunner_tests::{FRONT_DOOR, Sandbox};
use serde_json::Value;
use tracing_subscriber::{fmt::MakeWriter, fmt::format::FmtSpan, prelude::*};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Lines {
    /// (rpc, trace_id) of every `grpc` span that closed.
    fn closed_calls(&self) -> Vec<(String, String)> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|l| l["fields"]["message"] == "close" && l["span"]["name"] == "grpc")
            .map(|l| {
                (
                    l["span"]["rpc"].as_str().unwrap_or_default().to_owned(),
                    l["span"]["trace_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_id_reaches_auth_and_the_env_detector() {
    let lines = Lines::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(TraceContextLayer)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_span_events(FmtSpan::CLOSE)
                .with_writer(lines.clone()),
        )
        .init();
    let mesh = Sandbox::builder().with_all(FRONT_DOOR).start().await.unwrap();

    let trace_id = "5f1a2b3c4d5e6f708192a3b4c5d6e7f8";
    let mut request = mesh.request(GetEnvironmentRequest {
        skip_registries: true,
        refresh: true,
        ..Default::default()
    });
    request.metadata_mut().insert(
        TRACEPARENT,
        format!("00-{trace_id}-1112131415161718-01").parse().unwrap(),
    );
    mesh.orchestrator().get_environment(request).await.unwrap();

    let wanted = [
        "/reporunner.orchestrator.v1.OrchestratorService/GetEnvironment",
        "/reporunner.auth.v1.AuthService/Authorize",
        "/reporunner.agents.env_detector.v1.EnvDetectorService/Detect",
    ];
    let mut closed = Vec::new();
    for _ in 0..100 {
        closed = lines.closed_calls();
        if wanted
            .iter()
            .all(|rpc| closed.iter().any(|(r, t)| r == rpc && t == trace_id))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for rpc in wanted {
        assert!(
            closed.iter().any(|(r, t)| r == rpc && t == trace_id),
            "{rpc} not in trace {trace_id}: {closed:#?}"
        );
    }
    // Calls made outside this request (health watches, the sandbox's login)
    // are other traces.
    assert!(closed.iter().any(|(_, t)| t != trace_id), "{closed:#?}");
    mesh.stop().await.unwrap();
}
