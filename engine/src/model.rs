//! A loaded model: spec + tokenizer + network on a backend, and the embedding pipelines:
//! dense (pooled), and for BGE-M3 sparse lexical weights and ColBERT vectors from its heads.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{cpu::Cpu, reference::Reference, BackendKind};
use crate::models::decoder::cuda::CudaDecoder;
use crate::models::encoder::cuda::CudaEncoder;
use crate::batch::PackedBatch;
use crate::heads::colbert::ColbertVectors;
use crate::config::{ModelKind, ModelSpec, Pooling};
use crate::heads::classifier::Classifier;
use crate::error::{Error, Result};
use crate::models::decoder::Decoder;
use crate::models::encoder::Encoder;
use crate::heads::m3::{HeadKind, M3Heads};
use crate::models::Forward;
use crate::heads::sparse::SparseWeights;
use crate::threads;
use crate::tokenize::{Encoded, TextTokenizer};
use crate::weights::{FileIdentity, WeightFile};

/// Most activation memory one forward pass may use (see [`ModelSpec::activation_bytes_per_token`]).
const MAX_BATCH_ACTIVATION_BYTES: usize = 512 << 20;

/// Per-call settings (bge.truncate, bge.threads, bge.max_batch_tokens on the SQL side).
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub truncate: bool,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Inputs are grouped by length into forward passes of at most this many tokens (a single
    /// longer input still runs alone).
    pub max_batch_tokens: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { truncate: true, threads: 0, max_batch_tokens: 4096 }
    }
}

/// What a text is, which decides its prompt (config_sentence_transformers.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRole {
    /// A passage or any text embedded with bge_embed: the default prompt, if the model has one.
    Passage,
    /// A search query: the query prompt ([`ModelSpec::query_prompt`]).
    Query,
}

/// The text half of a model: its spec and tokenizer, enough to tokenise and count tokens without
/// loading any weights (what a PostgreSQL backend holds when the model server computes).
pub struct Frontend {
    pub spec: ModelSpec,
    pub tokenizer: TextTokenizer,
    /// model.safetensors as it was when the tokenizer was read (see [`Frontend::is_stale`]).
    weights_path: std::path::PathBuf,
    weights_identity: Option<FileIdentity>,
}

impl Frontend {
    pub fn load(name: &str, dir: &std::path::Path) -> Result<Frontend> {
        let spec = ModelSpec::load(name, dir)?;
        let tokenizer = TextTokenizer::load(&spec)?;
        let weights_path = weights_path_in(dir);
        let weights_identity = std::fs::metadata(&weights_path).ok().map(|m| FileIdentity::of(&m));
        Ok(Frontend { spec, tokenizer, weights_path, weights_identity })
    }

    /// Whether the model's weight file changed since this was loaded: a replaced model may
    /// come with another tokenizer, so its frontend is read again.
    pub fn is_stale(&self) -> bool {
        std::fs::metadata(&self.weights_path).ok().map(|m| FileIdentity::of(&m)) != self.weights_identity
    }

    /// The prompt a text of `role` gets: see [`ModelSpec::default_prompt`] and
    /// [`ModelSpec::query_prompt`].
    pub fn prompt(&self, role: TextRole) -> Option<&str> {
        match role {
            TextRole::Passage => self.spec.default_prompt(),
            TextRole::Query => self.spec.query_prompt(),
        }
    }

    /// The tokens the model embeds for `text` in `role`: its prompt, then the text
    /// (sentence-transformers concatenates the strings before tokenising).
    pub fn encode(&self, text: &str, role: TextRole, truncate: bool, interrupt: &mut dyn FnMut()) -> Result<Encoded> {
        self.tokenizer.encode_prompted(self.prompt(role).unwrap_or(""), text, truncate, interrupt)
    }

    /// How many tokens the model embeds for `text` in `role`, prompt and special tokens
    /// included (capped at max_seq_length when `truncate`).
    pub fn count_tokens(&self, text: &str, role: TextRole, truncate: bool, interrupt: &mut dyn FnMut()) -> Result<usize> {
        self.tokenizer.count_prompted(self.prompt(role).unwrap_or(""), text, truncate, interrupt)
    }

    /// Tokens of every text in `role`, `interrupt` between texts.
    pub fn encode_all(&self, texts: &[&str], role: TextRole, truncate: bool, interrupt: &mut dyn FnMut()) -> Result<Vec<Encoded>> {
        let mut encoded = Vec::new();
        encoded.try_reserve_exact(texts.len()).map_err(|_| Error::out_of_memory(texts.len() * std::mem::size_of::<Encoded>()))?;
        for t in texts {
            interrupt();
            encoded.push(self.encode(t, role, truncate, interrupt)?);
        }
        Ok(encoded)
    }

    /// Tokens of every text with `prompt` before it (a query's task instruction, see
    /// [`ModelSpec::prompt_for_task`]), `interrupt` between texts.
    pub fn encode_all_prompted(&self, texts: &[&str], prompt: &str, truncate: bool, interrupt: &mut dyn FnMut()) -> Result<Vec<Encoded>> {
        let mut encoded = Vec::new();
        encoded.try_reserve_exact(texts.len()).map_err(|_| Error::out_of_memory(texts.len() * std::mem::size_of::<Encoded>()))?;
        for t in texts {
            interrupt();
            encoded.push(self.tokenizer.encode_prompted(prompt, t, truncate, interrupt)?);
        }
        Ok(encoded)
    }

    /// A reranker's (query, passage) pairs, `interrupt` between pairs
    /// ([`TextTokenizer::encode_pair`]).
    pub fn encode_pairs(&self, query: &str, passages: &[&str], interrupt: &mut dyn FnMut()) -> Result<Vec<Encoded>> {
        self.require(ModelKind::Reranker)?;
        let query = self.tokenizer.pair_query(query, interrupt)?;
        let mut encoded = Vec::new();
        encoded.try_reserve_exact(passages.len()).map_err(|_| Error::out_of_memory(passages.len() * std::mem::size_of::<Encoded>()))?;
        for p in passages {
            interrupt();
            encoded.push(self.tokenizer.encode_pair_with(&query, p, interrupt)?);
        }
        Ok(encoded)
    }

    /// An error unless the model is of `kind` (a reranker cannot embed, an embedder cannot
    /// score pairs).
    pub fn require(&self, kind: ModelKind) -> Result<()> {
        if self.spec.kind == kind {
            return Ok(());
        }
        Err(Error::WrongModelKind { model: self.spec.name.clone(), is: self.spec.kind, needs: kind })
    }

    /// Tokens of `texts` with no prompt (BGE-M3's sparse and ColBERT output take none).
    pub fn encode_bare(&self, texts: &[&str], truncate: bool, interrupt: &mut dyn FnMut()) -> Result<Vec<Encoded>> {
        texts.iter().map(|t| self.tokenizer.encode_prompted("", t, truncate, interrupt)).collect()
    }
}

/// The file that identifies a directory's weights: model.safetensors, or for a model published
/// in shards (large decoders) model.safetensors.index.json when there is no single file.
fn weights_path_in(dir: &std::path::Path) -> std::path::PathBuf {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !single.exists() && index.exists() {
        index
    } else {
        single
    }
}

/// The network `spec` describes, on `ops`: the decoder for Gemma2/Mistral/Qwen3, else the encoder.
fn load_network<O: crate::backend::Ops>(ops: O, spec: &ModelSpec, weights: &WeightFile) -> Result<Box<dyn Forward>> {
    Ok(if spec.decoder.is_some() { Box::new(Decoder::load(ops, spec, weights)?) } else { Box::new(Encoder::load(ops, spec, weights)?) })
}

pub struct Model {
    /// Spec and tokenizer; `model.spec`, `model.encode(..)` reach them through Deref.
    pub front: Arc<Frontend>,
    pub backend: BackendKind,
    /// The CPU kernel family it runs on ("avx512", "avx2", "portable"; "scalar" for the
    /// reference backend), None on a GPU.
    pub isa: Option<&'static str>,
    /// Arithmetic of its linear layers: "fp32", "bf16", "int8" (CPU), "fp16" (GPU), "fp64" (reference).
    pub precision: &'static str,
    network: Box<dyn Forward>,
    /// BGE-M3's sparse and ColBERT heads, where the directory has them.
    pub heads: M3Heads,
    /// A reranker's classification head.
    classifier: Option<Classifier>,
    /// Wall time of `load`, reported by bge_models().
    pub load_time: Duration,
    /// How much this process's resident memory grew while loading it (0 where Linux's
    /// /proc/self/statm is not there); the model server reports it per model.
    pub resident_bytes: u64,
    /// What model.safetensors (the frontend's `weights_path`) was when loaded (see
    /// [`Model::is_stale`]).
    weights_identity: FileIdentity,
}

impl std::ops::Deref for Model {
    type Target = Frontend;
    fn deref(&self) -> &Frontend {
        &self.front
    }
}

impl Model {
    pub fn load(name: &str, dir: &std::path::Path, backend: BackendKind) -> Result<Model> {
        let started = Instant::now();
        let resident_before = resident_set_bytes();
        let front = Arc::new(Frontend::load(name, dir)?);
        let spec = &front.spec;
        let anchor = if spec.decoder.is_some() { crate::models::decoder::ANCHOR } else { "embeddings.word_embeddings.weight" };
        let weights = WeightFile::open_anchored(&front.weights_path, anchor)?;
        let weights_identity = weights.identity();
        // The heads run on the hidden states forward() returns to the host: on the scalar
        // oracle for the reference backend, on the CPU kernels for any other (a GPU backend's
        // included).
        let (network, heads, isa, precision): (Box<dyn Forward>, M3Heads, Option<&'static str>, &'static str) = match backend {
            BackendKind::Reference => {
                let heads = M3Heads::load(name, dir, spec.hidden_size, || Ok(Reference))?;
                (load_network(Reference, spec, &weights)?, heads, Some("scalar"), "fp64")
            }
            BackendKind::Cpu | BackendKind::CpuBf16 | BackendKind::CpuInt8 => {
                let cpu = match backend {
                    BackendKind::CpuBf16 => Cpu::bf16()?,
                    BackendKind::CpuInt8 => Cpu::int8()?,
                    _ => Cpu::new()?,
                };
                // The M3 heads stay f32 whatever the precision: they are small and their
                // outputs (sparse weights, ColBERT vectors) are compared exactly by users.
                let heads = M3Heads::load(name, dir, spec.hidden_size, Cpu::new)?;
                let (isa, precision) = cpu.describe();
                (load_network(cpu, spec, &weights)?, heads, Some(isa), precision)
            }
            BackendKind::Cuda => {
                let network: Box<dyn Forward> =
                    if spec.decoder.is_some() { Box::new(CudaDecoder::load(spec, &weights)?) } else { Box::new(CudaEncoder::load(spec, &weights)?) };
                (network, M3Heads::load(name, dir, spec.hidden_size, Cpu::new)?, None, crate::backend::cuda::PRECISION)
            }
        };
        let classifier = match spec.kind {
            ModelKind::Reranker => Some(Classifier::load(&weights, &spec.model_type, spec.hidden_size)?),
            ModelKind::Embedder => None,
        };
        let resident_bytes = resident_set_bytes().saturating_sub(resident_before);
        Ok(Model { front, backend, isa, precision, network, heads, classifier, load_time: started.elapsed(), resident_bytes, weights_identity })
    }

    pub fn load_shared(name: &str, dir: &std::path::Path, backend: BackendKind) -> Result<Arc<Model>> {
        Self::load(name, dir, backend).map(Arc::new)
    }

    /// Whether model.safetensors at the model's path is no longer the file loaded (replaced by
    /// rename, or changed in place): the store then loads it again.
    pub fn is_stale(&self) -> bool {
        std::fs::metadata(&self.front.weights_path).ok().map(|m| FileIdentity::of(&m)) != Some(self.weights_identity)
    }

    /// Dense embeddings of passages (`texts` with the default prompt, if any), in input order.
    pub fn embed(&self, texts: &[&str], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        self.embed_as(texts, TextRole::Passage, opts, interrupt)
    }

    /// Dense embeddings of search queries (`texts` with the query prompt, if any).
    pub fn embed_queries(&self, texts: &[&str], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        self.embed_as(texts, TextRole::Query, opts, interrupt)
    }

    /// Dense embeddings of search queries phrased for task instruction `task` (the model's
    /// query template filled in: `<instruct>{task}\n<query>` for the BGE decoders; for an encoder
    /// the instruction itself is the prompt).
    pub fn embed_queries_for_task(&self, texts: &[&str], task: &str, opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encode_all_prompted(texts, &self.spec.prompt_for_task(task), opts.truncate, interrupt)?;
        self.embed_encoded(&encoded, opts, interrupt)
    }

    fn embed_as(&self, texts: &[&str], role: TextRole, opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encode_all(texts, role, opts.truncate, interrupt)?;
        self.embed_encoded(&encoded, opts, interrupt)
    }

    /// Embeddings of already tokenised inputs, in input order.
    pub fn embed_encoded(&self, encoded: &[Encoded], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        self.require(ModelKind::Embedder)?;
        let pool = threads::pool(opts.threads)?;
        self.in_batches(encoded, opts, interrupt, |batch, interrupt| {
            self.network.embed(&pool, batch, self.spec.hidden_size, self.spec.pooling, self.spec.normalize, interrupt)
        })
    }

    /// BGE-M3 sparse lexical weights of `texts` (no prompt, as BGE-M3's own encode), in input
    /// order. Errors when the directory has no sparse_linear head.
    pub fn embed_sparse(&self, texts: &[&str], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<SparseWeights>> {
        self.heads.get(HeadKind::Sparse)?;
        let encoded = self.encode_bare(texts, opts.truncate, interrupt)?;
        self.sparse_encoded(&encoded, opts, interrupt)
    }

    /// [`Model::embed_sparse`] of already tokenised inputs.
    pub fn sparse_encoded(&self, encoded: &[Encoded], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<SparseWeights>> {
        self.require(ModelKind::Embedder)?;
        let head = self.heads.get(HeadKind::Sparse)?;
        let pool = threads::pool(opts.threads)?;
        let skip = self.tokenizer.special_ids();
        self.in_batches(encoded, opts, interrupt, |batch, interrupt| {
            let hidden = self.network.forward(&pool, batch, interrupt)?;
            let raw = head.apply(&pool, &hidden, batch.num_tokens());
            Ok((0..batch.num_seqs()).map(|s| SparseWeights::from_tokens(&batch.ids[batch.seq_range(s)], &raw[batch.seq_range(s)], skip)).collect())
        })
    }

    /// BGE-M3 ColBERT vectors of `texts` (no prompt), one per token after the first, in input
    /// order. Errors when the directory has no colbert_linear head.
    pub fn embed_colbert(&self, texts: &[&str], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<ColbertVectors>> {
        self.heads.get(HeadKind::Colbert)?;
        let encoded = self.encode_bare(texts, opts.truncate, interrupt)?;
        self.colbert_encoded(&encoded, opts, interrupt)
    }

    /// [`Model::embed_colbert`] of already tokenised inputs.
    pub fn colbert_encoded(&self, encoded: &[Encoded], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<ColbertVectors>> {
        self.require(ModelKind::Embedder)?;
        let head = self.heads.get(HeadKind::Colbert)?;
        let pool = threads::pool(opts.threads)?;
        let (h, dim) = (self.spec.hidden_size, head.out_features());
        self.in_batches(encoded, opts, interrupt, |batch, interrupt| {
            let hidden = self.network.forward(&pool, batch, interrupt)?;
            Ok((0..batch.num_seqs())
                .map(|s| {
                    let r = batch.seq_range(s);
                    // The first token (<s>) has no vector.
                    let rows = &hidden[(r.start + 1).min(r.end) * h..r.end * h];
                    ColbertVectors::normalized(head.apply(&pool, rows, rows.len() / h), dim)
                })
                .collect())
        })
    }

    /// A reranker's relevance logits of (`query`, passage) for every passage, in input order
    /// (FlagReranker.compute_score without normalisation).
    pub fn rerank(&self, query: &str, passages: &[&str], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let encoded = self.encode_pairs(query, passages, interrupt)?;
        self.score_encoded(&encoded, opts, interrupt)
    }

    /// [`Model::rerank`] of pairs tokenised already ([`Frontend::encode_pairs`]).
    pub fn score_encoded(&self, encoded: &[Encoded], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        self.require(ModelKind::Reranker)?;
        let head = self.classifier.as_ref().ok_or_else(|| Error::Internal("a reranker was loaded without its classifier".into()))?;
        let pool = threads::pool(opts.threads)?;
        self.in_batches(encoded, opts, interrupt, |batch, interrupt| {
            // The first token's row of each pair, taken where the hidden states are (a GPU
            // copies back one row per pair).
            let firsts = self.network.embed(&pool, batch, self.spec.hidden_size, Pooling::CLS, false, interrupt)?;
            Ok(firsts.iter().map(|first| head.score(first)).collect())
        })
    }

    /// Runs `run` over `encoded` in batches and returns its per-sequence results in input
    /// order. Inputs are sorted by length and grouped into batches of at most
    /// `max_batch_tokens` (a longer input runs alone); the kernels make each row's result
    /// independent of its batch, so the grouping never changes an output.
    fn in_batches<T: Default + Clone>(
        &self,
        encoded: &[Encoded],
        opts: &RunOptions,
        interrupt: &mut dyn FnMut(),
        mut run: impl FnMut(&PackedBatch, &mut dyn FnMut()) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        // Batches are bounded by tokens, by activation memory and by the backend's preferred
        // pass length (a single longer input still runs alone: max_seq_length bounds it).
        let max_tokens = opts
            .max_batch_tokens
            .min(MAX_BATCH_ACTIVATION_BYTES / self.spec.activation_bytes_per_token())
            .min(self.network.preferred_pass_tokens().unwrap_or(usize::MAX))
            .max(1);
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        let mut results: Vec<T> = vec![T::default(); encoded.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len() && (end == start || tokens + encoded[order[end]].ids.len() <= max_tokens) {
                tokens += encoded[order[end]].ids.len();
                end += 1;
            }
            let seqs: Vec<&Encoded> = order[start..end].iter().map(|&i| &encoded[i]).collect();
            let batch = PackedBatch::with_positions(&seqs, self.spec.position_ids);
            for (&i, v) in order[start..end].iter().zip(run(&batch, interrupt)?) {
                results[i] = v;
            }
            start = end;
        }
        Ok(results)
    }
}

/// Resident set size of this process (/proc/self/statm counts 4 KiB pages on x86-64 Linux).
fn resident_set_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}
