//! The tester's RunTests request and the reading of its test command.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_tester::fuzzing::validate_request(data));
