//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a
//! Diagnose request runs, and panics only on a bug.

use std::sync::LazyLock;

use prost::Message;
use reporunner_proto::{
    agents::resolver::v1::{DiagnoseRequest, Diagnosis, Phase},
    common::v1::{Command, Component, RunPlan, Runtime},
};

use crate::{
    RuleResolver, advisor,
    config::ResolverConfig,
    filter,
    rules::{CATALOG, Context},
    safety, same_change,
};

/// The resolver as served, without an advisor (no network).
static RESOLVER: LazyLock<RuleResolver> =
    LazyLock::new(|| RuleResolver::new(ResolverConfig::default()).expect("the default settings are valid"));

const PHASES: [Phase; 7] = [
    Phase::Unspecified,
    Phase::Install,
    Phase::Build,
    Phase::Setup,
    Phase::Start,
    Phase::Probe,
    Phase::Test,
];

/// Runs the rule catalog over `request` as `Diagnose` does (validation, the
/// bounded log, the catalog, the tried-patch and safety filters) and checks
/// what comes out. `None` when the request is refused.
fn diagnose(request: &DiagnoseRequest) -> Option<Vec<Diagnosis>> {
    let resolver = &*RESOLVER;
    resolver.validate(request).ok()?;
    let mut diagnoses = CATALOG.diagnose(&resolver.context(request));
    for diagnosis in &mut diagnoses {
        filter(diagnosis, &request.tried);
    }
    for diagnosis in &diagnoses {
        assert!(!diagnosis.cause.is_empty(), "a diagnosis without a cause");
        assert!(
            (0.0..=1.0).contains(&diagnosis.confidence),
            "{}: confidence {}",
            diagnosis.cause,
            diagnosis.confidence
        );
        for patch in &diagnosis.patches {
            assert!(
                safety::check(patch).is_ok(),
                "{} proposes an unsafe patch: {patch:?}",
                diagnosis.cause
            );
            assert!(
                !request.tried.iter().any(|tried| same_change(patch, tried)),
                "{} proposes a patch already tried: {patch:?}",
                diagnosis.cause
            );
        }
    }
    Some(diagnoses)
}

/// A plan of one component in the language `selector` picks, so that the
/// rules that look at the component have something to look at.
fn plan(selector: u8) -> RunPlan {
    let (language, manager, runtime, start) = match selector % 4 {
        0 => ("python", "pip", "python", "python app.py"),
        1 => ("javascript", "npm", "node", "npm start"),
        2 => ("rust", "cargo", "rust", "cargo run"),
        _ => ("go", "go", "go", "go run ."),
    };
    RunPlan {
        components: vec![Component {
            name: "app".to_owned(),
            path: ".".to_owned(),
            language: language.to_owned(),
            package_manager: manager.to_owned(),
            runtime: Some(Runtime {
                name: runtime.to_owned(),
                version_constraint: ">=3".to_owned(),
                ..Runtime::default()
            }),
            start: Some(Command {
                run: start.to_owned(),
                ..Command::default()
            }),
            port: 8000,
            ..Component::default()
        }],
        ..RunPlan::default()
    }
}

/// Classifies `data` as the tail of a failing step's log. The first byte
/// picks the phase, the component's language and the exit code; with its
/// top bit set the rest is read as the advisor's answer instead (the reader
/// of an LLM's text), against an empty log.
pub fn classify_log(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let plan = plan(selector / 8);
    let phase = PHASES[usize::from(selector % 8) % PHASES.len()];
    if selector & 0x80 != 0 {
        let lines = vec!["error: the step failed".to_owned()];
        let ctx = Context::new(phase, 1, "app", Some(&plan), &[], &lines, 100, 1000);
        if let advisor::Advice::Diagnosis { diagnosis, .. } = advisor::interpret(&ctx, &text, 4) {
            assert!(diagnosis.patches.len() <= 4);
            assert!((0.0..=0.6).contains(&diagnosis.confidence));
            for patch in &diagnosis.patches {
                assert!(
                    safety::check(patch).is_ok(),
                    "the advisor's unsafe patch passed: {patch:?}"
                );
            }
        }
        return;
    }
    let request = DiagnoseRequest {
        phase: phase as i32,
        component: "app".to_owned(),
        exit_code: if selector & 0x40 != 0 { 137 } else { 1 },
        log_tail: text.split('\n').map(str::to_owned).collect(),
        plan: Some(plan),
        ..DiagnoseRequest::default()
    };
    assert!(
        diagnose(&request).is_some(),
        "a failed step with a log was refused"
    );
}

/// Decodes `data` as a `DiagnoseRequest` (any plan, environment, tried
/// patches and packages) and diagnoses it.
pub fn validate_request(data: &[u8]) {
    let Ok(request) = DiagnoseRequest::decode(data) else {
        return;
    };
    let _ = diagnose(&request);
}
