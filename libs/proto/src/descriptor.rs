//! Method metadata read from the descriptors: streaming kind and idempotency.

use std::{collections::HashMap, sync::OnceLock};

use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

/// The descriptor pool of every contract, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is produced by our own build script; failing to decode it is a
        // build defect, not a runtime condition.
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("embedded descriptor set decodes")
    })
}

/// How messages flow in a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    Unary,
    ClientStreaming,
    ServerStreaming,
    BidiStreaming,
}

impl MethodKind {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStreaming => "client_stream",
            Self::ServerStreaming => "server_stream",
            Self::BidiStreaming => "bidi_stream",
        }
    }
}

/// What plumbing needs to know about one method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// `/package.Service/Method`, as it appears in the HTTP/2 path.
    pub path: String,
    pub kind: MethodKind,
    /// True when the contract marks the method `NO_SIDE_EFFECTS` or
    /// `IDEMPOTENT`: only these are retried by the client stack.
    pub idempotent: bool,
}

fn idempotency_level(method: &MethodDescriptor) -> i32 {
    let options = method.options();
    match options.get_field_by_name("idempotency_level").as_deref() {
        Some(Value::EnumNumber(level)) => *level,
        _ => 0,
    }
}

fn info(method: &MethodDescriptor) -> MethodInfo {
    let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => MethodKind::Unary,
        (true, false) => MethodKind::ClientStreaming,
        (false, true) => MethodKind::ServerStreaming,
        (true, true) => MethodKind::BidiStreaming,
    };
    // google.protobuf.MethodOptions.IdempotencyLevel: 1 = NO_SIDE_EFFECTS, 2 = IDEMPOTENT.
    let idempotent = matches!(idempotency_level(method), 1 | 2);
    MethodInfo {
        path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        kind,
        idempotent,
    }
}

/// Every method of every Repo Runner service, by HTTP/2 path.
pub fn methods() -> &'static HashMap<String, MethodInfo> {
    static METHODS: OnceLock<HashMap<String, MethodInfo>> = OnceLock::new();
    METHODS.get_or_init(|| {
        pool()
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| {
                let info = info(&method);
                (info.path.clone(), info)
            })
            .collect()
    })
}

/// The method at `path`, when it is one of ours.
pub fn method(path: &str) -> Option<&'static MethodInfo> {
    methods().get(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_is_a_side_effect_free_unary_call() {
        let m = method("/reporunner.agents.env_detector.v1.EnvDetectorService/Detect").unwrap();
        assert_eq!(m.kind, MethodKind::Unary);
        assert!(m.idempotent);
    }

    #[test]
    fn create_run_is_not_retried_and_watch_run_streams() {
        let create = method("/reporunner.orchestrator.v1.OrchestratorService/CreateRun").unwrap();
        assert!(!create.idempotent);
        let watch = method("/reporunner.orchestrator.v1.OrchestratorService/WatchRun").unwrap();
        assert_eq!(watch.kind, MethodKind::ServerStreaming);
        let upload = method("/reporunner.agents.source.v1.SourceService/UploadArchive").unwrap();
        assert_eq!(upload.kind, MethodKind::ClientStreaming);
    }

    #[test]
    fn every_service_of_the_design_is_in_the_contracts() {
        let services: Vec<String> = pool().services().map(|s| s.full_name().to_owned()).collect();
        for name in [
            "reporunner.orchestrator.v1.OrchestratorService",
            "reporunner.auth.v1.AuthService",
            "reporunner.auth.v1.AdminService",
            "reporunner.index.v1.IndexService",
            "reporunner.agents.env_detector.v1.EnvDetectorService",
            "reporunner.agents.source.v1.SourceService",
            "reporunner.agents.analyzer.v1.AnalyzerService",
            "reporunner.agents.dependency.v1.DependencyService",
            "reporunner.agents.provisioner.v1.ProvisionerService",
            "reporunner.agents.runner.v1.RunnerService",
            "reporunner.agents.health.v1.HealthService",
            "reporunner.agents.resolver.v1.ResolverService",
            "reporunner.agents.tester.v1.TesterService",
        ] {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from {services:?}"
            );
        }
    }
}
