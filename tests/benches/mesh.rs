//! `make bench`: the shared client stack (health-checked pool, deadline,
//! idempotent retries) against a plain tonic channel, calling the same
//! env-detector in the same process, at 1000 concurrent clients; and an
//! authenticated orchestrator call (ListRuns with a user's bearer token:
//! the auth layer's Authorize call to the auth service, then the store)
//! against a bare tonic echo server (the gRPC health service alone, no
//! auth) in the same process, at 1000 concurrent clients, with the auth
//! service's Authorize RPC alone beside them (the hop each authenticated
//! call makes).
//! Figures are ratios against the reference measured in the same run. The
//! whole mix of calls at N users is the load tool's (`make load`; `make
//! bench` runs a short one after this).

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use reporunner_node::ServiceName;
use reporunner_proto::agents::env_detector::v1::{
    DetectRequest, env_detector_service_client::EnvDetectorServiceClient, env_detector_service_server,
};
use reporunner_tests::Sandbox;

const CLIENTS: usize = 1000;
const CALLS: usize = 20_000;

/// `CALLS` Detect calls through `client`, timed by [`measure`].
async fn run<T>(client: EnvDetectorServiceClient<T>) -> (f64, Duration, Duration)
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::transport::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Future: Send,
{
    measure(CALLS, || {
        let mut client = client.clone();
        async move {
            client
                .detect(DetectRequest {
                    skip_registries: true,
                    ..Default::default()
                })
                .await
                .expect("detect succeeds");
        }
    })
    .await
}

/// Calls per second, p50 and p99 of `calls` calls of `call`, `CLIENTS` at
/// a time.
async fn measure<F, Fut>(calls: usize, call: F) -> (f64, Duration, Duration)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(0..calls)
        .map(|_| {
            let call = call();
            async move {
                let t = Instant::now();
                call.await;
                t.elapsed()
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    (
        calls as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    )
}

/// The authenticated orchestrator call against a bare echo server.
async fn authenticated_vs_echo() -> anyhow::Result<()> {
    use reporunner_proto::orchestrator::v1::ListRunsRequest;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let mesh = Sandbox::builder()
        .with_all([
            ServiceName::Auth,
            ServiceName::EnvDetector,
            ServiceName::Source,
            ServiceName::Analyzer,
            ServiceName::Orchestrator,
        ])
        .start()
        .await?;
    let orchestrator = mesh.orchestrator();
    let list = || {
        let mut client = orchestrator.clone();
        let request = mesh.request(ListRunsRequest {
            page_size: 1,
            ..Default::default()
        });
        async move {
            client.list_runs(request).await.expect("ListRuns succeeds");
        }
    };

    // The echo: tonic with the health service alone, on its own port.
    let server = reporunner_tests::load::EchoServer::start().await?;
    let echo = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?,
    );
    let check = || {
        let mut client = echo.clone();
        async move {
            client
                .check(HealthCheckRequest::default())
                .await
                .expect("the echo answers");
        }
    };

    // The auth service's Authorize alone (the hop every authenticated
    // orchestrator call makes), to tell its share from the orchestrator's.
    let access_token = mesh.register_and_login("bench-authorize").await?;
    let auth = reporunner_proto::auth::v1::auth_service_client::AuthServiceClient::new(
        mesh.channel(ServiceName::Auth),
    );
    let authorize = || {
        let mut client = auth.clone();
        let request = reporunner_proto::auth::v1::AuthorizeRequest {
            access_token: access_token.clone(),
        };
        async move {
            client.authorize(request).await.expect("Authorize succeeds");
        }
    };

    // Warm all three (connections, caches), then measure.
    let _ = measure(CALLS / 4, check).await;
    let _ = measure(CALLS / 4, authorize).await;
    let _ = measure(CALLS / 4, list).await;
    let (echo_rps, echo_p50, echo_p99) = measure(CALLS, check).await;
    let (authorize_rps, _, _) = measure(CALLS, authorize).await;
    let (auth_rps, auth_p50, auth_p99) = measure(CALLS, list).await;
    println!(
        "| authenticated orchestrator call (ListRuns, bearer token), {CLIENTS} concurrent | bare tonic echo {echo_rps:.0} calls/s | {auth_rps:.0} calls/s | {:.2}x |",
        auth_rps / echo_rps
    );
    println!(
        "| the auth service's Authorize RPC alone, {CLIENTS} concurrent | bare tonic echo {echo_rps:.0} calls/s | {authorize_rps:.0} calls/s | {:.2}x |",
        authorize_rps / echo_rps
    );
    println!(
        "| authenticated call p50 latency | echo {echo_p50:?} | {auth_p50:?} | {:.2}x |",
        auth_p50.as_secs_f64() / echo_p50.as_secs_f64()
    );
    println!(
        "| authenticated call p99 latency | echo {echo_p99:?} | {auth_p99:?} | {:.2}x |",
        auth_p99.as_secs_f64() / echo_p99.as_secs_f64()
    );
    server.stop().await;
    mesh.stop().await
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
        mesh.stop().await?;
        authenticated_vs_echo().await
    })
}
