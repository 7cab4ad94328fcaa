//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn manifests_corpus_analyzes_and_exports() {
    replay::replay("manifests", reporunner_analyzer::fuzzing::parse_manifests);
}

#[test]
fn analyzer_request_corpus_is_checked() {
    replay::replay("analyzer_request", reporunner_analyzer::fuzzing::validate_request);
}
