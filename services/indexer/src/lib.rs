//! The indexing service (`reporunner.index.v1`): per-workspace indexes, owned
//! by a user, under the data directory.
//!
//! - [`files`]: the ignore-aware walk (binaries, vendored and generated files
//!   and large files are skipped) and the language of each file.
//! - [`chunk`]: code-aware chunks (whole functions and classes, else line
//!   windows with overlap), each with its path and line range.
//! - [`text`]: tantivy BM25 over the code-aware tokens of [`tokenize`]
//!   (`parseConfig`, `parse_config` and `config` find each other), with
//!   language and path-glob filters and numbered snippets.
//! - [`embed`] and [`models`]: sentence-transformer embeddings computed with
//!   by our own BERT encoder (the `reporunner-embed` crate: gemm products,
//!   fused passes, pooled buffers) from an installed model directory;
//!   listing and fetching models.
//! - [`vector`]: arroy (cosine) on LMDB, exact below a size, tuned above.
//! - [`fusion`]: hybrid ranking, a convex combination of normalised text and
//!   vector scores, the text side weighted by query-term coverage.
//! - [`policy`]: which mode a tier gets ([`policy::choose_mode`]), the pure
//!   policy of `reporunner-tier`, re-exported here.
//!
//! Re-indexing is incremental: a file whose content hash is unchanged is not
//! re-chunked nor re-embedded ([`manifest`]). The domain lives behind
//! [`Indexer`] ([`LocalIndexer`] implements it); [`grpc`] is a thin adapter.
#![deny(unsafe_code)]

pub mod chunk;
pub mod config;
pub mod error;
pub mod files;
pub mod fusion;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod manifest;
pub mod metrics;
pub mod model_name;
pub mod models;
pub use reporunner_tier::policy;
pub mod text;
pub mod tokenize;
pub mod vector;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

pub use config::IndexerConfig;
pub use error::{IndexError, Result};
use futures::Stream;
/// The encoder ([`reporunner_embed`]): [`embed::Embedder`] loads a model and embeds.
pub use reporunner_embed as embed;
use reporunner_proto::{
    common::v1::IndexMode,
    index::v1::{
        DeleteIndexRequest, DeleteIndexResponse, IndexProgress, IndexRepoRequest, IndexRepoResponse,
        IndexStatusRequest, IndexStatusResponse, SearchHit, SearchRequest, SearchResponse,
    },
};
use roaring::RoaringBitmap;
use sha2::{Digest as _, Sha256};
use tokio::sync::RwLock;

use crate::{
    chunk::{ChunkParams, chunk_file},
    embed::Embedder,
    fusion::{TextEvidence, term_coverage},
    manifest::{FileEntry, Manifest},
    text::{ChunkDoc, Filters, TextHit, TextIndex, snippet_for_terms},
    tokenize::query_terms,
    vector::{SearchParams, VectorStore},
};

/// The longest query accepted, in bytes.
const MAX_QUERY_BYTES: usize = 1_000;
const MAX_GLOB_BYTES: usize = 512;
const MAX_ID_BYTES: usize = 128;
const DEFAULT_LIMIT: u32 = 10;
const MAX_LIMIT: u32 = 100;
/// Candidates each side contributes to a hybrid ranking, per requested hit.
const HYBRID_DEPTH: usize = 3;
/// Progress messages: at most one per this many files (plus the last).
const PROGRESS_EVERY: u64 = 64;

/// A stream of IndexRepo progress, the last message with `done` set.
pub type ProgressStream = Pin<Box<dyn Stream<Item = Result<IndexRepoResponse>> + Send>>;

/// The indexing service's domain.
pub trait Indexer: Send + Sync + 'static {
    /// Indexes a workspace, streaming progress. Requests are validated
    /// before the stream starts.
    fn index_repo(&self, request: IndexRepoRequest) -> impl Future<Output = Result<ProgressStream>> + Send;

    fn search(&self, request: SearchRequest) -> impl Future<Output = Result<SearchResponse>> + Send;

    fn index_status(
        &self,
        request: IndexStatusRequest,
    ) -> impl Future<Output = Result<IndexStatusResponse>> + Send;

    fn delete_index(
        &self,
        request: DeleteIndexRequest,
    ) -> impl Future<Output = Result<DeleteIndexResponse>> + Send;
}

/// An index opened for searching and writing.
#[derive(Debug)]
struct OpenIndex {
    manifest: Manifest,
    text: TextIndex,
    vectors: Option<VectorStore>,
}

/// One workspace's index: searches read `index`; an IndexRepo pass holds
/// `pass` throughout (one pass at a time, and DeleteIndex waits for it), reads
/// `index` while it walks, chunks and embeds, and writes `index` only to
/// commit, so searches go on against the last committed index meanwhile.
#[derive(Debug, Default)]
struct SlotState {
    index: Arc<RwLock<Option<OpenIndex>>>,
    pass: tokio::sync::Mutex<()>,
}

type Slot = Arc<SlotState>;

/// Indexes on this host's disk, under [`IndexerConfig::index_dir`].
#[derive(Debug)]
pub struct LocalIndexer {
    config: Arc<IndexerConfig>,
    /// One slot per (owner, workspace): searches read, indexing and deletion
    /// write. An LMDB environment is opened at most once, through its slot.
    slots: Mutex<HashMap<(String, String), Slot>>,
    embedders: Mutex<HashMap<String, Arc<Embedder>>>,
}

fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IndexError::InvalidRequest(format!(
            "{what} must be 1 to {MAX_ID_BYTES} letters, digits, '-', '_' or '.' (not starting with '.'); got `{}`",
            id.chars().take(MAX_ID_BYTES).collect::<String>()
        )))
    }
}

/// The checks of an IndexRepo request made before the workspace is looked
/// at; returns the workspace path.
fn check_index_request(request: &IndexRepoRequest) -> Result<PathBuf> {
    validate_id("owner_id", &request.owner_id)?;
    validate_id("workspace_id", &request.workspace_id)?;
    let path = request.workspace_path.trim();
    if path.is_empty() {
        return Err(IndexError::InvalidRequest("workspace_path is empty".into()));
    }
    let root = PathBuf::from(path);
    if !root.is_absolute() {
        return Err(IndexError::InvalidRequest(format!(
            "workspace_path `{path}` must be absolute"
        )));
    }
    Ok(root)
}

fn wants_vectors(modes: &[i32]) -> bool {
    modes
        .iter()
        .any(|&m| m == IndexMode::Vector as i32 || m == IndexMode::Hybrid as i32)
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn dir_size(dir: &Path) -> u64 {
    walk_size(dir, 0)
}

fn walk_size(dir: &Path, depth: usize) -> u64 {
    if depth > 8 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(std::result::Result::ok)
        .take(100_000)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path(), depth + 1),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IndexError::Backend(format!("blocking task: {e}")))?
}

/// The text an embedding sees for a chunk: where it is, then the code.
fn embedding_text(path: &str, symbol: &str, text: &str) -> String {
    if symbol.is_empty() {
        format!("{path}\n{text}")
    } else {
        format!("{path} {symbol}\n{text}")
    }
}

impl LocalIndexer {
    /// `config` must be resolved ([`IndexerConfig::resolve`]).
    pub fn new(config: IndexerConfig) -> Result<Self> {
        config.validate()?;
        metrics::describe();
        std::fs::create_dir_all(&config.index_dir)
            .map_err(IndexError::io(format!("creating {}", config.index_dir.display())))?;
        Ok(Self {
            config: Arc::new(config),
            slots: Mutex::new(HashMap::new()),
            embedders: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &IndexerConfig {
        &self.config
    }

    /// Whether the model a request names (a model, a tier, or empty for the
    /// default) is installed: the `model_present` input of
    /// [`policy::choose_mode`].
    pub fn model_installed(&self, requested: &str) -> bool {
        let name = self.config.model_name(requested);
        models::validate_name(name).is_ok()
            && models::inspect(&models::model_dir(&self.config.models_dir, name), name).is_some()
    }

    /// The installed models.
    pub fn list_models(&self) -> Result<Vec<models::ModelInfo>> {
        models::list_models(&self.config.models_dir)
    }

    /// Fetches a model from the Hugging Face hub (see [`models::fetch_model`]).
    pub async fn fetch_model(&self, name: &str) -> Result<models::ModelInfo> {
        models::fetch_model(&self.config, name).await
    }

    fn index_path(&self, owner: &str, workspace: &str) -> PathBuf {
        self.config.index_dir.join(owner).join(workspace)
    }

    fn slot(&self, owner: &str, workspace: &str) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .entry((owner.to_owned(), workspace.to_owned()))
            .or_default()
            .clone()
    }

    /// The loaded embedding model `name`, loading it on first use.
    async fn embedder(&self, name: &str) -> Result<Arc<Embedder>> {
        models::validate_name(name)?;
        if let Some(e) = self
            .embedders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return Ok(e.clone());
        }
        let dir = models::model_dir(&self.config.models_dir, name);
        if models::inspect(&dir, name).is_none() {
            let installed: Vec<String> = self.list_models()?.into_iter().map(|m| m.name).collect();
            return Err(IndexError::NotFound(format!(
                "embedding model `{name}` is not installed under {} (installed: {}); fetch it with `reporunner models fetch {name}`",
                self.config.models_dir.display(),
                if installed.is_empty() {
                    "none".to_owned()
                } else {
                    installed.join(", ")
                }
            )));
        }
        let (owned, max_tokens) = (name.to_owned(), self.config.max_tokens);
        let embedder = Arc::new(blocking(move || Ok(Embedder::load(&dir, &owned, max_tokens)?)).await?);
        self.embedders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), embedder.clone());
        Ok(embedder)
    }

    /// Opens the index behind a slot guard when it exists on disk.
    fn open_existing(dir: &Path, slot: &mut Option<OpenIndex>) -> Result<bool> {
        if slot.is_some() {
            return Ok(true);
        }
        let Some(manifest) = Manifest::load(dir)? else {
            return Ok(false);
        };
        let text = TextIndex::open(&dir.join("text"))?;
        let vectors = if manifest.vectors {
            Some(VectorStore::open(&dir.join("vectors"), manifest.dim)?)
        } else {
            None
        };
        *slot = Some(OpenIndex {
            manifest,
            text,
            vectors,
        });
        Ok(true)
    }

    /// The modes of an IndexRepo request, checked; the name of the model
    /// it embeds with when it wants vectors.
    fn vector_model(&self, request: &IndexRepoRequest) -> Result<Option<String>> {
        for &mode in &request.modes {
            if IndexMode::try_from(mode).is_err() {
                return Err(IndexError::InvalidRequest(format!("unknown mode {mode}")));
            }
        }
        if !wants_vectors(&request.modes) {
            return Ok(None);
        }
        let name = self.config.model_name(&request.model).to_owned();
        models::validate_name(&name)?;
        Ok(Some(name))
    }

    fn validate_search(&self, request: &SearchRequest) -> Result<(usize, Filters)> {
        validate_id("owner_id", &request.owner_id)?;
        validate_id("workspace_id", &request.workspace_id)?;
        let query = request.query.trim();
        if query.is_empty() {
            return Err(IndexError::InvalidRequest("query is empty".into()));
        }
        if query.len() > MAX_QUERY_BYTES {
            return Err(IndexError::InvalidRequest(format!(
                "query is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        if tokenize::query_terms(query).is_empty() {
            return Err(IndexError::InvalidRequest(
                "query has no searchable words (letters or digits)".into(),
            ));
        }
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            l if l > MAX_LIMIT => {
                return Err(IndexError::InvalidRequest(format!(
                    "limit must lie within 1..={MAX_LIMIT} (0 means {DEFAULT_LIMIT}); got {l}"
                )));
            }
            l => l,
        };
        if IndexMode::try_from(request.mode).is_err() {
            return Err(IndexError::InvalidRequest(format!(
                "unknown mode {}",
                request.mode
            )));
        }
        let mut filters = Filters::default();
        let language = request.language.trim().to_ascii_lowercase();
        if !language.is_empty() {
            if !files::LANGUAGES.contains(&language.as_str()) {
                return Err(IndexError::InvalidRequest(format!(
                    "unknown language `{}`; known: {}",
                    request.language.chars().take(64).collect::<String>(),
                    files::LANGUAGES.join(", ")
                )));
            }
            filters.language = Some(language);
        }
        let glob = request.path_glob.trim();
        if !glob.is_empty() {
            if glob.len() > MAX_GLOB_BYTES {
                return Err(IndexError::InvalidRequest(format!(
                    "path_glob is longer than {MAX_GLOB_BYTES} bytes"
                )));
            }
            let matcher = globset::GlobBuilder::new(glob.trim_start_matches("./"))
                .literal_separator(true)
                .build()
                .map_err(|e| IndexError::InvalidRequest(format!("path_glob `{glob}` is not a glob: {e}")))?
                .compile_matcher();
            filters.path_glob = Some(matcher);
        }
        Ok((limit as usize, filters))
    }
}

/// Runs an IndexRepo pass: the walk, chunking and embedding under a read
/// guard of the slot (searches go on against the committed index), then the
/// commit under its write guard. One pass at a time per workspace.
async fn run_pass(pass: Pass, slot: Slot) -> Result<()> {
    let _one_pass = slot.pass.lock().await;
    // An index an earlier process left on disk is opened first.
    if slot.index.read().await.is_none() {
        let mut guard = slot.index.clone().write_owned().await;
        let dir = pass.dir.clone();
        blocking(move || LocalIndexer::open_existing(&dir, &mut guard).map(drop)).await?;
    }
    let read = slot.index.clone().read_owned().await;
    let (pass, prepared) = if read.is_some() {
        blocking(move || {
            let prepared = pass.prepare(read.as_ref());
            drop(read);
            prepared.map(|p| (pass, p))
        })
        .await?
    } else {
        // A first pass: nothing to search yet, nothing to hold.
        drop(read);
        blocking(move || pass.prepare(None).map(|p| (pass, p))).await?
    };
    let mut guard = slot.index.clone().write_owned().await;
    blocking(move || {
        let result = pass.commit(prepared, &mut guard);
        drop(guard);
        result
    })
    .await
}

/// A pass after its walk, chunking and embedding, before anything is
/// committed.
struct Prepared {
    /// The manifest as it will be once committed (files that are gone removed).
    manifest: Manifest,
    /// A first pass's own text index (no index was open before it).
    own_text: Option<TextIndex>,
    staged: Staged,
}

/// What [`Pass::stage`] leaves for [`Pass::commit_staged`].
struct Staged {
    writer: tantivy::IndexWriter,
    model: Option<(String, usize)>,
    restart_vectors: bool,
    drop_vectors: bool,
    deleted_items: Vec<u32>,
    added: Vec<(u32, Vec<f32>)>,
    new_files: Vec<(String, FileEntry)>,
    next_item: u32,
    progress: IndexProgress,
}

/// What one IndexRepo pass needs, moved onto the blocking pool.
struct Pass {
    config: Arc<IndexerConfig>,
    dir: PathBuf,
    owner_id: String,
    workspace_id: String,
    root: PathBuf,
    embedder: Option<Arc<Embedder>>,
    progress: tokio::sync::mpsc::Sender<Result<IndexRepoResponse>>,
}

impl Pass {
    fn send(&self, progress: &IndexProgress, done: Option<&Manifest>) -> Result<()> {
        let message = IndexRepoResponse {
            progress: Some(*progress),
            done: done.is_some(),
            modes: done.map_or_else(Vec::new, |m| {
                let mut modes = vec![IndexMode::Text as i32];
                if m.vectors {
                    modes.extend([IndexMode::Vector as i32, IndexMode::Hybrid as i32]);
                }
                modes
            }),
            model: done.map_or_else(String::new, |m| m.model.clone()),
        };
        self.progress
            .blocking_send(Ok(message))
            .map_err(|_| IndexError::InvalidRequest("the caller went away; indexing stopped".into()))
    }

    /// The walk, chunking and embedding of a pass, against `existing` (the
    /// slot's index, under a read guard: searches go on) or, on a first pass,
    /// a new index of the pass's own. Nothing is committed.
    fn prepare(&self, existing: Option<&OpenIndex>) -> Result<Prepared> {
        std::fs::create_dir_all(&self.dir)
            .map_err(IndexError::io(format!("creating {}", self.dir.display())))?;
        let (mut manifest, own_text) = match existing {
            Some(open) => (open.manifest.clone(), None),
            None => (
                Manifest {
                    owner_id: self.owner_id.clone(),
                    workspace_id: self.workspace_id.clone(),
                    ..Manifest::default()
                },
                Some(TextIndex::open(&self.dir.join("text"))?),
            ),
        };
        let text = own_text
            .as_ref()
            .or(existing.map(|open| &open.text))
            .ok_or_else(|| IndexError::Backend("a pass without a text index".into()))?;
        let staged = self.stage(&mut manifest, text)?;
        Ok(Prepared {
            manifest,
            own_text,
            staged,
        })
    }

    /// Commits a prepared pass under the slot's write guard: text, vectors,
    /// then the manifest. Whatever happens, the slot then holds what is
    /// committed on disk.
    fn commit(&self, prepared: Prepared, slot: &mut Option<OpenIndex>) -> Result<()> {
        let Prepared {
            mut manifest,
            own_text,
            staged,
        } = prepared;
        let (text, mut vectors) = match (slot.take(), own_text) {
            (Some(open), _) => (open.text, open.vectors),
            (None, Some(text)) => (text, None),
            (None, None) => {
                return Err(IndexError::Busy(
                    "the index was closed while it was being rebuilt; index it again".into(),
                ));
            }
        };
        let result = self.commit_staged(staged, &mut manifest, &text, &mut vectors);
        let reopened = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                manifest = Manifest::load(&self.dir)?.unwrap_or(manifest);
                Err(e)
            }
        };
        if manifest.vectors && vectors.is_none() {
            vectors = Some(VectorStore::open(&self.dir.join("vectors"), manifest.dim)?);
        }
        *slot = Some(OpenIndex {
            manifest,
            text,
            vectors,
        });
        reopened
    }

    /// Walks, chunks and embeds, staging text changes in a tantivy writer
    /// (uncommitted); `manifest` (a copy) loses the files that are gone.
    fn stage(&self, manifest: &mut Manifest, text: &TextIndex) -> Result<Staged> {
        let config = &self.config;
        let (found, _) = files::walk(&self.root, config.max_file_bytes, config.max_files)?;
        let total: u64 = found.iter().map(|f| f.size).sum();
        if total > config.max_total_bytes {
            return Err(IndexError::TooLarge(format!(
                "the workspace holds {total} bytes of indexable files, more than the {} one index allows",
                config.max_total_bytes
            )));
        }
        let params = ChunkParams {
            window_lines: config.window_lines,
            window_overlap: config.window_overlap,
            max_chunk_lines: config.max_chunk_lines,
        };
        // The vector side of this pass: a new model (or none) starts over.
        let model = self.embedder.as_ref().map(|e| (e.name().to_owned(), e.dim()));
        let restart_vectors = match &model {
            Some((name, dim)) => !manifest.vectors || manifest.model != *name || manifest.dim != *dim,
            None => false,
        };
        let drop_vectors = model.is_none() && manifest.vectors;
        let mut progress = IndexProgress {
            files_seen: found.len() as u64,
            ..IndexProgress::default()
        };
        self.send(&progress, None)?;

        let writer = text.writer()?;
        let mut seen: HashSet<&str> = HashSet::with_capacity(found.len());
        let mut deleted_items: Vec<u32> = Vec::new();
        let mut pending: Vec<(u32, String)> = Vec::new();
        let mut new_files: Vec<(String, FileEntry)> = Vec::new();
        let mut next_item = manifest.next_item;
        for (n, file) in found.iter().enumerate() {
            seen.insert(file.rel_path.as_str());
            let bytes = match std::fs::read(&file.abs_path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::debug!(path = %file.rel_path, error = %e, "file vanished during indexing");
                    continue;
                }
            };
            let hash = hex::encode(Sha256::digest(&bytes));
            let old = manifest.files.get(&file.rel_path);
            if let Some(old) = old
                && old.hash == hash
                && !restart_vectors
            {
                progress.files_unchanged += 1;
            } else {
                if let Some(old) = old {
                    text.delete_path(&writer, &file.rel_path);
                    deleted_items.extend(&old.items);
                }
                let content = if bytes.contains(&0) || bytes.len() as u64 > config.max_file_bytes {
                    None
                } else {
                    String::from_utf8(bytes).ok()
                };
                let content = match content {
                    Some(c) if !files::read_text_is_generated(&c) => c,
                    _ => {
                        progress.files_skipped += 1;
                        if old.is_some() {
                            new_files.push((
                                file.rel_path.clone(),
                                FileEntry {
                                    hash,
                                    ..FileEntry::default()
                                },
                            ));
                        }
                        continue;
                    }
                };
                let language = files::language_of(&file.rel_path);
                let chunks = chunk_file(&content, language, params);
                let mut items = Vec::with_capacity(chunks.len());
                for chunk in &chunks {
                    let item = next_item;
                    next_item = next_item.checked_add(1).ok_or_else(|| {
                        IndexError::TooLarge("the index ran out of chunk ids; delete and rebuild it".into())
                    })?;
                    text.add(
                        &writer,
                        ChunkDoc {
                            item,
                            path: &file.rel_path,
                            language,
                            chunk,
                        },
                    )?;
                    if model.is_some() {
                        pending.push((item, embedding_text(&file.rel_path, &chunk.symbol, &chunk.text)));
                    }
                    items.push(item);
                }
                progress.files_indexed += 1;
                progress.chunks += chunks.len() as u64;
                progress.bytes += file.size;
                new_files.push((
                    file.rel_path.clone(),
                    FileEntry {
                        hash,
                        size: file.size,
                        language: language.to_owned(),
                        items,
                    },
                ));
            }
            if (n as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
                self.send(&progress, None)?;
            }
        }
        let removed: Vec<String> = manifest
            .files
            .keys()
            .filter(|p| !seen.contains(p.as_str()))
            .cloned()
            .collect();
        for path in &removed {
            text.delete_path(&writer, path);
            if let Some(old) = manifest.files.remove(path) {
                deleted_items.extend(old.items);
            }
        }
        progress.files_removed = removed.len() as u64;

        // Embeddings, batch by batch, before anything is committed.
        let mut added: Vec<(u32, Vec<f32>)> = Vec::with_capacity(pending.len());
        if let Some(embedder) = &self.embedder {
            let texts: Vec<&str> = pending.iter().map(|(_, t)| t.as_str()).collect();
            let before = progress.chunks_embedded;
            let vectors = embedder.embed_all(&texts, config.embed_batch, |done| {
                progress.chunks_embedded = before + done as u64;
                self.send(&progress, None)
            })?;
            added.extend(pending.iter().map(|(item, _)| *item).zip(vectors));
            ::metrics::counter!(metrics::CHUNKS_EMBEDDED_TOTAL).increment(pending.len() as u64);
        }

        Ok(Staged {
            writer,
            model,
            restart_vectors,
            drop_vectors,
            deleted_items,
            added,
            new_files,
            next_item,
            progress,
        })
    }

    fn commit_staged(
        &self,
        staged: Staged,
        manifest: &mut Manifest,
        text: &TextIndex,
        vectors: &mut Option<VectorStore>,
    ) -> Result<()> {
        let Staged {
            writer,
            model,
            restart_vectors,
            drop_vectors,
            deleted_items,
            added,
            new_files,
            next_item,
            progress,
        } = staged;
        text.commit(writer)?;
        if let Some((name, dim)) = &model {
            if restart_vectors && vectors.as_ref().is_none_or(|v| v.dim() != *dim) {
                *vectors = None;
                remove_dir(&self.dir.join("vectors"))?;
            }
            let store = match vectors {
                Some(store) => store,
                None => vectors.insert(VectorStore::open(&self.dir.join("vectors"), *dim)?),
            };
            store.write(restart_vectors, &deleted_items, &added)?;
            manifest.vectors = true;
            manifest.model.clone_from(name);
            manifest.dim = *dim;
        } else if drop_vectors {
            *vectors = None;
            remove_dir(&self.dir.join("vectors"))?;
            manifest.vectors = false;
            manifest.model.clear();
            manifest.dim = 0;
        }
        for (path, entry) in new_files {
            if entry.items.is_empty() && entry.language.is_empty() {
                manifest.files.remove(&path);
            } else {
                manifest.files.insert(path, entry);
            }
        }
        manifest.next_item = next_item;
        manifest.workspace_path = self.root.display().to_string();
        manifest.updated_at_unix_ms = now_unix_ms();
        manifest.save(&self.dir)?;
        for (kind, n) in [
            ("indexed", progress.files_indexed),
            ("unchanged", progress.files_unchanged),
            ("removed", progress.files_removed),
        ] {
            ::metrics::counter!(metrics::FILES_TOTAL, "kind" => kind).increment(n);
        }
        self.send(&progress, Some(manifest))?;
        Ok(())
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IndexError::io(format!("removing {}", dir.display()))(e)),
    }
}

/// The items of the files that pass `filters`, for a filtered vector search.
fn candidates(manifest: &Manifest, filters: &Filters) -> Option<RoaringBitmap> {
    if filters.is_empty() {
        return None;
    }
    Some(
        manifest
            .files
            .iter()
            .filter(|(path, f)| filters.accepts(path, &f.language))
            .flat_map(|(_, f)| f.items.iter().copied())
            .collect(),
    )
}

fn to_hit(hit: TextHit, score: f64, terms: &[String]) -> SearchHit {
    SearchHit {
        snippet: snippet_for_terms(&hit.content, hit.start_line, terms),
        path: hit.path,
        start_line: hit.start_line,
        end_line: hit.end_line,
        language: hit.language,
        symbol: hit.symbol,
        score,
    }
}

impl Indexer for LocalIndexer {
    async fn index_repo(&self, request: IndexRepoRequest) -> Result<ProgressStream> {
        let root = check_index_request(&request)?;
        let path = request.workspace_path.trim();
        let meta = tokio::fs::metadata(&root)
            .await
            .map_err(|_| IndexError::NotFound(format!("workspace_path {path} does not exist")))?;
        if !self.config.workspace_roots.is_empty() {
            let real = tokio::fs::canonicalize(&root)
                .await
                .map_err(|_| IndexError::NotFound(format!("workspace_path {path} does not exist")))?;
            let inside = self.config.workspace_roots.iter().any(|r| {
                let r = r.canonicalize().unwrap_or_else(|_| r.clone());
                real.starts_with(&r) && real != r
            });
            if !inside {
                return Err(IndexError::InvalidRequest(format!(
                    "workspace_path {path} is not a workspace of this host"
                )));
            }
        }
        if !meta.is_dir() {
            return Err(IndexError::InvalidRequest(format!(
                "workspace_path {path} is not a directory"
            )));
        }
        let embedder = match self.vector_model(&request)? {
            Some(name) => Some(self.embedder(&name).await?),
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let pass = Pass {
            config: self.config.clone(),
            dir: self.index_path(&request.owner_id, &request.workspace_id),
            owner_id: request.owner_id.clone(),
            workspace_id: request.workspace_id.clone(),
            root,
            embedder,
            progress: tx.clone(),
        };
        let slot = self.slot(&request.owner_id, &request.workspace_id);
        let span = tracing::info_span!("index_repo", owner_id = %request.owner_id, workspace_id = %request.workspace_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let started = Instant::now();
                let result = run_pass(pass, slot).await;
                let status = if result.is_ok() { "ok" } else { "error" };
                ::metrics::counter!(metrics::INDEX_RUNS_TOTAL, "status" => status).increment(1);
                match result {
                    Ok(()) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "indexed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "indexing failed");
                        let _ = tx.send(Err(e)).await;
                    }
                }
            },
            span,
        ));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn search(&self, request: SearchRequest) -> Result<SearchResponse> {
        let started = Instant::now();
        let (limit, filters) = self.validate_search(&request)?;
        let requested = IndexMode::try_from(request.mode).unwrap_or(IndexMode::Unspecified);
        let slot = self.slot(&request.owner_id, &request.workspace_id);
        let dir = self.index_path(&request.owner_id, &request.workspace_id);
        // Open under the write guard once; search under read guards.
        if slot.index.read().await.is_none() {
            let mut guard = slot.index.clone().write_owned().await;
            let exists = blocking(move || LocalIndexer::open_existing(&dir, &mut guard)).await?;
            if !exists {
                return Err(IndexError::NotFound(format!(
                    "workspace {} has no index; index it first",
                    request.workspace_id
                )));
            }
        }
        let guard = slot.index.clone().read_owned().await;
        let Some(open) = guard.as_ref() else {
            return Err(IndexError::NotFound(format!(
                "workspace {} has no index; index it first",
                request.workspace_id
            )));
        };
        let has_vectors = open.vectors.is_some() && open.manifest.vectors;
        let (mode, mut fallback_reason) = match requested {
            IndexMode::Unspecified if has_vectors => (IndexMode::Hybrid, String::new()),
            IndexMode::Unspecified | IndexMode::Text => (IndexMode::Text, String::new()),
            m if has_vectors => (m, String::new()),
            m => (
                IndexMode::Text,
                format!(
                    "this workspace was indexed for text only, so {} is not available; served text search (index it with INDEX_MODE_VECTOR)",
                    if m == IndexMode::Vector {
                        "vector search"
                    } else {
                        "hybrid search"
                    }
                ),
            ),
        };
        let mut mode = mode;
        let query_vector = if mode == IndexMode::Text {
            None
        } else {
            match self.embedder(&open.manifest.model).await {
                Ok(embedder) => {
                    let query = request.query.trim().to_owned();
                    Some(
                        blocking(move || Ok(embedder.embed(&[query.as_str()])?))
                            .await?
                            .into_iter()
                            .next()
                            .unwrap_or_default(),
                    )
                }
                Err(e) => {
                    fallback_reason = format!("{e}; served text search");
                    mode = IndexMode::Text;
                    None
                }
            }
        };
        let query = request.query.trim().to_owned();
        let params = SearchParams {
            exact_below: self.config.exact_search_below,
            search_k_factor: self.config.search_k_factor,
        };
        let hits = blocking(move || {
            let open = guard
                .as_ref()
                .ok_or_else(|| IndexError::Backend("index closed during search".into()))?;
            let vector_items = |depth: usize| -> Result<Vec<(u32, f32)>> {
                match (&open.vectors, &query_vector) {
                    (Some(store), Some(q)) => {
                        let c = candidates(&open.manifest, &filters);
                        store.search(q, depth, c.as_ref(), params)
                    }
                    _ => Ok(Vec::new()),
                }
            };
            let terms = query_terms(&query);
            match mode {
                IndexMode::Vector => {
                    let found = vector_items(limit)?;
                    let items: Vec<u32> = found.iter().map(|(i, _)| *i).collect();
                    let chunks = open.text.chunks(&items)?;
                    Ok(chunks
                        .into_iter()
                        .zip(found)
                        .map(|(hit, (_, score))| to_hit(hit, f64::from(score), &terms))
                        .collect::<Vec<_>>())
                }
                IndexMode::Hybrid => {
                    let depth = (limit * HYBRID_DEPTH).max(30);
                    let text_hits = open.text.search(&query, &filters, depth)?;
                    let vector_hits = vector_items(depth)?;
                    let evidence: Vec<TextEvidence> = text_hits
                        .iter()
                        .map(|h| TextEvidence {
                            item: h.item,
                            bm25: h.score,
                            coverage: term_coverage(&terms, &[&h.content, &h.symbol, &h.path]),
                        })
                        .collect();
                    let fused = fusion::fuse(&evidence, &vector_hits, limit);
                    let mut by_item: HashMap<u32, TextHit> =
                        text_hits.into_iter().map(|h| (h.item, h)).collect();
                    let missing: Vec<u32> = fused
                        .iter()
                        .map(|(i, _)| *i)
                        .filter(|i| !by_item.contains_key(i))
                        .collect();
                    for hit in open.text.chunks(&missing)? {
                        by_item.insert(hit.item, hit);
                    }
                    Ok(fused
                        .into_iter()
                        .filter_map(|(item, score)| {
                            by_item.remove(&item).map(|h| to_hit(h, f64::from(score), &terms))
                        })
                        .collect())
                }
                IndexMode::Text | IndexMode::Unspecified => Ok(open
                    .text
                    .search(&query, &filters, limit)?
                    .into_iter()
                    .map(|h| {
                        let score = f64::from(h.score);
                        to_hit(h, score, &terms)
                    })
                    .collect()),
            }
        })
        .await;
        let label = match mode {
            IndexMode::Vector => "vector",
            IndexMode::Hybrid => "hybrid",
            IndexMode::Text | IndexMode::Unspecified => "text",
        };
        ::metrics::counter!(metrics::SEARCHES_TOTAL, "mode" => label, "status" => if hits.is_ok() { "ok" } else { "error" })
            .increment(1);
        ::metrics::histogram!(metrics::SEARCH_SECONDS, "mode" => label)
            .record(started.elapsed().as_secs_f64());
        Ok(SearchResponse {
            hits: hits?,
            mode: mode as i32,
            fallback_reason,
        })
    }

    async fn index_status(&self, request: IndexStatusRequest) -> Result<IndexStatusResponse> {
        validate_id("owner_id", &request.owner_id)?;
        validate_id("workspace_id", &request.workspace_id)?;
        let dir = self.index_path(&request.owner_id, &request.workspace_id);
        let slot = self.slot(&request.owner_id, &request.workspace_id);
        let guard = slot.index.clone().read_owned().await;
        blocking(move || {
            let manifest = match guard.as_ref() {
                Some(open) => Some(open.manifest.clone()),
                None => Manifest::load(&dir)?,
            };
            drop(guard);
            let Some(m) = manifest else {
                return Ok(IndexStatusResponse::default());
            };
            let mut modes = vec![IndexMode::Text as i32];
            if m.vectors {
                modes.extend([IndexMode::Vector as i32, IndexMode::Hybrid as i32]);
            }
            Ok(IndexStatusResponse {
                exists: true,
                modes,
                files: m.files.len() as u64,
                chunks: m.chunks(),
                size_bytes: dir_size(&dir),
                model: m.model.clone(),
                updated_at: Some(prost_types::Timestamp {
                    seconds: m.updated_at_unix_ms.div_euclid(1000),
                    nanos: i32::try_from(m.updated_at_unix_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
                }),
            })
        })
        .await
    }

    async fn delete_index(&self, request: DeleteIndexRequest) -> Result<DeleteIndexResponse> {
        validate_id("owner_id", &request.owner_id)?;
        validate_id("workspace_id", &request.workspace_id)?;
        let dir = self.index_path(&request.owner_id, &request.workspace_id);
        let slot = self.slot(&request.owner_id, &request.workspace_id);
        // After the pass in progress, if any: its files go too.
        let _pass = slot.pass.lock().await;
        let mut guard = slot.index.clone().write_owned().await;
        let deleted = blocking(move || {
            // Close tantivy and LMDB before their files go.
            *guard = None;
            let existed = dir.join(manifest::FILE_NAME).exists() || dir.exists();
            remove_dir(&dir)?;
            drop(guard);
            Ok(existed)
        })
        .await?;
        Ok(DeleteIndexResponse { deleted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names() {
        assert!(validate_id("owner_id", "user-1_a.b").is_ok());
        for bad in ["", "..", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(validate_id("owner_id", bad).is_err(), "{bad}");
        }
    }
}
