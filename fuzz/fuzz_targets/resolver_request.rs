//! The resolver's Diagnose request, diagnosed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_resolver::fuzzing::validate_request(data));
