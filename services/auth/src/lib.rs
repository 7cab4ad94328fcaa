//! The auth service's domain: users and the single admin, tier policy,
//! password hashing, access and refresh tokens, rate limits, usage and the
//! audit log, stored through sea-orm on SQLite or PostgreSQL.
//!
//! The domain lives in [`service::Auth`]; [`grpc`] adapts it to tonic.
#![forbid(unsafe_code)]

mod cache;
pub mod config;
mod entity;
pub mod error;
pub mod files;
pub mod grpc;
pub mod metrics;
pub mod migration;
pub mod password;
pub mod service;
pub mod store;
pub mod throttle;
pub mod tier;
pub mod token;

pub use config::{AuthConfig, RegistrationMode, TierPolicyConfig};
pub use error::{AuthError, Result};
pub use password::{PasswordHasher, check_password_policy};

pub use service::Auth;

/// The principal of the machine's owner in embedded mode and on a data
/// directory's control socket ([`Auth::local_session`]).
pub const LOCAL_OWNER: &str = "local";
pub use store::{
    AuditEntry, AuditRecord, AuthStore, NewUser, QuotaOutcome, RefreshTokenRecord, UsageCount, UserRecord,
};
pub use token::{AccessClaims, IssuedAccessToken, IssuedRefreshToken, TokenIssuer};

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
