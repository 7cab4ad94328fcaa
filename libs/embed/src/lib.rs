//! Sentence-transformer embeddings computed in Rust: a BERT-family model
//! (our encoder, [`bert`]) and its `tokenizer.json` (tokenizers); the
//! tokens the attention mask keeps are encoded and pooled (mean, or CLS
//! when the model's pooling config says so), then L2-normalised. Reproduces
//! sentence-transformers to float precision.
//!
//! Its own crate so that the dev profile can build it optimised: the
//! encoder's loops are ~8x slower at opt-level 0.
#![deny(unsafe_code)]

pub mod bert;
pub mod error;

pub use error::{EmbedError, Result};

use std::path::Path;

use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::bert::{Bert, BertConfig, Packed};

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the token vectors the attention mask keeps.
    Mean,
    /// The first (`[CLS]`) token's vector.
    Cls,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// A loaded embedding model. `embed` is CPU-bound: call it on a blocking pool.
pub struct Embedder {
    name: String,
    model: Bert,
    tokenizer: Tokenizer,
    pooling: Pooling,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("pooling", &self.pooling)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(EmbedError::io(format!("reading {}", path.display())))
}

impl Embedder {
    /// Loads the model in `dir` (`config.json`, `tokenizer.json`,
    /// `model.safetensors`; optional `1_Pooling/config.json` and
    /// `sentence_bert_config.json`). Inputs are cut at `max_tokens`.
    pub fn load(dir: &Path, name: &str, max_tokens: usize) -> Result<Self> {
        let config = BertConfig::from_json(name, &read(dir, "config.json")?)?;
        let dim = config.hidden_size;
        let max_positions = config.max_position_embeddings;
        let pooling = match std::fs::read(dir.join("1_Pooling/config.json")) {
            Ok(bytes) => match serde_json::from_slice::<PoolingConfig>(&bytes) {
                Ok(p) if p.pooling_mode_cls_token => Pooling::Cls,
                _ => Pooling::Mean,
            },
            Err(_) => Pooling::Mean,
        };
        let seq_limit = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<SentenceBertConfig>(&b).ok())
            .and_then(|c| c.max_seq_length)
            .unwrap_or(max_positions);
        let max_length = max_tokens.min(seq_limit).min(max_positions);

        let mut tokenizer = Tokenizer::from_bytes(read(dir, "tokenizer.json")?).map_err(|e| {
            EmbedError::InvalidModel(format!("model {name}: tokenizer.json cannot be read ({e})"))
        })?;
        // The shipped tokenizer.json pads every input to a fixed length; pad
        // to the longest in the batch and let the attention mask do the rest.
        let mut padding = tokenizer.get_padding().cloned().unwrap_or_default();
        padding.strategy = PaddingStrategy::BatchLongest;
        tokenizer.with_padding(Some(PaddingParams { ..padding }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::InvalidModel(format!("model {name}: truncation ({e})")))?;

        let weights = read(dir, "model.safetensors")?;
        let model = Bert::load(name, config, &weights)?;
        Ok(Self {
            name: name.to_owned(),
            model,
            tokenizer,
            pooling,
            dim,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// One unit-length vector per text, in order, computed in batches of
    /// `batch` texts of similar length (longest first), so that little
    /// padding is computed; `progress` is called after each batch with the
    /// number of texts done.
    /// `progress` may fail with the caller's own error (say, the caller went
    /// away), which stops the work and is returned as is.
    pub fn embed_all<E: From<EmbedError>>(
        &self,
        texts: &[&str],
        batch: usize,
        mut progress: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<Vec<f32>>, E> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let mut done = 0;
        for group in order.chunks(batch.max(1)) {
            let inputs: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            for (&i, vector) in group.iter().zip(self.embed(&inputs)?) {
                out[i] = vector;
            }
            done += group.len();
            progress(done)?;
        }
        Ok(out)
    }

    /// One unit-length vector per text, in order (one batch).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Backend(format!("tokenizing: {e}")))?;
        let packed = Packed::from_masked(encodings.iter().map(|e| (e.get_ids(), e.get_attention_mask())));
        let (dim, pooling) = (self.dim, self.pooling);
        self.model
            .forward(&packed, |hidden| pool(hidden, &packed.offsets, dim, pooling))
    }
}

/// One unit-length vector per input from the packed last hidden state:
/// the mean of its tokens (or its first token, CLS), L2-normalised. An
/// input with no tokens gets the zero vector.
fn pool(hidden: &[f32], offsets: &[usize], dim: usize, pooling: Pooling) -> Vec<Vec<f32>> {
    offsets
        .windows(2)
        .map(|w| {
            let rows = &hidden[w[0] * dim..w[1] * dim];
            let mut v = vec![0.0f32; dim];
            match pooling {
                Pooling::Cls => {
                    if let Some(first) = rows.get(..dim) {
                        v.copy_from_slice(first);
                    }
                }
                Pooling::Mean => {
                    for row in rows.chunks_exact(dim) {
                        for (a, x) in v.iter_mut().zip(row) {
                            *a += x;
                        }
                    }
                    let count = (w[1] - w[0]).max(1) as f32;
                    v.iter_mut().for_each(|a| *a /= count);
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn pooling_is_masked_mean_or_first_token_then_unit_length() {
        // Two inputs of 2 and 1 tokens, dim 2, then an empty one.
        let hidden = [3.0, 0.0, 1.0, 4.0, -2.0, 0.0];
        let offsets = [0, 2, 3, 3];
        let mean = pool(&hidden, &offsets, 2, Pooling::Mean);
        assert_eq!(
            mean,
            vec![
                vec![2.0 / 8f32.sqrt(), 2.0 / 8f32.sqrt()],
                vec![-1.0, 0.0],
                vec![0.0, 0.0]
            ]
        );
        let cls = pool(&hidden, &offsets, 2, Pooling::Cls);
        assert_eq!(cls, vec![vec![1.0, 0.0], vec![-1.0, 0.0], vec![0.0, 0.0]]);
    }

    /// The model, or None (loudly) when it is not installed outside CI.
    fn model() -> Option<PathBuf> {
        let dir = std::env::var_os("REPORUNNER_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.models"))
            .join("all-MiniLM-L6-v2");
        let present = ["config.json", "tokenizer.json", "model.safetensors"]
            .iter()
            .all(|f| dir.join(f).is_file());
        if present {
            return Some(dir);
        }
        let message = format!(
            "the embedding model is missing at {} (run `make models` or set REPORUNNER_MODEL_DIR)",
            dir.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}; CI must run the embedding tests");
        }
        eprintln!("\n!!!!!!!! SKIPPING an embedding test: {message} !!!!!!!!\n");
        None
    }

    /// Vectors Python sentence-transformers computed for three texts (a
    /// short one, ~540 tokens of code that are cut at 256, and unicode).
    #[test]
    fn vectors_match_sentence_transformers() {
        let Some(dir) = model() else { return };
        let reference: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/minilm_reference.json"))
                .expect("reference JSON");
        let texts: Vec<&str> = reference["texts"]
            .as_array()
            .expect("texts")
            .iter()
            .map(|t| t.as_str().expect("text"))
            .collect();
        let want: Vec<Vec<f32>> = reference["vectors"]
            .as_array()
            .expect("vectors")
            .iter()
            .map(|v| {
                v.as_array()
                    .expect("vector")
                    .iter()
                    .map(|x| x.as_f64().expect("number") as f32)
                    .collect()
            })
            .collect();
        let embedder = Embedder::load(&dir, "all-MiniLM-L6-v2", 256).expect("model loads");
        assert_eq!((embedder.dim(), embedder.pooling()), (384, Pooling::Mean));
        let together = embedder.embed(&texts).expect("embeds");
        let alone: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| embedder.embed(&[t]).expect("embeds").remove(0))
            .collect();
        for (got, label) in [(&together, "one batch"), (&alone, "one by one")] {
            for ((g, w), text) in got.iter().zip(&want).zip(&texts) {
                assert_eq!(g.len(), 384);
                let cosine: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
                let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(
                    cosine >= 0.99999 && diff <= 1e-4,
                    "{label}: cosine {cosine}, max abs diff {diff} for {:?}",
                    text.chars().take(40).collect::<String>()
                );
            }
        }
    }
}
