//! One bounded walk of the workspace into an in-memory index; detectors
//! look files up here instead of touching the file system again.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    io::Read,
    path::{Path, PathBuf},
    time::Instant,
};

use crate::config::AnalyzerConfig;

/// The files and directories of a workspace, as relative `/`-separated paths.
#[derive(Debug)]
pub struct RepoIndex {
    root: PathBuf,
    files: SortedPaths,
    dirs: SortedPaths,
    max_file_bytes: u64,
    max_source_bytes: u64,
    deadline: Instant,
    source_reads_left: RefCell<usize>,
    considered: RefCell<BTreeSet<String>>,
    /// Manifests already read (several detectors look at the same ones).
    cache: RefCell<std::collections::HashMap<String, Option<std::rc::Rc<str>>>>,
    /// Warnings collected while walking and reading.
    pub warnings: RefCell<Vec<String>>,
    /// True when the walk stopped early (entry bound or time budget).
    pub truncated: bool,
}

impl RepoIndex {
    /// Walks `root` once, honouring .gitignore files and the bounds of `config`.
    pub fn build(root: &Path, config: &AnalyzerConfig, deadline: Instant) -> Self {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let mut warnings = Vec::new();
        let mut truncated = false;
        let skip: BTreeSet<String> = config.skip_dirs.iter().cloned().collect();
        let walker = walk_builder(root, config.max_depth, skip).build();
        let mut entries = 0usize;
        for entry in walker {
            let Ok(entry) = entry else { continue };
            if entry.depth() == 0 {
                continue;
            }
            entries += 1;
            if entries > config.max_entries {
                warnings.push(format!(
                    "the workspace has more than {} entries; only the first were analyzed",
                    config.max_entries
                ));
                truncated = true;
                break;
            }
            if entries.is_multiple_of(512) && Instant::now() >= deadline {
                warnings
                    .push("the time budget ran out while walking the workspace; the plan is partial".into());
                truncated = true;
                break;
            }
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            let rel = if rel.contains('\\') {
                rel.replace('\\', "/")
            } else {
                rel.to_owned()
            };
            match entry.file_type() {
                Some(t) if t.is_dir() => {
                    dirs.push(rel);
                }
                Some(t) if t.is_file() => {
                    files.push(rel);
                }
                _ => {}
            }
        }
        Self {
            root: root.to_path_buf(),
            files: SortedPaths::new(files),
            dirs: SortedPaths::new(dirs),
            max_file_bytes: config.max_file_bytes,
            max_source_bytes: config.max_source_bytes,
            deadline,
            source_reads_left: RefCell::new(config.max_source_files),
            considered: RefCell::new(BTreeSet::new()),
            cache: RefCell::new(std::collections::HashMap::new()),
            warnings: RefCell::new(warnings),
            truncated,
        }
    }

    /// An index over the given relative paths, for unit tests of detectors.
    #[cfg(test)]
    pub fn from_paths(paths: &[&str]) -> Self {
        let mut files = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        for p in paths {
            files.insert((*p).to_owned());
            let mut parent = parent_of(p);
            while !parent.is_empty() {
                dirs.insert(parent.to_owned());
                parent = parent_of(parent);
            }
        }
        Self {
            root: PathBuf::from("/nonexistent"),
            files: SortedPaths::new(files.into_iter().collect()),
            dirs: SortedPaths::new(dirs.into_iter().collect()),
            max_file_bytes: 1024,
            max_source_bytes: 1024,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            source_reads_left: RefCell::new(10),
            considered: RefCell::new(BTreeSet::new()),
            cache: RefCell::new(std::collections::HashMap::new()),
            warnings: RefCell::new(Vec::new()),
            truncated: false,
        }
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub fn has(&self, rel: &str) -> bool {
        self.files.contains(rel)
    }

    pub fn has_dir(&self, rel: &str) -> bool {
        rel.is_empty() || self.dirs.contains(rel)
    }

    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.files.iter()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Files below `dir` ("" is the root), at any depth.
    pub fn files_under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.files
            .range_from(&prefix)
            .take_while(move |p| p.starts_with(&prefix))
    }

    /// Directories directly below `dir`.
    pub fn child_dirs<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.dirs
            .range_from(&prefix)
            .take_while({
                let prefix = prefix.clone();
                move |p| p.starts_with(&prefix)
            })
            .filter(move |p| !p[prefix.len()..].contains('/'))
    }

    /// Files directly in `dir`.
    pub fn child_files<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.files
            .range_from(&prefix)
            .take_while({
                let prefix = prefix.clone();
                move |p| p.starts_with(&prefix)
            })
            .filter(move |p| !p[prefix.len()..].contains('/'))
    }

    /// Reads a manifest (up to the size cap) and records it as considered.
    pub fn read(&self, rel: &str) -> Option<String> {
        if !self.has(rel) {
            return None;
        }
        if let Some(hit) = self.cache.borrow().get(rel) {
            return hit.as_ref().map(|t| t.to_string());
        }
        let text = self.read_capped(rel, self.max_file_bytes);
        if text.is_some() {
            self.considered.borrow_mut().insert(rel.to_owned());
        }
        self.cache
            .borrow_mut()
            .insert(rel.to_owned(), text.as_deref().map(std::rc::Rc::from));
        text
    }

    /// Reads a source file for scanning, within the global source-read bound.
    pub fn read_source(&self, rel: &str) -> Option<String> {
        if !self.has(rel) || self.expired() {
            return None;
        }
        {
            let mut left = self.source_reads_left.borrow_mut();
            if *left == 0 {
                return None;
            }
            *left -= 1;
        }
        self.read_capped(rel, self.max_source_bytes)
    }

    fn read_capped(&self, rel: &str, cap: u64) -> Option<String> {
        let file = std::fs::File::open(self.root.join(rel)).ok()?;
        let mut buf = Vec::new();
        file.take(cap).read_to_end(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    pub fn warn(&self, msg: impl Into<String>) {
        let msg = msg.into();
        let mut w = self.warnings.borrow_mut();
        if !w.contains(&msg) && w.len() < 200 {
            w.push(msg);
        }
    }

    pub fn considered(&self) -> Vec<String> {
        self.considered.borrow().iter().cloned().collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Paths sorted once after the walk: lookups are binary searches and a
/// directory's descendants are one contiguous run.
#[derive(Debug)]
struct SortedPaths(Vec<String>);

impl SortedPaths {
    fn new(mut paths: Vec<String>) -> Self {
        paths.sort_unstable();
        paths.dedup();
        Self(paths)
    }

    fn contains(&self, path: &str) -> bool {
        self.0.binary_search_by(|p| p.as_str().cmp(path)).is_ok()
    }

    fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Paths from the first one not less than `from`, in order.
    fn range_from(&self, from: &str) -> std::slice::Iter<'_, String> {
        let start = self.0.partition_point(|p| p.as_str() < from);
        self.0[start..].iter()
    }
}

/// The walker the analyzer uses (also what the bench compares against).
pub fn walk_builder(root: &Path, max_depth: usize, skip: BTreeSet<String>) -> ignore::WalkBuilder {
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .ignore(true)
        .parents(false)
        .follow_links(false)
        .max_depth(Some(max_depth))
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            !(is_dir && e.depth() > 0 && e.file_name().to_str().is_some_and(|n| skip.contains(n)))
        });
    builder
}

/// `a/b` + `c` → `a/b/c`; `` + `c` → `c`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of a relative path, "" at the top.
pub fn parent_of(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

/// The last segment of a relative path.
pub fn file_name(rel: &str) -> &str {
    rel.rfind('/').map_or(rel, |i| &rel[i + 1..])
}

/// The depth of a relative path below `dir` (a direct child is 1).
pub fn depth_below(dir: &str, rel: &str) -> usize {
    let rest = if dir.is_empty() {
        rel
    } else {
        rel.strip_prefix(dir).map_or(rel, |r| r.trim_start_matches('/'))
    };
    rest.split('/').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_children_and_descendants() {
        let idx = RepoIndex::from_paths(&["a/b/c.txt", "a/d.txt", "e.txt", "ab/x"]);
        let under: Vec<_> = idx.files_under("a").cloned().collect();
        assert_eq!(under, ["a/b/c.txt", "a/d.txt"]);
        let kids: Vec<_> = idx.child_files("a").cloned().collect();
        assert_eq!(kids, ["a/d.txt"]);
        let dirs: Vec<_> = idx.child_dirs("").cloned().collect();
        assert_eq!(dirs, ["a", "ab"]);
        assert_eq!(join("", "x"), "x");
        assert_eq!(parent_of("a/b/c"), "a/b");
        assert_eq!(depth_below("a", "a/b/c"), 2);
    }
}
