//! The health agent's Probe and Watch requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_health::fuzzing::validate_request(data));
