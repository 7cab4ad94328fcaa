use std::time::Duration;

use reporunner_error::{ErrorKind, RETRY_AFTER, ServiceError};
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
    /// A request field is missing or malformed; the message says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// The run does not exist, or belongs to someone else (the two are not
    /// told apart, so that run ids do not leak).
    #[error("no run `{0}`")]
    RunNotFound(String),
    /// No run of the caller fetched this workspace.
    #[error("no workspace `{0}` of yours; fetch it with a git URL or local path first")]
    WorkspaceNotFound(String),
    #[error(
        "you have {active} active run(s); the {tier} tier allows {limit} at once. \
         Wait for one to finish or stop one with StopRun"
    )]
    ConcurrentRuns {
        active: u64,
        limit: u32,
        tier: &'static str,
    },
    #[error("the page_token is not one this orchestrator issued; start again without it")]
    InvalidPageToken,
    /// The auth service refused or failed (quota, tier, blocked user).
    #[error("{}", .0.message())]
    Auth(Box<Status>),
    /// The indexer refused or failed; its code is kept (NOT_FOUND for a
    /// workspace with no index, INVALID_ARGUMENT for a bad glob, ...).
    #[error("the indexer: {}", .0.message())]
    Indexer(Box<Status>),
    /// The caller's tier does not allow what they insisted on.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request cannot be served in the current state (a run without a
    /// workspace yet).
    #[error("{0}")]
    NotReady(String),
    #[error("invalid orchestrator settings: {0}")]
    InvalidConfig(String),
    /// The run store failed, or cannot be reached now (then the caller is
    /// told so, and to retry).
    #[error("{}", store_message(.0))]
    Store(#[from] sea_orm::DbErr),
    #[error("run store holds undecodable data: {0}")]
    Corrupt(String),
}

pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

fn store_message(err: &sea_orm::DbErr) -> String {
    if reporunner_db::is_unavailable(err) {
        reporunner_db::unavailable_message("run")
    } else {
        format!("run store: {err}")
    }
}

impl OrchestratorError {
    /// Classifies a failed agent call by its status code.
    pub fn from_agent(agent: &'static str, status: Status) -> Self {
        let detail = status.message().to_owned();
        // A status the transport made, not one the agent sent (those carry
        // no source): the connection to its replica broke mid-call, so the
        // replica went away.
        if std::error::Error::source(&status).is_some() && status.code() != Code::DeadlineExceeded {
            return Self::AgentUnavailable {
                agent,
                detail: format!("the connection to it broke: {detail}"),
            };
        }
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

/// The class of a status from the auth service, keeping its `retry-after`.
fn auth_kind(status: &Status) -> ErrorKind {
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted {
            retry_after: status
                .metadata()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Aborted => ErrorKind::Aborted,
        Code::DeadlineExceeded | Code::Cancelled => ErrorKind::DeadlineExceeded,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Unimplemented | Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            ErrorKind::Internal
        }
    }
}

impl From<prost::DecodeError> for OrchestratorError {
    fn from(err: prost::DecodeError) -> Self {
        Self::Corrupt(err.to_string())
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
            Self::InvalidArgument(_) | Self::InvalidPageToken => ErrorKind::InvalidArgument,
            Self::RunNotFound(_) | Self::WorkspaceNotFound(_) => ErrorKind::NotFound,
            Self::ConcurrentRuns { .. } => ErrorKind::ResourceExhausted { retry_after: None },
            Self::Auth(status) | Self::Indexer(status) => auth_kind(status),
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::NotReady(_) => ErrorKind::FailedPrecondition,
            Self::Store(err) if reporunner_db::is_unavailable(err) => ErrorKind::StoreUnavailable,
            Self::InvalidConfig(_) | Self::Store(_) | Self::Corrupt(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_refusals_keep_their_code_message_and_retry_after() {
        let mut status = Status::resource_exhausted("10 metered requests per hour");
        status
            .metadata_mut()
            .insert(RETRY_AFTER, "42".parse().expect("ascii"));
        let err = OrchestratorError::Auth(Box::new(status));
        let out = err.to_status();
        assert_eq!(out.code(), Code::ResourceExhausted);
        assert_eq!(out.message(), "10 metered requests per hour");
        assert_eq!(
            out.metadata().get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
            Some("42")
        );
        let denied = OrchestratorError::Auth(Box::new(Status::permission_denied("needs Advanced")));
        assert_eq!(denied.to_status().code(), Code::PermissionDenied);
    }

    #[test]
    fn store_errors_do_not_leak() {
        let err = OrchestratorError::Store(sea_orm::DbErr::Custom("secret table detail".into()));
        let status = err.to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn an_unreachable_store_is_unavailable_and_says_to_retry() {
        let err = OrchestratorError::Store(sea_orm::DbErr::ConnectionAcquire(
            sea_orm::ConnAcquireErr::Timeout,
        ));
        let status = err.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("run database") && status.message().contains("retry"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_call_cut_in_transit_is_the_agent_unavailable_not_its_answer() {
        let cut = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert!(
            matches!(
                OrchestratorError::from_agent("dependency", cut),
                OrchestratorError::AgentUnavailable {
                    agent: "dependency",
                    ..
                }
            ),
            "a broken connection means the replica went away"
        );
        let answered = Status::internal("the install crashed");
        assert!(matches!(
            OrchestratorError::from_agent("dependency", answered),
            OrchestratorError::AgentFailed { .. }
        ));
    }
}
