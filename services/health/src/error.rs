//! The health agent's errors and their gRPC classes. A probe that fails is
//! not an error: it is an UNHEALTHY result. These are the requests that
//! cannot be probed at all.

use reporunner_error::{ErrorKind, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The request names no probe, too many, or one that cannot work.
    #[error("{0}")]
    InvalidProbe(String),
    /// Too many watches are open.
    #[error("{0} watches are open, the most this agent allows; retry later")]
    TooManyWatches(usize),
    /// The configuration cannot work.
    #[error("invalid health configuration: {0}")]
    InvalidConfig(String),
    /// A log probe needs the runner agent, and none is configured.
    #[error("log probes need the runner agent, and this health agent has no runner endpoint")]
    NoRunner,
}

impl ServiceError for HealthError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidProbe(_) => ErrorKind::InvalidArgument,
            Self::TooManyWatches(_) => ErrorKind::ResourceExhausted {
                retry_after: Some(std::time::Duration::from_secs(5)),
            },
            Self::InvalidConfig(_) | Self::NoRunner => ErrorKind::FailedPrecondition,
        }
    }
}

pub type Result<T, E = HealthError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn bad_probes_are_the_callers_mistake() {
        let status = HealthError::InvalidProbe("tcp probe port 0".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("port 0"));
        assert_eq!(
            HealthError::TooManyWatches(3).to_status().code(),
            Code::ResourceExhausted
        );
    }
}
