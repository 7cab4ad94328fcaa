//! The auth service's errors and their gRPC classes.

use std::{path::PathBuf, time::Duration};

use reporunner_error::{ErrorKind, ServiceError};

/// What can go wrong in the auth domain.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request names something impossible (an empty username, a bad tier).
    #[error("{0}")]
    InvalidArgument(String),
    /// The password breaks the policy; the message says why.
    #[error("password refused: {0}")]
    WeakPassword(String),
    /// A page token that this service did not hand out.
    #[error("the page token is not valid; start again without one")]
    InvalidPageToken,
    /// The configuration cannot work.
    #[error("invalid auth configuration: {0}")]
    InvalidConfig(String),
    /// The username is held by another user.
    #[error("username `{0}` is taken; pick another")]
    UsernameTaken(String),
    /// A second admin was asked for.
    #[error("an admin exists already; there is exactly one admin")]
    AdminExists,
    /// The admin cannot be blocked, deleted or downgraded.
    #[error("the admin cannot be {0}")]
    AdminProtected(&'static str),
    /// No user with this id or name.
    #[error("user `{0}` not found")]
    UserNotFound(String),
    /// Wrong username or password (deliberately not saying which).
    #[error("wrong username or password")]
    BadCredentials,
    /// An access or refresh token that is malformed, tampered, expired or revoked.
    #[error("the token is invalid or expired; log in again")]
    InvalidToken,
    /// The user is blocked.
    #[error("this account is blocked; contact the admin")]
    Blocked,
    /// The caller is not allowed to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A rate limit was reached.
    #[error("limit of {limit} {what} per hour reached; retry in {} s", retry_after.as_secs().max(1))]
    LimitReached {
        what: &'static str,
        limit: u32,
        retry_after: Duration,
    },
    /// This account failed to log in from this address a moment ago; the
    /// delay doubles with each failure (other addresses are not affected).
    #[error("too many failed logins for this account from your address; retry in {} s", retry_after.as_secs().max(1))]
    RetryTooSoon { retry_after: Duration },
    /// The database failed, or cannot be reached now (then the caller is
    /// told so, and to retry).
    #[error("{}", db_message(.0))]
    Db(#[from] sea_orm::DbErr),
    /// A file (the signing key) could not be read or written.
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Hashing or verifying a password failed for a reason other than a mismatch.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Signing a token failed.
    #[error("token signing failed")]
    Jwt(#[source] jsonwebtoken::errors::Error),
    /// A blocking task panicked or was cancelled.
    #[error("a blocking task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError for AuthError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) | Self::WeakPassword(_) | Self::InvalidPageToken => {
                ErrorKind::InvalidArgument
            }
            Self::InvalidConfig(_) | Self::AdminProtected(_) => ErrorKind::FailedPrecondition,
            Self::UsernameTaken(_) | Self::AdminExists => ErrorKind::AlreadyExists,
            Self::UserNotFound(_) => ErrorKind::NotFound,
            Self::BadCredentials | Self::InvalidToken => ErrorKind::Unauthenticated,
            Self::Blocked | Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::LimitReached { retry_after, .. } | Self::RetryTooSoon { retry_after } => {
                ErrorKind::ResourceExhausted {
                    retry_after: Some(*retry_after),
                }
            }
            Self::Db(err) if reporunner_db::is_unavailable(err) => ErrorKind::StoreUnavailable,
            Self::Db(_) | Self::Io { .. } | Self::Hash(_) | Self::Jwt(_) | Self::Task(_) => {
                ErrorKind::Internal
            }
        }
    }
}

fn db_message(err: &sea_orm::DbErr) -> String {
    if reporunner_db::is_unavailable(err) {
        reporunner_db::unavailable_message("user")
    } else {
        "database error".to_owned()
    }
}

/// The auth service's result.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use reporunner_error::RETRY_AFTER;
    use tonic::Code;

    use super::*;

    #[test]
    fn limit_reached_is_resource_exhausted_with_retry_after() {
        let err = AuthError::LimitReached {
            what: "metered requests",
            limit: 10,
            retry_after: Duration::from_millis(1_500),
        };
        let status = err.to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get(RETRY_AFTER).map(|v| v.to_str().ok()),
            Some(Some("2"))
        );
        assert!(
            status.message().contains("10 metered requests"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn database_errors_do_not_leak() {
        let status = AuthError::Db(sea_orm::DbErr::Custom("relation users at 10.0.0.3".into())).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("10.0.0.3"));
    }

    #[test]
    fn an_unreachable_database_is_unavailable_and_says_to_retry() {
        let err = AuthError::Db(sea_orm::DbErr::ConnectionAcquire(
            sea_orm::ConnAcquireErr::Timeout,
        ));
        let status = err.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("user database") && status.message().contains("retry"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn bad_credentials_do_not_say_which_part_was_wrong() {
        let status = AuthError::BadCredentials.to_status();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "wrong username or password");
    }
}
