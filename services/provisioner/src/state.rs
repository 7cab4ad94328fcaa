//! What was created for each run, one JSON file per run under the state
//! directory, written atomically (temporary file, fsync, rename), so that
//! Release after an agent restart still finds everything to remove.
//!
//! A resource is recorded *before* it is created, so a crash half-way leaves
//! an entry that Release cleans up (removal of something that does not exist
//! is not an error).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::error::{ProvisionError, Result};

/// Most state files read when counting private servers.
const MAX_STATE_FILES: usize = 10_000;
/// A state file larger than this is not read.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// What one resource is and how to remove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detail {
    /// A database and a role on the shared PostgreSQL server.
    PostgresReused { database: String, role: String },
    /// A private PostgreSQL cluster in `dir` (data in `dir/data`).
    PostgresPrivate {
        dir: PathBuf,
        bin_dir: PathBuf,
        port: u16,
        /// The account the server runs as, when the agent is root.
        user: Option<String>,
    },
    /// Logical database `db` of the shared Redis server.
    RedisReused { host: String, port: u16, db: u32 },
    /// A private redis-server on `port`, files in `dir`.
    RedisPrivate { dir: PathBuf, port: u16 },
    /// A private mysqld/mariadbd on `port`, files in `dir`.
    MysqlPrivate {
        dir: PathBuf,
        port: u16,
        user: Option<String>,
    },
}

impl Detail {
    /// Whether a private server process belongs to this resource.
    pub fn is_private_server(&self) -> bool {
        match self {
            Self::PostgresPrivate { .. } | Self::RedisPrivate { .. } | Self::MysqlPrivate { .. } => true,
            Self::PostgresReused { .. } | Self::RedisReused { .. } => false,
        }
    }

    /// The kind's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PostgresReused { .. } | Self::PostgresPrivate { .. } => "postgresql",
            Self::RedisReused { .. } | Self::RedisPrivate { .. } => "redis",
            Self::MysqlPrivate { .. } => "mysql",
        }
    }
}

/// One provisioned resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    pub detail: Detail,
}

/// Everything provisioned for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub resources: Vec<Resource>,
}

/// The state files of all runs.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `run_id` must have been validated (a single path segment).
    fn path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.json"))
    }

    /// The run's state; empty when nothing was provisioned.
    pub async fn load(&self, run_id: &str) -> Result<RunState> {
        let path = self.path(run_id);
        match read_bounded(&path).await? {
            None => Ok(RunState {
                run_id: run_id.to_owned(),
                resources: Vec::new(),
            }),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ProvisionError::Backend(format!("state file {} is corrupt: {e}", path.display()))
            }),
        }
    }

    /// Writes the run's state atomically; an empty state removes the file.
    pub async fn save(&self, state: &RunState) -> Result<()> {
        let path = self.path(&state.run_id);
        if state.resources.is_empty() {
            return match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ProvisionError::io(format!("removing {}", path.display()))(e))
                }
                _ => Ok(()),
            };
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(ProvisionError::io(format!("creating {}", self.dir.display())))?;
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| ProvisionError::Backend(format!("encoding state: {e}")))?;
        let tmp = self.dir.join(format!(".{}.json.tmp", state.run_id));
        let write = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(&bytes).await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &path).await?;
            // The rename itself is durable once the directory is synced.
            tokio::fs::File::open(&self.dir).await?.sync_all().await
        };
        write
            .await
            .map_err(ProvisionError::io(format!("writing {}", path.display())))
    }

    /// Private servers recorded across all runs.
    pub async fn count_private_servers(&self) -> Result<usize> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ProvisionError::io(format!("reading {}", self.dir.display()))(e)),
        };
        let mut count = 0;
        let mut files = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(ProvisionError::io(format!("reading {}", self.dir.display())))?
        {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            files += 1;
            if files > MAX_STATE_FILES {
                break;
            }
            let Ok(Some(bytes)) = read_bounded(&path).await else {
                continue;
            };
            if let Ok(state) = serde_json::from_slice::<RunState>(&bytes) {
                count += state
                    .resources
                    .iter()
                    .filter(|r| r.detail.is_private_server())
                    .count();
            }
        }
        Ok(count)
    }
}

async fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>> {
    let context = || format!("reading {}", path.display());
    match tokio::fs::metadata(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ProvisionError::io(context())(e)),
        Ok(meta) if meta.len() > MAX_STATE_BYTES => {
            return Err(ProvisionError::Backend(format!(
                "{} is too large",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProvisionError::io(context())(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn state_round_trips_and_empty_state_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        assert!(store.load("r1").await.unwrap().resources.is_empty());
        let state = RunState {
            run_id: "r1".into(),
            resources: vec![
                Resource {
                    id: "pg-1".into(),
                    detail: Detail::PostgresReused {
                        database: "rr_r1_ab".into(),
                        role: "rr_r1_ab".into(),
                    },
                },
                Resource {
                    id: "redis-1".into(),
                    detail: Detail::RedisPrivate {
                        dir: "/x".into(),
                        port: 7000,
                    },
                },
            ],
        };
        store.save(&state).await.unwrap();
        assert_eq!(store.load("r1").await.unwrap(), state);
        assert_eq!(store.count_private_servers().await.unwrap(), 1);
        store
            .save(&RunState {
                run_id: "r1".into(),
                resources: vec![],
            })
            .await
            .unwrap();
        assert!(!store.dir().join("r1.json").exists());
        assert_eq!(store.count_private_servers().await.unwrap(), 0);
    }
}
