//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a
//! request runs, and panics only on a bug.

use std::{
    collections::HashMap,
    path::{Component, Path},
    sync::{Arc, Mutex},
};

use prost::Message;
use reporunner_proto::index::v1::{DeleteIndexRequest, IndexRepoRequest, IndexStatusRequest, SearchRequest};

use crate::{LocalIndexer, check_index_request, config::IndexerConfig, text, tokenize, validate_id};

/// Code a search's snippets are cut from.
const CONTENT: &str = "fn load_user(id: u32) -> User {\n    let row = db.query(\"SELECT * FROM users\")?;\n    User::from(row)\n}\n";

/// An indexer as configured by default, without its directories: the
/// checks below never touch them.
fn indexer() -> LocalIndexer {
    LocalIndexer {
        config: Arc::new(IndexerConfig::default().resolve(Path::new("/nonexistent/data"))),
        slots: Mutex::new(HashMap::new()),
        embedders: Mutex::new(HashMap::new()),
    }
}

/// An accepted owner and workspace id name a directory right below the
/// index directory.
fn check_index_path(indexer: &LocalIndexer, owner_id: &str, workspace_id: &str) {
    let dir = indexer.index_path(owner_id, workspace_id);
    let rel = dir
        .strip_prefix(&indexer.config.index_dir)
        .unwrap_or_else(|_| panic!("{} is outside the index directory", dir.display()));
    assert_eq!(
        rel.components().count(),
        2,
        "{} is not two levels down",
        dir.display()
    );
    assert!(
        rel.components().all(|c| matches!(c, Component::Normal(_))),
        "{} climbs out of the index directory",
        dir.display()
    );
}

/// Decodes `data` as one of the index service's requests, picked by the
/// first byte (Search, IndexRepo, IndexStatus, DeleteIndex), and runs the
/// checks the indexer makes before it opens an index or a workspace.
pub fn validate_request(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let indexer = indexer();
    match selector % 4 {
        0 => {
            let Ok(request) = SearchRequest::decode(message) else {
                return;
            };
            let Ok((limit, filters)) = indexer.validate_search(&request) else {
                return;
            };
            assert!(limit > 0);
            check_index_path(&indexer, &request.owner_id, &request.workspace_id);
            let terms = tokenize::query_terms(&request.query);
            assert!(!terms.is_empty(), "an accepted query has no terms");
            let _ = tokenize::tokens(&request.query);
            let _ = text::snippet(CONTENT, 1, &request.query);
            let _ = filters.accepts("src/main.rs", "rust");
        }
        1 => {
            let Ok(request) = IndexRepoRequest::decode(message) else {
                return;
            };
            let Ok(root) = check_index_request(&request) else {
                return;
            };
            assert!(root.is_absolute());
            check_index_path(&indexer, &request.owner_id, &request.workspace_id);
            let _ = indexer.vector_model(&request);
        }
        2 => {
            let Ok(request) = IndexStatusRequest::decode(message) else {
                return;
            };
            if validate_id("owner_id", &request.owner_id).is_ok()
                && validate_id("workspace_id", &request.workspace_id).is_ok()
            {
                check_index_path(&indexer, &request.owner_id, &request.workspace_id);
            }
        }
        _ => {
            let Ok(request) = DeleteIndexRequest::decode(message) else {
                return;
            };
            if validate_id("owner_id", &request.owner_id).is_ok()
                && validate_id("workspace_id", &request.workspace_id).is_ok()
            {
                check_index_path(&indexer, &request.owner_id, &request.workspace_id);
            }
        }
    }
}
