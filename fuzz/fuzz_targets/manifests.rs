//! The analyzer's manifest parsers (package.json, pyproject, Pipfile, Cargo.toml, requirements, compose, Procfile, .env, ...), through a whole analysis and export.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporunner_analyzer::fuzzing::parse_manifests(data));
