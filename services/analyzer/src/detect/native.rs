//! C and C++: Makefile targets and CMake executables.

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::ComponentKind;

use super::{default_name, line_of, weight};
use crate::{
    draft::{Draft, cmd, ev},
    index::{RepoIndex, join},
};

static TARGET: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^([A-Za-z][\w.-]*)\s*:(?:[^=]|$)").ok());
static EXECUTABLE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"add_executable\s*\(\s*([\w.-]+)").ok());
static CMAKE_VERSION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"cmake_minimum_required\s*\(\s*VERSION\s+([\d.]+)").ok());

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let mut d = Draft::new(&default_name(idx, dir), dir, "c");
    let cpp = idx
        .files_under(dir)
        .take(5000)
        .any(|f| [".cpp", ".cc", ".cxx", ".hpp"].iter().any(|e| f.ends_with(e)));
    let has_c = idx.files_under(dir).take(5000).any(|f| f.ends_with(".c"));
    if cpp {
        d.c.language = "cpp".into();
    } else if !has_c {
        // A Makefile with no C sources: a task runner; keep the language generic.
        d.c.language = "make".into();
    }
    let rt_name = if cpp { "cpp" } else { "c" };
    let cmake = join(dir, "CMakeLists.txt");
    if let Some(text) = idx.read(&cmake) {
        d.c.package_manager = "cmake".into();
        d.offer(ev("build", &cmake, 0, "cmake", weight::MANIFEST));
        d.c.build = cmd("cmake -S . -B build && cmake --build build -j");
        d.c.test = cmd("ctest --test-dir build --output-on-failure");
        let version = CMAKE_VERSION
            .as_ref()
            .and_then(|re| re.captures(&text))
            .and_then(|c| c.get(1))
            .map(|m| format!("cmake>={}", m.as_str()))
            .unwrap_or_default();
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: rt_name.into(),
            version_constraint: version,
        });
        if let Some(m) = EXECUTABLE
            .as_ref()
            .and_then(|re| re.captures(&text))
            .and_then(|c| c.get(1))
        {
            let exe = m.as_str();
            if d.set_start(
                ev(
                    "start",
                    &cmake,
                    line_of(&text, m.start()),
                    format!("add_executable({exe})"),
                    weight::MANIFEST,
                ),
                cmd(format!("./build/{exe}")),
                0,
                "",
            ) {
                d.set_kind(ComponentKind::Cli);
            }
        }
        return vec![d];
    }
    let makefile = ["Makefile", "makefile", "GNUmakefile"]
        .iter()
        .map(|f| join(dir, f))
        .find(|f| idx.has(f));
    if let Some(mk) = makefile
        && let Some(text) = idx.read(&mk)
    {
        d.c.package_manager = "make".into();
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: rt_name.into(),
            version_constraint: String::new(),
        });
        let targets: Vec<(String, u32)> = TARGET
            .as_ref()
            .map(|re| {
                re.captures_iter(&text)
                    .filter_map(|c| {
                        c.get(1)
                            .map(|m| (m.as_str().to_owned(), line_of(&text, m.start())))
                    })
                    .take(500)
                    .collect()
            })
            .unwrap_or_default();
        let has = |t: &str| targets.iter().find(|(n, _)| n == t).map(|(_, l)| *l);
        d.offer(ev("build", &mk, 0, "make", weight::MANIFEST));
        d.c.build = cmd("make");
        if let Some(l) = has("install-deps").or_else(|| has("deps")) {
            d.offer(ev("install", &mk, l, "make deps target", weight::MANIFEST));
            d.c.install = cmd(if has("install-deps").is_some() {
                "make install-deps"
            } else {
                "make deps"
            });
        }
        if let Some(l) = has("test").or_else(|| has("check")) {
            let t = if has("test").is_some() {
                "make test"
            } else {
                "make check"
            };
            d.offer(ev("test", &mk, l, t, weight::MANIFEST));
            d.c.test = cmd(t);
        }
        // The default goal's program, when the Makefile builds one binary.
        if let Some((goal, line)) = targets.first() {
            let program = if goal == "all" {
                text.lines()
                    .find_map(|l| l.strip_prefix("all:"))
                    .and_then(|deps| deps.split_whitespace().next())
                    .map(str::to_owned)
            } else {
                Some(goal.clone())
            };
            if let Some(p) = program
                && has(&p).is_some()
                && !p.contains('.')
                && !matches!(
                    p.as_str(),
                    "build" | "clean" | "install" | "test" | "check" | "deps" | "lint" | "fmt" | "help"
                )
                && text.contains(&format!("-o {p}"))
            {
                d.set_start(
                    ev(
                        "start",
                        &mk,
                        *line,
                        format!("default goal builds ./{p}"),
                        weight::CONVENTION,
                    ),
                    cmd(format!("./{p}")),
                    0,
                    "",
                );
                d.set_kind(ComponentKind::Cli);
            }
        }
        for t in ["run", "serve", "start", "dev"] {
            if let Some(l) = has(t) {
                d.set_start(
                    ev("start", &mk, l, format!("make {t}"), weight::MANIFEST * 0.85),
                    cmd(format!("make {t}")),
                    0,
                    "",
                );
                break;
            }
        }
    }
    vec![d]
}
