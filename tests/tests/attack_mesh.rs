//! The attacks found on `reporunner serve`, replayed against every agent RPC.
//!
//! The methods come from the contracts' descriptor set (every service under
//! `reporunner.agents.*` and `reporunner.index.*`), so an RPC added later is
//! attacked too. Each is sent raw, an empty message through a bytes codec,
//! with the credentials under test, over real gRPC on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use reporunner_identity::{
    HEALTH, MeshKey, ORCHESTRATOR, SERVICE_HEADER, ServiceTokenSource, allowed_callers, may_call,
};
use reporunner_node::{ServiceName, Settings, start_node};
use reporunner_proto::{
    agents::{
        env_detector::v1::{DetectRequest, env_detector_service_client::EnvDetectorServiceClient},
        health::v1::{
            LogProbe, ProbeRequest, ProbeSpec, health_service_client::HealthServiceClient, probe_spec,
        },
        runner::v1::StartRequest,
    },
    auth::v1::{LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient},
    common::v1::{Command, Component},
    orchestrator::v1::{GetEnvironmentRequest, orchestrator_service_client::OrchestratorServiceClient},
};
use reporunner_server::CancellationToken;
use reporunner_tests::{SANDBOX_PASSWORD, Sandbox, agent_service};
use tonic::{
    Code,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// Passes message bytes through untouched, so any path can be called with
/// any payload.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Every method of every agent service a node hosts, `(service, path)`, from
/// the contracts. (`reporunner.agents.plugin.v1` is served by third parties,
/// never by a node.)
fn agent_methods() -> Vec<(String, String)> {
    let methods: Vec<(String, String)> = reporunner_proto::descriptor::pool()
        .services()
        .filter(|s| {
            (s.full_name().starts_with("reporunner.agents.")
                || s.full_name().starts_with("reporunner.index."))
                && !s.full_name().starts_with("reporunner.agents.plugin.")
        })
        .flat_map(|s| {
            s.methods()
                .map(|m| {
                    (
                        s.full_name().to_owned(),
                        format!("/{}/{}", s.full_name(), m.name()),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Ten agent services; a contract that lost its agents would make every
    // assertion below vacuous.
    let services: std::collections::BTreeSet<&str> = methods.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(services.len(), 10, "{services:?}");
    methods
}

/// Which credentials a call carries.
#[derive(Clone, Debug)]
enum Credentials {
    None,
    /// A user's access token, as `authorization: Bearer`.
    User(String),
    /// A user's access token where a service token belongs.
    UserAsService(String),
    /// A service token.
    Service(String),
}

fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .connect_lazy()
}

/// Calls `path` with `message` and `credentials`: OK once the server
/// accepted the call (response headers without an error), else the status.
async fn call(
    channel: &Channel,
    path: &str,
    message: Bytes,
    credentials: &Credentials,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    // A stream of one message works for every method kind on the wire.
    let mut request = tonic::Request::new(tokio_stream::once(message));
    let metadata = request.metadata_mut();
    match credentials {
        Credentials::None => {}
        Credentials::User(token) => {
            metadata.insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
            );
        }
        Credentials::UserAsService(token) | Credentials::Service(token) => {
            metadata.insert(SERVICE_HEADER, MetadataValue::try_from(token.as_str()).unwrap());
        }
    }
    let response = grpc.streaming(request, path.parse().unwrap(), RawCodec).await?;
    // Refusals come before any message; one that passed the edge may still
    // fail in the handler, which is the handler's business.
    let mut stream = response.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Err(status)) => Err(status),
        Ok(Ok(_)) | Err(_) => Ok(()),
    }
}

fn code(outcome: &Result<(), tonic::Status>) -> Code {
    match outcome {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn login(channel: Channel, username: &str) -> String {
    let mut auth = AuthServiceClient::new(channel);
    auth.register(RegisterRequest {
        username: username.into(),
        password: SANDBOX_PASSWORD.into(),
    })
    .await
    .unwrap();
    auth.login(LoginRequest {
        username: username.into(),
        password: SANDBOX_PASSWORD.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .tokens
    .unwrap()
    .access_token
}

/// Settings of a node over `data_dir`, as hermetic as the sandbox's.
fn settings(data_dir: &Path) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        data_dir: data_dir.to_path_buf(),
        ..Settings::default()
    };
    settings.env_detector.registries.clear();
    settings.stop_timeout = Duration::from_millis(200);
    settings.client.connect_timeout = Duration::from_millis(1_000);
    settings.client.health_retry_max = Duration::from_millis(200);
    settings
}

/// `RunnerService/Start` of `touch pwned` in `workspace`.
fn touch_request(workspace: &Path) -> Bytes {
    StartRequest {
        run_id: "attack".into(),
        workspace_path: workspace.display().to_string(),
        component: Some(Component {
            name: "pwn".into(),
            path: ".".into(),
            start: Some(Command {
                run: "touch pwned".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

const RUNNER_START: &str = "/reporunner.agents.runner.v1.RunnerService/Start";

/// A workspace directory where the source agent keeps them
/// (`<data_dir>/workspaces/<owner>/<id>`): agents refuse any other.
struct Workspace(PathBuf);

impl Workspace {
    fn under(data_dir: &Path) -> Self {
        let path = data_dir.join("workspaces").join("attacker").join("ws1");
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

async fn appears(path: &Path, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    path.exists()
}

/// The raw `ServerReflectionInfo` answer to `list_services`, as bytes.
async fn reflection_listing(channel: &Channel) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    // ServerReflectionRequest { list_services = 7: "*" }
    let request = tonic::Request::new(tokio_stream::once(Bytes::from_static(b"\x3a\x01*")));
    let response = grpc
        .streaming(
            request,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
                .parse()
                .unwrap(),
            RawCodec,
        )
        .await?;
    let mut stream = response.into_inner();
    Ok(stream.message().await?.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_in_one_node_serves_no_agent_on_its_public_listener() {
    let data_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // As `serve` starts it: every service in one process.
    let node = Box::pin(start_node(
        &settings(data_dir.path()),
        &ServiceName::ALL,
        listener,
        CancellationToken::new(),
    ))
    .await
    .unwrap();
    assert_ne!(
        node.addr, node.internal_addr,
        "agents have a listener of their own"
    );
    assert!(node.internal_addr.ip().is_loopback(), "{}", node.internal_addr);
    // Its own services call its agents in process (below: still through
    // each agent's mesh check, with their identities).
    let agents: Vec<ServiceName> = ServiceName::ALL.into_iter().filter(|s| !s.is_public()).collect();
    assert_eq!(node.in_process_agents, agents);
    let public = channel(node.addr);
    let internal = channel(node.internal_addr);
    let user = login(public.clone(), "mallory").await;

    for (_, path) in agent_methods() {
        for credentials in [Credentials::None, Credentials::User(user.clone())] {
            let outcome = call(&public, &path, Bytes::new(), &credentials).await;
            assert!(
                matches!(code(&outcome), Code::Unimplemented | Code::Unauthenticated),
                "{path} on the public listener with {credentials:?}: {outcome:?}"
            );
        }
        // The internal listener is on loopback, where sandboxed apps live too.
        for credentials in [Credentials::None, Credentials::User(user.clone())] {
            let outcome = call(&internal, &path, Bytes::new(), &credentials).await;
            assert_eq!(
                code(&outcome),
                Code::Unauthenticated,
                "{path} on the internal listener with {credentials:?}: {outcome:?}"
            );
        }
    }

    // No side effect: the runner never ran the attacker's command (in a
    // workspace under the source agent's root, where agents accept one)...
    let workspace = Workspace::under(data_dir.path());
    let pwned = workspace.path().join("pwned");
    for credentials in [Credentials::None, Credentials::User(user.clone())] {
        let outcome = call(
            &public,
            RUNNER_START,
            touch_request(workspace.path()),
            &credentials,
        )
        .await;
        assert!(outcome.is_err(), "{outcome:?}");
        let outcome = call(
            &internal,
            RUNNER_START,
            touch_request(workspace.path()),
            &credentials,
        )
        .await;
        assert_eq!(code(&outcome), Code::Unauthenticated, "{outcome:?}");
    }
    assert!(
        !appears(&pwned, Duration::from_secs(2)).await,
        "the runner ran the attacker's command"
    );
    // ...which the very same request from the orchestrator does run.
    let orchestrator = ServiceTokenSource::new(&node.mesh_key, ORCHESTRATOR)
        .token()
        .unwrap();
    let outcome = call(
        &internal,
        RUNNER_START,
        touch_request(workspace.path()),
        &Credentials::Service(orchestrator),
    )
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        appears(&pwned, Duration::from_secs(10)).await,
        "the orchestrator's Start ran"
    );

    // The node's own calls reach its agents, each with its identity: the
    // orchestrator's to the env-detector...
    let mut request = tonic::Request::new(GetEnvironmentRequest {
        skip_registries: true,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {user}")).unwrap(),
    );
    let environment = OrchestratorServiceClient::new(public.clone())
        .get_environment(request)
        .await
        .unwrap()
        .into_inner();
    assert!(environment.environment.is_some());
    // ...and the health agent's to the runner, whose log a log probe reads
    // (the process is unknown: the runner, not the mesh check, says so).
    let token = MetadataValue::try_from(
        ServiceTokenSource::new(&node.mesh_key, ORCHESTRATOR)
            .token()
            .unwrap(),
    )
    .unwrap();
    let mut health =
        HealthServiceClient::with_interceptor(internal.clone(), move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert(SERVICE_HEADER, token.clone());
            Ok(request)
        });
    let result = health
        .probe(ProbeRequest {
            probes: vec![ProbeSpec {
                probe: Some(probe_spec::Probe::Log(LogProbe {
                    process_id: "no-such-process".into(),
                    patterns: Vec::new(),
                })),
                timeout_ms: 5_000,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(
        result.detail.contains("cannot read the log of no-such-process"),
        "{}",
        result.detail
    );
    assert!(
        result.detail.contains("no process has the id"),
        "the runner itself answered: {}",
        result.detail
    );

    // Reflection lists the public services only, and the internal listener has none.
    let listing = reflection_listing(&public).await.unwrap();
    let text = String::from_utf8_lossy(&listing);
    assert!(
        text.contains("reporunner.orchestrator.v1.OrchestratorService"),
        "{text}"
    );
    assert!(text.contains("reporunner.auth.v1.AuthService"), "{text}");
    assert!(
        !text.contains("reporunner.agents.") && !text.contains("reporunner.index."),
        "{text}"
    );
    let outcome = reflection_listing(&internal).await.map(|_| ());
    assert_eq!(code(&outcome), Code::Unimplemented, "{outcome:?}");

    // The directory made for private backing servers goes with the node.
    let provision_dir = node.provision_dir.clone().expect("the node made one");
    assert!(provision_dir.is_dir(), "{}", provision_dir.display());
    node.stop().await.unwrap();
    assert!(
        !provision_dir.exists(),
        "{} is left behind",
        provision_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_mesh_mode_agents_answer_only_the_services_allowed_to_call_them() {
    let mesh = Sandbox::builder()
        .with_all(
            ServiceName::ALL
                .into_iter()
                .filter(|s| *s != ServiceName::Orchestrator),
        )
        .start()
        .await
        .unwrap();
    let user = mesh.register_and_login("mallory").await.unwrap();
    let key = mesh.mesh_key();
    let token = |caller: &str| ServiceTokenSource::new(&key, caller).token().unwrap();
    let foreign = ServiceTokenSource::new(&MeshKey::generate(), ORCHESTRATOR)
        .token()
        .unwrap();
    let expired = ServiceTokenSource::new(&key, ORCHESTRATOR)
        .mint_at(1_000_000_000, Duration::from_secs(300))
        .unwrap();

    let agents: Vec<ServiceName> = ServiceName::ALL.into_iter().filter(|s| !s.is_public()).collect();
    let methods = agent_methods();
    for agent in agents {
        let name = agent_service(agent).unwrap();
        let channel = channel(mesh.addr(agent).unwrap());
        let paths: Vec<&String> = methods
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, p)| p)
            .collect();
        assert!(!paths.is_empty(), "{name} has methods");
        for path in paths {
            for credentials in [
                Credentials::None,
                Credentials::User(user.clone()),
                Credentials::UserAsService(user.clone()),
                Credentials::Service(foreign.clone()),
                Credentials::Service(expired.clone()),
            ] {
                let outcome = call(&channel, path, Bytes::new(), &credentials).await;
                assert_eq!(
                    code(&outcome),
                    Code::Unauthenticated,
                    "{path} with {credentials:?}: {outcome:?}"
                );
            }
            // Valid tokens of services that are not this agent's callers.
            let mut intruders = vec!["tester", "source", "auth"];
            if agent != ServiceName::Runner {
                intruders.push(HEALTH);
            }
            for intruder in intruders {
                assert!(!allowed_callers(name).contains(&intruder));
                let outcome = call(
                    &channel,
                    path,
                    Bytes::new(),
                    &Credentials::Service(token(intruder)),
                )
                .await;
                let status = outcome.as_ref().unwrap_err();
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{path} from {intruder}: {outcome:?}"
                );
                assert!(
                    status.message().contains(intruder) && status.message().contains(name),
                    "{}",
                    status.message()
                );
            }
            // The allowed callers get through the edge, for the methods they
            // may call (the health agent: only the runner's Logs).
            let method = path.rsplit('/').next().unwrap_or_default();
            for caller in allowed_callers(name) {
                let outcome = call(&channel, path, Bytes::new(), &Credentials::Service(token(caller))).await;
                if may_call(caller, name, method) {
                    assert!(
                        !matches!(code(&outcome), Code::Unauthenticated | Code::PermissionDenied),
                        "{path} from {caller}: {outcome:?}"
                    );
                } else {
                    assert_eq!(
                        code(&outcome),
                        Code::PermissionDenied,
                        "{path} from {caller}: {outcome:?}"
                    );
                }
            }
        }
    }

    // The sandbox's helper for tests that stand in for a service.
    let mut detector =
        EnvDetectorServiceClient::new(mesh.agent_channel(ServiceName::EnvDetector, ORCHESTRATOR));
    let detected = detector
        .detect(DetectRequest {
            skip_registries: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(detected.into_inner().environment.is_some());
    let status = EnvDetectorServiceClient::new(mesh.agent_channel(ServiceName::EnvDetector, HEALTH))
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The side effect, in mesh mode: nothing but the orchestrator starts a process.
    let runner = channel(mesh.addr(ServiceName::Runner).unwrap());
    let workspace = Workspace::under(mesh.data_dir());
    let pwned = workspace.path().join("pwned");
    for credentials in [
        Credentials::None,
        Credentials::User(user.clone()),
        Credentials::Service(token("tester")),
        Credentials::Service(token("source")),
    ] {
        let outcome = call(
            &runner,
            RUNNER_START,
            touch_request(workspace.path()),
            &credentials,
        )
        .await;
        assert!(outcome.is_err(), "{credentials:?}: {outcome:?}");
    }
    assert!(
        !appears(&pwned, Duration::from_secs(2)).await,
        "the runner ran the attacker's command"
    );
    mesh.stop().await.unwrap();
}

/// A channel over the Unix socket at `path`.
fn unix_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .timeout(Duration::from_secs(15))
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
}

/// The data directory's control socket (`reporunner` commands talking to the
/// process that owns the directory): who may call it is the machine user
/// that owns it. Calls without a token are the local owner's; a token is
/// checked as on the public port; no agent is served there; the socket is
/// 0600 and a peer of another uid is refused even when the mode would let
/// it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_serves_its_owner_and_refuses_everyone_else() {
    use reporunner_proto::auth::v1::WhoAmIRequest;
    use std::os::unix::fs::PermissionsExt as _;

    let data_dir = tempfile::tempdir().unwrap();
    let socket_path = data_dir.path().join("reporunner.sock");
    let socket = reporunner_server::local::bind_control_socket(&socket_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = Box::pin(reporunner_node::start_node_with(
        &settings(data_dir.path()),
        &ServiceName::ALL,
        listener,
        CancellationToken::new(),
        reporunner_node::NodeOptions {
            control_socket: Some(socket),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let mode = std::fs::metadata(&socket_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let local = unix_channel(&socket_path);
    let me = AuthServiceClient::new(local.clone())
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().username, reporunner_auth::LOCAL_OWNER);
    // The orchestrator answers the local owner too.
    OrchestratorServiceClient::new(local.clone())
        .list_runs(reporunner_proto::orchestrator::v1::ListRunsRequest::default())
        .await
        .unwrap();
    // A token of the caller's own is checked, not replaced.
    let outcome = call(
        &local,
        "/reporunner.auth.v1.AuthService/WhoAmI",
        Bytes::new(),
        &Credentials::User("not-a-token".into()),
    )
    .await;
    assert_eq!(code(&outcome), Code::Unauthenticated, "{outcome:?}");
    // The agents are not on the socket, whatever the caller brings.
    for (_, path) in agent_methods() {
        let outcome = call(&local, &path, Bytes::new(), &Credentials::None).await;
        assert_eq!(code(&outcome), Code::Unimplemented, "{path}: {outcome:?}");
    }

    // Another user of the machine: the directory and the socket would let
    // it in here, the peer check does not.
    std::fs::set_permissions(data_dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let probe = |uid: &str| {
        // Sends the HTTP/2 preface and an empty SETTINGS frame; prints how
        // many bytes the server answered before closing or 3 s passed (0
        // when it closed first: the send may then break the pipe).
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_UNIX)\n\
            s.settimeout(3)\n\
            s.connect(sys.argv[1])\n\
            try:\n  s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'+bytes([0,0,0,4,0,0,0,0,0]))\n  print(len(s.recv(4096)))\n\
            except OSError:\n  print(0)\n";
        let output = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .args(["/usr/bin/python3", "-c", script])
            .arg(&socket_path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    assert!(probe("0") > 0, "the owner (root here) gets the server's SETTINGS");
    assert_eq!(probe("65534"), 0, "nobody gets nothing");
    node.stop().await.unwrap();
}
