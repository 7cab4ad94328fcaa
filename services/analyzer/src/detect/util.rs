//! Helpers the detectors share: paths and lines, source-file selection,
//! workspace globs, version syntax, shell quoting and what a command line
//! says about its language and port.

use crate::index::{RepoIndex, file_name};

/// Source files of a component worth scanning (by extension), shallow
/// first, preferred names first, tests and migrations last, at most `limit`.
pub fn source_files(
    idx: &RepoIndex,
    dir: &str,
    exts: &[&str],
    preferred: &[&str],
    limit: usize,
) -> Vec<String> {
    let mut files: Vec<(usize, usize, &String)> = idx
        .files_under(dir)
        .filter(|f| exts.iter().any(|e| f.ends_with(e)))
        .filter(|f| {
            let rel = if dir.is_empty() {
                f.as_str()
            } else {
                &f[dir.len() + 1..]
            };
            !rel.split('/').any(|s| {
                matches!(
                    s,
                    "tests"
                        | "test"
                        | "migrations"
                        | "docs"
                        | "examples"
                        | "fixtures"
                        | "__tests__"
                        | "testdata"
                ) || s.starts_with('.')
            }) && crate::index::depth_below(dir, f) <= 5
        })
        .map(|f| {
            let name = file_name(f);
            // Then what a settings or config package holds (Django's
            // `settings/base.py`), then the rest.
            let in_settings = f
                .rsplit('/')
                .skip(1)
                .any(|part| matches!(part, "settings" | "config" | "conf"));
            let rank = preferred
                .iter()
                .position(|p| *p == name)
                .unwrap_or(preferred.len() + usize::from(!in_settings));
            (crate::index::depth_below(dir, f), rank, f)
        })
        .collect();
    files.sort();
    files.into_iter().take(limit).map(|(_, _, f)| f.clone()).collect()
}

/// The path of `file` relative to the component `dir`.
pub fn rel_to<'a>(dir: &str, file: &'a str) -> &'a str {
    if dir.is_empty() {
        file
    } else {
        file.strip_prefix(dir).map_or(file, |r| r.trim_start_matches('/'))
    }
}

/// 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> u32 {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos].iter().filter(|b| **b == b'\n').count() as u32 + 1
}

/// 1-based line of the first line containing `needle`, 0 if none.
pub fn find_line(text: &str, needle: &str) -> u32 {
    text.find(needle).map_or(0, |p| line_of(text, p))
}

/// `18` → `18.0.0`, `3.11` → `3.11.0`.
pub fn pad_semver(v: &str) -> String {
    let v = v.trim().trim_start_matches('v');
    match v.split('.').count() {
        1 => format!("{v}.0.0"),
        2 => format!("{v}.0"),
        _ => v.to_owned(),
    }
}

/// A hex digest such as a workspace directory's name.
fn is_digest(name: &str) -> bool {
    name.len() >= 32 && name.chars().all(|c| c.is_ascii_hexdigit())
}

/// The component's name when its manifest names none: the directory name,
/// or "app" at the root when the root's name says nothing (a
/// content-addressed workspace is named by its digest).
pub fn default_name(idx: &RepoIndex, dir: &str) -> String {
    if dir.is_empty() {
        idx.root()
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !is_digest(n))
            .unwrap_or("app")
            .to_owned()
    } else {
        file_name(dir).to_owned()
    }
}

/// Matches a workspace glob (`apps/*`, `packages/**`, `tools/cli`) against a
/// directory relative to the workspace root.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim().trim_start_matches("./").trim_end_matches('/');
    let mut pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).take(32).collect();
    // `**/**` is `**`; collapsing keeps the match linear in practice.
    pat.dedup_by(|a, b| *a == "**" && *b == "**");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    fn rec(p: &[&str], s: &[&str], depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => rec(&p[1..], s, depth + 1) || (!s.is_empty() && rec(p, &s[1..], depth + 1)),
            (Some(ps), Some(ss)) => seg_match(ps, ss) && rec(&p[1..], &s[1..], depth + 1),
            _ => false,
        }
    }
    rec(&pat, &segs, 0)
}

fn seg_match(p: &str, s: &str) -> bool {
    match p.split_once('*') {
        None => p == s,
        Some((pre, post)) => s.len() >= pre.len() + post.len() && s.starts_with(pre) && s.ends_with(post),
    }
}

/// Whether a script never exits by itself because it watches files.
pub fn is_watch(script: &str) -> bool {
    let s = script.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let has = |w: &str| words.contains(&w);
    if s.contains("nodemon")
        || s.contains("--watch")
        || s.contains("--watchAll")
        || s.contains("ts-node-dev")
        || s.contains("tsx watch")
        || s.contains("next dev")
        || s.contains("nuxt dev")
        || s.contains("astro dev")
        || s.contains("react-scripts start")
        || s.contains("webpack serve")
        || s.contains("webpack-dev-server")
        || s.contains("ng serve")
        || s.contains("vue-cli-service serve")
        || s.contains("remix dev")
        || s.contains("gatsby develop")
        || s.contains("node --watch")
        || s.contains("bun --watch")
        || s.contains("bun --hot")
    {
        return true;
    }
    // vitest watches unless told `run` (or --run); `vitest watch`/`vitest dev` too.
    if let Some(pos) = words.iter().position(|w| *w == "vitest") {
        let next = words.get(pos + 1).copied().unwrap_or("");
        return next != "run" && !has("--run");
    }
    // vite: bare `vite` or `vite dev`/`vite serve` is the dev server.
    if let Some(pos) = words.iter().position(|w| *w == "vite") {
        let next = words.get(pos + 1).copied().unwrap_or("");
        return !matches!(next, "build" | "preview" | "optimize");
    }
    false
}

/// `>=16 <21` → `>=16, <21`; first alternative of `||`; for the semver crate.
pub fn semver_friendly(constraint: &str) -> String {
    let first = constraint.split("||").next().unwrap_or(constraint).trim();
    let mut out: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for tok in first.split_whitespace() {
        if tok == "-" {
            // hyphen ranges: keep it simple
            continue;
        }
        if matches!(tok, ">=" | "<=" | ">" | "<" | "=" | "^" | "~") {
            pending_op = tok.to_owned();
            continue;
        }
        out.push(format!("{pending_op}{}", tok.trim_start_matches('v')));
        pending_op.clear();
    }
    out.join(", ")
}

pub fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The port and binding a start command implies: `$PORT` in it, or a
/// server that reads `PORT` itself (gunicorn), or an explicit bind.
pub fn command_port(command: &str, current: u32) -> (u32, &'static str) {
    let uses_port = command.contains("$PORT") || command.contains("${PORT");
    let explicit = port_in(command);
    let gunicorn = command.contains("gunicorn");
    if uses_port {
        (
            if current != 0 {
                current
            } else if gunicorn {
                8000
            } else {
                5000
            },
            "env:PORT",
        )
    } else if let Some(p) = explicit {
        (p, "")
    } else if gunicorn {
        // gunicorn binds $PORT when set, else 127.0.0.1:8000.
        (8000, "env:PORT")
    } else {
        (current, "")
    }
}

/// A port in `--bind 0.0.0.0:8000`, `-b :5000`, `--port 8000`.
pub fn port_in(command: &str) -> Option<u32> {
    let re = regex::Regex::new(r"(?:--bind[= ]|-b[= ]?|--port[= ]|-p[= ]?)\S*?:?(\d{2,5})\b").ok()?;
    re.captures(command)?.get(1)?.as_str().parse().ok()
}

/// A language guessed from a command line.
pub fn language_of(command: &str) -> &'static str {
    let first = command.split_whitespace().next().unwrap_or_default();
    match first {
        "python" | "python3" | "gunicorn" | "uvicorn" | "flask" | "streamlit" | "pip" | "poetry" | "uv"
        | "pipenv" | "hypercorn" | "daphne" | "celery" => "python",
        "node" | "npm" | "npx" | "yarn" | "pnpm" | "nodemon" => "javascript",
        "bun" => "javascript",
        "cargo" => "rust",
        "go" => "go",
        "java" | "mvn" | "./mvnw" | "gradle" | "./gradlew" => "java",
        "make" | "cmake" => "c",
        _ if first.ends_with(".py") => "python",
        _ => "",
    }
}

pub fn runtime_of(language: &str) -> &'static str {
    match language {
        "python" => "python",
        "javascript" | "typescript" => "node",
        "rust" => "rust",
        "go" => "go",
        "java" => "java",
        "c" => "c",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settings_package_is_read_before_the_other_modules_of_its_depth() {
        let dir = tempfile::tempdir().unwrap();
        for app in 0..30 {
            let module = dir.path().join(format!("proj/app{app:02}"));
            std::fs::create_dir_all(&module).unwrap();
            std::fs::write(module.join("models.py"), "x = 1\n").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("proj/settings")).unwrap();
        std::fs::write(dir.path().join("proj/settings/base.py"), "DEBUG = False\n").unwrap();
        let idx = RepoIndex::build(
            dir.path(),
            &crate::AnalyzerConfig::default(),
            std::time::Instant::now() + std::time::Duration::from_secs(30),
        );
        let files = source_files(&idx, "", &[".py"], &["settings.py"], 24);
        assert_eq!(files.len(), 24);
        assert_eq!(files[0], "proj/settings/base.py", "{files:?}");
    }

    #[test]
    fn watch_mode_is_detected() {
        assert!(is_watch("vitest"));
        assert!(!is_watch("vitest run"));
        assert!(!is_watch("vitest --run"));
        assert!(is_watch("jest --watch"));
        assert!(!is_watch("jest"));
        assert!(is_watch("nodemon server.js"));
        assert!(is_watch("next dev"));
        assert!(!is_watch("next start"));
        assert!(is_watch("vite"));
        assert!(!is_watch("vite build"));
        assert!(!is_watch("node server.js"));
    }

    #[test]
    fn workspace_globs_match() {
        assert!(glob_match("packages/*", "packages/ui"));
        assert!(!glob_match("packages/*", "packages/ui/x"));
        assert!(glob_match("apps/**", "apps/web/x"));
        assert!(glob_match("./tools/cli/", "tools/cli"));
        assert!(glob_match("pkg-*", "pkg-a"));
    }

    #[test]
    fn engines_become_semver_requirements() {
        assert_eq!(semver_friendly(">=16 <21"), ">=16, <21");
        assert_eq!(semver_friendly("^18 || ^20"), "^18");
        assert!(semver::VersionReq::parse(&semver_friendly(">= 18.0.0")).is_ok());
    }
}
