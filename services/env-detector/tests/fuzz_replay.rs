//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn env_detector_request_corpus_is_checked() {
    replay::replay(
        "env_detector_request",
        reporunner_env_detector::fuzzing::validate_request,
    );
}
