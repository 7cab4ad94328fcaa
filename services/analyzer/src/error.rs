//! The analyzer's errors and their gRPC classes.

use reporunner_error::{ErrorKind, ServiceError};

/// What can stop an analysis. Everything about the repository's content
/// (malformed manifests, unreadable files) is a plan warning, not an error.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    /// The request named no workspace path, or a relative one.
    #[error("workspace path `{0}` is not usable: {1}")]
    InvalidPath(String, &'static str),
    /// The workspace path does not exist.
    #[error("workspace path `{0}` does not exist")]
    NotFound(String),
    /// The workspace path exists but is not a directory.
    #[error("workspace path `{0}` is not a directory")]
    NotADirectory(String),
    /// The caller asked for an export format that does not exist.
    #[error("export format {0} is not known; use json, dockerfile, devcontainer, procfile or compose")]
    InvalidFormat(i32),
    /// The plan starts nothing (a library), so it has no Dockerfile,
    /// compose file or Procfile; the message says why and what it offers.
    #[error("{0}")]
    NothingToStart(String),
    /// The request carried no plan to export.
    #[error("the request carries no plan")]
    MissingPlan,
    /// The configuration cannot work.
    #[error("invalid analyzer configuration: {0}")]
    InvalidConfig(String),
    /// A plan could not be rendered (JSON, YAML).
    #[error("cannot render the plan: {0}")]
    Render(String),
    /// A blocking analysis task panicked or was cancelled.
    #[error("an analysis task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError for AnalyzerError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidPath(..) | Self::NotADirectory(_) | Self::InvalidFormat(_) | Self::MissingPlan => {
                ErrorKind::InvalidArgument
            }
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::InvalidConfig(_) | Self::NothingToStart(_) => ErrorKind::FailedPrecondition,
            Self::Render(_) | Self::Task(_) => ErrorKind::Internal,
        }
    }
}

/// The analyzer's result.
pub type Result<T, E = AnalyzerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn a_missing_workspace_is_not_found_and_named() {
        let status = AnalyzerError::NotFound("/srv/ws/42".into()).to_status();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("/srv/ws/42"));
    }

    #[test]
    fn a_file_instead_of_a_directory_is_invalid_argument() {
        let status = AnalyzerError::NotADirectory("/srv/file".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("/srv/file"));
    }

    #[test]
    fn a_plan_that_starts_nothing_is_a_failed_precondition_with_its_reason() {
        let status = AnalyzerError::NothingToStart("this repository is a library".into()).to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "this repository is a library");
    }

    #[test]
    fn render_errors_are_internal_and_hidden() {
        let status = AnalyzerError::Render("secret detail".into()).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret detail"));
    }
}
