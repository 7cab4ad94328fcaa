//! Sentence-transformer embeddings computed in Rust: a BERT-family model
//! (candle-transformers) and its `tokenizer.json` (tokenizers), padded to the
//! longest input of a batch and pooled with the attention mask (mean, or CLS
//! when the model's pooling config says so), then L2-normalised. Reproduces
//! sentence-transformers to float precision.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{IndexError, Result};

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
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    dim: usize,
    device: Device,
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
    std::fs::read(&path).map_err(IndexError::io(format!("reading {}", path.display())))
}

impl Embedder {
    /// Loads the model in `dir` (`config.json`, `tokenizer.json`,
    /// `model.safetensors`; optional `1_Pooling/config.json` and
    /// `sentence_bert_config.json`). Inputs are cut at `max_tokens`.
    pub fn load(dir: &Path, name: &str, max_tokens: usize) -> Result<Self> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_slice(&read(dir, "config.json")?).map_err(|e| {
            IndexError::FailedPrecondition(format!(
                "model {name}: config.json is not a BERT-family config ({e})"
            ))
        })?;
        let dim = serde_json::from_slice::<serde_json::Value>(&read(dir, "config.json")?)
            .ok()
            .and_then(|v| v.get("hidden_size").and_then(serde_json::Value::as_u64))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                IndexError::FailedPrecondition(format!("model {name}: config.json has no hidden_size"))
            })?;
        let max_positions = serde_json::from_slice::<serde_json::Value>(&read(dir, "config.json")?)
            .ok()
            .and_then(|v| {
                v.get("max_position_embeddings")
                    .and_then(serde_json::Value::as_u64)
            })
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(512);
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
            IndexError::FailedPrecondition(format!("model {name}: tokenizer.json cannot be read ({e})"))
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
            .map_err(|e| IndexError::FailedPrecondition(format!("model {name}: truncation ({e})")))?;

        let weights = read(dir, "model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            IndexError::FailedPrecondition(format!("model {name}: the weights are not a BERT model ({e})"))
        })?;
        Ok(Self {
            name: name.to_owned(),
            model,
            tokenizer,
            pooling,
            dim,
            device,
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
    pub fn embed_all(
        &self,
        texts: &[&str],
        batch: usize,
        mut progress: impl FnMut(usize) -> Result<()>,
    ) -> Result<Vec<Vec<f32>>> {
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
            .map_err(|e| IndexError::Backend(format!("tokenizing: {e}")))?;
        let n = encodings.len();
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            let (i, m) = (e.get_ids(), e.get_attention_mask());
            ids.extend(i.iter().copied().chain(std::iter::repeat(0)).take(len));
            mask.extend(m.iter().copied().chain(std::iter::repeat(0)).take(len));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let normalized = pooled.broadcast_div(&norms)?;
        Ok(normalized.to_vec2::<f32>()?)
    }
}
