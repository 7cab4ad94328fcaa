//! Shared helpers: a source agent rooted in a tempdir, archive builders and
//! the "nothing escaped" check.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::stream;
use reporunner_proto::agents::source::v1::{ArchiveFormat, FetchLimits};
use reporunner_source::{Fetched, Result, Source, SourceAgent, SourceConfig, UploadSpec};

/// A tempdir holding the workspace root at `<tmp>/ws` and nothing else.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub source: Arc<Source>,
}

impl Env {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A source agent that may copy local paths below the system's
    /// temporary directory, where the tests make their projects.
    pub fn local() -> Self {
        Self::with(|c| c.allowed_local_roots = vec![std::env::temp_dir()])
    }

    pub fn with(tweak: impl FnOnce(&mut SourceConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = SourceConfig {
            root: tmp.path().join("ws"),
            allow_file_urls: true,
            ..SourceConfig::default()
        };
        tweak(&mut config);
        let source = Arc::new(Source::new(config).unwrap());
        Self { tmp, source }
    }

    pub fn root(&self) -> PathBuf {
        self.source.root().to_path_buf()
    }

    /// Uploads `bytes` as one or more chunks.
    pub async fn upload(
        &self,
        name: &str,
        format: ArchiveFormat,
        bytes: Vec<u8>,
        limits: Option<FetchLimits>,
    ) -> Result<Fetched> {
        let chunks: Vec<Result<Vec<u8>>> = bytes.chunks(7_000).map(|c| Ok(c.to_vec())).collect();
        let spec = UploadSpec {
            owner_id: "alice".into(),
            format,
            file_name: name.into(),
            limits,
        };
        self.source.upload(spec, stream::iter(chunks)).await
    }

    /// Asserts that the tempdir holds only the root, that the root holds only
    /// an empty staging dir (plus `owners`), and that no file outside the
    /// workspaces exists.
    pub fn assert_nothing_escaped(&self, owners: &[&str]) {
        let mut top = names(self.tmp.path());
        top.sort();
        assert_eq!(top, ["ws"], "something was written next to the root");
        let mut in_root = names(&self.root());
        in_root.sort();
        let mut expected: Vec<String> = owners.iter().map(|s| s.to_string()).collect();
        expected.push(".staging".into());
        expected.sort();
        assert_eq!(in_root, expected, "unexpected entries in the root");
        assert!(
            names(&self.root().join(".staging")).is_empty(),
            "staging was not cleaned"
        );
    }
}

pub fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// One tar entry, written with raw header fields so that names the `tar`
/// crate would refuse to build (`..`, absolute) can be made.
pub struct RawEntry<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub data: &'a [u8],
    pub link: &'a str,
    pub mode: u32,
}

impl<'a> RawEntry<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Self {
            name,
            kind: tar::EntryType::Regular,
            data,
            link: "",
            mode: 0o644,
        }
    }

    pub fn dir(name: &'a str) -> Self {
        Self {
            kind: tar::EntryType::Directory,
            mode: 0o755,
            ..Self::file(name, b"")
        }
    }

    pub fn link(name: &'a str, kind: tar::EntryType, target: &'a str) -> Self {
        Self {
            kind,
            link: target,
            mode: 0o777,
            ..Self::file(name, b"")
        }
    }
}

pub fn tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        }
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A zip of `(name, content)` files, deflated.
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (name, content) in files {
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A zip of files and symlinks, in order: `(name, Ok(content))` is a file,
/// `(name, Err(target))` a symlink to `target`.
pub fn zip_with_links(entries: &[(&str, Result<&[u8], &str>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (name, entry) in entries {
        match entry {
            Ok(content) => {
                writer.start_file(*name, options).unwrap();
                writer.write_all(content).unwrap();
            }
            Err(target) => writer.add_symlink(*name, *target, options).unwrap(),
        }
    }
    writer.finish().unwrap().into_inner()
}

/// Runs git in `dir` with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
