//! TLS and mutual TLS between the client stack and GrpcServer over loopback,
//! with certificates made at test time (rcgen): the right CA connects, a
//! wrong CA, a plain-text client and (with mTLS) a client without a valid
//! certificate are refused, and replaced certificate files are used by new
//! handshakes without a restart.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use reporunner_client::{ClientConfig, ClientTlsConfig, connect};
use reporunner_proto::agents::env_detector::v1::{
    DetectRequest, DetectResponse,
    env_detector_service_client::EnvDetectorServiceClient,
    env_detector_service_server::{self, EnvDetectorService, EnvDetectorServiceServer},
};
use reporunner_server::{CancellationToken, GrpcServer, tls::TlsConfig};
use tonic::{Code, Request, Response, Status};

#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

#[tonic::async_trait]
impl EnvDetectorService for Counter {
    async fn detect(&self, _: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(DetectResponse::default()))
    }
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("self-signed CA").pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate for `names` signed by `ca`, usable by servers and
/// clients: (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("valid names");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}

/// Writes `contents` to `dir/name` atomically (write, then rename), as a
/// certificate rotation would.
fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write pem");
    std::fs::rename(&tmp, &path).expect("rename pem");
    path
}

async fn start(tls: TlsConfig, counter: Counter, shutdown: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let server = GrpcServer::new()
        .tls(tls)
        .add_service(EnvDetectorServiceServer::new(counter));
    tokio::spawn(server.serve(listener, shutdown.clone()));
    format!("http://{addr}")
}

fn client_config(tls: ClientTlsConfig) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        default_deadline: Duration::from_secs(3),
        max_attempts: 1,
        tls,
        ..ClientConfig::default()
    }
}

/// One Detect call over a fresh channel (so a fresh handshake).
async fn detect(endpoint: &str, config: &ClientConfig) -> Result<(), Status> {
    let channel = connect(
        env_detector_service_server::SERVICE_NAME,
        &[endpoint.to_owned()],
        config,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    EnvDetectorServiceClient::new(channel)
        .detect(DetectRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn server_tls_accepts_its_ca_and_refuses_a_wrong_one_and_plain_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good_ca = ca("mesh ca");
    let other_ca = ca("someone else");
    let (cert, key) = leaf(&good_ca, &["127.0.0.1", "localhost"]);
    let tls = TlsConfig::new(
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    );
    let good_ca_path = write(dir.path(), "ca.pem", &good_ca.pem);
    let other_ca_path = write(dir.path(), "other-ca.pem", &other_ca.pem);
    let shutdown = CancellationToken::new();
    let counter = Counter::default();
    let endpoint = start(tls, counter.clone(), &shutdown).await;

    let trusted = client_config(ClientTlsConfig {
        ca: Some(good_ca_path),
        ..ClientTlsConfig::default()
    });
    detect(&endpoint, &trusted)
        .await
        .expect("the server's CA connects");
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);

    let wrong_ca = client_config(ClientTlsConfig {
        ca: Some(other_ca_path),
        ..ClientTlsConfig::default()
    });
    let err = detect(&endpoint, &wrong_ca)
        .await
        .expect_err("a wrong CA is refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let plain = client_config(ClientTlsConfig::default());
    let err = detect(&endpoint, &plain)
        .await
        .expect_err("plain text is refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // https:// without client.tls trusts the public web PKI, which does not
    // include a private mesh CA.
    let public = endpoint.replace("http://", "https://");
    let err = detect(&public, &plain)
        .await
        .expect_err("a private CA is not public");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "refused clients reached no handler"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_valid_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = ca("mesh ca");
    let rogue = ca("rogue ca");
    let (server_cert, server_key) = leaf(&mesh, &["analyzer.reporunner.test"]);
    let (client_cert, client_key) = leaf(&mesh, &["orchestrator.reporunner.test"]);
    let (rogue_cert, rogue_key) = leaf(&rogue, &["orchestrator.reporunner.test"]);
    let mesh_ca = write(dir.path(), "ca.pem", &mesh.pem);
    let tls = TlsConfig::new(
        write(dir.path(), "server.pem", &server_cert),
        write(dir.path(), "server.key", &server_key),
    )
    .with_client_ca(&mesh_ca);
    let shutdown = CancellationToken::new();
    let counter = Counter::default();
    let endpoint = start(tls, counter.clone(), &shutdown).await;
    // The server's certificate names a service, not 127.0.0.1: the domain
    // override checks it against that name.
    let domain = Some("analyzer.reporunner.test".to_owned());

    let with_cert = client_config(ClientTlsConfig {
        ca: Some(mesh_ca.clone()),
        cert: Some(write(dir.path(), "client.pem", &client_cert)),
        key: Some(write(dir.path(), "client.key", &client_key)),
        domain: domain.clone(),
        ..ClientTlsConfig::default()
    });
    detect(&endpoint, &with_cert)
        .await
        .expect("a mesh certificate is accepted");

    let without_cert = client_config(ClientTlsConfig {
        ca: Some(mesh_ca.clone()),
        domain: domain.clone(),
        ..ClientTlsConfig::default()
    });
    let err = detect(&endpoint, &without_cert)
        .await
        .expect_err("no client certificate is refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let rogue_client = client_config(ClientTlsConfig {
        ca: Some(mesh_ca),
        cert: Some(write(dir.path(), "rogue.pem", &rogue_cert)),
        key: Some(write(dir.path(), "rogue.key", &rogue_key)),
        domain,
        ..ClientTlsConfig::default()
    });
    let err = detect(&endpoint, &rogue_client)
        .await
        .expect_err("a certificate from another CA is refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "only the mesh client got through"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn replaced_certificates_are_used_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_ca = ca("old ca");
    let new_ca = ca("new ca");
    let (cert, key) = leaf(&old_ca, &["127.0.0.1"]);
    let cert_path = write(dir.path(), "tls.crt", &cert);
    let key_path = write(dir.path(), "tls.key", &key);
    let tls = TlsConfig {
        reload_interval: Duration::from_millis(50),
        ..TlsConfig::new(&cert_path, &key_path)
    };
    let shutdown = CancellationToken::new();
    let endpoint = start(tls, Counter::default(), &shutdown).await;
    let trusts_old = client_config(ClientTlsConfig {
        ca: Some(write(dir.path(), "old-ca.pem", &old_ca.pem)),
        ..ClientTlsConfig::default()
    });
    let trusts_new = client_config(ClientTlsConfig {
        ca: Some(write(dir.path(), "new-ca.pem", &new_ca.pem)),
        ..ClientTlsConfig::default()
    });
    detect(&endpoint, &trusts_old)
        .await
        .expect("the first certificate serves");
    assert!(detect(&endpoint, &trusts_new).await.is_err(), "not rotated yet");

    // A half-written rotation (a key with no certificate) is not picked up.
    write(dir.path(), "tls.crt", "-----BEGIN CERTIFICATE-----\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    detect(&endpoint, &trusts_old)
        .await
        .expect("a broken rotation keeps the old certificate");

    let (cert, key) = leaf(&new_ca, &["127.0.0.1"]);
    write(dir.path(), "tls.key", &key);
    write(dir.path(), "tls.crt", &cert);
    let mut rotated = false;
    for _ in 0..100 {
        if detect(&endpoint, &trusts_new).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "new handshakes use the new certificate");
    let err = detect(&endpoint, &trusts_old)
        .await
        .expect_err("the old chain is gone");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn incomplete_client_tls_settings_are_refused_by_name() {
    let err = connect(
        env_detector_service_server::SERVICE_NAME,
        &["http://127.0.0.1:1".to_owned()],
        &client_config(ClientTlsConfig {
            cert: Some("/c.pem".into()),
            ..ClientTlsConfig::default()
        }),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("client.tls.ca"), "{err}");
    let err = connect(
        env_detector_service_server::SERVICE_NAME,
        &["ftp://127.0.0.1:1".to_owned()],
        &ClientConfig::default(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("dns:///host:port"), "{err}");
}

/// Resolves every name to 127.0.0.1.
#[derive(Debug)]
struct Loopback;

impl reporunner_client::Resolver for Loopback {
    fn resolve<'a>(&'a self, _host: &'a str, port: u16) -> reporunner_client::Resolving<'a> {
        Box::pin(async move { Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]) })
    }
}

#[tokio::test]
async fn discovered_addresses_are_checked_against_the_dns_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = ca("mesh ca");
    // The certificate names the Service, not the pod address it is dialled on.
    let (cert, key) = leaf(&mesh, &["analyzer.reporunner.test"]);
    let tls = TlsConfig::new(
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    );
    let shutdown = CancellationToken::new();
    let endpoint = start(tls, Counter::default(), &shutdown).await;
    let port = endpoint.rsplit(':').next().unwrap_or_default();
    let config = client_config(ClientTlsConfig {
        ca: Some(write(dir.path(), "ca.pem", &mesh.pem)),
        ..ClientTlsConfig::default()
    });
    let call = |name: &str| {
        let channel = reporunner_client::connect_with_resolver(
            env_detector_service_server::SERVICE_NAME,
            &[format!("dns:///{name}:{port}")],
            &config,
            Arc::new(Loopback),
        )
        .expect("valid endpoint");
        async move {
            EnvDetectorServiceClient::new(channel)
                .detect(DetectRequest::default())
                .await
        }
    };
    call("analyzer.reporunner.test")
        .await
        .expect("the certificate matches the DNS name");
    let err = call("impostor.reporunner.test")
        .await
        .expect_err("a certificate for another name is refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    shutdown.cancel();
}

/// Records the first certificate each caller presented.
#[derive(Clone, Default)]
struct Peers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

#[tonic::async_trait]
impl EnvDetectorService for Peers {
    async fn detect(&self, request: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.to_vec()))
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        self.0
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .push(leaf);
        Ok(Response::new(DetectResponse::default()))
    }
}

fn der(pem: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem certificate")
        .to_vec()
}

#[tokio::test]
async fn a_client_picks_up_a_rotated_certificate_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = ca("server ca");
    let old_client_ca = ca("client ca 1");
    let new_client_ca = ca("client ca 2");
    let (server_cert, server_key) = leaf(&server_ca, &["127.0.0.1"]);
    // The server trusts both client CAs during the rotation.
    let bundle = format!("{}{}", old_client_ca.pem, new_client_ca.pem);
    let tls = TlsConfig::new(
        write(dir.path(), "server.pem", &server_cert),
        write(dir.path(), "server.key", &server_key),
    )
    .with_client_ca(write(dir.path(), "client-cas.pem", &bundle));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    let peers = Peers::default();
    let shutdown = CancellationToken::new();
    tokio::spawn(
        GrpcServer::new()
            .tls(tls)
            .add_service(EnvDetectorServiceServer::new(peers.clone()))
            .serve(listener, shutdown.clone()),
    );

    let (old_cert, old_key) = leaf(&old_client_ca, &["orchestrator"]);
    let config = client_config(ClientTlsConfig {
        ca: Some(write(dir.path(), "server-ca.pem", &server_ca.pem)),
        cert: Some(write(dir.path(), "client.pem", &old_cert)),
        key: Some(write(dir.path(), "client.key", &old_key)),
        reload_interval: Duration::from_millis(50),
        ..ClientTlsConfig::default()
    });
    let channel = connect(
        env_detector_service_server::SERVICE_NAME,
        std::slice::from_ref(&endpoint),
        &config,
    )
    .expect("valid endpoint");
    let mut client = EnvDetectorServiceClient::new(channel);
    client
        .detect(DetectRequest::default())
        .await
        .expect("the first certificate is accepted");
    let last = || peers.0.lock().ok().and_then(|p| p.last().cloned());
    assert_eq!(last(), Some(der(&old_cert)));

    let (new_cert, new_key) = leaf(&new_client_ca, &["orchestrator"]);
    write(dir.path(), "client.key", &new_key);
    write(dir.path(), "client.pem", &new_cert);
    let mut rotated = false;
    for _ in 0..100 {
        // Between the two writes the pair may not match; a failed call then is fine.
        let _ = client.detect(DetectRequest::default()).await;
        if last() == Some(der(&new_cert)) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the same channel presents the new certificate");
    client
        .detect(DetectRequest::default())
        .await
        .expect("and keeps working");
    assert_eq!(last(), Some(der(&new_cert)));
    shutdown.cancel();
}

#[tokio::test]
async fn a_plain_health_listener_answers_probes_while_the_main_port_wants_mtls() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = ca("mesh ca");
    let (cert, key) = leaf(&mesh, &["127.0.0.1"]);
    let tls = TlsConfig::new(
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    )
    .with_client_ca(write(dir.path(), "ca.pem", &mesh.pem));
    let main = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let main_addr = format!("http://{}", main.local_addr().expect("bound"));
    let probe_addr = format!("http://{}", probe.local_addr().expect("bound"));
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new()
        .tls(tls)
        .health_listener(probe)
        .add_service(EnvDetectorServiceServer::new(Counter::default()));
    let health = server.health();
    let task = tokio::spawn(server.serve(main, shutdown.clone()));

    let channel = tonic::transport::Endpoint::from_shared(probe_addr.clone())
        .expect("valid uri")
        .connect_lazy();
    let check = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: env_detector_service_server::SERVICE_NAME.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status())
            .map_err(|status| status.code())
    };
    let mut status = check(channel.clone()).await;
    for _ in 0..50 {
        if status == Ok(ServingStatus::Serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = check(channel.clone()).await;
    }
    assert_eq!(status, Ok(ServingStatus::Serving), "{status:?}");
    health.set(env_detector_service_server::SERVICE_NAME, false).await;
    assert_eq!(check(channel.clone()).await, Ok(ServingStatus::NotServing));

    // The probe port serves health only; the service itself stays behind mTLS.
    let err = EnvDetectorServiceClient::new(channel.clone())
        .detect(DetectRequest::default())
        .await
        .expect_err("not routed on the probe port");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let err = detect(&main_addr, &client_config(ClientTlsConfig::default()))
        .await
        .expect_err("plain text is refused on the main port");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    shutdown.cancel();
    task.await.expect("joined").expect("clean stop");
    let probe_closed = tonic::transport::Endpoint::from_shared(probe_addr)
        .expect("valid uri")
        .connect()
        .await;
    assert!(probe_closed.is_err(), "the probe listener stops with the server");
}
