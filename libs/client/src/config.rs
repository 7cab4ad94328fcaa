use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Settings of the client stack, shared by every outbound channel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Time allowed to open a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of a call whose caller set none.
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    /// Attempts of an idempotent call, the first included.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// HTTP/2 keep-alive: a ping every interval, the connection dropped when
    /// one is not answered within the timeout.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Longest pause between two attempts to re-establish a health watch.
    #[serde(with = "humantime_serde")]
    pub health_retry_max: Duration,
    /// Largest request body buffered to allow a retry; larger ones are sent once.
    pub max_retry_buffer_bytes: usize,
    /// How often `dns:///host:port` endpoints are resolved again, so that the
    /// pool follows scale-up and scale-down.
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// TLS to the endpoints (`client.tls.*`); off unless `ca` is set.
    pub tls: ClientTlsConfig,
}

/// Client TLS settings (`client.tls.*`, env `REPORUNNER_CLIENT__TLS__CA` …).
/// With `ca` set every endpoint is reached over TLS (an `http://` endpoint is
/// dialled as `https://`); with `cert` and `key` as well the client presents
/// its certificate, as servers with `tls.client_ca` (mutual TLS) demand.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM bundle of the CAs that sign the servers' certificates.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain this client presents (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name the servers' certificates are checked against, instead of the
    /// endpoint's host (e.g. when endpoints are IP addresses).
    pub domain: Option<String>,
    /// How often the three files are re-read; when they changed, new
    /// connections use them. 0 turns reloading off.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            domain: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl ClientTlsConfig {
    /// Whether any TLS setting is present.
    pub fn is_enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.domain.is_some()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            default_deadline: Duration::from_secs(30),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            health_retry_max: Duration::from_secs(2),
            max_retry_buffer_bytes: 4 << 20,
            resolve_interval: Duration::from_secs(5),
            tls: ClientTlsConfig::default(),
        }
    }
}

impl ClientConfig {
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout.max(Duration::from_millis(1))
    }
    pub(crate) fn default_deadline(&self) -> Duration {
        self.default_deadline.max(Duration::from_millis(1))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        client: ClientConfig,
    }

    #[derive(Serialize)]
    struct NoFlags {}

    #[test]
    fn tls_and_discovery_settings_load_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            let load = || {
                reporunner_server::config::load::<Settings, _>(None, &NoFlags {}).map_err(|e| e.to_string())
            };
            assert!(!load()?.client.tls.is_enabled(), "off unless configured");
            jail.set_env("REPORUNNER_CLIENT__TLS__CA", "/etc/reporunner/ca.crt");
            jail.set_env("REPORUNNER_CLIENT__TLS__CERT", "/etc/reporunner/tls.crt");
            jail.set_env("REPORUNNER_CLIENT__TLS__KEY", "/etc/reporunner/tls.key");
            jail.set_env("REPORUNNER_CLIENT__TLS__DOMAIN", "reporunner.svc");
            jail.set_env("REPORUNNER_CLIENT__RESOLVE_INTERVAL", "1s");
            let client = load()?.client;
            assert_eq!(client.tls.ca, Some(PathBuf::from("/etc/reporunner/ca.crt")));
            assert_eq!(client.tls.key, Some(PathBuf::from("/etc/reporunner/tls.key")));
            assert_eq!(client.tls.domain.as_deref(), Some("reporunner.svc"));
            assert_eq!(
                client.tls.reload_interval,
                Duration::from_secs(10),
                "unset keys keep defaults"
            );
            assert_eq!(client.resolve_interval, Duration::from_secs(1));
            Ok(())
        });
    }
}
