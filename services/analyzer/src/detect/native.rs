//! C and C++: Makefile targets and CMake executables.

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::ComponentKind;

use super::{
    pass::{self, Pass, Stage},
    util::{default_name, line_of},
    weight,
};
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
/// The build system a component uses, with its file and text.
enum BuildSystem {
    CMake {
        file: String,
        text: String,
    },
    Make {
        file: String,
        text: String,
        targets: Vec<(String, u32)>,
    },
}

/// What the C/C++ passes read before deciding.
#[derive(Default)]
struct Facts {
    cpp: bool,
    system: Option<BuildSystem>,
    /// An autotools `configure` script makes the Makefile.
    configure: bool,
}

type Scan<'a> = pass::Scan<'a, Facts>;

/// The C/C++ detector, in order.
const PASSES: &[Pass<Facts>] = &[
    Pass::new(Stage::Manifest, "sources", sources),
    Pass::new(Stage::Manifest, "CMake or Make", build_system),
    Pass::new(Stage::Versions, "toolchain", toolchain),
    Pass::new(Stage::Scripts, "build", build),
    Pass::new(Stage::Tests, "test target", test_target),
    Pass::new(Stage::EntryPoint, "program", program),
];

/// `stage/name` of each pass, in order.
pub fn passes() -> Vec<String> {
    pass::describe(PASSES)
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let d = Draft::new(&default_name(idx, dir), dir, "c");
    vec![pass::run(PASSES, idx, dir, d, Facts::default())]
}

/// C, C++, or a Makefile with no C sources (a task runner).
fn sources(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    s.facts.cpp = idx
        .files_under(dir)
        .take(5000)
        .any(|f| [".cpp", ".cc", ".cxx", ".hpp"].iter().any(|e| f.ends_with(e)));
    let has_c = idx.files_under(dir).take(5000).any(|f| f.ends_with(".c"));
    if s.facts.cpp {
        s.d.c.language = "cpp".into();
    } else if !has_c {
        // A Makefile with no C sources: a task runner; keep the language generic.
        s.d.c.language = "make".into();
    }
}

/// An autotools `configure` (with its Makefile.in) wins, as it needs only
/// make; then CMakeLists.txt; then a Makefile. Nothing readable stops
/// detection.
fn build_system(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let configure = join(dir, "configure");
    let makefile_in = join(dir, "Makefile.in");
    if idx.has(&configure)
        && let Some(text) = idx.read(&makefile_in)
    {
        s.d.c.package_manager = "make".into();
        s.facts.configure = true;
        let targets = targets(&text);
        s.facts.system = Some(BuildSystem::Make {
            file: makefile_in,
            text,
            targets,
        });
        return;
    }
    let cmake = join(dir, "CMakeLists.txt");
    if let Some(text) = idx.read(&cmake) {
        s.d.c.package_manager = "cmake".into();
        s.facts.system = Some(BuildSystem::CMake { file: cmake, text });
        return;
    }
    let makefile = ["Makefile", "makefile", "GNUmakefile"]
        .iter()
        .map(|f| join(dir, f))
        .find(|f| idx.has(f));
    if let Some(mk) = makefile
        && let Some(text) = idx.read(&mk)
    {
        s.d.c.package_manager = "make".into();
        let targets = targets(&text);
        s.facts.system = Some(BuildSystem::Make {
            file: mk,
            text,
            targets,
        });
    } else if dir.is_empty() && tests_makefile(idx).is_some() {
        // Only the tests have a Makefile (`test_target`).
        s.d.c.package_manager = "make".into();
    } else {
        s.stop = true;
    }
}

/// A Makefile's targets with their lines.
fn targets(text: &str) -> Vec<(String, u32)> {
    TARGET
        .as_ref()
        .map(|re| {
            re.captures_iter(text)
                .filter_map(|c| {
                    c.get(1)
                        .map(|m| (m.as_str().to_owned(), line_of(text, m.start())))
                })
                .take(500)
                .collect()
        })
        .unwrap_or_default()
}

/// The line of Makefile target `t`, if there is one.
fn target(targets: &[(String, u32)], t: &str) -> Option<u32> {
    targets.iter().find(|(n, _)| n == t).map(|(_, l)| *l)
}

/// The compiler, with CMake's minimum version.
fn toolchain(s: &mut Scan<'_>) {
    let version = match &s.facts.system {
        Some(BuildSystem::CMake { text, .. }) => CMAKE_VERSION
            .as_ref()
            .and_then(|re| re.captures(text))
            .and_then(|c| c.get(1))
            .map(|m| format!("cmake>={}", m.as_str()))
            .unwrap_or_default(),
        _ => String::new(),
    };
    s.d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
        name: if s.facts.cpp { "cpp" } else { "c" }.into(),
        version_constraint: version,
        preferred_version: String::new(),
    });
}

/// cmake / make, and a Makefile's deps target as the install step.
fn build(s: &mut Scan<'_>) {
    let d = &mut s.d;
    match &s.facts.system {
        Some(BuildSystem::CMake { file, .. }) => {
            d.offer(ev("build", file, 0, "cmake", weight::MANIFEST));
            d.c.build = cmd("cmake -S . -B build && cmake --build build -j");
        }
        Some(BuildSystem::Make { file, targets, .. }) => {
            let line = if s.facts.configure {
                "./configure && make"
            } else {
                "make"
            };
            d.offer(ev("build", file, 0, line, weight::MANIFEST));
            d.c.build = cmd(line);
            let install_deps = target(targets, "install-deps");
            if let Some(l) = install_deps.or_else(|| target(targets, "deps")) {
                d.offer(ev("install", file, l, "make deps target", weight::MANIFEST));
                d.c.install = cmd(if install_deps.is_some() {
                    "make install-deps"
                } else {
                    "make deps"
                });
            }
        }
        None => {}
    }
}

/// The Makefile of a C/C++ repository's test directory (`tests/`, `test/`)
/// when the repository's root has C or C++ sources or headers (`src/`,
/// `include/`) and no build file of its own: the directory to `make -C`.
pub fn tests_makefile(idx: &RepoIndex) -> Option<&'static str> {
    let root_build = [
        "Makefile",
        "makefile",
        "GNUmakefile",
        "CMakeLists.txt",
        "configure",
    ]
    .iter()
    .any(|f| idx.has(f));
    if root_build {
        return None;
    }
    let dir = ["tests", "test"].into_iter().find(|d| {
        ["Makefile", "makefile", "GNUmakefile"]
            .iter()
            .any(|m| idx.has(&join(d, m)))
    })?;
    let c_sources = idx
        .files()
        .take(5000)
        .any(|f| [".c", ".h", ".cpp", ".hpp", ".cc"].iter().any(|e| f.ends_with(e)));
    c_sources.then_some(dir)
}

/// ctest, or a Makefile's test / check target; for a library whose only
/// Makefile is its tests', `make -C tests`.
fn test_target(s: &mut Scan<'_>) {
    let d = &mut s.d;
    if s.facts.system.is_none()
        && s.dir.is_empty()
        && let Some(tests) = tests_makefile(s.idx)
    {
        let t = format!("make -C {tests}");
        d.offer(ev(
            "test",
            &join(tests, "Makefile"),
            0,
            t.clone(),
            weight::MANIFEST,
        ));
        d.c.test = cmd(t);
        d.set_kind(ComponentKind::Library);
        return;
    }
    match &s.facts.system {
        Some(BuildSystem::CMake { .. }) => {
            d.c.test = cmd("ctest --test-dir build --output-on-failure");
        }
        Some(BuildSystem::Make { file, targets, .. }) => {
            let test = target(targets, "test");
            if let Some(l) = test.or_else(|| target(targets, "check")) {
                let t = if test.is_some() { "make test" } else { "make check" };
                d.offer(ev("test", file, l, t, weight::MANIFEST));
                d.c.test = cmd(t);
            }
        }
        None => {}
    }
}

/// CMake's first executable; a Makefile's default goal program, then its
/// run / serve / start / dev target.
fn program(s: &mut Scan<'_>) {
    let d = &mut s.d;
    match &s.facts.system {
        Some(BuildSystem::CMake { file, text }) => cmake_program(d, file, text),
        Some(BuildSystem::Make { file, text, targets }) => {
            default_goal_program(d, file, text, targets);
            for t in ["run", "serve", "start", "dev"] {
                if let Some(l) = target(targets, t) {
                    d.set_start(
                        ev("start", file, l, format!("make {t}"), weight::MANIFEST * 0.85),
                        cmd(format!("make {t}")),
                        0,
                        "",
                    );
                    break;
                }
            }
        }
        None => {}
    }
}

fn cmake_program(d: &mut Draft, cmake: &str, text: &str) {
    if let Some(m) = EXECUTABLE
        .as_ref()
        .and_then(|re| re.captures(text))
        .and_then(|c| c.get(1))
    {
        let exe = m.as_str();
        if d.set_start(
            ev(
                "start",
                cmake,
                line_of(text, m.start()),
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
}

/// The default goal's program, when the Makefile builds one binary.
fn default_goal_program(d: &mut Draft, mk: &str, text: &str, targets: &[(String, u32)]) {
    let Some((goal, line)) = targets.first() else {
        return;
    };
    let program = if goal == "all" {
        text.lines()
            .find_map(|l| l.strip_prefix("all:"))
            .and_then(|deps| deps.split_whitespace().next())
            .map(str::to_owned)
    } else {
        Some(goal.clone())
    };
    if let Some(p) = program
        && target(targets, &p).is_some()
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
                mk,
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
