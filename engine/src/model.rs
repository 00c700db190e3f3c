//! A loaded model: spec + tokenizer + network on a backend, and the embedding pipeline.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{cpu::Cpu, cuda::CudaEncoder, reference::Reference, BackendKind};
use crate::batch::PackedBatch;
use crate::config::ModelSpec;
use crate::error::{Error, Result};
use crate::models::encoder::Encoder;
use crate::models::Forward;
use crate::threads;
use crate::tokenize::{Encoded, TextTokenizer};
use crate::weights::WeightFile;

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
        RunOptions { truncate: true, threads: 0, max_batch_tokens: 16384 }
    }
}

pub struct Model {
    pub spec: ModelSpec,
    pub tokenizer: TextTokenizer,
    pub backend: BackendKind,
    network: Box<dyn Forward>,
    /// Wall time of `load`, reported by bge_models().
    pub load_time: Duration,
}

impl Model {
    pub fn load(name: &str, dir: &std::path::Path, backend: BackendKind) -> Result<Model> {
        let started = Instant::now();
        let spec = ModelSpec::load(name, dir)?;
        let tokenizer = TextTokenizer::load(&spec)?;
        let weights = WeightFile::open(&dir.join("model.safetensors"))?;
        let network: Box<dyn Forward> = match backend {
            BackendKind::Reference => Box::new(Encoder::load(Reference, &spec, &weights)?),
            BackendKind::Cpu => Box::new(Encoder::load(Cpu::new(), &spec, &weights)?),
            BackendKind::CpuBf16 => {
                let cpu = Cpu::bf16().ok_or_else(|| Error::Unsupported { model: name.to_string(), reason: "bf16 precision needs a CPU with AVX512-BF16".into() })?;
                Box::new(Encoder::load(cpu, &spec, &weights)?)
            }
            BackendKind::Cuda => Box::new(CudaEncoder::load(&spec, &weights)?),
        };
        Ok(Model { spec, tokenizer, backend, network, load_time: started.elapsed() })
    }

    pub fn load_shared(name: &str, dir: &std::path::Path, backend: BackendKind) -> Result<Arc<Model>> {
        Self::load(name, dir, backend).map(Arc::new)
    }

    /// Embeddings of `texts`, in input order.
    pub fn embed(&self, texts: &[&str], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        let encoded = texts.iter().map(|t| self.tokenizer.encode(t, opts.truncate)).collect::<Result<Vec<_>>>()?;
        self.embed_encoded(&encoded, opts, interrupt)
    }

    /// Embeddings of already tokenised inputs, in input order. Inputs are sorted by length and
    /// grouped into batches of at most `max_batch_tokens`; the kernels make each row's result
    /// independent of its batch, so the grouping never changes a vector.
    pub fn embed_encoded(&self, encoded: &[Encoded], opts: &RunOptions, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        let pool = threads::pool(opts.threads);
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        let mut results: Vec<Vec<f32>> = vec![Vec::new(); encoded.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len() && (end == start || tokens + encoded[order[end]].ids.len() <= opts.max_batch_tokens) {
                tokens += encoded[order[end]].ids.len();
                end += 1;
            }
            let seqs: Vec<&Encoded> = order[start..end].iter().map(|&i| &encoded[i]).collect();
            let batch = PackedBatch::new(&seqs);
            let pooled = self.network.embed(&pool, &batch, self.spec.hidden_size, self.spec.pooling, self.spec.normalize, interrupt)?;
            for (&i, v) in order[start..end].iter().zip(pooled) {
                results[i] = v;
            }
            start = end;
        }
        Ok(results)
    }
}

impl Model {
    /// The instruction prepended to queries: the model's own `prompts.query`
    /// (config_sentence_transformers.json), else the one its model card documents.
    pub fn query_prompt(&self) -> Option<&str> {
        self.spec.query_prompt.as_deref().or_else(|| crate::config::documented_query_prompt(&self.spec.name))
    }
}
