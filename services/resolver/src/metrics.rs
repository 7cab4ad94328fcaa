//! The resolver's metrics, every name in one place.

/// Diagnoses returned, by `cause` (rule causes; "llm" for every advisor
/// cause, to bound the labels) and `source` (rule, llm).
pub const DIAGNOSES_TOTAL: &str = "reporunner_resolver_diagnoses_total";
/// Advisor calls, by `outcome` (answered, refused, failed).
pub const ADVISOR_CALLS_TOTAL: &str = "reporunner_resolver_advisor_calls_total";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        DIAGNOSES_TOTAL,
        "Diagnoses made by the resolver, by cause and source."
    );
    metrics::describe_counter!(ADVISOR_CALLS_TOTAL, "Calls to the LLM advisor, by outcome.");
}
