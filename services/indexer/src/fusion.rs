//! Hybrid ranking: text and vector results fused by a convex combination of
//! normalised scores (Bruch, Gai and Ingber, "An Analysis of Fusion Functions
//! for Hybrid Retrieval", 2023), with the text side weighted by how much of
//! the query each chunk contains.
//!
//! Reciprocal rank fusion was tried first and lost to vector search alone on
//! the labelled sets of `tests/index.rs`: it keeps only ranks, so on a
//! sentence query the BM25 ranking of chunks that share one common word with
//! it counts as much as a confident vector ranking. Here:
//! - the vector side is the cosine, min-max normalised over the candidates;
//! - the text side is BM25 divided by the best BM25, times the square of the
//!   share of the query's distinct terms the chunk holds (its content, symbol
//!   and path, through the code-aware tokenizer): an identifier query whose
//!   every part is found counts fully, a chunk holding one word of an
//!   eight-word sentence counts 1/64 of its normalised BM25.
//!
//! Ties break on the item id, so the order is deterministic.

use std::collections::{HashMap, HashSet};

use crate::tokenize::tokens;

/// The weight of the vector side; the text side gets the rest.
pub const VECTOR_WEIGHT: f32 = 0.5;
/// The power the text side's query-term coverage is raised to.
pub const COVERAGE_EXPONENT: i32 = 2;

/// One text hit's evidence: its item, BM25 score and query-term coverage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextEvidence {
    pub item: u32,
    pub bm25: f32,
    pub coverage: f32,
}

/// The share, in `0.0..=1.0`, of `query_terms` found among the code-aware
/// tokens of `fields` (a chunk's content, symbol and path).
pub fn term_coverage(query_terms: &[String], fields: &[&str]) -> f32 {
    if query_terms.is_empty() {
        return 0.0;
    }
    let mut found: HashSet<&str> = HashSet::new();
    let wanted: HashSet<&str> = query_terms.iter().map(String::as_str).collect();
    for field in fields {
        for token in tokens(field) {
            if let Some(term) = wanted.get(token.text.as_str()) {
                found.insert(term);
                if found.len() == wanted.len() {
                    return 1.0;
                }
            }
        }
    }
    found.len() as f32 / wanted.len() as f32
}

/// Fuses a text ranking and a vector ranking (`(item, cosine)`, best first)
/// into at most `limit` items with their fused scores, best first.
pub fn fuse(text: &[TextEvidence], vector: &[(u32, f32)], limit: usize) -> Vec<(u32, f32)> {
    let mut scores: HashMap<u32, f32> = HashMap::new();
    let best_bm25 = text.iter().map(|t| t.bm25).fold(0.0_f32, f32::max);
    if best_bm25 > 0.0 {
        for t in text {
            let weight = t.coverage.clamp(0.0, 1.0).powi(COVERAGE_EXPONENT);
            *scores.entry(t.item).or_default() += (1.0 - VECTOR_WEIGHT) * weight * t.bm25 / best_bm25;
        }
    }
    let (low, high) = vector
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &(_, c)| {
            (lo.min(c), hi.max(c))
        });
    for &(item, cosine) in vector {
        let normalised = if high > low {
            (cosine - low) / (high - low)
        } else {
            1.0
        };
        *scores.entry(item).or_default() += VECTOR_WEIGHT * normalised;
    }
    let mut fused: Vec<(u32, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.truncate(limit);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::query_terms;

    fn evidence(item: u32, bm25: f32, coverage: f32) -> TextEvidence {
        TextEvidence { item, bm25, coverage }
    }

    #[test]
    fn coverage_counts_distinct_query_terms_across_naming_styles() {
        let terms = query_terms("parseConfig");
        assert_eq!(term_coverage(&terms, &["fn parse_config(text: &str)"]), 1.0);
        let partial = term_coverage(&terms, &["let config = load();"]);
        assert!(partial > 0.0 && partial < 1.0, "{partial}");
        let sentence = query_terms("load application preferences from disk");
        let one = term_coverage(&sentence, &["def load_user(): pass"]);
        assert!((one - 1.0 / sentence.len() as f32).abs() < 1e-6, "{one}");
        assert_eq!(term_coverage(&[], &["anything"]), 0.0);
        assert_eq!(term_coverage(&terms, &["", "path/only.rs"]), 0.0);
    }

    #[test]
    fn a_confident_vector_ranking_beats_a_chunk_sharing_one_word() {
        // Item 2 is the vector's second best and the text's best, but holds a
        // quarter of the query's terms; item 1 is the vector's best.
        let text = [evidence(2, 9.0, 0.25), evidence(3, 4.0, 0.25)];
        let vector = [(1, 0.62), (2, 0.55), (4, 0.20)];
        let order: Vec<u32> = fuse(&text, &vector, 10).iter().map(|(i, _)| *i).collect();
        assert_eq!(order[0], 1, "{order:?}");
    }

    #[test]
    fn a_full_identifier_match_lifts_a_chunk_the_vector_ranked_lower() {
        let text = [evidence(7, 12.0, 1.0), evidence(1, 3.0, 0.5)];
        let vector = [(1, 0.70), (5, 0.66), (7, 0.60), (9, 0.30)];
        let fused = fuse(&text, &vector, 10);
        assert_eq!(fused[0].0, 7, "{fused:?}");
    }

    #[test]
    fn either_side_alone_keeps_its_order_and_ties_break_on_the_item() {
        let vector = [(3, 0.9), (1, 0.5), (2, 0.1)];
        let order: Vec<u32> = fuse(&[], &vector, 10).iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [3, 1, 2]);
        let text = [evidence(5, 8.0, 1.0), evidence(4, 2.0, 1.0)];
        let order: Vec<u32> = fuse(&text, &[], 10).iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [5, 4]);
        let same = [(9, 0.4), (8, 0.4)];
        let order: Vec<u32> = fuse(&[], &same, 10).iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [8, 9]);
        assert!(fuse(&[], &[], 5).is_empty());
        assert_eq!(fuse(&text, &vector, 2).len(), 2);
    }

    #[test]
    fn scores_stay_within_zero_and_one() {
        let text = [evidence(1, 5.0, 1.0), evidence(2, 0.0, 0.0)];
        let vector = [(1, 1.0), (2, -1.0)];
        for (_, score) in fuse(&text, &vector, 10) {
            assert!((0.0..=1.0).contains(&score), "{score}");
        }
    }
}
