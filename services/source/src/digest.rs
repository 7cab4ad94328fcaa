//! The content digest of a workspace tree.
//!
//! The id is `sha256:<hex>` over the sorted entries of the tree (excluding
//! `.git`): for each, its relative path, its type (directory, file, executable
//! file, symlink), the sha256 of its content or its symlink target, each part
//! ended by a NUL byte (which no path or target can contain).

use std::{
    fs,
    io::Read,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use sha2::{Digest, Sha256};

use crate::{
    config::Limits,
    error::{Result, SourceError},
    tree::{GIT_DIR, symlink_target_is_inside},
};

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    /// Lowercase hex sha256 (the id without its `sha256:` prefix).
    pub hex: String,
    /// Bytes of regular file content.
    pub size_bytes: u64,
    /// Regular files and symlinks.
    pub file_count: u64,
}

impl TreeSummary {
    pub fn id(&self) -> String {
        format!("sha256:{}", self.hex)
    }
}

enum Kind {
    Dir,
    File { executable: bool, len: u64 },
    Symlink,
}

/// Scans `root`, enforcing `limits`, and returns its digest.
///
/// Symlinks whose target leaves the tree are removed (with a warning) rather
/// than counted: a git checkout may hold any symlink. Anything that is not a
/// directory, regular file or symlink is refused.
pub fn scan(root: &Path, limits: &Limits, deadline: Instant) -> Result<TreeSummary> {
    let timeout = || SourceError::Timeout(limits.timeout.as_secs());
    let mut entries: Vec<(Vec<u8>, PathBuf, usize, Kind)> = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>, usize)> = vec![(root.to_path_buf(), Vec::new(), 0)];
    let (mut files, mut dirs, mut size) = (0u64, 0u64, 0u64);
    let too_big = |entry: &[u8], reason: String| SourceError::LimitExceeded {
        what: "file",
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason,
    };
    while let Some((dir, rel_dir, depth)) = stack.pop() {
        if Instant::now() >= deadline {
            return Err(timeout());
        }
        let read = fs::read_dir(&dir).map_err(|e| SourceError::io("list", &dir, e))?;
        for item in read {
            let item = item.map_err(|e| SourceError::io("list", &dir, e))?;
            let name = item.file_name();
            if name == GIT_DIR {
                continue;
            }
            let mut rel = rel_dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let path = item.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| SourceError::io("inspect", &path, e))?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                dirs += 1;
                if dirs > limits.max_files {
                    return Err(too_big(
                        &rel,
                        format!("exceeds the limit of {} directories", limits.max_files),
                    ));
                }
                stack.push((path.clone(), rel.clone(), depth + 1));
                Kind::Dir
            } else if file_type.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| SourceError::io("read link", &path, e))?;
                let inside = target
                    .to_str()
                    .is_some_and(|t| symlink_target_is_inside(depth, t));
                if !inside {
                    tracing::warn!(
                        entry = %String::from_utf8_lossy(&rel),
                        target = %target.display(),
                        "removing a symlink that points outside the workspace"
                    );
                    fs::remove_file(&path).map_err(|e| SourceError::io("remove", &path, e))?;
                    continue;
                }
                files += 1;
                Kind::Symlink
            } else if file_type.is_file() {
                files += 1;
                size = size.saturating_add(meta.len());
                if size > limits.max_total_bytes {
                    return Err(too_big(
                        &rel,
                        format!("exceeds the limit of {} bytes in total", limits.max_total_bytes),
                    ));
                }
                Kind::File {
                    executable: meta.permissions().mode() & 0o111 != 0,
                    len: meta.len(),
                }
            } else {
                return Err(SourceError::UnsafeEntry {
                    what: "file",
                    entry: String::from_utf8_lossy(&rel).into_owned(),
                    reason: "is not a regular file, directory or symlink".into(),
                });
            };
            if files > limits.max_files {
                return Err(too_big(
                    &rel,
                    format!("exceeds the limit of {} files", limits.max_files),
                ));
            }
            entries.push((rel, path, depth, kind));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tree = Sha256::new();
    let mut hashed = 0u64;
    for (rel, path, _, kind) in &entries {
        if Instant::now() >= deadline {
            return Err(timeout());
        }
        tree.update(rel);
        tree.update([0]);
        match kind {
            Kind::Dir => tree.update(b"dir\0\0"),
            Kind::File { executable, len } => {
                tree.update(if *executable {
                    &b"exec\0"[..]
                } else {
                    &b"file\0"[..]
                });
                let (digest, read) = hash_file(path, *len)?;
                hashed += read;
                tree.update(digest);
                tree.update([0]);
            }
            Kind::Symlink => {
                let target = fs::read_link(path).map_err(|e| SourceError::io("read link", path, e))?;
                tree.update(b"link\0");
                tree.update(target.as_os_str().as_bytes());
                tree.update([0]);
            }
        }
    }
    Ok(TreeSummary {
        hex: hex::encode(tree.finalize()),
        size_bytes: hashed,
        file_count: files,
    })
}

/// The sha256 of a file, reading at most `len` bytes (its size when listed).
fn hash_file(path: &Path, len: u64) -> Result<([u8; 32], u64)> {
    let file = fs::File::open(path).map_err(|e| SourceError::io("open", path, e))?;
    let mut reader = file.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| SourceError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().into(), read))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_total_bytes: 1 << 20,
            max_files: 100,
            max_compression_ratio: 10,
            timeout: Duration::from_secs(60),
        }
    }

    fn digest(root: &Path) -> TreeSummary {
        scan(root, &limits(), Instant::now() + Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn digest_depends_on_content_names_modes_and_links_but_not_git() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::create_dir_all(a.join("src")).unwrap();
        fs::write(a.join("src/main.rs"), "fn main() {}").unwrap();
        let first = digest(&a);
        assert_eq!(first.file_count, 1);
        assert_eq!(first.size_bytes, 12);
        assert!(first.id().starts_with("sha256:"));

        fs::create_dir(a.join(".git")).unwrap();
        fs::write(a.join(".git/HEAD"), "ref").unwrap();
        assert_eq!(digest(&a), first);

        fs::write(a.join("src/main.rs"), "fn main() { }").unwrap();
        let changed = digest(&a);
        assert_ne!(changed.hex, first.hex);

        fs::set_permissions(a.join("src/main.rs"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(digest(&a).hex, changed.hex);

        std::os::unix::fs::symlink("src/main.rs", a.join("link")).unwrap();
        let linked = digest(&a);
        assert_eq!(linked.file_count, 2);
        std::os::unix::fs::symlink("/etc/passwd", a.join("evil")).unwrap();
        assert_eq!(digest(&a), linked, "escaping symlinks are removed, not hashed");
        assert!(fs::symlink_metadata(a.join("evil")).is_err());
    }

    #[test]
    fn limits_apply_while_scanning() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            fs::write(dir.path().join(format!("f{i}")), "x").unwrap();
        }
        let tight = Limits {
            max_files: 2,
            ..limits()
        };
        let err = scan(dir.path(), &tight, Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("limit of 2 files"), "{err}");
    }
}
