//! Where a call's embeddings are computed: by the model server when it runs (this backend
//! tokenises and ships token ids), else in this backend. Both give bitwise the same results.
//! A call's settings are read once, into a [`Call`]. Its computations return the engine's
//! errors unraised (callers raise them; the executor's batching node falls back to row-by-row
//! calls, so an error is raised at the row that causes it).
use std::path::PathBuf;
use std::sync::Arc;

use bge_engine::backend::Precision;
use bge_engine::heads::colbert::ColbertVectors;
use bge_engine::heads::sparse::SparseWeights;
use bge_engine::tokenize::Encoded;
use bge_engine::{Frontend, Model, RunOptions, TextRole};

use crate::errors::{raise_with, OrRaise};
use crate::server::{client, wire, Output, Target};
use crate::{gucs, registry};

/// Called by the engine on this thread between layers, so cancel and statement_timeout stop
/// a long call.
pub(crate) fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

/// What the settings decide for one call, read once: the model, the copy of it, the model
/// directory, how to run, and whether the model server computes.
#[derive(Clone, Debug)]
pub struct Call {
    pub model: String,
    pub target: Target,
    pub dir: PathBuf,
    pub opts: RunOptions,
    pub on_server: bool,
}

impl Call {
    /// Naming the model gives the fixed (IMMUTABLE) semantics: fp32 and truncation whatever
    /// the session says. None means bge.model with the session's bge.precision and
    /// bge.truncate (STABLE).
    pub fn new(model: Option<&str>) -> Call {
        let target = match model {
            Some(_) => Target { device: gucs::device(), precision: Precision::Fp32 },
            None => registry::session_target(),
        };
        Call {
            model: model.map(str::to_string).unwrap_or_else(gucs::model),
            target,
            dir: gucs::model_dir(),
            opts: gucs::run_options(model.is_some()),
            on_server: client::active(),
        }
    }

    /// A vectorizer registration's call: its model, precision and truncation, on bge.device.
    pub fn registered(model: String, precision: Precision, truncate: bool) -> Call {
        Call {
            model,
            target: Target { device: gucs::device(), precision },
            dir: gucs::model_dir(),
            opts: RunOptions { truncate, ..gucs::run_options(true) },
            on_server: client::active(),
        }
    }

    /// The model's spec and tokenizer (without its weights when the model server computes).
    pub fn frontend(&self) -> Arc<Frontend> {
        self.try_frontend().or_raise()
    }

    fn try_frontend(&self) -> bge_engine::Result<Arc<Frontend>> {
        registry::frontend(self)
    }

    /// The model loaded in this backend.
    fn model(&self) -> bge_engine::Result<Arc<Model>> {
        registry::model(self)
    }

    /// Dense embeddings of `texts` in `role`, in input order.
    pub fn dense(&self, texts: &[&str], role: TextRole) -> bge_engine::Result<Vec<Vec<f32>>> {
        if !self.on_server {
            let m = self.model()?;
            return match role {
                TextRole::Passage => m.embed(texts, &self.opts, &mut check_interrupts),
                TextRole::Query => m.embed_queries(texts, &self.opts, &mut check_interrupts),
            };
        }
        let encoded = self.try_frontend()?.encode_all(texts, role, self.opts.truncate, &mut check_interrupts)?;
        Ok(self.on_server(Output::Dense, &encoded).into_iter().map(wire::dense).collect())
    }

    /// Dense embeddings of search queries `texts` phrased for task instruction `task` (the
    /// model's query template filled in; engine: ModelSpec::prompt_for_task), in input order.
    pub fn dense_for_task(&self, texts: &[&str], task: &str) -> bge_engine::Result<Vec<Vec<f32>>> {
        if !self.on_server {
            return self.model()?.embed_queries_for_task(texts, task, &self.opts, &mut check_interrupts);
        }
        let front = self.try_frontend()?;
        let encoded = front.encode_all_prompted(texts, &front.spec.prompt_for_task(task), self.opts.truncate, &mut check_interrupts)?;
        Ok(self.on_server(Output::Dense, &encoded).into_iter().map(wire::dense).collect())
    }

    /// BGE-M3 sparse weights of `texts`, in input order.
    pub fn sparse(&self, texts: &[&str]) -> bge_engine::Result<Vec<SparseWeights>> {
        if !self.on_server {
            return self.model()?.embed_sparse(texts, &self.opts, &mut check_interrupts);
        }
        let encoded = self.try_frontend()?.encode_bare(texts, self.opts.truncate, &mut check_interrupts)?;
        Ok(self.on_server(Output::Sparse, &encoded).into_iter().map(|w| wire::sparse(w).unwrap_or_else(wire_bug)).collect())
    }

    /// BGE-M3 ColBERT vectors of `texts`, in input order.
    pub fn colbert(&self, texts: &[&str]) -> bge_engine::Result<Vec<ColbertVectors>> {
        if !self.on_server {
            return self.model()?.embed_colbert(texts, &self.opts, &mut check_interrupts);
        }
        let encoded = self.try_frontend()?.encode_bare(texts, self.opts.truncate, &mut check_interrupts)?;
        Ok(self.on_server(Output::Colbert, &encoded).into_iter().map(|w| wire::colbert(w).unwrap_or_else(wire_bug)).collect())
    }

    /// A reranker's relevance logits of (`query`, passage) for every passage, in input order.
    pub fn rerank(&self, query: &str, passages: &[&str]) -> bge_engine::Result<Vec<f32>> {
        if !self.on_server {
            return self.model()?.rerank(query, passages, &self.opts, &mut check_interrupts);
        }
        let encoded = self.try_frontend()?.encode_pairs(query, passages, &mut check_interrupts)?;
        Ok(self.on_server(Output::Score, &encoded).into_iter().map(|w| wire::score(w).unwrap_or_else(wire_bug)).collect())
    }

    /// Dense embeddings of texts tokenised already (by [`Call::frontend`]), in input order.
    pub fn dense_encoded(&self, encoded: &[Encoded], interrupt: &mut dyn FnMut()) -> Vec<Vec<f32>> {
        if !self.on_server {
            return self.model().and_then(|m| m.embed_encoded(encoded, &self.opts, interrupt)).or_raise();
        }
        self.on_server(Output::Dense, encoded).into_iter().map(wire::dense).collect()
    }

    fn on_server(&self, output: Output, encoded: &[Encoded]) -> Vec<Vec<u32>> {
        client::compute(self, output, encoded)
    }
}

fn wire_bug<T>(message: String) -> T {
    raise_with(pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message, "This is a bug in pg_bge; please report it.")
}
