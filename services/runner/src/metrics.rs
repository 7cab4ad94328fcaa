//! The runner agent's metrics, every name in one place. Per-RPC counts and
//! latencies come from the server layer (`reporunner_grpc_*`).

/// Starts, by `status` (started, or the gRPC code of the failure) and
/// `sandboxed` (true, false).
pub const STARTS_TOTAL: &str = "reporunner_runner_starts_total";
/// Processes that reached a terminal state, by `state` (exited, failed,
/// stopped) and `kind` (exit, stop, runtime_limit, spawn_error).
pub const ENDS_TOTAL: &str = "reporunner_runner_ends_total";
/// Restarts made by restart policies.
pub const RESTARTS_TOTAL: &str = "reporunner_runner_restarts_total";
/// Processes not yet in a terminal state.
pub const LIVE_PROCESSES: &str = "reporunner_runner_live_processes";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(STARTS_TOTAL, "Component starts, by status and sandboxed.");
    metrics::describe_counter!(ENDS_TOTAL, "Supervised processes that ended, by state and kind.");
    metrics::describe_counter!(RESTARTS_TOTAL, "Restarts made by restart policies.");
    metrics::describe_gauge!(LIVE_PROCESSES, "Supervised processes not yet ended.");
}

pub(crate) fn started(status: String, sandboxed: bool) {
    metrics::counter!(STARTS_TOTAL, "status" => status, "sandboxed" => sandboxed.to_string()).increment(1);
}

pub(crate) fn live(delta: f64) {
    metrics::gauge!(LIVE_PROCESSES).increment(delta);
}

pub(crate) fn ended(state: &'static str, kind: &'static str) {
    metrics::counter!(ENDS_TOTAL, "state" => state, "kind" => kind).increment(1);
    live(-1.0);
}

pub(crate) fn restarted() {
    metrics::counter!(RESTARTS_TOTAL).increment(1);
}
