//! Settings of one `reporunner` process: defaults < `--config` file <
//! `REPORUNNER_*` env < flags.

use std::time::Duration;
use std::{net::SocketAddr, path::PathBuf};

use reporunner_analyzer::AnalyzerConfig;
use reporunner_auth::AuthConfig;
use reporunner_client::ClientConfig;
use reporunner_dependency::DependencyConfig;
use reporunner_env_detector::EnvDetectorConfig;
use reporunner_health::HealthConfig;
use reporunner_indexer::IndexerConfig;
use reporunner_orchestrator::OrchestratorConfig;
use reporunner_provisioner::ProvisionerConfig;
use reporunner_resolver::ResolverConfig;
use reporunner_runner::RunnerConfig;
use reporunner_server::telemetry::LogConfig;
use reporunner_source::SourceConfig;
use reporunner_tester::TesterConfig;
use serde::{Deserialize, Deserializer, Serialize};

/// Everything one process needs to host its services.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The gRPC address (`REPORUNNER_LISTEN`). A node hosting the orchestrator
    /// or auth serves only those here; a node hosting only agents serves them.
    pub listen: SocketAddr,
    /// Where a node hosting public services and agents together (the
    /// all-in-one `serve`, the embedded node) serves its agents
    /// (`REPORUNNER_INTERNAL_LISTEN`); loopback on a free port by default.
    /// Agents answer only mesh services (see `mesh`), whatever the address.
    pub internal_listen: SocketAddr,
    /// Service identity inside the mesh: the key service tokens are signed with.
    pub mesh: reporunner_identity::MeshConfig,
    /// The Prometheus `/metrics` address (`REPORUNNER_METRICS_LISTEN`);
    /// absent disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Where all state lives (`REPORUNNER_DATA_DIR`).
    pub data_dir: PathBuf,
    /// How long in-flight calls may run on shutdown before connections are cut.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    pub log: LogConfig,
    /// TLS of this process's gRPC listener (`tls.cert`, `tls.key`,
    /// `tls.client_ca` for mutual TLS); empty keeps plain HTTP/2.
    pub tls: reporunner_server::tls::TlsConfig,
    /// A second, plain-text listener serving only grpc.health.v1
    /// (`REPORUNNER_HEALTH_LISTEN`), for kubelet gRPC probes when `tls` is on.
    pub health_listen: Option<SocketAddr>,
    /// The client stack used for every service-to-service call.
    pub client: ClientConfig,
    /// Where the services this process does not host are reached.
    pub endpoints: Endpoints,
    pub env_detector: EnvDetectorConfig,
    /// The source agent; a relative `source.root` is under the data directory.
    pub source: SourceConfig,
    pub analyzer: AnalyzerConfig,
    /// The dependency agent; relative directories are under the data directory.
    pub dependency: DependencyConfig,
    /// The runner agent; relative directories are under the data directory.
    pub runner: RunnerConfig,
    pub health: HealthConfig,
    /// The provisioner agent; its state dir is under the data directory.
    pub provisioner: ProvisionerConfig,
    pub resolver: ResolverConfig,
    /// The tester agent; it runs tests in the sandbox `runner` describes.
    pub tester: TesterConfig,
    /// The indexer; relative `index_dir` and `models_dir` are under the data
    /// directory (`<data>/indexes`, `<data>/models`).
    pub indexer: IndexerConfig,
    pub orchestrator: OrchestratorConfig,
    pub auth: AuthConfig,
    /// The single admin, created on first start when none exists.
    pub admin: AdminBootstrap,
    /// HTTP on the public listener (`listen`): HTTP/JSON of the public RPCs,
    /// `/openapi.json` and the dashboard.
    pub http: HttpSettings,
}

/// What the public listener answers besides gRPC.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// HTTP/JSON and `/openapi.json` (`REPORUNNER_HTTP__ENABLED`); off leaves
    /// the listener gRPC only.
    pub enabled: bool,
    /// The web dashboard, when the binary carries it (`REPORUNNER_HTTP__DASHBOARD`).
    pub dashboard: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dashboard: true,
        }
    }
}

/// How the single admin is created on first start. The password is read from
/// `password` (`REPORUNNER_ADMIN__PASSWORD`, e.g. from a Kubernetes secret) or
/// `password_file`, and is never printed or logged.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminBootstrap {
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for AdminBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBootstrap")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl AdminBootstrap {
    /// The admin's username and password, when configured.
    pub fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(username) = self.username.clone() else {
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(password), _) => password.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read admin.password_file {}: {e}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            (None, None) => {
                anyhow::bail!("admin.username is set but neither admin.password nor admin.password_file is")
            }
        };
        Ok(Some((username, password)))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            internal_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mesh: reporunner_identity::MeshConfig::default(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            data_dir: default_data_dir(),
            stop_timeout: Duration::from_secs(10),
            log: LogConfig::default(),
            tls: reporunner_server::tls::TlsConfig::default(),
            health_listen: None,
            client: ClientConfig::default(),
            endpoints: Endpoints::default(),
            env_detector: EnvDetectorConfig::default(),
            source: SourceConfig {
                root: PathBuf::from("workspaces"),
                ..SourceConfig::default()
            },
            analyzer: AnalyzerConfig::default(),
            dependency: DependencyConfig::default(),
            runner: RunnerConfig::default(),
            health: HealthConfig::default(),
            provisioner: ProvisionerConfig::default(),
            resolver: ResolverConfig::default(),
            tester: TesterConfig::default(),
            indexer: IndexerConfig::default(),
            orchestrator: OrchestratorConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminBootstrap::default(),
            http: HttpSettings::default(),
        }
    }
}

/// `$XDG_DATA_HOME/reporunner`, else `~/.local/share/reporunner`, else `./.reporunner`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("reporunner");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/reporunner"),
        None => PathBuf::from(".reporunner"),
    }
}

/// Endpoints of remote services, each a list of `http://host:port`. In the
/// environment a comma-separated list works too:
/// `REPORUNNER_ENDPOINTS__ENV_DETECTOR=http://10.0.0.5:50051,http://10.0.0.6:50051`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    #[serde(deserialize_with = "list_or_csv")]
    pub auth: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub env_detector: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub source: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub analyzer: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub dependency: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub runner: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub health: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub provisioner: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub resolver: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub tester: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub indexer: Vec<String>,
    #[serde(deserialize_with = "list_or_csv")]
    pub orchestrator: Vec<String>,
}

impl Settings {
    /// The source agent's settings with its root resolved against the
    /// (absolute) data directory, and the data directory and the root added
    /// to the forbidden local roots: no user may have the service's keys,
    /// auth database or other users' workspaces copied into a workspace.
    pub fn source_config(&self) -> SourceConfig {
        let data_dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let mut config = self.source.clone();
        if config.root.is_relative() {
            config.root = data_dir.join(&config.root);
        }
        for forbidden in [data_dir, config.root.clone()] {
            if !config.forbidden_local_roots.contains(&forbidden) {
                config.forbidden_local_roots.push(forbidden);
            }
        }
        config
    }

    /// The indexer's settings with its directories resolved against the
    /// (absolute) data directory.
    pub fn indexer_config(&self) -> IndexerConfig {
        let data_dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let mut config = self.indexer.clone().resolve(&data_dir);
        // Only workspaces the source agent made are indexed.
        config.workspace_roots.push(self.source_config().root);
        config
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_a_list_or_comma_separated_text() {
        let endpoints: Endpoints = serde_json::from_str(
            r#"{"env_detector": "http://a:1, http://b:2", "orchestrator": ["http://c:3"]}"#,
        )
        .unwrap();
        assert_eq!(endpoints.env_detector, vec!["http://a:1", "http://b:2"]);
        assert_eq!(endpoints.orchestrator, vec!["http://c:3"]);
    }

    #[test]
    fn the_admin_password_never_shows_in_debug_output() {
        let admin = AdminBootstrap {
            username: Some("root".into()),
            password: Some("correct horse battery".into()),
            password_file: None,
        };
        let text = format!("{admin:?}");
        assert!(!text.contains("horse"), "{text}");
        assert_eq!(
            admin.credentials().unwrap(),
            Some(("root".into(), "correct horse battery".into()))
        );
        let missing = AdminBootstrap {
            username: Some("root".into()),
            ..Default::default()
        };
        assert!(
            missing
                .credentials()
                .unwrap_err()
                .to_string()
                .contains("admin.password")
        );
    }

    #[test]
    fn tls_and_the_plain_health_port_are_settings() {
        let settings: Settings = serde_json::from_str(
            r#"{"tls": {"cert": "/etc/reporunner/tls/tls.crt", "key": "/etc/reporunner/tls/tls.key",
                "client_ca": "/etc/reporunner/tls/ca.crt"}, "health_listen": "0.0.0.0:50052"}"#,
        )
        .unwrap();
        assert_eq!(
            settings.tls.client_ca.as_deref(),
            Some(std::path::Path::new("/etc/reporunner/tls/ca.crt"))
        );
        assert_eq!(settings.health_listen, Some("0.0.0.0:50052".parse().unwrap()));
        let plain = Settings::default();
        assert!(plain.tls.cert.is_none() && plain.health_listen.is_none());
        let err = serde_json::from_str::<Settings>(r#"{"tls": {"certs": "x"}}"#).unwrap_err();
        assert!(err.to_string().contains("certs"), "{err}");
    }

    #[test]
    fn the_data_dir_and_the_workspace_root_are_never_local_sources() {
        let settings = Settings {
            data_dir: "/srv/reporunner".into(),
            source: SourceConfig {
                root: "/mnt/workspaces".into(),
                forbidden_local_roots: vec!["/srv/secrets".into()],
                ..SourceConfig::default()
            },
            ..Settings::default()
        };
        let config = settings.source_config();
        assert_eq!(
            config.forbidden_local_roots,
            [
                PathBuf::from("/srv/secrets"),
                PathBuf::from("/srv/reporunner"),
                PathBuf::from("/mnt/workspaces")
            ]
        );
        // `serve` ships with no local path allowed.
        assert!(config.allowed_local_roots.is_empty());
        config.validate().unwrap();
        // A relative data directory is made absolute, so the source agent accepts it.
        let relative = Settings {
            data_dir: ".reporunner".into(),
            ..Settings::default()
        };
        let config = relative.source_config();
        assert!(config.forbidden_local_roots.iter().all(|p| p.is_absolute()));
        assert!(config.root.ends_with(".reporunner/workspaces"));
        config.validate().unwrap();
    }

    #[test]
    fn the_internal_listener_and_the_mesh_key_file_are_settings() {
        let settings: Settings = serde_json::from_str(
            r#"{"internal_listen": "127.0.0.1:50061",
                "mesh": {"service_key_file": "/etc/reporunner/mesh/service.key"}}"#,
        )
        .unwrap();
        assert_eq!(settings.internal_listen, "127.0.0.1:50061".parse().unwrap());
        assert_eq!(
            settings.mesh.service_key_file.as_deref(),
            Some(std::path::Path::new("/etc/reporunner/mesh/service.key"))
        );
        let plain = Settings::default();
        assert!(plain.internal_listen.ip().is_loopback() && plain.internal_listen.port() == 0);
        assert!(plain.mesh.service_key_file.is_none());
        let err = serde_json::from_str::<Settings>(r#"{"mesh": {"key_file": "x"}}"#).unwrap_err();
        assert!(err.to_string().contains("key_file"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = serde_json::from_str::<Settings>(r#"{"listne": "127.0.0.1:1"}"#).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }
}
