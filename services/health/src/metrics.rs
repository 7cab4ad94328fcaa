//! The health agent's metrics, every name in one place.

/// Probes run, by `kind` (http, tcp, process, log) and `result` (up, down).
pub const PROBES_TOTAL: &str = "reporunner_health_probes_total";
/// Watches open now.
pub const WATCHES_OPEN: &str = "reporunner_health_watches_open";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        PROBES_TOTAL,
        "Probes run by the health agent, by kind and result."
    );
    metrics::describe_gauge!(WATCHES_OPEN, "Health watches open now.");
}
