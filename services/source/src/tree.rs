//! Writes a workspace tree entry by entry, refusing anything unsafe.
//!
//! Every entry is named by a relative path that is checked before anything is
//! written: no `..`, no absolute paths, no drive letters or backslashes. Parent
//! directories must be directories this writer created itself, so nothing is
//! ever written through a symlink; symlinks may only point inside the tree.
//! File contents are counted as they are written, never taken from headers.

use std::{
    collections::HashMap,
    fs,
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use crate::{
    config::Limits,
    error::{Result, SourceError},
};

/// Directory names never copied into a workspace.
pub(crate) const GIT_DIR: &str = ".git";

/// Longest accepted entry name and symlink target, in bytes.
const MAX_PATH_LEN: usize = 4096;
/// Deepest accepted entry.
const MAX_DEPTH: usize = 256;
/// Copy buffer.
const CHUNK: usize = 64 * 1024;

/// Why an entry name is refused.
pub(crate) const ESCAPES: &str = "escapes the workspace";

/// Splits an archive entry name into safe components.
///
/// `Ok(None)` means the entry is to be skipped (the root itself, or anything
/// inside a `.git` directory); `Err` carries the reason it is refused.
pub(crate) fn parse_entry_path(name: &str) -> std::result::Result<Option<Vec<String>>, String> {
    if name.len() > MAX_PATH_LEN {
        return Err(format!("has a name longer than {MAX_PATH_LEN} bytes"));
    }
    if name.contains('\0') {
        return Err("has a NUL byte in its name".into());
    }
    if name.starts_with('/') || name.contains('\\') {
        return Err(ESCAPES.into());
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ESCAPES.into()),
            _ => {
                if parts.is_empty() && is_drive_prefix(part) {
                    return Err(ESCAPES.into());
                }
                if part == GIT_DIR {
                    return Ok(None);
                }
                parts.push(part.to_owned());
            }
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(format!("is nested deeper than {MAX_DEPTH} directories"));
    }
    Ok((!parts.is_empty()).then_some(parts))
}

/// `C:` and the like.
fn is_drive_prefix(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Whether a symlink at depth `parent_depth` (0: directly in the root) with
/// this target resolves inside the tree.
///
/// Conservative on purpose: `..` is allowed only as a leading prefix, where it
/// climbs real directories (parents are always real directories here), so the
/// kernel resolves it exactly as written. `a/../b` is refused because `a` may
/// itself be a symlink.
pub(crate) fn symlink_target_is_inside(parent_depth: usize, target: &str) -> bool {
    if target.is_empty()
        || target.len() > MAX_PATH_LEN
        || target.starts_with('/')
        || target.contains('\\')
        || target.contains('\0')
    {
        return false;
    }
    let mut ups = 0;
    let mut seen_normal = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if seen_normal => return false,
            ".." => ups += 1,
            _ => {
                if !seen_normal && is_drive_prefix(part) {
                    return false;
                }
                seen_normal = true;
            }
        }
    }
    ups <= parent_depth
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink,
}

/// Writes entries under one fresh, empty directory.
#[derive(Debug)]
pub(crate) struct TreeWriter {
    root: PathBuf,
    what: &'static str,
    limits: Limits,
    deadline: Instant,
    /// Compressed bytes of the upload, when the compression ratio applies.
    compressed: Option<u64>,
    written: u64,
    files: u64,
    dirs: u64,
    nodes: HashMap<Vec<String>, Node>,
    /// The newest file time seen (archive headers, copied files).
    newest: Option<std::time::SystemTime>,
}

impl TreeWriter {
    /// `root` must exist and be empty. `what` names entries in messages
    /// ("archive entry", "file").
    pub(crate) fn new(
        root: PathBuf,
        what: &'static str,
        limits: Limits,
        deadline: Instant,
        compressed: Option<u64>,
    ) -> Self {
        Self {
            root,
            what,
            limits,
            deadline,
            compressed,
            written: 0,
            files: 0,
            dirs: 0,
            nodes: HashMap::new(),
            newest: None,
        }
    }

    /// Notes a file's modification time; times in the future are ignored.
    pub(crate) fn saw_time(&mut self, time: std::time::SystemTime) {
        if time <= std::time::SystemTime::now() && self.newest.is_none_or(|n| time > n) {
            self.newest = Some(time);
        }
    }

    /// The newest file time noted.
    pub(crate) fn newest(&self) -> Option<std::time::SystemTime> {
        self.newest
    }

    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    /// A refusal naming `entry`.
    pub(crate) fn refuse(&self, entry: &str, reason: impl Into<String>) -> SourceError {
        SourceError::UnsafeEntry {
            what: self.what,
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn over_limit(&self, entry: &str, reason: String) -> SourceError {
        SourceError::LimitExceeded {
            what: self.what,
            entry: entry.to_owned(),
            reason,
        }
    }

    /// Fails once the fetch's time is up.
    pub(crate) fn check_deadline(&self) -> Result<()> {
        if Instant::now() >= self.deadline {
            Err(SourceError::Timeout(self.limits.timeout.as_secs()))
        } else {
            Ok(())
        }
    }

    fn full_path(&self, rel: &[String]) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(rel);
        path
    }

    /// Makes sure every parent of `rel` is a directory this writer created.
    fn ensure_parents(&mut self, entry: &str, rel: &[String]) -> Result<()> {
        for end in 1..rel.len() {
            let prefix = &rel[..end];
            match self.nodes.get(prefix) {
                Some(Node::Dir) => {}
                Some(Node::Symlink) => {
                    return Err(self.refuse(
                        entry,
                        format!("would be written through the symlink {:?}", prefix.join("/")),
                    ));
                }
                Some(Node::File) => {
                    return Err(self.refuse(
                        entry,
                        format!("would be written under the file {:?}", prefix.join("/")),
                    ));
                }
                None => self.create_dir(entry, prefix)?,
            }
        }
        Ok(())
    }

    fn create_dir(&mut self, entry: &str, rel: &[String]) -> Result<()> {
        if self.dirs >= self.limits.max_files {
            return Err(self.over_limit(
                entry,
                format!("exceeds the limit of {} directories", self.limits.max_files),
            ));
        }
        let path = self.full_path(rel);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(|e| SourceError::io("create directory", &path, e))?;
        self.dirs += 1;
        self.nodes.insert(rel.to_vec(), Node::Dir);
        Ok(())
    }

    /// A directory entry.
    pub(crate) fn dir(&mut self, entry: &str, rel: &[String]) -> Result<()> {
        self.check_deadline()?;
        self.ensure_parents(entry, rel)?;
        match self.nodes.get(rel) {
            Some(Node::Dir) => Ok(()),
            Some(_) => Err(self.refuse(entry, "conflicts with an earlier entry of another type")),
            None => self.create_dir(entry, rel),
        }
    }

    /// Makes room for a non-directory entry at `rel`; returns its full path.
    fn prepare_leaf(&mut self, entry: &str, rel: &[String]) -> Result<PathBuf> {
        self.check_deadline()?;
        self.ensure_parents(entry, rel)?;
        let path = self.full_path(rel);
        match self.nodes.get(rel) {
            None => {
                if self.files >= self.limits.max_files {
                    return Err(self.over_limit(
                        entry,
                        format!("exceeds the limit of {} files", self.limits.max_files),
                    ));
                }
                self.files += 1;
            }
            Some(Node::File) => {
                // A later entry of the same name replaces the earlier one, as
                // tar does; the file is ours, so removing it is safe.
                fs::remove_file(&path).map_err(|e| SourceError::io("replace", &path, e))?;
                self.nodes.remove(rel);
            }
            Some(Node::Symlink) => {
                return Err(self.refuse(entry, "would be written through a symlink of the same name"));
            }
            Some(Node::Dir) => {
                return Err(self.refuse(entry, "conflicts with an earlier directory of the same name"));
            }
        }
        Ok(path)
    }

    /// A regular file whose content is read from `content` and counted.
    pub(crate) fn file(
        &mut self,
        entry: &str,
        rel: &[String],
        content: &mut dyn Read,
        executable: bool,
    ) -> Result<()> {
        let path = self.prepare_leaf(entry, rel)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o755 } else { 0o644 })
            .open(&path)
            .map_err(|e| SourceError::io("create", &path, e))?;
        self.nodes.insert(rel.to_vec(), Node::File);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(entry, e)),
            };
            self.count(entry, n as u64)?;
            out.write_all(&buf[..n])
                .map_err(|e| SourceError::io("write", &path, e))?;
            self.check_deadline()?;
        }
        Ok(())
    }

    /// What a failed read of an entry's content means.
    fn read_error(&self, entry: &str, err: std::io::Error) -> SourceError {
        match self.what {
            "file" => SourceError::io("read", entry, err),
            _ => SourceError::BadArchive(format!("{} {entry:?} cannot be read: {err}", self.what)),
        }
    }

    /// Counts `n` more bytes written, against the size and ratio limits.
    fn count(&mut self, entry: &str, n: u64) -> Result<()> {
        let total = self.written.saturating_add(n);
        if total > self.limits.max_total_bytes {
            return Err(self.over_limit(
                entry,
                format!(
                    "exceeds the limit of {} bytes in total",
                    self.limits.max_total_bytes
                ),
            ));
        }
        if let Some(compressed) = self.compressed {
            let allowed = compressed
                .max(1)
                .saturating_mul(u64::from(self.limits.max_compression_ratio));
            if total > allowed {
                return Err(self.over_limit(
                    entry,
                    format!(
                        "expands the archive beyond {} times its compressed size",
                        self.limits.max_compression_ratio
                    ),
                ));
            }
        }
        self.written = total;
        Ok(())
    }

    /// A symlink; refused unless its target stays inside the tree.
    pub(crate) fn symlink(&mut self, entry: &str, rel: &[String], target: &str) -> Result<()> {
        if !symlink_target_is_inside(rel.len() - 1, target) {
            return Err(self.refuse(
                entry,
                format!("is a symlink to {target:?}, which escapes the workspace"),
            ));
        }
        let path = self.prepare_leaf(entry, rel)?;
        std::os::unix::fs::symlink(target, &path).map_err(|e| SourceError::io("create symlink", &path, e))?;
        self.nodes.insert(rel.to_vec(), Node::Symlink);
        Ok(())
    }

    /// A hard link to an earlier regular file entry, written as a copy.
    pub(crate) fn hardlink(&mut self, entry: &str, rel: &[String], target: &str) -> Result<()> {
        let target_rel = match parse_entry_path(target) {
            Ok(Some(parts)) => parts,
            Ok(None) | Err(_) => {
                return Err(self.refuse(
                    entry,
                    format!("is a hard link to {target:?}, which escapes the workspace"),
                ));
            }
        };
        if self.nodes.get(&target_rel) != Some(&Node::File) {
            return Err(self.refuse(
                entry,
                format!("is a hard link to {target:?}, which is not an earlier file in the archive"),
            ));
        }
        let source = self.full_path(&target_rel);
        if target_rel == rel {
            return Ok(());
        }
        let executable = is_executable(&source)?;
        let mut input = fs::File::open(&source).map_err(|e| SourceError::io("open", &source, e))?;
        self.file(entry, rel, &mut input, executable)
    }
}

/// Whether a (regular) file has any exec bit.
pub(crate) fn is_executable(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path).map_err(|e| SourceError::io("inspect", path, e))?;
    Ok(meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(name: &str) -> Option<Vec<String>> {
        parse_entry_path(name).unwrap()
    }

    #[test]
    fn entry_names_are_normalised_or_refused() {
        assert_eq!(
            parts("./a//b/./c"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(parts("./"), None);
        assert_eq!(parts("repo/.git/config"), None);
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "C:/x",
            "c:x",
            // A drive after a leading `./` (found by the property test).
            "./a:",
            ".//C:/x",
            "a\\..\\b",
            "..\\x",
        ] {
            assert_eq!(parse_entry_path(bad).unwrap_err(), ESCAPES, "{bad}");
        }
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(symlink_target_is_inside(0, "a/b"));
        assert!(symlink_target_is_inside(1, "../a"));
        assert!(symlink_target_is_inside(0, "./a"));
        assert!(!symlink_target_is_inside(0, "../a"));
        assert!(!symlink_target_is_inside(2, "a/../../b"));
        assert!(!symlink_target_is_inside(3, "/etc/passwd"));
        assert!(!symlink_target_is_inside(3, ""));
        assert!(!symlink_target_is_inside(3, "C:/x"));
        assert!(!symlink_target_is_inside(3, "./C:/x"));
    }

    proptest::proptest! {
        #[test]
        fn accepted_names_stay_below_the_root(name in "[a-zA-Z./\\\\:-]{0,24}") {
            if let Ok(Some(parts)) = parse_entry_path(&name) {
                for part in &parts {
                    proptest::prop_assert!(!part.is_empty() && part != "." && part != "..");
                    proptest::prop_assert!(!part.contains('/') && !part.contains('\\'));
                }
                proptest::prop_assert!(!is_drive_prefix(&parts[0]));
            }
        }

        #[test]
        fn accepted_symlinks_resolve_inside(depth in 0usize..4, target in "[a./]{0,16}") {
            if symlink_target_is_inside(depth, &target) {
                // Resolve lexically from a directory `depth` levels down.
                let mut level = depth as i64;
                for part in target.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => level -= 1,
                        _ => level += 1,
                    }
                    proptest::prop_assert!(level >= 0, "{target} from depth {depth}");
                }
            }
        }
    }
}
