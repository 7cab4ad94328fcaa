//! The auth service's metrics, every name in one place. Per-RPC counts and
//! latencies come from the server layer (`reporunner_grpc_*`).

/// Passwords verified by Login, by `status` (match, mismatch).
pub const PASSWORD_CHECKS_TOTAL: &str = "reporunner_auth_password_checks_total";
/// Logins and registrations refused by throttling, by `kind`
/// (login_address_limit, login_too_soon, registration_address_limit).
pub const THROTTLED_TOTAL: &str = "reporunner_auth_throttled_total";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(PASSWORD_CHECKS_TOTAL, "Passwords verified by Login, by status.");
    metrics::describe_counter!(
        THROTTLED_TOTAL,
        "Logins and registrations refused by throttling, by kind."
    );
}

pub(crate) fn password_checked(matches: bool) {
    let status = if matches { "match" } else { "mismatch" };
    metrics::counter!(PASSWORD_CHECKS_TOTAL, "status" => status).increment(1);
}

pub(crate) fn throttled(kind: &'static str) {
    metrics::counter!(THROTTLED_TOTAL, "kind" => kind).increment(1);
}
