//! The provisioner's Provision and Release requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_provisioner::fuzzing::validate_request(data));
