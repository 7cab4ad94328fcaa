//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a test
//! run or a request runs, and panics only on a bug.

use std::{cell::RefCell, collections::BTreeMap};

use prost::Message;
use reporunner_proto::agents::tester::v1::{RunTestsRequest, TestOutcome};
use reporunner_sandbox::process;
use tokio::sync::mpsc;

use crate::{
    Ending, Output, TestSpec, check_spec, command,
    config::TesterConfig,
    decide,
    parse::{self, Framework},
    read_lines,
};

const FRAMEWORKS: [Framework; 13] = [
    Framework::Pytest,
    Framework::Unittest,
    Framework::Django,
    Framework::Jest,
    Framework::Vitest,
    Framework::Mocha,
    Framework::CargoTest,
    Framework::GoTest,
    Framework::NodeTest,
    Framework::Ctest,
    Framework::Automake,
    Framework::Tap,
    Framework::Ava,
];

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Reads `output` as the tester reads a test command's stdout: split into
/// lines, cut, ANSI-stripped, the summary lines kept.
fn read_output(output: &[u8], config: &TesterConfig) -> Output {
    RUNTIME.with(|cell| {
        let mut cell = cell.borrow_mut();
        let runtime = cell.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime")
        });
        runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel::<String>(1024);
            let mut kept = Output::new(config);
            let collect = async {
                while let Some(line) = rx.recv().await {
                    kept.push(&line);
                }
            };
            tokio::join!(read_lines(output, config.max_line_bytes, tx), collect);
            kept
        })
    })
}

/// Feeds `data` to the tester's output parsers as a test command's output.
/// The first byte picks the command's kind (unknown, `make test` or one
/// framework) and how it ended (exit 0, 1 or 5, or timed out); the rest is
/// the output. The outcome must agree with the counts.
pub fn parse_output(data: &[u8]) {
    let Some((&selector, output)) = data.split_first() else {
        return;
    };
    let kind = match usize::from(selector % 16) {
        0 | 15 => command::Kind::Unknown,
        1 => command::Kind::Make,
        n => command::Kind::Framework(FRAMEWORKS[n - 2]),
    };
    let ending = match selector / 16 {
        1 => Ending::Exited(1),
        2 => Ending::Exited(5),
        3 => Ending::TimedOut,
        _ => Ending::Exited(0),
    };
    let config = TesterConfig {
        max_line_bytes: 1024,
        max_summary_lines: 1_000,
        ..TesterConfig::default()
    };
    let kept = read_output(output, &config);
    assert!(kept.tail.len() <= config.tail_lines);
    assert!(kept.summary.len() <= config.max_summary_lines);
    let summary_lines: Vec<String> = kept.summary.into_iter().collect();
    let found = parse::parse(&summary_lines, kind.framework());
    let (outcome, counts, framework, said) = decide(&kind, &found, ending);
    assert!(!framework.is_empty() && !said.is_empty());
    if !found.is_empty() {
        assert_eq!(counts, parse::total(&found));
    }
    assert_eq!(outcome == TestOutcome::TimedOut, ending == Ending::TimedOut);
    if outcome == TestOutcome::Passed {
        assert_eq!(ending, Ending::Exited(0), "passed with a failing exit: {said}");
        assert!(
            counts.failed == 0 && counts.errors == 0 && counts.ran() > 0,
            "passed with {counts:?}"
        );
    }
    if counts.failed > 0 || counts.errors > 0 {
        assert_ne!(outcome, TestOutcome::Passed, "{counts:?} passed");
    }
}

/// Decodes `data` as a `RunTestsRequest` and runs the checks the tester
/// makes before it touches the workspace, then reads its test command as
/// the tester does (the framework, the one-shot form, the environment). The
/// `package.json` script a command may name is taken from the component's
/// `build` command, so that it is arbitrary too.
pub fn validate_request(data: &[u8]) {
    let Ok(request) = RunTestsRequest::decode(data) else {
        return;
    };
    let Some(component) = request.component else {
        return;
    };
    let spec = TestSpec {
        run_id: request.run_id,
        workspace_path: request.workspace_path.into(),
        component,
        env: request.env.into_iter().collect(),
        timeout_seconds: request.timeout_seconds,
        owner_id: request.owner_id,
        limits: request.limits.unwrap_or_default(),
    };
    let Ok(test) = check_spec(&spec) else {
        return;
    };
    let script = command::test_script_runner(&test.run)
        .and(spec.component.build.as_ref())
        .map(|build| build.run.as_str());
    let kind = match (command::detect(&test.run), script) {
        (command::Kind::Unknown, Some(script)) => command::detect(script),
        (kind, _) => kind,
    };
    let _ = kind.framework();
    let line = command::one_shot(&test.run, script);
    assert!(!line.trim().is_empty(), "{:?} became an empty command", test.run);
    let defaults = spec
        .component
        .env
        .iter()
        .filter(|var| !var.default_value.is_empty())
        .map(|var| (var.name.clone(), var.default_value.clone()));
    let own = [("CI".to_owned(), "true".to_owned())];
    let passed: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(env) = process::environment(passed, defaults, &spec.env, own) {
        assert_eq!(
            env.get("CI").map(String::as_str),
            Some("true"),
            "a request overrode CI"
        );
    }
}
