//! What a Python environment provides, for diagnosis
//! (`InstallResult.packages`): each importable top-level module of its
//! site-packages with the distribution that ships it, as `Name==version`.
//! The resolver reads an `ImportError` of a module the code imports against
//! it, to name the distribution and its installed version.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// At most this many modules are reported.
pub const MAX_MODULES: usize = 5000;
/// At most this many distributions are read.
const MAX_DISTRIBUTIONS: usize = 2000;
/// At most this much of each `METADATA`, `top_level.txt` and `RECORD` is read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The modules of the venv at `venv`, by name. Unreadable parts are left out.
pub fn packages(venv: &Path) -> BTreeMap<String, String> {
    let mut modules = BTreeMap::new();
    for site in site_packages(venv) {
        let Ok(entries) = std::fs::read_dir(&site) else {
            continue;
        };
        let mut infos: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "dist-info"))
            .take(MAX_DISTRIBUTIONS)
            .collect();
        infos.sort();
        for info in infos {
            let Some(dist) = distribution(&info) else {
                continue;
            };
            for module in top_level(&info) {
                if modules.len() >= MAX_MODULES {
                    return modules;
                }
                modules.entry(module).or_insert_with(|| dist.clone());
            }
        }
    }
    modules
}

/// `<venv>/lib/python3.X/site-packages` (and `lib64`).
fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(venv.join(lib)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok).take(16) {
            let site = entry.path().join("site-packages");
            if entry.file_name().to_string_lossy().starts_with("python") && site.is_dir() {
                found.push(site);
            }
        }
    }
    found.sort();
    found.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
    found
}

fn read_bounded(path: &Path) -> Option<String> {
    crate::exec::read_bounded(path, MAX_FILE_BYTES)
}

/// `Name==version` from the distribution's `METADATA`.
fn distribution(info: &Path) -> Option<String> {
    let metadata = read_bounded(&info.join("METADATA"))?;
    let mut name = None;
    let mut version = None;
    for line in metadata.lines().take(200) {
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Name:") {
            name = Some(value.trim());
        } else if let Some(value) = line.strip_prefix("Version:") {
            version = Some(value.trim());
        }
    }
    let (name, version) = (name?, version?);
    let fine = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '!'))
    };
    (fine(name) && fine(version)).then(|| format!("{name}=={version}"))
}

/// The importable top-level modules a distribution ships: `top_level.txt`,
/// else the first part of each path its `RECORD` lists.
fn top_level(info: &Path) -> Vec<String> {
    let mut modules: Vec<String> = match read_bounded(&info.join("top_level.txt")) {
        Some(text) => text.lines().map(|l| l.trim().replace('/', ".")).collect(),
        None => read_bounded(&info.join("RECORD"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let path = line.split(',').next()?;
                let (first, rest) = path.split_once('/').unwrap_or((path, ""));
                if first.ends_with(".dist-info") || first.ends_with(".data") || first == ".." {
                    return None;
                }
                // A module file (`six.py`, `_cffi.cpython-311-x86_64-linux-gnu.so`)
                // or a package directory.
                let name = if rest.is_empty() {
                    first.split('.').next()?
                } else {
                    first
                };
                Some(name.to_owned())
            })
            .collect(),
    };
    modules.retain(|m| {
        !m.is_empty()
            && m != "__pycache__"
            && m.split('.').all(|part| {
                part.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    });
    modules.sort();
    modules.dedup();
    modules
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn dist(site: &Path, dir: &str, metadata: &str, files: &[(&str, &str)]) {
        let info = site.join(dir);
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(info.join("METADATA"), metadata).unwrap();
        for (name, text) in files {
            std::fs::write(info.join(name), text).unwrap();
        }
    }

    #[test]
    fn modules_are_named_with_their_distribution_and_version() {
        let venv = tempfile::tempdir().unwrap();
        let site = venv.path().join("lib/python3.11/site-packages");
        dist(
            &site,
            "wtforms-3.2.1.dist-info",
            "Metadata-Version: 2.4\nName: WTForms\nVersion: 3.2.1\n\nName: not-this\n",
            &[(
                "RECORD",
                "wtforms/__init__.py,sha256=x,1\nwtforms/locale/de/x.mo,,\nwtforms-3.2.1.dist-info/METADATA,,\n",
            )],
        );
        dist(
            &site,
            "PyYAML-6.0.2.dist-info",
            "Name: PyYAML\nVersion: 6.0.2\n",
            &[("top_level.txt", "_yaml\nyaml\n")],
        );
        dist(
            &site,
            "six-1.16.0.dist-info",
            "Name: six\nVersion: 1.16.0\n",
            &[(
                "RECORD",
                "six.py,sha256=x,1\n__pycache__/six.cpython-311.pyc,,\n../../../bin/x,,\n",
            )],
        );
        dist(&site, "broken-1.dist-info", "Name: broken\n", &[]);
        let packages = packages(venv.path());
        assert_eq!(packages["wtforms"], "WTForms==3.2.1");
        assert_eq!(packages["yaml"], "PyYAML==6.0.2");
        assert_eq!(packages["_yaml"], "PyYAML==6.0.2");
        assert_eq!(packages["six"], "six==1.16.0");
        assert_eq!(packages.len(), 4, "{packages:?}");
    }

    #[test]
    fn a_missing_venv_provides_nothing() {
        assert!(packages(Path::new("/nonexistent/venv")).is_empty());
    }
}
