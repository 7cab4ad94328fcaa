//! The base image of a component: its runtime, at the version the plan
//! settled on, as an official image tag that exists.
//!
//! Node and Python pick, in order: the repository's preferred version
//! (`.python-version`, `.nvmrc`-style preferences in `preferred_version`),
//! the host version the analysis found to satisfy the constraint (the one a
//! run uses), then the supported image the constraint allows that is
//! nearest the current default (so `>=0.10` is node 22, `^18` is node 18,
//! `>=3.13` is python 3.13). A constraint that allows no supported image
//! falls back to the default, and says so in a note.

use reporunner_proto::common::v1::{Component, Evidence, Runtime};

/// An image reference and, when the plan's version could not be used as
/// it stands, why (a comment line for the exported file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BaseImage {
    pub image: String,
    pub note: Option<String>,
}

/// A runtime line with official images: which versions are supported
/// (oldest first) and which one to use when the plan allows any.
#[derive(Debug)]
struct Line {
    name: &'static str,
    /// Version parts that make an image tag: 1 for node (`22`), 2 for
    /// python (`3.12`).
    parts: usize,
    supported: &'static [&'static str],
    default: &'static str,
}

const NODE: Line = Line {
    name: "node",
    parts: 1,
    supported: &["18", "20", "22", "24"],
    default: "22",
};

const PYTHON: Line = Line {
    name: "python",
    parts: 2,
    supported: &["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"],
    default: "3.12",
};

/// The image for `c`'s runtime.
pub(super) fn base_image(c: &Component) -> BaseImage {
    let runtime = c.runtime.clone().unwrap_or_default();
    let plain = |image: String| BaseImage { image, note: None };
    match runtime.name.as_str() {
        "python" => {
            let (version, note) = resolve(&PYTHON, &runtime, &c.evidence);
            BaseImage {
                image: format!("python:{version}-slim"),
                note,
            }
        }
        "node" => {
            let (version, note) = resolve(&NODE, &runtime, &c.evidence);
            BaseImage {
                image: format!("node:{version}-slim"),
                note,
            }
        }
        "bun" => plain("oven/bun:1".to_owned()),
        "rust" => plain(rust_image(&runtime.version_constraint)),
        "go" => plain(format!(
            "golang:{}",
            bare_version(&runtime.version_constraint, 2)
                .filter(|v| version_key(v) >= version_key("1.21"))
                .unwrap_or_else(|| "1.24".to_owned())
        )),
        "java" => plain(java_image(c, &runtime.version_constraint)),
        "c" | "cpp" => plain("gcc:14".to_owned()),
        "static" => plain("python:3.12-slim".to_owned()),
        _ => plain("debian:bookworm-slim".to_owned()),
    }
}

/// The version tag for a Node or Python component, and a note when the
/// plan's own version was not usable.
fn resolve(line: &Line, runtime: &Runtime, evidence: &[Evidence]) -> (String, Option<String>) {
    let constraint = runtime.version_constraint.trim();
    let allowed = |v: &str| constraint.is_empty() || matches(line, constraint, v) != Some(false);
    let wanted = [
        Some(runtime.preferred_version.trim().to_owned()),
        host_version(line.name, evidence),
    ];
    for v in wanted.into_iter().flatten() {
        if let Some(tag) = bare_version(&v, line.parts)
            && supported(line, &tag)
            && allowed(&v)
        {
            return (tag, None);
        }
    }
    if constraint.is_empty() {
        return (line.default.to_owned(), None);
    }
    if let Some(tag) = nearest_default(line, constraint) {
        return (tag, None);
    }
    let understood = matches(line, constraint, line.default).is_some();
    if let Some(tag) = bare_version(constraint, line.parts).filter(|t| understood && supported(line, t)) {
        return (tag, None);
    }
    let why = if understood {
        format!(
            "allows no supported image (the oldest is {} {})",
            line.name, line.supported[0]
        )
    } else {
        "is not a version range this export reads".to_owned()
    };
    (
        line.default.to_owned(),
        Some(format!(
            "{} {constraint} {why}: using {} {}",
            line.name, line.name, line.default
        )),
    )
}

/// The supported version the constraint allows that is nearest the
/// default (a newer one on a tie).
fn nearest_default(line: &Line, constraint: &str) -> Option<String> {
    let default = version_key(line.default);
    line.supported
        .iter()
        .filter(|v| matches(line, constraint, v) == Some(true))
        .min_by_key(|v| {
            let key = version_key(v);
            let distance = line_distance(&key, &default);
            (distance, std::cmp::Reverse(key))
        })
        .map(|v| (*v).to_owned())
}

/// How far apart two versions are, in releases of the line.
fn line_distance(a: &[u64], b: &[u64]) -> u64 {
    let flat = |v: &[u64]| v.first().copied().unwrap_or(0) * 1000 + v.get(1).copied().unwrap_or(0);
    flat(a).abs_diff(flat(b))
}

/// Not older than the oldest supported version; a newer one than this
/// table knows is taken as released.
fn supported(line: &Line, tag: &str) -> bool {
    version_key(tag) >= version_key(line.supported[0])
}

/// The version the analysis found on the host for this runtime: the
/// evidence `check_host_runtime` (detect/mod.rs) records as
/// "host has python 3.11.4, which satisfies >=3.8".
fn host_version(name: &str, evidence: &[Evidence]) -> Option<String> {
    evidence.iter().filter(|e| e.field == "runtime").find_map(|e| {
        let rest = e.detail.strip_prefix("host has ")?;
        let (found, _) = rest.split_once(", which satisfies")?;
        Some(found.strip_prefix(name)?.trim().to_owned())
    })
}

/// Does a release of the line (`22`, `3.11`, or a full version) satisfy
/// the constraint? Any release of it counts: `>=3.11.4` allows python
/// 3.11, whose image has the newest patch. None when unreadable.
fn matches(line: &Line, constraint: &str, version: &str) -> Option<bool> {
    let key = version_key(version);
    if key.is_empty() {
        return None;
    }
    let probes: Vec<Vec<u64>> = if key.len() > line.parts {
        vec![key]
    } else {
        let mut low = key.clone();
        let mut high = key;
        low.resize(3, 0);
        high.resize(3, 999);
        vec![low, high]
    };
    match line.name {
        "python" => python_matches(constraint, &probes),
        _ => node_matches(constraint, &probes),
    }
}

fn python_matches(constraint: &str, probes: &[Vec<u64>]) -> Option<bool> {
    let specs: pep440_rs::VersionSpecifiers = python_specifiers(constraint).parse().ok()?;
    Some(probes.iter().any(|p| {
        let text = p.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        text.parse::<pep440_rs::Version>()
            .is_ok_and(|v| specs.contains(&v))
    }))
}

/// Poetry's `^3.9` and `~3.11`, a bare `3.11` or `3.11.*`, and
/// `python-3.11` as PEP 440.
fn python_specifiers(constraint: &str) -> String {
    let c = constraint.trim().trim_start_matches("python-");
    let bump = |v: &str, at: usize| -> Option<String> {
        let mut key = version_key(v);
        key.truncate(at + 1);
        *key.get_mut(at)? += 1;
        Some(key.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
    };
    if let Some(v) = c.strip_prefix('^') {
        let v = v.trim();
        return bump(v, 0).map_or_else(|| c.to_owned(), |next| format!(">={v},<{next}"));
    }
    if let Some(v) = c.strip_prefix('~').filter(|v| !v.starts_with('=')) {
        let v = v.trim();
        return bump(v, 1).map_or_else(|| c.to_owned(), |next| format!(">={v},<{next}"));
    }
    if c.chars().next().is_some_and(|ch| ch.is_ascii_digit()) {
        return if c.contains('*') {
            format!("=={c}")
        } else {
            format!("=={c}.*")
        };
    }
    c.to_owned()
}

/// npm ranges: any `||` alternative; hyphen ranges; space-separated
/// comparators; `x` wildcards; `lts/*` and names are not versions.
fn node_matches(constraint: &str, probes: &[Vec<u64>]) -> Option<bool> {
    let mut any = false;
    for alternative in constraint.split("||") {
        let req = semver::VersionReq::parse(&semver_req(alternative)).ok()?;
        any |= probes.iter().any(|p| {
            req.matches(&semver::Version::new(
                p.first().copied().unwrap_or(0),
                p.get(1).copied().unwrap_or(0),
                p.get(2).copied().unwrap_or(0),
            ))
        });
    }
    Some(any)
}

/// One npm comparator set for the semver crate: `>= 16 < 21` → `>=16, <21`,
/// `16 - 20` → `>=16, <=20`, `v18` → `18`, empty or `*` → `*`.
fn semver_req(alternative: &str) -> String {
    let words: Vec<&str> = alternative.split_whitespace().collect();
    if let [low, "-", high] = words.as_slice() {
        return format!(
            ">={}, <={}",
            low.trim_start_matches('v'),
            high.trim_start_matches('v')
        );
    }
    let mut out: Vec<String> = Vec::new();
    let mut op = String::new();
    for word in words {
        if word.chars().all(|c| "<>=^~".contains(c)) {
            op.push_str(word);
            continue;
        }
        let (word_op, version) = word.split_at(word.find(|c: char| !"<>=^~".contains(c)).unwrap_or(0));
        let version: Vec<&str> = version
            .trim_start_matches('v')
            .split('.')
            .map(|p| if p == "x" || p == "X" { "*" } else { p })
            .collect();
        out.push(format!("{op}{word_op}{}", version.join(".")));
        op.clear();
    }
    if out.is_empty() {
        "*".to_owned()
    } else {
        out.join(", ")
    }
}

/// The first version in `text`, cut to `parts` parts: `>= 3.11.4` → `3.11`.
fn bare_version(text: &str, parts: usize) -> Option<String> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let version: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let kept: Vec<&str> = version.split('.').filter(|p| !p.is_empty()).take(parts).collect();
    (!kept.is_empty()).then(|| kept.join("."))
}

/// `3.11.4` → [3, 11, 4]; stops at the first part that is not a number.
fn version_key(v: &str) -> Vec<u64> {
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect()
}

/// `rust-toolchain` channels and `rust-version` minimums: a pinned release
/// is its own tag; a minimum, `stable` or nothing is the newest (`rust:1`).
fn rust_image(constraint: &str) -> String {
    let c = constraint.trim();
    if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.') && version_key(c).len() >= 2 {
        format!("rust:{c}")
    } else {
        "rust:1".to_owned()
    }
}

/// A JDK image with the build tool the install runs, when it is not a
/// wrapper script in the repository.
fn java_image(c: &Component, constraint: &str) -> String {
    let major = bare_version(constraint, 1)
        .filter(|v| version_key(v).first().is_some_and(|major| *major >= 8))
        .unwrap_or_else(|| "17".to_owned());
    let tool = c
        .install
        .as_ref()
        .or(c.build.as_ref())
        .and_then(|cmd| cmd.run.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    match tool.as_str() {
        "mvn" => format!("maven:3-eclipse-temurin-{major}"),
        "gradle" => format!("gradle:jdk{major}"),
        _ => format!("eclipse-temurin:{major}-jdk"),
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::Command;

    use super::*;

    fn component(name: &str, constraint: &str, preferred: &str) -> Component {
        Component {
            runtime: Some(Runtime {
                name: name.into(),
                version_constraint: constraint.into(),
                preferred_version: preferred.into(),
            }),
            ..Default::default()
        }
    }

    fn image(name: &str, constraint: &str, preferred: &str) -> String {
        base_image(&component(name, constraint, preferred)).image
    }

    /// The reported library: `engines.node: ">= 0.10"` became `node:0-slim`.
    #[test]
    fn a_lower_bound_is_at_least_and_picks_the_current_default() {
        assert_eq!(image("node", ">= 0.10", ""), "node:22-slim");
        assert_eq!(image("node", ">=0.10.0", ""), "node:22-slim");
        assert_eq!(image("node", ">=14", ""), "node:22-slim");
        assert_eq!(image("python", ">=3.8", ""), "python:3.12-slim");
        assert_eq!(image("python", ">=3.6, <4", ""), "python:3.12-slim");
    }

    #[test]
    fn a_lower_bound_above_the_default_is_the_bound() {
        assert_eq!(image("node", ">=24", ""), "node:24-slim");
        assert_eq!(image("python", ">=3.13", ""), "python:3.13-slim");
        assert_eq!(image("python", ">=3.8,<3.12", ""), "python:3.11-slim");
        assert_eq!(image("node", ">=16 <21", ""), "node:20-slim");
    }

    #[test]
    fn a_pin_keeps_its_major_or_minor() {
        assert_eq!(image("node", "^18", ""), "node:18-slim");
        assert_eq!(image("node", "~18.17.0", ""), "node:18-slim");
        assert_eq!(image("node", "20.11.1", ""), "node:20-slim");
        assert_eq!(image("node", "18.x", ""), "node:18-slim");
        assert_eq!(image("node", "^14 || ^20", ""), "node:20-slim");
        assert_eq!(image("python", "~3.11", ""), "python:3.11-slim");
        assert_eq!(image("python", "3.11.*", ""), "python:3.11-slim");
        assert_eq!(image("python", "==3.11", ""), "python:3.11-slim");
        assert_eq!(image("python", "==3.11.4", ""), "python:3.11-slim");
        assert_eq!(image("python", "^3.10", ""), "python:3.12-slim");
        assert_eq!(image("node", "^26", ""), "node:26-slim");
    }

    #[test]
    fn nothing_below_the_supported_images_is_emitted() {
        for (constraint, version) in [("^0.10", "22"), ("^14", "22"), ("<16", "22"), ("lts/*", "22")] {
            let got = base_image(&component("node", constraint, ""));
            assert_eq!(got.image, format!("node:{version}-slim"), "{constraint}");
            let note = got.note.unwrap_or_default();
            assert!(note.contains(constraint), "{constraint}: {note}");
        }
        let got = base_image(&component("python", "==2.7.*", ""));
        assert_eq!(got.image, "python:3.12-slim");
        assert!(got.note.unwrap_or_default().contains("oldest is python 3.8"));
    }

    /// The reported Flask app: `.python-version` said 3.11, the run used
    /// 3.11, the Dockerfile said 3.12.
    #[test]
    fn the_preferred_version_wins_when_the_constraint_allows_it() {
        assert_eq!(image("python", "", "3.11"), "python:3.11-slim");
        assert_eq!(image("python", ">=3.9", "3.14"), "python:3.14-slim");
        assert_eq!(image("python", "", "3.12.3"), "python:3.12-slim");
        assert_eq!(image("python", ">=3.12", "3.10"), "python:3.12-slim");
        assert_eq!(image("node", "", "20"), "node:20-slim");
    }

    #[test]
    fn the_host_version_the_analysis_checked_is_used() {
        let mut c = component("python", ">=3.8", "");
        c.evidence.push(Evidence {
            field: "runtime".into(),
            detail: "host has python 3.11.9, which satisfies >=3.8".into(),
            ..Default::default()
        });
        assert_eq!(base_image(&c).image, "python:3.11-slim");
    }

    #[test]
    fn other_runtimes_have_images_with_their_tools() {
        assert_eq!(image("rust", ">=1.70", ""), "rust:1");
        assert_eq!(image("rust", "1.75.0", ""), "rust:1.75.0");
        assert_eq!(image("rust", "nightly", ""), "rust:1");
        assert_eq!(image("go", "1.22.3", ""), "golang:1.22");
        assert_eq!(image("go", "1.13", ""), "golang:1.24");
        let mut java = component("java", "21", "");
        java.install = Some(Command {
            run: "mvn -B -q dependency:go-offline".into(),
            ..Default::default()
        });
        assert_eq!(base_image(&java).image, "maven:3-eclipse-temurin-21");
        assert_eq!(image("java", "", ""), "eclipse-temurin:17-jdk");
        assert_eq!(image("c", "", ""), "gcc:14");
    }
}
