//! Typed clients of the agents the orchestrator calls.
//!
//! Each client owns its agent's name, its per-call deadline and its error
//! mapping ([`OrchestratorError::from_agent`], and `AgentIncomplete` for an
//! answer without the field the orchestrator needs), so that a step reads
//! `engine.clients.source.fetch(request)` instead of building a generated
//! client, setting a timeout and mapping the status by hand. Retries belong
//! to the channel: `reporunner-client` retries the methods the contract marks
//! idempotent, on UNAVAILABLE only.
//!
//! A client wraps a [`Transport`]: a health-checked [`ServiceChannel`] to
//! the agent's endpoints, or the agent's own server in this process
//! ([`Transport::in_process`]), which skips the network hop and lets tests
//! swap a fake agent in.

use std::time::Duration;

use reporunner_client::{ENDPOINT_HEADER, Transport};
use reporunner_proto::{
    agents::{
        analyzer::v1::{AnalyzeRequest, analyzer_service_client::AnalyzerServiceClient},
        dependency::v1::{
            InstallRequest, InstallResponse, dependency_service_client::DependencyServiceClient,
        },
        env_detector::v1::{
            DetectRequest, DetectResponse, env_detector_service_client::EnvDetectorServiceClient,
        },
        health::v1::{
            ProbeRequest, ProbeResponse, WatchRequest, WatchResponse,
            health_service_client::HealthServiceClient,
        },
        provisioner::v1::{
            ProvisionRequest, ProvisionResponse, ReleaseRequest, ReleaseResponse,
            provisioner_service_client::ProvisionerServiceClient,
        },
        resolver::v1::{DiagnoseRequest, Diagnosis, resolver_service_client::ResolverServiceClient},
        runner::v1::{
            LogsRequest, LogsResponse, ProcessStatus, StartRequest, StatusRequest, StopRequest,
            runner_service_client::RunnerServiceClient,
        },
        source::v1::{
            FetchRequest, FetchResponse, UploadArchiveHeader, UploadArchiveRequest,
            source_service_client::SourceServiceClient, upload_archive_request,
        },
        tester::v1::{RunTestsRequest, RunTestsResponse, tester_service_client::TesterServiceClient},
    },
    common::v1::RunPlan,
};

use crate::{
    Agents, OrchestratorConfig, OrchestratorError, Result,
    run::step::{
        ANALYZER, DEPENDENCY, ENV_DETECTOR, HEALTH, INDEXER, PROVISIONER, RESOLVER, RUNNER, SOURCE, TESTER,
    },
};

/// One agent as the orchestrator sees it: its name, its transport (none
/// when this orchestrator has no endpoint for it) and its deadline.
#[derive(Clone, Debug)]
pub(crate) struct Agent {
    pub name: &'static str,
    transport: Option<Transport>,
    pub deadline: Duration,
}

impl Agent {
    pub fn new(name: &'static str, transport: Option<&Transport>, deadline: Duration) -> Self {
        Self {
            name,
            transport: transport.cloned(),
            deadline,
        }
    }

    /// The agent behind `transport` (in-process or over the network).
    #[cfg(test)]
    pub fn over(name: &'static str, transport: Transport, deadline: Duration) -> Self {
        Self {
            name,
            transport: Some(transport),
            deadline,
        }
    }

    /// Whether this orchestrator has an endpoint for the agent.
    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// The transport; UNAVAILABLE naming the missing endpoint when none.
    pub fn transport(&self) -> Result<Transport> {
        self.transport
            .clone()
            .ok_or_else(|| OrchestratorError::AgentUnavailable {
                agent: self.name,
                detail: format!(
                    "this orchestrator has no endpoint for it (endpoints.{})",
                    self.name
                ),
            })
    }

    /// `message` as a request under this agent's deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_within(message, self.deadline)
    }

    /// `message` as a request under `deadline` (a long watch, a stop with
    /// its grace).
    pub fn request_within<T>(&self, message: T, deadline: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        request
    }

    /// A failed call, classified by its status code.
    pub fn failed(&self, status: tonic::Status) -> OrchestratorError {
        OrchestratorError::from_agent(self.name, status)
    }

    /// An answer without `what`.
    pub fn incomplete(&self, what: &'static str) -> OrchestratorError {
        OrchestratorError::AgentIncomplete {
            agent: self.name,
            what,
        }
    }
}

macro_rules! typed_client {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub(crate) struct $name(pub Agent);

        impl std::ops::Deref for $name {
            type Target = Agent;
            fn deref(&self) -> &Agent {
                &self.0
            }
        }
    };
}

typed_client!(
    /// The source agent: fetches repositories into workspaces.
    SourceClient
);
typed_client!(
    /// The env-detector: what the host has.
    EnvDetectorClient
);
typed_client!(
    /// The analyzer: the plan of a workspace.
    AnalyzerClient
);
typed_client!(
    /// The dependency agent: installs and builds a component.
    DependencyClient
);
typed_client!(
    /// The runner: starts, watches and stops a run's processes.
    RunnerClient
);
typed_client!(
    /// The health agent: probes started components.
    HealthClient
);
typed_client!(
    /// The provisioner: backing services of a run.
    ProvisionerClient
);
typed_client!(
    /// The resolver: diagnoses failures and proposes plan patches.
    ResolverClient
);
typed_client!(
    /// The tester: runs a component's tests once.
    TesterClient
);

/// The size of each chunk of an uploaded archive sent to the source agent.
const UPLOAD_CHUNK: usize = 1 << 20;

impl SourceClient {
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse> {
        SourceServiceClient::new(self.transport()?)
            .fetch(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Sends an archive to be extracted as a workspace: `header`, then the
    /// content in chunks. The same answer as a fetch.
    pub async fn upload(
        &self,
        header: UploadArchiveHeader,
        content: impl AsRef<[u8]>,
    ) -> Result<FetchResponse> {
        let content = content.as_ref();
        let mut parts = vec![UploadArchiveRequest {
            part: Some(upload_archive_request::Part::Header(header)),
        }];
        parts.extend(content.chunks(UPLOAD_CHUNK).map(|chunk| UploadArchiveRequest {
            part: Some(upload_archive_request::Part::Chunk(chunk.to_vec())),
        }));
        let reply = SourceServiceClient::new(self.transport()?)
            .upload_archive(self.request(tokio_stream::iter(parts)))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))?;
        Ok(FetchResponse {
            workspace: reply.workspace,
            reused: reply.reused,
        })
    }
}

impl EnvDetectorClient {
    pub async fn detect(&self, request: DetectRequest) -> Result<DetectResponse> {
        EnvDetectorServiceClient::new(self.transport()?)
            .detect(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }
}

impl AnalyzerClient {
    /// The plan of a workspace.
    pub async fn analyze(&self, request: AnalyzeRequest) -> Result<RunPlan> {
        AnalyzerServiceClient::new(self.transport()?)
            .analyze(self.request(request))
            .await
            .map_err(|status| self.failed(status))?
            .into_inner()
            .plan
            .ok_or_else(|| self.incomplete("plan"))
    }
}

impl DependencyClient {
    /// The install's stream of log lines, ending with its result.
    pub async fn install(&self, request: InstallRequest) -> Result<tonic::Streaming<InstallResponse>> {
        DependencyServiceClient::new(self.transport()?)
            .install(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }
}

/// A process as the orchestrator keeps it (`RunComponent.process_id`): the
/// runner's id, then `@` and the runner endpoint that started it when the
/// call went over the network (`proc-1f…@http://10.0.0.7:50051`). Calls
/// about the process go to that endpoint while it serves (a local process
/// lives only there), else to any runner (a pod any replica can reach).
fn split_process(handle: &str) -> (&str, Option<&str>) {
    match handle.split_once('@') {
        Some((id, endpoint)) if !endpoint.is_empty() => (id, Some(endpoint)),
        _ => (handle, None),
    }
}

impl RunnerClient {
    /// Starts a process; its status, its `process_id` naming the runner
    /// endpoint that started it (see [`split_process`]).
    pub async fn start(&self, request: StartRequest) -> Result<ProcessStatus> {
        let response = RunnerServiceClient::new(self.transport()?)
            .start(self.request(request))
            .await
            .map_err(|status| self.failed(status))?;
        let endpoint = response
            .metadata()
            .get(ENDPOINT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut status = response
            .into_inner()
            .status
            .ok_or_else(|| self.incomplete("status"))?;
        if let Some(endpoint) = endpoint {
            status.process_id = format!("{}@{endpoint}", status.process_id);
        }
        Ok(status)
    }

    /// `message` about the process `handle` names, under `deadline`, sent to
    /// the runner that holds it; the runner's own process id.
    fn about<T>(
        &self,
        handle: &str,
        deadline: Duration,
        message: impl FnOnce(String) -> T,
    ) -> tonic::Request<T> {
        let (id, endpoint) = split_process(handle);
        let mut request = self.request_within(message(id.to_owned()), deadline);
        if let Some(value) = endpoint.and_then(|e| tonic::metadata::MetadataValue::try_from(e).ok()) {
            request.metadata_mut().insert(ENDPOINT_HEADER, value);
        }
        request
    }

    pub async fn status(&self, process_id: &str) -> Result<ProcessStatus> {
        let request = self.about(process_id, self.deadline, |process_id| StatusRequest {
            process_id,
        });
        RunnerServiceClient::new(self.transport()?)
            .status(request)
            .await
            .map_err(|status| self.failed(status))?
            .into_inner()
            .status
            .ok_or_else(|| self.incomplete("status"))
    }

    /// Stops a process, waiting up to `grace` for it to end.
    pub async fn stop(&self, process_id: &str, grace_seconds: u32) -> Result<()> {
        let deadline = self.deadline + Duration::from_secs(u64::from(grace_seconds));
        let request = self.about(process_id, deadline, |process_id| StopRequest {
            process_id,
            grace_seconds,
        });
        RunnerServiceClient::new(self.transport()?)
            .stop(request)
            .await
            .map(drop)
            .map_err(|status| self.failed(status))
    }

    /// A process's output lines, from `after_sequence`; followed until it
    /// ends when `follow`, under `deadline`.
    pub async fn logs(
        &self,
        request: LogsRequest,
        deadline: Duration,
    ) -> Result<tonic::Streaming<LogsResponse>> {
        let handle = request.process_id.clone();
        let request = self.about(&handle, deadline, |process_id| LogsRequest {
            process_id,
            ..request
        });
        RunnerServiceClient::new(self.transport()?)
            .logs(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// The last `keep` lines of a process's output; none when the runner
    /// cannot say.
    pub async fn tail(&self, process_id: &str, keep: usize) -> Vec<String> {
        let request = LogsRequest {
            process_id: process_id.to_owned(),
            follow: false,
            after_sequence: 0,
        };
        let keep = keep.max(1);
        let mut tail = std::collections::VecDeque::with_capacity(keep);
        if let Ok(mut stream) = self.logs(request, self.deadline).await {
            while let Ok(Some(message)) = stream.message().await {
                if let Some(line) = message.line {
                    if tail.len() == keep {
                        tail.pop_front();
                    }
                    tail.push_back(line.text);
                }
            }
        }
        tail.into()
    }
}

impl HealthClient {
    /// One probe, now.
    pub async fn probe(&self, request: ProbeRequest) -> Result<ProbeResponse> {
        HealthServiceClient::new(self.transport()?)
            .probe(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A watch of one component's probes, open for at most `deadline`.
    pub async fn watch(
        &self,
        request: WatchRequest,
        deadline: Duration,
    ) -> Result<tonic::Streaming<WatchResponse>> {
        HealthServiceClient::new(self.transport()?)
            .watch(self.request_within(request, deadline))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }
}

impl ProvisionerClient {
    pub async fn provision(&self, request: ProvisionRequest) -> Result<ProvisionResponse> {
        ProvisionerServiceClient::new(self.transport()?)
            .provision(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    pub async fn release(&self, request: ReleaseRequest) -> Result<ReleaseResponse> {
        ProvisionerServiceClient::new(self.transport()?)
            .release(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }
}

impl ResolverClient {
    /// The resolver's diagnoses of a failure, best first.
    pub async fn diagnose(&self, request: DiagnoseRequest) -> Result<Vec<Diagnosis>> {
        ResolverServiceClient::new(self.transport()?)
            .diagnose(self.request(request))
            .await
            .map(|response| response.into_inner().diagnoses)
            .map_err(|status| self.failed(status))
    }
}

impl TesterClient {
    pub async fn run_tests(&self, request: RunTestsRequest) -> Result<RunTestsResponse> {
        TesterServiceClient::new(self.transport()?)
            .run_tests(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }
}

/// Every agent's typed client.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    pub source: SourceClient,
    pub env_detector: EnvDetectorClient,
    pub analyzer: AnalyzerClient,
    pub dependency: DependencyClient,
    pub runner: RunnerClient,
    pub health: HealthClient,
    pub provisioner: ProvisionerClient,
    pub resolver: ResolverClient,
    pub tester: TesterClient,
    /// The indexer's calls stream progress and live in [`crate::index`].
    pub indexer: Agent,
}

impl Clients {
    pub fn new(agents: &Agents, config: &OrchestratorConfig) -> Self {
        Self {
            source: SourceClient(Agent::new(SOURCE, Some(&agents.source), config.fetch_deadline())),
            env_detector: EnvDetectorClient(Agent::new(
                ENV_DETECTOR,
                Some(&agents.env_detector),
                config.detect_deadline(),
            )),
            analyzer: AnalyzerClient(Agent::new(
                ANALYZER,
                Some(&agents.analyzer),
                config.analyze_deadline(),
            )),
            dependency: DependencyClient(Agent::new(
                DEPENDENCY,
                agents.dependency.as_ref(),
                config.install_deadline(),
            )),
            runner: RunnerClient(Agent::new(
                RUNNER,
                agents.runner.as_ref(),
                config.runner_deadline(),
            )),
            health: HealthClient(Agent::new(
                HEALTH,
                agents.health.as_ref(),
                config.probe_deadline(),
            )),
            provisioner: ProvisionerClient(Agent::new(
                PROVISIONER,
                agents.provisioner.as_ref(),
                config.provision_deadline(),
            )),
            resolver: ResolverClient(Agent::new(
                RESOLVER,
                agents.resolver.as_ref(),
                config.diagnose_deadline(),
            )),
            tester: TesterClient(Agent::new(TESTER, agents.tester.as_ref(), config.test_deadline())),
            indexer: Agent::new(INDEXER, agents.indexer.as_ref(), config.index_deadline()),
        }
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::{
        agents::source::v1::source_service_server::{SourceService, SourceServiceServer},
        common::v1::Workspace,
    };
    use tonic::{Code, Request, Response, Status};

    use super::*;

    /// A source agent in this process: answers after `delay`, or refuses.
    struct FakeSource {
        delay: Duration,
        refuse: bool,
    }

    #[tonic::async_trait]
    impl SourceService for FakeSource {
        async fn fetch(
            &self,
            request: Request<FetchRequest>,
        ) -> std::result::Result<Response<FetchResponse>, Status> {
            if self.refuse {
                return Err(Status::invalid_argument("no such repository"));
            }
            tokio::time::sleep(self.delay).await;
            Ok(Response::new(FetchResponse {
                workspace: Some(Workspace {
                    id: format!("ws-of-{}", request.into_inner().owner_id),
                    ..Workspace::default()
                }),
                reused: false,
            }))
        }

        /// Like `fetch`: the workspace is named after the header's owner
        /// and the bytes received.
        async fn upload_archive(
            &self,
            request: Request<tonic::Streaming<reporunner_proto::agents::source::v1::UploadArchiveRequest>>,
        ) -> std::result::Result<Response<reporunner_proto::agents::source::v1::UploadArchiveResponse>, Status>
        {
            use reporunner_proto::agents::source::v1::upload_archive_request::Part;
            if self.refuse {
                return Err(Status::invalid_argument("no such archive"));
            }
            let mut stream = request.into_inner();
            let (mut owner, mut bytes) = (String::new(), 0usize);
            while let Some(message) = stream.message().await? {
                match message.part {
                    Some(Part::Header(header)) => owner = header.owner_id,
                    Some(Part::Chunk(chunk)) => bytes += chunk.len(),
                    None => {}
                }
            }
            Ok(Response::new(
                reporunner_proto::agents::source::v1::UploadArchiveResponse {
                    workspace: Some(Workspace {
                        id: format!("upload-of-{owner}-{bytes}"),
                        ..Workspace::default()
                    }),
                    reused: false,
                },
            ))
        }
    }

    fn client(fake: FakeSource, deadline: Duration) -> SourceClient {
        SourceClient(Agent::over(
            SOURCE,
            Transport::in_process(SourceServiceServer::new(fake)),
            deadline,
        ))
    }

    #[tokio::test]
    async fn an_in_process_agent_answers_without_a_network_hop() {
        let source = client(
            FakeSource {
                delay: Duration::ZERO,
                refuse: false,
            },
            Duration::from_secs(5),
        );
        let response = source
            .fetch(FetchRequest {
                owner_id: "u1".into(),
                ..FetchRequest::default()
            })
            .await
            .expect("fetched");
        assert_eq!(response.workspace.expect("workspace").id, "ws-of-u1");
    }

    #[tokio::test]
    async fn a_client_keeps_its_deadline_and_names_its_agent_in_errors() {
        let slow = client(
            FakeSource {
                delay: Duration::from_secs(30),
                refuse: false,
            },
            Duration::from_millis(50),
        );
        let err = slow
            .fetch(FetchRequest::default())
            .await
            .expect_err("past its deadline");
        assert!(
            matches!(err, OrchestratorError::AgentDeadline { agent: "source", .. }),
            "{err:?}"
        );

        let refusing = client(
            FakeSource {
                delay: Duration::ZERO,
                refuse: true,
            },
            Duration::from_secs(5),
        );
        let err = refusing
            .fetch(FetchRequest::default())
            .await
            .expect_err("refused");
        assert!(
            matches!(err, OrchestratorError::AgentRejected { agent: "source", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("no such repository"), "{err}");

        let missing = SourceClient(Agent::new(SOURCE, None, Duration::from_secs(1)));
        let err = missing
            .fetch(FetchRequest::default())
            .await
            .expect_err("no endpoint");
        assert_eq!(
            reporunner_error::ServiceError::to_status(&err).code(),
            Code::Unavailable
        );
        assert!(err.to_string().contains("endpoints.source"), "{err}");
    }
}
