//! Go: go.mod (go and toolchain directives), main packages at the root and
//! under cmd/, gin/echo/fiber/chi/net-http servers and their ports.

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::ComponentKind;

use super::{
    pass::{self, Pass, Stage},
    util::{default_name, line_of, rel_to},
    weight,
};
use crate::{
    draft::{Draft, cmd, ev},
    index::{RepoIndex, file_name, join, parent_of},
};

static PORT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#""(?:0\.0\.0\.0|localhost|127\.0\.0\.1)?:(\d{2,5})"|(?i:port)\s*:?=\s*"(\d{2,5})""#).ok()
});
/// What the Go passes read before deciding.
#[derive(Default)]
struct Facts {
    gomod: String,
    /// (line, constraint) from the `go` or `toolchain` directive.
    version: Option<(u32, String)>,
}

type Scan<'a> = pass::Scan<'a, Facts>;

/// The Go detector, in order.
const PASSES: &[Pass<Facts>] = &[
    Pass::new(Stage::Manifest, "go.mod", manifest),
    Pass::new(Stage::Versions, "go directive", go_version),
    Pass::new(Stage::Scripts, "go commands", go_commands),
    Pass::new(Stage::Tests, "go test", go_test),
    Pass::new(Stage::EntryPoint, "main package", entry_point),
];

/// `stage/name` of each pass, in order.
pub fn passes() -> Vec<String> {
    pass::describe(PASSES)
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let d = Draft::new(&default_name(idx, dir), dir, "go");
    vec![pass::run(PASSES, idx, dir, d, Facts::default())]
}

/// Module name, go/toolchain directives, requirements and frameworks.
fn manifest(s: &mut Scan<'_>) {
    s.d.c.package_manager = "go".into();
    s.facts.gomod = s.path("go.mod");
    let text = s.idx.read(&s.facts.gomod).unwrap_or_default();
    for (i, line) in text.lines().enumerate().take(5000) {
        let l = line.trim();
        if let Some(m) = l.strip_prefix("module ") {
            s.d.c.name = m.trim().rsplit('/').next().unwrap_or(m).to_owned();
        } else if let Some(v) = l.strip_prefix("go ") {
            s.facts.version = Some((i as u32 + 1, format!(">={}", v.trim())));
        } else if let Some(v) = l.strip_prefix("toolchain go") {
            s.facts.version = Some((i as u32 + 1, v.trim().to_owned()));
        } else {
            let dep = l
                .trim_start_matches("require ")
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if dep.contains('.') && dep.contains('/') {
                s.d.deps.insert(dep.to_owned());
                // Without major-version suffix too, for the backing-service table.
                s.d.deps.insert(dep.split("/v").next().unwrap_or(dep).to_owned());
            }
        }
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
        if s.d.deps.contains(dep) {
            s.d.add_framework(fw);
        }
    }
}

fn go_version(s: &mut Scan<'_>) {
    if let Some((line, v)) = &s.facts.version {
        s.d.set_runtime(
            ev(
                "runtime",
                &s.facts.gomod,
                *line,
                format!("go {v}"),
                weight::MANIFEST,
            ),
            "go",
            v,
        );
    } else {
        s.d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: "go".into(),
            version_constraint: String::new(),
            preferred_version: String::new(),
        });
    }
}

fn go_commands(s: &mut Scan<'_>) {
    s.d.offer(ev(
        "install",
        &s.facts.gomod,
        0,
        "go mod download",
        weight::MANIFEST,
    ));
    s.d.c.install = cmd("go mod download");
    s.d.c.build = cmd("go build ./...");
}

fn go_test(s: &mut Scan<'_>) {
    s.d.c.test = cmd("go test ./...");
    s.d.offer(ev("test", &s.facts.gomod, 0, "go test", weight::MANIFEST));
}

/// A `package main` directory: (dir, file, text).
type Main = (String, String, String);

/// The best main package, else an example's main, else a library.
fn entry_point(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let mut mains = main_packages(idx, dir);
    let module_name = s.d.c.name.clone();
    mains.sort_by_key(|m| -main_score(dir, &module_name, m));
    if let Some(main) = mains.first() {
        main_start(s, main, mains.len());
    } else if let Some((rel, file)) = example_main(idx, dir) {
        example_start(s, &rel, &file);
    } else {
        s.d.set_kind(ComponentKind::Library);
    }
}

/// Main packages: directories with a .go file declaring `package main`, at
/// the root, under cmd/ or two levels down, outside examples and tools.
fn main_packages(idx: &RepoIndex, dir: &str) -> Vec<Main> {
    let mut mains: Vec<Main> = Vec::new();
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
    mains
}

/// Root first, then server-like names, the module's own name, and code that serves.
fn main_score(dir: &str, module_name: &str, (pd, _, text): &Main) -> i32 {
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
}

fn main_start(s: &mut Scan<'_>, (pd, file, text): &Main, count: usize) {
    let (idx, dir) = (s.idx, s.dir);
    let rel = rel_to(dir, pd);
    let run = if pd == dir || rel.is_empty() {
        "go run .".to_owned()
    } else {
        format!("go run ./{rel}")
    };
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
    let (server, port, binding) = package_port(&mut s.d, text, &texts);
    let file = &texts
        .iter()
        .find(|(_, t)| t.contains("func main("))
        .map_or_else(|| file.clone(), |(f, _)| f.clone());
    let shown = if rel.is_empty() { "." } else { rel };
    if count > 1 {
        s.d.note(ev(
            "start",
            &s.facts.gomod,
            0,
            format!("{count} main packages; chose {shown}"),
            0.0,
        ));
    }
    let w = if server {
        weight::FRAMEWORK
    } else {
        weight::MANIFEST * 0.9
    };
    s.d.set_start(
        ev("start", file, 0, format!("package main in {shown}"), w),
        cmd(run),
        port,
        &binding,
    );
    s.d.set_kind(if server {
        ComponentKind::Web
    } else {
        ComponentKind::Cli
    });
}

/// Whether the package serves, and its port and binding, from the main
/// file's `text` and all the package's `texts`.
fn package_port(d: &mut Draft, text: &str, texts: &[(String, String)]) -> (bool, u32, String) {
    const SERVES: [&str; 6] = [
        "ListenAndServe",
        "gin.Default",
        "gin.New",
        "echo.New",
        "fiber.New",
        "http.Server",
    ];
    let server = SERVES.iter().any(|n| text.contains(n));
    let mut port = 0;
    let mut binding = String::new();
    for (f, t) in texts {
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
        || texts
            .iter()
            .any(|(_, t)| t.contains(".Run(\"") || SERVES.iter().any(|n| t.contains(n)));
    if server && port == 0 && texts.iter().any(|(_, t)| t.contains(".Run()")) {
        // gin's Run() with no address listens on $PORT or :8080.
        port = 8080;
        binding = "env:PORT".into();
    }
    (server, port, binding)
}

/// A framework whose runnable program is an example (pocketbase's
/// examples/base); the README may name the subcommand to run.
fn example_start(s: &mut Scan<'_>, rel: &str, file: &str) {
    let args = s
        .idx
        .read(&s.path("README.md"))
        .and_then(|t| {
            GO_RUN_ARGS
                .as_ref()
                .and_then(|re| re.captures(&t))
                .and_then(|c| c.get(1))
                .map(|m| format!(" {}", m.as_str()))
        })
        .unwrap_or_default();
    s.d.set_start(
        ev(
            "start",
            file,
            0,
            format!("main package in {rel}"),
            weight::FRAMEWORK_GUESS * 0.8,
        ),
        cmd(format!("go run ./{rel}{args}")),
        0,
        "",
    );
    s.d.set_kind(ComponentKind::Cli);
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
