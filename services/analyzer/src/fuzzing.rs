//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code an
//! analysis or a request runs, and panics only on a bug.

use std::{
    fs,
    path::{Component as PathPart, Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use prost::Message;
use reporunner_proto::{
    agents::analyzer::v1::{AnalyzeRequest, ExportPlanRequest},
    common::v1::RunPlan,
};

use crate::{AnalyzerConfig, ExportFormat, analyze_dir, check_workspace, export_plan};

/// The manifests (and their neighbours) a section of an input may be.
const NAMES: [&str; 32] = [
    "package.json",
    "pyproject.toml",
    "Pipfile",
    "Cargo.toml",
    "requirements.txt",
    "docker-compose.yml",
    "Procfile",
    ".env",
    ".env.example",
    "compose.yaml",
    "setup.cfg",
    "setup.py",
    "environment.yml",
    "go.mod",
    "app.json",
    ".devcontainer.json",
    "Dockerfile",
    ".python-version",
    ".nvmrc",
    "runtime.txt",
    "pnpm-workspace.yaml",
    "rust-toolchain.toml",
    "Makefile",
    "README.md",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "manage.py",
    "main.py",
    "index.js",
    "src/main.rs",
    "requirements-dev.txt",
];

/// Where a section's file lies.
const DIRS: [&str; 8] = [
    "",
    "api",
    "web",
    "packages/a",
    "backend",
    "frontend",
    "services/x",
    "app",
];

/// Sections of an input are separated by two NUL bytes.
const SEPARATOR: &[u8] = b"\0\0";

/// At most this many files per input.
const MAX_FILES: usize = 8;

/// A directory of one input's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "reporunner-fuzz-analyzer-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("create the scratch directory");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sections(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                rest = Some(&current[at + SEPARATOR.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Whether a plan's relative directory stays inside the workspace.
fn inside(dir: &str) -> bool {
    let path = Path::new(dir);
    !dir.contains('\\')
        && path
            .components()
            .all(|part| matches!(part, PathPart::Normal(_) | PathPart::CurDir))
}

/// Writes the manifests in `data` into a fresh workspace and analyzes it.
///
/// `data` is up to 8 sections separated by two NUL bytes; a section's first
/// byte names its file (low 5 bits: `package.json`, `pyproject.toml`,
/// `Pipfile`, `Cargo.toml`, `requirements.txt`, a compose file, `Procfile`,
/// `.env`, ...; high 3 bits: the directory), the rest is its content. The
/// plan's components must lie inside the workspace and have distinct
/// names, and the plan must export in every format.
pub fn parse_manifests(data: &[u8]) {
    let scratch = Scratch::new();
    for section in sections(data).take(MAX_FILES) {
        let Some((&selector, content)) = section.split_first() else {
            continue;
        };
        let name = NAMES[usize::from(selector % 32)];
        let dir = DIRS[usize::from(selector / 32)];
        let path = scratch.0.join(dir).join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create a directory");
        }
        fs::write(&path, content).expect("write a manifest");
    }
    let config = AnalyzerConfig {
        time_budget: Duration::from_secs(10),
        ..AnalyzerConfig::default()
    };
    let plan = analyze_dir(&scratch.0, None, &config).expect("an existing directory is analyzed");
    let mut names = std::collections::BTreeSet::new();
    for component in &plan.components {
        assert!(
            inside(&component.path),
            "component {} lies outside the workspace: {:?}",
            component.name,
            component.path
        );
        assert!(
            names.insert(&component.name),
            "two components named {:?}",
            component.name
        );
        for command in [
            &component.install,
            &component.build,
            &component.start,
            &component.test,
        ]
        .into_iter()
        .flatten()
        .chain(&component.setup)
        {
            assert!(
                inside(&command.working_dir),
                "{:?} runs outside the workspace, in {:?}",
                command.run,
                command.working_dir
            );
        }
    }
    for format in [
        ExportFormat::Json,
        ExportFormat::Dockerfile,
        ExportFormat::Devcontainer,
        ExportFormat::Procfile,
        ExportFormat::Compose,
    ] {
        check_export(&plan, format);
    }
}

/// Exports `plan`; what a structured format gives back must read back.
fn check_export(plan: &RunPlan, format: ExportFormat) {
    let Ok(file) = export_plan(plan, format) else {
        return;
    };
    match format {
        ExportFormat::Json => {
            let back: RunPlan = reporunner_proto::json::from_str(&file.content)
                .unwrap_or_else(|e| panic!("the JSON export does not read back: {e}\n{}", file.content));
            let again = reporunner_proto::json::to_string_pretty(&back).expect("a plan renders");
            assert_eq!(again, file.content, "the JSON export changes when read back");
        }
        ExportFormat::Devcontainer => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&file.content) {
                panic!("the devcontainer.json export is not JSON: {e}\n{}", file.content);
            }
        }
        ExportFormat::Compose => {
            if let Err(e) = serde_norway::from_str::<serde_norway::Value>(&file.content) {
                panic!("the compose export is not YAML: {e}\n{}", file.content);
            }
        }
        ExportFormat::Dockerfile | ExportFormat::Procfile => {}
    }
}

/// Decodes `data` as an `AnalyzeRequest` (first byte even) or an
/// `ExportPlanRequest` (odd). An analysis is checked up to the walk (an
/// arbitrary path would walk the host); an export runs whole, on any plan.
pub fn validate_request(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let Ok(request) = AnalyzeRequest::decode(message) else {
            return;
        };
        if request.workspace_path.trim().is_empty() {
            return;
        }
        let _ = check_workspace(Path::new(&request.workspace_path));
    } else {
        let Ok(request) = ExportPlanRequest::decode(message) else {
            return;
        };
        let Ok(format) = ExportFormat::try_from(request.format) else {
            return;
        };
        let Some(plan) = request.plan else {
            return;
        };
        check_export(&plan, format);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_at_two_nuls() {
        let parts: Vec<&[u8]> = sections(b"\x00a\0\0\x06b\0\0").collect();
        assert_eq!(parts, [&b"\x00a"[..], b"\x06b", b""]);
        assert!(inside(".") && inside("api/x") && inside(""));
        assert!(!inside("../x") && !inside("/etc") && !inside("a\\b"));
    }
}
