//! The source agent's Fetch and UploadArchive requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_source::fuzzing::validate_request(data));
