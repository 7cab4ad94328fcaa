//! Whether this host reaches the package registries.
//!
//! One GET per registry (through `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` when
//! set), a few at once, each within the configured timeout; the whole probe
//! ends within the timeout plus a little slack per round of probes. Results
//! are cached for the configured TTL.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use reporunner_proto::common::v1::Registry;
use tokio::sync::Mutex;

use crate::config::{EnvDetectorConfig, RegistryTarget};

/// Registries probed at once.
pub const PROBE_CONCURRENCY: usize = 8;
/// Time allowed beyond the per-request timeout before a probe is given up.
pub const PROBE_SLACK: Duration = Duration::from_millis(250);

/// Probes the configured registries and caches what it found.
#[derive(Debug)]
pub struct RegistryProbe {
    client: Result<reqwest::Client, String>,
    targets: Vec<RegistryTarget>,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Vec<Registry>)>>,
}

impl RegistryProbe {
    /// A probe of `targets`, each request within `timeout`, results kept for `ttl`.
    ///
    /// Reads the system CA bundle once (see [`system_ca_bundle`]), so that a
    /// host behind a TLS-inspecting proxy is judged as its package managers
    /// would judge it.
    pub fn new(targets: Vec<RegistryTarget>, timeout: Duration, ttl: Duration) -> Self {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::limited(5))
                .user_agent(concat!("reporunner-env-detector/", env!("CARGO_PKG_VERSION")))
        };
        let extra_roots = system_ca_bundle()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok())
            .unwrap_or_default();
        let with_roots = (!extra_roots.is_empty())
            .then(|| {
                extra_roots
                    .into_iter()
                    .fold(builder(), reqwest::ClientBuilder::add_root_certificate)
                    .build()
                    .ok()
            })
            .flatten();
        let client = match with_roots {
            Some(client) => Ok(client),
            None => builder()
                .build()
                .map_err(|err| format!("http client unavailable: {err}")),
        };
        if let Err(err) = &client {
            tracing::warn!(error = %err, "registry probes will all fail");
        }
        Self {
            client,
            targets,
            timeout,
            ttl,
            cache: Mutex::new(None),
        }
    }

    /// A probe of the registries `config` names.
    pub fn from_config(config: &EnvDetectorConfig) -> Self {
        Self::new(
            config.registries.clone(),
            config.registry_timeout(),
            config.cache_ttl(),
        )
    }

    /// The longest [`probe`](Self::probe) can take.
    pub fn max_duration(&self) -> Duration {
        let rounds = u32::try_from(self.targets.len().div_ceil(PROBE_CONCURRENCY))
            .unwrap_or(u32::MAX)
            .max(1);
        (self.timeout + PROBE_SLACK).saturating_mul(rounds) + PROBE_SLACK
    }

    /// Every configured registry, in configuration order, with whether it
    /// answered. Uses the cached result unless it is older than the TTL or
    /// `refresh` is set. Concurrent callers share one probe.
    pub async fn probe(&self, refresh: bool) -> Vec<Registry> {
        let mut cache = self.cache.lock().await;
        if !refresh
            && let Some((at, registries)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return registries.clone();
        }
        let registries = self.probe_uncached().await;
        *cache = Some((Instant::now(), registries.clone()));
        registries
    }

    async fn probe_uncached(&self) -> Vec<Registry> {
        let client = match &self.client {
            Ok(client) => client,
            Err(err) => return self.targets.iter().map(|t| unreachable(t, err.clone())).collect(),
        };
        let timeout = self.timeout;
        // Owned items: borrowed ones make the future not provably Send.
        let probes = stream::iter(self.targets.clone().into_iter().enumerate())
            .map(|(i, target)| {
                let client = client.clone();
                async move { (i, probe_one(&client, &target, timeout).await) }
            })
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect::<Vec<_>>();
        // Each probe is bounded already; this bounds the whole in case one is not.
        let mut answered: HashMap<usize, Registry> =
            match tokio::time::timeout(self.max_duration(), probes).await {
                Ok(results) => results.into_iter().collect(),
                Err(_) => HashMap::new(),
            };
        self.targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                answered
                    .remove(&i)
                    .unwrap_or_else(|| unreachable(target, timed_out(timeout)))
            })
            .collect()
    }
}

/// The largest CA bundle read.
const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// The PEM bundle of the system's trusted CAs: `SSL_CERT_FILE` when set, else
/// the first of the usual distribution paths that exists. Blocking.
pub fn system_ca_bundle() -> Option<Vec<u8>> {
    const CANDIDATES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    from_env
        .into_iter()
        .chain(CANDIDATES.iter().map(std::path::PathBuf::from))
        .find_map(|path| crate::host::read_bounded(&path, MAX_CA_BUNDLE_BYTES))
        .map(String::into_bytes)
        .filter(|pem| !pem.is_empty())
}

/// GETs `target.url` once; reachable when any HTTP status below 500 answers.
pub async fn probe_one(client: &reqwest::Client, target: &RegistryTarget, timeout: Duration) -> Registry {
    let started = Instant::now();
    let request = client.get(&target.url).timeout(timeout).send();
    let outcome = tokio::time::timeout(timeout + PROBE_SLACK, request).await;
    let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    match outcome {
        Ok(Ok(response)) if response.status().as_u16() < 500 => Registry {
            name: target.name.clone(),
            url: target.url.clone(),
            reachable: true,
            latency_ms,
            error: String::new(),
        },
        Ok(Ok(response)) => unreachable(target, format!("HTTP {}", response.status().as_u16())),
        Ok(Err(err)) => unreachable(target, describe_error(&err, timeout)),
        Err(_) => unreachable(target, timed_out(timeout)),
    }
}

fn unreachable(target: &RegistryTarget, error: String) -> Registry {
    Registry {
        name: target.name.clone(),
        url: target.url.clone(),
        reachable: false,
        latency_ms: 0,
        error,
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {} ms", timeout.as_millis())
}

/// A short reason for a failed request: "timed out after 2000 ms",
/// "connection refused", "dns error: ...", "tls error: ...".
fn describe_error(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return timed_out(timeout);
    }
    if err.is_builder() {
        return format!("invalid url: {}", innermost(err));
    }
    let chain = chain_text(err).to_ascii_lowercase();
    let io_kind = io_error_kind(err);
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => return "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => return "connection reset".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => return timed_out(timeout),
        _ => {}
    }
    let inner = truncate(&innermost(err), 160);
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        format!("dns error: {inner}")
    } else if chain.contains("certificate") || chain.contains("tls") {
        format!("tls error: {inner}")
    } else if err.is_connect() {
        format!("connect error: {inner}")
    } else if err.is_redirect() {
        format!("redirect error: {inner}")
    } else {
        inner
    }
}

fn sources(err: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(err), |e| e.source()).take(16)
}

fn io_error_kind(err: &reqwest::Error) -> Option<std::io::ErrorKind> {
    sources(err)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

fn innermost(err: &reqwest::Error) -> String {
    sources(err)
        .last()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

fn chain_text(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    for source in sources(err) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_duration_grows_with_rounds() {
        let targets = |n: usize| {
            (0..n)
                .map(|i| RegistryTarget::new(format!("r{i}"), "http://x/"))
                .collect()
        };
        let one = RegistryProbe::new(targets(3), Duration::from_secs(2), Duration::ZERO);
        assert_eq!(one.max_duration(), Duration::from_millis(2_500));
        let two = RegistryProbe::new(targets(9), Duration::from_secs(2), Duration::ZERO);
        assert_eq!(two.max_duration(), Duration::from_millis(4_750));
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("ok", 5), "ok");
    }
}
