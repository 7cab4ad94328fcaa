//! Replays this crate's fuzz corpora (`fuzz/corpus/<target>/`, and
//! `fuzz/regressions/<target>/`) through the functions the fuzz targets
//! call, so that every `make test` runs them on the stable toolchain.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn resolver_log_corpus_is_classified() {
    replay::replay("resolver_log", reporunner_resolver::fuzzing::classify_log);
}

#[test]
fn resolver_request_corpus_is_diagnosed() {
    replay::replay("resolver_request", reporunner_resolver::fuzzing::validate_request);
}
