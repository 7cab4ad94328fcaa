//! Renders a plan as JSON, a Dockerfile, a docker-compose.yml, a
//! devcontainer.json or a Procfile.
//!
//! The Dockerfile, compose file and Procfile start something: a plan with
//! no start command (a library) has none of them, and says so.

mod compose;
mod dockerfile;
mod image;

use reporunner_proto::{
    agents::analyzer::v1::ExportFormat as ProtoFormat,
    common::v1::{Component, ComponentKind, RunPlan},
};

use crate::error::{AnalyzerError, Result};

/// The formats a plan can be exported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Dockerfile,
    Devcontainer,
    Procfile,
    Compose,
}

impl TryFrom<i32> for ExportFormat {
    type Error = AnalyzerError;

    fn try_from(value: i32) -> Result<Self> {
        match ProtoFormat::try_from(value) {
            Ok(ProtoFormat::Json) => Ok(Self::Json),
            Ok(ProtoFormat::Dockerfile) => Ok(Self::Dockerfile),
            Ok(ProtoFormat::Devcontainer) => Ok(Self::Devcontainer),
            Ok(ProtoFormat::Procfile) => Ok(Self::Procfile),
            Ok(ProtoFormat::Compose) => Ok(Self::Compose),
            Ok(ProtoFormat::Unspecified) | Err(_) => Err(AnalyzerError::InvalidFormat(value)),
        }
    }
}

/// An exported file: its suggested name and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedFile {
    pub file_name: String,
    pub content: String,
}

/// Renders `plan` in `format`. A Dockerfile, compose file or Procfile of a
/// plan that starts nothing is [`AnalyzerError::NothingToStart`].
pub fn export_plan(plan: &RunPlan, format: ExportFormat) -> Result<ExportedFile> {
    let generator = if plan.generator.is_empty() {
        crate::GENERATOR
    } else {
        &plan.generator
    };
    let (file_name, content) = match format {
        ExportFormat::Json => (
            "runplan.json",
            reporunner_proto::json::to_string_pretty(plan)
                .map_err(|e| AnalyzerError::Render(e.to_string()))?,
        ),
        ExportFormat::Dockerfile => (
            "Dockerfile",
            dockerfile::dockerfile(plan, startable(plan, "no image to run")?, generator),
        ),
        ExportFormat::Compose => (
            "docker-compose.yml",
            compose::compose(startable(plan, "no service to compose")?, generator)?,
        ),
        ExportFormat::Devcontainer => (".devcontainer/devcontainer.json", devcontainer(plan)),
        ExportFormat::Procfile => {
            startable(plan, "no process to declare")?;
            ("Procfile", procfile(plan))
        }
    };
    Ok(ExportedFile {
        file_name: file_name.to_owned(),
        content,
    })
}

/// The component to start, or why there is `nothing` (e.g. "no image to
/// run"): a library's tests are named so that the user knows what it does
/// offer.
fn startable<'a>(plan: &'a RunPlan, nothing: &str) -> Result<&'a Component> {
    if let Some(c) = primary(plan).filter(|c| has_start(c)) {
        return Ok(c);
    }
    let tests: Vec<String> = plan
        .components
        .iter()
        .filter_map(|c| {
            let test = c.test.as_ref().filter(|t| !t.run.trim().is_empty())?;
            let dir = rel_dir(c, &test.working_dir);
            Some(if dir.is_empty() {
                format!("`{}`", test.run.trim())
            } else {
                format!("`{}` in {dir}", test.run.trim())
            })
        })
        .collect();
    let why = if plan.components.is_empty() {
        format!("the plan has no component: nothing to start, so there is {nothing}")
    } else if tests.is_empty() {
        format!(
            "no component of this repository has a start command (a library or a build-only project): \
             nothing to start, so there is {nothing}"
        )
    } else {
        format!(
            "this repository is a library: nothing to start, so there is {nothing}; its tests run with {}",
            tests.join(", ")
        )
    };
    Err(AnalyzerError::NothingToStart(why))
}

fn has_start(c: &Component) -> bool {
    c.start.as_ref().is_some_and(|s| !s.run.trim().is_empty())
}

/// The component an image is built around: the first web one that
/// starts, else the first that starts, else the first.
fn primary(plan: &RunPlan) -> Option<&Component> {
    plan.components
        .iter()
        .find(|c| c.kind == ComponentKind::Web as i32 && has_start(c))
        .or_else(|| plan.components.iter().find(|c| has_start(c)))
        .or_else(|| plan.components.first())
}

/// A directory of the repository, relative to its root ("" for the root):
/// `working_dir`, else the component's path.
fn rel_dir(c: &Component, working_dir: &str) -> String {
    let d = if working_dir.is_empty() {
        c.path.as_str()
    } else {
        working_dir
    };
    let d = d.trim_start_matches("./").trim_end_matches('/');
    if d == "." { String::new() } else { d.to_owned() }
}

/// The same directory in the image, under `/app`.
fn dir_of(c: &Component, working_dir: &str) -> String {
    let d = rel_dir(c, working_dir);
    if d.is_empty() {
        "/app".to_owned()
    } else {
        format!("/app/{d}")
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A word for `sh`: as it is when plain, else single-quoted.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name every shell and compose take.
fn env_name_ok(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Sets a name once; a later value replaces an earlier one in place.
fn upsert(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => value.clone_into(&mut slot.1),
        None => env.push((name.to_owned(), value.to_owned())),
    }
}

/// The start command with the port applied per `port_binding`.
fn with_port(c: &Component, run: &str) -> String {
    if c.port == 0 {
        return run.to_owned();
    }
    match c.port_binding.as_str() {
        "django-runserver" => format!("{run} 0.0.0.0:{}", c.port),
        b if b.starts_with("flag:") => format!("{run} {} {}", &b[5..], c.port),
        _ => run.to_owned(),
    }
}

fn devcontainer(plan: &RunPlan) -> String {
    let c = primary(plan);
    let image = c.map_or_else(
        || "mcr.microsoft.com/devcontainers/base:bookworm".to_owned(),
        |c| image::base_image(c).image,
    );
    let mut install: Vec<String> = Vec::new();
    for comp in &plan.components {
        for cmd in [&comp.install, &comp.build].into_iter().flatten() {
            if cmd.run.is_empty() {
                continue;
            }
            let wd = if cmd.working_dir.is_empty() {
                comp.path.as_str()
            } else {
                cmd.working_dir.as_str()
            };
            let line = if wd.is_empty() || wd == "." {
                cmd.run.clone()
            } else {
                format!("(cd {wd} && {})", cmd.run)
            };
            if !install.contains(&line) {
                install.push(line);
            }
        }
    }
    let ports: Vec<u32> = plan
        .components
        .iter()
        .map(|c| c.port)
        .filter(|p| *p != 0)
        .collect();
    let env: serde_json::Map<String, serde_json::Value> = plan
        .components
        .iter()
        .flat_map(|c| c.env.iter())
        .filter(|e| !e.secret && !e.default_value.is_empty())
        .map(|e| (e.name.clone(), serde_json::Value::String(e.default_value.clone())))
        .collect();
    let doc = serde_json::json!({
        "name": c.map_or("workspace", |c| c.name.as_str()),
        "image": image,
        "forwardPorts": ports,
        "postCreateCommand": install.join(" && "),
        "containerEnv": env,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn procfile(plan: &RunPlan) -> String {
    let mut out = String::new();
    let mut web_done = false;
    for c in &plan.components {
        let Some(start) = &c.start else { continue };
        let cd = |wd: &str| -> String {
            let d = if wd.is_empty() { c.path.as_str() } else { wd };
            if d.is_empty() || d == "." {
                String::new()
            } else {
                format!("cd {d} && ")
            }
        };
        let run = match c.port_binding.as_str() {
            "env:PORT" => start.run.clone(),
            "django-runserver" => format!("{} 0.0.0.0:$PORT", start.run),
            b if b.starts_with("flag:") => format!("{} {} $PORT", start.run, &b[5..]),
            b if b.starts_with("env:") => format!("{}=$PORT {}", &b[4..], start.run),
            _ => start.run.clone(),
        };
        let is_web = c.kind == ComponentKind::Web as i32 || c.kind == ComponentKind::Static as i32;
        let name = if is_web && !web_done {
            web_done = true;
            "web".to_owned()
        } else {
            c.name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_")
        };
        for s in &c.setup {
            out.push_str(&format!("release: {}{}\n", cd(&s.working_dir), s.run));
        }
        out.push_str(&format!("{name}: {}{run}\n", cd(&start.working_dir)));
    }
    out
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::{Command, Runtime};

    use super::*;

    fn plan() -> RunPlan {
        RunPlan {
            components: vec![Component {
                name: "api".into(),
                path: ".".into(),
                kind: ComponentKind::Web as i32,
                runtime: Some(Runtime {
                    name: "python".into(),
                    version_constraint: "==3.11.*".into(),
                    preferred_version: String::new(),
                }),
                install: Some(Command {
                    run: "pip install -r requirements.txt".into(),
                    ..Default::default()
                }),
                start: Some(Command {
                    run: "python manage.py runserver".into(),
                    ..Default::default()
                }),
                setup: vec![Command {
                    run: "python manage.py migrate".into(),
                    ..Default::default()
                }],
                port: 8000,
                port_binding: "django-runserver".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn dockerfile_uses_the_runtime_version_and_the_port() {
        let f = export_plan(&plan(), ExportFormat::Dockerfile).unwrap();
        assert_eq!(f.file_name, "Dockerfile");
        assert!(f.content.contains("FROM python:3.11-slim"), "{}", f.content);
        assert!(f.content.contains("RUN pip install -r requirements.txt"));
        assert!(f.content.contains("EXPOSE 8000"));
        assert!(
            f.content
                .contains("python manage.py migrate && exec python manage.py runserver 0.0.0.0:8000"),
            "{}",
            f.content
        );
    }

    /// The reported Node library (`engines.node: ">= 0.10"`, tests only):
    /// it was `FROM node:0-slim` with no CMD; now it is refused, saying why
    /// and how its tests run, as FAILED_PRECONDITION.
    #[test]
    fn a_library_has_no_image_and_says_how_its_tests_run() {
        use reporunner_error::ServiceError as _;

        let library = RunPlan {
            components: vec![Component {
                name: "tiny-slug".into(),
                path: ".".into(),
                kind: ComponentKind::Library as i32,
                runtime: Some(Runtime {
                    name: "node".into(),
                    version_constraint: ">= 0.10".into(),
                    preferred_version: String::new(),
                }),
                install: Some(Command {
                    run: "npm install".into(),
                    ..Default::default()
                }),
                test: Some(Command {
                    run: "npm test".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        for format in [
            ExportFormat::Dockerfile,
            ExportFormat::Compose,
            ExportFormat::Procfile,
        ] {
            let err = export_plan(&library, format).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with("this repository is a library: nothing to start"),
                "{message}"
            );
            assert!(message.ends_with("its tests run with `npm test`"), "{message}");
            assert_eq!(err.to_status().code(), tonic::Code::FailedPrecondition);
        }
        let err = export_plan(&library, ExportFormat::Dockerfile).unwrap_err();
        assert!(err.to_string().contains("there is no image to run"), "{err}");
        let devcontainer = export_plan(&library, ExportFormat::Devcontainer).unwrap();
        assert!(
            devcontainer.content.contains("\"image\": \"node:22-slim\""),
            "{}",
            devcontainer.content
        );
        export_plan(&library, ExportFormat::Json).unwrap();
        let empty = export_plan(&RunPlan::default(), ExportFormat::Dockerfile).unwrap_err();
        assert!(empty.to_string().contains("the plan has no component"), "{empty}");
    }

    /// The reported Flask app: `.python-version` 3.11, run with 3.11,
    /// exported as `python:3.12-slim`.
    #[test]
    fn a_flask_app_is_built_on_the_python_it_prefers() {
        let mut flask = plan();
        if let Some(runtime) = flask.components[0].runtime.as_mut() {
            runtime.version_constraint.clear();
            runtime.preferred_version = "3.11".into();
        }
        let f = export_plan(&flask, ExportFormat::Dockerfile).unwrap();
        assert!(f.content.contains("\nFROM python:3.11-slim\n"), "{}", f.content);
    }

    #[test]
    fn compose_is_a_format_of_its_own() {
        assert_eq!(ExportFormat::try_from(5).unwrap(), ExportFormat::Compose);
        let f = export_plan(&plan(), ExportFormat::Compose).unwrap();
        assert_eq!(f.file_name, "docker-compose.yml");
        let doc: serde_norway::Value = serde_norway::from_str(&f.content).unwrap();
        assert_eq!(
            doc["services"]["api"]["build"].as_str(),
            Some("."),
            "{}",
            f.content
        );
    }

    #[test]
    fn procfile_binds_the_port_and_releases_migrations() {
        let f = export_plan(&plan(), ExportFormat::Procfile).unwrap();
        assert_eq!(
            f.content,
            "release: python manage.py migrate\nweb: python manage.py runserver 0.0.0.0:$PORT\n"
        );
    }

    #[test]
    fn devcontainer_and_json_are_valid_json() {
        let f = export_plan(&plan(), ExportFormat::Devcontainer).unwrap();
        let v: serde_json::Value = serde_json::from_str(&f.content).unwrap();
        assert_eq!(v["forwardPorts"][0], 8000);
        let j = export_plan(&plan(), ExportFormat::Json).unwrap();
        assert!(
            j.content.contains("\"portBinding\": \"django-runserver\""),
            "{}",
            j.content
        );
        assert!(ExportFormat::try_from(0).is_err());
        assert_eq!(ExportFormat::try_from(4).unwrap(), ExportFormat::Procfile);
    }
}
