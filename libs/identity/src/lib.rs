//! Service identity inside the mesh: who a calling service is, and whether it
//! may call an agent.
//!
//! ```text
//! caller:  connect(..).with_identity(Arc::new(ServiceTokenSource::new(&key, "orchestrator")))
//! agent:   GrpcServer::new().add_service(MeshLayer::new(&key).layer(svc))
//! ```
//!
//! A service token is an HS256 JWT signed with the [`MeshKey`], a secret only
//! services hold (never the users' JWT key): iss `reporunner-mesh`, aud
//! `reporunner-agents`, sub = the calling service, valid five minutes. It goes
//! in its own metadata header, [`SERVICE_HEADER`], so a user's bearer token in
//! `authorization` can never pass for it. [`MeshLayer`] lets `grpc.health.v1`
//! through and requires, for everything else, a valid token
//! (UNAUTHENTICATED otherwise) whose service is one of the target's
//! [`ALLOWED_CALLERS`] (PERMISSION_DENIED otherwise).
#![forbid(unsafe_code)]

mod key;
mod layer;
mod token;

pub use key::{MIN_KEY_LEN, MeshConfig, MeshKey, SERVICE_KEY_FILE};
pub use layer::{MeshCaller, MeshGuarded, MeshLayer, mesh_caller};
pub use token::{ServiceClaims, ServiceTokenSource, TOKEN_TTL};

use reporunner_proto::{agents, index};

/// The metadata header that carries the caller's service token.
pub const SERVICE_HEADER: &str = "x-reporunner-service";
/// The `iss` of every service token.
pub const ISSUER: &str = "reporunner-mesh";
/// The `aud` of every service token.
pub const AUDIENCE: &str = "reporunner-agents";

/// The orchestrator's service name, as it appears in `sub`.
pub const ORCHESTRATOR: &str = "orchestrator";
/// The health agent's service name (it reads the runner's logs for log probes).
pub const HEALTH: &str = "health";

/// Who may call each agent, by the agent's full gRPC service name: the one
/// place the mesh's call graph is written down. A service missing here
/// accepts no caller.
pub const ALLOWED_CALLERS: &[(&str, &[&str])] = &[
    // Plugins run outside the node; one built on this crate's `MeshLayer`
    // (with the mesh key) accepts the orchestrator and no one else.
    (
        agents::plugin::v1::plugin_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::env_detector::v1::env_detector_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::source::v1::source_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::analyzer::v1::analyzer_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::dependency::v1::dependency_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::runner::v1::runner_service_server::SERVICE_NAME,
        &[ORCHESTRATOR, HEALTH],
    ),
    (
        agents::health::v1::health_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::provisioner::v1::provisioner_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::resolver::v1::resolver_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (
        agents::tester::v1::tester_service_server::SERVICE_NAME,
        &[ORCHESTRATOR],
    ),
    (index::v1::index_service_server::SERVICE_NAME, &[ORCHESTRATOR]),
];

/// Callers limited to some methods of a service they may call: `(service,
/// caller, methods)`. The health agent only reads the runner's output (log
/// probes); it may not start, stop or inspect processes.
pub const METHOD_LIMITS: &[(&str, &str, &[&str])] = &[(
    agents::runner::v1::runner_service_server::SERVICE_NAME,
    HEALTH,
    &["Logs"],
)];

/// Whether `caller` may call `method` of `service` (full gRPC names, the
/// method without its service): among the service's [`ALLOWED_CALLERS`],
/// and within its [`METHOD_LIMITS`] if it has any.
pub fn may_call(caller: &str, service: &str, method: &str) -> bool {
    allowed_callers(service).contains(&caller)
        && METHOD_LIMITS
            .iter()
            .filter(|(s, c, _)| *s == service && *c == caller)
            .all(|(_, _, methods)| methods.contains(&method))
}

/// The services allowed to call `service` (a full gRPC service name); empty
/// when it is not an agent.
pub fn allowed_callers(service: &str) -> &'static [&'static str] {
    ALLOWED_CALLERS
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, callers)| *callers)
        .unwrap_or(&[])
}

/// Why a key could not be loaded or a token minted.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or create the mesh key {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "mesh.service_key_file is {path}, which does not exist; create it with at least \
         {MIN_KEY_LEN} random bytes (e.g. `head -c 32 /dev/urandom > {path}`) or unset the setting"
    )]
    MissingKeyFile { path: std::path::PathBuf },
    #[error("the mesh key {path} holds {len} bytes; it needs at least {MIN_KEY_LEN}")]
    KeyTooShort { path: std::path::PathBuf, len: usize },
    #[error("cannot sign a service token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_of_the_contracts_has_its_callers_listed() {
        let agents: Vec<String> = reporunner_proto::descriptor::pool()
            .services()
            .map(|s| s.full_name().to_owned())
            .filter(|name| name.starts_with("reporunner.agents.") || name.starts_with("reporunner.index."))
            .collect();
        assert_eq!(agents.len(), ALLOWED_CALLERS.len(), "{agents:?}");
        for agent in &agents {
            assert!(
                allowed_callers(agent).contains(&ORCHESTRATOR),
                "{agent} must accept the orchestrator"
            );
        }
        assert!(allowed_callers("reporunner.orchestrator.v1.OrchestratorService").is_empty());
        assert_eq!(
            allowed_callers(agents::runner::v1::runner_service_server::SERVICE_NAME),
            &[ORCHESTRATOR, HEALTH]
        );
    }

    #[test]
    fn the_health_agent_may_only_read_the_runners_logs() {
        let runner = agents::runner::v1::runner_service_server::SERVICE_NAME;
        assert!(may_call(HEALTH, runner, "Logs"));
        for method in ["Start", "Stop", "Status"] {
            assert!(!may_call(HEALTH, runner, method), "{method}");
            assert!(may_call(ORCHESTRATOR, runner, method), "{method}");
        }
        let source = agents::source::v1::source_service_server::SERVICE_NAME;
        assert!(!may_call(HEALTH, source, "Fetch"));
        assert!(may_call(ORCHESTRATOR, source, "Fetch"));
    }
}
