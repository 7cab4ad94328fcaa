//! DNS discovery against real servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3
//! (all loopback on Linux), with a resolver whose answers the test changes:
//! calls spread over every address, a NOT_SERVING one is skipped, and the
//! pool follows scale-up and scale-down.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use reporunner_client::{
    ClientConfig, EndpointState, Resolver, Resolving, ServiceChannel, connect_with_resolver,
};
use reporunner_proto::agents::env_detector::v1::{
    DetectRequest, DetectResponse,
    env_detector_service_client::EnvDetectorServiceClient,
    env_detector_service_server::{self, EnvDetectorService, EnvDetectorServiceServer},
};
use reporunner_server::{CancellationToken, GrpcServer, Health};
use tonic::{Code, Request, Response, Status};

const NAME: &str = "analyzer.reporunner.test";
const SERVICE: &str = env_detector_service_server::SERVICE_NAME;

#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl EnvDetectorService for Counter {
    async fn detect(&self, _: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(DetectResponse::default()))
    }
}

/// Answers for `NAME` only, with the addresses the test sets.
#[derive(Debug, Default)]
struct FakeDns {
    answer: Mutex<Vec<IpAddr>>,
    failing: AtomicBool,
    lookups: AtomicUsize,
}

impl FakeDns {
    fn set(&self, last_octets: &[u8]) {
        let ips = last_octets
            .iter()
            .map(|o| IpAddr::V4(Ipv4Addr::new(127, 0, 0, *o)))
            .collect();
        *self.answer.lock().expect("answer lock") = ips;
    }
}

impl Resolver for FakeDns {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        Box::pin(async move {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if host != NAME || self.failing.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host}: NXDOMAIN"),
                ));
            }
            let ips = self.answer.lock().expect("answer lock").clone();
            Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
        })
    }
}

struct Replica {
    addr: SocketAddr,
    counter: Counter,
    health: Health,
}

/// One server on each of 127.0.0.1..=127.0.0.{n}, all on the same port, as
/// pods behind one headless Service.
async fn replicas(n: u8, shutdown: &CancellationToken) -> (u16, Vec<Replica>) {
    'port: for _ in 0..50 {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = first.local_addr().expect("bound").port();
        let mut listeners = vec![first];
        for octet in 2..=n {
            match tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, octet), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'port,
            }
        }
        let mut out = Vec::new();
        for listener in listeners {
            let counter = Counter::default();
            let addr = listener.local_addr().expect("bound");
            let server = GrpcServer::new().add_service(EnvDetectorServiceServer::new(counter.clone()));
            let health = server.health();
            tokio::spawn(server.serve(listener, shutdown.clone()));
            out.push(Replica {
                addr,
                counter,
                health,
            });
        }
        return (port, out);
    }
    panic!("no port free on 127.0.0.1..{n}");
}

fn config() -> ClientConfig {
    ClientConfig {
        resolve_interval: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(1_000),
        default_deadline: Duration::from_millis(3_000),
        ..ClientConfig::default()
    }
}

/// Waits until the pool holds exactly `want` (by last octet), all SERVING
/// except those in `not_serving`.
async fn settle(channel: &ServiceChannel, want: &[u8], not_serving: &[u8]) {
    let expected: Vec<(String, EndpointState)> = want
        .iter()
        .map(|o| {
            let state = if not_serving.contains(o) {
                EndpointState::NotServing
            } else {
                EndpointState::Serving
            };
            (format!("127.0.0.{o}"), state)
        })
        .collect();
    let mut last = Vec::new();
    for _ in 0..200 {
        let mut states: Vec<(String, EndpointState)> = channel
            .endpoint_states()
            .into_iter()
            .map(|(uri, state)| {
                let host = uri
                    .trim_start_matches("http://")
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                (host, state)
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        if states == expected {
            return;
        }
        last = states;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pool never became {expected:?}; last {last:?}");
}

async fn calls(channel: &ServiceChannel, n: usize) {
    let mut client = EnvDetectorServiceClient::new(channel.clone());
    for _ in 0..n {
        client
            .detect(DetectRequest::default())
            .await
            .expect("a serving endpoint answers");
    }
}

fn counts(replicas: &[Replica]) -> Vec<usize> {
    replicas.iter().map(|r| r.counter.get()).collect()
}

#[tokio::test]
async fn calls_spread_over_every_address_and_skip_a_not_serving_one() {
    let shutdown = CancellationToken::new();
    let (port, replicas) = replicas(3, &shutdown).await;
    let dns = Arc::new(FakeDns::default());
    dns.set(&[1, 2, 3]);
    let channel = connect_with_resolver(
        SERVICE,
        &[format!("dns:///{NAME}:{port}")],
        &config(),
        dns.clone(),
    )
    .unwrap();
    settle(&channel, &[1, 2, 3], &[]).await;

    calls(&channel, 30).await;
    assert_eq!(counts(&replicas), vec![10, 10, 10], "round robin over the three");

    replicas[1].health.set(SERVICE, false).await;
    settle(&channel, &[1, 2, 3], &[2]).await;
    calls(&channel, 30).await;
    assert_eq!(counts(&replicas), vec![25, 10, 25], "127.0.0.2 said NOT_SERVING");

    replicas[1].health.set(SERVICE, true).await;
    settle(&channel, &[1, 2, 3], &[]).await;
    calls(&channel, 30).await;
    assert_eq!(counts(&replicas), vec![35, 20, 35], "and is back when SERVING");
    assert_eq!(replicas[2].addr.port(), port);
    shutdown.cancel();
}

#[tokio::test]
async fn the_pool_follows_scale_up_and_scale_down() {
    let shutdown = CancellationToken::new();
    let (port, replicas) = replicas(3, &shutdown).await;
    let dns = Arc::new(FakeDns::default());
    dns.set(&[1, 2]);
    let channel = connect_with_resolver(
        SERVICE,
        &[format!("dns:///{NAME}:{port}")],
        &config(),
        dns.clone(),
    )
    .unwrap();
    settle(&channel, &[1, 2], &[]).await;
    calls(&channel, 20).await;
    assert_eq!(counts(&replicas), vec![10, 10, 0]);

    // Scale-up: a third replica appears in DNS and starts taking calls.
    dns.set(&[1, 2, 3]);
    settle(&channel, &[1, 2, 3], &[]).await;
    calls(&channel, 30).await;
    assert_eq!(counts(&replicas), vec![20, 20, 10]);

    // Scale-down: 127.0.0.2 leaves DNS and receives nothing more, although
    // it still serves.
    dns.set(&[1, 3]);
    settle(&channel, &[1, 3], &[]).await;
    calls(&channel, 20).await;
    assert_eq!(counts(&replicas), vec![30, 20, 20]);

    // DNS failing keeps the endpoints already known.
    dns.failing.store(true, Ordering::SeqCst);
    let lookups = dns.lookups.load(Ordering::SeqCst);
    while dns.lookups.load(Ordering::SeqCst) < lookups + 2 {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    calls(&channel, 2).await;
    assert_eq!(counts(&replicas), vec![31, 20, 21]);
    shutdown.cancel();
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_with_unavailable_saying_so() {
    let dns = Arc::new(FakeDns::default());
    let channel =
        connect_with_resolver(SERVICE, &["dns:///nowhere.test:50051".to_owned()], &config(), dns).unwrap();
    let err = EnvDetectorServiceClient::new(channel)
        .detect(DetectRequest::default())
        .await
        .expect_err("nothing to call");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("dns:///nowhere.test:50051 does not resolve"),
        "{}",
        err.message()
    );
}
