//! The indexing service's errors and their gRPC classes.

use std::time::Duration;

use reporunner_error::{ErrorKind, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The request is malformed: ids, paths, query, limit, glob, mode.
    #[error("{0}")]
    InvalidRequest(String),
    /// The workspace, index or model does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller's tier does not allow the mode (strict policy).
    #[error("{0}")]
    PermissionDenied(String),
    /// The operation cannot run in the current state (e.g. no model installed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many files, chunks or bytes for one index.
    #[error("{0}")]
    TooLarge(String),
    /// The index is being written by another call.
    #[error("{0}")]
    Busy(String),
    /// A remote (the Hugging Face hub) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Something ran past its deadline.
    #[error("{0} did not finish within {1:?}")]
    Timeout(String, Duration),
    /// The configuration cannot work.
    #[error("invalid indexer configuration: {0}")]
    InvalidConfig(String),
    /// tantivy, LMDB/arroy or the encoder failed (details logged, not sent).
    #[error("{0}")]
    Backend(String),
    /// Reading or writing the service's own files.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl IndexError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<reporunner_tier::TierError> for IndexError {
    fn from(e: reporunner_tier::TierError) -> Self {
        match e {
            reporunner_tier::TierError::PermissionDenied(message) => Self::PermissionDenied(message),
        }
    }
}

impl From<reporunner_embed::EmbedError> for IndexError {
    fn from(e: reporunner_embed::EmbedError) -> Self {
        use reporunner_embed::EmbedError;
        match e {
            EmbedError::InvalidModel(message) => Self::FailedPrecondition(message),
            EmbedError::Backend(message) => Self::Backend(format!("encoder: {message}")),
            EmbedError::Io { context, source } => Self::Io { context, source },
        }
    }
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self::Backend(format!("tantivy: {e}"))
    }
}

impl From<heed::Error> for IndexError {
    fn from(e: heed::Error) -> Self {
        Self::Backend(format!("lmdb: {e}"))
    }
}

impl From<arroy::Error> for IndexError {
    fn from(e: arroy::Error) -> Self {
        Self::Backend(format!("arroy: {e}"))
    }
}

impl ServiceError for IndexError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::FailedPrecondition(_) | Self::InvalidConfig(_) => ErrorKind::FailedPrecondition,
            Self::TooLarge(_) => ErrorKind::ResourceExhausted { retry_after: None },
            Self::Busy(_) => ErrorKind::Aborted,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Timeout(..) => ErrorKind::DeadlineExceeded,
            Self::Backend(_) | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn classes_reach_the_caller() {
        let status = IndexError::InvalidRequest("query is empty".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("query"));
        let status = IndexError::FailedPrecondition("model x is not installed".into()).to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let status = IndexError::Backend("lmdb: /secret/path".into()).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(
            !status.message().contains("/secret"),
            "internal details stay inside"
        );
    }
}
