//! Requirement lines from Python manifests and locks: Poetry's
//! dependency tables and `poetry.lock`, `uv.lock`, a Pipfile and
//! `Pipfile.lock`. Pure functions over parsed files; `python.rs` (the
//! install) and `python_test_deps.rs` (what the tests need) both read them.

use std::path::Path;

pub(crate) fn strings(value: Option<&toml::Value>) -> Vec<String> {
    value
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Translates a Poetry version constraint into PEP 440 (`^1.2` is
/// `>=1.2,<2.0`, `~1.2.3` is `>=1.2.3,<1.3`, `1.2.3` is `==1.2.3`, `*` is
/// no constraint). Of `a || b`, only `a` is kept.
pub fn poetry_spec(spec: &str) -> String {
    let spec = spec.split("||").next().unwrap_or_default().trim();
    let mut out: Vec<String> = Vec::new();
    for part in spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "*")
    {
        let part: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if let Some(v) = part.strip_prefix('^') {
            out.push(bounded(v, true));
        } else if let Some(v) = part.strip_prefix('~').filter(|v| !v.starts_with('=')) {
            out.push(bounded(v, false));
        } else if part.starts_with(['>', '<', '=', '!', '~']) {
            out.push(part);
        } else {
            out.push(format!("=={part}"));
        }
    }
    out.join(",")
}

/// `>=v,<upper` for caret (`caret`) or tilde ranges.
fn bounded(version: &str, caret: bool) -> String {
    let parts: Vec<u64> = version.split('.').map_while(|p| p.parse().ok()).collect();
    if parts.is_empty() {
        return format!(">={version}");
    }
    let bump = if caret {
        parts.iter().position(|&p| p != 0).unwrap_or(parts.len() - 1)
    } else if parts.len() >= 2 {
        1
    } else {
        0
    };
    let mut upper: Vec<u64> = parts[..=bump].to_vec();
    upper[bump] += 1;
    let upper = upper.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
    format!(">={version},<{upper}")
}

fn extras(value: Option<&toml::Value>) -> String {
    let list = strings(value);
    if list.is_empty() {
        String::new()
    } else {
        format!("[{}]", list.join(","))
    }
}

/// One `[tool.poetry.dependencies]` entry as a requirement line; optional
/// dependencies (extras) are left out.
pub fn poetry_requirement(name: &str, value: &toml::Value, dir: &Path) -> Option<String> {
    let table = match value {
        toml::Value::String(spec) => return Some(format!("{name}{}", poetry_spec(spec))),
        toml::Value::Array(items) => {
            return items
                .first()
                .and_then(|first| poetry_requirement(name, first, dir));
        }
        toml::Value::Table(table) => table,
        _ => return None,
    };
    if table.get("optional").and_then(toml::Value::as_bool) == Some(true) {
        return None;
    }
    let extras = extras(table.get("extras"));
    let text = |key: &str| table.get(key).and_then(toml::Value::as_str);
    let mut line = if let Some(git) = text("git") {
        let reference = text("rev").or_else(|| text("tag")).or_else(|| text("branch"));
        let mut line = format!("{name}{extras} @ git+{git}");
        if let Some(reference) = reference {
            line.push_str(&format!("@{reference}"));
        }
        if let Some(sub) = text("subdirectory") {
            line.push_str(&format!("#subdirectory={sub}"));
        }
        line
    } else if let Some(path) = text("path") {
        let path = dir.join(path);
        if table.get("develop").and_then(toml::Value::as_bool) == Some(true) {
            return Some(format!("-e {}", path.display()));
        }
        format!("{name}{extras} @ file://{}", path.display())
    } else if let Some(url) = text("url") {
        format!("{name}{extras} @ {url}")
    } else {
        format!("{name}{extras}{}", poetry_spec(text("version").unwrap_or("*")))
    };
    if let Some(markers) = text("markers") {
        line.push_str(&format!("; {markers}"));
    }
    Some(line)
}

/// Every registry package of `poetry.lock` as a `name==version` constraint
/// (direct git, path and URL sources come from the requirements instead).
pub fn poetry_lock_constraints(lock: &toml::Value) -> Vec<String> {
    lock_constraints(lock, |p| {
        p.get("source")
            .and_then(|s| s.get("type"))
            .and_then(toml::Value::as_str)
            .is_none_or(|t| t == "legacy")
    })
}

/// Every registry package of `uv.lock` as a `name==version` constraint.
pub fn uv_lock_constraints(lock: &toml::Value) -> Vec<String> {
    lock_constraints(lock, |p| {
        p.get("source").and_then(|s| s.get("registry")).is_some()
    })
}

/// `name==version` of the lock's `[[package]]`s that `from_registry`
/// accepts. A name locked at several versions (forks by marker) is left
/// free: pinning one would conflict with the other.
fn lock_constraints(lock: &toml::Value, from_registry: impl Fn(&toml::Value) -> bool) -> Vec<String> {
    let Some(packages) = lock.get("package").and_then(toml::Value::as_array) else {
        return Vec::new();
    };
    let pins: Vec<(&str, &str)> = packages
        .iter()
        .filter(|p| from_registry(p))
        .filter_map(|p| Some((p.get("name")?.as_str()?, p.get("version")?.as_str()?)))
        .collect();
    pins.iter()
        .filter(|(name, _)| pins.iter().filter(|(n, _)| n == name).count() == 1)
        .map(|(name, version)| format!("{name}=={version}"))
        .collect()
}

/// `Pipfile.lock`'s default packages, pinned, with their markers.
pub fn pipfile_lock_requirements(lock: &serde_json::Value, dir: &Path) -> Vec<String> {
    pipfile_lock_section(lock, "default", dir)
}

/// One section of `Pipfile.lock` (`default` or `develop`) as pinned
/// requirement lines with their markers.
pub fn pipfile_lock_section(lock: &serde_json::Value, section: &str, dir: &Path) -> Vec<String> {
    let Some(default) = lock.get(section).and_then(serde_json::Value::as_object) else {
        return Vec::new();
    };
    default
        .iter()
        .map(|(name, entry)| {
            let text = |key: &str| entry.get(key).and_then(serde_json::Value::as_str);
            let extras = entry
                .get("extras")
                .and_then(serde_json::Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                .filter(|e| !e.is_empty())
                .map(|e| format!("[{e}]"))
                .unwrap_or_default();
            let mut line = if let Some(git) = text("git") {
                let reference = text("ref").map(|r| format!("@{r}")).unwrap_or_default();
                format!("{name}{extras} @ git+{git}{reference}")
            } else if let Some(path) = text("path") {
                let path = dir.join(path);
                if entry.get("editable").and_then(serde_json::Value::as_bool) == Some(true) {
                    return format!("-e {}", path.display());
                }
                path.display().to_string()
            } else if let Some(file) = text("file") {
                format!("{name}{extras} @ {file}")
            } else {
                format!("{name}{extras}{}", text("version").unwrap_or(""))
            };
            if let Some(markers) = text("markers") {
                line.push_str(&format!("; {markers}"));
            }
            line
        })
        .collect()
}

/// One `[packages]` entry of a Pipfile.
pub(crate) fn pipfile_requirement(name: &str, value: &toml::Value, dir: &Path) -> Option<String> {
    match value {
        toml::Value::String(spec) if spec.trim() == "*" => Some(name.to_owned()),
        toml::Value::String(spec) => Some(format!("{name}{}", spec.trim())),
        toml::Value::Table(table) => {
            let text = |key: &str| table.get(key).and_then(toml::Value::as_str);
            let extras = extras(table.get("extras"));
            let mut line = if let Some(git) = text("git") {
                let reference = text("ref").map(|r| format!("@{r}")).unwrap_or_default();
                format!("{name}{extras} @ git+{git}{reference}")
            } else if let Some(path) = text("path") {
                let path = dir.join(path);
                if table.get("editable").and_then(toml::Value::as_bool) == Some(true) {
                    return Some(format!("-e {}", path.display()));
                }
                path.display().to_string()
            } else {
                let version = text("version").filter(|v| *v != "*").unwrap_or("");
                format!("{name}{extras}{version}")
            };
            if let Some(markers) = text("markers") {
                line.push_str(&format!("; {markers}"));
            }
            Some(line)
        }
        _ => None,
    }
}
