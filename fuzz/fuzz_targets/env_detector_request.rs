//! The environment detector's Detect request and platform names.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_env_detector::fuzzing::validate_request(data));
