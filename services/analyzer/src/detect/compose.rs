//! docker-compose: images become backing services (version from the tag),
//! built services map to components (ports, environment, command).

use reporunner_proto::common::v1::{BackingServiceKind, Command, ComponentKind, EnvVar};
use serde_norway::Value;

use super::{
    util::{find_line, port_in},
    weight,
};
use crate::{
    draft::{Draft, backing_from_env, ev, is_secret_name, version_from_tag},
    index::{RepoIndex, join, parent_of},
};

const FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
    "docker-compose.dev.yml",
    "docker-compose.override.yml",
];

/// Which backing service an image is.
pub fn image_kind(image: &str) -> Option<(BackingServiceKind, String)> {
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (image, ""),
    };
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let kind = match base.as_str() {
        "postgres" | "postgis" | "postgresql" | "timescaledb" | "pgvector" | "timescaledb-ha" => {
            BackingServiceKind::Postgresql
        }
        "mysql" | "mariadb" | "mysql-server" => BackingServiceKind::Mysql,
        "redis" | "redis-stack" | "redis-stack-server" | "valkey" | "keydb" => BackingServiceKind::Redis,
        "mongo" | "mongodb" | "mongodb-community-server" => BackingServiceKind::Mongodb,
        "rabbitmq" => BackingServiceKind::Rabbitmq,
        _ => return None,
    };
    let version = if base == "postgis" {
        version_from_tag(tag.split('-').next().unwrap_or_default())
    } else {
        version_from_tag(tag)
    };
    Some((kind, version))
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(s)) => s
            .iter()
            .filter_map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .or_else(|| x.as_u64().map(|n| n.to_string()))
            })
            .take(100)
            .collect(),
        Some(Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .take(100)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `${VAR:-default}` → default, `${VAR}` → "".
fn resolve(value: &str) -> String {
    if let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        return inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
    }
    value.to_owned()
}

pub fn apply(idx: &RepoIndex, drafts: &mut [Draft]) {
    let files: Vec<String> = idx
        .files()
        .filter(|f| FILES.contains(&crate::index::file_name(f)) && f.split('/').count() <= 2)
        .cloned()
        .collect();
    for file in files {
        let Some(text) = idx.read(&file) else { continue };
        let doc: Value = match serde_norway::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                idx.warn(format!("{file} is not valid YAML: {e}"));
                continue;
            }
        };
        let Some(services) = doc.get("services").and_then(|s| s.as_mapping()) else {
            continue;
        };
        apply_file(idx, drafts, &file, &text, services);
    }
}

/// A backing service declared in compose: (service name, kind, version, line).
type Backing = (String, BackingServiceKind, String, u32);

/// One compose file: services built from a component's directory speak for
/// it; image-only services are backing services.
fn apply_file(
    idx: &RepoIndex,
    drafts: &mut [Draft],
    file: &str,
    text: &str,
    services: &serde_norway::Mapping,
) {
    let base = parent_of(file).to_owned();
    let mut backing: Vec<Backing> = Vec::new();
    let mut built: Vec<(usize, Vec<String>)> = Vec::new();
    for (name, svc) in services.iter().take(100) {
        let Some(name) = name.as_str() else { continue };
        let line = find_line(text, &format!("{name}:"));
        if let Some(image) = svc.get("image").and_then(|v| v.as_str())
            && let Some((kind, version)) = image_kind(image)
            && svc.get("build").is_none()
        {
            backing.push((name.to_owned(), kind, version, line));
            continue;
        }
        let context = match svc.get("build") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(b @ Value::Mapping(_)) => Some(
                b.get("context")
                    .and_then(|c| c.as_str())
                    .unwrap_or(".")
                    .to_owned(),
            ),
            _ => None,
        };
        let Some(context) = context else { continue };
        let dir = normalize_dir(&join(&base, context.trim_start_matches("./")));
        let pos = drafts
            .iter()
            .position(|d| d.dir() == dir)
            .or_else(|| (drafts.len() == 1).then_some(0));
        let Some(pos) = pos else { continue };
        let d = &mut drafts[pos];
        service_port(d, svc, name, file, line);
        service_env(d, svc, file, text);
        service_env_files(idx, d, svc, &base);
        service_command(d, svc, name, file, text);
        built.push((pos, str_list(svc.get("depends_on"))));
    }
    attach_backing(drafts, file, &backing, &built);
}

/// The first container port of `ports` / `expose`.
fn service_port(d: &mut Draft, svc: &Value, name: &str, file: &str, line: u32) {
    for p in str_list(svc.get("ports"))
        .iter()
        .chain(str_list(svc.get("expose")).iter())
    {
        let container = p
            .rsplit(':')
            .next()
            .unwrap_or(p)
            .split('/')
            .next()
            .unwrap_or_default();
        let container = container.split('-').next().unwrap_or(container);
        if let Ok(port) = container.parse::<u32>() {
            d.set_port(
                ev("port", file, line, format!("{name} ports {p}"), weight::COMPOSE),
                port,
            );
            break;
        }
    }
}

/// Where the service's volumes are mounted in its container (`/data` of
/// `data:/data` or `{target: /data}`).
fn volume_targets(svc: &Value) -> Vec<String> {
    let Some(Value::Sequence(volumes)) = svc.get("volumes") else {
        return Vec::new();
    };
    volumes
        .iter()
        .take(50)
        .filter_map(|v| match v {
            Value::String(s) => s.split(':').nth(1).map(str::to_owned),
            Value::Mapping(_) => v.get("target").and_then(|t| t.as_str()).map(str::to_owned),
            _ => None,
        })
        .map(|t| t.trim_end_matches('/').to_owned())
        .filter(|t| t.starts_with('/') && t.len() > 1)
        .collect()
}

/// Whether `value` names a path inside one of the container's volumes
/// (`sqlite:////data/db.sqlite` with a volume at `/data`): it exists only
/// in the container, so the app's own default serves better here.
fn in_container_volume(value: &str, targets: &[String]) -> bool {
    targets.iter().any(|t| {
        value.match_indices(t.as_str()).any(|(at, _)| {
            let after = value[at + t.len()..].chars().next();
            let before = value[..at].chars().last();
            matches!(after, None | Some('/')) && matches!(before, None | Some('/') | Some('=') | Some(':'))
        })
    })
}

/// `environment` as a list of `K=V` or a mapping; values that point into
/// the container's volumes are left out.
fn service_env(d: &mut Draft, svc: &Value, file: &str, text: &str) {
    let targets = volume_targets(svc);
    let add = |d: &mut Draft, k: &str, v: &str, line: u32| {
        if !in_container_volume(v, &targets) {
            add_env(d, k, v, file, line);
        }
    };
    match svc.get("environment") {
        Some(Value::Sequence(list)) => {
            for item in list.iter().filter_map(|v| v.as_str()).take(200) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                add(d, k, &resolve(v), find_line(text, item));
            }
        }
        Some(Value::Mapping(map)) => {
            for (k, v) in map.iter().take(200) {
                let Some(k) = k.as_str() else { continue };
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
                    .or_else(|| v.as_bool().map(|b| b.to_string()))
                    .unwrap_or_default();
                add(d, k, &resolve(&v), find_line(text, &format!("{k}:")));
            }
        }
        _ => {}
    }
}

/// `env_file`: one path or a list of paths or `{path, required}`, relative
/// to the compose file; each one the repository holds is read like a
/// template (`KEY=value` lines).
fn service_env_files(idx: &RepoIndex, d: &mut Draft, svc: &Value, base: &str) {
    let entries: Vec<String> = match svc.get("env_file") {
        Some(Value::String(path)) => vec![path.clone()],
        Some(Value::Sequence(list)) => list
            .iter()
            .take(20)
            .filter_map(|entry| {
                entry
                    .as_str()
                    .or_else(|| entry.get("path").and_then(|p| p.as_str()))
                    .map(str::to_owned)
            })
            .collect(),
        _ => Vec::new(),
    };
    for entry in entries {
        let path = normalize_dir(&join(base, entry.trim_start_matches("./")));
        let Some(content) = idx.read(&path) else { continue };
        for (i, raw) in content.lines().enumerate().take(2000) {
            super::env::template_line(d, &path, i as u32 + 1, raw, true);
        }
    }
}

fn service_command(d: &mut Draft, svc: &Value, name: &str, file: &str, text: &str) {
    let command = match svc.get("command") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Sequence(s)) => Some(s.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" ")),
        _ => None,
    };
    if let Some(c) = command {
        let port = port_in(&c).unwrap_or(d.c.port);
        d.set_start(
            ev(
                "start",
                file,
                find_line(text, "command:"),
                format!("{name} command: {c}"),
                weight::COMPOSE,
            ),
            Some(Command {
                run: c,
                working_dir: String::new(),
                watch_mode: false,
            }),
            port,
            "",
        );
    }
}

/// Attach backing services: to the components that depend on them,
/// and those nobody claims to every runnable component.
fn attach_backing(drafts: &mut [Draft], file: &str, backing: &[Backing], built: &[(usize, Vec<String>)]) {
    for (name, kind, version, line) in backing {
        let e = ev(
            "backing_service",
            file,
            *line,
            format!("service {name}"),
            weight::MANIFEST,
        );
        let claimants: Vec<usize> = built
            .iter()
            .filter(|(_, deps)| deps.iter().any(|d| d == name))
            .map(|(p, _)| *p)
            .collect();
        if claimants.is_empty() {
            for d in drafts
                .iter_mut()
                .filter(|d| !matches!(d.kind(), ComponentKind::Static | ComponentKind::Library))
                .filter(|d| {
                    !d.has_dep("com.h2database:h2")
                        || !matches!(kind, BackingServiceKind::Postgresql | BackingServiceKind::Mysql)
                })
            {
                d.add_backing(*kind, version, e.clone());
            }
        } else {
            for p in claimants {
                if let Some(d) = drafts.get_mut(p) {
                    d.add_backing(*kind, version, e.clone());
                }
            }
        }
    }
}

fn normalize_dir(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn add_env(d: &mut Draft, name: &str, value: &str, file: &str, line: u32) {
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return;
    }
    if let Some(kind) = backing_from_env(name, value) {
        d.add_backing(
            kind,
            "",
            ev(
                "backing_service",
                file,
                line,
                format!("{name} in compose environment"),
                weight::COMPOSE,
            ),
        );
    }
    d.add_env(EnvVar {
        name: name.to_owned(),
        default_value: value.to_owned(),
        required: false,
        secret: is_secret_name(name),
        source: format!("{file}:{line}"),
    });
}
