//! Java: Maven (pom.xml, mvnw) and Gradle (build.gradle(.kts), gradlew),
//! Spring Boot (bootRun / spring-boot:run, server.port, ${ENV:default}).

use std::sync::LazyLock;

use regex::Regex;
use reporunner_proto::common::v1::{ComponentKind, EnvVar};

use super::{default_name, find_line, line_of, weight};
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

pub fn detect(idx: &RepoIndex, dir: &str) -> Vec<Draft> {
    let mut d = Draft::new(&default_name(idx, dir), dir, "java");
    let pom = join(dir, "pom.xml");
    let gradle = ["build.gradle.kts", "build.gradle"]
        .iter()
        .map(|f| join(dir, f))
        .find(|f| idx.has(f));
    let kotlin = idx.files_under(dir).take(2000).any(|f| f.ends_with(".kt"));
    if kotlin {
        d.c.language = "kotlin".into();
    }
    let (text, file, maven) = if let Some(t) = idx.read(&pom) {
        (t, pom.clone(), true)
    } else if let Some(g) = &gradle {
        (idx.read(g).unwrap_or_default(), g.clone(), false)
    } else {
        return vec![d];
    };
    // Gradle settings/other modules may hold the Spring plugin.
    let mut all_text = text.clone();
    for f in idx
        .files_under(dir)
        .filter(|f| f.ends_with("pom.xml") || f.ends_with("build.gradle") || f.ends_with("build.gradle.kts"))
        .take(20)
    {
        if *f != file
            && let Some(t) = idx.read(f)
        {
            all_text.push_str(&t);
        }
    }
    let spring = all_text.contains("spring-boot");
    let web =
        all_text.contains("spring-boot-starter-web") || all_text.contains("spring-boot-starter-webflux");
    if spring {
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
    if all_text.contains("com.h2database") {
        // An embedded database is the default; compose databases are optional.
        d.deps.insert("com.h2database:h2".into());
    }
    let embedded_db = all_text.contains("com.h2database");
    if embedded_db {
        d.note(ev(
            "backing_service",
            &file,
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
    if maven {
        if let Some(name) = ARTIFACT.as_ref().and_then(|re| {
            // The project's own artifactId follows its parent block.
            let body = text.find("</parent>").map_or(text.as_str(), |p| &text[p..]);
            re.captures(body)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_owned())
        }) {
            d.c.name = name;
        }
        let mvn = if idx.has(&join(dir, "mvnw")) {
            "./mvnw"
        } else {
            "mvn"
        };
        d.c.package_manager = "maven".into();
        d.offer(ev(
            "install",
            &pom,
            0,
            format!("{mvn} dependency:go-offline"),
            weight::MANIFEST,
        ));
        d.c.install = cmd(format!("{mvn} -B -q dependency:go-offline"));
        d.c.build = cmd(format!("{mvn} -B -DskipTests package"));
        d.c.test = cmd(format!("{mvn} -B test"));
        if let Some(c) = TAG.as_ref().and_then(|re| re.captures(&text))
            && let Some(v) = c.get(2)
        {
            d.set_runtime(
                ev(
                    "runtime",
                    &pom,
                    line_of(&text, v.start()),
                    format!("java {}", v.as_str()),
                    weight::MANIFEST,
                ),
                "java",
                v.as_str(),
            );
        }
        if spring && web {
            d.set_start(
                ev(
                    "start",
                    &pom,
                    find_line(&text, "spring-boot-starter-web"),
                    "Spring Boot web starter",
                    weight::FRAMEWORK,
                ),
                cmd(format!("{mvn} -B spring-boot:run")),
                8080,
                "env:SERVER_PORT",
            );
        } else if spring {
            d.set_start(
                ev(
                    "start",
                    &pom,
                    find_line(&text, "spring-boot"),
                    "Spring Boot application",
                    weight::FRAMEWORK_GUESS,
                ),
                cmd(format!("{mvn} -B spring-boot:run")),
                0,
                "",
            );
        } else if text.contains("exec-maven-plugin") {
            d.set_start(
                ev(
                    "start",
                    &pom,
                    find_line(&text, "exec-maven-plugin"),
                    "exec-maven-plugin",
                    weight::MANIFEST * 0.8,
                ),
                cmd(format!("{mvn} -B -q exec:java")),
                0,
                "",
            );
        }
    } else {
        let gw = if idx.has(&join(dir, "gradlew")) {
            "./gradlew"
        } else {
            "gradle"
        };
        d.c.package_manager = "gradle".into();
        d.offer(ev(
            "install",
            &file,
            0,
            format!("{gw} dependencies"),
            weight::MANIFEST,
        ));
        d.c.install = cmd(format!("{gw} --no-daemon dependencies"));
        d.c.build = cmd(format!("{gw} --no-daemon build -x test"));
        d.c.test = cmd(format!("{gw} --no-daemon test"));
        if let Some(c) = GRADLE_JAVA.as_ref().and_then(|re| re.captures(&text))
            && let Some(v) = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3))
        {
            let version = v.as_str().replace('_', ".").trim_start_matches("1.").to_owned();
            d.set_runtime(
                ev(
                    "runtime",
                    &file,
                    line_of(&text, v.start()),
                    format!("java {version}"),
                    weight::MANIFEST,
                ),
                "java",
                &version,
            );
        }
        if spring {
            let w = if web {
                weight::FRAMEWORK
            } else {
                weight::FRAMEWORK_GUESS
            };
            let (port, binding) = if web { (8080, "env:SERVER_PORT") } else { (0, "") };
            d.set_start(
                ev(
                    "start",
                    &file,
                    find_line(&text, "spring"),
                    "Spring Boot plugin",
                    w,
                ),
                cmd(format!("{gw} --no-daemon bootRun")),
                port,
                binding,
            );
        } else if text.contains("application") && text.contains("mainClass") {
            d.set_start(
                ev(
                    "start",
                    &file,
                    find_line(&text, "mainClass"),
                    "application plugin",
                    weight::MANIFEST * 0.8,
                ),
                cmd(format!("{gw} --no-daemon run")),
                0,
                "",
            );
        }
    }
    if d.c.runtime.is_none() {
        d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
            name: "java".into(),
            version_constraint: String::new(),
        });
    }
    // application.properties / .yml: server.port and ${ENV:default} substitutions.
    for f in [
        "src/main/resources/application.properties",
        "src/main/resources/application.yml",
        "src/main/resources/application.yaml",
    ] {
        let path = join(dir, f);
        let Some(t) = idx.read(&path) else { continue };
        for (i, line) in t.lines().enumerate().take(2000) {
            let l = line.trim();
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
                    d.set_port(ev("port", &path, i as u32 + 1, l, weight::PROCFILE), p);
                }
            }
            if let Some(re) = PROPERTY_REF.as_ref() {
                for c in re.captures_iter(l) {
                    if let Some(name) = c.get(1) {
                        let default = c.get(2).map(|m| m.as_str().to_owned()).unwrap_or_default();
                        d.add_env(EnvVar {
                            name: name.as_str().to_owned(),
                            required: c.get(2).is_none(),
                            secret: is_secret_name(name.as_str()),
                            default_value: default,
                            source: format!("{path}:{}", i + 1),
                        });
                    }
                }
            }
        }
        if t.contains("postgresql") {
            d.deps.insert("org.postgresql:postgresql".into());
        }
    }
    if d.c.start.is_some() && web {
        d.set_kind(ComponentKind::Web);
        d.c.health_paths = vec!["/actuator/health".into(), "/".into()];
    }
    vec![d]
}
