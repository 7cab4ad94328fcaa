//! [`MeshKey`]: the secret service tokens are signed with, and where it comes from.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::IdentityError;

/// The shortest mesh key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;
/// The mesh key's file under the data directory, when `mesh.service_key_file`
/// is not set and the node hosts only some services.
pub const SERVICE_KEY_FILE: &str = "service.key";

/// The HS256 secret only services hold. Cheap to clone; never printed.
#[derive(Clone)]
pub struct MeshKey(Arc<[u8]>);

impl std::fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshKey(<redacted>)")
    }
}

impl MeshKey {
    /// A fresh random key (for a node that hosts every service it calls).
    pub fn generate() -> Self {
        let mut key = vec![0u8; MIN_KEY_LEN];
        rand::fill(&mut key[..]);
        Self(key.into())
    }

    /// The key in the file at `path`, which must exist.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let file = std::fs::File::open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                IdentityError::MissingKeyFile {
                    path: path.to_path_buf(),
                }
            } else {
                IdentityError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        read_key(file, path)
    }

    /// The key in the file at `path`, created (mode 0600, random bytes) when
    /// missing. Two processes racing here end up with the same key: the file
    /// is created with `create_new`, and the loser reads the winner's.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                let key = Self::generate();
                file.write_all(&key.0).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), "generated a new mesh key");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io(e)),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

fn read_key(file: std::fs::File, path: &Path) -> Result<MeshKey, IdentityError> {
    let mut key = Vec::with_capacity(MIN_KEY_LEN);
    file.take(4096)
        .read_to_end(&mut key)
        .map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if key.len() < MIN_KEY_LEN {
        // A file written by a person with `echo` may have been created
        // before the random bytes were in it: refuse rather than sign with it.
        return Err(IdentityError::KeyTooShort {
            path: path.to_path_buf(),
            len: key.len(),
        });
    }
    Ok(MeshKey(key.into()))
}

/// The `[mesh]` settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// The mesh key's file (`REPORUNNER_MESH__SERVICE_KEY_FILE`), e.g. a
    /// mounted Kubernetes Secret. Set, it must exist.
    pub service_key_file: Option<PathBuf>,
}

impl MeshConfig {
    /// The key of a node over `data_dir`: `service_key_file` when set; else a
    /// random one per start when the node hosts every service (`self_contained`),
    /// since nothing outside it calls its agents; else `<data_dir>/service.key`,
    /// created when missing, so the nodes of one data directory share it.
    pub fn key(&self, data_dir: &Path, self_contained: bool) -> Result<MeshKey, IdentityError> {
        match &self.service_key_file {
            Some(path) => MeshKey::load(path),
            None if self_contained => Ok(MeshKey::generate()),
            None => MeshKey::load_or_create(&data_dir.join(SERVICE_KEY_FILE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_data_dir_shares_one_private_key_and_a_configured_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let config = MeshConfig::default();
        let first = config.key(dir.path(), false).unwrap();
        let second = config.key(dir.path(), false).unwrap();
        assert_eq!(first.bytes(), second.bytes());
        assert!(first.bytes().len() >= MIN_KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SERVICE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Self-contained nodes never touch the file and differ per start.
        let a = config.key(dir.path(), true).unwrap();
        let b = config.key(dir.path(), true).unwrap();
        assert_ne!(a.bytes(), b.bytes());
        assert_ne!(a.bytes(), first.bytes());

        let missing = MeshConfig {
            service_key_file: Some(dir.path().join("nope.key")),
        };
        let err = missing.key(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("mesh.service_key_file"), "{err}");
        std::fs::write(dir.path().join("short.key"), b"too short").unwrap();
        let short = MeshConfig {
            service_key_file: Some(dir.path().join("short.key")),
        };
        let err = short.key(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert_eq!(format!("{first:?}"), "MeshKey(<redacted>)");
    }
}
