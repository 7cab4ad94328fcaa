//! The tester agent's metrics, every name in one place.

/// Test runs, by `framework` and `outcome` (passed, failed, no_tests,
/// timed_out, unparsed).
pub const RUNS_TOTAL: &str = "reporunner_tester_runs_total";
/// Seconds a test run took, by `outcome`.
pub const RUN_SECONDS: &str = "reporunner_tester_run_seconds";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(RUNS_TOTAL, "Test runs by framework and outcome.");
    metrics::describe_histogram!(
        RUN_SECONDS,
        metrics::Unit::Seconds,
        "Duration of test runs by outcome."
    );
}

/// Records one finished run.
pub fn finished(framework: &str, outcome: &'static str, seconds: f64) {
    metrics::counter!(RUNS_TOTAL, "framework" => framework.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(RUN_SECONDS, "outcome" => outcome).record(seconds);
}
