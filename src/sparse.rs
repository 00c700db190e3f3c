//! BGE-M3 sparse (lexical) weights in SQL: as jsonb keyed by token text, and as pgvector's
//! sparsevec text. The rule lives in bge_engine::sparse.
use bge_engine::heads::sparse::SparseWeights;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::OrRaise;
use crate::compute::Call;

/// {token text: weight}. Token texts are what the tokenizer decodes each id to, as
/// FlagEmbedding's convert_id_to_token gives them; ids that decode alike share one key.
fn weights_by_token(input: &str, model: Option<&str>) -> JsonB {
    let call = Call::new(model);
    let weights = call.sparse(&[input]).or_raise().remove(0);
    jsonb_of(&call, &weights)
}

/// bge_embed_sparse's value of `weights` computed by `call`.
pub(crate) fn jsonb_of(call: &Call, weights: &SparseWeights) -> JsonB {
    let front = call.frontend();
    let by_token = weights.by_token_text(|id| front.tokenizer.token_text(id)).or_raise();
    let map: serde_json::Map<String, serde_json::Value> = by_token
        .into_iter()
        // The f32's shortest decimal form, not its widened f64 digits.
        .map(|(token, w)| (token, serde_json::Number::from_f64(w.to_string().parse::<f64>().unwrap_or(w as f64)).map_or(serde_json::Value::Null, Into::into)))
        .collect();
    JsonB(serde_json::Value::Object(map))
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_embed_sparse")]
fn bge_embed_sparse(input: &str) -> JsonB {
    weights_by_token(input, None)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_embed_sparse")]
fn bge_embed_sparse_model(input: &str, model: &str) -> JsonB {
    weights_by_token(input, Some(model))
}

fn sparsevec_text(input: &str, model: Option<&str>) -> String {
    let call = Call::new(model);
    let weights = call.sparse(&[input]).or_raise().remove(0);
    sparsevec_of(&call, &weights)
}

/// bge_sparse_text's value of `weights` computed by `call`.
pub(crate) fn sparsevec_of(call: &Call, weights: &SparseWeights) -> String {
    weights.sparsevec_literal(call.frontend().spec.vocab_size)
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_sparse_text")]
fn bge_sparse_text(input: &str) -> String {
    sparsevec_text(input, None)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_sparse_text")]
fn bge_sparse_text_model(input: &str, model: &str) -> String {
    sparsevec_text(input, Some(model))
}
