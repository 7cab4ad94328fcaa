//! The tester's output parsers: a test command's output read, parsed and judged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_tester::fuzzing::parse_output(data));
