//! What the host has: executables on a PATH ([`which`]) and pyenv's
//! installed interpreters ([`pyenv`]). Shared by the agents that look, so
//! that they agree on what is installed.
#![forbid(unsafe_code)]

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

/// PATH entries looked at, at most.
pub const MAX_PATH_DIRS: usize = 256;

/// The first executable called `name` in `path` (a PATH-style list), like
/// `which`; relative entries are skipped.
pub fn which(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .take(MAX_PATH_DIRS)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file (following links) someone may execute.
pub fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// The interpreter a virtual environment's `python` stands for: `path` is
/// `<venv>/bin/python3[.N]` of a venv (`<venv>/pyvenv.cfg` names its base
/// interpreter's directory as `home`), so the base interpreter of that
/// version in `home`; `None` when `path` is not in a venv or the base is not
/// there. A venv is somebody's environment with their packages (and often
/// under a directory the sandbox hides): never the interpreter to build an
/// app's own environment from.
pub fn venv_base(path: &Path) -> Option<PathBuf> {
    let venv = path.parent()?.parent()?;
    let config = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    let field = |key: &str| {
        config.lines().take(64).find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    let home = PathBuf::from(field("home")?);
    if !home.is_absolute() {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let version = field("version").or_else(|| field("version_info"));
    let minor = version.as_deref().and_then(|v| {
        let mut parts = v.split('.');
        Some(format!("python{}.{}", parts.next()?, parts.next()?))
    });
    // The same name first (python3.11 for python3.11), then the venv's
    // version, then python3.
    [Some(name.to_owned()), minor, Some("python3".to_owned())]
        .into_iter()
        .flatten()
        .map(|candidate| home.join(candidate))
        .find(|candidate| is_executable(candidate) && !candidate.starts_with(venv))
}

pub mod pyenv {
    //! pyenv's installed CPython versions. Its versioned shims
    //! (`python3.12`) fail unless that version is selected, so callers look
    //! at the installed versions themselves.

    use std::{
        collections::BTreeMap,
        ffi::OsStr,
        path::{Path, PathBuf},
    };

    use crate::{MAX_PATH_DIRS, is_executable};

    /// Entries of `versions/` looked at, at most.
    pub const MAX_VERSIONS: usize = 64;

    /// One installed CPython version.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Installed {
        /// `(3, minor, patch)`.
        pub version: (u64, u64, u64),
        /// `<root>/versions/3.N.P`.
        pub dir: PathBuf,
    }

    impl Installed {
        /// `bin/python3.N` under [`Installed::dir`].
        pub fn versioned_exe(&self) -> PathBuf {
            self.dir.join("bin").join(self.versioned_name())
        }

        /// `bin/python3` under [`Installed::dir`].
        pub fn python3(&self) -> PathBuf {
            self.dir.join("bin/python3")
        }

        /// `python3.N`.
        pub fn versioned_name(&self) -> String {
            format!("python3.{}", self.version.1)
        }
    }

    /// `$PYENV_ROOT`, else `~/.pyenv` (whether or not it exists).
    pub fn root() -> Option<PathBuf> {
        std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
    }

    /// Whether `path` (a PATH-style list) holds `root`'s `shims` or `bin`:
    /// pyenv is in use there.
    pub fn on_path(root: &Path, path: &OsStr) -> bool {
        std::env::split_paths(path)
            .take(MAX_PATH_DIRS)
            .any(|dir| dir == root.join("shims") || dir == root.join("bin"))
    }

    /// Every plain CPython version installed under `root` (`3.N.P`; not
    /// `pypy3.10-7.3`, `3.12-dev` or virtualenvs), whose `bin/python3.N` is
    /// executable, newest first.
    pub fn installed(root: &Path) -> Vec<Installed> {
        let Ok(entries) = std::fs::read_dir(root.join("versions")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.take(MAX_VERSIONS).flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Exactly three numbers: "3.12.1", not "3.12-dev" nor "3.11.2.1".
            let numbers: Vec<u64> = name.split('.').map_while(|p| p.parse().ok()).collect();
            let [3, minor, patch] = numbers[..] else {
                continue;
            };
            if name.split('.').count() != 3 {
                continue;
            }
            let found = Installed {
                version: (3, minor, patch),
                dir: entry.path(),
            };
            if is_executable(&found.versioned_exe()) {
                out.push(found);
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.version));
        out
    }

    /// `python3.N` → its executable, for the newest patch release of each
    /// minor installed under `root`.
    pub fn newest_per_minor(root: &Path) -> BTreeMap<String, PathBuf> {
        let mut newest = BTreeMap::new();
        // `installed` is newest first: the first of each minor wins.
        for found in installed(root) {
            newest
                .entry(found.versioned_name())
                .or_insert_with(|| found.versioned_exe());
        }
        newest
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{collections::BTreeMap, os::unix::fs::PermissionsExt as _};

    use super::*;

    fn executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn which_finds_the_first_executable_and_skips_relative_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("tool"), "not executable").unwrap();
        executable(&b.join("tool"));
        let path = std::env::join_paths(["relative", a.to_str().unwrap(), b.to_str().unwrap()]).unwrap();
        assert_eq!(which("tool", &path), Some(b.join("tool")));
        assert_eq!(which("missing", &path), None);
        assert!(!is_executable(&a.join("tool")));
        assert!(!is_executable(&a), "a directory is not an executable");
        assert_eq!(which("tool", OsStr::new("")), None);
    }

    #[test]
    fn pyenv_lists_plain_cpython_versions_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let make = |version: &str, name: &str| {
            let exe = root.path().join("versions").join(version).join("bin").join(name);
            executable(&exe);
            exe
        };
        make("3.12.0", "python3.12");
        let newest = make("3.12.1", "python3.12");
        let nine = make("3.9.18", "python3.9");
        make("pypy3.10-7.3.12", "python3.10");
        make("3.13-dev", "python3.13");
        make("3.11.2.1", "python3.11");
        std::fs::create_dir_all(root.path().join("versions/3.8.1/bin")).unwrap();
        let all = pyenv::installed(root.path());
        let versions: Vec<_> = all.iter().map(|i| i.version).collect();
        assert_eq!(versions, [(3, 12, 1), (3, 12, 0), (3, 9, 18)]);
        assert_eq!(all[0].python3(), root.path().join("versions/3.12.1/bin/python3"));
        assert_eq!(
            pyenv::newest_per_minor(root.path()),
            BTreeMap::from([("python3.12".to_owned(), newest), ("python3.9".to_owned(), nine)])
        );
        assert!(pyenv::installed(&root.path().join("missing")).is_empty());
    }

    #[test]
    fn pyenv_is_on_a_path_through_its_shims_or_bin() {
        let root = Path::new("/home/u/.pyenv");
        let with = std::env::join_paths(["/usr/bin", "/home/u/.pyenv/shims"]).unwrap();
        assert!(pyenv::on_path(root, &with));
        assert!(!pyenv::on_path(root, OsStr::new("/usr/bin:/bin")));
    }

    #[test]
    fn a_venvs_python_stands_for_its_base_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base/bin");
        std::fs::create_dir_all(&base).unwrap();
        for name in ["python3", "python3.11"] {
            std::fs::write(base.join(name), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(base.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(
            venv.join("pyvenv.cfg"),
            format!(
                "home = {}\ninclude-system-site-packages = false\nversion = 3.11.7\n",
                base.display()
            ),
        )
        .unwrap();
        assert_eq!(
            super::venv_base(&venv.join("bin/python3")),
            Some(base.join("python3"))
        );
        assert_eq!(
            super::venv_base(&venv.join("bin/python")),
            Some(base.join("python3.11"))
        );
        // Not a venv: nothing to resolve.
        assert_eq!(super::venv_base(&base.join("python3")), None);
    }
}
