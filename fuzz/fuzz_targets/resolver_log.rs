//! The resolver's log classifier (the rule catalog) and its reader of an advisor's answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_resolver::fuzzing::classify_log(data));
