//! The rule catalog: one module per ecosystem, each a list of [`Rule`]s (a
//! regex over one log line and a function that turns the match into a
//! [`Finding`]) and of [`Situation`]s (facts of the request, such as "START
//! exited 0 at once", that no single line shows).
//!
//! Every regex compiles once, into [`Catalog`]; a [`RegexSet`] over all of
//! them tells which rules a line can match, so each line is scanned once.

mod db;
mod env;
mod misc;
mod net;
mod node;
mod ports;
mod python;
mod rust;

use std::{collections::HashSet, sync::LazyLock};

use regex::{Captures, Regex, RegexSet};
use reporunner_proto::{
    agents::resolver::v1::{Diagnosis, DiagnosisSource, Phase},
    common::v1::{
        AddBackingService, AddPackage, AddSetupCommand, BackingService, BackingServiceKind, Command,
        CommandSlot, Component, CreateFile, PlanPatch, RelaxPin, ReplaceCommand, RunPlan, SetEnvVar, SetPort,
        SetRuntimeVersion, Toolchain, plan_patch::Change,
    },
};

/// A failure class recognised from one log line.
#[derive(Debug)]
pub struct Rule {
    /// The stable cause id, e.g. "python.missing_module".
    pub cause: &'static str,
    pub pattern: &'static str,
    /// Higher is more specific: on a line that several rules match, the
    /// highest that gives a finding wins, and diagnoses are ranked by it.
    pub rank: u16,
    pub confidence: f64,
    /// The phases the rule applies to; empty for all.
    pub phases: &'static [Phase],
    pub check: fn(&Context<'_>, &Hit<'_>) -> Option<Finding>,
}

/// A failure class recognised from the request as a whole.
#[derive(Debug)]
pub struct Situation {
    pub cause: &'static str,
    pub rank: u16,
    pub confidence: f64,
    pub check: fn(&Context<'_>) -> Option<Finding>,
}

/// One line a rule matched.
#[derive(Debug)]
pub struct Hit<'h> {
    pub caps: Captures<'h>,
    /// Index of the line in [`Context::lines`].
    pub line: usize,
}

impl Hit<'_> {
    /// The named group, or "".
    pub fn get(&self, name: &str) -> &str {
        self.caps.name(name).map_or("", |m| m.as_str())
    }
}

/// What a rule concluded.
#[derive(Debug, Default)]
pub struct Finding {
    pub summary: String,
    pub patches: Vec<PlanPatch>,
    /// Overrides the rule's confidence.
    pub confidence: Option<f64>,
}

impl Finding {
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }

    pub fn patch(mut self, patch: PlanPatch) -> Self {
        self.patches.push(patch);
        self
    }

    pub fn patches(mut self, patches: impl IntoIterator<Item = PlanPatch>) -> Self {
        self.patches.extend(patches);
        self
    }

    pub fn confidence(mut self, confidence: f64) -> Self {
        self.confidence = Some(confidence);
        self
    }
}

/// What rules see of a request: the bounded log and the plan.
#[derive(Debug)]
pub struct Context<'a> {
    pub phase: Phase,
    pub exit_code: i32,
    /// The failing component's name (the request's, or the plan's only one).
    pub component_name: &'a str,
    pub component: Option<&'a Component>,
    pub plan: Option<&'a RunPlan>,
    pub toolchains: &'a [Toolchain],
    /// The last lines of the log, oldest first, each bounded.
    pub lines: Vec<&'a str>,
    /// What the component's environment provides: importable module ->
    /// `Name==version` (`DiagnoseRequest.packages`).
    pub packages: Option<&'a std::collections::HashMap<String, String>>,
}

impl<'a> Context<'a> {
    /// Builds a context; `log_tail` is cut to the last `max_lines` lines
    /// (entries holding newlines are split) of at most `max_line_bytes` each.
    pub fn new(
        phase: Phase,
        exit_code: i32,
        component: &'a str,
        plan: Option<&'a RunPlan>,
        toolchains: &'a [Toolchain],
        log_tail: &'a [String],
        max_lines: usize,
        max_line_bytes: usize,
    ) -> Self {
        let mut lines = Vec::new();
        'outer: for entry in log_tail.iter().rev() {
            for line in entry.rsplit('\n') {
                if lines.len() >= max_lines {
                    break 'outer;
                }
                lines.push(truncate(line.trim_end_matches('\r'), max_line_bytes));
            }
        }
        lines.reverse();
        let found = plan.and_then(|p| match component {
            "" if p.components.len() == 1 => p.components.first(),
            name => p.components.iter().find(|c| c.name == name),
        });
        Self {
            phase,
            exit_code,
            component_name: found.map_or(component, |c| c.name.as_str()),
            component: found,
            plan,
            toolchains,
            lines,
            packages: None,
        }
    }

    /// The same context, knowing what the component's environment provides.
    #[must_use]
    pub fn with_packages(mut self, packages: &'a std::collections::HashMap<String, String>) -> Self {
        self.packages = Some(packages);
        self
    }

    /// The distribution and installed version that provide module `module`
    /// (`a.b` is looked up as `a`), when the request said.
    pub fn package_of(&self, module: &str) -> Option<(&'a str, &'a str)> {
        let top = module.split('.').next()?;
        self.packages?.get(top)?.split_once("==")
    }

    /// Whether any line contains `needle` (case-sensitive).
    pub fn mentions(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    /// The first capture of `re` over the lines, newest first.
    pub fn find<'r>(&self, re: &'r Regex) -> Option<Captures<'a>> {
        self.lines.iter().rev().find_map(|l| re.captures(l))
    }

    /// Whether the component lists `framework` (case-insensitive).
    pub fn has_framework(&self, framework: &str) -> bool {
        self.component
            .is_some_and(|c| c.frameworks.iter().any(|f| f.eq_ignore_ascii_case(framework)))
    }

    pub fn language(&self) -> &str {
        self.component.map_or("", |c| c.language.as_str())
    }

    pub fn package_manager(&self) -> &str {
        self.component.map_or("", |c| c.package_manager.as_str())
    }

    /// The component's command in `slot`, if it has one.
    pub fn command(&self, slot: CommandSlot) -> Option<&'a Command> {
        let c = self.component?;
        let command = match slot {
            CommandSlot::Install => c.install.as_ref(),
            CommandSlot::Build => c.build.as_ref(),
            CommandSlot::Start => c.start.as_ref(),
            CommandSlot::Test => c.test.as_ref(),
            CommandSlot::Unspecified => None,
        }?;
        (!command.run.trim().is_empty()).then_some(command)
    }

    /// The command slot of the failing phase.
    pub fn phase_slot(&self) -> CommandSlot {
        match self.phase {
            Phase::Install => CommandSlot::Install,
            Phase::Build => CommandSlot::Build,
            Phase::Start | Phase::Probe => CommandSlot::Start,
            Phase::Test => CommandSlot::Test,
            Phase::Setup | Phase::Unspecified => CommandSlot::Unspecified,
        }
    }

    /// The workspace-relative path of a file in the component's directory.
    pub fn component_file(&self, name: &str) -> String {
        match self.component.map(|c| c.path.trim_matches('/')) {
            None | Some("" | ".") => name.to_owned(),
            Some(dir) => format!("{dir}/{name}"),
        }
    }

    /// A patch of the failing component.
    pub fn patch(&self, reason: impl Into<String>, change: Change) -> PlanPatch {
        PlanPatch {
            component: self.component_name.to_owned(),
            reason: reason.into(),
            change: Some(change),
        }
    }

    pub fn add_package(&self, name: &str, version_spec: &str, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::AddPackage(AddPackage {
                name: name.to_owned(),
                version_spec: version_spec.to_owned(),
            }),
        )
    }

    pub fn set_env(&self, name: &str, value: &str, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::SetEnvVar(SetEnvVar {
                name: name.to_owned(),
                value: value.to_owned(),
            }),
        )
    }

    pub fn set_port(&self, port: u32, reason: impl Into<String>) -> PlanPatch {
        self.set_port_via(port, "", reason)
    }

    /// Moves the port and changes how the runner passes it (`env:NAME`, ...).
    pub fn set_port_via(&self, port: u32, binding: &str, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::SetPort(SetPort {
                port,
                binding: binding.to_owned(),
            }),
        )
    }

    pub fn set_runtime(&self, version: &str, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::SetRuntimeVersion(SetRuntimeVersion {
                version: version.to_owned(),
            }),
        )
    }

    /// Replaces the command in `slot`, keeping its working directory.
    pub fn replace(&self, slot: CommandSlot, run: &str, reason: impl Into<String>) -> PlanPatch {
        let working_dir = self
            .command(slot)
            .map(|c| c.working_dir.clone())
            .unwrap_or_default();
        self.patch(
            reason,
            Change::ReplaceCommand(ReplaceCommand {
                slot: slot as i32,
                command: Some(Command {
                    run: run.to_owned(),
                    working_dir,
                    watch_mode: false,
                }),
            }),
        )
    }

    pub fn add_service(
        &self,
        kind: BackingServiceKind,
        env_vars: Vec<String>,
        reason: impl Into<String>,
    ) -> PlanPatch {
        self.patch(
            reason,
            Change::AddBackingService(AddBackingService {
                service: Some(BackingService {
                    kind: kind as i32,
                    version: String::new(),
                    env_vars,
                    evidence: Vec::new(),
                    url_scheme: String::new(),
                }),
            }),
        )
    }

    pub fn add_setup(&self, run: &str, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::AddSetupCommand(AddSetupCommand {
                command: Some(Command {
                    run: run.to_owned(),
                    working_dir: String::new(),
                    watch_mode: false,
                }),
            }),
        )
    }

    pub fn relax_pin(&self, package: &str, from: &str, to: &str, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::RelaxPin(RelaxPin {
                package: package.to_owned(),
                from_spec: from.to_owned(),
                to_spec: to.to_owned(),
            }),
        )
    }

    pub fn create_file(&self, path: &str, content: String, reason: impl Into<String>) -> PlanPatch {
        self.patch(
            reason,
            Change::CreateFile(CreateFile {
                path: path.to_owned(),
                content,
            }),
        )
    }
}

/// Cuts `line` to at most `max` bytes, at a character boundary.
fn truncate(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Every rule and situation, compiled once.
#[derive(Debug)]
pub struct Catalog {
    pub rules: Vec<Rule>,
    pub situations: Vec<Situation>,
    regexes: Vec<Regex>,
    set: RegexSet,
}

#[allow(clippy::expect_used)] // The patterns are constants, checked by the tests.
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let rules: Vec<Rule> = [
        python::rules(),
        node::rules(),
        rust::rules(),
        db::rules(),
        env::rules(),
        ports::rules(),
        misc::rules(),
        net::rules(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let regexes = rules
        .iter()
        .map(|r| Regex::new(r.pattern).expect("rule patterns compile"))
        .collect();
    let set = RegexSet::new(rules.iter().map(|r| r.pattern)).expect("rule patterns compile");
    let situations = [node::situations(), misc::situations()]
        .into_iter()
        .flatten()
        .collect();
    Catalog {
        rules,
        situations,
        regexes,
        set,
    }
});

/// Compiles a constant regex once.
macro_rules! lazy_regex {
    ($name:ident, $pattern:expr) => {
        #[allow(clippy::expect_used)]
        static $name: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new($pattern).expect("constant regex compiles"));
    };
}
pub(crate) use lazy_regex;

/// A diagnosis with its rank, before ranking.
struct Candidate {
    rank: u16,
    line: usize,
    diagnosis: Diagnosis,
}

impl Catalog {
    /// Every failure class the context shows, most specific first, one
    /// diagnosis per cause (its newest line).
    pub fn diagnose(&self, ctx: &Context<'_>) -> Vec<Diagnosis> {
        let mut seen = HashSet::new();
        let mut candidates = Vec::new();
        for (index, line) in ctx.lines.iter().enumerate().rev() {
            let mut matched: Vec<usize> = self
                .set
                .matches(line)
                .into_iter()
                .filter(|&i| {
                    let rule = &self.rules[i];
                    rule.phases.is_empty() || rule.phases.contains(&ctx.phase)
                })
                .collect();
            if matched.is_empty() {
                continue;
            }
            matched.sort_by_key(|&i| std::cmp::Reverse(self.rules[i].rank));
            // The most specific rule that concludes something owns the line.
            for i in matched {
                let rule = &self.rules[i];
                let Some(caps) = self.regexes[i].captures(line) else {
                    continue;
                };
                let Some(finding) = (rule.check)(ctx, &Hit { caps, line: index }) else {
                    continue;
                };
                if seen.insert(rule.cause) {
                    candidates.push(Candidate {
                        rank: rule.rank,
                        line: index,
                        diagnosis: diagnosis(rule.cause, rule.confidence, finding, line),
                    });
                }
                break;
            }
        }
        for situation in &self.situations {
            if seen.contains(situation.cause) {
                continue;
            }
            if let Some(finding) = (situation.check)(ctx) {
                seen.insert(situation.cause);
                let line = ctx
                    .lines
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .copied()
                    .unwrap_or("");
                candidates.push(Candidate {
                    rank: situation.rank,
                    line: ctx.lines.len(),
                    diagnosis: diagnosis(situation.cause, situation.confidence, finding, line),
                });
            }
        }
        candidates.sort_by(|a, b| {
            b.rank
                .cmp(&a.rank)
                .then(b.diagnosis.confidence.total_cmp(&a.diagnosis.confidence))
                .then(b.line.cmp(&a.line))
        });
        candidates.into_iter().map(|c| c.diagnosis).collect()
    }

    /// The distinct causes the catalog knows.
    pub fn causes(&self) -> Vec<&'static str> {
        let mut causes: Vec<_> = self
            .rules
            .iter()
            .map(|r| r.cause)
            .chain(self.situations.iter().map(|s| s.cause))
            .collect();
        causes.sort_unstable();
        causes.dedup();
        causes
    }
}

fn diagnosis(cause: &str, confidence: f64, finding: Finding, line: &str) -> Diagnosis {
    Diagnosis {
        cause: cause.to_owned(),
        summary: finding.summary,
        confidence: finding.confidence.unwrap_or(confidence),
        source: DiagnosisSource::Rule as i32,
        matched_line: line.trim().to_owned(),
        patches: finding.patches,
    }
}

/// A random alphanumeric secret of 48 characters.
pub fn random_secret() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_causes_are_stable_ids() {
        let causes = CATALOG.causes();
        let id = Regex::new(r"^[a-z]+\.[a-z0-9_]+$").expect("regex");
        for cause in &causes {
            assert!(id.is_match(cause), "{cause} is not a stable id");
        }
        assert!(causes.len() >= 25, "only {} failure classes", causes.len());
    }

    #[test]
    fn the_log_is_bounded_in_lines_and_bytes() {
        let tail = vec!["a".repeat(10_000), "x\ny\nz".to_owned(), "é".repeat(10)];
        let ctx = Context::new(Phase::Start, 1, "", None, &[], &tail, 3, 5);
        assert_eq!(ctx.lines, vec!["y", "z", "éé"]);
        let ctx = Context::new(Phase::Start, 1, "", None, &[], &tail, 100, 5);
        assert_eq!(ctx.lines[0], "aaaaa");
    }
}
