//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn archive_corpus_extracts_inside_the_tree() {
    replay::replay("archive", reporunner_source::fuzzing::extract_archive);
}

#[test]
fn source_request_corpus_is_checked() {
    replay::replay("source_request", reporunner_source::fuzzing::validate_request);
}
