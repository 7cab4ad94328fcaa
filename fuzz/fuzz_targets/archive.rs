//! tar, tar.gz and zip uploads: extraction into a fresh directory, nothing written outside it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_source::fuzzing::extract_archive(data));
