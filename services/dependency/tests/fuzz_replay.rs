//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn dependency_request_corpus_is_checked() {
    replay::replay(
        "dependency_request",
        reporunner_dependency::fuzzing::validate_request,
    );
}
