//! Go: go.mod (go and toolchain directives), main packages at the root and
//! under cmd/, gin/echo/fiber/chi/net-http servers and their ports.

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::ComponentKind;

use super::{default_name, line_of, rel_to, weight};
use crate::{
    draft::{Draft, cmd, ev},
    index::{RepoIndex, file_name, join, parent_of},
};

static PORT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#""(?:0\.0\.0\.0|localhost|127\.0\.0\.1)?:(\d{2,5})"|(?i:port)\s*:?=\s*"(\d{2,5})""#).ok()
});

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let mut d = Draft::new(&default_name(idx, dir), dir, "go");
    d.c.package_manager = "go".into();
    let gomod = join(dir, "go.mod");
    let text = idx.read(&gomod).unwrap_or_default();
    let mut version = None;
    for (i, line) in text.lines().enumerate().take(5000) {
        let l = line.trim();
        if let Some(m) = l.strip_prefix("module ") {
            d.c.name = m.trim().rsplit('/').next().unwrap_or(m).to_owned();
        } else if let Some(v) = l.strip_prefix("go ") {
            version = Some((i as u32 + 1, format!(">={}", v.trim())));
        } else if let Some(v) = l.strip_prefix("toolchain go") {
            version = Some((i as u32 + 1, v.trim().to_owned()));
        } else {
            let dep = l
                .trim_start_matches("require ")
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if dep.contains('.') && dep.contains('/') {
                d.deps.insert(dep.to_owned());
                // Without major-version suffix too, for the backing-service table.
                d.deps.insert(dep.split("/v").next().unwrap_or(dep).to_owned());
            }
        }
    }
    if let Some((line, v)) = version {
        d.set_runtime(
            ev("runtime", &gomod, line, format!("go {v}"), weight::MANIFEST),
            "go",
            &v,
        );
    } else {
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: "go".into(),
            version_constraint: String::new(),
        });
    }
    for (dep, fw) in [
        ("github.com/gin-gonic/gin", "gin"),
        ("github.com/labstack/echo", "echo"),
        ("github.com/gofiber/fiber", "fiber"),
        ("github.com/go-chi/chi", "chi"),
        ("github.com/gorilla/mux", "gorilla"),
        ("github.com/labstack/echo/v4", "echo"),
        ("github.com/gofiber/fiber/v2", "fiber"),
        ("github.com/go-chi/chi/v5", "chi"),
    ] {
        if d.deps.contains(dep) {
            d.add_framework(fw);
        }
    }
    d.offer(ev("install", &gomod, 0, "go mod download", weight::MANIFEST));
    d.c.install = cmd("go mod download");
    d.c.build = cmd("go build ./...");
    d.c.test = cmd("go test ./...");
    d.offer(ev("test", &gomod, 0, "go test", weight::MANIFEST));

    // Main packages: directories with a .go file declaring `package main`.
    let mut mains: Vec<(String, String, String)> = Vec::new(); // dir, file, text
    let mut seen_dirs = std::collections::BTreeSet::new();
    for f in idx
        .files_under(dir)
        .filter(|f| f.ends_with(".go") && !f.ends_with("_test.go"))
        .take(3000)
    {
        let pd = parent_of(f).to_owned();
        if seen_dirs.contains(&pd) || crate::index::depth_below(dir, f) > 4 {
            continue;
        }
        let rel = rel_to(dir, &pd);
        if rel.split('/').any(|s| {
            matches!(
                s,
                "examples" | "example" | "testdata" | "test" | "tests" | "scripts" | "tools" | "hack"
            )
        }) {
            continue;
        }
        if !(rel.is_empty() || rel == dir || rel.starts_with("cmd") || crate::index::depth_below(dir, f) <= 2)
        {
            continue;
        }
        let Some(text) = idx.read_source(f) else { continue };
        if text.lines().take(50).any(|l| l.trim() == "package main") {
            seen_dirs.insert(pd.clone());
            mains.push((pd, f.clone(), text));
        }
    }
    let module_name = d.c.name.clone();
    let score = |(pd, _, text): &(String, String, String)| -> i32 {
        let rel = rel_to(dir, pd);
        let name = file_name(rel);
        let mut s = 0;
        if pd == dir || rel.is_empty() {
            s += 5;
        }
        if ["server", "api", "web", "app", "http", "serve"]
            .iter()
            .any(|n| name.contains(n))
        {
            s += 4;
        }
        if name == module_name {
            s += 3;
        }
        if text.contains("ListenAndServe")
            || text.contains(".Run(")
            || text.contains(".Listen(")
            || text.contains("Start(")
        {
            s += 6;
        }
        s
    };
    mains.sort_by_key(|m| -score(m));
    if let Some((pd, file, text)) = mains.first() {
        let rel = rel_to(dir, pd);
        let run = if pd == dir || rel.is_empty() {
            "go run .".to_owned()
        } else {
            format!("go run ./{rel}")
        };
        let server = [
            "ListenAndServe",
            "gin.Default",
            "gin.New",
            "echo.New",
            "fiber.New",
            "http.Server",
        ]
        .iter()
        .any(|n| text.contains(n));
        let mut port = 0;
        let mut binding = String::new();
        // The port may be set in another file of the package.
        let mut texts = vec![(file.clone(), text.clone())];
        for f in idx
            .child_files(pd)
            .filter(|f| f.ends_with(".go") && *f != file)
            .take(10)
        {
            if let Some(t) = idx.read_source(f) {
                texts.push((f.clone(), t));
            }
        }
        for (f, t) in &texts {
            if let Some(m) = PORT
                .as_ref()
                .and_then(|re| re.captures(t))
                .and_then(|c| c.get(2).or_else(|| c.get(1)))
            {
                port = m.as_str().parse().unwrap_or(0);
                d.note(ev(
                    "port",
                    f,
                    line_of(t, m.start()),
                    format!("listens on :{port}"),
                    weight::FRAMEWORK,
                ));
                break;
            }
        }
        if texts
            .iter()
            .any(|(_, t)| t.contains("Getenv(\"PORT\")") || t.contains("LookupEnv(\"PORT\")"))
        {
            binding = "env:PORT".into();
            if port == 0 {
                port = 8080;
            }
        }
        let server = server
            || port != 0
            || texts.iter().any(|(_, t)| {
                [
                    "ListenAndServe",
                    ".Run(\"",
                    "gin.Default",
                    "gin.New",
                    "echo.New",
                    "fiber.New",
                    "http.Server",
                ]
                .iter()
                .any(|n| t.contains(n))
            });
        if server && port == 0 && texts.iter().any(|(_, t)| t.contains(".Run()")) {
            // gin's Run() with no address listens on $PORT or :8080.
            port = 8080;
            binding = "env:PORT".into();
        }
        let file = &texts
            .iter()
            .find(|(_, t)| t.contains("func main("))
            .map_or_else(|| file.clone(), |(f, _)| f.clone());
        if mains.len() > 1 {
            d.note(ev(
                "start",
                &gomod,
                0,
                format!(
                    "{} main packages; chose {}",
                    mains.len(),
                    if rel.is_empty() { "." } else { rel }
                ),
                0.0,
            ));
        }
        let w = if server {
            weight::FRAMEWORK
        } else {
            weight::MANIFEST * 0.9
        };
        d.set_start(
            ev(
                "start",
                file,
                0,
                format!("package main in {}", if rel.is_empty() { "." } else { rel }),
                w,
            ),
            cmd(run),
            port,
            &binding,
        );
        d.set_kind(if server {
            ComponentKind::Web
        } else {
            ComponentKind::Cli
        });
    } else if let Some((rel, file)) = example_main(idx, dir) {
        // A framework whose runnable program is an example (pocketbase's
        // examples/base); the README may name the subcommand to run.
        let args = idx
            .read(&join(dir, "README.md"))
            .and_then(|t| {
                GO_RUN_ARGS
                    .as_ref()
                    .and_then(|re| re.captures(&t))
                    .and_then(|c| c.get(1))
                    .map(|m| format!(" {}", m.as_str()))
            })
            .unwrap_or_default();
        d.set_start(
            ev(
                "start",
                &file,
                0,
                format!("main package in {rel}"),
                weight::FRAMEWORK_GUESS * 0.8,
            ),
            cmd(format!("go run ./{rel}{args}")),
            0,
            "",
        );
        d.set_kind(ComponentKind::Cli);
    } else {
        d.set_kind(ComponentKind::Library);
    }
    vec![d]
}

static GO_RUN_ARGS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"go run (?:main\.go|\.)\s+([a-z][\w-]*)").ok());

/// `examples/NAME/main.go` declaring `package main`, simplest name first.
fn example_main(idx: &RepoIndex, dir: &str) -> Option<(String, String)> {
    let mut found: Vec<(u8, String, String)> = Vec::new();
    for sub in ["examples", "example", "_examples"] {
        let ex = join(dir, sub);
        for d in idx.child_dirs(&ex).take(100) {
            let main = join(d, "main.go");
            let Some(text) = idx.read_source(&main) else {
                continue;
            };
            if !text.contains("package main") {
                continue;
            }
            let name = file_name(d);
            let rank = ["base", "basic", "hello", "simple", "minimal", "server"]
                .iter()
                .position(|n| name.contains(n))
                .map_or(9, |p| p as u8);
            found.push((rank, rel_to(dir, d).to_owned(), main));
        }
    }
    found.sort();
    found.into_iter().next().map(|(_, rel, file)| (rel, file))
}
