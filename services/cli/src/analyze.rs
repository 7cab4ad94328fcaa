//! `reporunner analyze`: fetch (when needed) and analyze a repository in this
//! process, offline and without a server.
//!
//! A directory is analyzed where it is (analysis only reads). A git URL is
//! shallow-cloned and an archive is extracted, both through the source agent's
//! library with its safety checks, into a temporary workspace that is removed
//! afterwards.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use reporunner_analyzer::{Analyzer as _, ExportFormat, RepoAnalyzer};
use reporunner_env_detector::{DetectOptions, Detector, EnvDetector as _};
use reporunner_proto::{agents::source::v1::ArchiveFormat, common::v1::RunPlan};
use reporunner_source::{FetchSpec, Source, SourceAgent as _, SourceSpec, UploadSpec};

use crate::Settings;

/// The owner of workspaces made by a local `reporunner analyze`.
const LOCAL_OWNER: &str = "local";

/// Bytes per chunk when an archive is fed to the extractor.
const ARCHIVE_CHUNK: usize = 256 * 1024;

/// What `reporunner analyze` was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Directory(PathBuf),
    Archive(PathBuf, ArchiveFormat),
    Git { url: String, reference: String },
}

/// Reads the command-line argument: an existing directory or archive file,
/// else something that looks like a git URL.
pub fn parse_target(arg: &str, reference: Option<&str>) -> anyhow::Result<Target> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(Target::Directory(path.to_path_buf()));
    }
    if path.is_file() {
        let name = arg.to_ascii_lowercase();
        let format = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            ArchiveFormat::TarGz
        } else if name.ends_with(".tar") {
            ArchiveFormat::Tar
        } else if name.ends_with(".zip") {
            ArchiveFormat::Zip
        } else {
            ArchiveFormat::Unspecified
        };
        return Ok(Target::Archive(path.to_path_buf(), format));
    }
    let looks_like_git = ["https://", "http://", "ssh://", "git://", "file://", "git@"]
        .iter()
        .any(|p| arg.starts_with(p));
    if looks_like_git {
        return Ok(Target::Git {
            url: arg.to_string(),
            reference: reference.unwrap_or_default().to_string(),
        });
    }
    anyhow::bail!("{arg} is neither a directory, an archive (.tar, .tar.gz, .zip) nor a git URL")
}

/// Analyzes `target` and returns the plan.
pub async fn analyze(settings: &Settings, target: Target, detect_host: bool) -> anyhow::Result<RunPlan> {
    let analyzer = RepoAnalyzer::new(settings.analyzer.clone())
        .map_err(|e| anyhow::anyhow!("invalid analyzer settings: {e}"))?;
    let environment = if detect_host {
        let detector = Arc::new(Detector::new(settings.env_detector.clone()));
        let options = DetectOptions {
            platform_override: None,
            skip_registries: true,
            refresh: false,
        };
        // The plan is still useful without host facts; say so and go on.
        match detector.detect(options).await {
            Ok((environment, _)) => Some(environment),
            Err(err) => {
                tracing::warn!(error = %err, "host detection failed; analyzing without host facts");
                None
            }
        }
    } else {
        None
    };

    match target {
        Target::Directory(path) => {
            let path = path
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            analyzer
                .analyze(path, environment)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Target::Archive(..) | Target::Git { .. } => {
            let scratch = tempfile::Builder::new()
                .prefix("reporunner-analyze-")
                .tempdir()
                .map_err(|e| anyhow::anyhow!("cannot create a temporary workspace: {e}"))?;
            let mut config = settings.source_config();
            config.root = scratch.path().join("workspaces");
            config.allow_file_urls = true;
            let source = Source::new(config).map_err(|e| anyhow::anyhow!("invalid source settings: {e}"))?;
            let fetched = match target {
                Target::Git { url, reference } => source
                    .fetch(FetchSpec {
                        owner_id: LOCAL_OWNER.into(),
                        source: SourceSpec::Git { url, reference },
                        limits: None,
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                Target::Archive(path, format) => upload_archive(&source, &path, format).await?,
                Target::Directory(_) => anyhow::bail!("a directory is analyzed in place"),
            };
            let workspace = fetched.workspace;
            let mut plan = analyzer
                .analyze(PathBuf::from(&workspace.path), environment)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            plan.workspace_id = workspace.id;
            Ok(plan)
        }
    }
}

/// Extracts the archive at `path` through the source agent's library (its
/// safety checks: no links out, no paths out, size and file-count limits)
/// into a fresh temporary directory: `reporunner run ARCHIVE` runs what it
/// holds as a local directory. The directory goes with the returned guard.
pub async fn unpack_archive(
    settings: &Settings,
    path: &Path,
    format: ArchiveFormat,
) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let scratch = tempfile::Builder::new()
        .prefix("reporunner-archive-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot create a temporary directory: {e}"))?;
    let mut config = settings.source_config();
    config.root = scratch.path().join("workspaces");
    let source = Source::new(config).map_err(|e| anyhow::anyhow!("invalid source settings: {e}"))?;
    let fetched = upload_archive(&source, path, format).await?;
    let workspace = PathBuf::from(&fetched.workspace.path);
    Ok((scratch, workspace))
}

/// Feeds the archive at `path` to `source`'s extractor.
async fn upload_archive(
    source: &Source,
    path: &Path,
    format: ArchiveFormat,
) -> anyhow::Result<reporunner_source::Fetched> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buffer = vec![0; ARCHIVE_CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(buffer), file))
            }
            Err(err) => Some((
                Err(reporunner_source::SourceError::UploadAborted(err.to_string())),
                file,
            )),
        }
    });
    source
        .upload(
            UploadSpec {
                owner_id: LOCAL_OWNER.into(),
                format,
                file_name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                limits: None,
            },
            chunks,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `--export` values.
pub fn export_format(name: &str) -> anyhow::Result<ExportFormat> {
    match name {
        "json" => Ok(ExportFormat::Json),
        "dockerfile" => Ok(ExportFormat::Dockerfile),
        "devcontainer" => Ok(ExportFormat::Devcontainer),
        "procfile" => Ok(ExportFormat::Procfile),
        "compose" => Ok(ExportFormat::Compose),
        other => {
            anyhow::bail!("cannot export as {other}; use json, dockerfile, devcontainer, procfile or compose")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_directories_archives_or_git_urls() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            parse_target(dir.path().to_str().unwrap(), None).unwrap(),
            Target::Directory(dir.path().to_path_buf())
        );
        let archive = dir.path().join("repo.tar.gz");
        std::fs::write(&archive, b"").unwrap();
        assert_eq!(
            parse_target(archive.to_str().unwrap(), None).unwrap(),
            Target::Archive(archive.clone(), ArchiveFormat::TarGz)
        );
        assert_eq!(
            parse_target("https://example.invalid/a/b.git", Some("v1")).unwrap(),
            Target::Git {
                url: "https://example.invalid/a/b.git".into(),
                reference: "v1".into()
            }
        );
        let err = parse_target("/no/such/dir", None).unwrap_err().to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
        assert!(matches!(export_format("compose"), Ok(ExportFormat::Compose)));
        assert!(export_format("helm").is_err());
    }
}
