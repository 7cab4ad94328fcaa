use reporunner_error::{ErrorKind, ServiceError};
use tonic::{Code, Status};

/// What can go wrong in the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("the {agent} agent is unavailable: {detail}")]
    AgentUnavailable { agent: &'static str, detail: String },
    #[error("the {agent} agent did not answer in time: {detail}")]
    AgentDeadline { agent: &'static str, detail: String },
    #[error("the {agent} agent refused the request: {detail}")]
    AgentRejected { agent: &'static str, detail: String },
    #[error("the {agent} agent failed: {status}")]
    AgentFailed {
        agent: &'static str,
        status: Box<Status>,
    },
    #[error("the {agent} agent returned an incomplete answer: {what} missing")]
    AgentIncomplete { agent: &'static str, what: &'static str },
    #[error("{rpc} is not served by this orchestrator yet; it arrives with the {feature}")]
    NotServed {
        rpc: &'static str,
        feature: &'static str,
    },
}

pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

impl OrchestratorError {
    /// Classifies a failed agent call by its status code.
    pub fn from_agent(agent: &'static str, status: Status) -> Self {
        let detail = status.message().to_owned();
        match status.code() {
            Code::Unavailable => Self::AgentUnavailable { agent, detail },
            Code::DeadlineExceeded | Code::Cancelled => Self::AgentDeadline { agent, detail },
            Code::InvalidArgument | Code::OutOfRange => Self::AgentRejected { agent, detail },
            Code::Ok
            | Code::Unknown
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => Self::AgentFailed {
                agent,
                status: Box::new(status),
            },
        }
    }
}

impl ServiceError for OrchestratorError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::AgentUnavailable { .. } => ErrorKind::Unavailable,
            Self::AgentDeadline { .. } => ErrorKind::DeadlineExceeded,
            Self::AgentRejected { .. } => ErrorKind::InvalidArgument,
            Self::AgentFailed { .. } | Self::AgentIncomplete { .. } => ErrorKind::Internal,
            Self::NotServed { .. } => ErrorKind::Unimplemented,
        }
    }
}
