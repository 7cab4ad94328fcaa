//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code an
//! upload or a request runs, and panics only on a bug.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use prost::Message;
use reporunner_proto::agents::source::v1::{
    ArchiveFormat, FetchRequest, UploadArchiveRequest, fetch_request, upload_archive_request::Part,
};

use crate::{
    config::{Limits, SourceConfig},
    extract, git,
    local::LocalPolicy,
    workspace::validate_owner_id,
};

/// Small limits, so that an input cannot make one run slow.
const LIMITS: Limits = Limits {
    max_total_bytes: 1 << 20,
    max_files: 256,
    max_compression_ratio: 100,
    timeout: Duration::from_secs(30),
};

/// How deep below the scratch directory the tree is: an entry that climbs
/// out of the tree by up to this many levels still lands in the scratch
/// directory, where it is seen.
const TREE_DEPTH: usize = 4;

/// A directory of one input's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "reporunner-fuzz-{what}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir(&path).expect("create the scratch directory");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every path below `dir` (not following symlinks), relative to `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let child = rel.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(child.clone());
            }
            found.push(child);
        }
    }
    found
}

/// Whether `target`, read from a directory `depth` levels below the tree's
/// root, stays inside the tree when resolved component by component.
fn lexically_inside(depth: usize, target: &Path) -> bool {
    let mut level = depth as i64;
    for part in target.components() {
        match part {
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            Component::ParentDir => level -= 1,
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if level < 0 {
            return false;
        }
    }
    true
}

/// Extracts `data` as an upload: the first byte picks the format the
/// header names (unspecified, tar, tar.gz, zip), the rest is the archive.
/// It runs [`extract::unpack`], as an upload does, in a fresh directory, and
/// checks what it left there: nothing outside the tree, no symlink that
/// resolves outside it, no hard link, nothing over the limits.
pub fn extract_archive(data: &[u8]) {
    let Some((&selector, archive)) = data.split_first() else {
        return;
    };
    // An empty upload is refused before it is spooled.
    if archive.is_empty() {
        return;
    }
    let format = match selector % 4 {
        0 => ArchiveFormat::Unspecified,
        1 => ArchiveFormat::Tar,
        2 => ArchiveFormat::TarGz,
        _ => ArchiveFormat::Zip,
    };
    let scratch = Scratch::new("extract");
    let mut parent = scratch.0.clone();
    for level in 0..TREE_DEPTH {
        parent.push(format!("up{level}"));
    }
    let tree = parent.join("tree");
    fs::create_dir_all(&tree).expect("create the tree");
    let spool = scratch.0.join("upload");
    fs::write(&spool, archive).expect("write the spool");
    let before = walk(&scratch.0);

    let result = extract::unpack(
        &spool,
        format,
        &tree,
        LIMITS,
        Instant::now() + LIMITS.timeout,
        archive.len() as u64,
    );

    // Nothing appeared outside the tree (the spool may be gone).
    let tree_rel = tree
        .strip_prefix(&scratch.0)
        .expect("the tree is in the scratch dir");
    for path in walk(&scratch.0) {
        assert!(
            path.starts_with(tree_rel) || before.contains(&path),
            "the archive wrote {} outside the tree ({result:?})",
            path.display()
        );
    }
    let canonical_tree = fs::canonicalize(&tree).expect("resolve the tree");
    let (mut files, mut bytes) = (0u64, 0u64);
    for rel in walk(&tree) {
        let path = tree.join(&rel);
        let meta = fs::symlink_metadata(&path).expect("inspect an entry");
        let depth = rel.components().count() - 1;
        if meta.file_type().is_symlink() {
            files += 1;
            let target = fs::read_link(&path).expect("read a symlink");
            assert!(
                lexically_inside(depth, &target),
                "{} is a symlink to {} outside the tree",
                rel.display(),
                target.display()
            );
            if let Ok(resolved) = fs::canonicalize(&path) {
                assert!(
                    resolved.starts_with(&canonical_tree),
                    "{} resolves to {} outside the tree",
                    rel.display(),
                    resolved.display()
                );
            }
        } else if meta.is_file() {
            files += 1;
            bytes += meta.len();
            assert_eq!(meta.nlink(), 1, "{} is a hard link", rel.display());
        } else {
            assert!(
                meta.is_dir(),
                "{} is neither a file, a directory nor a symlink",
                rel.display()
            );
        }
    }
    assert!(
        files <= LIMITS.max_files,
        "{files} files written over the limit ({result:?})"
    );
    assert!(
        bytes <= LIMITS.max_total_bytes,
        "{bytes} bytes written over the limit ({result:?})"
    );
    if let Ok((summary, _)) = result {
        assert_eq!(
            summary.file_count, files,
            "the summary counts other files than the tree holds"
        );
        assert_eq!(
            summary.size_bytes, bytes,
            "the summary counts other bytes than the tree holds"
        );
    }
}

/// Decodes `data` as a `FetchRequest` (first byte even) or the header of an
/// `UploadArchive` (odd) and runs the checks the agent makes before it
/// clones, copies or receives anything.
pub fn validate_request(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let config = SourceConfig::default();
    if selector % 2 == 0 {
        let Ok(request) = FetchRequest::decode(message) else {
            return;
        };
        if validate_owner_id(&request.owner_id).is_err() {
            return;
        }
        let limits = config.effective_limits(request.limits.as_ref());
        assert!(limits.max_total_bytes <= config.max_limits.max_total_bytes);
        assert!(limits.max_files <= config.max_limits.max_files);
        assert!(limits.max_compression_ratio <= config.max_limits.max_compression_ratio);
        assert!(limits.timeout.as_secs() <= u64::from(config.max_limits.timeout_seconds));
        match request.source {
            Some(fetch_request::Source::Git(source)) => {
                if git::validate_url(&source.url).is_err() {
                    return;
                }
                if !source.r#ref.is_empty() && git::validate_ref(&source.r#ref).is_err() {
                    return;
                }
                let shown = git::redact_url(&source.url);
                assert!(shown.len() <= source.url.len());
                let _ = git::is_full_commit(&source.r#ref);
            }
            Some(fetch_request::Source::Local(source)) => {
                // No local root is allowed by default: every path is refused,
                // for the right reason, without touching the file system.
                let policy = LocalPolicy::new(&[], &[], Path::new("/nonexistent/workspaces"));
                let refused = policy.resolve(Path::new(&source.path));
                assert!(
                    refused.is_err(),
                    "{:?} accepted with no local root allowed",
                    source.path
                );
            }
            None => {}
        }
    } else {
        let Ok(UploadArchiveRequest {
            part: Some(Part::Header(header)),
        }) = UploadArchiveRequest::decode(message)
        else {
            return;
        };
        if ArchiveFormat::try_from(header.format).is_err() || validate_owner_id(&header.owner_id).is_err() {
            return;
        }
        let limits = config.effective_limits(header.limits.as_ref());
        assert!(limits.max_total_bytes <= config.max_limits.max_total_bytes);
        assert!(limits.max_files <= config.max_limits.max_files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_resolved_lexically() {
        assert!(lexically_inside(0, Path::new("a/b")));
        assert!(lexically_inside(1, Path::new("../a")));
        assert!(!lexically_inside(0, Path::new("../a")));
        assert!(!lexically_inside(0, Path::new("a/../../b")));
        assert!(!lexically_inside(3, Path::new("/etc")));
    }
}
