//! The provisioner agent's metrics, every name in one place.

/// Provision calls, by `kind` (postgresql, redis, mysql, ...), `mode`
/// (reused, started, none) and `status` (ok, error).
pub const PROVISIONS_TOTAL: &str = "reporunner_provisioner_provisions_total";
/// Resources removed by Release, by `kind` and `status` (ok, error).
pub const RELEASES_TOTAL: &str = "reporunner_provisioner_releases_total";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        PROVISIONS_TOTAL,
        "Provision calls of the provisioner agent, by kind, mode and status."
    );
    metrics::describe_counter!(
        RELEASES_TOTAL,
        "Resources removed by the provisioner agent, by kind and status."
    );
}
