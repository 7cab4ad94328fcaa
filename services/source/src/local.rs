//! Copies a local directory into a workspace.
//!
//! The walk honours `.gitignore` and `.ignore` files, leaves `.git` out and
//! skips dependency and build directories (`node_modules`, `target`, `.venv`,
//! `venv`, `__pycache__`) wherever they are. Symlinks are never followed: one
//! is copied as a symlink when its target stays inside the tree, else skipped
//! with a warning. Sockets, fifos and devices are skipped.

use std::{
    fs,
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
};

use crate::{
    error::{Result, SourceError},
    tree::{GIT_DIR, TreeWriter, is_executable, symlink_target_is_inside},
};

/// Directory names never copied, ignored or not.
pub const SKIPPED_DIRS: &[&str] = &[GIT_DIR, "node_modules", "target", ".venv", "venv", "__pycache__"];

/// Resolves and checks the path a client asked to copy.
///
/// `allowed` (`None`: any path) and `workspace_root` must be canonical.
pub(crate) fn resolve(path: &Path, allowed: Option<&[PathBuf]>, workspace_root: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(SourceError::invalid("local path is empty"));
    }
    if !path.is_absolute() {
        return Err(SourceError::invalid(format!(
            "local path {} must be absolute",
            path.display()
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(SourceError::invalid(format!(
            "local path {} must not contain '..'",
            path.display()
        )));
    }
    let canonical = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::PathNotFound(path.to_path_buf()));
        }
        Err(e) => {
            return Err(SourceError::PathNotAllowed {
                path: path.to_path_buf(),
                reason: format!("it cannot be read ({})", e.kind()),
            });
        }
    };
    if !canonical.is_dir() {
        return Err(SourceError::invalid(format!(
            "local path {} is not a directory",
            path.display()
        )));
    }
    if canonical.starts_with(workspace_root) {
        return Err(SourceError::PathNotAllowed {
            path: path.to_path_buf(),
            reason: "it lies inside the workspace root".into(),
        });
    }
    if let Some(allowed) = allowed
        && !allowed.iter().any(|root| canonical.starts_with(root))
    {
        return Err(SourceError::PathNotAllowed {
            path: path.to_path_buf(),
            reason: "it is outside every allowed local root".into(),
        });
    }
    Ok(canonical)
}

/// Copies `source` (canonical, a directory) through `writer`, leaving out
/// `exclude` (the workspace root, when it lies inside `source`).
pub(crate) fn copy_tree(source: &Path, exclude: &Path, writer: &mut TreeWriter) -> Result<()> {
    let exclude = exclude.to_path_buf();
    let walk = ignore::WalkBuilder::new(source)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .git_exclude(false)
        .git_ignore(true)
        .ignore(true)
        .require_git(false)
        .follow_links(false)
        .same_file_system(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| {
            let name = entry.file_name().to_string_lossy();
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            !(is_dir && SKIPPED_DIRS.contains(&name.as_ref())) && entry.path() != exclude
        })
        .build();
    for item in walk {
        writer.check_deadline()?;
        let entry = match item {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(error = %err, "skipping an unreadable part of a local copy");
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path();
        let Ok(rel_path) = path.strip_prefix(source) else {
            continue;
        };
        let shown = rel_path.to_string_lossy().into_owned();
        let Some(rel) = rel_path
            .components()
            .map(|c| {
                std::str::from_utf8(c.as_os_str().as_bytes())
                    .ok()
                    .map(str::to_owned)
            })
            .collect::<Option<Vec<String>>>()
        else {
            tracing::warn!(file = %shown, "skipping a file whose name is not UTF-8");
            continue;
        };
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            writer.dir(&shown, &rel)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(|e| SourceError::io("read link", path, e))?;
            match target.to_str() {
                Some(t) if symlink_target_is_inside(rel.len() - 1, t) => writer.symlink(&shown, &rel, t)?,
                _ => tracing::warn!(
                    file = %shown,
                    target = %target.display(),
                    "skipping a symlink that points outside the copied tree"
                ),
            }
        } else if file_type.is_file() {
            let executable = is_executable(path)?;
            let mut input = match fs::File::open(path) {
                Ok(f) => f,
                Err(err) => {
                    tracing::warn!(file = %shown, error = %err, "skipping an unreadable file");
                    continue;
                }
            };
            writer.file(&shown, &rel, &mut input, executable)?;
        } else {
            tracing::warn!(file = %shown, "skipping a socket, fifo or device file");
        }
    }
    Ok(())
}
