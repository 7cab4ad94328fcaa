//! TLS and mutual TLS for [`GrpcServer`](crate::GrpcServer), with the
//! certificate files reloaded while the server runs.
//!
//! tonic's built-in `ServerTlsConfig` fixes the certificate when the server
//! starts. Here the handshake is done in front of tonic instead: an accept
//! loop hands each TCP connection to `tokio-rustls` with the *current*
//! `rustls::ServerConfig`, and a watcher re-reads the files on an interval and
//! swaps that config when their contents change. New handshakes use the new
//! certificate at once; open connections keep theirs. A change that does not
//! load (a half-written key, a certificate that does not match it) is logged
//! and the previous config stays in force.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Most TLS handshakes in progress at once; further connections wait to be
/// accepted.
const MAX_HANDSHAKES: usize = 256;

/// Server TLS settings (`tls.*`, env `REPORUNNER_TLS__CERT` …). Nothing set
/// means plain HTTP/2, as before.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the server presents (leaf first).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs whose client certificates are accepted. Set, it
    /// turns on mutual TLS: a client without a certificate signed by one of
    /// them is refused during the handshake.
    pub client_ca: Option<PathBuf>,
    /// How often the three files are checked for new contents; 0 turns
    /// reloading off.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Longest one handshake may take before the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// TLS with `cert` and `key`, no client certificates asked.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: Some(cert.into()),
            key: Some(key.into()),
            ..Self::default()
        }
    }

    /// Mutual TLS: clients must present a certificate signed by `client_ca`.
    pub fn with_client_ca(mut self, client_ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(client_ca.into());
        self
    }

    /// Whether any TLS setting is present.
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.client_ca.is_some()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: {0}")]
    Incomplete(&'static str),
    #[error("tls: cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("tls: {path} holds no PEM {what}")]
    Missing { path: String, what: &'static str },
    #[error("tls: {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, the one tonic's `tls-ring` feature uses too.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The raw contents of the configured files, and a digest to notice changes.
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    digest: u64,
}

struct Paths {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Paths {
    fn from_config(config: &TlsConfig) -> Result<Self, TlsError> {
        match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Ok(Self {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.client_ca.clone(),
            }),
            (None, None) => Err(TlsError::Incomplete(
                "tls.client_ca needs tls.cert and tls.key as well",
            )),
            (Some(_), None) => Err(TlsError::Incomplete("tls.cert is set but tls.key is not")),
            (None, Some(_)) => Err(TlsError::Incomplete("tls.key is set but tls.cert is not")),
        }
    }

    fn read(&self) -> Result<Material, TlsError> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let client_ca = self.client_ca.as_deref().map(read).transpose()?;
        let mut hasher = DefaultHasher::new();
        (&cert, &key, &client_ca).hash(&mut hasher);
        Ok(Material {
            cert,
            key,
            client_ca,
            digest: hasher.finish(),
        })
    }

    fn build(&self, material: &Material) -> Result<ServerConfig, TlsError> {
        let provider = crypto_provider();
        let certs = parse_certs(&self.cert, &material.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|err| match err {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
                path: self.key.display().to_string(),
                what: "private key",
            },
            other => TlsError::Invalid {
                path: self.key.display().to_string(),
                reason: other.to_string(),
            },
        })?;
        let builder =
            ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match (&self.client_ca, &material.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in parse_certs(path, pem)? {
                    roots.add(cert).map_err(|err| TlsError::Invalid {
                        path: path.display().to_string(),
                        reason: err.to_string(),
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|err| TlsError::Invalid {
                        path: path.display().to_string(),
                        reason: err.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        // h2 for gRPC (and browsers); http/1.1 for HTTP/JSON clients that
        // offer only it (the gateway answers both).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Invalid {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The server config in force, swapped by the reloader.
#[derive(Clone)]
pub(crate) struct Acceptor {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads the files once (failing on any problem) and, unless reloading is
    /// off, starts the watcher, which ends with `stop`.
    pub(crate) fn start(config: &TlsConfig, stop: CancellationToken) -> Result<Self, TlsError> {
        let paths = Paths::from_config(config)?;
        let material = paths.read()?;
        let server_config = paths.build(&material)?;
        let acceptor = Self {
            current: Arc::new(RwLock::new(Arc::new(server_config))),
            handshake_timeout: config.handshake_timeout.max(Duration::from_millis(1)),
        };
        if !config.reload_interval.is_zero() {
            tokio::spawn(reload(
                paths,
                material.digest,
                config.reload_interval,
                acceptor.current.clone(),
                stop,
            ));
        }
        Ok(acceptor)
    }

    fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Accepts TCP connections on `listener` and yields those whose TLS
    /// handshake succeeds. Refused handshakes are logged, not yielded. The
    /// loop (and the listener) end when the stream is dropped.
    pub(crate) fn incoming(
        self,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = mpsc::channel(32);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors and the like: pause, go on.
                            tracing::warn!(%err, "cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(self.config());
                let timeout = self.handshake_timeout;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                    drop(permit);
                    match outcome {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(err)) => handshake_failed(peer, &err.to_string()),
                        Err(_) => handshake_failed(peer, "handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn handshake_failed(peer: SocketAddr, reason: &str) {
    metrics::counter!(crate::metrics::TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
    tracing::info!(%peer, reason, "tls handshake refused");
}

/// Re-reads the files every `interval`; a change that loads replaces the
/// config in force.
async fn reload(
    paths: Paths,
    mut digest: u64,
    interval: Duration,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    stop: CancellationToken,
) {
    let paths = Arc::new(paths);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let job = {
            let paths = paths.clone();
            tokio::task::spawn_blocking(move || {
                let material = paths.read()?;
                if material.digest == digest {
                    return Ok(None);
                }
                let config = paths.build(&material)?;
                Ok::<_, TlsError>(Some((material.digest, config)))
            })
        };
        match job.await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some((new_digest, config)))) => {
                digest = new_digest;
                match current.write() {
                    Ok(mut slot) => *slot = Arc::new(config),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
                }
                metrics::counter!(crate::metrics::TLS_RELOADS_TOTAL).increment(1);
                tracing::info!(cert = %paths.cert.display(), "tls certificates reloaded");
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "tls files changed but do not load; keeping the current certificates");
            }
            Err(err) => tracing::warn!(%err, "tls reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_configuration_names_what_is_missing() {
        let err = Paths::from_config(&TlsConfig {
            cert: Some("/c.pem".into()),
            ..TlsConfig::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("tls.key"), "{err}");
        let err = Paths::from_config(&TlsConfig::default().with_client_ca("/ca.pem"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("tls.cert and tls.key"), "{err}");
        assert!(!TlsConfig::default().is_enabled());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn tls_settings_load_from_the_environment() {
        #[derive(Serialize, Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct Settings {
            tls: TlsConfig,
        }
        #[derive(Serialize)]
        struct NoFlags {}
        figment::Jail::expect_with(|jail| {
            let settings: Settings = crate::config::load(None, &NoFlags {}).map_err(|e| e.to_string())?;
            assert!(!settings.tls.is_enabled(), "off unless configured");
            jail.set_env("REPORUNNER_TLS__CERT", "/etc/reporunner/tls.crt");
            jail.set_env("REPORUNNER_TLS__KEY", "/etc/reporunner/tls.key");
            jail.set_env("REPORUNNER_TLS__CLIENT_CA", "/etc/reporunner/ca.crt");
            jail.set_env("REPORUNNER_TLS__RELOAD_INTERVAL", "2s");
            let settings: Settings = crate::config::load(None, &NoFlags {}).map_err(|e| e.to_string())?;
            assert_eq!(settings.tls.cert, Some(PathBuf::from("/etc/reporunner/tls.crt")));
            assert_eq!(
                settings.tls.client_ca,
                Some(PathBuf::from("/etc/reporunner/ca.crt"))
            );
            assert_eq!(settings.tls.reload_interval, Duration::from_secs(2));
            assert_eq!(
                settings.tls.handshake_timeout,
                Duration::from_secs(10),
                "unset keys keep defaults"
            );
            Ok(())
        });
    }

    #[test]
    fn unreadable_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let paths = Paths::from_config(&TlsConfig::new(&cert, &key)).expect("complete");
        let err = paths.read().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cert.pem"), "{err}");
        std::fs::write(&cert, "not pem").expect("write");
        std::fs::write(&key, "not pem").expect("write");
        let material = paths.read().expect("readable");
        let err = paths
            .build(&material)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("cert.pem") && err.contains("certificate"), "{err}");
    }
}
