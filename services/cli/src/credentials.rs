//! The CLI's stored login: one JSON file in the user's config directory,
//! readable by its owner only.
//!
//! The file holds the server it belongs to, the access token and the refresh
//! token. It is written to a temporary file created with mode 0600 and renamed
//! over the old one, so a reader never sees half a file and the secret is never
//! world-readable, not even for a moment.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// What `reporunner login` stores.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    /// The server these tokens were issued by, e.g. `http://127.0.0.1:50051`.
    pub server: String,
    pub username: String,
    pub access_token: String,
    /// Unix seconds; 0 when unknown.
    #[serde(default)]
    pub access_expires_at: i64,
    pub refresh_token: String,
    #[serde(default)]
    pub refresh_expires_at: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("access_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &"<redacted>")
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

/// `$REPORUNNER_CREDENTIALS`, else `$XDG_CONFIG_HOME/reporunner/credentials.json`,
/// else `~/.config/reporunner/credentials.json`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("REPORUNNER_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let config_dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => anyhow::bail!(
                "neither HOME nor XDG_CONFIG_HOME is set; set REPORUNNER_CREDENTIALS to a file path"
            ),
        },
    };
    Ok(config_dir.join("reporunner").join("credentials.json"))
}

/// Reads the stored login; `None` when there is none.
pub fn load(path: &Path) -> anyhow::Result<Option<Credentials>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => anyhow::bail!("cannot read the stored login {}: {err}", path.display()),
    };
    let metadata = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read the stored login {}: {e}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "the stored login {} is readable by others (mode {:o}); run `chmod 600` on it or log in again",
            path.display(),
            metadata.permissions().mode() & 0o777
        );
    }
    serde_json::from_str(&text).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "the stored login {} is damaged ({e}); run `reporunner login` again",
            path.display()
        )
    })
}

/// Writes the login atomically with mode 0600 (its directory 0700).
pub fn store(path: &Path, credentials: &Credentials) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file path", path.display()))?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let body = serde_json::to_vec_pretty(credentials)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        // A file left by an older run may have kept wider permissions.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        anyhow::anyhow!("cannot store the login in {}: {e}", path.display())
    })
}

/// Removes the stored login; `false` when there was none.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => anyhow::bail!("cannot remove the stored login {}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            server: "http://127.0.0.1:50051".into(),
            username: "ada".into(),
            access_token: "access-secret".into(),
            access_expires_at: 10,
            refresh_token: "refresh-secret".into(),
            refresh_expires_at: 20,
        }
    }

    #[test]
    fn stored_login_is_owner_only_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/reporunner/credentials.json");
        store(&path, &sample()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load(&path).unwrap(), Some(sample()));
        assert!(remove(&path).unwrap());
        assert_eq!(load(&path).unwrap(), None);
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn an_existing_world_readable_file_is_tightened_on_store_and_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("readable by others"), "{err}");
        store(&path, &sample()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("secret"), "{shown}");
    }
}
