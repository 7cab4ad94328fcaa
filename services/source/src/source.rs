//! [`Source`], the source agent's implementation of [`SourceAgent`].

use std::{
    fs,
    path::{Path, PathBuf},
    pin::pin,
    sync::Arc,
    time::{Instant, SystemTime},
};

use futures::{Stream, StreamExt};
use reporunner_proto::common::v1::Workspace;
use tokio::{io::AsyncWriteExt, sync::Semaphore};

use crate::{
    FetchSpec, Fetched, SourceAgent, SourceSpec, UploadSpec,
    config::{Limits, SourceConfig},
    digest::{TreeSummary, scan},
    error::{Result, SourceError},
    extract, git,
    local::{self, LocalPolicy},
    metrics,
    tree::{GIT_DIR, TreeWriter},
    workspace::{STAGING_DIR, Staging, created_at, validate_owner_id},
};

/// The source agent: fetches git URLs and local paths and extracts uploads
/// into `<root>/<owner_id>/<hex digest>`.
#[derive(Debug)]
pub struct Source {
    config: SourceConfig,
    /// `config.root`, canonical.
    root: PathBuf,
    staging_root: PathBuf,
    /// Where local copies may come from.
    local: Arc<LocalPolicy>,
    permits: Arc<Semaphore>,
}

impl Source {
    /// Validates `config` and creates the root and its staging directory.
    pub fn new(config: SourceConfig) -> Result<Self> {
        config.validate()?;
        fs::create_dir_all(&config.root).map_err(|e| SourceError::io("create", &config.root, e))?;
        let root = fs::canonicalize(&config.root).map_err(|e| SourceError::io("resolve", &config.root, e))?;
        let staging_root = root.join(STAGING_DIR);
        fs::create_dir_all(&staging_root).map_err(|e| SourceError::io("create", &staging_root, e))?;
        let local = Arc::new(LocalPolicy::new(
            &config.allowed_local_roots,
            &config.forbidden_local_roots,
            &root,
        ));
        remove_stale_staging(&staging_root, config.max_limits.timeout_seconds);
        let permits = Arc::new(Semaphore::new(config.max_concurrent_fetches));
        Ok(Self {
            config,
            root,
            staging_root,
            local,
            permits,
        })
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The canonical workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn permit(&self, limits: &Limits, deadline: Instant) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let acquire = Arc::clone(&self.permits).acquire_owned();
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(SourceError::GitUnavailable(
                "the source agent is shutting down".into(),
            )),
            Err(_) => Err(SourceError::Timeout(limits.timeout.as_secs())),
        }
    }

    async fn fetch_git(
        &self,
        owner_id: String,
        url: String,
        reference: String,
        limits: Limits,
        deadline: Instant,
    ) -> Result<Fetched> {
        let staging = Staging::create(&self.staging_root)?;
        let git = git::Git {
            binary: self.config.git_binary.clone(),
            allow_file: self.config.allow_file_urls,
            timeout_secs: limits.timeout.as_secs(),
            deadline,
        };
        let commit = match git.clone(&url, &reference, staging.path()).await {
            Ok(commit) => commit,
            Err(err) => {
                // A partial clone can be large: remove it off the async threads.
                let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
                return Err(err);
            }
        };
        let content_time = git.commit_time(staging.path()).await;
        let origin = if reference.is_empty() {
            git::redact_url(&url)
        } else {
            format!("{}#{reference}", git::redact_url(&url))
        };
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let dot_git = staging.path().join(GIT_DIR);
            fs::remove_dir_all(&dot_git).map_err(|e| SourceError::io("remove", &dot_git, e))?;
            let summary = scan(staging.path(), &limits, deadline)?;
            finish(
                staging,
                &root,
                &owner_id,
                &summary,
                (origin, commit),
                content_time,
            )
        })
        .await?
    }

    async fn fetch_local(
        &self,
        owner_id: String,
        path: PathBuf,
        limits: Limits,
        deadline: Instant,
    ) -> Result<Fetched> {
        let root = self.root.clone();
        let policy = Arc::clone(&self.local);
        let staging_root = self.staging_root.clone();
        tokio::task::spawn_blocking(move || {
            // Checked before anything is created: a refusal leaves no trace.
            let source = policy.resolve(&path)?;
            let staging = Staging::create(&staging_root)?;
            let mut writer = TreeWriter::new(staging.path().to_path_buf(), "file", limits, deadline, None);
            local::copy_tree(&source, policy.excluded(), &mut writer)?;
            let summary = scan(staging.path(), &limits, deadline)?;
            let origin = source.display().to_string();
            finish(
                staging,
                &root,
                &owner_id,
                &summary,
                (origin, String::new()),
                writer.newest(),
            )
        })
        .await?
    }
}

/// Removes staging leftovers of crashed processes: anything older than the
/// longest possible fetch (plus a margin), so replicas sharing the root never
/// lose work in progress. Best effort.
fn remove_stale_staging(staging_root: &Path, max_timeout_secs: u32) {
    let Ok(entries) = fs::read_dir(staging_root) else {
        return;
    };
    let max_age = std::time::Duration::from_secs(u64::from(max_timeout_secs) + 600);
    for entry in entries.flatten().take(100_000) {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        if age < max_age {
            continue;
        }
        let removed = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale staging entry"),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove a stale staging entry")
            }
        }
    }
}

/// Moves a scanned tree into place and describes it.
fn finish(
    staging: Staging,
    root: &Path,
    owner_id: &str,
    summary: &TreeSummary,
    (origin, commit): (String, String),
    content_time: Option<SystemTime>,
) -> Result<Fetched> {
    let (path, reused) = staging.finish(root, owner_id, summary)?;
    let created = if reused {
        created_at(&path)
    } else {
        SystemTime::now()
    };
    tracing::info!(
        owner_id,
        workspace_id = %summary.id(),
        reused,
        files = summary.file_count,
        bytes = summary.size_bytes,
        "workspace ready"
    );
    Ok(Fetched {
        workspace: Workspace {
            id: summary.id(),
            owner_id: owner_id.to_owned(),
            path: path.display().to_string(),
            origin,
            commit,
            size_bytes: summary.size_bytes,
            file_count: summary.file_count,
            created_at: Some(prost_types::Timestamp::from(created)),
            content_time: content_time.map(prost_types::Timestamp::from),
        },
        reused,
    })
}

impl SourceAgent for Source {
    async fn fetch(&self, request: FetchSpec) -> Result<Fetched> {
        let kind = match request.source {
            SourceSpec::Git { .. } => "git",
            SourceSpec::Local { .. } => "local",
        };
        let result = self.do_fetch(request).await;
        metrics::record(kind, &result);
        result
    }

    async fn upload<S>(&self, header: UploadSpec, chunks: S) -> Result<Fetched>
    where
        S: Stream<Item = Result<Vec<u8>>> + Send,
    {
        let result = self.do_upload(header, chunks).await;
        metrics::record("upload", &result);
        result
    }
}

impl Source {
    async fn do_fetch(&self, request: FetchSpec) -> Result<Fetched> {
        validate_owner_id(&request.owner_id)?;
        let limits = self.config.effective_limits(request.limits.as_ref());
        let deadline = Instant::now() + limits.timeout;
        let _permit = self.permit(&limits, deadline).await?;
        match request.source {
            SourceSpec::Git { url, reference } => {
                self.fetch_git(request.owner_id, url, reference, limits, deadline)
                    .await
            }
            SourceSpec::Local { path } => self.fetch_local(request.owner_id, path, limits, deadline).await,
        }
    }

    async fn do_upload<S>(&self, header: UploadSpec, chunks: S) -> Result<Fetched>
    where
        S: Stream<Item = Result<Vec<u8>>> + Send,
    {
        validate_owner_id(&header.owner_id)?;
        if header.file_name.len() > 1024 {
            return Err(SourceError::invalid("file_name is longer than 1024 bytes"));
        }
        let limits = self.config.effective_limits(header.limits.as_ref());
        let deadline = Instant::now() + limits.timeout;
        let _permit = self.permit(&limits, deadline).await?;
        let staging = Staging::create(&self.staging_root)?;
        let spool = staging.spool_path();
        let compressed = self.receive(&header, chunks, &spool, &limits, deadline).await?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let (summary, newest) = extract::unpack(
                &spool,
                header.format,
                staging.path(),
                limits,
                deadline,
                compressed,
            )?;
            let origin = format!("upload:{}", header.file_name);
            finish(
                staging,
                &root,
                &header.owner_id,
                &summary,
                (origin, String::new()),
                newest,
            )
        })
        .await?
    }
}

impl Source {
    /// Spools the upload to `spool`; returns its size.
    async fn receive<S>(
        &self,
        header: &UploadSpec,
        chunks: S,
        spool: &Path,
        limits: &Limits,
        deadline: Instant,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Vec<u8>>> + Send,
    {
        let mut chunks = pin!(chunks);
        let mut file = tokio::fs::File::create(spool)
            .await
            .map_err(|e| SourceError::io("create", spool, e))?;
        let mut size = 0u64;
        // The header was the first message.
        let mut messages = 1u64;
        loop {
            let next = tokio::time::timeout_at(deadline.into(), chunks.next())
                .await
                .map_err(|_| SourceError::Timeout(limits.timeout.as_secs()))?;
            let Some(chunk) = next else { break };
            let chunk = chunk?;
            messages += 1;
            if messages > self.config.max_upload_messages {
                return Err(SourceError::LimitExceeded {
                    what: "upload",
                    entry: header.file_name.clone(),
                    reason: format!(
                        "has more than {} messages; send larger chunks",
                        self.config.max_upload_messages
                    ),
                });
            }
            size = size.saturating_add(chunk.len() as u64);
            if size > limits.max_total_bytes {
                return Err(SourceError::LimitExceeded {
                    what: "upload",
                    entry: header.file_name.clone(),
                    reason: format!("exceeds the limit of {} bytes", limits.max_total_bytes),
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| SourceError::io("write", spool, e))?;
        }
        file.flush()
            .await
            .map_err(|e| SourceError::io("write", spool, e))?;
        if size == 0 {
            return Err(SourceError::BadArchive("the upload is empty".into()));
        }
        Ok(size)
    }
}
