//! The indexing service's metrics, every name in one place.

/// IndexRepo calls, by `status` (ok, error).
pub const INDEX_RUNS_TOTAL: &str = "reporunner_indexer_index_runs_total";
/// Files indexed, by `kind` (indexed, unchanged, removed).
pub const FILES_TOTAL: &str = "reporunner_indexer_files_total";
/// Chunks embedded.
pub const CHUNKS_EMBEDDED_TOTAL: &str = "reporunner_indexer_chunks_embedded_total";
/// Searches, by `mode` (text, vector, hybrid) and `status`.
pub const SEARCHES_TOTAL: &str = "reporunner_indexer_searches_total";
/// Search latency in seconds, by `mode`.
pub const SEARCH_SECONDS: &str = "reporunner_indexer_search_seconds";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(INDEX_RUNS_TOTAL, "IndexRepo calls of the indexer, by status.");
    metrics::describe_counter!(FILES_TOTAL, "Files seen by the indexer, by kind.");
    metrics::describe_counter!(CHUNKS_EMBEDDED_TOTAL, "Chunks embedded by the indexer.");
    metrics::describe_counter!(
        SEARCHES_TOTAL,
        "Searches served by the indexer, by mode and status."
    );
    metrics::describe_histogram!(
        SEARCH_SECONDS,
        "Search latency of the indexer in seconds, by mode."
    );
}
