//! Copies a local directory into a workspace.
//!
//! The walk honours `.gitignore` files in a git work tree (as git does: a
//! tree without `.git`, such as an unpacked release or a copied checkout,
//! keeps every file, as its archive would; a project may track files its
//! `.gitignore` matches, and they are part of it), and `.ignore` files
//! always; it leaves `.git` out and skips dependency and build directories
//! (`node_modules`, `target`, `.venv`, `venv`, `__pycache__`) wherever they
//! are. Symlinks are never followed: one
//! is copied as a symlink when its target stays inside the tree, else skipped
//! with a warning. Sockets, fifos and devices are skipped.
//!
//! Which paths may be copied is [`LocalPolicy`]: none unless
//! `allowed_local_roots` names where from; never the forbidden roots (the
//! server's data directory), the workspace root or `/proc`, `/sys`, `/dev`,
//! checked on the path as given and again once resolved, before anything is
//! created; a copy of a directory above one of them leaves it out.

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

/// Where the kernel's pseudo-filesystems live: nothing there is a repository,
/// and walking them reads live process and device state.
const PSEUDO_ROOTS: &[&str] = &["/proc", "/sys", "/dev"];

/// Where local copies may come from, from the configuration. Every root is
/// kept as configured and as resolved, so that a path is checked both as
/// given (before the filesystem is touched, so a refusal says nothing about
/// what exists) and once its symlinks are resolved.
#[derive(Clone, Debug)]
pub(crate) struct LocalPolicy {
    /// `None`: no local path is allowed. An allowed root that does not
    /// resolve is left out: it allows nothing.
    allowed: Option<Vec<PathBuf>>,
    /// The forbidden roots; a root that does not resolve (yet) is kept as
    /// configured.
    forbidden: Vec<PathBuf>,
    /// The canonical workspace root.
    workspace_root: PathBuf,
}

impl LocalPolicy {
    /// `workspace_root` must be canonical; the roots must be absolute.
    pub(crate) fn new(allowed: &[PathBuf], forbidden: &[PathBuf], workspace_root: &Path) -> Self {
        let mut allowed_forms = Vec::new();
        for root in allowed {
            match fs::canonicalize(root) {
                Ok(canonical) => {
                    allowed_forms.push(root.clone());
                    allowed_forms.push(canonical);
                }
                Err(err) => {
                    tracing::warn!(path = %root.display(), error = %err, "an allowed local root does not resolve");
                }
            }
        }
        let mut forbidden_forms = Vec::new();
        for root in forbidden {
            forbidden_forms.push(root.clone());
            if let Ok(canonical) = fs::canonicalize(root) {
                forbidden_forms.push(canonical);
            }
        }
        Self {
            allowed: (!allowed.is_empty()).then_some(allowed_forms),
            forbidden: forbidden_forms,
            workspace_root: workspace_root.to_path_buf(),
        }
    }

    /// What a copy leaves out wherever it meets it: the forbidden roots, the
    /// workspace root and the pseudo-filesystems.
    pub(crate) fn excluded(&self) -> Vec<PathBuf> {
        let mut excluded = self.forbidden.clone();
        excluded.push(self.workspace_root.clone());
        excluded.extend(PSEUDO_ROOTS.iter().map(PathBuf::from));
        excluded
    }

    /// Resolves and checks the path a client asked to copy: its canonical
    /// form, or why it is refused. Nothing is read before the path as given
    /// passes the policy.
    pub(crate) fn resolve(&self, path: &Path) -> Result<PathBuf> {
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
        self.check(path, path)?;
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
        self.check(path, &canonical)?;
        if !canonical.is_dir() {
            return Err(SourceError::invalid(format!(
                "local path {} is not a directory",
                path.display()
            )));
        }
        Ok(canonical)
    }

    /// Checks `form` (the path as given, or resolved) against the policy;
    /// messages name the path as the client gave it.
    fn check(&self, given: &Path, form: &Path) -> Result<()> {
        if PSEUDO_ROOTS.iter().any(|root| form.starts_with(root)) {
            return Err(SourceError::invalid(format!(
                "local path {} is not a repository directory",
                given.display()
            )));
        }
        let Some(allowed) = &self.allowed else {
            return Err(SourceError::LocalPathsDisabled);
        };
        let refuse = |reason: &str| {
            Err(SourceError::PathNotAllowed {
                path: given.to_path_buf(),
                reason: reason.into(),
            })
        };
        if form.starts_with(&self.workspace_root) {
            return refuse("it lies inside the workspace root");
        }
        if self.forbidden.iter().any(|root| form.starts_with(root)) {
            return refuse(
                "it lies inside a directory this server keeps its own data in (source.forbidden_local_roots)",
            );
        }
        if !allowed.iter().any(|root| form.starts_with(root)) {
            return refuse("it is outside every allowed local root (source.allowed_local_roots)");
        }
        Ok(())
    }
}

/// Copies `source` (canonical, a directory) through `writer`, leaving out
/// every directory in `exclude` it meets (see [`LocalPolicy::excluded`]).
pub(crate) fn copy_tree(source: &Path, exclude: Vec<PathBuf>, writer: &mut TreeWriter) -> Result<()> {
    let walk = ignore::WalkBuilder::new(source)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .git_exclude(false)
        .git_ignore(true)
        .ignore(true)
        .require_git(true)
        .follow_links(false)
        .same_file_system(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| {
            let name = entry.file_name().to_string_lossy();
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            let skipped = is_dir && SKIPPED_DIRS.contains(&name.as_ref());
            let excluded = exclude.iter().any(|excluded| entry.path() == excluded);
            !(skipped || excluded)
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
            if let Ok(modified) = input.metadata().and_then(|m| m.modified()) {
                writer.saw_time(modified);
            }
            writer.file(&shown, &rel, &mut input, executable)?;
        } else {
            tracing::warn!(file = %shown, "skipping a socket, fifo or device file");
        }
    }
    Ok(())
}
