//! One probe of each kind, validated once and then run any number of times.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use regex::{RegexSet, RegexSetBuilder};
use reporunner_client::Transport;
use reporunner_proto::agents::{
    health::v1::{ProbeSpec, probe_spec},
    runner::v1::{LogsRequest, runner_service_client::RunnerServiceClient},
};

use crate::{
    HealthConfig,
    error::{HealthError, Result},
};

/// Lines printed by common servers once they accept connections.
pub const DEFAULT_READY_PATTERNS: &[&str] = &[
    r"listening on",
    r"listening at",
    r"now listening",
    r"uvicorn running on",
    r"application startup complete",
    r"serving on",
    r"running on https?://",
    r"server (is )?running",
    r"server started",
    r"started server on",
    r"ready in \d+",
    r"ready - started server",
    r"local:\s+https?://",
    r"starting development server at",
    r"booting worker",
    r"started \S+ in [\d.]+ seconds",
    r"tomcat started on port",
    r"compiled successfully",
    r"http server started",
];

/// Log lines read at most per log probe, whatever the runner holds.
const MAX_LOG_MESSAGES: usize = 100_000;

/// A probe that passed validation.
#[derive(Clone, Debug)]
pub struct Probe {
    pub kind: ProbeKind,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum ProbeKind {
    Http { base_url: String, paths: Vec<String> },
    Tcp { host: String, port: u16 },
    Process { pid: u32 },
    Log { process_id: String, patterns: RegexSet },
}

impl ProbeKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Tcp { .. } => "tcp",
            Self::Process { .. } => "process",
            Self::Log { .. } => "log",
        }
    }
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub up: bool,
    pub detail: String,
}

/// Checks a request's probes against the configured bounds.
pub fn validate(specs: &[ProbeSpec], config: &HealthConfig) -> Result<Vec<Probe>> {
    if specs.is_empty() {
        return Err(HealthError::InvalidProbe("the request names no probe".into()));
    }
    if specs.len() > config.max_probes {
        return Err(HealthError::InvalidProbe(format!(
            "{} probes in one request; at most {} are allowed",
            specs.len(),
            config.max_probes
        )));
    }
    specs.iter().map(|spec| validate_one(spec, config)).collect()
}

fn validate_one(spec: &ProbeSpec, config: &HealthConfig) -> Result<Probe> {
    let invalid = |message: String| Err(HealthError::InvalidProbe(message));
    let timeout = match spec.timeout_ms {
        0 => config.default_timeout,
        ms if Duration::from_millis(u64::from(ms)) > config.max_timeout => {
            return invalid(format!(
                "probe timeout {ms} ms is over the limit of {} ms",
                config.max_timeout.as_millis()
            ));
        }
        ms => Duration::from_millis(u64::from(ms)),
    };
    let kind = match &spec.probe {
        None => return invalid("a probe spec names no probe (http, tcp, process or log)".into()),
        Some(probe_spec::Probe::Http(http)) => {
            let base = http.base_url.trim_end_matches('/');
            let parsed = reqwest::Url::parse(base)
                .map_err(|e| HealthError::InvalidProbe(format!("http probe base_url {base:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return invalid(format!(
                    "http probe base_url {base:?} must be an http(s) URL with a host"
                ));
            }
            if http.paths.len() > config.max_http_paths {
                return invalid(format!(
                    "http probe has {} paths; at most {} are allowed",
                    http.paths.len(),
                    config.max_http_paths
                ));
            }
            let mut paths: Vec<String> = Vec::new();
            for path in http.paths.iter().map(String::as_str).chain(["/"]) {
                if !path.starts_with('/') || path.len() > 2048 || path.chars().any(char::is_control) {
                    return invalid(format!(
                        "http probe path {path:?} must start with / and be printable"
                    ));
                }
                if !paths.iter().any(|p| p == path) {
                    paths.push(path.to_owned());
                }
            }
            ProbeKind::Http {
                base_url: base.to_owned(),
                paths,
            }
        }
        Some(probe_spec::Probe::Tcp(tcp)) => {
            let port = u16::try_from(tcp.port).ok().filter(|p| *p != 0).ok_or_else(|| {
                HealthError::InvalidProbe(format!("tcp probe port {} is not a port", tcp.port))
            })?;
            if tcp.host.is_empty() || tcp.host.len() > 253 {
                return invalid("tcp probe host is empty or too long".into());
            }
            ProbeKind::Tcp {
                host: tcp.host.clone(),
                port,
            }
        }
        Some(probe_spec::Probe::Process(process)) => {
            if process.pid == 0 {
                return invalid("process probe pid 0 is not a process".into());
            }
            ProbeKind::Process { pid: process.pid }
        }
        Some(probe_spec::Probe::Log(log)) => {
            if log.process_id.is_empty() {
                return invalid("log probe names no runner process_id".into());
            }
            if log.patterns.len() > config.max_log_patterns {
                return invalid(format!(
                    "log probe has {} patterns; at most {} are allowed",
                    log.patterns.len(),
                    config.max_log_patterns
                ));
            }
            if let Some(long) = log.patterns.iter().find(|p| p.len() > config.max_pattern_bytes) {
                return invalid(format!(
                    "log probe pattern {:?}... is longer than {} bytes",
                    long.chars().take(40).collect::<String>(),
                    config.max_pattern_bytes
                ));
            }
            let patterns: Vec<&str> = if log.patterns.is_empty() {
                DEFAULT_READY_PATTERNS.to_vec()
            } else {
                log.patterns.iter().map(String::as_str).collect()
            };
            let patterns = RegexSetBuilder::new(&patterns)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| HealthError::InvalidProbe(format!("log probe pattern: {e}")))?;
            ProbeKind::Log {
                process_id: log.process_id.clone(),
                patterns,
            }
        }
    };
    Ok(Probe { kind, timeout })
}

/// Runs probes; holds the HTTP client and the channel to the runner.
#[derive(Clone, Debug)]
pub struct Prober {
    http: reqwest::Client,
    runner: Option<RunnerServiceClient<Transport>>,
    log_tail_lines: usize,
}

impl Prober {
    pub fn new(config: &HealthConfig, runner: Option<Transport>) -> Result<Self> {
        let http = reqwest::Client::builder()
            // A proxy from the environment must never see probes of local apps.
            .no_proxy()
            // A redirect is an answer: the app is up.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| HealthError::InvalidConfig(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            runner: runner.map(RunnerServiceClient::new),
            log_tail_lines: config.log_tail_lines.max(1),
        })
    }

    /// Whether log probes can run.
    pub fn has_runner(&self) -> bool {
        self.runner.is_some()
    }

    /// Runs one probe within its timeout.
    pub async fn run(&self, probe: &Probe) -> Outcome {
        let started = Instant::now();
        let outcome = tokio::time::timeout(probe.timeout, self.run_inner(&probe.kind)).await;
        let outcome = outcome.unwrap_or_else(|_| Outcome {
            up: false,
            detail: format!(
                "{} probe timed out after {} ms",
                probe.kind.name(),
                probe.timeout.as_millis()
            ),
        });
        metrics::counter!(
            crate::metrics::PROBES_TOTAL,
            "kind" => probe.kind.name(),
            "result" => if outcome.up { "up" } else { "down" }
        )
        .increment(1);
        tracing::debug!(kind = probe.kind.name(), up = outcome.up, elapsed_ms = started.elapsed().as_millis() as u64, detail = %outcome.detail, "probe");
        outcome
    }

    async fn run_inner(&self, kind: &ProbeKind) -> Outcome {
        match kind {
            ProbeKind::Http { base_url, paths } => self.http_probe(base_url, paths).await,
            ProbeKind::Tcp { host, port } => tcp_probe(host, *port).await,
            ProbeKind::Process { pid } => process_probe(*pid),
            ProbeKind::Log { process_id, patterns } => self.log_probe(process_id, patterns).await,
        }
    }

    async fn http_probe(&self, base_url: &str, paths: &[String]) -> Outcome {
        let mut last = String::from("no path answered");
        for path in paths {
            let started = Instant::now();
            match self.http.get(format!("{base_url}{path}")).send().await {
                Ok(response) => {
                    let status = response.status();
                    let detail = format!(
                        "GET {path} -> {} in {} ms",
                        status.as_u16(),
                        started.elapsed().as_millis()
                    );
                    if !status.is_server_error() {
                        return Outcome { up: true, detail };
                    }
                    last = detail;
                }
                // Nothing listens: the other paths would fail the same way.
                Err(err) if err.is_connect() => {
                    return Outcome {
                        up: false,
                        detail: format!("GET {path}: cannot connect to {base_url}"),
                    };
                }
                Err(err) => last = format!("GET {path}: {}", short_error(&err)),
            }
        }
        Outcome {
            up: false,
            detail: last,
        }
    }

    async fn log_probe(&self, process_id: &str, patterns: &RegexSet) -> Outcome {
        let Some(runner) = &self.runner else {
            return Outcome {
                up: false,
                detail: HealthError::NoRunner.to_string(),
            };
        };
        let request = LogsRequest {
            process_id: process_id.to_owned(),
            follow: false,
            after_sequence: 0,
        };
        let mut stream = match runner.clone().logs(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return Outcome {
                    up: false,
                    detail: format!("cannot read the log of {process_id}: {}", status.message()),
                };
            }
        };
        let mut tail: VecDeque<(u64, String)> = VecDeque::with_capacity(self.log_tail_lines);
        let mut read = 0;
        while let Some(message) = stream.next().await {
            let Ok(message) = message else { break };
            let Some(line) = message.line else { continue };
            if tail.len() == self.log_tail_lines {
                tail.pop_front();
            }
            tail.push_back((line.sequence, line.text));
            read += 1;
            if read >= MAX_LOG_MESSAGES {
                break;
            }
        }
        match tail.iter().find(|(_, text)| patterns.is_match(text)) {
            Some((sequence, text)) => Outcome {
                up: true,
                detail: format!(
                    "log line {sequence} says it is ready: {}",
                    text.chars().take(120).collect::<String>()
                ),
            },
            None => Outcome {
                up: false,
                detail: format!("no ready line in the last {} log lines", tail.len()),
            },
        }
    }
}

async fn tcp_probe(host: &str, port: u16) -> Outcome {
    let started = Instant::now();
    match tokio::net::TcpStream::connect((host, port)).await {
        Ok(_) => Outcome {
            up: true,
            detail: format!(
                "tcp {host}:{port} accepted in {} ms",
                started.elapsed().as_millis()
            ),
        },
        Err(err) => Outcome {
            up: false,
            detail: format!("tcp {host}:{port}: {err}"),
        },
    }
}

/// Alive means present in /proc and neither a zombie nor dead.
fn process_probe(pid: u32) -> Outcome {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the last ')' (the command name may hold any byte).
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .unwrap_or('?');
            if matches!(state, 'Z' | 'X' | 'x') {
                Outcome {
                    up: false,
                    detail: format!("process {pid} has exited (state {state})"),
                }
            } else {
                Outcome {
                    up: true,
                    detail: format!("process {pid} is alive (state {state})"),
                }
            }
        }
        Err(_) => Outcome {
            up: false,
            detail: format!("process {pid} is not running"),
        },
    }
}

fn short_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            text = inner.to_string();
            source = inner.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::agents::health::v1::{HttpProbe, LogProbe, TcpProbe};

    use super::*;

    fn spec(probe: probe_spec::Probe) -> ProbeSpec {
        ProbeSpec {
            probe: Some(probe),
            timeout_ms: 0,
        }
    }

    #[test]
    fn http_paths_end_with_root_once_and_bad_probes_name_the_problem() {
        let config = HealthConfig::default();
        let probes = validate(
            &[spec(probe_spec::Probe::Http(HttpProbe {
                base_url: "http://127.0.0.1:8000/".into(),
                paths: vec!["/health".into(), "/".into()],
            }))],
            &config,
        )
        .unwrap();
        match &probes[0].kind {
            ProbeKind::Http { base_url, paths } => {
                assert_eq!(base_url, "http://127.0.0.1:8000");
                assert_eq!(paths, &vec!["/health".to_owned(), "/".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        let cases = [
            (
                spec(probe_spec::Probe::Tcp(TcpProbe {
                    host: "h".into(),
                    port: 70_000,
                })),
                "70000",
            ),
            (
                spec(probe_spec::Probe::Http(HttpProbe {
                    base_url: "ftp://x".into(),
                    paths: vec![],
                })),
                "ftp://x",
            ),
            (
                spec(probe_spec::Probe::Log(LogProbe {
                    process_id: "p".into(),
                    patterns: vec!["(unclosed".into()],
                })),
                "pattern",
            ),
            (ProbeSpec::default(), "names no probe"),
        ];
        for (spec, needle) in cases {
            let err = validate(&[spec], &config).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should name {needle}");
        }
        assert!(validate(&[], &config).is_err());
    }

    #[test]
    fn default_patterns_recognise_common_servers() {
        let set = RegexSetBuilder::new(DEFAULT_READY_PATTERNS)
            .case_insensitive(true)
            .build()
            .unwrap();
        for line in [
            "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
            " * Running on http://127.0.0.1:5000",
            "Starting development server at http://127.0.0.1:8000/",
            "[2026-01-01 10:00:00 +0000] [7] [INFO] Listening at: http://0.0.0.0:8000 (7)",
            "  ➜  Local:   http://localhost:5173/",
            "Started DemoApplication in 2.345 seconds (process running for 2.8)",
            "Server listening on port 3000",
        ] {
            assert!(set.is_match(line), "{line}");
        }
        assert!(!set.is_match("Collecting flask==3.0.0"));
    }

    #[test]
    fn a_missing_process_is_down_and_this_one_is_up() {
        assert!(process_probe(std::process::id()).up);
        assert!(!process_probe(u32::MAX - 1).up);
    }
}
