//! The dependency agent's metrics, every name in one place.

/// Installs finished, by `kind` (python, node, rust, none) and `status`
/// (ok, failed).
pub const INSTALLS_TOTAL: &str = "reporunner_dependency_installs_total";
/// Install durations in seconds, by `kind`.
pub const INSTALL_SECONDS: &str = "reporunner_dependency_install_seconds";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        INSTALLS_TOTAL,
        "Installs finished by the dependency agent, by kind and status."
    );
    metrics::describe_histogram!(INSTALL_SECONDS, "Install durations in seconds, by kind.");
}
