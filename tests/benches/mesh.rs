//! `make bench`: the shared client stack (health-checked pool, deadline,
//! idempotent retries) against a plain tonic channel, calling the same
//! env-detector in the same process, at 1000 concurrent clients.
//! Figures are ratios against the plain channel, measured in the same run.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use reporunner_node::ServiceName;
use reporunner_proto::agents::env_detector::v1::{
    DetectRequest, env_detector_service_client::EnvDetectorServiceClient, env_detector_service_server,
};
use reporunner_tests::Sandbox;

const CLIENTS: usize = 1000;
const CALLS: usize = 20_000;

async fn run<T>(client: EnvDetectorServiceClient<T>) -> (f64, Duration, Duration)
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::transport::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Future: Send,
{
    let started = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(0..CALLS)
        .map(|_| {
            let mut client = client.clone();
            async move {
                let t = Instant::now();
                client
                    .detect(DetectRequest {
                        skip_registries: true,
                        ..Default::default()
                    })
                    .await
                    .expect("detect succeeds");
                t.elapsed()
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    (
        CALLS as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    )
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mesh = Sandbox::builder().with(ServiceName::EnvDetector).start().await?;
        let addr = mesh.addr(ServiceName::EnvDetector).expect("hosted");
        // Both speak for the orchestrator: agents answer only mesh services.
        let token: tonic::metadata::MetadataValue<_> = mesh.service_token(reporunner_identity::ORCHESTRATOR).parse()?;
        let plain = EnvDetectorServiceClient::with_interceptor(
            mesh.channel(ServiceName::EnvDetector),
            move |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert(reporunner_identity::SERVICE_HEADER, token.clone());
                Ok(request)
            },
        );
        let stacked = EnvDetectorServiceClient::new(
            reporunner_client::connect(
                env_detector_service_server::SERVICE_NAME,
                &[format!("http://{addr}")],
                &Default::default(),
            )?
            .with_identity(std::sync::Arc::new(reporunner_identity::ServiceTokenSource::new(
                &mesh.mesh_key(),
                reporunner_identity::ORCHESTRATOR,
            ))),
        );
        // Warm both (connections, toolchain cache).
        let _ = run(plain.clone()).await;
        let _ = run(stacked.clone()).await;
        let (plain_rps, plain_p50, plain_p99) = run(plain).await;
        let (stack_rps, stack_p50, stack_p99) = run(stacked).await;
        println!("| bench | reference | figure | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| client stack throughput, {CLIENTS} concurrent Detect calls | plain tonic channel {plain_rps:.0} calls/s | {stack_rps:.0} calls/s | {:.2}x |",
            stack_rps / plain_rps
        );
        println!(
            "| client stack p50 latency | plain {plain_p50:?} | {stack_p50:?} | {:.2}x |",
            stack_p50.as_secs_f64() / plain_p50.as_secs_f64()
        );
        println!(
            "| client stack p99 latency | plain {plain_p99:?} | {stack_p99:?} | {:.2}x |",
            stack_p99.as_secs_f64() / plain_p99.as_secs_f64()
        );
        mesh.stop().await
    })
}
