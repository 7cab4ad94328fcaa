//! The indexing service's settings: where indexes and models live, what the
//! walk skips, how files are chunked, and how vectors are searched.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};

/// Settings of the indexing service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexerConfig {
    /// One directory per index, `<index_dir>/<owner_id>/<workspace_id>/`.
    /// Relative paths are resolved against the data directory by
    /// [`IndexerConfig::resolve`].
    pub index_dir: PathBuf,
    /// Installed embedding models, one directory per model
    /// (`<models_dir>/<name>/{config.json,tokenizer.json,model.safetensors}`).
    pub models_dir: PathBuf,
    /// The model used when a request names none.
    pub default_model: String,
    /// Model tiers: a request may name a tier ("small") instead of a model.
    pub model_tiers: BTreeMap<String, String>,
    /// Files larger than this are not indexed.
    pub max_file_bytes: u64,
    /// Files one index may hold; more is RESOURCE_EXHAUSTED.
    pub max_files: u64,
    /// Bytes of indexable files one index may hold.
    pub max_total_bytes: u64,
    /// Lines of a fallback window, and the overlap of two windows.
    pub window_lines: usize,
    pub window_overlap: usize,
    /// A function or class longer than this is cut into windows.
    pub max_chunk_lines: usize,
    /// Chunks embedded per batch.
    pub embed_batch: usize,
    /// Tokens per embedded chunk (longer chunks are truncated).
    pub max_tokens: usize,
    /// Below this many vectors, search is exact (a scan), which is as fast as
    /// the trees at that size and has recall 1.
    pub exact_search_below: u64,
    /// arroy's `search_k` as a multiple of `limit × n_trees`.
    pub search_k_factor: usize,
    /// The Hugging Face hub models are fetched from.
    pub hub_url: String,
    /// Where workspaces may lie (the source agent's root); a workspace_path
    /// elsewhere is refused. Empty: anywhere (library use; the node sets it).
    pub workspace_roots: Vec<PathBuf>,
    /// Deadline of fetching one model (all files).
    #[serde(with = "humantime_serde")]
    pub hub_timeout: Duration,
    /// Deadline of reaching the hub at all.
    #[serde(with = "humantime_serde")]
    pub hub_connect_timeout: Duration,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            index_dir: PathBuf::from("indexes"),
            models_dir: PathBuf::from("models"),
            default_model: "all-MiniLM-L6-v2".into(),
            model_tiers: BTreeMap::from([
                ("small".into(), "all-MiniLM-L6-v2".into()),
                ("base".into(), "all-MiniLM-L12-v2".into()),
                ("large".into(), "bge-base-en-v1.5".into()),
            ]),
            max_file_bytes: 1024 * 1024,
            max_files: 50_000,
            max_total_bytes: 512 * 1024 * 1024,
            window_lines: 40,
            window_overlap: 10,
            max_chunk_lines: 120,
            embed_batch: 32,
            max_tokens: 256,
            exact_search_below: 20_000,
            search_k_factor: 2,
            hub_url: "https://huggingface.co".into(),
            workspace_roots: Vec::new(),
            hub_timeout: Duration::from_secs(300),
            hub_connect_timeout: Duration::from_secs(5),
        }
    }
}

impl IndexerConfig {
    /// Makes relative directories relative to the service's data directory.
    #[must_use]
    pub fn resolve(mut self, data_dir: &Path) -> Self {
        if self.index_dir.is_relative() {
            self.index_dir = data_dir.join(&self.index_dir);
        }
        if self.models_dir.is_relative() {
            self.models_dir = data_dir.join(&self.models_dir);
        }
        self
    }

    pub fn hub_timeout(&self) -> Duration {
        self.hub_timeout
    }

    pub fn hub_connect_timeout(&self) -> Duration {
        self.hub_connect_timeout
    }

    /// The model a request's `model` field names: a tier, a model, or the
    /// default when empty.
    pub fn model_name<'a>(&'a self, requested: &'a str) -> &'a str {
        let requested = requested.trim();
        if requested.is_empty() {
            return &self.default_model;
        }
        self.model_tiers.get(requested).map_or(requested, String::as_str)
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(IndexError::InvalidConfig(what));
        for (name, dir) in [("index_dir", &self.index_dir), ("models_dir", &self.models_dir)] {
            if !dir.is_absolute() {
                return invalid(format!(
                    "{name} `{}` must be absolute (resolve it against the data directory first)",
                    dir.display()
                ));
            }
        }
        if self.window_lines < 2 || self.window_overlap >= self.window_lines {
            return invalid("window_lines must be at least 2 and window_overlap below it".into());
        }
        if self.max_chunk_lines < self.window_lines {
            return invalid("max_chunk_lines must be at least window_lines".into());
        }
        if self.embed_batch == 0 || self.embed_batch > 1024 {
            return invalid("embed_batch must lie within 1..=1024".into());
        }
        if !(8..=8192).contains(&self.max_tokens) {
            return invalid("max_tokens must lie within 8..=8192".into());
        }
        if self.max_file_bytes == 0 || self.max_files == 0 || self.max_total_bytes == 0 {
            return invalid("max_file_bytes, max_files and max_total_bytes must be positive".into());
        }
        if self.search_k_factor == 0 {
            return invalid("search_k_factor must be at least 1".into());
        }
        if self.hub_timeout.is_zero() || self.hub_connect_timeout.is_zero() {
            return invalid("hub_timeout and hub_connect_timeout must be above zero".into());
        }
        if crate::model_name::validate_name(&self.default_model).is_err() {
            return invalid(format!(
                "default_model `{}` is not a model name",
                self.default_model
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_resolve_and_validate() {
        let config = IndexerConfig::default().resolve(Path::new("/var/lib/rr"));
        assert_eq!(config.index_dir, Path::new("/var/lib/rr/indexes"));
        assert_eq!(config.models_dir, Path::new("/var/lib/rr/models"));
        config.validate().unwrap();
        assert!(IndexerConfig::default().validate().is_err(), "relative dirs");
    }

    #[test]
    fn tiers_name_models() {
        let config = IndexerConfig::default();
        assert_eq!(config.model_name(""), "all-MiniLM-L6-v2");
        assert_eq!(config.model_name("small"), "all-MiniLM-L6-v2");
        assert_eq!(config.model_name("large"), "bge-base-en-v1.5");
        assert_eq!(config.model_name("my-model"), "my-model");
    }

    #[test]
    fn nonsense_is_refused() {
        let base = IndexerConfig::default().resolve(Path::new("/d"));
        let bad = IndexerConfig {
            window_overlap: 40,
            ..base.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("window_overlap"));
        let bad = IndexerConfig {
            embed_batch: 0,
            ..base
        };
        assert!(bad.validate().unwrap_err().to_string().contains("embed_batch"));
    }
}
