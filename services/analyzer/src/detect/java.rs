//! Java: Maven (pom.xml, mvnw) and Gradle (build.gradle(.kts), gradlew),
//! Spring Boot (bootRun / spring-boot:run, server.port, ${ENV:default}).

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::{ComponentKind, EnvVar};

use super::{
    pass::{self, Pass, Stage},
    util::{default_name, find_line, line_of},
    weight,
};
use crate::{
    draft::{Draft, cmd, ev, is_secret_name},
    index::{RepoIndex, join},
};

static TAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"<(java\.version|maven\.compiler\.release|maven\.compiler\.source|maven\.compiler\.target|release)>\s*([\d.]+)\s*<").ok()
});
static GRADLE_JAVA: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:JavaLanguageVersion\.of\(\s*(\d+)\s*\)|JavaVersion\.VERSION_(\d+(?:_\d+)?)|sourceCompatibility\s*=\s*['\x22]?(\d+(?:\.\d+)?))").ok()
});
static ARTIFACT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"<artifactId>\s*([\w.-]+)\s*</artifactId>").ok());
/// Spring property references with an env variable and an optional default: `${PORT:8080}`.
static PROPERTY_REF: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\$\{([A-Z][A-Z0-9_]+)(?::([^}]*))?\}").ok());
/// What the Java passes read before deciding.
#[derive(Default)]
struct Facts {
    /// The root build file (pom.xml, else build.gradle(.kts)) and its text.
    file: String,
    text: String,
    maven: bool,
    /// `./mvnw`, `mvn`, `./gradlew` or `gradle`.
    tool: &'static str,
    spring: bool,
    web: bool,
}

type Scan<'a> = pass::Scan<'a, Facts>;

/// The Java detector, in order.
const PASSES: &[Pass<Facts>] = &[
    Pass::new(Stage::Manifest, "build file", build_file),
    Pass::new(Stage::Manifest, "spring and drivers", spring_and_drivers),
    Pass::new(Stage::Scripts, "maven or gradle", build_commands),
    Pass::new(Stage::Versions, "java version", java_version),
    Pass::new(Stage::EntryPoint, "start", entry_point),
    Pass::new(Stage::Tests, "test task", test_task),
    Pass::new(Stage::Services, "application properties", application_properties),
];

/// `stage/name` of each pass, in order.
pub fn passes() -> Vec<String> {
    pass::describe(PASSES)
}

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let d = Draft::new(&default_name(idx, dir), dir, "java");
    vec![pass::run(PASSES, idx, dir, d, Facts::default())]
}

/// pom.xml (with its artifactId) or build.gradle(.kts); Kotlin sources.
fn build_file(s: &mut Scan<'_>) {
    let (idx, dir) = (s.idx, s.dir);
    let pom = s.path("pom.xml");
    let gradle = ["build.gradle.kts", "build.gradle"]
        .iter()
        .map(|f| join(dir, f))
        .find(|f| idx.has(f));
    let kotlin = idx.files_under(dir).take(2000).any(|f| f.ends_with(".kt"));
    if kotlin {
        s.d.c.language = "kotlin".into();
    }
    let f = &mut s.facts;
    (f.text, f.file, f.maven) = if let Some(t) = idx.read(&pom) {
        (t, pom, true)
    } else if let Some(g) = gradle {
        (idx.read(&g).unwrap_or_default(), g, false)
    } else {
        s.stop = true;
        return;
    };
    f.tool = match (
        f.maven,
        idx.has(&join(dir, if f.maven { "mvnw" } else { "gradlew" })),
    ) {
        (true, true) => "./mvnw",
        (true, false) => "mvn",
        (false, true) => "./gradlew",
        (false, false) => "gradle",
    };
    if f.maven
        && let Some(name) = ARTIFACT.as_ref().and_then(|re| {
            // The project's own artifactId follows its parent block.
            let body = f.text.find("</parent>").map_or(f.text.as_str(), |p| &f.text[p..]);
            re.captures(body)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_owned())
        })
    {
        s.d.c.name = name;
    }
}

/// Spring Boot, web starters, data starters and database drivers across
/// every build file (Gradle settings and other modules may hold them).
fn spring_and_drivers(s: &mut Scan<'_>) {
    let (idx, f, d) = (s.idx, &mut s.facts, &mut s.d);
    let mut all_text = f.text.clone();
    for other in idx
        .files_under(s.dir)
        .filter(|f| f.ends_with("pom.xml") || f.ends_with("build.gradle") || f.ends_with("build.gradle.kts"))
        .take(20)
    {
        if *other != f.file
            && let Some(t) = idx.read(other)
        {
            all_text.push_str(&t);
        }
    }
    f.spring = all_text.contains("spring-boot");
    f.web = all_text.contains("spring-boot-starter-web") || all_text.contains("spring-boot-starter-webflux");
    if f.spring {
        d.add_framework("spring-boot");
    }
    for dep in [
        "spring-boot-starter-data-redis",
        "spring-boot-starter-data-mongodb",
        "spring-boot-starter-amqp",
    ] {
        if all_text.contains(dep) {
            d.deps.insert(dep.to_owned());
        }
    }
    // An embedded database is the default; compose databases are optional.
    let embedded_db = all_text.contains("com.h2database");
    if embedded_db {
        d.deps.insert("com.h2database:h2".into());
        d.note(ev(
            "backing_service",
            &f.file,
            find_line(&all_text, "com.h2database"),
            "H2 embedded database is the default; PostgreSQL/MySQL drivers are optional profiles",
            weight::MANIFEST,
        ));
    }
    if all_text.contains("org.postgresql") && !embedded_db {
        d.deps.insert("org.postgresql:postgresql".into());
    }
    if all_text.contains("mysql-connector") && !embedded_db {
        d.deps.insert("com.mysql:mysql-connector-j".into());
    }
}

fn build_commands(s: &mut Scan<'_>) {
    let (f, d) = (&s.facts, &mut s.d);
    let tool = f.tool;
    if f.maven {
        d.c.package_manager = "maven".into();
        let detail = format!("{tool} dependency:go-offline");
        d.offer(ev("install", &f.file, 0, detail, weight::MANIFEST));
        d.c.install = cmd(format!("{tool} -B -q dependency:go-offline"));
        d.c.build = cmd(format!("{tool} -B -DskipTests package"));
    } else {
        d.c.package_manager = "gradle".into();
        let detail = format!("{tool} dependencies");
        d.offer(ev("install", &f.file, 0, detail, weight::MANIFEST));
        d.c.install = cmd(format!("{tool} --no-daemon dependencies"));
        d.c.build = cmd(format!("{tool} --no-daemon build -x test"));
    }
}

/// `<java.version>` and friends, or Gradle's toolchain / compatibility.
fn java_version(s: &mut Scan<'_>) {
    let (f, d) = (&s.facts, &mut s.d);
    let text = &f.text;
    let found = if f.maven {
        TAG.as_ref()
            .and_then(|re| re.captures(text))
            .and_then(|c| c.get(2))
            .map(|v| (v.start(), v.as_str().to_owned()))
    } else {
        GRADLE_JAVA
            .as_ref()
            .and_then(|re| re.captures(text))
            .and_then(|c| c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)))
            .map(|v| {
                let version = v.as_str().replace('_', ".").trim_start_matches("1.").to_owned();
                (v.start(), version)
            })
    };
    if let Some((pos, version)) = found {
        d.set_runtime(
            ev(
                "runtime",
                &f.file,
                line_of(text, pos),
                format!("java {version}"),
                weight::MANIFEST,
            ),
            "java",
            &version,
        );
    }
    if d.c.runtime.is_none() {
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: "java".into(),
            version_constraint: String::new(),
            preferred_version: String::new(),
        });
    }
}

/// Spring Boot's run task, else exec-maven-plugin / the application plugin.
fn entry_point(s: &mut Scan<'_>) {
    let (f, d) = (&s.facts, &mut s.d);
    if f.maven {
        maven_start(d, f);
    } else {
        gradle_start(d, f);
    }
    if d.c.start.is_some() && f.web {
        d.set_kind(ComponentKind::Web);
        d.c.health_paths = vec!["/actuator/health".into(), "/".into()];
    }
}

fn maven_start(d: &mut Draft, f: &Facts) {
    let (mvn, text, pom) = (f.tool, &f.text, &f.file);
    let (line_of_key, detail, goal, port, binding, w) = if f.spring && f.web {
        let line = find_line(text, "spring-boot-starter-web");
        (
            line,
            "Spring Boot web starter",
            "spring-boot:run",
            8080,
            "env:SERVER_PORT",
            weight::FRAMEWORK,
        )
    } else if f.spring {
        let line = find_line(text, "spring-boot");
        (
            line,
            "Spring Boot application",
            "spring-boot:run",
            0,
            "",
            weight::FRAMEWORK_GUESS,
        )
    } else if text.contains("exec-maven-plugin") {
        let line = find_line(text, "exec-maven-plugin");
        (
            line,
            "exec-maven-plugin",
            "-q exec:java",
            0,
            "",
            weight::MANIFEST * 0.8,
        )
    } else {
        return;
    };
    d.set_start(
        ev("start", pom, line_of_key, detail, w),
        cmd(format!("{mvn} -B {goal}")),
        port,
        binding,
    );
}

fn gradle_start(d: &mut Draft, f: &Facts) {
    let (gw, text, file) = (f.tool, &f.text, &f.file);
    if f.spring {
        let w = if f.web {
            weight::FRAMEWORK
        } else {
            weight::FRAMEWORK_GUESS
        };
        let (port, binding) = if f.web { (8080, "env:SERVER_PORT") } else { (0, "") };
        d.set_start(
            ev("start", file, find_line(text, "spring"), "Spring Boot plugin", w),
            cmd(format!("{gw} --no-daemon bootRun")),
            port,
            binding,
        );
    } else if text.contains("application") && text.contains("mainClass") {
        d.set_start(
            ev(
                "start",
                file,
                find_line(text, "mainClass"),
                "application plugin",
                weight::MANIFEST * 0.8,
            ),
            cmd(format!("{gw} --no-daemon run")),
            0,
            "",
        );
    }
}

fn test_task(s: &mut Scan<'_>) {
    let tool = s.facts.tool;
    s.d.c.test = cmd(if s.facts.maven {
        format!("{tool} -B test")
    } else {
        format!("{tool} --no-daemon test")
    });
}

/// application.properties / .yml: server.port and ${ENV:default} substitutions.
fn application_properties(s: &mut Scan<'_>) {
    for f in [
        "src/main/resources/application.properties",
        "src/main/resources/application.yml",
        "src/main/resources/application.yaml",
    ] {
        let path = s.path(f);
        let Some(t) = s.idx.read(&path) else { continue };
        for (i, line) in t.lines().enumerate().take(2000) {
            property_line(&mut s.d, &path, i as u32 + 1, line.trim());
        }
        if t.contains("postgresql") {
            s.d.deps.insert("org.postgresql:postgresql".into());
        }
    }
}

fn property_line(d: &mut Draft, path: &str, line: u32, l: &str) {
    if let Some(v) = l
        .strip_prefix("server.port=")
        .or_else(|| l.strip_prefix("server.port ="))
    {
        let digits: String = v
            .trim()
            .trim_start_matches("${PORT:")
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(p) = digits.parse::<u32>() {
            d.set_port(ev("port", path, line, l, weight::PROCFILE), p);
        }
    }
    let Some(re) = PROPERTY_REF.as_ref() else { return };
    for c in re.captures_iter(l) {
        if let Some(name) = c.get(1) {
            let default = c.get(2).map(|m| m.as_str().to_owned()).unwrap_or_default();
            d.add_env(EnvVar {
                name: name.as_str().to_owned(),
                required: c.get(2).is_none(),
                secret: is_secret_name(name.as_str()),
                default_value: default,
                source: format!("{path}:{line}"),
            });
        }
    }
}
