//! Properties of the output parsers over arbitrary output: they never
//! panic, and output without a summary never reads as a success.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use reporunner_proto::agents::tester::v1::TestOutcome;
use reporunner_tester::{
    Ending, command, decide,
    parse::{self, Framework},
};

const FRAMEWORKS: [Option<Framework>; 10] = [
    None,
    Some(Framework::Pytest),
    Some(Framework::Unittest),
    Some(Framework::Django),
    Some(Framework::Jest),
    Some(Framework::Vitest),
    Some(Framework::Mocha),
    Some(Framework::CargoTest),
    Some(Framework::GoTest),
    Some(Framework::NodeTest),
];

/// Lines close to real summaries: digits, the frameworks' words, separators.
fn summary_like() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "passed",
        "failed",
        "skipped",
        "errors",
        "in",
        "0.1s",
        "Tests",
        "Tests:",
        "|",
        ",",
        "(3)",
        "Ran",
        "tests",
        "OK",
        "FAILED",
        "passing",
        "failing",
        "test result:",
        "ok.",
        ";",
        "---",
        "PASS:",
        "#",
        "ℹ",
        "pass",
        "fail",
        "=====",
        "\u{1b}[32m",
        "99999999999",
    ]);
    prop::collection::vec(
        prop_oneof![word.prop_map(str::to_owned), "[0-9]{1,12}", ".{0,8}"],
        0..12,
    )
    .prop_map(|parts| parts.join(" "))
}

proptest! {
    #[test]
    fn parsers_never_panic(lines in prop::collection::vec(prop_oneof![summary_like(), ".{0,80}"], 0..40), which in 0..FRAMEWORKS.len()) {
        let lines: Vec<String> = lines.iter().map(|l| parse::strip_ansi(l)).collect();
        let found = parse::parse(&lines, FRAMEWORKS[which]);
        let _ = parse::total(&found).describe();
    }

    #[test]
    fn without_a_summary_nothing_passes(lines in prop::collection::vec("[a-z ]{0,40}", 0..20), code in any::<i32>()) {
        let found = parse::parse(&lines, None);
        let (outcome, ..) = decide(&command::Kind::Unknown, &found, Ending::Exited(code));
        prop_assert_ne!(outcome, TestOutcome::Passed);
    }

    #[test]
    fn a_non_zero_exit_never_passes(passed in 1_u32..1000, code in 1_i32..255) {
        let lines = vec![format!("===== {passed} passed in 0.10s =====")];
        let found = parse::parse(&lines, Some(Framework::Pytest));
        let (outcome, counts, ..) = decide(&command::Kind::Framework(Framework::Pytest), &found, Ending::Exited(code));
        prop_assert_eq!(outcome, TestOutcome::Failed);
        prop_assert_eq!(counts.passed, passed);
    }

    #[test]
    fn one_shot_commands_stay_one_shot(command in "[a-z -]{0,30}") {
        let once = command::one_shot(&command, None);
        prop_assert_eq!(command::one_shot(&once, None), once);
    }
}
