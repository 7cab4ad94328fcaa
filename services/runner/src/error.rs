//! The runner agent's errors and their gRPC classes.

use std::path::PathBuf;

use reporunner_error::{ErrorKind, ServiceError};

/// What can go wrong while supervising a process.
///
/// Client mistakes carry messages a user can act on; failures on our side
/// (I/O, spawning) stay internal.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The workspace directory (or the working directory in it) does not exist.
    #[error("{what} {} does not exist", path.display())]
    PathNotFound { what: &'static str, path: PathBuf },
    /// No process has this id (or it was forgotten).
    #[error("no process has the id {0:?}")]
    ProcessNotFound(String),
    /// The component is running already in this run.
    #[error(
        "component {component:?} of run {run_id:?} is running already as process {process_id:?}; stop it first"
    )]
    AlreadyRunning {
        run_id: String,
        component: String,
        process_id: String,
    },
    /// The component cannot be started (no start command).
    #[error("component {component:?} has no start command; {reason}")]
    NotStartable { component: String, reason: String },
    /// The sandbox is required by configuration but cannot be used here.
    #[error("the sandbox is required but unavailable: {0}")]
    SandboxUnavailable(String),
    /// Too many processes are supervised at once, or no port is free.
    #[error("{0}")]
    Exhausted(String),
    /// The configuration cannot work.
    #[error("invalid runner configuration: {0}")]
    InvalidConfig(String),
    /// A file operation on our side failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cluster did not do what the Kubernetes backend asked (API
    /// unreachable, pod not schedulable, image not pullable).
    #[error("the cluster cannot run the process: {0}")]
    Cluster(String),
    /// A process could not be started.
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl RunnerError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}

impl ServiceError for RunnerError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::PathNotFound { .. } | Self::ProcessNotFound(_) => ErrorKind::NotFound,
            Self::AlreadyRunning { .. } => ErrorKind::AlreadyExists,
            Self::NotStartable { .. } | Self::SandboxUnavailable(_) | Self::InvalidConfig(_) => {
                ErrorKind::FailedPrecondition
            }
            Self::Exhausted(_) => ErrorKind::ResourceExhausted { retry_after: None },
            Self::Cluster(_) => ErrorKind::Unavailable,
            Self::Io { .. } | Self::Spawn { .. } => ErrorKind::Internal,
        }
    }
}

/// The runner agent's result.
pub type Result<T, E = RunnerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn missing_start_command_names_the_component() {
        let status = RunnerError::NotStartable {
            component: "api".into(),
            reason: "the plan gives it none".into(),
        }
        .to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("\"api\""), "{}", status.message());
    }

    #[test]
    fn io_errors_are_internal_and_hide_the_path() {
        let status = RunnerError::io(
            "open",
            "/srv/data/runner/logs/x",
            std::io::Error::other("disk full"),
        )
        .to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/srv/data"));
    }

    #[test]
    fn unknown_processes_are_not_found() {
        let status = RunnerError::ProcessNotFound("proc-1".into()).to_status();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("proc-1"));
    }
}
