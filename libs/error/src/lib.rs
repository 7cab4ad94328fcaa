//! One mapping from domain errors to gRPC statuses.
//!
//! Every service crate has its own `thiserror` enum and implements
//! [`ServiceError`] for it with an exhaustive `match` (no `_ =>` arm), so that
//! adding a variant forces a decision about its code. [`ErrorKind`] maps to
//! [`tonic::Code`] in exactly one place, [`ErrorKind::code`].
//!
//! Client mistakes carry the error's own message, which must be something a
//! user can act on. Internal errors are logged in full and reach the client
//! as a generic message, so internal details never leak.
#![forbid(unsafe_code)]

use std::time::Duration;

use tonic::{Code, Status, metadata::MetadataValue};

/// The classes of failure a Repo Runner service reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something impossible.
    InvalidArgument,
    /// The named thing does not exist (or the caller may not know it does).
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials, but not allowed.
    PermissionDenied,
    /// A limit was reached; `retry_after` says when to try again, if known.
    ResourceExhausted { retry_after: Option<Duration> },
    /// The system is not in a state that allows the operation.
    FailedPrecondition,
    /// The operation was aborted by a conflict (e.g. a concurrent update).
    Aborted,
    /// A deadline passed before the operation finished.
    DeadlineExceeded,
    /// A dependency (another service, a database) is not reachable now.
    Unavailable,
    /// The database every replica of the service shares is not reachable
    /// now: UNAVAILABLE, with `grpc-retry-pushback-ms: -1` so that the
    /// client stack does not retry at once on another replica (which would
    /// wait on the same database and spend the caller's deadline); the
    /// caller retries later.
    StoreUnavailable,
    /// The operation is not supported by this deployment.
    Unimplemented,
    /// A defect or an unexpected condition on our side.
    Internal,
}

impl ErrorKind {
    /// The gRPC code of this kind. The one place this mapping lives.
    pub fn code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Aborted => Code::Aborted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unavailable | Self::StoreUnavailable => Code::Unavailable,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }

    /// Whether the error's own message may be shown to the caller.
    fn message_is_public(self) -> bool {
        match self {
            Self::InvalidArgument
            | Self::NotFound
            | Self::AlreadyExists
            | Self::Unauthenticated
            | Self::PermissionDenied
            | Self::ResourceExhausted { .. }
            | Self::FailedPrecondition
            | Self::Aborted
            | Self::DeadlineExceeded
            | Self::Unavailable
            | Self::StoreUnavailable
            | Self::Unimplemented => true,
            Self::Internal => false,
        }
    }
}

/// A domain error that knows its class.
pub trait ServiceError: std::error::Error {
    /// The class of this error. Implement with an exhaustive match.
    fn kind(&self) -> ErrorKind;

    /// Converts into a status, logging what the client does not see.
    fn to_status(&self) -> Status {
        to_status(self)
    }
}

/// The metadata key that tells a client when to retry.
pub const RETRY_AFTER: &str = "retry-after";

/// gRPC's retry pushback (gRFC A6): milliseconds to wait before a retry, or
/// a negative value for "do not retry".
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Converts a domain error into a status (see the crate docs for what is shown).
pub fn to_status<E: ServiceError + ?Sized>(err: &E) -> Status {
    let kind = err.kind();
    let mut status = if kind.message_is_public() {
        Status::new(kind.code(), err.to_string())
    } else {
        tracing::error!(error = %error_chain(err), "internal error");
        Status::new(kind.code(), "internal error; the server log has the details")
    };
    if let ErrorKind::ResourceExhausted {
        retry_after: Some(after),
    } = kind
    {
        // Whole seconds, rounded up, as in HTTP's Retry-After.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(value) = MetadataValue::try_from(secs.to_string()) {
            status.metadata_mut().insert(RETRY_AFTER, value);
        }
    }
    if kind == ErrorKind::StoreUnavailable {
        status
            .metadata_mut()
            .insert(RETRY_PUSHBACK, MetadataValue::from_static("-1"));
    }
    status
}

/// `err` and its sources, joined with ": ".
pub fn error_chain<E: std::error::Error + ?Sized>(err: &E) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    let mut depth = 0;
    while let Some(cause) = source {
        depth += 1;
        if depth > 16 {
            break;
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum TestError {
        BadName(String),
        Db(std::io::Error),
        Limited,
        StoreDown,
    }

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Self::BadName(name) => write!(f, "name `{name}` has a slash"),
                Self::Db(_) => write!(f, "database query failed at users.rs:42"),
                Self::Limited => write!(f, "hourly limit of 10 reached"),
                Self::StoreDown => write!(f, "the user database cannot be reached; retry"),
            }
        }
    }

    impl std::error::Error for TestError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                Self::Db(e) => Some(e),
                Self::BadName(_) | Self::Limited | Self::StoreDown => None,
            }
        }
    }

    impl ServiceError for TestError {
        fn kind(&self) -> ErrorKind {
            match self {
                Self::BadName(_) => ErrorKind::InvalidArgument,
                Self::Db(_) => ErrorKind::Internal,
                Self::Limited => ErrorKind::ResourceExhausted {
                    retry_after: Some(Duration::from_millis(1500)),
                },
                Self::StoreDown => ErrorKind::StoreUnavailable,
            }
        }
    }

    #[test]
    fn client_errors_keep_their_message() {
        let status = TestError::BadName("a/b".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "name `a/b` has a slash");
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status = TestError::Db(std::io::Error::other("disk full")).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("users.rs"));
        assert!(!status.message().contains("disk"));
    }

    #[test]
    fn rate_limits_carry_retry_after_rounded_up() {
        let status = TestError::Limited.to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER).unwrap(), "2");
    }

    #[test]
    fn a_shared_store_down_is_unavailable_without_a_retry_elsewhere() {
        let status = TestError::StoreDown.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the user database cannot be reached; retry");
        assert_eq!(status.metadata().get(RETRY_PUSHBACK).unwrap(), "-1");
        // Any other kind carries no pushback.
        assert!(
            TestError::Limited
                .to_status()
                .metadata()
                .get(RETRY_PUSHBACK)
                .is_none()
        );
    }

    #[test]
    fn chain_includes_sources() {
        let err = TestError::Db(std::io::Error::other("disk full"));
        assert_eq!(
            error_chain(&err),
            "database query failed at users.rs:42: disk full"
        );
    }
}
