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
