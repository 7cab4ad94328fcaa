//! Dockerfile (FROM, EXPOSE, ENV, CMD/ENTRYPOINT) and devcontainer.json
//! (postCreateCommand, forwardPorts, image) as evidence.

use reporunner_proto::common::v1::{Command, EnvVar};
use serde_json::Value;

use super::{
    util::{command_port, find_line, shell_quote},
    weight,
};
use crate::{
    draft::{Draft, ev, is_secret_name, version_from_tag},
    index::{RepoIndex, parent_of},
};

/// Dockerfile lines with continuations joined: (1-based first line, text).
fn logical_lines(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0u32;
    for (i, raw) in text.lines().enumerate().take(5000) {
        let line = raw.trim();
        if cur.is_empty() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            start = i as u32 + 1;
        }
        if let Some(body) = line.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push((start, std::mem::take(&mut cur)));
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// `["python", "app.py"]` → `python app.py`; shell form as is.
fn command_text(arg: &str) -> String {
    let arg = arg.trim();
    if arg.starts_with('[')
        && let Ok(parts) = serde_json::from_str::<Vec<String>>(arg)
    {
        if parts.len() >= 3
            && (parts[0] == "sh" || parts[0] == "/bin/sh" || parts[0] == "bash" || parts[0] == "/bin/bash")
            && parts[1] == "-c"
        {
            return parts[2..].join(" ");
        }
        return parts.iter().map(|p| shell_quote(p)).collect::<Vec<_>>().join(" ");
    }
    arg.to_owned()
}

pub fn apply(idx: &RepoIndex, drafts: &mut [Draft]) {
    let files: Vec<String> = idx
        .files()
        .filter(|f| crate::index::file_name(f) == "Dockerfile" && f.split('/').count() <= 4)
        .cloned()
        .collect();
    for file in files {
        let dir = parent_of(&file).to_owned();
        let Some(pos) = drafts.iter().position(|d| d.dir() == dir) else {
            continue;
        };
        let Some(text) = idx.read(&file) else { continue };
        apply_dockerfile(&mut drafts[pos], &file, &text);
    }
}

/// FROM, EXPOSE and ENV as they come; ENTRYPOINT + CMD as the start command.
fn apply_dockerfile(d: &mut Draft, file: &str, text: &str) {
    let mut workdir = String::new();
    let mut entry: Option<(u32, String)> = None;
    let mut cmd: Option<(u32, String)> = None;
    for (line, l) in &logical_lines(text) {
        let (instr, arg) = l.split_once(char::is_whitespace).unwrap_or((l.as_str(), ""));
        let arg = arg.trim();
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => from_runtime(d, file, *line, arg),
            "WORKDIR" => workdir = arg.trim_end_matches('/').to_owned(),
            "EXPOSE" => {
                if let Some(p) = arg
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    d.set_port(
                        ev("port", file, *line, format!("EXPOSE {arg}"), weight::DOCKER),
                        p,
                    );
                }
            }
            "ENV" => env_instruction(d, file, *line, arg),
            "ENTRYPOINT" => entry = Some((*line, command_text(arg))),
            "CMD" => cmd = Some((*line, command_text(arg))),
            _ => {}
        }
    }
    let chosen = match (&entry, &cmd) {
        (Some((_, e)), Some(c))
            if e.contains("entrypoint") || e == "tini" || e.contains("dumb-init") || e == "/tini --" =>
        {
            Some(c.clone())
        }
        (Some((l, e)), Some((_, c))) => Some((*l, format!("{e} {c}"))),
        (Some(e), None) => Some(e.clone()),
        (None, Some(c)) => Some(c.clone()),
        (None, None) => None,
    };
    if let Some((line, mut run)) = chosen {
        if !workdir.is_empty() {
            run = run.replace(&format!("{workdir}/"), "");
        }
        let (port, binding) = command_port(&run, d.c.port);
        d.set_start(
            ev("start", file, line, format!("CMD {run}"), weight::DOCKER),
            Some(Command {
                run,
                working_dir: String::new(),
                watch_mode: false,
            }),
            port,
            binding,
        );
    }
}

/// `ENV K=V ...` or `ENV K V`, minus the image's own plumbing.
fn env_instruction(d: &mut Draft, file: &str, line: u32, arg: &str) {
    let pairs: Vec<(String, String)> = if arg.contains('=') {
        arg.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect()
    } else {
        arg.split_once(' ')
            .map(|(k, v)| vec![(k.to_owned(), v.trim().to_owned())])
            .unwrap_or_default()
    };
    for (k, v) in pairs {
        if [
            "PATH",
            "PYTHONUNBUFFERED",
            "PYTHONDONTWRITEBYTECODE",
            "LANG",
            "LC_ALL",
            "DEBIAN_FRONTEND",
            "PIP_NO_CACHE_DIR",
            "HOME",
        ]
        .contains(&k.as_str())
            || v.contains('$')
        {
            continue;
        }
        d.add_env(EnvVar {
            name: k.clone(),
            secret: is_secret_name(&k),
            default_value: v,
            required: false,
            source: format!("{file}:{line}"),
        });
    }
}

fn from_runtime(d: &mut Draft, file: &str, line: u32, arg: &str) {
    let image = arg.split_whitespace().next().unwrap_or_default();
    let (name, tag) = image.rsplit_once(':').unwrap_or((image, ""));
    let name = name.rsplit('/').next().unwrap_or(name);
    let version = version_from_tag(tag);
    if version.is_empty() {
        return;
    }
    let (rt, constraint) = match name {
        "python" if d.c.language == "python" => (
            "python",
            if version.split('.').count() >= 3 {
                format!("=={version}")
            } else {
                format!("=={version}.*")
            },
        ),
        "node" if matches!(d.c.language.as_str(), "javascript" | "typescript") => ("node", version.clone()),
        "golang" if d.c.language == "go" => ("go", format!(">={version}")),
        "rust" if d.c.language == "rust" => ("rust", version.clone()),
        "openjdk" | "eclipse-temurin" | "amazoncorretto" | "maven" | "gradle"
            if matches!(d.c.language.as_str(), "java" | "kotlin") =>
        {
            let v = tag
                .split(['-', '.'])
                .find(|p| p.chars().all(|c| c.is_ascii_digit()) && p.len() == 2)
                .unwrap_or(&version)
                .to_owned();
            ("java", v)
        }
        _ => return,
    };
    d.set_runtime(
        ev(
            "runtime",
            file,
            line,
            format!("FROM {image}"),
            weight::DOCKER * 0.8,
        ),
        rt,
        &constraint,
    );
}

/// Strips `//` and `/* */` comments and trailing commas (JSONC).
pub fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == '\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push(c);
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // trailing commas
    regex::Regex::new(r",(\s*[}\]])").map_or(out.clone(), |re| re.replace_all(&out, "$1").into_owned())
}

pub fn apply_devcontainer(idx: &RepoIndex, drafts: &mut [Draft]) {
    let file = [".devcontainer/devcontainer.json", ".devcontainer.json"]
        .iter()
        .find(|f| idx.has(f))
        .map(|f| (*f).to_owned());
    let Some(file) = file else { return };
    let Some(text) = idx.read(&file) else { return };
    let doc: Value = match serde_json::from_str(&strip_jsonc(&text)) {
        Ok(v) => v,
        Err(e) => {
            idx.warn(format!("{file} is not valid JSON: {e}"));
            return;
        }
    };
    let Some(d) = drafts.iter_mut().find(|d| d.dir().is_empty()).or(None) else {
        return;
    };
    if let Some(ports) = doc.get("forwardPorts").and_then(|p| p.as_array())
        && let Some(p) = ports.iter().find_map(|p| {
            p.as_u64()
                .or_else(|| p.as_str().and_then(|s| s.rsplit(':').next()?.parse().ok()))
        })
    {
        d.set_port(
            ev(
                "port",
                &file,
                find_line(&text, "forwardPorts"),
                format!("forwardPorts {p}"),
                weight::DEVCONTAINER,
            ),
            p as u32,
        );
    }
    container_env(d, &doc, &file, &text);
    let post = doc
        .get("postCreateCommand")
        .or_else(|| doc.get("onCreateCommand"));
    let post_text = match post {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => Some(a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" ")),
        Some(Value::Object(o)) => Some(
            o.values()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" && "),
        ),
        _ => None,
    };
    if let Some(p) = post_text
        && !p.is_empty()
        && d.offer(ev(
            "install",
            &file,
            find_line(&text, "CreateCommand"),
            format!("postCreateCommand: {p}"),
            weight::DEVCONTAINER,
        ))
    {
        d.c.install = Some(Command {
            run: p,
            working_dir: String::new(),
            watch_mode: false,
        });
    }
    if let Some(image) = doc.get("image").and_then(|v| v.as_str()) {
        d.note(ev(
            "runtime",
            &file,
            find_line(&text, "\"image\""),
            format!("image {image}"),
            0.2,
        ));
    }
}

/// devcontainer `containerEnv` and `remoteEnv` values (not `${localEnv:…}`).
fn container_env(d: &mut Draft, doc: &Value, file: &str, text: &str) {
    for key in ["containerEnv", "remoteEnv"] {
        let Some(env) = doc.get(key).and_then(|e| e.as_object()) else {
            continue;
        };
        for (name, value) in env.iter().take(200) {
            // `${localEnv:X}` and `${containerEnv:X}` are the user's, not values.
            let Some(value) = value.as_str().filter(|v| !v.contains("${")) else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            d.add_env(reporunner_proto::common::v1::EnvVar {
                name: name.clone(),
                default_value: value.to_owned(),
                required: false,
                secret: crate::draft::is_secret_name(name),
                source: format!("{file}:{}", find_line(text, &format!("\"{name}\""))),
            });
        }
    }
}
