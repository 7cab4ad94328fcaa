//! A BERT-family encoder (the forward pass sentence-transformers runs), on
//! the CPU, in f32.
//!
//! Weights come from `model.safetensors` (F32, or F16/BF16 widened at load),
//! with or without a `bert.` prefix; the shape from `config.json`. The
//! matrix products run on `gemm` (AVX-512/AVX2 kernels picked at run time);
//! everything else is plain loops over slices, parallel over rows or
//! (input, head) pairs with rayon.
//!
//! Inputs are packed: only the tokens the attention mask keeps take part,
//! each at its original position, and attention runs within each input.
//! That is what the masked BERT computes for those tokens (masked keys get
//! a zero weight), without computing the padding.

use std::cell::RefCell;
use std::sync::Mutex;

use gemm::Parallelism;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{EmbedError, Result};

/// The activation between the two feed-forward products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * Φ(x)` with the exact normal CDF (erf): BERT's `gelu`.
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// The shape of the encoder, from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
}

#[derive(Deserialize)]
struct RawConfig {
    hidden_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_hidden_layers: Option<usize>,
    intermediate_size: Option<usize>,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_types")]
    type_vocab_size: usize,
    vocab_size: Option<usize>,
    position_embedding_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}

fn precondition(model: &str, what: impl std::fmt::Display) -> EmbedError {
    EmbedError::InvalidModel(format!("model {model}: {what}"))
}

impl BertConfig {
    /// Parses a BERT-family `config.json`; `model` names it in errors.
    pub fn from_json(model: &str, bytes: &[u8]) -> Result<Self> {
        let raw: RawConfig = serde_json::from_slice(bytes)
            .map_err(|e| precondition(model, format!("config.json is not a BERT-family config ({e})")))?;
        let need = |v: Option<usize>, key: &str| {
            v.filter(|&n| n > 0)
                .ok_or_else(|| precondition(model, format!("config.json has no positive {key}")))
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_hidden_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let intermediate_size = need(raw.intermediate_size, "intermediate_size")?;
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        if hidden_size % num_attention_heads != 0 {
            return Err(precondition(
                model,
                format!(
                    "config.json: hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let hidden_act = match raw.hidden_act.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(precondition(
                    model,
                    format!(
                        "config.json: hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
                    ),
                ));
            }
        };
        if let Some(kind) = raw.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            return Err(precondition(
                model,
                format!("config.json: position_embedding_type {kind:?} is not supported (absolute)"),
            ));
        }
        if raw.max_position_embeddings == 0 || raw.type_vocab_size == 0 {
            return Err(precondition(
                model,
                "config.json: max_position_embeddings and type_vocab_size must be positive",
            ));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0) {
            return Err(precondition(
                model,
                "config.json: layer_norm_eps must be positive",
            ));
        }
        Ok(Self {
            hidden_size,
            num_attention_heads,
            num_hidden_layers,
            intermediate_size,
            layer_norm_eps: raw.layer_norm_eps as f32,
            hidden_act,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            vocab_size,
        })
    }
}

/// `y = x W^T + b`, with `W` kept transposed (`wt[i * out + o]`), the
/// layout gemm's kernels read without repacking.
#[derive(Debug)]
struct Linear {
    wt: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
    output: usize,
}

#[derive(Debug)]
struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

#[derive(Debug)]
struct Layer {
    /// Query, key and value in one product (`3 * hidden` outputs); the
    /// query part is pre-scaled by `1 / sqrt(head_dim)`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// Activation buffers, reused from batch to batch.
#[derive(Debug, Default)]
struct Scratch {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    heads: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
}

/// Packed inputs: the kept tokens of every input back to back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packed {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Each token's position in its (unpacked) input.
    pub positions: Vec<u32>,
    /// Token type ids (0 for single sentences).
    pub types: Vec<u32>,
    /// Input `i` is tokens `offsets[i]..offsets[i + 1]`.
    pub offsets: Vec<usize>,
}

impl Packed {
    /// Packs inputs given as (ids, attention mask) pairs, keeping the
    /// tokens whose mask is non-zero, with token type 0.
    pub fn from_masked<'a>(inputs: impl IntoIterator<Item = (&'a [u32], &'a [u32])>) -> Self {
        let mut packed = Self {
            offsets: vec![0],
            ..Self::default()
        };
        for (ids, mask) in inputs {
            for (position, (&id, &keep)) in ids.iter().zip(mask).enumerate() {
                if keep != 0 {
                    packed.ids.push(id);
                    packed.positions.push(u32::try_from(position).unwrap_or(u32::MAX));
                    packed.types.push(0);
                }
            }
            packed.offsets.push(packed.ids.len());
        }
        packed
    }

    pub fn inputs(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
}

/// A loaded encoder.
#[derive(Debug)]
pub struct Bert {
    config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    pool: Mutex<Vec<Scratch>>,
}

thread_local! {
    /// One input-and-head's attention scores (`len x len`), per thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Reads tensors by name, with or without the `bert.` prefix, as f32.
struct Tensors<'a> {
    model: &'a str,
    st: SafeTensors<'a>,
}

impl Tensors<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let prefixed = format!("bert.{name}");
        let view = self
            .st
            .tensor(name)
            .or_else(|_| self.st.tensor(&prefixed))
            .map_err(|_| {
                precondition(
                    self.model,
                    format!("model.safetensors has no tensor {name} (nor {prefixed})"),
                )
            })?;
        if view.shape() != shape {
            return Err(precondition(
                self.model,
                format!(
                    "tensor {name} has shape {:?}, the config implies {shape:?}",
                    view.shape()
                ),
            ));
        }
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(precondition(
                    self.model,
                    format!("tensor {name} is {other:?}; F32, F16 and BF16 are supported"),
                ));
            }
        };
        if values.len() != shape.iter().product::<usize>() {
            return Err(precondition(
                self.model,
                format!("tensor {name} holds {} values for shape {shape:?}", values.len()),
            ));
        }
        Ok(values)
    }

    /// A PyTorch linear layer (`weight [out, in]`, `bias [out]`).
    fn linear(&self, name: &str, input: usize, output: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let w = self.get(&format!("{name}.weight"), &[output, input])?;
        let b = self.get(&format!("{name}.bias"), &[output])?;
        Ok((w, b))
    }

    fn layer_norm(&self, name: &str, size: usize) -> Result<LayerNorm> {
        // Old checkpoints name them gamma/beta.
        let gamma = self
            .get(&format!("{name}.weight"), &[size])
            .or_else(|e| self.get(&format!("{name}.gamma"), &[size]).map_err(|_| e))?;
        let beta = self
            .get(&format!("{name}.bias"), &[size])
            .or_else(|e| self.get(&format!("{name}.beta"), &[size]).map_err(|_| e))?;
        Ok(LayerNorm { gamma, beta })
    }
}

/// Builds a transposed linear layer from row blocks `[out_k, in]` stacked
/// along the output, each block's weights and bias multiplied by its scale.
fn stacked_linear(blocks: &[(Vec<f32>, Vec<f32>, f32)], input: usize) -> Linear {
    let output: usize = blocks.iter().map(|(_, b, _)| b.len()).sum();
    let mut wt = vec![0.0f32; input * output];
    let mut bias = Vec::with_capacity(output);
    let mut base = 0;
    for (w, b, scale) in blocks {
        let rows = b.len();
        for o in 0..rows {
            for i in 0..input {
                wt[i * output + base + o] = w[o * input + i] * scale;
            }
        }
        bias.extend(b.iter().map(|v| v * scale));
        base += rows;
    }
    Linear {
        wt,
        bias,
        input,
        output,
    }
}

impl Bert {
    /// Loads the encoder from `model.safetensors` bytes; `model` names it
    /// in errors.
    pub fn load(model: &str, config: BertConfig, safetensors: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(safetensors)
            .map_err(|e| precondition(model, format!("model.safetensors cannot be read ({e})")))?;
        let t = Tensors { model, st };
        let h = config.hidden_size;
        let inter = config.intermediate_size;
        let head_dim = h / config.num_attention_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let word = t.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = t.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = t.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embedding_norm = t.layer_norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let (qw, qb) = t.linear(&format!("{p}.attention.self.query"), h, h)?;
            let (kw, kb) = t.linear(&format!("{p}.attention.self.key"), h, h)?;
            let (vw, vb) = t.linear(&format!("{p}.attention.self.value"), h, h)?;
            let qkv = stacked_linear(&[(qw, qb, scale), (kw, kb, 1.0), (vw, vb, 1.0)], h);
            let (ow, ob) = t.linear(&format!("{p}.attention.output.dense"), h, h)?;
            let attention_norm = t.layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?;
            let (iw, ib) = t.linear(&format!("{p}.intermediate.dense"), h, inter)?;
            let (dw, db) = t.linear(&format!("{p}.output.dense"), inter, h)?;
            let output_norm = t.layer_norm(&format!("{p}.output.LayerNorm"), h)?;
            layers.push(Layer {
                qkv,
                attention_out: stacked_linear(&[(ow, ob, 1.0)], h),
                attention_norm,
                intermediate: stacked_linear(&[(iw, ib, 1.0)], h),
                output: stacked_linear(&[(dw, db, 1.0)], inter),
                output_norm,
            });
        }
        Ok(Self {
            config,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// Runs the encoder over `packed` and hands `f` the last hidden state
    /// (`tokens x hidden_size`, row-major, in packed order).
    pub fn forward<R>(&self, packed: &Packed, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        let c = &self.config;
        let t = packed.tokens();
        if packed.positions.len() != t
            || packed.types.len() != t
            || packed.offsets.first() != Some(&0)
            || packed.offsets.last() != Some(&t)
            || packed.offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(EmbedError::Backend("encoder: malformed packed batch".into()));
        }
        if let Some(&id) = packed.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(EmbedError::Backend(format!(
                "encoder: token id {id} is outside the vocabulary ({})",
                c.vocab_size
            )));
        }
        if let Some(&p) = packed
            .positions
            .iter()
            .find(|&&p| p as usize >= c.max_position_embeddings)
        {
            return Err(EmbedError::Backend(format!(
                "encoder: position {p} is beyond max_position_embeddings ({})",
                c.max_position_embeddings
            )));
        }
        if let Some(&ty) = packed.types.iter().find(|&&ty| ty as usize >= c.type_vocab_size) {
            return Err(EmbedError::Backend(format!(
                "encoder: token type {ty} is beyond type_vocab_size ({})",
                c.type_vocab_size
            )));
        }
        let mut scratch = self
            .pool
            .lock()
            .map_err(|_| EmbedError::Backend("encoder: scratch pool poisoned".into()))?
            .pop()
            .unwrap_or_default();
        let result = self.run(packed, &mut scratch, f);
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(scratch);
        }
        Ok(result)
    }

    fn run<R>(&self, packed: &Packed, s: &mut Scratch, f: impl FnOnce(&[f32]) -> R) -> R {
        let c = &self.config;
        let (t, h) = (packed.tokens(), c.hidden_size);
        if t == 0 {
            return f(&[]);
        }
        let eps = c.layer_norm_eps;
        resize(&mut s.hidden, t * h);
        resize(&mut s.qkv, t * 3 * h);
        resize(&mut s.heads, t * h);
        resize(&mut s.context, t * h);
        resize(&mut s.projected, t * h);
        resize(&mut s.intermediate, t * c.intermediate_size);

        // Embeddings, then LayerNorm.
        s.hidden.par_chunks_mut(h).enumerate().for_each(|(row, x)| {
            let w = &self.word[packed.ids[row] as usize * h..][..h];
            let p = &self.position[packed.positions[row] as usize * h..][..h];
            let ty = &self.token_type[packed.types[row] as usize * h..][..h];
            for (((x, w), p), ty) in x.iter_mut().zip(w).zip(p).zip(ty) {
                *x = w + p + ty;
            }
            layer_norm(x, &self.embedding_norm.gamma, &self.embedding_norm.beta, eps);
        });

        for layer in &self.layers {
            linear(&layer.qkv, &s.hidden, &mut s.qkv, t, true);
            self.attention(packed, &s.qkv, &mut s.heads, &mut s.context);
            linear(&layer.attention_out, &s.context, &mut s.projected, t, false);
            add_norm(
                &mut s.hidden,
                &s.projected,
                &layer.attention_out.bias,
                &layer.attention_norm,
                eps,
            );
            linear(&layer.intermediate, &s.hidden, &mut s.intermediate, t, false);
            let bias = &layer.intermediate.bias;
            let act = c.hidden_act;
            s.intermediate
                .par_chunks_mut(c.intermediate_size)
                .for_each(|row| pulp::Arch::new().dispatch(Activate { row, bias, act }));
            linear(&layer.output, &s.intermediate, &mut s.projected, t, false);
            add_norm(
                &mut s.hidden,
                &s.projected,
                &layer.output.bias,
                &layer.output_norm,
                eps,
            );
        }
        f(&s.hidden)
    }

    /// Self-attention per (input, head): `context = softmax(Q K^T) V`
    /// (the scale is folded into Q), into `context` (`tokens x hidden`).
    fn attention(&self, packed: &Packed, qkv: &[f32], heads: &mut [f32], context: &mut [f32]) {
        let c = &self.config;
        let (t, h, nh) = (packed.tokens(), c.hidden_size, c.num_attention_heads);
        let dh = h / nh;
        let stride = 3 * h;
        // `heads` is head-major (`[head][token][dh]`): each (head, input)
        // owns one contiguous block.
        let mut blocks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(nh * packed.inputs());
        let mut rest = &mut *heads;
        for head in 0..nh {
            for w in packed.offsets.windows(2) {
                let (block, tail) = rest.split_at_mut((w[1] - w[0]) * dh);
                rest = tail;
                if !block.is_empty() {
                    blocks.push((head, w[0], block));
                }
            }
        }
        blocks.into_par_iter().for_each(|(head, start, out)| {
            let len = out.len() / dh;
            SCORES.with_borrow_mut(|scores| {
                resize(scores, len * len);
                let base = start * stride + head * dh;
                // scores[i][j] = q_i . k_j
                matmul(
                    Dims {
                        m: len,
                        n: len,
                        k: dh,
                    },
                    Out {
                        data: scores,
                        rs: len,
                        cs: 1,
                        accumulate: false,
                    },
                    In {
                        data: &qkv[base..],
                        rs: stride,
                        cs: 1,
                    },
                    In {
                        data: &qkv[base + h..],
                        rs: 1,
                        cs: stride,
                    },
                    Parallelism::None,
                );
                pulp::Arch::new().dispatch(SoftmaxRows { scores, len });
                // out[i][d] = sum_j p[i][j] v_j[d]
                matmul(
                    Dims {
                        m: len,
                        n: dh,
                        k: len,
                    },
                    Out {
                        data: out,
                        rs: dh,
                        cs: 1,
                        accumulate: false,
                    },
                    In {
                        data: scores,
                        rs: len,
                        cs: 1,
                    },
                    In {
                        data: &qkv[base + 2 * h..],
                        rs: stride,
                        cs: 1,
                    },
                    Parallelism::None,
                );
            });
        });
        // Back to token-major for the output projection.
        let heads: &[f32] = heads;
        context.par_chunks_mut(h).enumerate().for_each(|(row, out)| {
            for (head, out) in out.chunks_exact_mut(dh).enumerate() {
                out.copy_from_slice(&heads[(head * t + row) * dh..][..dh]);
            }
        });
    }
}

fn resize(buffer: &mut Vec<f32>, len: usize) {
    // Contents are overwritten before they are read; keep the capacity.
    buffer.resize(len, 0.0);
}

/// `out = x W^T` over `rows` rows; `+ b` too with `bias`, else the bias
/// is left to the pass that reads `out` next.
fn linear(l: &Linear, x: &[f32], out: &mut [f32], rows: usize, bias: bool) {
    if bias {
        out.par_chunks_mut(l.output)
            .for_each(|row| row.copy_from_slice(&l.bias));
    }
    matmul(
        Dims {
            m: rows,
            n: l.output,
            k: l.input,
        },
        Out {
            data: out,
            rs: l.output,
            cs: 1,
            accumulate: bias,
        },
        In {
            data: x,
            rs: l.input,
            cs: 1,
        },
        In {
            data: &l.wt,
            rs: l.output,
            cs: 1,
        },
        Parallelism::Rayon(0),
    );
}

/// `hidden = LayerNorm(hidden + projected + bias)`, row by row.
fn add_norm(hidden: &mut [f32], projected: &[f32], bias: &[f32], norm: &LayerNorm, eps: f32) {
    let h = bias.len();
    hidden
        .par_chunks_mut(h)
        .zip(projected.par_chunks(h))
        .for_each(|(x, p)| {
            for ((x, p), b) in x.iter_mut().zip(p).zip(bias) {
                *x += p + b;
            }
            layer_norm(x, &norm.gamma, &norm.beta, eps);
        });
}

/// Matrix sizes: `m x k` times `k x n`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
}

/// A strided matrix operand: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
struct In<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// The destination: written (or added to, with `accumulate`).
#[derive(Debug)]
struct Out<'a> {
    data: &'a mut [f32],
    rs: usize,
    cs: usize,
    accumulate: bool,
}

/// The highest index a `rows x cols` strided view touches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs + 1
}

/// `dst (+)= lhs * rhs` on gemm, with every access checked against the
/// slices first.
fn matmul(d: Dims, dst: Out<'_>, lhs: In<'_>, rhs: In<'_>, parallelism: Parallelism) {
    let Dims { m, n, k } = d;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !dst.accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(
        extent(m, n, dst.rs, dst.cs) <= dst.data.len(),
        "matmul: dst too short"
    );
    assert!(
        extent(m, k, lhs.rs, lhs.cs) <= lhs.data.len(),
        "matmul: lhs too short"
    );
    assert!(
        extent(k, n, rhs.rs, rhs.cs) <= rhs.data.len(),
        "matmul: rhs too short"
    );
    // Distinct destination elements must not share an address.
    assert!(
        (dst.cs == 1 && (m == 1 || dst.rs >= n)) || (dst.rs == 1 && (n == 1 || dst.cs >= m)),
        "matmul: dst elements overlap"
    );
    let stride = |s: usize| isize::try_from(s).expect("matmul: stride fits isize");
    // SAFETY: every element gemm reads or writes lies within the slices:
    // `extent` bounds the highest index of each strided view (all strides
    // are non-negative), checked above. The destination is a `&mut`, so it
    // aliases neither operand, and its elements have distinct addresses
    // (checked above). gemm only reads `dst` when `read_dst` is set, and
    // the slices outlive the call, which returns after all threads finish.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            stride(dst.cs),
            stride(dst.rs),
            dst.accumulate,
            lhs.data.as_ptr(),
            stride(lhs.cs),
            stride(lhs.rs),
            rhs.data.as_ptr(),
            stride(rhs.cs),
            stride(rhs.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

// ---------------------------------------------------------------------------
// Elementwise math: branch-free polynomial approximations in straight f32
// loops, which LLVM vectorises.

const LANES: usize = 16;

/// `e^x` to about 2 ulp for `x` in [-87, 88] (Cephes' expf polynomial on a
/// range reduced by `ln 2`); clamps outside.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the integer in `shifted`'s low bits.
    let ni = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    e * scale
}

/// `erf(x)`, absolute error below 1e-6 (a rational approximation on
/// [-4, 4], where f32's erf is +-1 outside).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.9546e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `tanh(x)`, from `exp`.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let x = x.clamp(-9.0, 9.0);
    let e = exp(2.0 * x);
    (e - 1.0) / (e + 1.0)
}

/// Softmax of each `len`-long row, compiled for the widest SIMD the CPU
/// has (pulp picks it at run time; the loops are inlined into it).
struct SoftmaxRows<'a> {
    scores: &'a mut [f32],
    len: usize,
}

impl pulp::WithSimd for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for row in self.scores.chunks_exact_mut(self.len) {
            softmax(row);
        }
    }
}

/// [`activate`] for the widest SIMD the CPU has.
struct Activate<'a> {
    row: &'a mut [f32],
    bias: &'a [f32],
    act: Activation,
}

impl pulp::WithSimd for Activate<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        activate(self.row, self.bias, self.act);
    }
}

/// `row = act(row + bias)`, in one pass.
#[inline(always)]
fn activate(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Gelu => {
            for (x, b) in row.iter_mut().zip(bias) {
                let v = *x + b;
                *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        Activation::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2 / pi)
            for (x, b) in row.iter_mut().zip(bias) {
                let v = *x + b;
                *x = 0.5 * v * (1.0 + tanh(C * (v + 0.044_715 * v * v * v)));
            }
        }
        Activation::Relu => {
            for (x, b) in row.iter_mut().zip(bias) {
                *x = (*x + b).max(0.0);
            }
        }
    }
}

/// Sum in `LANES` independent accumulators (vectorisable), then across.
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// In-place softmax of one row, shifted by its maximum.
#[inline(always)]
pub(crate) fn softmax(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let m = max(row);
    for v in row.iter_mut() {
        *v = exp(*v - m);
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// In-place LayerNorm of one row (biased variance, like PyTorch).
pub(crate) fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            let d = v - mean;
            *a += d * d;
        }
    }
    let var = (acc.iter().sum::<f32>() + tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((x, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *x = (*x - mean) * rstd * g + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges to ~1e-11 on [-4, 4]).
    fn erf64(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let (mut term, mut total) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid(lo: f32, hi: f32, steps: usize) -> impl Iterator<Item = f32> {
        (0..=steps).map(move |i| lo + (hi - lo) * i as f32 / steps as f32)
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        for x in grid(-87.0, 88.0, 200_000) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 5e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_is_within_1e_6() {
        for x in grid(-6.0, 6.0, 120_000) {
            let want = erf64(x as f64);
            let got = erf(x) as f64;
            assert!((got - want).abs() < 1e-6, "erf({x}) = {got}, want {want}");
        }
        // Relative accuracy near 0, where GELU's x * erf(x) lives.
        for x in grid(1e-6, 1e-2, 1000) {
            let want = erf64(x as f64);
            assert!(((erf(x) as f64 - want) / want).abs() < 1e-5, "erf({x})");
        }
    }

    #[test]
    fn tanh_is_within_1e_6() {
        for x in grid(-12.0, 12.0, 100_000) {
            let want = (x as f64).tanh();
            assert!((tanh(x) as f64 - want).abs() < 1e-6, "tanh({x})");
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_f64() {
        let mut rng = Rng(7);
        for len in [1, 2, 15, 16, 17, 100, 257] {
            let row: Vec<f32> = (0..len).map(|_| rng.gaussian() * 8.0).collect();
            let mut got = row.clone();
            softmax(&mut got);
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (g, &v) in got.iter().zip(&row) {
                let want = (v as f64 - m).exp() / z;
                assert!((*g as f64 - want).abs() < 1e-6 * want.max(1e-3), "softmax {len}");
            }

            let gamma: Vec<f32> = (0..len).map(|_| 1.0 + rng.gaussian() * 0.1).collect();
            let beta: Vec<f32> = (0..len).map(|_| rng.gaussian() * 0.1).collect();
            let mut got = row.clone();
            layer_norm(&mut got, &gamma, &beta, 1e-12);
            let want = layer_norm64(
                &row.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                &gamma,
                &beta,
                1e-12,
            );
            for (g, w) in got.iter().zip(want) {
                assert!((*g as f64 - w).abs() < 2e-5, "layer_norm {len}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn matmul_handles_strides_and_accumulation() {
        let mut rng = Rng(3);
        for (m, n, k) in [(5, 7, 3), (17, 8, 8), (64, 48, 40), (1, 9, 4)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gaussian()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.gaussian()).collect();
            for (a_row_major, b_row_major, c_row_major, accumulate, par) in (0..32).map(|bits| {
                let par = if bits & 16 != 0 {
                    Parallelism::Rayon(0)
                } else {
                    Parallelism::None
                };
                (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0, par)
            }) {
                let (ars, acs) = if a_row_major { (k, 1) } else { (1, m) };
                let (brs, bcs) = if b_row_major { (n, 1) } else { (1, k) };
                let (crs, ccs) = if c_row_major { (n, 1) } else { (1, m) };
                let mut c = vec![0.5f32; m * n];
                matmul(
                    Dims { m, n, k },
                    Out {
                        data: &mut c,
                        rs: crs,
                        cs: ccs,
                        accumulate,
                    },
                    In {
                        data: &a,
                        rs: ars,
                        cs: acs,
                    },
                    In {
                        data: &b,
                        rs: brs,
                        cs: bcs,
                    },
                    par,
                );
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|p| a[i * ars + p * acs] as f64 * b[p * brs + j * bcs] as f64)
                            .sum();
                        let want = dot + if accumulate { 0.5 } else { 0.0 };
                        let got = c[i * crs + j * ccs] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{m}x{n}x{k} a_row_major {a_row_major} b_row_major {b_row_major} c_row_major {c_row_major} accumulate {accumulate}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "lhs too short")]
    fn matmul_refuses_short_operands() {
        let mut c = vec![0.0f32; 4];
        matmul(
            Dims { m: 2, n: 2, k: 2 },
            Out {
                data: &mut c,
                rs: 2,
                cs: 1,
                accumulate: false,
            },
            In {
                data: &[1.0; 3],
                rs: 2,
                cs: 1,
            },
            In {
                data: &[1.0; 4],
                rs: 2,
                cs: 1,
            },
            Parallelism::None,
        );
    }

    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
        }
        fn gaussian(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
        }
    }

    fn layer_norm64(x: &[f64], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        x.iter()
            .zip(gamma)
            .zip(beta)
            .map(|((v, &g), &b)| (v - mean) / (var + eps).sqrt() * g as f64 + b as f64)
            .collect()
    }

    /// A random tiny BERT as named tensors (PyTorch layouts), in f32.
    fn tiny_tensors(c: &BertConfig, rng: &mut Rng) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut out = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| offset + rng.gaussian() * scale).collect();

            out.push((name, shape, v));
        };
        add(
            "bert.embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
            1.0,
            0.0,
        );
        add(
            "bert.embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
            0.5,
            0.0,
        );
        add(
            "bert.embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
            0.5,
            0.0,
        );
        add("bert.embeddings.LayerNorm.weight".into(), vec![h], 0.1, 1.0);
        add("bert.embeddings.LayerNorm.bias".into(), vec![h], 0.1, 0.0);
        for l in 0..c.num_hidden_layers {
            let p = format!("bert.encoder.layer.{l}");
            for (name, o, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                add(format!("{p}.{name}.weight"), vec![o, inp], 0.6, 0.0);
                add(format!("{p}.{name}.bias"), vec![o], 0.2, 0.0);
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                add(format!("{p}.{name}.weight"), vec![h], 0.1, 1.0);
                add(format!("{p}.{name}.bias"), vec![h], 0.1, 0.0);
            }
        }
        out
    }

    fn to_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, shape, v)| {
                let data = match dtype {
                    Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Dtype::F16 => v
                        .iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect(),
                    Dtype::BF16 => v
                        .iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect(),
                    other => panic!("unsupported {other:?}"),
                };
                (name.clone(), shape.clone(), data)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(name, shape, data)| {
                (
                    name.clone(),
                    safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        safetensors::tensor::serialize(views, None).unwrap()
    }

    /// The textbook masked BERT in f64: padded `[n][len]` inputs, masked
    /// keys at -inf, every position computed.
    fn naive_forward(
        c: &BertConfig,
        tensors: &[(String, Vec<usize>, Vec<f32>)],
        inputs: &[(Vec<u32>, Vec<u32>)],
    ) -> Vec<Vec<Vec<f64>>> {
        let w = |name: &str| -> Vec<f64> {
            let full = format!("bert.{name}");
            tensors
                .iter()
                .find(|t| t.0 == full)
                .unwrap()
                .2
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        let g = |name: &str| -> Vec<f32> {
            let full = format!("bert.{name}");
            tensors.iter().find(|t| t.0 == full).unwrap().2.clone()
        };
        let (h, nh) = (c.hidden_size, c.num_attention_heads);
        let dh = h / nh;
        let eps = c.layer_norm_eps as f64;
        let lin = |x: &[f64], name: &str, o: usize| -> Vec<f64> {
            let (wt, b) = (w(&format!("{name}.weight")), w(&format!("{name}.bias")));
            (0..o)
                .map(|r| {
                    b[r] + x
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v * wt[r * x.len() + k])
                        .sum::<f64>()
                })
                .collect()
        };
        let ln = |x: &[f64], name: &str| {
            layer_norm64(x, &g(&format!("{name}.weight")), &g(&format!("{name}.bias")), eps)
        };
        let (we, pe, te) = (
            w("embeddings.word_embeddings.weight"),
            w("embeddings.position_embeddings.weight"),
            w("embeddings.token_type_embeddings.weight"),
        );
        inputs
            .iter()
            .map(|(ids, mask)| {
                let len = ids.len();
                let mut x: Vec<Vec<f64>> = (0..len)
                    .map(|p| {
                        let e: Vec<f64> = (0..h)
                            .map(|d| we[ids[p] as usize * h + d] + pe[p * h + d] + te[d])
                            .collect();
                        ln(&e, "embeddings.LayerNorm")
                    })
                    .collect();
                for l in 0..c.num_hidden_layers {
                    let p = format!("encoder.layer.{l}");
                    let q: Vec<_> = x
                        .iter()
                        .map(|r| lin(r, &format!("{p}.attention.self.query"), h))
                        .collect();
                    let k: Vec<_> = x
                        .iter()
                        .map(|r| lin(r, &format!("{p}.attention.self.key"), h))
                        .collect();
                    let v: Vec<_> = x
                        .iter()
                        .map(|r| lin(r, &format!("{p}.attention.self.value"), h))
                        .collect();
                    let mut ctx = vec![vec![0.0; h]; len];
                    for head in 0..nh {
                        let r = head * dh..(head + 1) * dh;
                        for i in 0..len {
                            let s: Vec<f64> = (0..len)
                                .map(|j| {
                                    if mask[j] == 0 {
                                        f64::NEG_INFINITY
                                    } else {
                                        r.clone().map(|d| q[i][d] * k[j][d]).sum::<f64>() / (dh as f64).sqrt()
                                    }
                                })
                                .collect();
                            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                            let z: f64 = e.iter().sum();
                            for d in r.clone() {
                                ctx[i][d] = (0..len).map(|j| e[j] / z * v[j][d]).sum();
                            }
                        }
                    }
                    for i in 0..len {
                        let a = lin(&ctx[i], &format!("{p}.attention.output.dense"), h);
                        let sum: Vec<f64> = a.iter().zip(&x[i]).map(|(a, b)| a + b).collect();
                        let y = ln(&sum, &format!("{p}.attention.output.LayerNorm"));
                        let mid: Vec<f64> = lin(&y, &format!("{p}.intermediate.dense"), c.intermediate_size)
                            .into_iter()
                            .map(|v| match c.hidden_act {
                                Activation::Gelu => 0.5 * v * (1.0 + erf64(v / 2f64.sqrt())),
                                Activation::GeluTanh => {
                                    0.5 * v
                                        * (1.0
                                            + ((2.0 / std::f64::consts::PI).sqrt()
                                                * (v + 0.044715 * v.powi(3)))
                                            .tanh())
                                }
                                Activation::Relu => v.max(0.0),
                            })
                            .collect();
                        let o = lin(&mid, &format!("{p}.output.dense"), h);
                        let sum: Vec<f64> = o.iter().zip(&y).map(|(a, b)| a + b).collect();
                        x[i] = ln(&sum, &format!("{p}.output.LayerNorm"));
                    }
                }
                x
            })
            .collect()
    }

    fn tiny_config(act: Activation) -> BertConfig {
        BertConfig {
            hidden_size: 8,
            num_attention_heads: 2,
            num_hidden_layers: 2,
            intermediate_size: 16,
            layer_norm_eps: 1e-12,
            hidden_act: act,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            vocab_size: 50,
        }
    }

    fn check_tiny(act: Activation, dtype: Dtype, tol: f64) {
        check_cfg(tiny_config(act), act, dtype, tol);
    }
    fn check_cfg(c: BertConfig, act: Activation, dtype: Dtype, tol: f64) {
        let mut rng = Rng(42 + act as u64);
        let mut tensors = tiny_tensors(&c, &mut rng);
        if dtype != Dtype::F32 {
            // The reference sees the values the narrow type can hold.
            for (_, _, v) in &mut tensors {
                for x in v.iter_mut() {
                    *x = match dtype {
                        Dtype::F16 => half::f16::from_f32(*x).to_f32(),
                        _ => half::bf16::from_f32(*x).to_f32(),
                    };
                }
            }
        }
        let bert = Bert::load("tiny", c.clone(), &to_safetensors(&tensors, dtype)).unwrap();
        // Right-padded, left-padded, unpadded and a single token.
        let inputs: Vec<(Vec<u32>, Vec<u32>)> = vec![
            (vec![1, 7, 9, 3, 0, 0, 0], vec![1, 1, 1, 1, 0, 0, 0]),
            (vec![0, 0, 2, 49, 5, 6, 8], vec![0, 0, 1, 1, 1, 1, 1]),
            (vec![4, 4, 11, 12, 13, 14, 15], vec![1; 7]),
            (vec![30, 0, 0, 0, 0, 0, 0], vec![1, 0, 0, 0, 0, 0, 0]),
        ];
        let want = naive_forward(&c, &tensors, &inputs);
        let packed = Packed::from_masked(inputs.iter().map(|(i, m)| (i.as_slice(), m.as_slice())));
        assert_eq!(packed.inputs(), 4);
        assert_eq!(packed.tokens(), 4 + 5 + 7 + 1);
        let got = bert.forward(&packed, <[f32]>::to_vec).unwrap();
        for (b, (_, mask)) in inputs.iter().enumerate() {
            let kept: Vec<usize> = (0..mask.len()).filter(|&p| mask[p] != 0).collect();
            for (r, &p) in kept.iter().enumerate() {
                let row = &got[(packed.offsets[b] + r) * 8..][..8];
                for (g, w) in row.iter().zip(&want[b][p]) {
                    assert!(
                        (*g as f64 - w).abs() < tol,
                        "{act:?} {dtype:?} input {b} position {p}: {g} vs {w}"
                    );
                }
            }
        }
        // A second batch reuses the pooled buffers, at another size.
        let one = Packed::from_masked([(inputs[2].0.as_slice(), inputs[2].1.as_slice())]);
        let again = bert.forward(&one, <[f32]>::to_vec).unwrap();
        let start = packed.offsets[2] * 8;
        assert_eq!(again.as_slice(), &got[start..start + 7 * 8]);
    }

    #[test]
    fn tiny_bert_matches_a_naive_f64_forward() {
        check_tiny(Activation::Gelu, Dtype::F32, 2e-5);
        check_tiny(Activation::GeluTanh, Dtype::F32, 2e-5);
        check_tiny(Activation::Relu, Dtype::F32, 2e-5);
    }

    #[test]
    fn half_precision_weights_load_widened() {
        check_tiny(Activation::Gelu, Dtype::F16, 2e-5);
        check_tiny(Activation::Gelu, Dtype::BF16, 2e-5);
    }

    #[test]
    fn bad_configs_and_weights_are_failed_preconditions() {
        let err = BertConfig::from_json("m", br#"{"hidden_size": 8}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model m") && err.contains("num_attention_heads"),
            "{err}"
        );
        let base = r#""hidden_size": 8, "num_attention_heads": 3, "num_hidden_layers": 1, "intermediate_size": 4, "vocab_size": 5"#;
        let err = BertConfig::from_json("m", format!("{{{base}}}").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a multiple"), "{err}");
        let base = base.replace("\"num_attention_heads\": 3", "\"num_attention_heads\": 2");
        let err = BertConfig::from_json("m", format!("{{{base}, \"hidden_act\": \"swish\"}}").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("swish"), "{err}");
        let ok = BertConfig::from_json(
            "m",
            format!("{{{base}, \"hidden_act\": \"gelu_new\"}}").as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.hidden_act, Activation::GeluTanh);
        assert_eq!((ok.max_position_embeddings, ok.type_vocab_size), (512, 2));

        let c = tiny_config(Activation::Gelu);
        let mut tensors = tiny_tensors(&c, &mut Rng(1));
        // Unprefixed names load too.
        for t in &mut tensors {
            t.0 = t.0.trim_start_matches("bert.").to_owned();
        }
        assert!(Bert::load("tiny", c.clone(), &to_safetensors(&tensors, Dtype::F32)).is_ok());
        tensors.retain(|t| t.0 != "encoder.layer.1.output.dense.bias");
        let err = Bert::load("tiny", c.clone(), &to_safetensors(&tensors, Dtype::F32)).unwrap_err();
        assert!(matches!(err, EmbedError::InvalidModel(_)));
        assert!(
            err.to_string().contains("model tiny")
                && err.to_string().contains("encoder.layer.1.output.dense.bias"),
            "{err}"
        );
        let wide = BertConfig {
            intermediate_size: 17,
            ..c
        };
        let err = Bert::load("tiny", wide, &to_safetensors(&tensors, Dtype::F32))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape"), "{err}");
    }
}
