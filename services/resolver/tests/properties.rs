//! Properties of the decoders of outside input: the rule matcher over any
//! log, the advisor's answer parser over any text, the version constraint
//! parser over any string. None panics, and nothing unsafe comes out.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use reporunner_proto::{agents::resolver::v1::Phase, common::v1::Toolchain};
use reporunner_resolver::{
    advisor::{Advice, interpret},
    rules::{CATALOG, Context},
    safety,
    versions::Constraint,
};

/// Fragments of real failures, so that rules fire on mangled input too.
const FRAGMENTS: &[&str] = &[
    "ModuleNotFoundError: No module named '",
    "KeyError: '",
    "Error: Cannot find module '",
    "EADDRINUSE",
    "requires a different Python: 3.12.1 not in '",
    "No matching distribution found for numpy==",
    "npm ERR! code ERESOLVE",
    "The engine \"node\" is incompatible with this module. Expected version \"",
    "feature `edition2024` is required",
    "requires rustc ",
    "./gradlew: Permission denied",
    "No such file or directory: '.env'",
    "Field required [type=missing",
    "validation error for Settings",
    "ImportError: cannot import name '",
    "ECONNREFUSED 127.0.0.1:",
    "no such table: ",
];

fn line() -> impl Strategy<Value = String> {
    (prop::sample::select(FRAGMENTS), ".{0,40}", "[ -~]{0,40}").prop_map(|(f, a, b)| format!("{a}{f}{b}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rules_never_panic_and_propose_only_safe_patches(
        lines in prop::collection::vec(prop_oneof![line(), ".{0,120}"], 0..40),
        phase in 0i32..7,
        exit_code in prop_oneof![Just(0), Just(1), Just(124), any::<i32>()],
    ) {
        let tools = vec![
            Toolchain { name: "python3.10".into(), version: "3.10.1".into(), path: "/usr/bin/python3.10".into() },
            Toolchain { name: "node".into(), version: "20.1.0".into(), path: "/usr/bin/node".into() },
        ];
        let phase = Phase::try_from(phase).unwrap();
        let ctx = Context::new(phase, exit_code, "app", None, &tools, &lines, 400, 2048);
        for diagnosis in CATALOG.diagnose(&ctx) {
            prop_assert!((0.0..=1.0).contains(&diagnosis.confidence));
            for patch in &diagnosis.patches {
                // A patch that fails the filter is dropped before it leaves
                // the resolver; rules should not produce them in the first place.
                prop_assert!(safety::check(patch).is_ok(), "{:?} from {}", patch, diagnosis.cause);
            }
        }
    }

    #[test]
    fn advisor_answers_never_panic_and_only_safe_patches_pass(
        content in prop_oneof![
            ".{0,400}",
            (".{0,30}", "[a-z_]{1,20}", ".{0,60}").prop_map(|(a, k, v)| format!(
                "{a}```json\n{{\"patches\": [{{\"{k}\": {{\"name\": \"{v}\", \"run\": \"{v}\", \"path\": \"{v}\"}}}}]}}\n```"
            )),
        ],
    ) {
        let lines = vec!["boom".to_owned()];
        let ctx = Context::new(Phase::Start, 1, "app", None, &[], &lines, 10, 100);
        if let Advice::Diagnosis { diagnosis, .. } = interpret(&ctx, &content, 4) {
            prop_assert!(diagnosis.patches.len() <= 4);
            for patch in &diagnosis.patches {
                prop_assert!(safety::check(patch).is_ok());
            }
        }
    }

    #[test]
    fn constraints_never_panic(
        text in prop_oneof![".{0,60}", "([<>=~^!]{0,2}[0-9]{1,25}(\\.[0-9x*]{1,22}){0,3}[ ,|]{0,3}){1,4}"],
    ) {
        let _ = Constraint::parse(&text);
    }
}
