//! The vector index: arroy (cosine) on an LMDB environment (heed), one per
//! workspace. Small indexes are searched exactly (a scan, recall 1); larger
//! ones through arroy's trees with a `search_k` chosen for recall. The LMDB
//! map starts small and doubles whenever a write hits `MDB_MAP_FULL`.

use std::{num::NonZeroUsize, path::Path};

use arroy::{Database, Reader, Writer, distances::Cosine};
use heed::{CommitOrAbort, Env, EnvOpenOptions, MdbError};
use rand_arroy::{SeedableRng as _, rngs::StdRng};
use roaring::RoaringBitmap;

use crate::error::{IndexError, Result};

/// The arroy index inside the database (one per environment).
const ARROY_INDEX: u16 = 0;
/// The first map size; doubled on `MDB_MAP_FULL`.
const INITIAL_MAP_BYTES: usize = 64 * 1024 * 1024;
/// The largest map size tried.
const MAX_MAP_BYTES: usize = 1 << 40;

/// How a query is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchParams {
    /// Below this many vectors the search is exact.
    pub exact_below: u64,
    /// `search_k = limit × n_trees × search_k_factor`.
    pub search_k_factor: usize,
}

/// The vectors of one workspace.
pub struct VectorStore {
    env: Env,
    db: Database<'static, Cosine>,
    dim: usize,
    map_size: usize,
}

impl std::fmt::Debug for VectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorStore")
            .field("dim", &self.dim)
            .field("map_size", &self.map_size)
            .finish_non_exhaustive()
    }
}

fn page_multiple(bytes: usize) -> usize {
    const PAGE: usize = 64 * 1024;
    bytes.div_ceil(PAGE) * PAGE
}

fn is_map_full(e: &arroy::Error) -> bool {
    matches!(e, arroy::Error::Heed(heed::Error::Mdb(MdbError::MapFull)))
}

impl VectorStore {
    /// Opens (or creates) the store in `dir` for vectors of `dim` dimensions.
    ///
    /// The caller must open each directory at most once at a time in this
    /// process (the service keeps one open store per index).
    pub fn open(dir: &Path, dim: usize) -> Result<Self> {
        Self::open_sized(dir, dim, INITIAL_MAP_BYTES)
    }

    /// [`VectorStore::open`] with a first map size of `initial_map` bytes.
    pub fn open_sized(dir: &Path, dim: usize, initial_map: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(IndexError::io(format!("creating {}", dir.display())))?;
        let existing = std::fs::metadata(dir.join("data.mdb")).map_or(0, |m| m.len());
        let map_size = page_multiple(initial_map.max(usize::try_from(existing).unwrap_or(0) * 2));
        let mut options = EnvOpenOptions::new();
        options.map_size(map_size).max_dbs(1);
        // SAFETY: heed marks opening unsafe because LMDB must not open the
        // same file twice in one process nor see it changed underneath. Each
        // index directory is opened once, by the indexer that owns it, and
        // is held in its cache until deleted (see `LocalIndexer`).
        #[allow(unsafe_code)]
        let env = unsafe { options.open(dir) }?;
        let wtxn = env.write_txn()?;
        let db: Database<'static, Cosine> = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
                opener
                    .create_database(wtxn, None)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })?
            .unwrap_commit();
        Ok(Self {
            env,
            db,
            dim,
            map_size,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes on disk.
    pub fn disk_size(&self) -> u64 {
        self.env.real_disk_size().unwrap_or(0)
    }

    /// Removes `delete`, adds `add` (unit vectors of `dim`), rebuilds the
    /// trees and commits; with `clear`, every earlier vector goes first.
    /// Needs `&mut self`: no read transaction can be open while the map grows.
    pub fn write(&mut self, clear: bool, delete: &[u32], add: &[(u32, Vec<f32>)]) -> Result<()> {
        if let Some((_, v)) = add.iter().find(|(_, v)| v.len() != self.dim) {
            return Err(IndexError::Backend(format!(
                "vector of {} dimensions for an index of {}",
                v.len(),
                self.dim
            )));
        }
        loop {
            match self.try_write(clear, delete, add) {
                Ok(()) => return Ok(()),
                Err(e) if is_map_full(&e) && self.map_size < MAX_MAP_BYTES => {
                    let grown = page_multiple(self.map_size * 2);
                    tracing::info!(from = self.map_size, to = grown, "lmdb map full; growing it");
                    // SAFETY: LMDB allows resizing an open environment while no
                    // transaction is active in this process. The failed write
                    // transaction was dropped (aborted) by `try_write`, and
                    // `&mut self` means no reader of this store is alive.
                    #[allow(unsafe_code)]
                    unsafe { self.env.resize(grown) }?;
                    self.map_size = grown;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn try_write(&self, clear: bool, delete: &[u32], add: &[(u32, Vec<f32>)]) -> arroy::Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let writer = Writer::<Cosine>::new(self.db, ARROY_INDEX, self.dim);
        if clear {
            writer.clear(&mut wtxn)?;
        }
        for &item in delete {
            writer.del_item(&mut wtxn, item)?;
        }
        for (item, vector) in add {
            writer.add_item(&mut wtxn, *item, vector)?;
        }
        if writer.need_build(&wtxn)? {
            let mut rng = StdRng::seed_from_u64(42);
            writer.builder(&mut rng).build(&mut wtxn)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    pub fn len(&self) -> Result<u64> {
        let rtxn = self.env.read_txn()?;
        match Reader::<Cosine>::open(&rtxn, ARROY_INDEX, self.db) {
            Ok(reader) => Ok(reader.n_items()),
            Err(arroy::Error::MissingMetadata(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The `limit` nearest items to `query` (a unit vector), with their
    /// cosine similarity, best first; only `candidates` when given.
    pub fn search(
        &self,
        query: &[f32],
        limit: usize,
        candidates: Option<&RoaringBitmap>,
        params: SearchParams,
    ) -> Result<Vec<(u32, f32)>> {
        if limit == 0 || query.len() != self.dim {
            return Ok(Vec::new());
        }
        let rtxn = self.env.read_txn()?;
        let reader = match Reader::<Cosine>::open(&rtxn, ARROY_INDEX, self.db) {
            Ok(reader) => reader,
            Err(arroy::Error::MissingMetadata(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let searched = candidates.map_or(reader.n_items(), RoaringBitmap::len);
        if searched < params.exact_below {
            return exact(&reader, &rtxn, query, limit, candidates);
        }
        let mut q = reader.nns(limit);
        let search_k = limit
            .saturating_mul(reader.n_trees().max(1))
            .saturating_mul(params.search_k_factor);
        if let Some(k) = NonZeroUsize::new(search_k) {
            q.search_k(k);
        }
        if let Some(c) = candidates {
            q.candidates(c);
        }
        let found = q.by_vector(&rtxn, query)?;
        // arroy's cosine distance is (1 - cos) / 2.
        Ok(found.into_iter().map(|(item, d)| (item, 1.0 - 2.0 * d)).collect())
    }

    /// Exact nearest neighbours over every stored vector (the reference of
    /// the recall bench, and the search of small indexes).
    pub fn search_exact(
        &self,
        query: &[f32],
        limit: usize,
        candidates: Option<&RoaringBitmap>,
    ) -> Result<Vec<(u32, f32)>> {
        let rtxn = self.env.read_txn()?;
        let reader = match Reader::<Cosine>::open(&rtxn, ARROY_INDEX, self.db) {
            Ok(reader) => reader,
            Err(arroy::Error::MissingMetadata(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        exact(&reader, &rtxn, query, limit, candidates)
    }
}

fn exact(
    reader: &Reader<'_, Cosine>,
    rtxn: &heed::RoTxn<'_>,
    query: &[f32],
    limit: usize,
    candidates: Option<&RoaringBitmap>,
) -> Result<Vec<(u32, f32)>> {
    let qn = query.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let mut scored: Vec<(u32, f32)> = Vec::new();
    let score = |v: &[f32]| {
        let dot: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
        let vn = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        dot / (vn * qn)
    };
    match candidates {
        Some(c) => {
            for item in c {
                if let Some(v) = reader.item_vector(rtxn, item)? {
                    scored.push((item, score(&v)));
                }
            }
        }
        None => {
            for entry in reader.iter(rtxn)? {
                let (item, v) = entry?;
                scored.push((item, score(&v)));
            }
        }
    }
    let keep = limit.min(scored.len());
    if keep == 0 {
        return Ok(Vec::new());
    }
    scored.select_nth_unstable_by(keep - 1, |a, b| b.1.total_cmp(&a.1));
    scored.truncate(keep);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(scored)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn writes_grow_the_map_and_search_finds_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = VectorStore::open_sized(dir.path(), 64, 1024 * 1024).unwrap();
        assert!(store.is_empty().unwrap());
        assert!(
            store
                .search(
                    &[0.0; 64],
                    5,
                    None,
                    SearchParams {
                        exact_below: 10,
                        search_k_factor: 1
                    }
                )
                .unwrap()
                .is_empty()
        );
        // 1 MiB is too small for 5k x 64 floats with trees: the map must grow.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2_000) as f32 / 1_000.0 - 1.0
        };
        let items: Vec<(u32, Vec<f32>)> = (0..5_000u32)
            .map(|i| (i, unit((0..64).map(|_| next()).collect())))
            .collect();
        store.write(false, &[], &items).unwrap();
        assert!(store.map_size > 1024 * 1024, "map grew to {}", store.map_size);
        assert_eq!(store.len().unwrap(), 5_000);
        let q = items[123].1.clone();
        let exact = store.search_exact(&q, 10, None).unwrap();
        assert_eq!(exact[0].0, 123);
        assert!((exact[0].1 - 1.0).abs() < 1e-4);
        let approx = store
            .search(
                &q,
                10,
                None,
                SearchParams {
                    exact_below: 100,
                    search_k_factor: 15,
                },
            )
            .unwrap();
        assert_eq!(approx[0].0, 123);
        let only: RoaringBitmap = [5u32, 6, 7].into_iter().collect();
        let filtered = store.search_exact(&q, 10, Some(&only)).unwrap();
        assert_eq!(filtered.len(), 3);
        store.write(false, &[123], &[]).unwrap();
        assert_ne!(store.search_exact(&q, 1, None).unwrap()[0].0, 123);
        store.write(true, &[], &items[..10]).unwrap();
        assert_eq!(store.len().unwrap(), 10);
    }
}
