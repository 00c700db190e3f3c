//! Where a call's embeddings are computed: by the model server when it runs (this backend
//! tokenises and ships token ids), else in this backend. Both give bitwise the same results.
use bge_engine::colbert::ColbertVectors;
use bge_engine::sparse::SparseWeights;
use bge_engine::tokenize::Encoded;
use bge_engine::TextRole;

use crate::errors::OrRaise;
use crate::server::{client, Output, Target};
use crate::{gucs, registry};

/// Called by the engine on this thread between layers, so cancel and statement_timeout stop
/// a long call.
pub(crate) fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

/// Settings for a call: naming the model gives the fixed (IMMUTABLE) semantics, leaving it
/// to bge.model follows the session's bge.truncate and bge.precision (STABLE).
pub(crate) fn options(model: Option<&str>) -> bge_engine::RunOptions {
    gucs::run_options(model.is_some())
}

/// Dense embeddings of `texts` in `role`, in input order.
pub fn dense(texts: &[&str], role: TextRole, model: Option<&str>) -> Vec<Vec<f32>> {
    let opts = options(model);
    if !client::active() {
        let m = registry::model(model);
        return match role {
            TextRole::Passage => m.embed(texts, &opts, &mut check_interrupts),
            TextRole::Query => m.embed_queries(texts, &opts, &mut check_interrupts),
        }
        .or_raise();
    }
    let encoded = registry::frontend(model).encode_all(texts, role, opts.truncate, &mut check_interrupts).or_raise();
    on_server(model, Output::Dense, &encoded).into_iter().map(floats).collect()
}

/// Dense embeddings of search queries `texts` phrased for task instruction `task` (the model's
/// query template filled in; engine: ModelSpec::prompt_for_task), in input order.
pub fn dense_for_task(texts: &[&str], task: &str, model: Option<&str>) -> Vec<Vec<f32>> {
    let opts = options(model);
    if !client::active() {
        return registry::model(model).embed_queries_for_task(texts, task, &opts, &mut check_interrupts).or_raise();
    }
    let front = registry::frontend(model);
    let encoded = front.encode_all_prompted(texts, &front.spec.prompt_for_task(task), opts.truncate, &mut check_interrupts).or_raise();
    on_server(model, Output::Dense, &encoded).into_iter().map(floats).collect()
}

/// BGE-M3 sparse weights of `texts`, in input order.
pub fn sparse(texts: &[&str], model: Option<&str>) -> Vec<SparseWeights> {
    let opts = options(model);
    if !client::active() {
        return registry::model(model).embed_sparse(texts, &opts, &mut check_interrupts).or_raise();
    }
    let encoded = registry::frontend(model).encode_bare(texts, opts.truncate, &mut check_interrupts).or_raise();
    let pairs = |w: Vec<u32>| SparseWeights { weights: w.chunks_exact(2).map(|p| (p[0], f32::from_bits(p[1]))).collect() };
    on_server(model, Output::Sparse, &encoded).into_iter().map(pairs).collect()
}

/// BGE-M3 ColBERT vectors of `texts`, in input order.
pub fn colbert(texts: &[&str], model: Option<&str>) -> Vec<ColbertVectors> {
    let opts = options(model);
    if !client::active() {
        return registry::model(model).embed_colbert(texts, &opts, &mut check_interrupts).or_raise();
    }
    let encoded = registry::frontend(model).encode_bare(texts, opts.truncate, &mut check_interrupts).or_raise();
    let vectors = |w: Vec<u32>| ColbertVectors { dim: w[0] as usize, data: floats(w[1..].to_vec()) };
    on_server(model, Output::Colbert, &encoded).into_iter().map(vectors).collect()
}

/// Dense embeddings of texts tokenised already, computed with the copy of `model` for
/// `target`, in input order.
pub fn dense_encoded(encoded: &[Encoded], model: &str, target: Target, interrupt: &mut dyn FnMut()) -> Vec<Vec<f32>> {
    if !client::active() {
        return registry::model_on(model, target).embed_encoded(encoded, &options(Some(model)), interrupt).or_raise();
    }
    client::compute(model, &gucs::model_dir(), target, Output::Dense, encoded).into_iter().map(floats).collect()
}

fn on_server(model: Option<&str>, output: Output, encoded: &[Encoded]) -> Vec<Vec<u32>> {
    let (name, target) = registry::target(model);
    client::compute(&name, &gucs::model_dir(), target, output, encoded)
}

fn floats(words: Vec<u32>) -> Vec<f32> {
    words.into_iter().map(f32::from_bits).collect()
}
