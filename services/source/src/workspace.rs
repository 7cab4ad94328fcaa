//! Content-addressed, user-owned workspaces: `<root>/<owner_id>/<hex>`.
//!
//! Work happens in `<root>/.staging/<random>`; a finished tree is renamed into
//! place atomically. When the target exists already, the staging tree is
//! discarded and the existing workspace reused.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    digest::TreeSummary,
    error::{Result, SourceError},
};

/// The staging directory name under the root (owner ids cannot start with '.').
pub const STAGING_DIR: &str = ".staging";
/// Longest accepted owner id.
pub const MAX_OWNER_ID_LEN: usize = 128;

/// Checks an owner id: non-empty, `[A-Za-z0-9_-]`, bounded.
pub fn validate_owner_id(owner_id: &str) -> Result<()> {
    if owner_id.is_empty() {
        return Err(SourceError::invalid("owner_id is empty"));
    }
    if owner_id.len() > MAX_OWNER_ID_LEN {
        return Err(SourceError::invalid(format!(
            "owner_id is longer than {MAX_OWNER_ID_LEN} characters"
        )));
    }
    if !owner_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(SourceError::invalid(format!(
            "owner_id {owner_id:?} may only contain letters, digits, '_' and '-'"
        )));
    }
    Ok(())
}

/// A directory under `<root>/.staging`, removed when dropped unless it was
/// moved into place.
#[derive(Debug)]
pub(crate) struct Staging {
    path: PathBuf,
    done: bool,
}

impl Staging {
    /// Creates `<staging_root>/<random>` (and `<random>.upload` for spools).
    pub(crate) fn create(staging_root: &Path) -> Result<Self> {
        let path = staging_root.join(uuid::Uuid::new_v4().simple().to_string());
        fs::create_dir(&path).map_err(|e| SourceError::io("create staging directory", &path, e))?;
        Ok(Self { path, done: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A sibling file for spooling an upload (removed with the staging dir).
    pub(crate) fn spool_path(&self) -> PathBuf {
        self.path.with_extension("upload")
    }

    /// Moves the tree to `<root>/<owner>/<hex>`; `Ok((path, reused))`.
    pub(crate) fn finish(
        mut self,
        root: &Path,
        owner_id: &str,
        summary: &TreeSummary,
    ) -> Result<(PathBuf, bool)> {
        let owner_dir = root.join(owner_id);
        fs::create_dir_all(&owner_dir)
            .map_err(|e| SourceError::io("create owner directory", &owner_dir, e))?;
        let target = owner_dir.join(&summary.hex);
        if fs::symlink_metadata(&target).is_ok() {
            return Ok((target, true));
        }
        match fs::rename(&self.path, &target) {
            Ok(()) => {
                self.done = true;
                Ok((target, false))
            }
            // Another fetch of the same content won the race.
            Err(_) if fs::symlink_metadata(&target).is_ok() => Ok((target, true)),
            Err(e) => Err(SourceError::io("move workspace into place", &target, e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let spool = self.spool_path();
        if spool.exists() {
            let _ = fs::remove_file(&spool);
        }
        if self.done {
            return;
        }
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot remove a staging directory");
            }
        }
    }
}

/// When a workspace directory was made (its modification time).
pub(crate) fn created_at(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_are_safe_path_components() {
        validate_owner_id("user_42-a").unwrap();
        for bad in ["", ".", "..", "a/b", ".staging", "a b", &"x".repeat(129)] {
            assert!(validate_owner_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn staging_is_removed_unless_finished() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::create(dir.path()).unwrap();
        let path = staging.path().to_path_buf();
        fs::write(path.join("f"), "x").unwrap();
        drop(staging);
        assert!(!path.exists());
    }
}
