use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Settings of the client stack, shared by every outbound channel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Time allowed to open a connection.
    pub connect_timeout_ms: u64,
    /// Deadline of a call whose caller set none.
    pub default_deadline_ms: u64,
    /// Attempts of an idempotent call, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// HTTP/2 keep-alive: a ping every interval, the connection dropped when
    /// one is not answered within the timeout.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Longest pause between two attempts to re-establish a health watch.
    pub health_retry_max_ms: u64,
    /// Largest request body buffered to allow a retry; larger ones are sent once.
    pub max_retry_buffer_bytes: usize,
    /// How often `dns:///host:port` endpoints are resolved again, so that the
    /// pool follows scale-up and scale-down.
    pub resolve_interval_ms: u64,
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
    pub reload_interval_ms: u64,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            domain: None,
            reload_interval_ms: 10_000,
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
            connect_timeout_ms: 2_000,
            default_deadline_ms: 30_000,
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 1_000,
            keepalive_interval_ms: 10_000,
            keepalive_timeout_ms: 5_000,
            health_retry_max_ms: 2_000,
            max_retry_buffer_bytes: 4 << 20,
            resolve_interval_ms: 5_000,
            tls: ClientTlsConfig::default(),
        }
    }
}

impl ClientConfig {
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
    pub(crate) fn default_deadline(&self) -> Duration {
        Duration::from_millis(self.default_deadline_ms.max(1))
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
            jail.set_env("REPORUNNER_CLIENT__RESOLVE_INTERVAL_MS", "1000");
            let client = load()?.client;
            assert_eq!(client.tls.ca, Some(PathBuf::from("/etc/reporunner/ca.crt")));
            assert_eq!(client.tls.key, Some(PathBuf::from("/etc/reporunner/tls.key")));
            assert_eq!(client.tls.domain.as_deref(), Some("reporunner.svc"));
            assert_eq!(client.tls.reload_interval_ms, 10_000, "unset keys keep defaults");
            assert_eq!(client.resolve_interval_ms, 1000);
            Ok(())
        });
    }
}
