//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn tester_output_corpus_is_parsed() {
    replay::replay("tester_output", reporunner_tester::fuzzing::parse_output);
}

#[test]
fn tester_request_corpus_is_checked() {
    replay::replay("tester_request", reporunner_tester::fuzzing::validate_request);
}
