//! What an index holds, file by file, so that re-indexing touches only
//! changed files: `<index>/manifest.json`, written atomically.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};

pub const FILE_NAME: &str = "manifest.json";

/// One indexed file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// SHA-256 of the content, hex.
    pub hash: String,
    pub size: u64,
    pub language: String,
    /// The item ids of its chunks (text documents and vectors share them).
    pub items: Vec<u32>,
}

/// One index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub owner_id: String,
    pub workspace_id: String,
    pub workspace_path: String,
    /// Whether the chunks also have vectors (of `model`, `dim` wide).
    pub vectors: bool,
    pub model: String,
    pub dim: usize,
    pub files: BTreeMap<String, FileEntry>,
    pub next_item: u32,
    pub updated_at_unix_ms: i64,
}

impl Manifest {
    pub fn chunks(&self) -> u64 {
        self.files.values().map(|f| f.items.len() as u64).sum()
    }

    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IndexError::Backend(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IndexError::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let bytes = serde_json::to_vec(self).map_err(|e| IndexError::Backend(format!("manifest: {e}")))?;
        std::fs::write(&tmp, bytes).map_err(IndexError::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(IndexError::io(format!("writing {}", path.display())))
    }
}
