//! The index service's Search, IndexRepo, IndexStatus and DeleteIndex requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_indexer::fuzzing::validate_request(data));
