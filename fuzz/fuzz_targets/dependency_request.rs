//! The dependency agent's Install request, turned into a job.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_dependency::fuzzing::validate_request(data));
