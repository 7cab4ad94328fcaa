//! The analyzer's Analyze and ExportPlan requests (an export of any plan).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_analyzer::fuzzing::validate_request(data));
