//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn indexer_request_corpus_is_checked() {
    replay::replay("indexer_request", reporunner_indexer::fuzzing::validate_request);
}
