//! Random file trees with random and garbage manifests: the analysis never
//! panics and always finishes within its time budget.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use reporunner_analyzer::{AnalyzerConfig, ExportFormat, analyze_dir, export_plan};

const NAMES: &[&str] = &[
    "package.json",
    "pyproject.toml",
    "Cargo.toml",
    "docker-compose.yml",
    "compose.yaml",
    "Procfile",
    "requirements.txt",
    "setup.py",
    "setup.cfg",
    "Pipfile",
    "environment.yml",
    "go.mod",
    "pom.xml",
    "build.gradle",
    "Makefile",
    "CMakeLists.txt",
    "Dockerfile",
    ".env.example",
    "README.md",
    "manage.py",
    "main.py",
    "app.py",
    "index.js",
    "server.js",
    "main.go",
    "pnpm-workspace.yaml",
    ".python-version",
    ".nvmrc",
    "rust-toolchain.toml",
    "index.html",
    ".flaskenv",
    "runtime.txt",
    ".devcontainer.json",
    "uv.lock",
    "poetry.lock",
    "yarn.lock",
    "main.rs",
    ".gitignore",
];
const DIRS: &[&str] = &[
    "src",
    "app",
    "apps",
    "packages",
    "cmd",
    "examples",
    "api",
    "web",
    "node_modules",
    "a",
    "ü",
    "x y",
];

/// Fragments that make garbage look enough like a manifest to reach deep paths.
const SNIPPETS: &[&str] = &[
    "{\"name\":\"x\",\"scripts\":{\"start\":\"node index.js\",\"dev\":\"vite\"},\"workspaces\":[\"**\",\"*/*\"]}",
    "[project]\nname='x'\nrequires-python='>=3.10'\ndependencies=['fastapi','psycopg2']\n",
    "[tool.poetry.dependencies]\npython='^3.9'\n",
    "[workspace]\nmembers=['*','../..','**/**']\n",
    "[package]\nname='a'\n[[bin]]\nname='b'\npath='../../etc/passwd'\n",
    "services:\n  db:\n    image: postgres:16\n  app:\n    build: ../..\n    ports: ['8000:8000']\n    environment: [A=b]\n",
    "web: gunicorn app:app --bind 0.0.0.0:$PORT\nrelease: python manage.py migrate\n",
    "app = FastAPI()\napp = Flask(__name__)\nif __name__ == '__main__':\n",
    "```bash\nnpm start\npython app.py\n```\nhttp://localhost:99999\n",
    "FROM python:3.99\nCMD [\"python\"\nEXPOSE 70000\n",
    "packages:\n  - '**'\n  - '!**'\n",
    "os.environ['A']\nprocess.env.B || 'x'\nstd::env::var(\"C\")\n",
    "\u{0}\u{1}\u{fffd}\u{10ffff}",
    "python-3.\n3.8\nlts/*\n",
];

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            0..SNIPPETS.len(),
            proptest::collection::vec(any::<u8>(), 0..40),
            0usize..200
        )
            .prop_map(|(i, noise, cut)| {
                let mut s = SNIPPETS[i].as_bytes().to_vec();
                let at = cut.min(s.len());
                s.splice(at..at, noise);
                s
            }),
        (0..SNIPPETS.len(), 0..SNIPPETS.len())
            .prop_map(|(a, b)| format!("{}{}", SNIPPETS[a], SNIPPETS[b]).into_bytes()),
        ".{0,200}".prop_map(String::into_bytes),
    ]
}

fn tree() -> impl Strategy<Value = Vec<(Vec<usize>, usize, Vec<u8>)>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(0..DIRS.len(), 0..4),
            0..NAMES.len(),
            content(),
        ),
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_never_panic_and_finish_in_budget(files in tree()) {
        let dir = tempfile::tempdir().unwrap();
        for (dirs, name, bytes) in &files {
            let mut path = dir.path().to_path_buf();
            for d in dirs {
                path.push(DIRS[*d]);
            }
            if std::fs::create_dir_all(&path).is_err() {
                continue;
            }
            path.push(NAMES[*name]);
            if path.is_dir() {
                continue;
            }
            let _ = std::fs::write(&path, bytes);
        }
        let config = AnalyzerConfig { time_budget: Duration::from_millis(2_000), ..AnalyzerConfig::default() };
        let started = Instant::now();
        let plan = analyze_dir(dir.path(), None, &config).unwrap();
        prop_assert!(started.elapsed() < Duration::from_millis(2_000 + 1_500), "took {:?}", started.elapsed());
        prop_assert!(plan.generator.starts_with("reporunner-analyzer"));
        for c in &plan.components {
            prop_assert!(!c.name.is_empty());
            prop_assert!((0.0..=1.0).contains(&c.confidence));
            prop_assert!(c.port < 65536);
            prop_assert!(!c.path.starts_with('/') && !c.path.contains(".."));
        }
        let names: std::collections::BTreeSet<_> = plan.components.iter().map(|c| &c.name).collect();
        prop_assert_eq!(names.len(), plan.components.len(), "component names are unique");
        let starts = plan
            .components
            .iter()
            .any(|c| c.start.as_ref().is_some_and(|s| !s.run.trim().is_empty()));
        for format in [
            ExportFormat::Json,
            ExportFormat::Dockerfile,
            ExportFormat::Devcontainer,
            ExportFormat::Procfile,
            ExportFormat::Compose,
        ] {
            match export_plan(&plan, format) {
                Ok(_) => {}
                // Only a plan with nothing to start is refused an image.
                Err(reporunner_analyzer::AnalyzerError::NothingToStart(_)) => prop_assert!(!starts),
                Err(e) => prop_assert!(false, "{format:?}: {e}"),
            }
        }
    }
}

#[test]
fn the_entry_bound_stops_the_walk_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(dir.path().join(format!("f{i}.txt")), "x").unwrap();
    }
    std::fs::write(dir.path().join("package.json"), "{}").unwrap();
    let config = AnalyzerConfig {
        max_entries: 50,
        ..AnalyzerConfig::default()
    };
    let plan = analyze_dir(dir.path(), None, &config).unwrap();
    assert!(
        plan.warnings.iter().any(|w| w.contains("more than 50 entries")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn large_files_are_read_only_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from("flask\n");
    big.push_str(&"# padding\n".repeat(300_000));
    big.push_str("django\n");
    std::fs::write(dir.path().join("requirements.txt"), big).unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "from flask import Flask\napp = Flask(__name__)\n",
    )
    .unwrap();
    let plan = analyze_dir(dir.path(), None, &AnalyzerConfig::default()).unwrap();
    let c = &plan.components[0];
    assert_eq!(c.frameworks, ["flask"], "django lies past the 1 MiB cap");
}
