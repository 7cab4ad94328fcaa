//! Analysis wall time against a plain walk of the same tree, in one run.
//!
//! `cargo bench -p reporunner-analyzer` prints rows like
//! `analyze 50k tree: X ms vs walk Y ms = R.RRx`. The goal is at most 2x.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use reporunner_analyzer::{AnalyzerConfig, analyze_dir, index::walk_builder};

/// Writes a monorepo of ~`files` files: apps and services in four
/// ecosystems with manifests, sources, tests, env templates, a compose file.
fn generate(root: &Path, files: usize) -> std::io::Result<usize> {
    let mut written = 0;
    let mut write = |rel: String, content: &str| -> std::io::Result<()> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
        written += 1;
        Ok(())
    };
    write(
        "package.json".into(),
        r#"{"name":"mono","private":true,"workspaces":["apps/*","packages/*"]}"#,
    )?;
    write("package-lock.json".into(), "{}")?;
    write(".gitignore".into(), "node_modules/\n*.log\n")?;
    write(
        "docker-compose.yml".into(),
        "services:\n  db:\n    image: postgres:16\n  cache:\n    image: redis:7\n",
    )?;
    write(
        "README.md".into(),
        "# mono\n\n```sh\nnpm install\nnpm run dev\n```\n",
    )?;
    let per_project = 100;
    let projects = files / per_project;
    for p in 0..projects {
        let (base, kind) = match p % 4 {
            0 => (format!("apps/web{p}"), "node"),
            1 => (format!("services/py{p}"), "python"),
            2 => (format!("services/go{p}"), "go"),
            _ => (format!("packages/lib{p}"), "node-lib"),
        };
        match kind {
            "node" => {
                write(
                    format!("{base}/package.json"),
                    r#"{"name":"web","scripts":{"dev":"vite","build":"vite build","test":"vitest run"},"dependencies":{"react":"18"},"devDependencies":{"vite":"5"}}"#,
                )?;
                write(
                    format!("{base}/.env.example"),
                    "VITE_API_URL=http://localhost:8000\n",
                )?;
            }
            "node-lib" => {
                write(
                    format!("{base}/package.json"),
                    r#"{"name":"lib","main":"index.js","scripts":{"test":"vitest run"}}"#,
                )?;
            }
            "python" => {
                write(
                    format!("{base}/requirements.txt"),
                    "fastapi\nuvicorn\npsycopg2-binary\nredis\n",
                )?;
                write(
                    format!("{base}/app/main.py"),
                    "import os\nfrom fastapi import FastAPI\nDB = os.environ.get('DATABASE_URL', 'postgresql://localhost/db')\napp = FastAPI()\n",
                )?;
            }
            _ => {
                write(format!("{base}/go.mod"), "module example.com/svc\n\ngo 1.22\n")?;
                write(
                    format!("{base}/cmd/server/main.go"),
                    "package main\n\nimport \"net/http\"\n\nfunc main() { http.ListenAndServe(\":8080\", nil) }\n",
                )?;
            }
        }
        let ext = match kind {
            "python" => "py",
            "go" => "go",
            _ => "ts",
        };
        for i in 0..per_project - 3 {
            let dir = match i % 3 {
                0 => "src",
                1 => "src/components",
                _ => "tests",
            };
            write(
                format!("{base}/{dir}/file{i}.{ext}"),
                "// generated source\nexport const x = 1;\n",
            )?;
        }
    }
    Ok(written)
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        let out = f();
        best = best.min(started.elapsed());
        last = Some(out);
    }
    (best, last.unwrap_or_else(f))
}

fn walk(root: &Path, config: &AnalyzerConfig) -> usize {
    let skip = config.skip_dirs.iter().cloned().collect();
    walk_builder(root, config.max_depth, skip)
        .build()
        .filter_map(Result::ok)
        .count()
}

fn row(label: &str, root: &Path) {
    let config = AnalyzerConfig::default();
    // Warm the page cache for both.
    let _ = walk(root, &config);
    // Interleaved, so that both see the same load; the best of each counts.
    let mut walk_time = Duration::MAX;
    let mut analyze_time = Duration::MAX;
    let mut entries = 0;
    let mut plan = None;
    for _ in 0..10 {
        let (t, n) = time(1, || walk(root, &config));
        walk_time = walk_time.min(t);
        entries = n;
        let (t, p) = time(1, || analyze_dir(root, None, &config));
        analyze_time = analyze_time.min(t);
        plan = Some(p);
    }
    let plan = plan.into_iter().flatten().next();
    let components = plan.map_or(0, |p| p.components.len());
    let ratio = analyze_time.as_secs_f64() / walk_time.as_secs_f64().max(1e-9);
    println!(
        "analyze {label}: {:.1} ms vs walk {:.1} ms = {ratio:.2}x  ({entries} entries, {components} components)",
        analyze_time.as_secs_f64() * 1e3,
        walk_time.as_secs_f64() * 1e3,
    );
}

fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no tempdir: {e}");
            return;
        }
    };
    match generate(dir.path(), 50_000) {
        Ok(n) => row(&format!("50k tree ({n} files)"), dir.path()),
        Err(e) => eprintln!("could not generate the tree: {e}"),
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Ok(ws) = std::fs::canonicalize(workspace) {
        row("this workspace", &ws);
    }
}
