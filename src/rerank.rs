//! Cross-encoder reranking in SQL: bge_rerank(query, passage | passages[], model). The score is
//! the reranker's raw logit, as FlagReranker.compute_score returns it; `normalize` applies its
//! sigmoid. The pair rule lives in bge_engine::tokenize (TextTokenizer::encode_pair).
use pgrx::prelude::*;

use crate::compute::Call;
use crate::errors::OrRaise;
use crate::functions::per_element;

/// FlagReranker's normalisation: 1 / (1 + e^-x) of the f32 logit, in double precision.
pub(crate) fn scored(logit: f32, normalize: bool) -> f64 {
    let x = f64::from(logit);
    if normalize {
        1.0 / (1.0 + (-x).exp())
    } else {
        x
    }
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_rerank")]
fn bge_rerank(query: &str, passage: &str, model: &str, normalize: default!(bool, false)) -> f64 {
    scored(Call::new(Some(model)).rerank(query, &[passage]).or_raise().remove(0), normalize)
}

/// One batched engine call (or model-server request) over the array; NULL elements give NULL;
/// scores come in input order, each bitwise the single form's.
#[pg_extern(immutable, strict, parallel_safe, name = "bge_rerank")]
fn bge_rerank_array(
    query: &str,
    passages: Array<'_, &str>,
    model: &str,
    normalize: default!(bool, false),
) -> SetOfIterator<'static, Option<f64>> {
    let scores = per_element(&passages, |present| Call::new(Some(model)).rerank(query, present).or_raise());
    SetOfIterator::new(scores.into_iter().map(move |s| s.map(|s| scored(s, normalize))))
}
