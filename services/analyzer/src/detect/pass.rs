//! Detector passes. Each ecosystem detector is an ordered list of named
//! passes over one draft component: the order is data that a reader (or a
//! test) can print, and each pass is a small function.
//!
//! A pass reads the index and the facts that earlier passes left in the
//! stack's own facts type `F`, and writes the [`Draft`]. A pass that finds
//! nothing more can be decided (an unreadable manifest) sets `stop`.

use crate::{
    draft::Draft,
    index::{RepoIndex, join},
};

/// What a pass decides, in the order a stack normally runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Manifests: name, dependencies, frameworks, workspace shape.
    Manifest,
    /// Runtime and its version constraint.
    Versions,
    /// Package manager, install / build commands, package scripts.
    Scripts,
    /// The start command, port and binding.
    EntryPoint,
    /// The test command.
    Tests,
    /// Backing services and configuration read by the component.
    Services,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Versions => "versions",
            Self::Scripts => "scripts",
            Self::EntryPoint => "entry point",
            Self::Tests => "tests",
            Self::Services => "services",
        }
    }
}

/// One component being detected: the index, the component's directory, the
/// stack's facts read so far and the draft plan.
pub struct Scan<'a, F> {
    pub idx: &'a RepoIndex,
    pub dir: &'a str,
    pub facts: F,
    pub d: Draft,
    /// Set by a pass when the remaining passes have nothing to work on.
    pub stop: bool,
}

impl<F> Scan<'_, F> {
    /// The path of `name` inside the component.
    pub fn path(&self, name: &str) -> String {
        join(self.dir, name)
    }
}

/// A named step of a detector.
pub struct Pass<F> {
    pub stage: Stage,
    pub name: &'static str,
    pub run: fn(&mut Scan<'_, F>),
}

impl<F> Pass<F> {
    pub const fn new(stage: Stage, name: &'static str, run: fn(&mut Scan<'_, F>)) -> Self {
        Self { stage, name, run }
    }
}

/// Runs `passes` in order over a fresh scan and returns the draft.
pub fn run<F>(passes: &[Pass<F>], idx: &RepoIndex, dir: &str, d: Draft, facts: F) -> Draft {
    let mut scan = Scan {
        idx,
        dir,
        facts,
        d,
        stop: false,
    };
    for pass in passes {
        if scan.stop {
            break;
        }
        (pass.run)(&mut scan);
    }
    scan.d
}

/// `stage/name` of each pass, for printing a stack's order.
pub fn describe<F>(passes: &[Pass<F>]) -> Vec<String> {
    passes
        .iter()
        .map(|p| format!("{}/{}", p.stage.as_str(), p.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Names = Vec<&'static str>;

    fn name_from_facts(s: &mut Scan<'_, Names>) {
        s.d.c.name = s.facts.join("+");
    }

    const STOPPING: &[Pass<Names>] = &[
        Pass::new(Stage::Manifest, "first", |s| s.d.c.name = "first".into()),
        Pass::new(Stage::Versions, "stop", |s| s.stop = true),
        Pass::new(Stage::Scripts, "never", |s| s.d.c.name = "never".into()),
    ];

    #[test]
    fn passes_share_facts_in_order_and_stop_when_told() {
        let idx = RepoIndex::from_paths(&[]);
        let in_order: [Pass<Names>; 3] = [
            Pass::new(Stage::Manifest, "a", |s| s.facts.push("a")),
            Pass::new(Stage::Tests, "b", |s| s.facts.push("b")),
            Pass::new(Stage::Services, "name", name_from_facts),
        ];
        let d = run(
            &in_order,
            &idx,
            "app",
            Draft::new("x", "app", "python"),
            Names::new(),
        );
        assert_eq!(d.c.name, "a+b");

        let d = run(STOPPING, &idx, "", Draft::new("x", "", "python"), Names::new());
        assert_eq!(d.c.name, "first");
        assert_eq!(
            describe(STOPPING),
            ["manifest/first", "versions/stop", "scripts/never"]
        );
    }
}
